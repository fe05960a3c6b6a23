//! The CPU path: each kernel run through lavapipe (`Gpu::run`) and through
//! the interpreter (`run_on_cpu`) gives the same outputs, fuel and stop
//! flag, equal to the same arithmetic in Rust.

mod cpu_kernels;
#[expect(dead_code, reason = "the example tests use the rest")]
mod kernels;

use std::time::Duration;

use idlegrid_gpu::{
    Class, Gpu, GpuError, GpuRun, Kernel, Step, Stopped, execute_on_cpu, run_on_cpu,
};
use kernels::{FUEL, bytes, words};

const TIMEOUT: Duration = Duration::from_secs(60);

fn gpu() -> Gpu {
    Gpu::open(None).unwrap_or_else(|error| panic!("{error}"))
}

fn compile(wgsl: &str) -> Kernel {
    Kernel::compile(wgsl, "main", Class::Exact, FUEL).unwrap_or_else(|error| panic!("{error}"))
}

/// Runs `kernel` on lavapipe and on the CPU, asserts both give the same,
/// and gives it.
fn on_both(
    gpu: &Gpu,
    kernel: &Kernel,
    inputs: &[&[u8]],
    output_bytes: &[u64],
    workgroups: [u32; 3],
) -> GpuRun {
    let on_gpu = gpu
        .run(kernel, inputs, output_bytes, workgroups, TIMEOUT)
        .expect("runs on the GPU");
    let on_cpu =
        run_on_cpu(kernel, inputs, output_bytes, workgroups, TIMEOUT).expect("runs on the CPU");
    assert_eq!(on_cpu, on_gpu, "the CPU path differs from {:?}", gpu.info());
    on_cpu
}

#[test]
fn mandelbrot_on_the_cpu_equals_lavapipe_and_rust() {
    let gpu = gpu();
    let kernel = compile(kernels::MANDELBROT);
    let (width, height) = (64, 40);
    let params = kernels::mandelbrot_params(width, height, 200);
    let run = on_both(
        &gpu,
        &kernel,
        &[&bytes(&params)],
        &[u64::from(width * height) * 4],
        [width.div_ceil(8), height.div_ceil(8), 1],
    );
    let reference = kernels::mandelbrot(&params);
    assert!(reference.iter().filter(|count| **count == 200).count() > 100);
    assert_eq!(words(&run.outputs[0]), reference);
    let fuel: u64 = reference.iter().map(|count| u64::from(*count) + 2).sum();
    assert_eq!((run.fuel, run.stopped), (fuel, None));
}

#[test]
fn the_integer_hash_on_the_cpu_equals_lavapipe_and_rust() {
    let gpu = gpu();
    let kernel = compile(kernels::INT_HASH);
    let input: Vec<u32> = (0..1_000u32).map(|n| n.wrapping_mul(0x9e37_79b9)).collect();
    let run = on_both(
        &gpu,
        &kernel,
        &[&bytes(&input)],
        &[input.len() as u64 * 4],
        [16, 1, 1],
    );
    assert_eq!(words(&run.outputs[0]), kernels::int_hash(&input));
    // 1,000 invocations enter the loop 65 times; 24 return at once.
    assert_eq!(run.fuel, 1_000 * 66 + 24);
}

#[test]
fn out_of_bounds_accesses_and_odd_buffer_sizes_match_the_gpu() {
    let gpu = gpu();
    let kernel = compile(cpu_kernels::OUT_OF_BOUNDS);
    // count = 3, items 10, 11, 12 and two bytes of a fourth (13): the
    // buffer is padded to whole words, so the array holds 4 items.
    let mut tail = bytes(&[3, 10, 11, 12, 13]);
    tail.truncate(18);
    // 122 bytes: 31 words, the last one cut to two bytes on the way back.
    let run = on_both(&gpu, &kernel, &[&tail], &[122], [1, 1, 1]);
    let mut expected = vec![0u32; 31];
    let per_invocation = [
        [10, 4, 9 + 3, 5, 3, 31],
        [12, 4, 2 + 9, 6, 3, 31],
        [0, 4, 3, 7, 3, 31],
        [0, 4, 4, 0, 3, 31],
    ];
    for (invocation, values) in per_invocation.iter().enumerate() {
        expected[invocation * 6..invocation * 6 + 6].copy_from_slice(values);
    }
    expected[30] = 0xaabb_ccdd;
    let mut expected = bytes(&expected);
    expected.truncate(122);
    assert_eq!(run.outputs[0], expected);
}

#[test]
fn built_ins_over_a_three_dimensional_grid_match() {
    let gpu = gpu();
    let kernel = compile(cpu_kernels::BUILT_INS);
    let groups = [3, 2, 2];
    let expected = cpu_kernels::built_ins(groups);
    let run = on_both(&gpu, &kernel, &[], &[expected.len() as u64 * 4, 8], groups);
    assert_eq!(words(&run.outputs[0]), expected);
    // Set once, then raised by nothing; swapped in by every invocation.
    assert_eq!(words(&run.outputs[1]), [41, 7]);
}

#[test]
fn the_loop_limit_and_running_out_of_fuel_stop_the_cpu_as_they_stop_the_gpu() {
    let gpu = gpu();
    let long = compile(&kernels::chain(100_000));
    let run = on_both(&gpu, &long, &[], &[4], [1, 1, 1]);
    assert_eq!(run.stopped, Some(Stopped::LoopLimit));
    let limit = idlegrid_gpu::meter::LOOP_ITERATIONS_MAX;
    assert_eq!(run.fuel, u64::from(limit) + 2);
    assert_eq!(words(&run.outputs[0]), [kernels::chain_in_rust(limit)]);

    let hungry = Kernel::compile(&kernels::chain(1_000), "main", Class::Exact, 500).expect("exact");
    let run = on_both(&gpu, &hungry, &[], &[4], [1, 1, 1]);
    assert_eq!(run.stopped, Some(Stopped::OutOfFuel));
    assert_eq!(run.fuel, 501 + 1);
}

#[test]
fn tiled_matrix_multiplies_with_workgroup_memory_and_barriers_match() {
    let gpu = gpu();
    // Sizes that leave partial tiles on every edge.
    let (m, n, k) = (13u32, 11u32, 19u32);
    let dims = bytes(&[m, n, k]);
    let groups = [n.div_ceil(8), m.div_ceil(8), 1];

    let a: Vec<f32> = (0..m * k).map(|i| (i % 17) as f32 * 0.37 - 2.5).collect();
    let b: Vec<f32> = (0..k * n).map(|i| (i % 13) as f32 * -0.61 + 1.25).collect();
    let to_bytes = |values: &[f32]| bytes(&values.iter().map(|v| v.to_bits()).collect::<Vec<_>>());
    let kernel = compile(&cpu_kernels::tiled_matmul("f32", "0.0"));
    let run = on_both(
        &gpu,
        &kernel,
        &[&dims, &to_bytes(&a), &to_bytes(&b)],
        &[u64::from(m * n) * 4],
        groups,
    );
    let expected: Vec<u32> = cpu_kernels::tiled_matmul_f32(&a, &b, m, n, k)
        .iter()
        .map(|value| value.to_bits())
        .collect();
    assert_eq!(words(&run.outputs[0]), expected);

    let a: Vec<u32> = (0..m * k).map(|i| i.wrapping_mul(0x9e37_79b9)).collect();
    let b: Vec<u32> = (0..k * n)
        .map(|i| i.wrapping_mul(0x85eb_ca6b) ^ 7)
        .collect();
    let kernel = compile(&cpu_kernels::tiled_matmul("i32", "0"));
    let run = on_both(
        &gpu,
        &kernel,
        &[&dims, &bytes(&a), &bytes(&b)],
        &[u64::from(m * n) * 4],
        groups,
    );
    assert_eq!(
        words(&run.outputs[0]),
        cpu_kernels::matmul_wrapping(&a, &b, m, n, k)
    );
    // One per invocation and one per loop-body entry: 3 tiles, 8 steps
    // each, all entered once more to leave.
    let invocations = u64::from(groups[0] * groups[1]) * 64;
    assert_eq!(run.fuel, invocations * (1 + 4 + 3 * 9));
}

#[test]
fn uniform_loads_and_barriers_in_loops_in_called_functions_match() {
    let gpu = gpu();
    let kernel = compile(cpu_kernels::REDUCE);
    let input: Vec<u32> = (0..6u32).map(|n| n * 7 + 4).collect();
    let run = on_both(&gpu, &kernel, &[&bytes(&input)], &[6 * 17 * 4], [6, 1, 1]);
    assert_eq!(words(&run.outputs[0]), cpu_kernels::reduce(&input, 6));
}

#[test]
fn an_atomic_histogram_in_workgroup_and_storage_memory_matches() {
    let gpu = gpu();
    let kernel = compile(cpu_kernels::HISTOGRAM);
    let values: Vec<u32> = (0..1_000u32)
        .map(|n| n.wrapping_mul(0x9e37_79b9) >> 7)
        .collect();
    let run = on_both(
        &gpu,
        &kernel,
        &[&bytes(&values)],
        &[cpu_kernels::HISTOGRAM_WORDS * 4, 8],
        [16, 1, 1],
    );
    let (bins, signed) = cpu_kernels::histogram(&values);
    assert_eq!(words(&run.outputs[0]), bins);
    assert_eq!(words(&run.outputs[1]), signed);
}

#[test]
fn switches_nested_loops_and_calls_with_structs_match() {
    let gpu = gpu();
    let kernel = compile(cpu_kernels::CONTROL_FLOW);
    let input: Vec<u32> = (0..64u32).map(|n| n * 37 + n / 3).collect();
    let run = on_both(&gpu, &kernel, &[&bytes(&input)], &[64 * 16], [4, 1, 1]);
    assert_eq!(words(&run.outputs[0]), cpu_kernels::control_flow(&input));
}

#[test]
fn matrix_arithmetic_matches_and_matrix_products_are_refused_on_the_cpu() {
    let gpu = gpu();
    let kernel = compile(cpu_kernels::MATRICES);
    let ms: Vec<cpu_kernels::Matrix3> = (0..5)
        .map(|i| [0, 1, 2].map(|c| [0, 1, 2].map(|r| (i * 9 + c * 3 + r) as f32 * 0.75 - 11.0)))
        .collect();
    // Columns padded to four words; the padding holds a value the
    // arithmetic must not touch.
    let input: Vec<u32> = ms
        .iter()
        .flat_map(|m| {
            m.iter()
                .flat_map(|column| column.map(f32::to_bits).into_iter().chain([12_345]))
        })
        .collect();
    let run = on_both(
        &gpu,
        &kernel,
        &[&bytes(&input)],
        &[5 * 48, 5 * 16],
        [2, 1, 1],
    );
    let (out, columns) = cpu_kernels::matrices(&ms);
    let out: Vec<u32> = out
        .iter()
        .flat_map(|m| {
            m.iter()
                .flat_map(|column| column.map(f32::to_bits).into_iter().chain([0]))
        })
        .collect();
    let columns: Vec<u32> = columns.iter().flat_map(|c| c.map(f32::to_bits)).collect();
    assert_eq!(words(&run.outputs[0]), out);
    assert_eq!(words(&run.outputs[1]), columns);

    // A matrix times a vector is a sum of products whose order the
    // driver picks: the exact class refuses it (and the CPU path would
    // rather than guess).
    let product = cpu_kernels::MATRICES.replace(
        "out[id.x] = m;",
        "out[id.x] = m; columns[0] = (m * vec3<f32>(1.0, 2.0, 3.0)).xy;",
    );
    let error = Kernel::compile(&product, "main", Class::Exact, FUEL).expect_err("refused");
    assert!(error.to_string().contains("matrix product"), "{error}");
}

#[test]
fn integer_edge_cases_and_float_to_integer_conversions_match() {
    let gpu = gpu();
    let kernel = compile(cpu_kernels::EDGES);
    let specials = [
        0u32,
        1,
        2,
        31,
        32,
        33,
        63,
        64,
        0x7fff_ffff,
        0x8000_0000,
        0xffff_ffff,
        0xffff_fffe,
        0x1234_5678,
        3e9f32.to_bits(),
        (-3e9f32).to_bits(),
        f32::INFINITY.to_bits(),
        f32::NEG_INFINITY.to_bits(),
        f32::NAN.to_bits(),
        2_147_483_520f32.to_bits(),
        2_147_483_648f32.to_bits(),
        4_294_967_040f32.to_bits(),
        (-0.75f32).to_bits(),
        0.999f32.to_bits(),
        (-1.5f32).to_bits(),
    ];
    let mut pairs = Vec::new();
    for a in specials {
        for b in specials {
            pairs.extend([a, b]);
        }
    }
    let count = pairs.len() as u32 / 2;
    let run = on_both(
        &gpu,
        &kernel,
        &[&bytes(&pairs)],
        &[u64::from(count) * cpu_kernels::EDGE_RESULTS * 4],
        [count.div_ceil(64), 1, 1],
    );
    assert_eq!(words(&run.outputs[0]), cpu_kernels::edges(&pairs));
}

#[test]
fn two_dispatches_share_buffers_and_the_meter_on_the_cpu() {
    let first =
        Kernel::compile(cpu_kernels::TWO_STEPS, "square", Class::Exact, FUEL).expect("exact");
    let second =
        Kernel::compile(cpu_kernels::TWO_STEPS, "pairs", Class::Exact, FUEL).expect("exact");
    let input: Vec<u32> = (0..100u32).map(|n| n * 3 + 1).collect();
    let mut buffers = vec![bytes(&input), vec![0; 400], vec![0; 400]];
    let steps = [
        Step {
            kernel: &first,
            workgroups: [2, 1, 1],
        },
        Step {
            kernel: &second,
            workgroups: [2, 1, 1],
        },
    ];
    let metered = execute_on_cpu(&steps, &mut buffers, TIMEOUT).expect("runs");
    let squares: Vec<u32> = input.iter().map(|x| x.wrapping_mul(*x) + 5).collect();
    let sums: Vec<u32> = (0..100)
        .map(|i| (0..=i % 4).map(|j| squares[(i + j) % 100]).sum())
        .collect();
    assert_eq!(words(&buffers[1]), squares);
    assert_eq!(words(&buffers[2]), sums);
    assert_eq!(buffers[0], bytes(&input), "inputs stay as they were");
    // 128 invocations per step; the second step's loop runs i % 4 + 1
    // times for the 100 in range (+1 to leave).
    let loops: u64 = (0..100u64).map(|i| i % 4 + 2).sum();
    assert_eq!(metered.fuel, 128 + 128 + loops);
    assert_eq!(metered.stopped, None);

    // Steps must bind the same buffers, and as many as given.
    let other = compile(kernels::INT_HASH);
    let mixed = [
        steps[0],
        Step {
            kernel: &other,
            workgroups: [1, 1, 1],
        },
    ];
    assert!(matches!(
        execute_on_cpu(&mixed, &mut buffers, TIMEOUT),
        Err(GpuError::Bindings(_))
    ));
    assert!(matches!(
        execute_on_cpu(&steps, &mut buffers[..2], TIMEOUT),
        Err(GpuError::Bindings(_))
    ));
}

#[test]
fn a_long_kernel_past_its_wall_clock_limit_times_out() {
    let kernel = compile(&kernels::chain(50_000));
    let started = std::time::Instant::now();
    let limit = Duration::from_millis(50);
    let error = run_on_cpu(&kernel, &[], &[4], [60_000, 1, 1], limit).expect_err("times out");
    assert!(matches!(error, GpuError::WallTimeout(timeout) if timeout == limit));
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[test]
fn bad_arguments_are_refused_as_on_the_gpu() {
    let kernel = compile(kernels::INT_HASH);
    let input = [0u8; 16];
    let huge = idlegrid_gpu::BUFFER_BYTES_MAX + 4;
    let refused = |inputs: &[&[u8]], outputs: &[u64], workgroups| {
        run_on_cpu(&kernel, inputs, outputs, workgroups, TIMEOUT).expect_err("refused")
    };
    assert!(matches!(
        refused(&[&input], &[huge], [1, 1, 1]),
        GpuError::Bindings(_)
    ));
    assert!(matches!(
        refused(&[], &[16], [1, 1, 1]),
        GpuError::Bindings(_)
    ));
    assert!(matches!(
        refused(&[&input], &[16], [70_000, 1, 1]),
        GpuError::Dispatch(_)
    ));
    let wide = compile(&kernels::INT_HASH.replace("workgroup_size(64)", "workgroup_size(512)"));
    assert!(matches!(
        run_on_cpu(&wide, &[&input], &[16], [1, 1, 1], TIMEOUT),
        Err(GpuError::Dispatch(_))
    ));
    // Memory is bounded too: 64 KiB of workgroup memory, 4 MiB of locals.
    for declaration in [
        "var<workgroup> big: array<u32, 16384>;",
        "var<private> big: array<u32, 1048576>;",
    ] {
        let wgsl = format!(
            "{declaration}\n\
             @group(0) @binding(0) var<storage, read_write> o: array<u32>;\n\
             @compute @workgroup_size(1)\n\
             fn main() {{ big[3] = 1u; o[0] = big[3]; }}"
        );
        let kernel = compile(&wgsl);
        let error = run_on_cpu(&kernel, &[], &[4], [1, 1, 1], TIMEOUT).expect_err("refused");
        assert!(
            matches!(error, GpuError::Dispatch(_) | GpuError::Invalid(_)),
            "{error}"
        );
    }
}

mod random {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(12))]

        #[test]
        fn random_inputs_to_mixed_float_and_integer_arithmetic_match(
            rows in proptest::collection::vec(
                (-1000.0f32..1000.0, -4.0f32..4.0, any::<u32>(), any::<i32>()),
                1..40,
            )
        ) {
            let gpu = gpu();
            let kernel = compile(cpu_kernels::MIXED);
            let input: Vec<u32> = rows
                .iter()
                .flat_map(|(f, g, n, m)| [f.to_bits(), g.to_bits(), *n, *m as u32])
                .collect();
            let count = rows.len() as u32;
            let run = on_both(
                &gpu,
                &kernel,
                &[&bytes(&input)],
                &[u64::from(count) * 8],
                [count.div_ceil(8), 1, 1],
            );
            prop_assert_eq!(words(&run.outputs[0]), cpu_kernels::mixed(&input));
        }
    }
}
