//! `idlegrid exec`: run one task locally, exactly as a provider would.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Args;
use idlegrid_gpu::{Cpu, Gpu, GpuError, Program, TaskRun};
use idlegrid_requestor::jobspec::{Downloads, JobFile};
use idlegrid_sandbox::limits::{FUEL_DEFAULT, MEMORY_BYTES_DEFAULT, OUTPUT_BYTES_DEFAULT};
use idlegrid_sandbox::{
    ErrorKind, Sandbox, SandboxConfig, TaskLimits, TaskReport, TaskSpec, seed_from_u64,
    stage_input_dir,
};
use idlegrid_types::{ExecutionLimits, GpuProgram, TaskInput, TaskOutcome};
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

/// Run a WASI module in the deterministic sandbox, or one task of a job
/// file (WebAssembly or GPU), exactly as a provider will.
///
/// Prints the task's stdout (a GPU task's output buffers); a summary (exit
/// code, fuel, output content id) goes to stderr. The same module,
/// arguments, input and seed give the same output and fuel on every
/// machine. A GPU task runs on the first Vulkan adapter (`--gpu` names
/// another), or with `--cpu` on the CPU path validators settle disputes
/// with: the same bytes and fuel either way.
///
/// Exit status: 0 the task exited 0; 1 it exited with another code; 2 usage
/// error; 3 the task failed (a limit or a trap); 4 the module is invalid;
/// 5 the task could not be run (missing file, unusable directory).
#[derive(Debug, Args)]
#[command(after_help = "Examples:
  idlegrid exec examples/pi/pi.wasm -- 1000000
  idlegrid exec examples/wordcount/wordcount.wasm --input README.md --json
  idlegrid exec examples/mandelbrot/mandelbrot.wasm -- 512 512 0 0 128 > tile.ppm
  idlegrid exec examples/mandelbrot-gpu/job.toml --index 3 > band-3.bin
  idlegrid exec examples/mandelbrot-gpu/job.toml --index 3 --cpu --json")]
pub struct ExecArgs {
    /// The WASI (preview 1) module to run, or a job file (`.toml`) whose
    /// task `--index` runs with the job's inputs and limits.
    module: PathBuf,
    /// With a job file: the task to run.
    #[arg(long, value_name = "N", default_value_t = 0)]
    index: u64,
    /// With a job file of GPU tasks: run on the CPU path (as a validator
    /// settling a dispute does) instead of a GPU.
    #[arg(long, conflicts_with = "gpu")]
    cpu: bool,
    /// With a job file of GPU tasks: the adapter whose name contains NAME
    /// [default: the first Vulkan adapter].
    #[arg(long, value_name = "NAME")]
    gpu: Option<String>,
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

/// What one run needs: the module, the task's arguments and stdin, and
/// its limits.
struct Task {
    module: Vec<u8>,
    args: Vec<String>,
    stdin: Vec<u8>,
    limits: ExecutionLimits,
    wall_time: Duration,
    /// A job task's input files (name, where it is here), and what holds
    /// the downloaded ones until the task has run.
    files: Vec<(String, PathBuf)>,
    _downloads: Downloads,
}

/// The task the command line names: a module with `--input` and the
/// arguments after `--`, or task `--index` of a job file.
fn task(args: &ExecArgs) -> anyhow::Result<Task> {
    if args
        .module
        .extension()
        .is_some_and(|extension| extension == "toml")
    {
        let job = JobFile::load(&args.module)?;
        let input = job.try_task(args.index)?;
        let files = input
            .files
            .iter()
            .map(|file| {
                job.input_file(&file.cid)
                    .map(|held| (file.name.to_string(), held.path.clone()))
                    .with_context(|| format!("the job has no input file {}", file.cid))
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        if !files.is_empty() && args.input_dir.is_some() {
            bail!(
                "task {} reads the job's input files; --input-dir is not for it",
                args.index
            );
        }
        return Ok(Task {
            args: input.arg_strings(),
            stdin: input.stdin.to_vec(),
            module: job.module,
            limits: job.limits,
            wall_time: Duration::from_secs(job.wall_time_secs),
            files,
            _downloads: job.downloads,
        });
    }
    let module = std::fs::read(&args.module)
        .with_context(|| format!("failed to read module {}", args.module.display()))?;
    let stdin = match &args.input {
        Some(path) => std::fs::read(path)
            .with_context(|| format!("failed to read input file {}", path.display()))?,
        None => Vec::new(),
    };
    Ok(Task {
        module,
        args: args.args.clone(),
        stdin,
        limits: ExecutionLimits {
            fuel: args.fuel,
            memory_bytes: args.memory_mib.saturating_mul(1 << 20),
            output_bytes: args.output_bytes,
        },
        wall_time: Duration::from_secs(args.wall_time_secs),
        files: Vec::new(),
        _downloads: Downloads::default(),
    })
}

fn execute(args: &ExecArgs) -> anyhow::Result<u8> {
    let Task {
        module,
        args: task_args,
        stdin,
        limits,
        wall_time,
        files,
        _downloads,
    } = task(args)?;
    if GpuProgram::is_program(&module) {
        let input = TaskInput::new(task_args, stdin)?;
        return execute_gpu(args, &module, &input, &limits, wall_time);
    }
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
    // A job task's files are shown at /input as a provider shows them.
    let staged = if files.is_empty() {
        None
    } else {
        Some(
            stage_input_dir(&std::env::temp_dir().join("idlegrid-exec"), &files)
                .context("failed to stage the task's input files")?,
        )
    };
    let task = TaskSpec {
        args: task_args,
        stdin,
        input_dir: staged
            .as_ref()
            .map(|dir| dir.path().to_path_buf())
            .or_else(|| args.input_dir.clone()),
        output_dir: args.output_dir.clone(),
        seed: match (args.job, args.task) {
            (Some(job), Some(task)) => idlegrid_types::task_seed(&job, task),
            _ => seed_from_u64(args.seed),
        },
        limits: TaskLimits {
            fuel: limits.fuel,
            memory_bytes: limits.memory_bytes,
            output_bytes: limits.output_bytes,
            wall_time,
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

/// Runs a GPU task on the adapter or, with `--cpu`, on the CPU path, and
/// reports it as a WASI task is reported.
fn execute_gpu(
    args: &ExecArgs,
    module: &[u8],
    input: &TaskInput,
    limits: &ExecutionLimits,
    wall_time: Duration,
) -> anyhow::Result<u8> {
    let module_cid = idlegrid_types::ContentId::of(module);
    let program = match Program::prepare(module) {
        Ok(program) => program,
        Err(error) => {
            let message = error.to_string();
            report_gpu(
                args,
                &module_cid,
                None,
                Err(("invalid_module", &message)),
                0.0,
            )?;
            return Ok(EXIT_INVALID_MODULE);
        }
    };
    let (run, executor) = if args.cpu {
        let started = Instant::now();
        (
            program.run(&Cpu, input, limits, wall_time),
            ("the CPU path".to_owned(), started),
        )
    } else {
        let gpu = Gpu::open(args.gpu.as_deref())?;
        let name = gpu.info().name.clone();
        let started = Instant::now();
        (program.run(&gpu, input, limits, wall_time), (name, started))
    };
    let (executor, started) = executor;
    let millis = started.elapsed().as_secs_f64() * 1e3;
    let run = match run {
        Ok(run) => run,
        Err(GpuError::WallTimeout(_)) => TaskRun {
            outcome: TaskOutcome::Failed(ErrorKind::WallTimeout),
            fuel_used: 0,
            output: Vec::new(),
        },
        Err(error) => return Err(error.into()),
    };
    let result = match run.outcome {
        TaskOutcome::Completed { output, .. } => Ok((output, run.output.as_slice())),
        TaskOutcome::Failed(kind) => Err((kind.as_str(), "the task failed")),
    };
    let status = match &result {
        Ok(_) => EXIT_OK,
        Err(_) => EXIT_TASK_FAILED,
    };
    report_gpu(
        args,
        &module_cid,
        Some((&executor, run.fuel_used)),
        result,
        millis,
    )?;
    Ok(status)
}

/// Prints a GPU task's output and summary (or its JSON report).
fn report_gpu(
    args: &ExecArgs,
    module_cid: &idlegrid_types::ContentId,
    ran: Option<(&str, u64)>,
    result: Result<(idlegrid_types::ContentId, &[u8]), (&str, &str)>,
    millis: f64,
) -> anyhow::Result<()> {
    let (executor, fuel) = ran.unwrap_or(("nothing", 0));
    if args.json {
        let report = match &result {
            Ok((cid, output)) => serde_json::json!({
                "status": "ok", "exit_code": 0, "module_cid": module_cid.to_string(),
                "output_cid": cid.to_string(), "fuel_used": fuel, "output_bytes": output.len(),
                "duration_ms": millis, "executor": executor,
            }),
            Err((kind, message)) => serde_json::json!({
                "status": "error", "module_cid": module_cid.to_string(), "fuel_used": fuel,
                "duration_ms": millis, "executor": executor,
                "error": { "kind": kind, "message": message },
            }),
        };
        println!("{report}");
        return Ok(());
    }
    match result {
        Ok((cid, output)) => {
            let mut stdout = std::io::stdout().lock();
            stdout.write_all(output)?;
            stdout.flush()?;
            eprintln!(
                "idlegrid: completed on {executor} · fuel {fuel} · output {cid} ({} bytes) · \
                 module {} · {millis:.1} ms",
                output.len(),
                module_cid.short()
            );
        }
        Err((kind, message)) => eprintln!(
            "idlegrid: {message}: {kind}\nidlegrid: on {executor} · fuel {fuel} · module {} · \
             {millis:.1} ms",
            module_cid.short()
        ),
    }
    Ok(())
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
