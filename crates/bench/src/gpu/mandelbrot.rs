//! The Mandelbrot example (`examples/mandelbrot-gpu`): iteration counts of
//! a width × height grid.

use idlegrid_gpu::{Class, Kernel, Step};

use super::{Bench, same_bytes, wgsl, words};
use crate::Measurement;
use crate::sandbox::millis;

pub(super) const NAME: &str = "mandelbrot-gpu";

/// The kernel's buffers for a grid of `width` × `height` pixels of at most
/// `iterations` each: `params` (with the steps as the C program computes
/// them) and zeroed counts.
pub(super) fn buffers(width: u32, height: u32, iterations: u32) -> Vec<Vec<u8>> {
    let x_step = 3.0f32 / width as f32;
    let y_step = 3.0f32 / height as f32;
    let params = words(&[
        width,
        height,
        iterations,
        x_step.to_bits(),
        y_step.to_bits(),
    ]);
    vec![params, vec![0; width as usize * height as usize * 4]]
}

/// Workgroups of 8 × 8 pixels covering the grid.
pub(super) fn workgroups(width: u32, height: u32) -> [u32; 3] {
    [width.div_ceil(8), height.div_ceil(8), 1]
}

pub(super) fn run(bench: &Bench) -> anyhow::Result<Vec<Measurement>> {
    let (width, height, iterations): (u32, u32, u32) = if bench.quick {
        (64, 48, 100)
    } else {
        (1024, 768, 1000)
    };
    let wgsl = wgsl(NAME)?;
    let strict = Kernel::compile(&wgsl, "main", Class::Exact, u32::MAX)?;
    let plain = Kernel::compile_plain(&wgsl, "main")?;
    let buffers = buffers(width, height, iterations);
    let workgroups = workgroups(width, height);
    let step = |kernel| [Step { kernel, workgroups }];
    let (strict_time, strict_buffers, metered) = bench.on_gpu(&step(&strict), &buffers)?;
    let (plain_time, _, _) = bench.on_gpu(&step(&plain), &buffers)?;

    // The same counts as a WASI task, one core, the provider's profile.
    let args = [width, height, iterations].map(|n| n.to_string());
    let (wasm_time, stdout) = bench.on_wasi(NAME, &args, Vec::new(), buffers[1].len() as u64)?;
    let adapter = &bench.adapter;
    same_bytes(
        &format!("Mandelbrot counts on {adapter} and in the sandbox"),
        &strict_buffers[1],
        &stdout,
    )?;
    eprintln!(
        "idlegrid-bench gpu: Mandelbrot {width}×{height}, at most {iterations} iterations: \
         the same bytes on {adapter} and in the sandbox; {} GPU fuel",
        metered.fuel
    );
    let size = format!("{width}×{height}×{iterations}");
    Ok(vec![
        Measurement::new(
            "gpu.mandelbrot.vs_wasi",
            millis(strict_time),
            "ms",
            millis(wasm_time),
            format!("{size}: the WASI build in the sandbox, one core (fuel on)"),
        ),
        Measurement::new(
            "gpu.mandelbrot.vs_plain",
            millis(strict_time),
            "ms",
            millis(plain_time),
            format!("{size}: the plain kernel (no NoContraction, no meter)"),
        ),
    ])
}
