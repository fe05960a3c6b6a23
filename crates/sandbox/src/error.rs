//! Why a task did not complete: one typed kind per limit, shared with JSON output.

pub use idlegrid_types::ErrorKind;

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
