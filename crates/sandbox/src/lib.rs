//! Run WASI modules deterministically, with fuel, memory, output and wall-clock limits.
//!
//! A provider runs every task through [`Sandbox::run`]; a validator re-runs a
//! disputed one the same way. The same module, arguments, input and seed give
//! the same output bytes and the same fuel on every machine: clocks are fixed,
//! `random_get` is a stream seeded by the task, the environment is empty, file
//! times, inodes and directory order are the same on every host, NaNs are
//! canonical, threads and relaxed SIMD are off, and nothing blocks on
//! real time. Only this crate imports wasmtime.

mod cache;
mod challenge;
mod error;
mod files;
mod host;
pub mod limits;
pub mod meter;
pub mod nan;
mod output;
mod overrides;
mod reexecute;
mod sandbox;

pub use challenge::{ChallengeAnswer, challenge_module, challenge_module_cid, challenge_task};
pub use error::{ErrorKind, SetupError, TaskError};
pub use host::{FIXED_MONOTONIC_NANOS, FIXED_WALL_CLOCK_SECS};
pub use limits::TaskLimits;
pub use output::{OutputFile, TaskOutput};
pub use reexecute::{LazySandbox, outcome_of, stage_input_dir, task_limits};
pub use sandbox::{
    Completion, INPUT_DIR_GUEST, Metering, ModuleOrigin, Nans, OUTPUT_DIR_GUEST, PROGRAM_NAME,
    PreparedModule, RunError, Sandbox, SandboxConfig, TaskReport, TaskSpec, seed_from_u64,
};
