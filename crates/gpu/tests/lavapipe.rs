//! Kernels run on a real Vulkan device (Mesa's lavapipe on CPUs, which
//! `.ci/run` installs; any GPU where one exists), compared with the same
//! arithmetic in Rust.

mod kernels;

use std::time::Duration;

use idlegrid_gpu::{Class, Gpu, GpuError, Kernel};

const TIMEOUT: Duration = Duration::from_secs(60);

fn gpu() -> Gpu {
    Gpu::open(None).unwrap_or_else(|error| panic!("{error}"))
}

#[test]
fn mandelbrot_in_strict_f32_equals_rust_bit_for_bit() {
    let gpu = gpu();
    let kernel = Kernel::compile(kernels::MANDELBROT, "main", Class::Exact).expect("exact");
    let (width, height) = (200, 120);
    let params = kernels::mandelbrot_params(width, height, 300);
    let outputs = gpu
        .run(
            &kernel,
            &[&kernels::bytes(&params)],
            &[u64::from(width * height) * 4],
            [width.div_ceil(8), height.div_ceil(8), 1],
            TIMEOUT,
        )
        .expect("runs");
    let counts = kernels::words(&outputs[0]);
    let reference = kernels::mandelbrot(&params);
    // Interior points run to the cap: the float work is real.
    assert!(reference.iter().filter(|count| **count == 300).count() > 1_000);
    let differing = counts
        .iter()
        .zip(&reference)
        .filter(|(gpu, cpu)| gpu != cpu)
        .count();
    assert_eq!(differing, 0, "{} on {:?}", differing, gpu.info());
}

#[test]
fn an_integer_kernel_equals_rust_and_runs_the_same_twice() {
    let gpu = gpu();
    let kernel = Kernel::compile(kernels::INT_HASH, "main", Class::Exact).expect("exact");
    let words: Vec<u32> = (0..10_000u32)
        .map(|n| n.wrapping_mul(0x9e37_79b9))
        .collect();
    let input = kernels::bytes(&words);
    let run = || {
        gpu.run(
            &kernel,
            &[&input],
            &[input.len() as u64],
            [157, 1, 1],
            TIMEOUT,
        )
        .expect("runs")
    };
    let first = run();
    assert_eq!(kernels::words(&first[0]), kernels::int_hash(&words));
    assert_eq!(run(), first);
}

#[test]
fn out_of_bounds_reads_give_zero_and_writes_go_nowhere() {
    let gpu = gpu();
    let wgsl = "@group(0) @binding(0) var<storage, read> i: array<u32>;\n\
                @group(0) @binding(1) var<storage, read_write> o: array<u32>;\n\
                @compute @workgroup_size(4)\n\
                fn main(@builtin(global_invocation_id) id: vec3<u32>) {\n\
                    o[id.x] = i[id.x + 1000000u] + 7u;\n\
                    o[id.x + 1000000u] = 5u;\n\
                }";
    let kernel = Kernel::compile(wgsl, "main", Class::Exact).expect("exact");
    let outputs = gpu
        .run(&kernel, &[&[1, 0, 0, 0]], &[16], [1, 1, 1], TIMEOUT)
        .expect("runs");
    assert_eq!(kernels::words(&outputs[0]), [7, 7, 7, 7]);
}

#[test]
fn buffers_and_dispatches_beyond_bounds_are_refused_before_running() {
    let gpu = gpu();
    let kernel = Kernel::compile(kernels::INT_HASH, "main", Class::Exact).expect("exact");
    let input = [0u8; 16];
    let huge = idlegrid_gpu::BUFFER_BYTES_MAX + 4;
    assert!(matches!(
        gpu.run(&kernel, &[&input], &[huge], [1, 1, 1], TIMEOUT),
        Err(GpuError::Bindings(_))
    ));
    assert!(matches!(
        gpu.run(&kernel, &[&input], &[16], [u32::MAX, 1, 1], TIMEOUT),
        Err(GpuError::Dispatch(_))
    ));
    assert!(matches!(
        gpu.run(&kernel, &[], &[16], [1, 1, 1], TIMEOUT),
        Err(GpuError::Bindings(_))
    ));
    // The device still runs work after the refusals.
    let outputs = gpu
        .run(&kernel, &[&input], &[16], [1, 1, 1], TIMEOUT)
        .expect("runs");
    assert_eq!(outputs[0].len(), 16);
}
