//! The int8 matrix multiply example (`examples/int8-matmul-gpu`):
//! C = A × B, A of M × K and B of K × N int8, C of i32.

use idlegrid_gpu::{Class, Kernel, Step};

use super::{Bench, Random, same_bytes, wgsl, words};
use crate::Measurement;
use crate::sandbox::millis;

pub(super) const NAME: &str = "int8-matmul-gpu";

/// The kernel's buffers for M × N × K: `params`, A and B of int8 over the
/// whole range, and a zeroed C.
pub(super) fn buffers([m, n, k]: [u32; 3]) -> Vec<Vec<u8>> {
    let mut random = Random(0x1234_5678);
    let (m, n, k) = (m as usize, n as usize, k as usize);
    vec![
        words(&[m as u32, n as u32, k as u32]),
        random.int8s(m * k),
        random.int8s(k * n),
        vec![0; m * n * 4],
    ]
}

/// One workgroup per 64 × 64 tile of C.
pub(super) fn workgroups([m, n, _]: [u32; 3]) -> [u32; 3] {
    [n.div_ceil(64), m.div_ceil(64), 1]
}

pub(super) fn run(bench: &Bench) -> anyhow::Result<Vec<Measurement>> {
    let size: [u32; 3] = if bench.quick {
        [64, 64, 64]
    } else {
        [512, 512, 512]
    };
    let wgsl = wgsl(NAME)?;
    let strict = Kernel::compile(&wgsl, "main", Class::Exact, u32::MAX)?;
    let plain = Kernel::compile_plain(&wgsl, "main")?;
    let buffers = buffers(size);
    let workgroups = workgroups(size);
    let step = |kernel| [Step { kernel, workgroups }];
    let (strict_time, strict_buffers, metered) = bench.on_gpu(&step(&strict), &buffers)?;
    let (plain_time, _, _) = bench.on_gpu(&step(&plain), &buffers)?;

    // stdin is params, A and B; stdout is C.
    let stdin = buffers[..3].concat();
    let (wasm_time, stdout) = bench.on_wasi(NAME, &[], stdin, buffers[3].len() as u64)?;
    let adapter = &bench.adapter;
    same_bytes(
        &format!("int8 products on {adapter} and in the sandbox"),
        &strict_buffers[3],
        &stdout,
    )?;
    let [m, n, k] = size;
    eprintln!(
        "idlegrid-bench gpu: int8 matmul {m}×{n}×{k}: the same bytes on {adapter} and in \
         the sandbox; {} GPU fuel",
        metered.fuel
    );
    let size = format!("{m}×{n}×{k}");
    Ok(vec![
        Measurement::new(
            "gpu.int8_matmul.vs_wasi",
            millis(strict_time),
            "ms",
            millis(wasm_time),
            format!("{size}: the WASI build in the sandbox, one core (fuel on)"),
        ),
        Measurement::new(
            "gpu.int8_matmul.vs_plain",
            millis(strict_time),
            "ms",
            millis(plain_time),
            format!("{size}: the plain kernel (no NoContraction, no meter)"),
        ),
    ])
}
