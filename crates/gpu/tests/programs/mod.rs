//! GPU programs (task modules) built for the tests.

use idlegrid_types::{Bounded, GpuBinding, GpuClass, GpuDispatch, GpuProgram};

/// A program of `wgsl` with `bindings` and `dispatches` (entry point,
/// workgroups), in the exact class.
pub fn program(
    wgsl: &str,
    fuel_per_invocation: u32,
    bindings: Vec<GpuBinding>,
    dispatches: &[(&str, [u32; 3])],
) -> GpuProgram {
    GpuProgram {
        wgsl: Bounded::new(wgsl.to_owned()).expect("a short kernel"),
        class: GpuClass::Exact,
        fuel_per_invocation,
        bindings: Bounded::new(bindings).expect("few bindings"),
        dispatches: Bounded::new(
            dispatches
                .iter()
                .map(|(entry_point, workgroups)| GpuDispatch {
                    entry_point: Bounded::new((*entry_point).to_owned()).expect("a short name"),
                    workgroups: *workgroups,
                })
                .collect(),
        )
        .expect("few dispatches"),
    }
}

/// The Mandelbrot example as its job runs it: the task's arguments as
/// params, one band of `width` × `height` counts as the output.
pub fn mandelbrot(width: u32, height: u32) -> GpuProgram {
    program(
        crate::kernels::MANDELBROT,
        1000,
        vec![
            GpuBinding::Params,
            GpuBinding::Output(u64::from(width * height) * 4),
        ],
        &[("main", [width.div_ceil(8), height.div_ceil(8), 1])],
    )
}
