//! Kernels run on a real Vulkan device (Mesa's lavapipe on CPUs, which
//! `.ci/run` installs; any GPU where one exists), compared with the same
//! arithmetic in Rust.

#[expect(dead_code, reason = "the example tests use the rest")]
mod kernels;

use std::time::Duration;

use idlegrid_gpu::{Class, Gpu, GpuError, Kernel, Stopped};
use kernels::FUEL;

const TIMEOUT: Duration = Duration::from_secs(60);

fn gpu() -> Gpu {
    Gpu::open(None).unwrap_or_else(|error| panic!("{error}"))
}

#[test]
fn mandelbrot_in_strict_f32_equals_rust_bit_for_bit() {
    let gpu = gpu();
    let kernel = Kernel::compile(kernels::MANDELBROT, "main", Class::Exact, FUEL).expect("exact");
    let (width, height) = (200, 120);
    let params = kernels::mandelbrot_params(width, height, 300);
    let run = gpu
        .run(
            &kernel,
            &[&kernels::bytes(&params)],
            &[u64::from(width * height) * 4],
            [width.div_ceil(8), height.div_ceil(8), 1],
            TIMEOUT,
        )
        .expect("runs");
    assert_eq!(run.stopped, None);
    let counts = kernels::words(&run.outputs[0]);
    let reference = kernels::mandelbrot(&params);
    // Interior points run to the cap: the float work is real.
    assert!(reference.iter().filter(|count| **count == 300).count() > 1_000);
    let differing = counts
        .iter()
        .zip(&reference)
        .filter(|(gpu, cpu)| gpu != cpu)
        .count();
    assert_eq!(differing, 0, "{} on {:?}", differing, gpu.info());
    // Fuel: one per invocation, one per entry into the loop's body (the
    // last entry is the one that breaks).
    let fuel: u64 = reference.iter().map(|count| u64::from(*count) + 2).sum();
    assert_eq!(run.fuel, fuel);
}

#[test]
fn an_integer_kernel_equals_rust_and_runs_the_same_twice() {
    let gpu = gpu();
    let kernel = Kernel::compile(kernels::INT_HASH, "main", Class::Exact, FUEL).expect("exact");
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
    assert_eq!(kernels::words(&first.outputs[0]), kernels::int_hash(&words));
    // 157 workgroups of 64: 10,000 invocations enter the loop 65 times,
    // 48 return at once.
    assert_eq!(first.fuel, 10_000 * (1 + 65) + 48);
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
    let kernel = Kernel::compile(wgsl, "main", Class::Exact, FUEL).expect("exact");
    let run = gpu
        .run(&kernel, &[&[1, 0, 0, 0]], &[16], [1, 1, 1], TIMEOUT)
        .expect("runs");
    assert_eq!(kernels::words(&run.outputs[0]), [7, 7, 7, 7]);
}

#[test]
fn buffers_and_dispatches_beyond_bounds_are_refused_before_running() {
    let gpu = gpu();
    let kernel = Kernel::compile(kernels::INT_HASH, "main", Class::Exact, FUEL).expect("exact");
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
    let run = gpu
        .run(&kernel, &[&input], &[16], [1, 1, 1], TIMEOUT)
        .expect("runs");
    assert_eq!(run.outputs[0].len(), 16);
}

#[test]
fn a_loop_longer_than_every_device_runs_stops_the_task_instead_of_lying() {
    // Lavapipe ends any loop after 65,535 iterations and returns what it
    // has; a real GPU runs on. The meter stops every loop earlier, on
    // every device, and says so.
    let gpu = gpu();
    let long =
        Kernel::compile(&kernels::chain(1_000_000), "main", Class::Exact, FUEL).expect("exact");
    let run = gpu.run(&long, &[], &[4], [1, 1, 1], TIMEOUT).expect("runs");
    assert_eq!(run.stopped, Some(Stopped::LoopLimit));
    // Within the limit, the answer is Rust's.
    let steps = idlegrid_gpu::meter::LOOP_ITERATIONS_MAX - 10;
    let short = Kernel::compile(&kernels::chain(steps), "main", Class::Exact, FUEL).expect("exact");
    let run = gpu
        .run(&short, &[], &[4], [1, 1, 1], TIMEOUT)
        .expect("runs");
    assert_eq!(run.stopped, None);
    assert_eq!(
        kernels::words(&run.outputs[0]),
        [kernels::chain_in_rust(steps)]
    );
    assert_eq!(run.fuel, u64::from(steps) + 2);
}

#[test]
fn an_invocation_past_its_fuel_stops_the_task_out_of_fuel() {
    let gpu = gpu();
    let kernel = Kernel::compile(&kernels::chain(1_000), "main", Class::Exact, 500).expect("exact");
    let run = gpu
        .run(&kernel, &[], &[4], [1, 1, 1], TIMEOUT)
        .expect("runs");
    assert_eq!(run.stopped, Some(Stopped::OutOfFuel));
    let kernel =
        Kernel::compile(&kernels::chain(1_000), "main", Class::Exact, 1_002).expect("exact");
    let run = gpu
        .run(&kernel, &[], &[4], [1, 1, 1], TIMEOUT)
        .expect("runs");
    assert_eq!(run.stopped, None);
    assert_eq!(run.fuel, 1_002);
}

#[test]
fn loops_in_called_functions_are_metered_and_only_the_entry_point_reports() {
    let gpu = gpu();
    let wgsl = "@group(0) @binding(0) var<storage, read_write> o: array<u32>;\n\
                fn sum(n: u32) -> u32 {\n\
                    var s = 0u;\n\
                    for (var i = 0u; i < n; i = i + 1u) { s = s + i; }\n\
                    return s;\n\
                }\n\
                @compute @workgroup_size(1)\n\
                fn main() { o[0] = sum(10u) + sum(5u); }";
    let kernel = Kernel::compile(wgsl, "main", Class::Exact, FUEL).expect("exact");
    let run = gpu
        .run(&kernel, &[], &[4], [1, 1, 1], TIMEOUT)
        .expect("runs");
    assert_eq!(kernels::words(&run.outputs[0]), [45 + 10]);
    // One for the invocation, 11 and 6 loop-body entries.
    assert_eq!(run.fuel, 1 + 11 + 6);
    assert_eq!(run.stopped, None);
}

#[test]
fn one_gpu_keeps_built_pipelines_apart_and_past_its_cache() {
    let gpu = gpu();
    let (width, height) = (40, 24);
    let run = |gpu: &Gpu, kernel: &Kernel, iterations: u32| {
        let params = kernels::mandelbrot_params(width, height, iterations);
        let run = gpu
            .run(
                kernel,
                &[&kernels::bytes(&params)],
                &[u64::from(width * height) * 4],
                [width.div_ceil(8), height.div_ceil(8), 1],
                TIMEOUT,
            )
            .expect("runs");
        assert_eq!(
            kernels::words(&run.outputs[0]),
            kernels::mandelbrot(&params)
        );
        run.fuel
    };
    let strict = Kernel::compile(kernels::MANDELBROT, "main", Class::Exact, FUEL).expect("exact");
    let plain = Kernel::compile_plain(kernels::MANDELBROT, "main").expect("compiles");
    // The same kernel again reuses its pipeline and gives the same; the
    // plain one (another SPIR-V) is not mistaken for it and reports no fuel.
    let fuel = run(&gpu, &strict, 50);
    assert_eq!(run(&gpu, &strict, 50), fuel);
    assert_eq!(run(&gpu, &plain, 50), 0);
    assert!(run(&gpu, &strict, 60) > fuel);
    // More kernels than the cache holds: it starts over, and runs go on.
    let budget = u32::try_from(idlegrid_gpu::PIPELINES_CACHED_MAX).expect("small") + 2;
    for fuel_per_invocation in 1_000..1_000 + budget {
        let kernel = Kernel::compile(
            kernels::MANDELBROT,
            "main",
            Class::Exact,
            fuel_per_invocation,
        )
        .expect("exact");
        assert_eq!(run(&gpu, &kernel, 50), fuel);
    }
}
