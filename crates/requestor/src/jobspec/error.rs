//! What can be wrong with a job file, and where in it.

use std::io;
use std::path::{Path, PathBuf};

use idlegrid_types::LengthExceeded;

use super::REPLICAS_MAX;

/// Why a job file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum JobFileError {
    // The causes are part of the message, not `#[source]`s, so a report
    // that prints the chain does not say them twice.
    #[error("failed to read job file {}: {error}", path.display())]
    Read { path: PathBuf, error: io::Error },
    #[error("job file {} is above the limit of {max} bytes", path.display())]
    TooLarge { path: PathBuf, max: usize },
    #[error("{}: {problem}", place(file, *line_column))]
    Invalid {
        file: PathBuf,
        /// 1-based line and column (in characters) of the offending text.
        line_column: Option<(usize, usize)>,
        problem: JobFileProblem,
    },
}

fn place(file: &Path, line_column: Option<(usize, usize)>) -> String {
    match line_column {
        Some((line, column)) => format!("{}:{line}:{column}", file.display()),
        None => file.display().to_string(),
    }
}

impl JobFileError {
    /// The 1-based line and column the error points at, if it points anywhere.
    pub fn location(&self) -> Option<(usize, usize)> {
        match self {
            JobFileError::Invalid { line_column, .. } => *line_column,
            JobFileError::Read { .. } | JobFileError::TooLarge { .. } => None,
        }
    }

    /// What is wrong inside the file, if the file itself could be read.
    pub fn problem(&self) -> Option<&JobFileProblem> {
        match self {
            JobFileError::Invalid { problem, .. } => Some(problem),
            JobFileError::Read { .. } | JobFileError::TooLarge { .. } => None,
        }
    }
}

/// What is wrong at a place in a job file.
#[derive(Debug, thiserror::Error)]
pub enum JobFileProblem {
    /// Not TOML, a value of the wrong type, a missing or unknown key.
    #[error("{0}")]
    Toml(String),
    #[error("`{field}` must be at least 1")]
    Zero { field: &'static str },
    #[error("`{field}` is {value}, outside the allowed {min}..={max}")]
    OutOfRange {
        field: &'static str,
        value: u64,
        min: u64,
        max: u64,
    },
    #[error("`replicas` is only allowed with `policy = \"replicas\"`")]
    ReplicasWithoutPolicy,
    #[error("`{field}` tunes the adaptive policy: it is not allowed with `policy = \"replicas\"`")]
    TrustWithReplicas { field: &'static str },
    #[error(
        "`policy = \"replicas\"` needs `replicas`, how many providers run each task (1..={REPLICAS_MAX})"
    )]
    ReplicasMissing,
    #[error("a job has either a `[tasks]` table or `[[task]]` entries, not both")]
    BothTaskForms,
    #[error("the job has no tasks: add a `[tasks]` range or manifest, or `[[task]]` entries")]
    NoTasks,
    #[error(
        "`[tasks]` needs `end` (a range of indices), `manifest` (a file whose lines are the \
         tasks) or `dir` (a folder whose files are the tasks)"
    )]
    RangeWithoutEnd,
    #[error("`{key}` is for a range: with `manifest`, each line of the file is a task")]
    ManifestWithRange { key: &'static str },
    #[error(
        "`{key}` does not go with `dir`: each file in the folder is a task, named by `{{file}}`"
    )]
    DirWith { key: &'static str },
    #[error("failed to read folder {}: {source}", path.display())]
    DirRead {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{}: {why}", path.display())]
    DirEntry { path: PathBuf, why: &'static str },
    #[error("folder {} holds no files: each file is one task", path.display())]
    DirEmpty { path: PathBuf },
    #[error("folder {} holds more than {max} files, one task each", path.display())]
    DirTooManyFiles { path: PathBuf, max: u64 },
    #[error("failed to read manifest {}: {source}", path.display())]
    ManifestRead {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("manifest {} is {bytes} bytes, above the limit of {max}", path.display())]
    ManifestTooLarge { path: PathBuf, bytes: u64, max: u64 },
    #[error("manifest {} has more than {max} lines, one task each", path.display())]
    ManifestTooManyLines { path: PathBuf, max: u64 },
    #[error("manifest {} has no lines: each line is one task", path.display())]
    ManifestEmpty { path: PathBuf },
    #[error("manifest {}, line {line}: {why}", path.display())]
    ManifestLine {
        path: PathBuf,
        /// 1-based.
        line: u64,
        why: LineProblem,
    },
    #[error("manifest {} changed while the job was loaded", path.display())]
    ManifestChanged { path: PathBuf },
    #[error("the range is empty: `end` ({end}) must be above `start` ({start})")]
    EmptyRange { start: u64, end: u64 },
    #[error("{count} tasks, above the limit of {max}")]
    TooManyTasks { count: u64, max: u64 },
    #[error("unknown placeholder `{{{name}}}` in an argument; {known}")]
    UnknownPlaceholder {
        name: String,
        /// Which placeholders there are where it stands.
        known: &'static str,
    },
    #[error("{count} arguments, above the limit of {max}")]
    TooManyArgs { count: usize, max: usize },
    #[error("argument of task {task} is {len} bytes, above the limit of {max}")]
    ArgTooLong { task: u64, len: usize, max: usize },
    #[error("`stdin` and `stdin_file` are both set; give one")]
    StdinTwice,
    #[error("stdin is above the limit of {max} bytes")]
    StdinTooLarge { max: usize },
    #[error("failed to read stdin file {}: {source}", path.display())]
    StdinFileRead {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("the task inputs add up to more than {max} bytes (at task {task})")]
    InputsTooLarge { task: u64, max: u64 },
    #[error(
        "the task inputs add up to more than {max} bytes (at task {task}): each is made and \
         hashed as the job loads, and sent to a provider with its task; give an input every \
         task shares as a `[files]` entry instead, which is hashed and sent once"
    )]
    GeneratedInputsTooLarge { task: u64, max: u64 },
    #[error("failed to read module {}: {source}", path.display())]
    ModuleRead {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("module {} is above the limit of {max} bytes", path.display())]
    ModuleTooLarge { path: PathBuf, max: usize },
    #[error("a job runs a WebAssembly `module` or a `[gpu]` program: give exactly one")]
    ModuleOrGpu,
    #[error("[gpu]: {0}")]
    Gpu(String),
    #[error("failed to read input file {}: {source}", path.display())]
    FileRead {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("input file {} is {bytes} bytes, above the limit of {max}", path.display())]
    FileTooLarge { path: PathBuf, bytes: u64, max: u64 },
    #[error("input file name: {0}")]
    FileName(String),
    #[error("GPU tasks read their inputs through bindings, not input files")]
    FilesWithGpu,
    #[error("{url} names an object: inputs by URL are read by `idlegrid submit`, not here")]
    UrlNotHere { url: String },
    #[error("{0}")]
    Download(String),
    #[error("`[output] url`: {0}")]
    Output(String),
    #[error("`{name}` is a file of every task (`[files]`) and of task {task} too")]
    FileTwice { name: String, task: u64 },
    #[error("{count} input files, above the limit of {max}")]
    TooManyFiles { count: usize, max: usize },
    #[error("task {task}'s input is {bytes} bytes, above `task_input_bytes` ({max})")]
    TaskInputTooLarge { task: u64, bytes: u64, max: u64 },
    #[error("the job's input files add up to more than `job_input_bytes` ({max}) at task {task}")]
    JobInputTooLarge { task: u64, max: u64 },
    #[error("task {task}: {source}")]
    TaskInput {
        task: u64,
        #[source]
        source: LengthExceeded,
    },
}

/// What is wrong with one line of a manifest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum LineProblem {
    #[error("empty: each line is one task")]
    Empty,
    #[error("above the limit of {max} bytes")]
    TooLong { max: usize },
    #[error("not UTF-8 text")]
    NotUtf8,
}

/// Why a task of a loaded job cannot be made.
#[derive(Debug, thiserror::Error)]
pub enum TaskError {
    #[error("the job has {count} tasks; there is no task {index}")]
    NoSuchTask { index: u64, count: u64 },
    #[error("failed to read task {index} from manifest {}: {source}", path.display())]
    ManifestRead {
        index: u64,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "manifest {} changed after the job was loaded (found at task {index}): its tasks are \
         pinned by the job's spec, so the job cannot go on with the file as it is now",
        path.display()
    )]
    ManifestChanged { index: u64, path: PathBuf },
    #[error("task {index}: {source}")]
    Input {
        index: u64,
        #[source]
        source: LengthExceeded,
    },
}

/// The 1-based line and column (counted in characters) of byte `offset` in
/// `text`. An offset past the end is the end.
pub fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let mut line = 1;
    let mut column = 1;
    for (index, character) in text.char_indices() {
        if index >= offset {
            break;
        }
        if character == '\n' {
            line += 1;
            column = 1;
        } else {
            column += 1;
        }
    }
    (line, column)
}
