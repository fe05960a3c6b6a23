//! The requestor as its own referee: a task whose results disagree runs
//! again in this machine's sandbox (a GPU task on the CPU path), one at a time on a thread of its own,
//! and what it gives decides which providers lied.

use std::sync::Arc;
use std::sync::mpsc as std_mpsc;

use anyhow::Context;
use idlegrid_gpu::CpuReExecutor;
use idlegrid_sandbox::limits::WALL_TIME_DEFAULT;
use idlegrid_sandbox::{LazySandbox, SandboxConfig, stage_input_dir};
use idlegrid_types::blob_tree::Verifier;
use idlegrid_types::{GpuProgram, JobId, TaskInput, task_seed};
use tokio::sync::mpsc;
use tracing::info;

use crate::core::{Input, ReExecution};
use crate::jobspec::JobFile;

/// Runs a job's tasks again in this machine's sandbox (a GPU task on the
/// CPU path), giving what each gave: the outcome, fuel and output. The
/// sandbox starts on the first task (most jobs never need it).
pub(crate) struct ReExecutor {
    job: JobId,
    job_file: Arc<JobFile>,
    sandbox: LazySandbox,
    cpu: CpuReExecutor,
}

impl ReExecutor {
    pub(crate) fn new(job: JobId, job_file: Arc<JobFile>) -> Self {
        Self {
            job,
            job_file,
            sandbox: LazySandbox::new(SandboxConfig {
                concurrent_tasks_max: 1,
                ..SandboxConfig::default()
            }),
            // GPU tasks run again on the CPU path, as a validator would.
            cpu: CpuReExecutor {
                wall_time: WALL_TIME_DEFAULT,
            },
        }
    }

    /// Runs `task` again.
    pub(crate) fn run(&self, task: u64) -> Result<ReExecution, String> {
        let job_file = &self.job_file;
        match job_file.task(task) {
            Some(input) if GpuProgram::is_program(&job_file.module) => self
                .cpu
                .re_execute_with_output(&job_file.module, &input, &job_file.limits)
                .map(|(execution, output)| ReExecution {
                    outcome: execution.outcome,
                    fuel_used: execution.fuel_used,
                    stdout: output,
                }),
            Some(input) => stage(job_file, &input).and_then(|dir| {
                self.sandbox
                    .re_execute_with_output(
                        &job_file.module,
                        &input,
                        dir.as_ref().map(tempfile::TempDir::path),
                        task_seed(&self.job, task),
                        &job_file.limits,
                    )
                    .map(|(execution, stdout)| ReExecution {
                        outcome: execution.outcome,
                        fuel_used: execution.fuel_used,
                        stdout,
                    })
            }),
            None => Err(job_file.task_failure().map_or_else(
                || format!("the job has no task {task}"),
                ToString::to_string,
            )),
        }
    }
}

/// Re-executes tasks of one job on its own thread, one at a time.
pub(crate) struct Referee {
    orders: std_mpsc::Sender<u64>,
}

impl Referee {
    pub(crate) fn start<T: From<Input> + Send + 'static>(
        job: JobId,
        job_file: Arc<JobFile>,
        done: mpsc::UnboundedSender<T>,
    ) -> anyhow::Result<Self> {
        let (orders, queue) = std_mpsc::channel::<u64>();
        std::thread::Builder::new()
            .name("requestor-referee".to_owned())
            .spawn(move || {
                let executor = ReExecutor::new(job, job_file);
                while let Ok(task) = queue.recv() {
                    let result = executor.run(task);
                    info!(
                        task,
                        ok = result.is_ok(),
                        "task re-executed to settle a disagreement"
                    );
                    if done
                        .send(Input::ReExecuted { task, result }.into())
                        .is_err()
                    {
                        return;
                    }
                }
            })
            .context("failed to start the referee thread")?;
        Ok(Self { orders })
    }

    pub(crate) fn order(&self, task: u64) {
        // The thread lives as long as the requestor.
        let _ = self.orders.send(task);
    }
}

/// The folder a task's input files are shown from when it runs here: the
/// job's files, each checked again against its id (the file may have
/// changed since the job was submitted; a re-execution over other bytes
/// would judge honest providers wrong). `None` for a task without files.
fn stage(job_file: &JobFile, input: &TaskInput) -> Result<Option<tempfile::TempDir>, String> {
    if input.files.is_empty() {
        return Ok(None);
    }
    let files = input
        .files
        .iter()
        .map(|file| {
            job_file
                .input_file(&file.cid)
                .map(|held| (file.name.to_string(), held.path.clone()))
                .ok_or_else(|| format!("the job has no input file {}", file.cid))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let dir = stage_input_dir(&std::env::temp_dir().join("idlegrid-referee"), &files)
        .map_err(|error| format!("failed to stage the task's input files: {error}"))?;
    for file in input.files.iter() {
        let path = dir.path().join(&*file.name);
        let read = std::fs::File::open(&path)
            .and_then(|opened| Verifier::read(std::io::BufReader::new(opened), |_| Ok(())));
        match read {
            Ok(tree) if tree.cid() == file.cid => {}
            Ok(_) => {
                return Err(format!(
                    "input file `{}` changed since the job was submitted",
                    &*file.name
                ));
            }
            Err(error) => return Err(format!("failed to read `{}`: {error}", &*file.name)),
        }
    }
    Ok(Some(dir))
}
