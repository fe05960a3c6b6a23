//! The quantized MLP example (`examples/mlp-gpu`): 64 int8 inputs → 32
//! hidden units → 10 logits and a class, over a batch, in two dispatches
//! (`layer1`, then `layer2`) over the same five buffers.

use idlegrid_gpu::{Class, Kernel, Step};

use super::{Bench, Random, same_bytes, wgsl, words};
use crate::Measurement;
use crate::sandbox::millis;

const NAME: &str = "mlp-gpu";
const INPUTS: usize = 64;
const HIDDEN: usize = 32;
const OUTPUTS: usize = 10;

/// The requantization of the hidden sums, multiplier / 2^shift ≈ 0.0015:
/// a hidden sum of 64 products of full-range int8 spreads over about
/// ±45,000, and this maps it onto 0 … 127 with some units saturating and
/// about half cut by the ReLU, as in a real layer.
const MULTIPLIER: u32 = 1_649_267_442;
const SHIFT: u32 = 40;

/// The kernel's buffers for a batch: `params`, the model (weights over
/// the whole int8 range, biases of a real layer's size), the inputs, and
/// zeroed `hidden` and `results`.
fn buffers(batch: u32) -> Vec<Vec<u8>> {
    let mut random = Random(0x9e37_79b9);
    let mut model = random.int8s(HIDDEN * INPUTS);
    for _ in 0..HIDDEN {
        model.extend(random.within(20_000).to_le_bytes());
    }
    model.extend(random.int8s(OUTPUTS * HIDDEN));
    for _ in 0..OUTPUTS {
        model.extend(random.within(50_000).to_le_bytes());
    }
    let rows = batch as usize;
    vec![
        words(&[batch, MULTIPLIER, SHIFT]),
        model,
        random.int8s(rows * INPUTS),
        vec![0; rows * HIDDEN],
        vec![0; rows * (OUTPUTS + 1) * 4],
    ]
}

/// `layer1` over a workgroup per eight inputs, then `layer2` over a
/// workgroup per 64.
fn steps([layer1, layer2]: &[Kernel; 2], batch: u32) -> [Step<'_>; 2] {
    [
        Step {
            kernel: layer1,
            workgroups: [batch.div_ceil(8), 1, 1],
        },
        Step {
            kernel: layer2,
            workgroups: [batch.div_ceil(64), 1, 1],
        },
    ]
}

pub(super) fn run(bench: &Bench) -> anyhow::Result<Vec<Measurement>> {
    let batch: u32 = if bench.quick { 1_000 } else { 20_000 };
    let wgsl = wgsl(NAME)?;
    let strict = [
        Kernel::compile(&wgsl, "layer1", Class::Exact, u32::MAX)?,
        Kernel::compile(&wgsl, "layer2", Class::Exact, u32::MAX)?,
    ];
    let plain = [
        Kernel::compile_plain(&wgsl, "layer1")?,
        Kernel::compile_plain(&wgsl, "layer2")?,
    ];
    let buffers = buffers(batch);
    let (strict_time, strict_buffers, metered) = bench.on_gpu(&steps(&strict, batch), &buffers)?;
    let (plain_time, _, _) = bench.on_gpu(&steps(&plain, batch), &buffers)?;

    // stdin is params, the model and the inputs; stdout is the results.
    let stdin = buffers[..3].concat();
    let (wasm_time, stdout) = bench.on_wasi(NAME, &[], stdin, buffers[4].len() as u64)?;
    let adapter = &bench.adapter;
    same_bytes(
        &format!("MLP logits and classes on {adapter} and in the sandbox"),
        &strict_buffers[4],
        &stdout,
    )?;
    eprintln!(
        "idlegrid-bench gpu: MLP over {batch} inputs, two dispatches: the same bytes on \
         {adapter} and in the sandbox; {} GPU fuel",
        metered.fuel
    );
    let size = format!("batch {batch}");
    Ok(vec![
        Measurement::new(
            "gpu.mlp.vs_wasi",
            millis(strict_time),
            "ms",
            millis(wasm_time),
            format!("{size}: the WASI build in the sandbox, one core (fuel on)"),
        ),
        Measurement::new(
            "gpu.mlp.vs_plain",
            millis(strict_time),
            "ms",
            millis(plain_time),
            format!("{size}: the plain kernels (no NoContraction, no meter)"),
        ),
    ])
}
