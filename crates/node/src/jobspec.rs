//! Job files (`job.toml`): what a requestor asks the network to run.
//!
//! A job file names a WebAssembly module, the tasks to run it on (a range
//! of indices expanded through argument templates, or explicit `[[task]]`
//! entries), the limits every task runs under, the price, the verification
//! policy, the budget and the deadline. [`JobFile::load`] reads one, checks
//! every bound, expands the tasks and reads the files it names; every
//! mistake tied to a place in the file is reported as `FILE:LINE:COLUMN:
//! message`. The format is documented in `docs/job-spec.md`.

use std::fmt;
use std::io::{self, Read};
use std::ops::Range;
use std::path::{Path, PathBuf};

use idlegrid_sandbox::limits::{
    FUEL_DEFAULT, MEMORY_BYTES_CEILING_DEFAULT, MEMORY_BYTES_DEFAULT,
    OUTPUT_BYTES_DEFAULT as SANDBOX_OUTPUT_BYTES_DEFAULT,
};
use idlegrid_types::work::{TASK_ARG_BYTES_MAX, TASK_ARGS_MAX};
use idlegrid_types::{ContentId, ExecutionLimits, LengthExceeded, TaskInput, codec};
use serde::Deserialize;
use toml::Spanned;

/// Largest job file read, bytes.
pub const JOB_FILE_BYTES_MAX: usize = 64 << 20;
/// Largest module a job may name, bytes: it travels to every provider.
pub const MODULE_BYTES_MAX: usize = 8 << 20;
/// Most tasks in one job.
pub const TASKS_MAX: u64 = 1_000_000;
/// Largest stdin one task carries, bytes: inputs travel inline on the network.
pub const TASK_STDIN_INLINE_BYTES_MAX: usize = 1 << 20;
/// Most bytes of task inputs (their canonical encodings added up) in one job.
pub const TASK_INPUTS_TOTAL_BYTES_MAX: u64 = 256 << 20;
/// Most fuel one task may be given.
pub const FUEL_MAX: u64 = 10_000_000_000_000;
/// Most linear memory one task may be given, MiB: the sandbox's ceiling.
pub const MEMORY_MIB_MAX: u64 = MEMORY_BYTES_CEILING_DEFAULT >> 20;
/// Default linear memory of a task, MiB.
pub const MEMORY_MIB_DEFAULT: u64 = MEMORY_BYTES_DEFAULT >> 20;
/// Most output one task may produce, bytes: results travel inline on the network.
pub const OUTPUT_BYTES_MAX: u64 = 1 << 20;
/// Default output bound of a task, bytes: the sandbox's default, capped at
/// [`OUTPUT_BYTES_MAX`] because results travel inline.
pub const OUTPUT_BYTES_DEFAULT: u64 = if SANDBOX_OUTPUT_BYTES_DEFAULT < OUTPUT_BYTES_MAX {
    SANDBOX_OUTPUT_BYTES_DEFAULT
} else {
    OUTPUT_BYTES_MAX
};
/// Default wall-clock backstop of a task on a provider, seconds.
pub const WALL_TIME_SECS_DEFAULT: u64 = 60;
/// Longest wall-clock backstop of a task, seconds.
pub const WALL_TIME_SECS_MAX: u64 = 3600;
/// Default blocks after opening during which providers may redeem.
pub const DEADLINE_BLOCKS_DEFAULT: u64 = 600;
/// Shortest deadline, blocks.
pub const DEADLINE_BLOCKS_MIN: u64 = 10;
/// Longest deadline, blocks.
pub const DEADLINE_BLOCKS_MAX: u64 = 1_000_000;
/// Most providers that may run each task under `policy = "replicas"`.
pub const REPLICAS_MAX: u8 = 7;
/// The placeholder an argument template replaces with the task's index.
pub const INDEX_PLACEHOLDER: &str = "index";

/// How the results of a job's tasks are checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verification {
    /// The network decides how many replicas each task needs, from the
    /// providers' track record.
    Adaptive,
    /// Every task runs on this many providers (1..=[`REPLICAS_MAX`]).
    Replicas(u8),
}

impl Verification {
    /// The canonical form hashed into the job's spec: (tag, replicas).
    pub const fn canonical(self) -> (u8, u8) {
        match self {
            Verification::Adaptive => (0, 0),
            Verification::Replicas(replicas) => (1, replicas),
        }
    }
}

/// A loaded job file: everything `idlegrid submit` needs, checked and expanded.
#[derive(Clone, PartialEq, Eq)]
pub struct JobFile {
    /// The job file.
    pub path: PathBuf,
    /// The module, resolved against the job file's folder.
    pub module_path: PathBuf,
    /// The module's bytes (at most [`MODULE_BYTES_MAX`]).
    pub module: Vec<u8>,
    /// `ContentId::of(&module)`.
    pub module_cid: ContentId,
    /// One input per task; a task's index is its position.
    pub tasks: Vec<TaskInput>,
    /// What each task may consume; every replica runs with the same.
    pub limits: ExecutionLimits,
    /// The provider-side wall-clock backstop per task, seconds.
    pub wall_time_secs: u64,
    /// Tokens per million units of fuel a task uses.
    pub price_per_million_fuel: u64,
    pub verification: Verification,
    /// The most the job may pay; escrowed when the job opens.
    pub budget: u64,
    /// Blocks after opening during which providers may redeem.
    pub deadline_blocks: u64,
}

impl fmt::Debug for JobFile {
    // The module and the task inputs can be hundreds of MiB; show their sizes.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JobFile")
            .field("path", &self.path)
            .field("module_path", &self.module_path)
            .field("module", &format_args!("{} bytes", self.module.len()))
            .field("module_cid", &self.module_cid)
            .field("tasks", &format_args!("{} tasks", self.tasks.len()))
            .field("limits", &self.limits)
            .field("wall_time_secs", &self.wall_time_secs)
            .field("price_per_million_fuel", &self.price_per_million_fuel)
            .field("verification", &self.verification)
            .field("budget", &self.budget)
            .field("deadline_blocks", &self.deadline_blocks)
            .finish()
    }
}

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
    #[error(
        "`policy = \"replicas\"` needs `replicas`, how many providers run each task (1..={REPLICAS_MAX})"
    )]
    ReplicasMissing,
    #[error("a job has either a `[tasks]` range or `[[task]]` entries, not both")]
    BothTaskForms,
    #[error("the job has no tasks: add a `[tasks]` range or `[[task]]` entries")]
    NoTasks,
    #[error("the range is empty: `end` ({end}) must be above `start` ({start})")]
    EmptyRange { start: u64, end: u64 },
    #[error("{count} tasks, above the limit of {max}")]
    TooManyTasks { count: u64, max: u64 },
    #[error("unknown placeholder `{{{name}}}` in an argument; the only one is `{{index}}`")]
    UnknownPlaceholder { name: String },
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
    #[error("failed to read module {}: {source}", path.display())]
    ModuleRead {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("module {} is above the limit of {max} bytes", path.display())]
    ModuleTooLarge { path: PathBuf, max: usize },
    #[error("task {task}: {source}")]
    TaskInput {
        task: u64,
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

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawJob {
    module: Spanned<String>,
    price_per_million_fuel: Spanned<u64>,
    budget: Spanned<u64>,
    deadline_blocks: Option<Spanned<u64>>,
    limits: Option<RawLimits>,
    verification: Option<RawVerification>,
    tasks: Option<Spanned<RawRange>>,
    task: Option<Spanned<Vec<Spanned<RawTask>>>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLimits {
    fuel: Option<Spanned<u64>>,
    memory_mib: Option<Spanned<u64>>,
    output_bytes: Option<Spanned<u64>>,
    wall_time_secs: Option<Spanned<u64>>,
}

#[derive(Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
enum RawPolicy {
    Adaptive,
    Replicas,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawVerification {
    policy: Option<Spanned<RawPolicy>>,
    replicas: Option<Spanned<u64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRange {
    start: Option<Spanned<u64>>,
    end: Spanned<u64>,
    args: Option<Spanned<Vec<Spanned<String>>>>,
    stdin: Option<Spanned<String>>,
    stdin_file: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTask {
    args: Option<Spanned<Vec<Spanned<String>>>>,
    stdin: Option<Spanned<String>>,
    stdin_file: Option<Spanned<String>>,
}

/// One piece of an argument template.
enum Piece {
    Literal(String),
    Index,
}

/// Turns problems at byte spans of the file into [`JobFileError`]s.
struct Reporter<'a> {
    text: &'a str,
    path: &'a Path,
}

impl Reporter<'_> {
    fn at(&self, span: Range<usize>, problem: JobFileProblem) -> JobFileError {
        JobFileError::Invalid {
            file: self.path.to_path_buf(),
            line_column: Some(line_column(self.text, span.start)),
            problem,
        }
    }

    fn in_range<T: Into<u64> + Copy>(
        &self,
        field: &'static str,
        value: &Spanned<T>,
        bounds: std::ops::RangeInclusive<u64>,
    ) -> Result<u64, JobFileError> {
        let number: u64 = (*value.get_ref()).into();
        if bounds.contains(&number) {
            return Ok(number);
        }
        let problem = if *bounds.start() == 1 && *bounds.end() == u64::MAX {
            JobFileProblem::Zero { field }
        } else {
            JobFileProblem::OutOfRange {
                field,
                value: number,
                min: *bounds.start(),
                max: *bounds.end(),
            }
        };
        Err(self.at(value.span(), problem))
    }

    fn optional(
        &self,
        field: &'static str,
        value: Option<&Spanned<u64>>,
        default: u64,
        bounds: std::ops::RangeInclusive<u64>,
    ) -> Result<u64, JobFileError> {
        match value {
            Some(value) => self.in_range(field, value, bounds),
            None => Ok(default),
        }
    }
}

/// Reads at most `max` bytes of `path`; `Ok(None)` when it holds more.
fn read_bounded(path: &Path, max: usize) -> io::Result<Option<Vec<u8>>> {
    let file = std::fs::File::open(path)?;
    let mut bytes = Vec::new();
    let limit = u64::try_from(max).unwrap_or(u64::MAX).saturating_add(1);
    file.take(limit).read_to_end(&mut bytes)?;
    Ok((bytes.len() <= max).then_some(bytes))
}

/// The length of `TaskInput`'s canonical encoding: a `u32` length before the
/// argument list, each argument and the stdin.
fn encoded_len(args: &[String], stdin: &[u8]) -> u64 {
    let prefix = 4u64;
    let args_len: u64 = args.iter().map(|arg| prefix + arg.len() as u64).sum();
    prefix + args_len + prefix + stdin.len() as u64
}

impl JobFile {
    /// Reads and checks the job file at `path`.
    pub fn load(path: &Path) -> Result<JobFile, JobFileError> {
        let bytes = read_bounded(path, JOB_FILE_BYTES_MAX)
            .map_err(|error| JobFileError::Read {
                path: path.to_path_buf(),
                error,
            })?
            .ok_or_else(|| JobFileError::TooLarge {
                path: path.to_path_buf(),
                max: JOB_FILE_BYTES_MAX,
            })?;
        let text = String::from_utf8(bytes).map_err(|error| JobFileError::Read {
            path: path.to_path_buf(),
            error: io::Error::new(io::ErrorKind::InvalidData, error),
        })?;
        Self::parse(&text, path)
    }

    /// Checks the job file `text`; `path` names it in messages, and relative
    /// paths in it (the module, stdin files) resolve against its folder.
    pub fn parse(text: &str, path: &Path) -> Result<JobFile, JobFileError> {
        if text.len() > JOB_FILE_BYTES_MAX {
            return Err(JobFileError::TooLarge {
                path: path.to_path_buf(),
                max: JOB_FILE_BYTES_MAX,
            });
        }
        let report = Reporter { text, path };
        let raw: RawJob = toml::from_str(text).map_err(|error| JobFileError::Invalid {
            file: path.to_path_buf(),
            line_column: error.span().map(|span| line_column(text, span.start)),
            problem: JobFileProblem::Toml(error.message().trim_end().to_owned()),
        })?;
        let folder = path.parent().unwrap_or(Path::new(""));

        let price_per_million_fuel = report.in_range(
            "price_per_million_fuel",
            &raw.price_per_million_fuel,
            1..=u64::MAX,
        )?;
        let budget = report.in_range("budget", &raw.budget, 1..=u64::MAX)?;
        let deadline_blocks = report.optional(
            "deadline_blocks",
            raw.deadline_blocks.as_ref(),
            DEADLINE_BLOCKS_DEFAULT,
            DEADLINE_BLOCKS_MIN..=DEADLINE_BLOCKS_MAX,
        )?;
        let (limits, wall_time_secs) = Self::limits(&report, raw.limits.as_ref())?;
        let verification = Self::verification(&report, raw.verification.as_ref())?;

        let module_path = folder.join(raw.module.get_ref());
        let module = read_bounded(&module_path, MODULE_BYTES_MAX)
            .map_err(|source| {
                report.at(
                    raw.module.span(),
                    JobFileProblem::ModuleRead {
                        path: module_path.clone(),
                        source,
                    },
                )
            })?
            .ok_or_else(|| {
                report.at(
                    raw.module.span(),
                    JobFileProblem::ModuleTooLarge {
                        path: module_path.clone(),
                        max: MODULE_BYTES_MAX,
                    },
                )
            })?;

        let tasks = match (&raw.tasks, &raw.task) {
            (Some(range), Some(explicit)) => {
                // Point at whichever form comes second: the one that conflicts.
                let span = if range.span().start > explicit.span().start {
                    range.span()
                } else {
                    explicit.span()
                };
                return Err(report.at(span, JobFileProblem::BothTaskForms));
            }
            (Some(range), None) => Self::expand_range(&report, folder, range)?,
            (None, Some(explicit)) => Self::explicit_tasks(&report, folder, explicit)?,
            (None, None) => {
                return Err(report.at(0..0, JobFileProblem::NoTasks));
            }
        };

        Ok(JobFile {
            path: path.to_path_buf(),
            module_path,
            module_cid: ContentId::of(&module),
            module,
            tasks,
            limits,
            wall_time_secs,
            price_per_million_fuel,
            verification,
            budget,
            deadline_blocks,
        })
    }

    /// The canonical description whose content id goes on the ledger as the
    /// job's `spec`: the Borsh encoding of (module cid, each task input's
    /// content id in order, limits, price, verification as (tag, replicas),
    /// budget, deadline_blocks, wall_time_secs).
    pub fn spec_cid(&self) -> ContentId {
        let task_cids: Vec<ContentId> = self.tasks.iter().map(TaskInput::content_id).collect();
        let spec = (
            self.module_cid,
            task_cids,
            self.limits,
            self.price_per_million_fuel,
            self.verification.canonical(),
            self.budget,
            self.deadline_blocks,
            self.wall_time_secs,
        );
        let bytes = codec::encode(&spec).expect(
            "a job spec holds at most TASKS_MAX content ids, far below Borsh's u32 lengths, \
             and encodes into memory",
        );
        ContentId::of(&bytes)
    }

    fn limits(
        report: &Reporter<'_>,
        raw: Option<&RawLimits>,
    ) -> Result<(ExecutionLimits, u64), JobFileError> {
        let fuel = report.optional(
            "fuel",
            raw.and_then(|raw| raw.fuel.as_ref()),
            FUEL_DEFAULT,
            1..=FUEL_MAX,
        )?;
        let memory_mib = report.optional(
            "memory_mib",
            raw.and_then(|raw| raw.memory_mib.as_ref()),
            MEMORY_MIB_DEFAULT,
            1..=MEMORY_MIB_MAX,
        )?;
        let output_bytes = report.optional(
            "output_bytes",
            raw.and_then(|raw| raw.output_bytes.as_ref()),
            OUTPUT_BYTES_DEFAULT,
            0..=OUTPUT_BYTES_MAX,
        )?;
        let wall_time_secs = report.optional(
            "wall_time_secs",
            raw.and_then(|raw| raw.wall_time_secs.as_ref()),
            WALL_TIME_SECS_DEFAULT,
            1..=WALL_TIME_SECS_MAX,
        )?;
        let limits = ExecutionLimits {
            fuel,
            memory_bytes: memory_mib << 20,
            output_bytes,
        };
        Ok((limits, wall_time_secs))
    }

    fn verification(
        report: &Reporter<'_>,
        raw: Option<&RawVerification>,
    ) -> Result<Verification, JobFileError> {
        let Some(raw) = raw else {
            return Ok(Verification::Adaptive);
        };
        let policy = raw.policy.as_ref();
        match (policy.map(|policy| *policy.get_ref()), &raw.replicas) {
            (None | Some(RawPolicy::Adaptive), None) => Ok(Verification::Adaptive),
            (None | Some(RawPolicy::Adaptive), Some(replicas)) => {
                Err(report.at(replicas.span(), JobFileProblem::ReplicasWithoutPolicy))
            }
            (Some(RawPolicy::Replicas), Some(replicas)) => {
                let count = report.in_range("replicas", replicas, 1..=u64::from(REPLICAS_MAX))?;
                // In range, so it fits a u8.
                Ok(Verification::Replicas(
                    u8::try_from(count).unwrap_or(REPLICAS_MAX),
                ))
            }
            (Some(RawPolicy::Replicas), None) => {
                let span = policy.map(Spanned::span).unwrap_or(0..0);
                Err(report.at(span, JobFileProblem::ReplicasMissing))
            }
        }
    }

    fn stdin(
        report: &Reporter<'_>,
        folder: &Path,
        stdin: Option<&Spanned<String>>,
        stdin_file: Option<&Spanned<String>>,
    ) -> Result<Vec<u8>, JobFileError> {
        match (stdin, stdin_file) {
            (Some(_), Some(file)) => Err(report.at(file.span(), JobFileProblem::StdinTwice)),
            (Some(text), None) => {
                if text.get_ref().len() > TASK_STDIN_INLINE_BYTES_MAX {
                    return Err(report.at(
                        text.span(),
                        JobFileProblem::StdinTooLarge {
                            max: TASK_STDIN_INLINE_BYTES_MAX,
                        },
                    ));
                }
                Ok(text.get_ref().as_bytes().to_vec())
            }
            (None, Some(file)) => {
                let path = folder.join(file.get_ref());
                read_bounded(&path, TASK_STDIN_INLINE_BYTES_MAX)
                    .map_err(|source| {
                        report.at(
                            file.span(),
                            JobFileProblem::StdinFileRead {
                                path: path.clone(),
                                source,
                            },
                        )
                    })?
                    .ok_or_else(|| {
                        report.at(
                            file.span(),
                            JobFileProblem::StdinTooLarge {
                                max: TASK_STDIN_INLINE_BYTES_MAX,
                            },
                        )
                    })
            }
            (None, None) => Ok(Vec::new()),
        }
    }

    fn check_arg_count<'a>(
        report: &Reporter<'_>,
        args: Option<&'a Spanned<Vec<Spanned<String>>>>,
    ) -> Result<&'a [Spanned<String>], JobFileError> {
        let Some(args) = args else {
            return Ok(&[]);
        };
        let count = args.get_ref().len();
        if count > TASK_ARGS_MAX {
            return Err(report.at(
                args.span(),
                JobFileProblem::TooManyArgs {
                    count,
                    max: TASK_ARGS_MAX,
                },
            ));
        }
        Ok(args.get_ref())
    }

    fn check_arg_len(
        report: &Reporter<'_>,
        arg: &Spanned<String>,
        expanded: &str,
        task: u64,
    ) -> Result<(), JobFileError> {
        if expanded.len() > TASK_ARG_BYTES_MAX {
            return Err(report.at(
                arg.span(),
                JobFileProblem::ArgTooLong {
                    task,
                    len: expanded.len(),
                    max: TASK_ARG_BYTES_MAX,
                },
            ));
        }
        Ok(())
    }

    fn task_input(
        task: u64,
        args: Vec<String>,
        stdin: Vec<u8>,
    ) -> Result<TaskInput, JobFileProblem> {
        TaskInput::new(args, stdin).map_err(|source| JobFileProblem::TaskInput { task, source })
    }

    fn expand_range(
        report: &Reporter<'_>,
        folder: &Path,
        range: &Spanned<RawRange>,
    ) -> Result<Vec<TaskInput>, JobFileError> {
        let raw = range.get_ref();
        let start = raw.start.as_ref().map_or(0, |start| *start.get_ref());
        let end = *raw.end.get_ref();
        if end <= start {
            return Err(report.at(raw.end.span(), JobFileProblem::EmptyRange { start, end }));
        }
        let count = end - start;
        if count > TASKS_MAX {
            return Err(report.at(
                raw.end.span(),
                JobFileProblem::TooManyTasks {
                    count,
                    max: TASKS_MAX,
                },
            ));
        }
        let arg_templates = Self::check_arg_count(report, raw.args.as_ref())?;
        let templates = arg_templates
            .iter()
            .map(|arg| {
                parse_template(arg.get_ref()).map_err(|problem| report.at(arg.span(), problem))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let stdin = Self::stdin(report, folder, raw.stdin.as_ref(), raw.stdin_file.as_ref())?;

        let mut tasks = Vec::new();
        let mut total_bytes = 0u64;
        for (position, index) in (start..end).enumerate() {
            let position = position as u64;
            let mut args = Vec::with_capacity(templates.len());
            for (template, arg) in templates.iter().zip(arg_templates) {
                let expanded = expand(template, index);
                Self::check_arg_len(report, arg, &expanded, position)?;
                args.push(expanded);
            }
            total_bytes += encoded_len(&args, &stdin);
            if total_bytes > TASK_INPUTS_TOTAL_BYTES_MAX {
                return Err(report.at(
                    range.span(),
                    JobFileProblem::InputsTooLarge {
                        task: position,
                        max: TASK_INPUTS_TOTAL_BYTES_MAX,
                    },
                ));
            }
            let input = Self::task_input(position, args, stdin.clone())
                .map_err(|problem| report.at(range.span(), problem))?;
            tasks.push(input);
        }
        Ok(tasks)
    }

    fn explicit_tasks(
        report: &Reporter<'_>,
        folder: &Path,
        explicit: &Spanned<Vec<Spanned<RawTask>>>,
    ) -> Result<Vec<TaskInput>, JobFileError> {
        let entries = explicit.get_ref();
        if entries.is_empty() {
            return Err(report.at(explicit.span(), JobFileProblem::NoTasks));
        }
        let count = entries.len() as u64;
        if count > TASKS_MAX {
            return Err(report.at(
                explicit.span(),
                JobFileProblem::TooManyTasks {
                    count,
                    max: TASKS_MAX,
                },
            ));
        }
        let mut tasks = Vec::with_capacity(entries.len());
        let mut total_bytes = 0u64;
        for (position, entry) in entries.iter().enumerate() {
            let position = position as u64;
            let raw = entry.get_ref();
            let raw_args = Self::check_arg_count(report, raw.args.as_ref())?;
            let mut args = Vec::with_capacity(raw_args.len());
            for arg in raw_args {
                Self::check_arg_len(report, arg, arg.get_ref(), position)?;
                args.push(arg.get_ref().clone());
            }
            let stdin = Self::stdin(report, folder, raw.stdin.as_ref(), raw.stdin_file.as_ref())?;
            total_bytes += encoded_len(&args, &stdin);
            if total_bytes > TASK_INPUTS_TOTAL_BYTES_MAX {
                return Err(report.at(
                    entry.span(),
                    JobFileProblem::InputsTooLarge {
                        task: position,
                        max: TASK_INPUTS_TOTAL_BYTES_MAX,
                    },
                ));
            }
            let input = Self::task_input(position, args, stdin)
                .map_err(|problem| report.at(entry.span(), problem))?;
            tasks.push(input);
        }
        Ok(tasks)
    }
}

/// Splits an argument template into literal text and `{index}`
/// placeholders. A placeholder is `{` one or more ASCII letters, digits or
/// underscores `}`; any other brace is literal text, so `{"a": 1}` and `{}`
/// pass through unchanged.
fn parse_template(template: &str) -> Result<Vec<Piece>, JobFileProblem> {
    let mut pieces = Vec::new();
    let mut literal = String::new();
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        literal.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        let name_len = after
            .find(|character: char| !(character.is_ascii_alphanumeric() || character == '_'))
            .unwrap_or(after.len());
        let name = &after[..name_len];
        if name.is_empty() || !after[name_len..].starts_with('}') {
            literal.push('{');
            rest = after;
            continue;
        }
        if name != INDEX_PLACEHOLDER {
            return Err(JobFileProblem::UnknownPlaceholder {
                name: name.to_owned(),
            });
        }
        if !literal.is_empty() {
            pieces.push(Piece::Literal(std::mem::take(&mut literal)));
        }
        pieces.push(Piece::Index);
        rest = &after[name_len + 1..];
    }
    literal.push_str(rest);
    if !literal.is_empty() {
        pieces.push(Piece::Literal(literal));
    }
    Ok(pieces)
}

fn expand(template: &[Piece], index: u64) -> String {
    let mut text = String::new();
    for piece in template {
        match piece {
            Piece::Literal(literal) => text.push_str(literal),
            Piece::Index => text.push_str(&index.to_string()),
        }
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEAD: &str = "module = \"m.wasm\"\nprice_per_million_fuel = 10\nbudget = 1000\n";
    const MODULE: &[u8] = b"\0asm\x01\0\0\0";

    /// A folder holding a module `m.wasm`, where job files are parsed as
    /// `job.toml`.
    struct Folder {
        dir: tempfile::TempDir,
    }

    impl Folder {
        fn new() -> Self {
            let dir = tempfile::tempdir().unwrap();
            std::fs::write(dir.path().join("m.wasm"), MODULE).unwrap();
            Self { dir }
        }

        fn job_path(&self) -> PathBuf {
            self.dir.path().join("job.toml")
        }

        fn write(&self, name: &str, bytes: &[u8]) {
            std::fs::write(self.dir.path().join(name), bytes).unwrap();
        }

        fn parse(&self, text: &str) -> Result<JobFile, JobFileError> {
            JobFile::parse(text, &self.job_path())
        }
    }

    /// Parses `text` and asserts it fails at `line:column` with `message`.
    fn check_error(text: &str, (line, column): (usize, usize), message: &str) {
        let folder = Folder::new();
        let error = folder.parse(text).unwrap_err();
        assert_eq!(error.location(), Some((line, column)), "{error}");
        let shown = error.to_string();
        let expected = format!("{}:{line}:{column}: ", folder.job_path().display());
        assert!(shown.starts_with(&expected), "{shown}");
        let problem = error.problem().unwrap().to_string();
        assert!(problem.contains(message), "{problem:?} lacks {message:?}");
    }

    fn args(input: &TaskInput) -> Vec<String> {
        input.arg_strings()
    }

    #[test]
    fn a_range_expands_its_templates_once_per_index() {
        let folder = Folder::new();
        let text = format!(
            "{HEAD}[tasks]\nstart = 98\nend = 102\nargs = [\"200000\", \"{{index}}\", \"n{{index}}.{{index}}\"]\nstdin = \"shared\"\n"
        );
        let job = folder.parse(&text).unwrap();
        assert_eq!(job.tasks.len(), 4);
        assert_eq!(args(&job.tasks[0]), ["200000", "98", "n98.98"]);
        assert_eq!(args(&job.tasks[3]), ["200000", "101", "n101.101"]);
        assert!(job.tasks.iter().all(|task| *task.stdin == b"shared"));
        assert_eq!(job.module, MODULE);
        assert_eq!(job.module_cid, ContentId::of(MODULE));
        assert_eq!(job.module_path, folder.dir.path().join("m.wasm"));
        assert_eq!(job.path, folder.job_path());
    }

    #[test]
    fn braces_that_are_not_placeholders_are_literal() {
        let folder = Folder::new();
        let text = format!(
            "{HEAD}[tasks]\nend = 1\nargs = ['{{\"a\": {{index}}}}', \"{{}}\", \"{{index\", \"}}{{ x }}\"]\n"
        );
        let job = folder.parse(&text).unwrap();
        assert_eq!(
            args(&job.tasks[0]),
            ["{\"a\": 0}", "{}", "{index", "}{ x }"]
        );
    }

    #[test]
    fn omitted_fields_take_their_defaults() {
        let folder = Folder::new();
        let job = folder.parse(&format!("{HEAD}[tasks]\nend = 2\n")).unwrap();
        assert_eq!(
            job.limits,
            ExecutionLimits {
                fuel: FUEL_DEFAULT,
                memory_bytes: MEMORY_BYTES_DEFAULT,
                output_bytes: OUTPUT_BYTES_MAX,
            }
        );
        assert_eq!(job.wall_time_secs, 60);
        assert_eq!(job.deadline_blocks, 600);
        assert_eq!(job.verification, Verification::Adaptive);
        assert_eq!(job.price_per_million_fuel, 10);
        assert_eq!(job.budget, 1000);
        assert_eq!(job.tasks.len(), 2);
        assert!(
            job.tasks
                .iter()
                .all(|task| task.args.is_empty() && task.stdin.is_empty())
        );
    }

    #[test]
    fn every_field_is_read() {
        let folder = Folder::new();
        let text = "module = \"m.wasm\"\nprice_per_million_fuel = 3\nbudget = 5_000_000\n\
                    deadline_blocks = 10\n[limits]\nfuel = 1_000_000\nmemory_mib = 64\n\
                    output_bytes = 65536\nwall_time_secs = 3600\n[verification]\n\
                    policy = \"replicas\"\nreplicas = 7\n[tasks]\nend = 1\n";
        let job = folder.parse(text).unwrap();
        assert_eq!(
            job.limits,
            ExecutionLimits {
                fuel: 1_000_000,
                memory_bytes: 64 << 20,
                output_bytes: 65536,
            }
        );
        assert_eq!(job.wall_time_secs, 3600);
        assert_eq!(job.deadline_blocks, 10);
        assert_eq!(job.verification, Verification::Replicas(7));
        assert_eq!(job.price_per_million_fuel, 3);
        assert_eq!(job.budget, 5_000_000);
    }

    #[test]
    fn the_spec_cid_is_stable_and_covers_every_field() {
        let folder = Folder::new();
        let base = format!("{HEAD}[tasks]\nend = 3\nargs = [\"{{index}}\"]\n");
        let spec = |text: &str| folder.parse(text).unwrap().spec_cid();
        let first = spec(&base);
        folder.write("job.toml", base.as_bytes());
        assert_eq!(JobFile::load(&folder.job_path()).unwrap().spec_cid(), first);
        assert_eq!(spec(&base), first);

        let variants = [
            base.replace("price_per_million_fuel = 10", "price_per_million_fuel = 11"),
            base.replace("budget = 1000", "budget = 1001"),
            format!("deadline_blocks = 601\n{base}"),
            format!("{base}[limits]\nfuel = 7\n"),
            format!("{base}[limits]\nmemory_mib = 1\n"),
            format!("{base}[limits]\noutput_bytes = 1\n"),
            format!("{base}[limits]\nwall_time_secs = 61\n"),
            format!("{base}[verification]\npolicy = \"replicas\"\nreplicas = 2\n"),
            base.replace("end = 3", "end = 4"),
            base.replace("\"{index}\"", "\"x{index}\""),
            format!("{base}stdin = \"x\"\n"),
        ];
        for variant in &variants {
            assert_ne!(spec(variant), first, "{variant}");
        }
        folder.write("m.wasm", b"another module");
        assert_ne!(spec(&base), first);
    }

    #[test]
    fn explicit_tasks_take_inline_stdin_or_a_stdin_file() {
        let folder = Folder::new();
        folder.write("input.txt", b"from a file\n");
        let text = format!(
            "{HEAD}[[task]]\nargs = [\"1000\", \"{{index}}\"]\nstdin = \"inline\"\n\n\
             [[task]]\nstdin_file = \"input.txt\"\n\n[[task]]\n"
        );
        let job = folder.parse(&text).unwrap();
        assert_eq!(job.tasks.len(), 3);
        // Explicit arguments are literal.
        assert_eq!(args(&job.tasks[0]), ["1000", "{index}"]);
        assert_eq!(*job.tasks[0].stdin, b"inline");
        assert!(job.tasks[1].args.is_empty());
        assert_eq!(*job.tasks[1].stdin, b"from a file\n");
        assert_eq!(job.tasks[2], TaskInput::default());
    }

    #[test]
    fn toml_mistakes_point_at_their_place() {
        check_error(
            &format!("{HEAD}[tasks\nend = 1\n"),
            (4, 7),
            "unclosed table, expected `]`",
        );
        check_error(
            &format!("{HEAD}[tasks]\nstart = 1\n"),
            (4, 1),
            "missing field `end`",
        );
        check_error(
            &format!("{HEAD}colour = 1\n[tasks]\nend = 1\n"),
            (4, 1),
            "unknown field `colour`",
        );
        check_error(
            &format!("{HEAD}[tasks]\nend = 1\n  stdn = \"x\"\n"),
            (6, 3),
            "unknown field `stdn`",
        );
        check_error(
            "module = \"m.wasm\"\nprice_per_million_fuel = \"ten\"\nbudget = 1\n[tasks]\nend = 1\n",
            (2, 26),
            "invalid type",
        );
        check_error(
            &format!("{HEAD}[tasks]\nend = -3\n"),
            (5, 7),
            "invalid value: integer `-3`, expected u64",
        );
        check_error(
            "price_per_million_fuel = 1\nbudget = 1\n[tasks]\nend = 1\n",
            (1, 1),
            "missing field `module`",
        );
        check_error(
            &format!("{HEAD}[verification]\npolicy = \"bogus\"\n[tasks]\nend = 1\n"),
            (5, 10),
            "unknown variant `bogus`, expected `adaptive` or `replicas`",
        );
    }

    #[test]
    fn out_of_range_numbers_point_at_the_value() {
        let tasks = "[tasks]\nend = 1\n";
        check_error(
            &format!("module = \"m.wasm\"\nprice_per_million_fuel = 0\nbudget = 1\n{tasks}"),
            (2, 26),
            "`price_per_million_fuel` must be at least 1",
        );
        check_error(
            &format!("module = \"m.wasm\"\nprice_per_million_fuel = 1\nbudget = 0\n{tasks}"),
            (3, 10),
            "`budget` must be at least 1",
        );
        check_error(
            &format!("{HEAD}deadline_blocks = 9\n{tasks}"),
            (4, 19),
            "`deadline_blocks` is 9, outside the allowed 10..=1000000",
        );
        check_error(
            &format!("{HEAD}[limits]\nfuel = 0\n{tasks}"),
            (5, 8),
            "`fuel` is 0, outside the allowed 1..=10000000000000",
        );
        check_error(
            &format!("{HEAD}[limits]\nmemory_mib = 4097\n{tasks}"),
            (5, 14),
            "`memory_mib` is 4097, outside the allowed 1..=4096",
        );
        check_error(
            &format!("{HEAD}[limits]\noutput_bytes = 1048577\n{tasks}"),
            (5, 16),
            "`output_bytes` is 1048577, outside the allowed 0..=1048576",
        );
        check_error(
            &format!("{HEAD}[limits]\nwall_time_secs = 3601\n{tasks}"),
            (5, 18),
            "`wall_time_secs` is 3601, outside the allowed 1..=3600",
        );
        check_error(
            &format!("{HEAD}[verification]\npolicy = \"replicas\"\nreplicas = 8\n{tasks}"),
            (6, 12),
            "`replicas` is 8, outside the allowed 1..=7",
        );
    }

    #[test]
    fn replicas_and_policy_must_agree() {
        let tasks = "[tasks]\nend = 1\n";
        check_error(
            &format!("{HEAD}[verification]\nreplicas = 2\n{tasks}"),
            (5, 12),
            "`replicas` is only allowed with `policy = \"replicas\"`",
        );
        check_error(
            &format!("{HEAD}[verification]\npolicy = \"adaptive\"\nreplicas = 2\n{tasks}"),
            (6, 12),
            "`replicas` is only allowed with `policy = \"replicas\"`",
        );
        check_error(
            &format!("{HEAD}[verification]\npolicy = \"replicas\"\n{tasks}"),
            (5, 10),
            "`policy = \"replicas\"` needs `replicas`",
        );
    }

    #[test]
    fn a_job_has_exactly_one_task_form() {
        check_error(
            &format!("{HEAD}[tasks]\nend = 3\n\n[[task]]\nargs = [\"a\"]\n"),
            (7, 1),
            "either a `[tasks]` range or `[[task]]` entries, not both",
        );
        check_error(
            &format!("{HEAD}[[task]]\nargs = [\"a\"]\n\n[tasks]\nend = 3\n"),
            (7, 1),
            "either a `[tasks]` range or `[[task]]` entries, not both",
        );
        check_error(HEAD, (1, 1), "the job has no tasks");
        check_error(
            &format!("{HEAD}task = []\n"),
            (4, 8),
            "the job has no tasks",
        );
    }

    #[test]
    fn a_range_must_hold_between_one_and_tasks_max_tasks() {
        check_error(
            &format!("{HEAD}[tasks]\nstart = 5\nend = 5\n"),
            (6, 7),
            "the range is empty: `end` (5) must be above `start` (5)",
        );
        check_error(
            &format!("{HEAD}[tasks]\nstart = 10\nend = 1_000_011\n"),
            (6, 7),
            "1000001 tasks, above the limit of 1000000",
        );
    }

    #[test]
    fn argument_mistakes_point_at_the_argument() {
        check_error(
            &format!("{HEAD}[tasks]\nend = 2\nargs = [\"1\", \"{{seed}}\"]\n"),
            (6, 14),
            "unknown placeholder `{seed}` in an argument; the only one is `{index}`",
        );
        let long = "x".repeat(TASK_ARG_BYTES_MAX - 1);
        check_error(
            &format!("{HEAD}[tasks]\nstart = 9\nend = 11\nargs = [\"{long}{{index}}\"]\n"),
            (7, 9),
            "argument of task 1 is 4097 bytes, above the limit of 4096",
        );
        let many = vec!["\"a\""; TASK_ARGS_MAX + 1].join(", ");
        check_error(
            &format!("{HEAD}[[task]]\nargs = [{many}]\n"),
            (5, 8),
            "257 arguments, above the limit of 256",
        );
    }

    #[test]
    fn stdin_mistakes_point_at_their_place() {
        check_error(
            &format!("{HEAD}[[task]]\nstdin = \"a\"\nstdin_file = \"input.txt\"\n"),
            (6, 14),
            "`stdin` and `stdin_file` are both set; give one",
        );
        check_error(
            &format!("{HEAD}[[task]]\n\n[[task]]\nstdin_file = \"absent.txt\"\n"),
            (7, 14),
            "failed to read stdin file",
        );
        let big = "x".repeat(TASK_STDIN_INLINE_BYTES_MAX + 1);
        check_error(
            &format!("{HEAD}[tasks]\nend = 1\nstdin = \"{big}\"\n"),
            (6, 9),
            "stdin is above the limit of 1048576 bytes",
        );
    }

    #[test]
    fn a_stdin_file_above_the_limit_is_refused() {
        let folder = Folder::new();
        folder.write("big.txt", &vec![b'x'; TASK_STDIN_INLINE_BYTES_MAX + 1]);
        let error = folder
            .parse(&format!("{HEAD}[[task]]\nstdin_file = \"big.txt\"\n"))
            .unwrap_err();
        assert_eq!(error.location(), Some((5, 14)));
        assert!(
            error.to_string().contains("stdin is above the limit"),
            "{error}"
        );
    }

    #[test]
    fn task_inputs_are_bounded_in_total() {
        let folder = Folder::new();
        let stdin = vec![b'x'; TASK_STDIN_INLINE_BYTES_MAX];
        folder.write("input.txt", &stdin);
        let error = folder
            .parse(&format!(
                "{HEAD}[tasks]\nend = 300\nstdin_file = \"input.txt\"\n"
            ))
            .unwrap_err();
        assert_eq!(error.location(), Some((4, 1)));
        // 256 tasks of 1 MiB plus their length prefixes pass 256 MiB at task 255.
        assert!(
            error
                .to_string()
                .ends_with("the task inputs add up to more than 268435456 bytes (at task 255)"),
            "{error}"
        );
    }

    #[test]
    fn the_module_must_exist_and_fit() {
        check_error(
            "price_per_million_fuel = 1\nbudget = 1\nmodule = \"absent.wasm\"\n[tasks]\nend = 1\n",
            (3, 10),
            "failed to read module",
        );
        let folder = Folder::new();
        folder.write("big.wasm", &vec![0; MODULE_BYTES_MAX + 1]);
        let error = folder
            .parse(
                "module = \"big.wasm\"\nprice_per_million_fuel = 1\nbudget = 1\n[tasks]\nend = 1\n",
            )
            .unwrap_err();
        assert_eq!(error.location(), Some((1, 10)));
        assert!(
            error
                .to_string()
                .contains("is above the limit of 8388608 bytes"),
            "{error}"
        );
    }

    #[test]
    fn a_missing_job_file_is_named() {
        let folder = Folder::new();
        let error = JobFile::load(&folder.dir.path().join("nope.toml")).unwrap_err();
        assert_eq!(error.location(), None);
        let shown = error.to_string();
        assert!(shown.starts_with("failed to read job file "), "{shown}");
        assert!(shown.contains("nope.toml"), "{shown}");
    }

    #[test]
    fn line_column_counts_characters_from_one() {
        let text = "ab\nπé=1\n";
        assert_eq!(line_column(text, 0), (1, 1));
        assert_eq!(line_column(text, 2), (1, 3));
        assert_eq!(line_column(text, 3), (2, 1));
        // `=` is after two two-byte characters.
        assert_eq!(line_column(text, 7), (2, 3));
        assert_eq!(line_column(text, 100), (3, 1));
    }

    #[test]
    fn the_pi_example_loads() {
        let path = Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../examples/pi/job.toml"
        ));
        let job = JobFile::load(path).unwrap();
        assert_eq!(job.tasks.len(), 1000);
        assert_eq!(args(&job.tasks[0]), ["20000", "0"]);
        assert_eq!(args(&job.tasks[999]), ["20000", "999"]);
        assert_eq!(job.verification, Verification::Adaptive);
        assert_eq!(job.price_per_million_fuel, 10);
        // Three replicas of every task at the fuel cap fit the budget.
        let worst_cost = 1000 * 3 * job.limits.fuel * job.price_per_million_fuel / 1_000_000;
        assert!(job.budget >= worst_cost, "{} < {worst_cost}", job.budget);
        assert!(!job.module.is_empty());
    }
}
