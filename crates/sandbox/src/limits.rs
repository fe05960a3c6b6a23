//! The bounds on a task and on the sandbox, each with its unit in its name.

use std::time::Duration;

/// Default fuel for a task: about a minute of work on a 2020s laptop core.
pub const FUEL_DEFAULT: u64 = 50_000_000_000;
/// Default linear memory a task may use.
pub const MEMORY_BYTES_DEFAULT: u64 = 256 << 20;
/// Default bytes of output (stdout plus output files).
pub const OUTPUT_BYTES_DEFAULT: u64 = 16 << 20;
/// Default bytes of stderr kept; more is dropped, not an error.
pub const STDERR_BYTES_DEFAULT: u64 = 64 << 10;
/// Default wall-clock backstop.
pub const WALL_TIME_DEFAULT: Duration = Duration::from_secs(120);
/// Most entries (files and directories) a task may create in its output directory.
pub const OUTPUT_ENTRIES_MAX: u32 = 1024;

/// Largest module the sandbox compiles.
pub const MODULE_BYTES_MAX_DEFAULT: usize = 16 << 20;
/// Most linear memory any task on this sandbox can be given; each pooled
/// instance slot reserves (virtual, not resident) address space for it.
pub const MEMORY_BYTES_CEILING_DEFAULT: u64 = 4 << 30;
/// Wasm call stack, bytes.
pub const WASM_STACK_BYTES_DEFAULT: usize = 512 << 10;
/// Most table elements a task may have (tables hold function references).
pub const TABLE_ELEMENTS_MAX: usize = 100_000;
/// Compiled modules kept ready in memory.
pub const PREPARED_MODULES_MAX: usize = 64;
/// How often the wall-clock backstop ticks.
pub const EPOCH_TICK: Duration = Duration::from_millis(5);

/// What one task may consume. Replicas of a task must run with the same
/// limits (except `wall_time`) to agree on its result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TaskLimits {
    pub fuel: u64,
    pub memory_bytes: u64,
    pub output_bytes: u64,
    pub stderr_bytes: u64,
    pub wall_time: Duration,
}

impl Default for TaskLimits {
    fn default() -> Self {
        Self {
            fuel: FUEL_DEFAULT,
            memory_bytes: MEMORY_BYTES_DEFAULT,
            output_bytes: OUTPUT_BYTES_DEFAULT,
            stderr_bytes: STDERR_BYTES_DEFAULT,
            wall_time: WALL_TIME_DEFAULT,
        }
    }
}
