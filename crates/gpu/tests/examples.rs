//! The AI inference examples (`examples/int8-matmul-gpu`,
//! `examples/mlp-gpu`) run on a real Vulkan device (lavapipe on CPUs) and
//! compared with the same integer arithmetic in Rust, output and fuel.

#[expect(dead_code, reason = "the other GPU tests use the rest")]
mod kernels;

use std::time::Duration;

use idlegrid_gpu::{Class, Gpu, GpuRun, Kernel};
use kernels::FUEL;

const TIMEOUT: Duration = Duration::from_secs(60);

fn gpu() -> Gpu {
    Gpu::open(None).unwrap_or_else(|error| panic!("{error}"))
}

/// Deterministic test data (xorshift32).
struct Random(u32);

impl Random {
    fn next(&mut self) -> u32 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 17;
        self.0 ^= self.0 << 5;
        self.0
    }

    /// `count` int8 values over the whole range, -128 and 127 included.
    fn int8s(&mut self, count: usize) -> Vec<i8> {
        (0..count).map(|_| self.next() as u8 as i8).collect()
    }

    /// A value in `-limit ..= limit`.
    fn within(&mut self, limit: i32) -> i32 {
        (self.next() % (2 * limit as u32 + 1)) as i32 - limit
    }
}

fn int8_bytes(values: &[i8]) -> Vec<u8> {
    values.iter().map(|value| *value as u8).collect()
}

fn i32_bytes(values: &[i32]) -> Vec<u8> {
    values
        .iter()
        .flat_map(|value| value.to_le_bytes())
        .collect()
}

fn i32s(bytes: &[u8]) -> Vec<i32> {
    bytes
        .chunks_exact(4)
        .map(|chunk| i32::from_le_bytes(chunk.try_into().expect("four bytes")))
        .collect()
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

const INPUTS: usize = 64;
const HIDDEN: usize = 32;
const OUTPUTS: usize = 10;

/// The example network's weights and requantization.
struct Model {
    w1: Vec<i8>,
    b1: Vec<i32>,
    w2: Vec<i8>,
    b2: Vec<i32>,
    multiplier: u32,
    shift: u32,
}

impl Model {
    /// A network with the scales of a real one: a hidden sum of 64
    /// products of full-range int8 spreads over about ±45,000, and the
    /// hidden scale (multiplier / 2^shift ≈ 0.0015) maps it onto 0 … 127
    /// with some units saturating and about half cut by the ReLU.
    fn generate(random: &mut Random) -> Self {
        Self {
            w1: random.int8s(HIDDEN * INPUTS),
            b1: (0..HIDDEN).map(|_| random.within(20_000)).collect(),
            w2: random.int8s(OUTPUTS * HIDDEN),
            b2: (0..OUTPUTS).map(|_| random.within(50_000)).collect(),
            multiplier: 1_649_267_442,
            shift: 40,
        }
    }

    /// The `model` buffer: w1, b1, w2, b2.
    fn bytes(&self) -> Vec<u8> {
        let mut bytes = int8_bytes(&self.w1);
        bytes.extend(i32_bytes(&self.b1));
        bytes.extend(int8_bytes(&self.w2));
        bytes.extend(i32_bytes(&self.b2));
        bytes
    }

    /// The `params` buffer.
    fn params(&self, batch: usize) -> Vec<u8> {
        kernels::bytes(&[batch as u32, self.multiplier, self.shift])
    }

    /// The hidden activations (0 … 127 as bytes) and the results rows (10
    /// logits and the class) of `inputs`, in 64-bit arithmetic.
    fn infer(&self, inputs: &[i8]) -> (Vec<u8>, Vec<i32>) {
        let mut hidden = Vec::new();
        let mut results = Vec::new();
        for input in inputs.chunks_exact(INPUTS) {
            let start = hidden.len();
            for unit in 0..HIDDEN {
                let weights = &self.w1[unit * INPUTS..][..INPUTS];
                let sum = self.b1[unit] + dot(input, weights);
                let scaled = (i64::from(sum) * i64::from(self.multiplier)
                    + (1i64 << (self.shift - 1)))
                    >> self.shift;
                hidden.push(scaled.clamp(0, 127) as u8);
            }
            let activations: Vec<i8> = hidden[start..].iter().map(|h| *h as i8).collect();
            let logits: Vec<i32> = (0..OUTPUTS)
                .map(|output| {
                    self.b2[output] + dot(&activations, &self.w2[output * HIDDEN..][..HIDDEN])
                })
                .collect();
            let best = (0..OUTPUTS).fold(0, |best, output| {
                if logits[output] > logits[best] {
                    output
                } else {
                    best
                }
            });
            results.extend(logits);
            results.push(best as i32);
        }
        (hidden, results)
    }
}

fn dot(x: &[i8], y: &[i8]) -> i32 {
    x.iter()
        .zip(y)
        .map(|(x, y)| i32::from(*x) * i32::from(*y))
        .sum()
}

/// The example's `layer2` alone with `hidden` read-only, so that it takes
/// `layer1`'s output as an input buffer: `Gpu::run` binds every writable
/// buffer as a zeroed output, and naga refuses a module in which `layer1`
/// writes a read-only buffer. `layer2` itself is unchanged.
fn layer2_with_hidden_as_input() -> String {
    let writable = "var<storage, read_write> hidden";
    assert_eq!(kernels::MLP.matches(writable).count(), 1);
    let start = kernels::MLP
        .find("@compute @workgroup_size(64)\nfn layer1")
        .expect("layer1");
    let end = start + kernels::MLP[start..].find("\n}\n").expect("layer1's end") + 3;
    let mut wgsl = kernels::MLP.to_owned();
    wgsl.replace_range(start..end, "");
    wgsl.replace(writable, "var<storage, read> hidden")
}

/// The meter's rule for the two dispatches: layer1's invocations (64 per
/// 8 rows) each count one plus 9 entries of the loop copying w1, and each
/// of the batch's 8 per row 17 entries of its loop over 16 input words;
/// layer2's (64 per 64 rows) count one, and each of the batch's one per
/// row 11 entries of its loop over outputs and 9 per output of its loop
/// over 8 hidden words.
fn mlp_fuel(batch: u64) -> u64 {
    let layer1 = 64 * batch.div_ceil(8) * (1 + 9) + batch * 8 * 17;
    let layer2 = 64 * batch.div_ceil(64) + batch * (11 + 10 * 9);
    layer1 + layer2
}

/// The example's two entry points, as two `Gpu::run`s until
/// `Gpu::execute` runs a program's dispatches over one set of buffers.
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
            layer2: Kernel::compile(&layer2_with_hidden_as_input(), "layer2", Class::Exact, FUEL)
                .expect("exact"),
        }
    }

    /// Runs layer1, then layer2 on layer1's hidden activations.
    fn infer(&self, gpu: &Gpu, model: &Model, inputs: &[i8]) -> Inference {
        let batch = inputs.len() / INPUTS;
        let params = model.params(batch);
        let model = model.bytes();
        let inputs = int8_bytes(inputs);
        let results_bytes = (batch * (OUTPUTS + 1) * 4) as u64;
        let first = gpu
            .run(
                &self.layer1,
                &[&params, &model, &inputs],
                &[(batch * HIDDEN) as u64, results_bytes],
                [(batch as u32).div_ceil(8), 1, 1],
                TIMEOUT,
            )
            .expect("layer1 runs");
        let second = gpu
            .run(
                &self.layer2,
                &[&params, &model, &inputs, &first.outputs[0]],
                &[results_bytes],
                [(batch as u32).div_ceil(64), 1, 1],
                TIMEOUT,
            )
            .expect("layer2 runs");
        assert_eq!((first.stopped, second.stopped), (None, None));
        Inference {
            hidden: first.outputs[0].clone(),
            results: i32s(&second.outputs[0]),
            fuel: first.fuel + second.fuel,
        }
    }
}

/// Runs `inputs` through `model` on the GPU and checks the hidden
/// activations, the logits and classes and the fuel against Rust.
fn check_mlp(gpu: &Gpu, mlp: &Mlp, model: &Model, inputs: &[i8]) -> Inference {
    let batch = inputs.len() / INPUTS;
    let on_gpu = mlp.infer(gpu, model, inputs);
    let (hidden, results) = model.infer(inputs);
    assert_eq!(on_gpu.hidden, hidden, "hidden, batch {batch}");
    assert_eq!(on_gpu.results, results, "results, batch {batch}");
    assert_eq!(on_gpu.fuel, mlp_fuel(batch as u64), "fuel, batch {batch}");
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
            assert_eq!(mlp.infer(&gpu, &model, &inputs), inference);
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
    // dispatches (check_mlp's layer1 runs bind `results` unused).
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
