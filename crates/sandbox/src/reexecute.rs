//! The sandbox as the ledger's re-executor: a disputed task runs again here
//! under the job's limits.

use std::path::{Path, PathBuf};
use std::time::Duration;

use idlegrid_types::{
    ContentId, ErrorKind, Execution, ExecutionLimits, ReExecute, TaskInput, TaskOutcome,
};

use crate::limits::{STDERR_BYTES_DEFAULT, WALL_TIME_DEFAULT};
use crate::{Sandbox, TaskLimits, TaskReport, TaskSpec};

/// The outcome replicas compare, from a report.
pub fn outcome_of(report: &TaskReport) -> TaskOutcome {
    match &report.result {
        Ok(completion) => TaskOutcome::Completed {
            exit_code: completion.exit_code,
            output: completion.output_cid,
        },
        Err(error) => TaskOutcome::Failed(error.kind),
    }
}

/// Limits for running a job's task: the job's, plus host-side defaults.
pub fn task_limits(limits: &ExecutionLimits, wall_time: Duration) -> TaskLimits {
    TaskLimits {
        fuel: limits.fuel,
        memory_bytes: limits.memory_bytes,
        output_bytes: limits.output_bytes,
        stderr_bytes: STDERR_BYTES_DEFAULT,
        wall_time,
    }
}

impl Sandbox {
    /// Runs a task again, exactly as a provider must have, and gives what
    /// it found with the task's stdout (a requestor settling a
    /// disagreement itself keeps the output). A task that reads input
    /// files runs only with `input_dir`, a folder that holds them (see
    /// [`stage_input_dir`]). An `Err` means the host could not run it, or
    /// it ran past the wall clock: not a verdict.
    pub fn re_execute_with_output(
        &self,
        module: &[u8],
        input: &TaskInput,
        input_dir: Option<&Path>,
        seed: [u8; 32],
        limits: &ExecutionLimits,
    ) -> Result<(Execution, Vec<u8>), String> {
        if !input.files.is_empty() && input_dir.is_none() {
            return Err(format!(
                "the task reads {} input files ({} bytes), which are not here",
                input.files.len(),
                input.file_bytes()
            ));
        }
        let task = TaskSpec {
            args: input.arg_strings(),
            stdin: input.stdin.to_vec(),
            input_dir: input_dir.map(Path::to_path_buf),
            output_dir: None,
            seed,
            limits: task_limits(limits, WALL_TIME_DEFAULT),
        };
        let report = self
            .run_module(module, &task)
            .map_err(|error| error.to_string())?;
        let outcome = outcome_of(&report);
        if outcome == TaskOutcome::Failed(ErrorKind::WallTimeout) {
            return Err("the re-execution ran past its wall-clock limit".to_owned());
        }
        let stdout = match report.result {
            Ok(completion) => completion.output.stdout,
            Err(_) => Vec::new(),
        };
        let execution = Execution {
            outcome,
            fuel_used: report.fuel_used,
        };
        Ok((execution, stdout))
    }
}

impl ReExecute for Sandbox {
    fn re_execute(
        &self,
        module: &[u8],
        input: &TaskInput,
        seed: [u8; 32],
        limits: &ExecutionLimits,
    ) -> Result<Execution, String> {
        // A dispute carries no input files: a task that reads some is
        // refused here, never judged without them.
        self.re_execute_with_output(module, input, None, seed, limits)
            .map(|(execution, _)| execution)
    }

    fn run_challenge(&self, seed: [u8; 32], passes: u32) -> Result<ContentId, String> {
        Sandbox::run_challenge(self, seed, passes, WALL_TIME_DEFAULT).map(|answer| answer.output)
    }
}

/// A sandbox made on first use. A validator re-executes only when a
/// dispute arrives, so it reserves the sandbox's memory pool only then.
#[derive(Debug)]
pub struct LazySandbox {
    config: crate::SandboxConfig,
    sandbox: std::sync::OnceLock<Result<Sandbox, String>>,
}

impl LazySandbox {
    pub fn new(config: crate::SandboxConfig) -> Self {
        Self {
            config,
            sandbox: std::sync::OnceLock::new(),
        }
    }
}

impl LazySandbox {
    /// [`Sandbox::re_execute_with_output`] on the sandbox, made now if it
    /// was not yet.
    pub fn re_execute_with_output(
        &self,
        module: &[u8],
        input: &TaskInput,
        input_dir: Option<&Path>,
        seed: [u8; 32],
        limits: &ExecutionLimits,
    ) -> Result<(Execution, Vec<u8>), String> {
        let sandbox = self
            .sandbox
            .get_or_init(|| Sandbox::new(self.config.clone()).map_err(|error| error.to_string()));
        match sandbox {
            Ok(sandbox) => sandbox.re_execute_with_output(module, input, input_dir, seed, limits),
            Err(error) => Err(format!("the sandbox could not start: {error}")),
        }
    }
}

impl ReExecute for LazySandbox {
    fn re_execute(
        &self,
        module: &[u8],
        input: &TaskInput,
        seed: [u8; 32],
        limits: &ExecutionLimits,
    ) -> Result<Execution, String> {
        // A dispute carries no input files: a task that reads some is
        // refused here, never judged without them.
        self.re_execute_with_output(module, input, None, seed, limits)
            .map(|(execution, _)| execution)
    }

    fn run_challenge(&self, seed: [u8; 32], passes: u32) -> Result<ContentId, String> {
        let sandbox = self
            .sandbox
            .get_or_init(|| Sandbox::new(self.config.clone()).map_err(|error| error.to_string()));
        match sandbox {
            Ok(sandbox) => sandbox
                .run_challenge(seed, passes, WALL_TIME_DEFAULT)
                .map(|answer| answer.output),
            Err(error) => Err(format!("the sandbox could not start: {error}")),
        }
    }
}

/// Makes a fresh folder under `parent` holding each `(name, file)` as
/// `name`: a hard link where the file system allows it, else a copy. The
/// folder is what a task sees at `/input`; it is deleted when dropped.
pub fn stage_input_dir(
    parent: &Path,
    files: &[(String, PathBuf)],
) -> std::io::Result<tempfile::TempDir> {
    std::fs::create_dir_all(parent)?;
    let dir = tempfile::Builder::new()
        .prefix("input-")
        .tempdir_in(parent)?;
    for (name, file) in files {
        idlegrid_types::InputFile::check_name(name)
            .map_err(|why| std::io::Error::new(std::io::ErrorKind::InvalidInput, why))?;
        let to = dir.path().join(name);
        std::fs::hard_link(file, &to).or_else(|_| std::fs::copy(file, &to).map(|_| ()))?;
    }
    Ok(dir)
}
