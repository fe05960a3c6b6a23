//! The AI inference examples (`examples/int8-matmul-gpu`,
//! `examples/mlp-gpu`) run on a real Vulkan device (lavapipe on CPUs) and
//! compared with the same integer arithmetic in Rust, output and fuel; the
//! MLP's two dispatches also on the CPU path.

#[expect(dead_code, reason = "the other GPU tests use the rest")]
mod kernels;
mod mlp;

use std::time::Duration;

use idlegrid_gpu::{Class, Gpu, GpuRun, Kernel, Metered, Step, execute_on_cpu};
use kernels::FUEL;
use mlp::{HIDDEN, INPUTS, Model, OUTPUTS, Random, i32s, int8_bytes};

const TIMEOUT: Duration = Duration::from_secs(60);

fn gpu() -> Gpu {
    Gpu::open(None).unwrap_or_else(|error| panic!("{error}"))
}

// ---- int8 matrix multiply ----

/// C = A × B, A m×k and B k×n int8 row-major, C i32.
fn matmul(m: usize, n: usize, k: usize, a: &[i8], b: &[i8]) -> Vec<i32> {
    let mut c = vec![0i32; m * n];
    for row in 0..m {
        for column in 0..n {
            c[row * n + column] = (0..k)
                .map(|inner| i32::from(a[row * k + inner]) * i32::from(b[inner * n + column]))
                .sum();
        }
    }
    c
}

/// Runs the example kernel on `a` (m×k) and `b` (k×n).
fn matmul_on_gpu(gpu: &Gpu, kernel: &Kernel, [m, n, k]: [u32; 3], a: &[i8], b: &[i8]) -> GpuRun {
    let params = kernels::bytes(&[m, n, k]);
    let run = gpu
        .run(
            kernel,
            &[&params, &int8_bytes(a), &int8_bytes(b)],
            &[u64::from(m) * u64::from(n) * 4],
            [n.div_ceil(64), m.div_ceil(64), 1],
            TIMEOUT,
        )
        .expect("runs");
    assert_eq!(run.stopped, None);
    run
}

/// The meter's rule for the kernel: each invocation counts one, plus one
/// per entry into the body of the loop over K (one per 32-byte slice and
/// the entry that ends it) and of the loop over a slice's 8 words (9 per
/// slice); 256 invocations per 64 × 64 tile of C.
fn matmul_fuel([m, n, k]: [u32; 3]) -> u64 {
    let invocations = 256 * u64::from(m.div_ceil(64)) * u64::from(n.div_ceil(64));
    let slices = u64::from(k.div_ceil(32));
    invocations * (1 + (slices + 1) + slices * 9)
}

#[test]
fn int8_matmul_equals_rust_on_whole_and_edge_tiles() {
    let gpu = gpu();
    let kernel = Kernel::compile(kernels::INT8_MATMUL, "main", Class::Exact, FUEL).expect("exact");
    let mut random = Random(0x1234_5678);
    // Whole 64 × 64 tiles and K a multiple of the 32-byte slice; then edge
    // tiles in every dimension, rows of A and B that are not word-aligned
    // (K and N not multiples of 4), one element, and a long K.
    for size in [
        [64, 64, 64],
        [128, 64, 32],
        [100, 70, 45],
        [3, 130, 7],
        [65, 1, 97],
        [1, 1, 1],
        [17, 33, 1000],
    ] {
        let [m, n, k] = size.map(|dimension: u32| dimension as usize);
        let a = random.int8s(m * k);
        let b = random.int8s(k * n);
        let run = matmul_on_gpu(&gpu, &kernel, size, &a, &b);
        assert_eq!(i32s(&run.outputs[0]), matmul(m, n, k, &a, &b), "{size:?}");
        assert_eq!(run.fuel, matmul_fuel(size), "{size:?}");
    }
}

#[test]
fn int8_matmul_of_extreme_values_and_its_fuel_are_the_same_on_two_runs() {
    let gpu = gpu();
    let kernel = Kernel::compile(kernels::INT8_MATMUL, "main", Class::Exact, FUEL).expect("exact");
    // -128 · -128 everywhere: every sum is K · 16384, the largest there is.
    let size = [70, 90, 300];
    let [m, n, k] = size.map(|dimension: u32| dimension as usize);
    let (a, b) = (vec![-128; m * k], vec![-128; k * n]);
    let first = matmul_on_gpu(&gpu, &kernel, size, &a, &b);
    assert!(
        i32s(&first.outputs[0])
            .iter()
            .all(|sum| *sum == 300 * 16384)
    );
    // Mixed signs, run twice.
    let a: Vec<i8> = (0..m * k)
        .map(|i| if i % 3 == 0 { -128 } else { 127 })
        .collect();
    let b: Vec<i8> = (0..k * n)
        .map(|i| if i % 5 == 0 { 127 } else { -128 })
        .collect();
    let first = matmul_on_gpu(&gpu, &kernel, size, &a, &b);
    assert_eq!(i32s(&first.outputs[0]), matmul(m, n, k, &a, &b));
    let second = matmul_on_gpu(&gpu, &kernel, size, &a, &b);
    assert_eq!(second, first);
    assert_eq!(first.fuel, matmul_fuel(size));
}

// ---- quantized MLP ----

/// The example's two entry points, run as two dispatches over one set of
/// buffers: params, model, inputs, hidden, results.
struct Mlp {
    layer1: Kernel,
    layer2: Kernel,
}

/// What the two dispatches gave.
#[derive(Debug, PartialEq, Eq)]
struct Inference {
    hidden: Vec<u8>,
    results: Vec<i32>,
    fuel: u64,
}

impl Mlp {
    fn compile() -> Self {
        Self {
            layer1: Kernel::compile(kernels::MLP, "layer1", Class::Exact, FUEL).expect("exact"),
            layer2: Kernel::compile(kernels::MLP, "layer2", Class::Exact, FUEL).expect("exact"),
        }
    }

    /// Runs layer1 then layer2 with `execute` (a GPU's or the CPU path's).
    fn infer(
        &self,
        execute: impl Fn(&[Step<'_>], &mut [Vec<u8>]) -> Metered,
        model: &Model,
        inputs: &[i8],
    ) -> Inference {
        let batch = inputs.len() / INPUTS;
        let [first, second] = mlp::workgroups(batch);
        let steps = [
            Step {
                kernel: &self.layer1,
                workgroups: first,
            },
            Step {
                kernel: &self.layer2,
                workgroups: second,
            },
        ];
        let mut buffers = vec![
            kernels::bytes(&model.params(batch)),
            model.bytes(),
            int8_bytes(inputs),
            vec![0; batch * HIDDEN],
            vec![0; batch * (OUTPUTS + 1) * 4],
        ];
        let metered = execute(&steps, &mut buffers);
        assert_eq!(metered.stopped, None);
        Inference {
            hidden: buffers[3].clone(),
            results: i32s(&buffers[4]),
            fuel: metered.fuel,
        }
    }
}

/// Runs `inputs` through `model` on the GPU and on the CPU path and checks
/// both against Rust: the hidden activations, the logits and classes, and
/// the fuel.
fn check_mlp(gpu: &Gpu, mlp: &Mlp, model: &Model, inputs: &[i8]) -> Inference {
    let batch = inputs.len() / INPUTS;
    let on_gpu = mlp.infer(
        |steps, buffers| gpu.execute(steps, buffers, TIMEOUT).expect("runs"),
        model,
        inputs,
    );
    let on_cpu = mlp.infer(
        |steps, buffers| execute_on_cpu(steps, buffers, TIMEOUT).expect("runs"),
        model,
        inputs,
    );
    assert_eq!(on_cpu, on_gpu, "the CPU path, batch {batch}");
    let (hidden, results) = model.infer(inputs);
    assert_eq!(on_gpu.hidden, hidden, "hidden, batch {batch}");
    assert_eq!(on_gpu.results, results, "results, batch {batch}");
    assert_eq!(on_gpu.fuel, mlp::fuel(batch as u64), "fuel, batch {batch}");
    on_gpu
}

#[test]
fn mlp_in_two_dispatches_gives_rusts_logits_and_classes() {
    let gpu = gpu();
    let mlp = Mlp::compile();
    let mut random = Random(0x9e37_79b9);
    let model = Model::generate(&mut random);
    // One input, a batch that leaves the last workgroup of each layer
    // part empty, and one over several workgroups of both.
    for batch in [1, 37, 300] {
        let inputs = random.int8s(batch * INPUTS);
        let inference = check_mlp(&gpu, &mlp, &model, &inputs);
        if batch == 300 {
            // The arithmetic is a real network's: the ReLU cuts units,
            // some saturate, the rest spread between, and the inputs fall
            // in several classes.
            let hidden = &inference.hidden;
            assert!(hidden.iter().filter(|h| **h == 0).count() > hidden.len() / 4);
            assert!(hidden.contains(&127));
            assert!(hidden.iter().filter(|h| (1..127).contains(*h)).count() > hidden.len() / 4);
            let classes: std::collections::BTreeSet<i32> = inference
                .results
                .chunks_exact(OUTPUTS + 1)
                .map(|row| row[OUTPUTS])
                .collect();
            assert!(classes.len() > 3, "{classes:?}");
            // The same work again gives the same bytes and fuel.
            let again = mlp.infer(
                |steps, buffers| gpu.execute(steps, buffers, TIMEOUT).expect("runs"),
                &model,
                &inputs,
            );
            assert_eq!(again, inference);
        }
    }
}

#[test]
fn mlp_requantization_rounds_and_clamps_as_64_bit_arithmetic_does() {
    let gpu = gpu();
    let mlp = Mlp::compile();
    let mut random = Random(0x0bad_cafe);
    // Small inputs and biases, so hidden sums spread over a few thousand
    // and land on every rounding case, scaled by each end of the shift's
    // range: 1/8 (halves are common), shift 32 (the rounding bit in the
    // low word), the largest shift, and a scale just under one half.
    for (multiplier, shift) in [
        (1 << 30, 33),
        (100_000_000, 32),
        (u32::MAX >> 1, 62),
        (u32::MAX >> 1, 32),
    ] {
        let mut model = Model::generate(&mut random);
        model.b1 = (0..HIDDEN).map(|_| random.within(300)).collect();
        (model.multiplier, model.shift) = (multiplier, shift);
        let inputs: Vec<i8> = (0..50 * INPUTS).map(|_| random.within(2) as i8).collect();
        check_mlp(&gpu, &mlp, &model, &inputs);
    }
    // Sums as large as they get, both signs.
    let mut model = Model::generate(&mut random);
    model.w1 = (0..HIDDEN * INPUTS)
        .map(|i| if i % 128 < 64 { -128 } else { 127 })
        .collect();
    model.b1 = vec![i32::MAX / 2; HIDDEN];
    (model.multiplier, model.shift) = (u32::MAX >> 1, 32);
    // Logits 2 and 6 equal and above the rest: the class is the first.
    let row2: Vec<i8> = model.w2[2 * HIDDEN..3 * HIDDEN].to_vec();
    model.w2[6 * HIDDEN..7 * HIDDEN].copy_from_slice(&row2);
    (model.b2[2], model.b2[6]) = (10_000_000, 10_000_000);
    let inputs: Vec<i8> = (0..9 * INPUTS)
        .map(|i| if i < 4 * INPUTS { -128 } else { 127 })
        .collect();
    let inference = check_mlp(&gpu, &mlp, &model, &inputs);
    assert!(
        inference
            .results
            .chunks_exact(OUTPUTS + 1)
            .all(|row| row[OUTPUTS] == 2)
    );
}

#[test]
fn the_mlp_entry_points_bind_the_same_buffers() {
    let layer1 = Kernel::compile(kernels::MLP, "layer1", Class::Exact, FUEL).expect("exact");
    let layer2 = Kernel::compile(kernels::MLP, "layer2", Class::Exact, FUEL).expect("exact");
    // Neither uses every buffer (layer1 never touches `results`, layer2
    // never reads `inputs`). naga leaves a buffer an entry point does not
    // use out of that entry point's SPIR-V, but a kernel's bindings are
    // the module's, and the run's layout is built from them: both bind all
    // five and the meter after them, so one binding list serves both
    // dispatches.
    assert_eq!(layer1.bindings, layer2.bindings);
    assert_eq!(layer1.bindings.len(), 5);
    assert_eq!(
        layer1
            .outputs()
            .map(|binding| binding.binding)
            .collect::<Vec<_>>(),
        [3, 4]
    );
    assert_eq!((layer1.meter_binding, layer2.meter_binding), (5, 5));
}
