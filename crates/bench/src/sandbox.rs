//! `idlegrid-bench sandbox`: what running a task in the sandbox costs.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use idlegrid_sandbox::{
    Metering, Nans, PreparedModule, Sandbox, SandboxConfig, TaskLimits, TaskSpec,
};

use crate::{Measurement, native};

#[derive(Debug, clap::Args)]
pub struct Options {
    #[command(flatten)]
    pub common: crate::Common,
    /// Repetitions per measurement (the median is reported).
    #[arg(long, default_value_t = 5)]
    repetitions: usize,
    /// Only these examples (comma separated).
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
}

/// An example workload and the arguments of one benchmark task.
struct Workload {
    name: &'static str,
    args: &'static [&'static str],
    quick_args: &'static [&'static str],
    /// Bytes of stdin (generated text) for a task; 0 for none.
    input_bytes: usize,
    quick_input_bytes: usize,
}

const WORKLOADS: &[Workload] = &[
    Workload {
        name: "pi",
        args: &["200000000", "1"],
        quick_args: &["100000", "1"],
        input_bytes: 0,
        quick_input_bytes: 0,
    },
    Workload {
        name: "mandelbrot",
        args: &["1024", "768", "0", "0", "1024", "1000"],
        quick_args: &["64", "64", "0", "0", "32", "100"],
        input_bytes: 0,
        quick_input_bytes: 0,
    },
    Workload {
        name: "hashgrind",
        args: &["1000000"],
        quick_args: &["10000"],
        input_bytes: 0,
        quick_input_bytes: 0,
    },
    Workload {
        name: "nbody",
        args: &["5000000"],
        quick_args: &["10000"],
        input_bytes: 0,
        quick_input_bytes: 0,
    },
    Workload {
        name: "wordcount",
        args: &[],
        quick_args: &[],
        input_bytes: 32 << 20,
        quick_input_bytes: 64 << 10,
    },
];

/// The examples of the checkout being run (`cargo run` says which), else
/// of the one this binary was built from.
pub(crate) fn examples_dir() -> PathBuf {
    let manifest_dir = std::env::var_os("CARGO_MANIFEST_DIR")
        .map_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")), PathBuf::from);
    manifest_dir.join("../../examples")
}

/// Deterministic English-like text for wordcount.
fn text(bytes: usize) -> Vec<u8> {
    const WORDS: [&str; 16] = [
        "the", "quick", "brown", "fox", "jumps", "over", "lazy", "dog", "compute", "idle", "grid",
        "task", "proof", "stake", "ledger", "verify",
    ];
    let mut state = 0x9e37_79b9_7f4a_7c15_u64;
    let mut out = Vec::with_capacity(bytes + 16);
    while out.len() < bytes {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        out.extend_from_slice(WORDS[(state % 16) as usize].as_bytes());
        out.push(if state.is_multiple_of(11) {
            b'\n'
        } else {
            b' '
        });
    }
    out
}

pub(crate) fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

pub(crate) fn millis(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1e3
}

fn micros(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1e6
}

pub(crate) fn sandbox(
    metering: Metering,
    nans: Nans,
    cache_dir: Option<PathBuf>,
) -> anyhow::Result<Sandbox> {
    Ok(Sandbox::new(SandboxConfig {
        metering,
        nans,
        cache_dir,
        concurrent_tasks_max: 4,
        ..SandboxConfig::default()
    })?)
}

fn task(args: &[String], stdin: &[u8]) -> TaskSpec {
    TaskSpec {
        args: args.to_vec(),
        stdin: stdin.to_vec(),
        limits: TaskLimits {
            fuel: u64::MAX / 4,
            wall_time: Duration::from_secs(600),
            ..TaskLimits::default()
        },
        ..TaskSpec::default()
    }
}

/// One timed run of the task (instantiation and `_start`; compilation
/// excluded).
fn time_wasm(
    sandbox: &Sandbox,
    prepared: &PreparedModule,
    spec: &TaskSpec,
) -> anyhow::Result<Duration> {
    let report = sandbox.run(prepared, spec)?;
    if let Err(error) = report.result {
        bail!("the task failed: {error}");
    }
    Ok(report.duration)
}

pub fn run(options: &Options) -> anyhow::Result<Vec<Measurement>> {
    let repetitions = if options.common.quick {
        1
    } else {
        options.repetitions.max(1)
    };
    // The provider's profile (fuel and the wall clock metered in the
    // module, NaNs canonical where observed), the same with no metering at
    // all, with wasmtime's own fuel and epochs (the profile before), with
    // NaNs canonical after every float operation, and with no canonical
    // NaNs at all.
    let variants = [
        (
            "fuel_on",
            sandbox(Metering::InModule, Nans::Observed, None)?,
        ),
        ("fuel_off", sandbox(Metering::Off, Nans::Observed, None)?),
        (
            "wasmtime_metering",
            sandbox(Metering::Wasmtime, Nans::Observed, None)?,
        ),
        (
            "nan_every_operation",
            sandbox(Metering::InModule, Nans::EveryOperation, None)?,
        ),
        (
            "nan_canonicalization_off",
            sandbox(Metering::InModule, Nans::Off, None)?,
        ),
    ];
    let mut rows = Vec::new();
    let mut ratios: Vec<Vec<f64>> = vec![Vec::new(); variants.len()];

    for workload in WORKLOADS {
        if !options.only.is_empty() && !options.only.iter().any(|name| name == workload.name) {
            continue;
        }
        let path = examples_dir().join(format!("{0}/{0}.wasm", workload.name));
        let bytes = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
        let (args, input_bytes) = if options.common.quick {
            (workload.quick_args, workload.quick_input_bytes)
        } else {
            (workload.args, workload.input_bytes)
        };
        let args: Vec<String> = args.iter().map(|arg| (*arg).to_owned()).collect();
        let stdin = text(input_bytes);
        let spec = task(&args, &stdin);

        let prepared = variants
            .iter()
            .map(|(_, sandbox)| {
                sandbox
                    .prepare(&bytes)
                    .map(|(prepared, _)| prepared)
                    .map_err(|error| anyhow::anyhow!("{error}"))
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        // Rounds of one native run and one run of each variant, so that a
        // machine whose speed drifts (a shared one) moves the baseline and
        // every variant alike; each figure is the median over the rounds.
        let mut native_samples = Vec::with_capacity(repetitions);
        let mut variant_samples = vec![Vec::with_capacity(repetitions); variants.len()];
        for _ in 0..repetitions {
            native_samples.push(native::run(workload.name, &args, &stdin)?);
            for (((_, sandbox), prepared), samples) in
                variants.iter().zip(&prepared).zip(&mut variant_samples)
            {
                samples.push(time_wasm(sandbox, prepared, &spec)?);
            }
        }
        let native_time = millis(median(native_samples));
        let baseline_name = format!("native {}", native::COMPILER);
        for (((variant, _), samples), variant_ratios) in
            variants.iter().zip(variant_samples).zip(&mut ratios)
        {
            let time = millis(median(samples));
            let row = Measurement::new(
                format!("sandbox.{}.{variant}", workload.name),
                time,
                "ms",
                native_time,
                &baseline_name,
            );
            variant_ratios.push(row.ratio);
            rows.push(row);
        }
    }

    for ((variant, _), mut variant_ratios) in variants.iter().zip(ratios) {
        if variant_ratios.is_empty() {
            continue;
        }
        variant_ratios.sort_by(f64::total_cmp);
        rows.push(Measurement::new(
            format!("sandbox.median_wasm_over_native.{variant}"),
            variant_ratios[variant_ratios.len() / 2],
            "x",
            1.0,
            "native = 1",
        ));
    }

    rows.extend(instantiation(&variants[0].1, repetitions)?);
    rows.extend(compile_and_cache(repetitions)?);
    Ok(rows)
}

/// A module that does nothing (`(module (memory (export "memory") 1)
/// (func (export "_start")))`), in binary form: the fixed cost of a task.
const EMPTY_TASK_WASM: &[u8] = &[
    0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00, // magic, version
    0x01, 0x04, 0x01, 0x60, 0x00, 0x00, // type section: () -> ()
    0x03, 0x02, 0x01, 0x00, // function section: one function of type 0
    0x05, 0x03, 0x01, 0x00, 0x01, // memory section: one memory, minimum 1 page
    0x07, 0x13, 0x02, // export section, two exports
    0x06, b'm', b'e', b'm', b'o', b'r', b'y', 0x02, 0x00, // "memory": memory 0
    0x06, b'_', b's', b't', b'a', b'r', b't', 0x00, 0x00, // "_start": function 0
    0x0a, 0x04, 0x01, 0x02, 0x00, 0x0b, // code: one body, no locals, end
];

fn process_spawn(samples: usize) -> anyhow::Result<Duration> {
    let mut times = Vec::with_capacity(samples);
    for _ in 0..samples {
        let started = Instant::now();
        let status = Command::new("true").status().context("spawning `true`")?;
        times.push(started.elapsed());
        if !status.success() {
            bail!("`true` failed");
        }
    }
    Ok(median(times))
}

fn instantiation(sandbox: &Sandbox, repetitions: usize) -> anyhow::Result<Vec<Measurement>> {
    let samples = 200 * repetitions;
    let spawn = micros(process_spawn(20 * repetitions)?);
    let mut rows = Vec::new();
    for name in ["pi", "wordcount"] {
        let bytes = std::fs::read(examples_dir().join(format!("{name}/{name}.wasm")))?;
        let (prepared, _) = sandbox
            .prepare(&bytes)
            .map_err(|error| anyhow::anyhow!("{error}"))?;
        let times = (0..samples)
            .map(|_| sandbox.instantiate_only(&prepared))
            .collect::<Result<Vec<_>, _>>()?;
        rows.push(Measurement::new(
            format!("sandbox.instantiate.{name}"),
            micros(median(times)),
            "us",
            spawn,
            "spawn+wait `true`",
        ));
    }
    let (prepared, _) = sandbox
        .prepare(EMPTY_TASK_WASM)
        .map_err(|error| anyhow::anyhow!("{error}"))?;
    let spec = task(&[], &[]);
    let times = (0..samples)
        .map(|_| sandbox.run(&prepared, &spec).map(|report| report.duration))
        .collect::<Result<Vec<_>, _>>()?;
    rows.push(Measurement::new(
        "sandbox.empty_task",
        micros(median(times)),
        "us",
        spawn,
        "spawn+wait `true`",
    ));
    Ok(rows)
}

fn compile_and_cache(repetitions: usize) -> anyhow::Result<Vec<Measurement>> {
    let mut rows = Vec::new();
    for name in ["pi", "nbody"] {
        let bytes = std::fs::read(examples_dir().join(format!("{name}/{name}.wasm")))?;
        let mut cold = Vec::new();
        let mut warm = Vec::new();
        let mut rewrites = Vec::new();
        for _ in 0..repetitions {
            let started = Instant::now();
            idlegrid_sandbox::nan::provider_rewrite(&bytes).map_err(anyhow::Error::msg)?;
            rewrites.push(started.elapsed());
            let uncached = sandbox(Metering::InModule, Nans::Observed, None)?;
            let started = Instant::now();
            uncached
                .prepare(&bytes)
                .map_err(|error| anyhow::anyhow!("{error}"))?;
            cold.push(started.elapsed());
            let cache = tempfile::tempdir()?;
            sandbox(
                Metering::InModule,
                Nans::Observed,
                Some(cache.path().to_path_buf()),
            )?
            .prepare(&bytes)
            .map_err(|error| anyhow::anyhow!("{error}"))?;
            let second = sandbox(
                Metering::InModule,
                Nans::Observed,
                Some(cache.path().to_path_buf()),
            )?;
            let started = Instant::now();
            let (_, origin) = second
                .prepare(&bytes)
                .map_err(|error| anyhow::anyhow!("{error}"))?;
            warm.push(started.elapsed());
            if origin != idlegrid_sandbox::ModuleOrigin::DiskCache {
                bail!("expected a disk cache hit, got {origin:?}");
            }
        }
        let cold = millis(median(cold));
        rows.push(Measurement::new(
            format!("sandbox.cache_load.{name}"),
            millis(median(warm)),
            "ms",
            cold,
            "cold compile",
        ));
        rows.push(Measurement::new(
            format!("sandbox.rewrite.{name}"),
            millis(median(rewrites)),
            "ms",
            cold,
            "cold compile (the rewrite included)",
        ));
    }
    Ok(rows)
}
