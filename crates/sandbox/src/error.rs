//! Why a task did not complete: one typed kind per limit, shared with JSON output.

use std::fmt;

/// The reason a task failed. The names (`as_str`) are part of idlegrid's
/// wire and JSON vocabulary: receipts, the CLI and the API all use them.
///
/// Every kind except [`ErrorKind::WallTimeout`] is deterministic: replicas of
/// the same task fail the same way after the same fuel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// The bytes are not a module the sandbox accepts (malformed, a feature
    /// the deterministic profile forbids, an import it does not provide, no
    /// `_start`, too large).
    InvalidModule,
    /// The task used all the fuel it was given.
    OutOfFuel,
    /// The task asked for more linear memory (or table space) than allowed.
    MemoryLimit,
    /// The task wrote more output (stdout or output files) than allowed.
    OutputLimit,
    /// The task exhausted the wasm call stack.
    StackOverflow,
    /// The task trapped (unreachable, out-of-bounds access, division by
    /// zero, …) or the sandbox refused something it did.
    Trap,
    /// The host's wall-clock backstop stopped the task. Not deterministic;
    /// it protects the host and is not evidence about the module.
    WallTimeout,
}

impl ErrorKind {
    pub const ALL: [ErrorKind; 7] = [
        ErrorKind::InvalidModule,
        ErrorKind::OutOfFuel,
        ErrorKind::MemoryLimit,
        ErrorKind::OutputLimit,
        ErrorKind::StackOverflow,
        ErrorKind::Trap,
        ErrorKind::WallTimeout,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            ErrorKind::InvalidModule => "invalid_module",
            ErrorKind::OutOfFuel => "out_of_fuel",
            ErrorKind::MemoryLimit => "memory_limit",
            ErrorKind::OutputLimit => "output_limit",
            ErrorKind::StackOverflow => "stack_overflow",
            ErrorKind::Trap => "trap",
            ErrorKind::WallTimeout => "wall_timeout",
        }
    }

    /// Whether every honest replica of the task reaches the same failure.
    pub const fn is_deterministic(self) -> bool {
        !matches!(self, ErrorKind::WallTimeout)
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A task failure: its kind and a message that reads naturally after
/// "the task failed: ".
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{kind}: {message}")]
pub struct TaskError {
    pub kind: ErrorKind,
    pub message: String,
}

impl TaskError {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
        }
    }
}

/// The sandbox itself could not be set up (not the fault of any module).
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error("failed to configure the wasm engine: {0}")]
    Engine(String),
    #[error("failed to use the module cache directory {path}: {source}")]
    CacheDir {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
}
