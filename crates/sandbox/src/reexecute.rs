//! The sandbox as the ledger's re-executor: a disputed task runs again here
//! under the job's limits.

use std::time::Duration;

use idlegrid_types::{ErrorKind, Execution, ExecutionLimits, ReExecute, TaskInput, TaskOutcome};

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
    /// disagreement itself keeps the output). An `Err` means the host could
    /// not run it, or it ran past the wall clock: not a verdict.
    pub fn re_execute_with_output(
        &self,
        module: &[u8],
        input: &TaskInput,
        seed: [u8; 32],
        limits: &ExecutionLimits,
    ) -> Result<(Execution, Vec<u8>), String> {
        let task = TaskSpec {
            args: input.arg_strings(),
            stdin: input.stdin.to_vec(),
            input_dir: None,
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
        self.re_execute_with_output(module, input, seed, limits)
            .map(|(execution, _)| execution)
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
        seed: [u8; 32],
        limits: &ExecutionLimits,
    ) -> Result<(Execution, Vec<u8>), String> {
        let sandbox = self
            .sandbox
            .get_or_init(|| Sandbox::new(self.config.clone()).map_err(|error| error.to_string()));
        match sandbox {
            Ok(sandbox) => sandbox.re_execute_with_output(module, input, seed, limits),
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
        self.re_execute_with_output(module, input, seed, limits)
            .map(|(execution, _)| execution)
    }
}
