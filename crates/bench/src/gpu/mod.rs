//! `idlegrid-bench gpu`: each GPU example's exact, metered kernel against
//! the same work as a WASI task in the sandbox on one core and against the
//! plain kernel, and the CPU path a validator settles disputes with against
//! the adapter, on whatever Vulkan adapter is present. Every comparison
//! fails unless both sides give the same bytes.

mod cpu_path;
mod mandelbrot;
mod matmul;
mod mlp;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use idlegrid_gpu::{Gpu, Metered, Step};
use idlegrid_sandbox::{Sandbox, TaskLimits, TaskSpec};

use crate::Measurement;
use crate::sandbox::{median, sandbox};

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

/// What every workload runs on and how often.
struct Bench {
    gpu: Gpu,
    adapter: String,
    /// The provider's sandbox profile: fuel on, NaNs canonicalized.
    sandbox: Sandbox,
    repetitions: usize,
    quick: bool,
}

pub fn run(options: &Options) -> anyhow::Result<Vec<Measurement>> {
    let gpu = Gpu::open(options.adapter.as_deref())?;
    let adapter = gpu.info().name.clone();
    eprintln!("idlegrid-bench gpu: adapter {adapter}");
    let bench = Bench {
        gpu,
        adapter,
        sandbox: sandbox(
            idlegrid_sandbox::Metering::InModule,
            idlegrid_sandbox::Nans::Observed,
            None,
        )?,
        repetitions: if options.common.quick {
            1
        } else {
            options.repetitions.max(1)
        },
        quick: options.common.quick,
    };
    let mut rows = mandelbrot::run(&bench)?;
    rows.extend(matmul::run(&bench)?);
    rows.extend(mlp::run(&bench)?);
    rows.extend(cpu_path::run(&bench)?);
    Ok(rows)
}

impl Bench {
    /// The median time of `repetitions` calls of `work`, and what the last
    /// one gave.
    fn median_of<T>(
        &self,
        mut work: impl FnMut() -> anyhow::Result<T>,
    ) -> anyhow::Result<(Duration, T)> {
        let mut samples = Vec::with_capacity(self.repetitions);
        let mut last = None;
        for _ in 0..self.repetitions {
            let started = Instant::now();
            last = Some(work()?);
            samples.push(started.elapsed());
        }
        Ok((median(samples), last.expect("at least one repetition")))
    }

    /// A program's median time on the adapter, each run over a fresh copy
    /// of `buffers`, after one untimed run in which the driver compiles
    /// the pipelines; the buffers and the meter of the last run. Fails if
    /// an invocation stopped early.
    fn on_gpu(
        &self,
        steps: &[Step<'_>],
        buffers: &[Vec<u8>],
    ) -> anyhow::Result<(Duration, Vec<Vec<u8>>, Metered)> {
        self.gpu.execute(steps, &mut buffers.to_vec(), TIMEOUT)?;
        let mut samples = Vec::with_capacity(self.repetitions);
        let mut last = None;
        for _ in 0..self.repetitions {
            let mut run = buffers.to_vec();
            let started = Instant::now();
            let metered = self.gpu.execute(steps, &mut run, TIMEOUT)?;
            samples.push(started.elapsed());
            last = Some((run, metered));
        }
        let (run, metered) = last.expect("at least one repetition");
        if let Some(stopped) = metered.stopped {
            bail!("the kernel stopped early on {}: {stopped:?}", self.adapter);
        }
        Ok((median(samples), run, metered))
    }

    /// The example `name`'s WASI build run in the sandbox on one core with
    /// `args` and `stdin`: its median time (instantiation and `_start`,
    /// not compilation) and its stdout.
    fn on_wasi(
        &self,
        name: &str,
        args: &[String],
        stdin: Vec<u8>,
        output_bytes: u64,
    ) -> anyhow::Result<(Duration, Vec<u8>)> {
        let path = example(name).join(format!("{name}.wasm"));
        let wasm = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
        let (prepared, _) = self
            .sandbox
            .prepare(&wasm)
            .map_err(|error| anyhow::anyhow!("{error}"))?;
        let spec = TaskSpec {
            args: args.to_vec(),
            stdin,
            limits: TaskLimits {
                fuel: u64::MAX / 4,
                output_bytes: output_bytes + 1,
                wall_time: TIMEOUT,
                ..TaskLimits::default()
            },
            ..TaskSpec::default()
        };
        let mut samples = Vec::with_capacity(self.repetitions);
        let mut stdout = Vec::new();
        for _ in 0..self.repetitions {
            let report = self.sandbox.run(&prepared, &spec)?;
            match report.result {
                Ok(completion) => stdout = completion.output.stdout,
                Err(error) => bail!("the WASI build of {name} failed: {error}"),
            }
            samples.push(report.duration);
        }
        Ok((median(samples), stdout))
    }
}

/// The folder of the example `name`.
fn example(name: &str) -> PathBuf {
    crate::sandbox::examples_dir().join(name)
}

/// The kernel source of the example `name`.
fn wgsl(name: &str) -> anyhow::Result<String> {
    let path = example(name).join(format!("{name}.wgsl"));
    std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))
}

/// Fails unless `ours` and `theirs` are the same bytes, saying in how
/// many 4-byte words they differ.
fn same_bytes(what: &str, ours: &[u8], theirs: &[u8]) -> anyhow::Result<()> {
    if ours.len() != theirs.len() {
        bail!(
            "{what}: {} bytes against {} bytes",
            ours.len(),
            theirs.len()
        );
    }
    if ours != theirs {
        let differing = ours
            .chunks(4)
            .zip(theirs.chunks(4))
            .filter(|(ours, theirs)| ours != theirs)
            .count();
        bail!("{what}: {differing} of {} words differ", ours.len() / 4);
    }
    Ok(())
}

/// Little-endian bytes of u32 words, as the kernels' buffers hold them.
fn words(values: &[u32]) -> Vec<u8> {
    values.iter().flat_map(|word| word.to_le_bytes()).collect()
}

/// Deterministic data: xorshift32, the same on every run.
struct Random(u32);

impl Random {
    fn next(&mut self) -> u32 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 17;
        self.0 ^= self.0 << 5;
        self.0
    }

    /// `count` int8 values over the whole range, as bytes.
    fn int8s(&mut self, count: usize) -> Vec<u8> {
        (0..count).map(|_| self.next() as u8).collect()
    }

    /// A value in `-limit ..= limit`.
    fn within(&mut self, limit: u32) -> i32 {
        (self.next() % (2 * limit + 1)) as i32 - limit as i32
    }
}
