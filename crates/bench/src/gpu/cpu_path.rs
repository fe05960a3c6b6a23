//! The CPU path (`run_on_cpu`): what a validator without a GPU pays to
//! settle a dispute over a GPU task, against the same metered kernel on
//! the adapter. Both must give the same bytes and the same fuel.

use std::time::Duration;

use anyhow::bail;
use idlegrid_gpu::{Class, GpuRun, Kernel, run_on_cpu};

use super::{Bench, TIMEOUT, mandelbrot, matmul, wgsl};
use crate::Measurement;
use crate::sandbox::millis;

pub(super) fn run(bench: &Bench) -> anyhow::Result<Vec<Measurement>> {
    let (width, height, iterations): (u32, u32, u32) = if bench.quick {
        (32, 24, 50)
    } else {
        (128, 96, 200)
    };
    let mandelbrot = compare(
        bench,
        "Mandelbrot",
        &wgsl(mandelbrot::NAME)?,
        &mandelbrot::buffers(width, height, iterations),
        mandelbrot::workgroups(width, height),
    )?;
    let size: [u32; 3] = if bench.quick {
        [32, 32, 32]
    } else {
        [64, 64, 64]
    };
    let matmul = compare(
        bench,
        "int8 matmul",
        &wgsl(matmul::NAME)?,
        &matmul::buffers(size),
        matmul::workgroups(size),
    )?;
    let [m, n, k] = size;
    let adapter = &bench.adapter;
    Ok(vec![
        Measurement::new(
            "gpu.cpu_path.mandelbrot",
            millis(mandelbrot.0),
            "ms",
            millis(mandelbrot.1),
            format!("{width}×{height}×{iterations}: the same kernel on {adapter}"),
        ),
        Measurement::new(
            "gpu.cpu_path.int8_matmul",
            millis(matmul.0),
            "ms",
            millis(matmul.1),
            format!("{m}×{n}×{k}: the same kernel on {adapter}"),
        ),
    ])
}

/// The median times of the example kernel `wgsl` on the CPU path and on
/// the adapter, over `buffers` (its inputs, then zeroed outputs), after
/// checking that both give the same outputs and fuel.
fn compare(
    bench: &Bench,
    what: &str,
    wgsl: &str,
    buffers: &[Vec<u8>],
    workgroups: [u32; 3],
) -> anyhow::Result<(Duration, Duration)> {
    let kernel = Kernel::compile(wgsl, "main", Class::Exact, u32::MAX)?;
    let inputs: Vec<&[u8]> = kernel
        .bindings
        .iter()
        .zip(buffers)
        .filter(|(binding, _)| !binding.writable)
        .map(|(_, bytes)| bytes.as_slice())
        .collect();
    let output_bytes: Vec<u64> = kernel
        .bindings
        .iter()
        .zip(buffers)
        .filter(|(binding, _)| binding.writable)
        .map(|(_, bytes)| bytes.len() as u64)
        .collect();
    let on_cpu = || -> anyhow::Result<GpuRun> {
        Ok(run_on_cpu(
            &kernel,
            &inputs,
            &output_bytes,
            workgroups,
            TIMEOUT,
        )?)
    };
    let on_gpu = || -> anyhow::Result<GpuRun> {
        Ok(bench
            .gpu
            .run(&kernel, &inputs, &output_bytes, workgroups, TIMEOUT)?)
    };
    // One untimed run: the driver compiles the pipeline.
    on_gpu()?;
    let (gpu_time, gpu_run) = bench.median_of(on_gpu)?;
    let (cpu_time, cpu_run) = bench.median_of(on_cpu)?;
    let adapter = &bench.adapter;
    if gpu_run.stopped.is_some() || cpu_run.stopped.is_some() {
        bail!(
            "{what} stopped early: {:?} on {adapter}, {:?} on the CPU path",
            gpu_run.stopped,
            cpu_run.stopped
        );
    }
    for (gpu, cpu) in gpu_run.outputs.iter().zip(&cpu_run.outputs) {
        super::same_bytes(
            &format!("{what} outputs on {adapter} and on the CPU path"),
            gpu,
            cpu,
        )?;
    }
    if gpu_run.fuel != cpu_run.fuel {
        bail!(
            "{what}: {} fuel on {adapter}, {} on the CPU path",
            gpu_run.fuel,
            cpu_run.fuel
        );
    }
    eprintln!(
        "idlegrid-bench gpu: {what} on the CPU path: the same bytes and fuel ({}) as on {adapter}",
        gpu_run.fuel
    );
    Ok((cpu_time, gpu_time))
}
