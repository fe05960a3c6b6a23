//! `idlegrid exec`: run one task locally, exactly as a provider would.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::Args;
use idlegrid_sandbox::limits::{FUEL_DEFAULT, MEMORY_BYTES_DEFAULT, OUTPUT_BYTES_DEFAULT};
use idlegrid_sandbox::{
    ErrorKind, Sandbox, SandboxConfig, TaskLimits, TaskReport, TaskSpec, seed_from_u64,
};
use serde::Serialize;

/// Exit status when the task ran and returned exit code 0.
const EXIT_OK: u8 = 0;
/// The task ran to its end but returned a non-zero exit code.
const EXIT_TASK_NONZERO: u8 = 1;
/// (clap's) the command line was wrong.
const _EXIT_USAGE: u8 = 2;
/// The task failed: a limit or a trap.
const EXIT_TASK_FAILED: u8 = 3;
/// The sandbox refused the module.
const EXIT_INVALID_MODULE: u8 = 4;
/// idlegrid could not run the task (a file is missing, a directory is unusable).
const EXIT_HOST_ERROR: u8 = 5;

/// Run a WASI module in the deterministic sandbox, exactly as a provider will.
///
/// Prints the task's stdout; a summary (exit code, fuel, output content id)
/// goes to stderr. The same module, arguments, input and seed give the same
/// output and fuel on every machine.
///
/// Exit status: 0 the task exited 0; 1 it exited with another code; 2 usage
/// error; 3 the task failed (a limit or a trap); 4 the module is invalid;
/// 5 the task could not be run (missing file, unusable directory).
#[derive(Debug, Args)]
#[command(after_help = "Examples:
  idlegrid exec examples/pi/pi.wasm -- 1000000
  idlegrid exec examples/wordcount/wordcount.wasm --input README.md --json
  idlegrid exec examples/mandelbrot/mandelbrot.wasm -- 512 512 0 0 128 > tile.ppm")]
pub struct ExecArgs {
    /// The WASI (preview 1) module to run.
    module: PathBuf,
    /// File whose bytes become the task's stdin.
    #[arg(long, value_name = "FILE")]
    input: Option<PathBuf>,
    /// Directory shown read-only to the task at /input.
    #[arg(long, value_name = "DIR")]
    input_dir: Option<PathBuf>,
    /// Empty (or new) directory shown writable to the task at /output; its
    /// files are part of the output.
    #[arg(long, value_name = "DIR")]
    output_dir: Option<PathBuf>,
    /// Fuel limit (roughly wasm instructions).
    #[arg(long, value_name = "N", default_value_t = FUEL_DEFAULT)]
    fuel: u64,
    /// Memory limit in MiB.
    #[arg(long, value_name = "N", default_value_t = MEMORY_BYTES_DEFAULT >> 20)]
    memory_mib: u64,
    /// Output limit (stdout plus output files) in bytes.
    #[arg(long, value_name = "N", default_value_t = OUTPUT_BYTES_DEFAULT)]
    output_bytes: u64,
    /// Wall-clock backstop in seconds.
    #[arg(long, value_name = "SECS", default_value_t = 120)]
    wall_time_secs: u64,
    /// Seed of the task's random stream (`random_get`).
    #[arg(long, value_name = "N", default_value_t = 0, conflicts_with = "job")]
    seed: u64,
    /// Seed the task as task `--task` of this job is seeded on the network
    /// (`job:` and 64 hex digits), to check a provider's result locally.
    #[arg(long, value_name = "JOB", requires = "task")]
    job: Option<idlegrid_types::JobId>,
    /// The task's index in `--job`.
    #[arg(long, value_name = "N", requires = "job")]
    task: Option<u64>,
    /// Print one JSON object instead of the task's stdout.
    #[arg(long)]
    json: bool,
    /// Directory for compiled modules [default: $XDG_CACHE_HOME/idlegrid/modules].
    #[arg(long, value_name = "DIR")]
    cache_dir: Option<PathBuf>,
    /// Do not read or write the compiled-module cache.
    #[arg(long, conflicts_with = "cache_dir")]
    no_cache: bool,
    /// Arguments for the task (after `--`).
    #[arg(last = true, value_name = "ARGS")]
    args: Vec<String>,
}

#[derive(Debug, Serialize)]
struct JsonReport<'a> {
    status: &'static str,
    exit_code: Option<i32>,
    module_cid: String,
    output_cid: Option<String>,
    fuel_used: u64,
    output_bytes: Option<u64>,
    duration_ms: f64,
    error: Option<JsonError<'a>>,
    stderr: String,
}

#[derive(Debug, Serialize)]
struct JsonError<'a> {
    kind: &'static str,
    message: &'a str,
}

pub fn run(args: ExecArgs) -> ExitCode {
    match execute(&args) {
        Ok(code) => ExitCode::from(code),
        Err(error) => {
            if args.json {
                let report = serde_json::json!({
                    "status": "error",
                    "error": { "kind": "host", "message": format!("{error:#}") },
                });
                println!("{report}");
            } else {
                eprintln!("error: {error:#}");
            }
            ExitCode::from(EXIT_HOST_ERROR)
        }
    }
}

fn execute(args: &ExecArgs) -> anyhow::Result<u8> {
    let module = std::fs::read(&args.module)
        .with_context(|| format!("failed to read module {}", args.module.display()))?;
    let stdin = match &args.input {
        Some(path) => std::fs::read(path)
            .with_context(|| format!("failed to read input file {}", path.display()))?,
        None => Vec::new(),
    };
    if let Some(dir) = &args.input_dir
        && !dir.is_dir()
    {
        bail!("input directory {} does not exist", dir.display());
    }
    if let Some(dir) = &args.output_dir {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("failed to create output directory {}", dir.display()))?;
    }

    let sandbox = Sandbox::new(SandboxConfig {
        cache_dir: cache_dir(args),
        concurrent_tasks_max: 1,
        ..SandboxConfig::default()
    })?;
    let task = TaskSpec {
        args: args.args.clone(),
        stdin,
        input_dir: args.input_dir.clone(),
        output_dir: args.output_dir.clone(),
        seed: match (args.job, args.task) {
            (Some(job), Some(task)) => idlegrid_types::task_seed(&job, task),
            _ => seed_from_u64(args.seed),
        },
        limits: TaskLimits {
            fuel: args.fuel,
            memory_bytes: args.memory_mib.saturating_mul(1 << 20),
            output_bytes: args.output_bytes,
            wall_time: std::time::Duration::from_secs(args.wall_time_secs),
            ..TaskLimits::default()
        },
    };
    let report = sandbox.run_module(&module, &task)?;
    let module_cid = idlegrid_types::ContentId::of(&module);
    if args.json {
        print_json(&report, &module_cid)?;
    } else {
        print_human(&report, &module_cid)?;
    }
    Ok(exit_status(&report))
}

fn cache_dir(args: &ExecArgs) -> Option<PathBuf> {
    if args.no_cache {
        return None;
    }
    if let Some(dir) = &args.cache_dir {
        return Some(dir.clone());
    }
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| Path::new(&home).join(".cache")))?;
    Some(base.join("idlegrid").join("modules"))
}

fn exit_status(report: &TaskReport) -> u8 {
    match &report.result {
        Ok(completion) if completion.exit_code == 0 => EXIT_OK,
        Ok(_) => EXIT_TASK_NONZERO,
        Err(error) if error.kind == ErrorKind::InvalidModule => EXIT_INVALID_MODULE,
        Err(_) => EXIT_TASK_FAILED,
    }
}

fn print_human(report: &TaskReport, module_cid: &idlegrid_types::ContentId) -> anyhow::Result<()> {
    let mut stdout = std::io::stdout().lock();
    let mut stderr = std::io::stderr().lock();
    if let Ok(completion) = &report.result {
        stdout.write_all(&completion.output.stdout)?;
        stdout.flush()?;
    }
    stderr.write_all(&report.stderr)?;
    if report.stderr_truncated {
        writeln!(stderr, "[stderr truncated]")?;
    }
    let millis = report.duration.as_secs_f64() * 1e3;
    match &report.result {
        Ok(completion) => writeln!(
            stderr,
            "idlegrid: exit {} · fuel {} · output {} ({} bytes) · module {} · {millis:.1} ms",
            completion.exit_code,
            report.fuel_used,
            completion.output_cid,
            completion.output.total_bytes(),
            module_cid.short(),
        )?,
        Err(error) => writeln!(
            stderr,
            "idlegrid: the task failed: {error}\nidlegrid: fuel {} · module {} · {millis:.1} ms",
            report.fuel_used,
            module_cid.short(),
        )?,
    }
    Ok(())
}

fn print_json(report: &TaskReport, module_cid: &idlegrid_types::ContentId) -> anyhow::Result<()> {
    let (status, exit_code, output_cid, output_bytes, error) = match &report.result {
        Ok(completion) => (
            "ok",
            Some(completion.exit_code),
            Some(completion.output_cid.to_string()),
            Some(completion.output.total_bytes()),
            None,
        ),
        Err(error) => (
            "error",
            None,
            None,
            None,
            Some(JsonError {
                kind: error.kind.as_str(),
                message: &error.message,
            }),
        ),
    };
    let json = JsonReport {
        status,
        exit_code,
        module_cid: module_cid.to_string(),
        output_cid,
        fuel_used: report.fuel_used,
        output_bytes,
        duration_ms: report.duration.as_secs_f64() * 1e3,
        error,
        stderr: String::from_utf8_lossy(&report.stderr).into_owned(),
    };
    println!("{}", serde_json::to_string(&json)?);
    Ok(())
}
