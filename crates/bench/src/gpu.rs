//! `idlegrid-bench gpu`: a GPU kernel against the same work as a WASI task
//! in the sandbox on one core, and what exactness and metering cost against
//! the plain kernel, on whatever Vulkan adapter is present.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use idlegrid_gpu::{Class, Gpu, Kernel};
use idlegrid_sandbox::{TaskLimits, TaskSpec};

use crate::Measurement;
use crate::sandbox::{examples_dir, median, millis, sandbox};

#[derive(Debug, clap::Args)]
pub struct Options {
    #[command(flatten)]
    pub common: crate::Common,
    /// Repetitions per measurement (the median is reported).
    #[arg(long, default_value_t = 5)]
    repetitions: usize,
    /// The adapter to use (a part of its name); the first one otherwise.
    #[arg(long)]
    adapter: Option<String>,
}

const TIMEOUT: Duration = Duration::from_secs(600);

pub fn run(options: &Options) -> anyhow::Result<Vec<Measurement>> {
    let repetitions = if options.common.quick {
        1
    } else {
        options.repetitions.max(1)
    };
    let (width, height, iterations): (u32, u32, u32) = if options.common.quick {
        (64, 48, 100)
    } else {
        (1024, 768, 1000)
    };
    let gpu = Gpu::open(options.adapter.as_deref())?;
    let adapter = gpu.info().name.clone();
    eprintln!("idlegrid-bench gpu: adapter {adapter}");

    let folder = examples_dir().join("mandelbrot-gpu");
    let wgsl = std::fs::read_to_string(folder.join("mandelbrot-gpu.wgsl"))
        .context("reading the example kernel")?;
    let strict = Kernel::compile(&wgsl, "main", Class::Exact, u32::MAX)?;
    let plain = Kernel::compile_plain(&wgsl, "main")?;
    // The steps as the C program computes them.
    let x_step = 3.0f32 / width as f32;
    let y_step = 3.0f32 / height as f32;
    let params: Vec<u8> = [
        width,
        height,
        iterations,
        x_step.to_bits(),
        y_step.to_bits(),
    ]
    .iter()
    .flat_map(|word| word.to_le_bytes())
    .collect();
    let output_bytes = u64::from(width) * u64::from(height) * 4;
    let workgroups = [width.div_ceil(8), height.div_ceil(8), 1];
    let time = |kernel: &Kernel| -> anyhow::Result<(Duration, Vec<u8>, u64)> {
        // One run first: the driver compiles the pipeline.
        gpu.run(kernel, &[&params], &[output_bytes], workgroups, TIMEOUT)?;
        let mut samples = Vec::with_capacity(repetitions);
        let mut last = None;
        for _ in 0..repetitions {
            let started = Instant::now();
            let run = gpu.run(kernel, &[&params], &[output_bytes], workgroups, TIMEOUT)?;
            samples.push(started.elapsed());
            last = Some(run);
        }
        let run = last.expect("at least one repetition");
        let counts = run.outputs.into_iter().next().unwrap_or_default();
        Ok((median(samples), counts, run.fuel))
    };
    let (strict_time, counts, fuel) = time(&strict)?;
    let (plain_time, _, _) = time(&plain)?;

    // The same counts as a WASI task, one core, the provider's profile.
    let wasm =
        std::fs::read(folder.join("mandelbrot-gpu.wasm")).context("reading the example module")?;
    let sandbox = sandbox(true, true, None)?;
    let (prepared, _) = sandbox
        .prepare(&wasm)
        .map_err(|error| anyhow::anyhow!("{error}"))?;
    let spec = TaskSpec {
        args: [width, height, iterations].map(|n| n.to_string()).to_vec(),
        limits: TaskLimits {
            fuel: u64::MAX / 4,
            output_bytes: output_bytes + 1,
            wall_time: TIMEOUT,
            ..TaskLimits::default()
        },
        ..TaskSpec::default()
    };
    let mut samples = Vec::with_capacity(repetitions);
    let mut stdout = Vec::new();
    for _ in 0..repetitions {
        let report = sandbox.run(&prepared, &spec)?;
        match report.result {
            Ok(completion) => stdout = completion.output.stdout,
            Err(error) => bail!("the WASI task failed: {error}"),
        }
        samples.push(report.duration);
    }
    let wasm_time = median(samples);
    if stdout != counts {
        let differing = stdout
            .chunks(4)
            .zip(counts.chunks(4))
            .filter(|(cpu, gpu)| cpu != gpu)
            .count();
        bail!("{adapter}'s counts differ from the sandbox's on {differing} pixels");
    }
    eprintln!(
        "idlegrid-bench gpu: {width}×{height}, at most {iterations} iterations: \
         the same bytes on {adapter} and in the sandbox; {fuel} GPU fuel"
    );
    Ok(vec![
        Measurement::new(
            "gpu_mandelbrot_ms",
            millis(strict_time),
            "ms",
            millis(wasm_time),
            format!(
                "the same counts as a WASI task in the sandbox, one core (fuel on); GPU: {adapter}"
            ),
        ),
        Measurement::new(
            "gpu_exact_metered_ms",
            millis(strict_time),
            "ms",
            millis(plain_time),
            "the same kernel without NoContraction or the meter",
        ),
    ])
}
