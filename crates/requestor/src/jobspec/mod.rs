//! Job files (`job.toml`): what a requestor asks the network to run.
//!
//! A job file names a WebAssembly module, the tasks to run it on (a range
//! of indices or the lines of a manifest, expanded through templates, or
//! explicit `[[task]]` entries), the limits every task runs under, the
//! price, the verification policy, the budget and the deadline.
//! [`JobFile::load`] reads one, checks every bound, makes every task once
//! (to check it and hash it into the job's spec, without keeping it: see
//! `tasks.rs`) and reads the files it names; every mistake tied to a place
//! in the file is reported as `FILE:LINE:COLUMN: message`. The format is
//! documented in `docs/job-spec.md`.

use std::collections::BTreeMap;
use std::fmt;
use std::io::{self, Read};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;

mod error;
mod files;
mod gpu;
mod tasks;

pub use error::{JobFileError, JobFileProblem, LineProblem, TaskError, line_column};
use tasks::{TaskIds, TaskSource};

use files::{Files, Remote, download_root};
pub use gpu::FUEL_PER_INVOCATION_DEFAULT;

use idlegrid_market::Trust;
use idlegrid_net::{CONTENT_BYTES_MAX, OUTPUT_INLINE_BYTES_MAX};

use crate::remote::{OutputTarget, Storage};
use idlegrid_sandbox::limits::{
    FUEL_DEFAULT, MEMORY_BYTES_CEILING_DEFAULT, MEMORY_BYTES_DEFAULT,
    OUTPUT_BYTES_DEFAULT as SANDBOX_OUTPUT_BYTES_DEFAULT,
};
use idlegrid_types::blob_tree::Verifier;
use idlegrid_types::work::{TASK_ARG_BYTES_MAX, TASK_ARGS_MAX};
use idlegrid_types::{ContentId, ExecutionLimits, TaskInput, codec};
use serde::Deserialize;
use toml::Spanned;

/// Largest job file read, bytes.
pub const JOB_FILE_BYTES_MAX: usize = 64 << 20;
/// Largest module a job may name, bytes: it travels to every provider.
pub const MODULE_BYTES_MAX: usize = 8 << 20;
/// Most tasks in one job. A range or a manifest holds almost nothing per
/// task; `[[task]]` entries are bounded first by the job file's size.
pub const TASKS_MAX: u64 = 100_000_000;
/// Largest stdin one task carries, bytes: inputs travel inline on the network.
pub const TASK_STDIN_INLINE_BYTES_MAX: usize = 1 << 20;
/// Most bytes of `[[task]]` inputs (their arguments and stdin encoded,
/// added up) in one job: they are held in memory as written.
pub const TASK_INPUTS_TOTAL_BYTES_MAX: u64 = 256 << 20;
/// Most bytes of task inputs a range or a manifest makes (their canonical
/// encodings added up): none is kept, but each is made and hashed as the
/// job loads, which this bounds to about a minute, and each is sent to a
/// provider inline with its task.
pub const TASK_INPUTS_GENERATED_BYTES_MAX: u64 = 64 << 30;
/// Largest manifest (`[tasks] manifest`), bytes.
pub const MANIFEST_BYTES_MAX: u64 = 16 << 30;
/// Largest input file, bytes: the most a provider fetches by id (holding
/// its tree, 32 bytes a 64 KiB group).
pub const INPUT_FILE_BYTES_MAX: u64 = CONTENT_BYTES_MAX;
/// Default bound on one task's input (its stdin and its files), bytes.
pub const TASK_INPUT_BYTES_DEFAULT: u64 = 4 << 30;
/// Largest `task_input_bytes`.
pub const TASK_INPUT_BYTES_MAX: u64 = 64 << 30;
/// Default bound on a job's input (every distinct file and every task's
/// inline input), bytes.
pub const JOB_INPUT_BYTES_DEFAULT: u64 = 64 << 30;
/// Largest `job_input_bytes`.
pub const JOB_INPUT_BYTES_MAX: u64 = 16 << 40;
/// Most fuel one task may be given.
pub const FUEL_MAX: u64 = 10_000_000_000_000;
/// Most linear memory one task may be given, MiB: the sandbox's ceiling.
pub const MEMORY_MIB_MAX: u64 = MEMORY_BYTES_CEILING_DEFAULT >> 20;
/// Default linear memory of a task, MiB.
pub const MEMORY_MIB_DEFAULT: u64 = MEMORY_BYTES_DEFAULT >> 20;
/// Most output one task may produce, bytes: a provider holds a task's
/// stdout in memory as it is written (an output over
/// [`OUTPUT_INLINE_BYTES_MAX`] then stays with the providers that made it
/// until the requestor fetches it by id).
pub const OUTPUT_BYTES_MAX: u64 = 2 << 30;
/// Default output bound of a task, bytes: the sandbox's default, capped at
/// what a result carries inline.
pub const OUTPUT_BYTES_DEFAULT: u64 =
    if SANDBOX_OUTPUT_BYTES_DEFAULT < OUTPUT_INLINE_BYTES_MAX as u64 {
        SANDBOX_OUTPUT_BYTES_DEFAULT
    } else {
        OUTPUT_INLINE_BYTES_MAX as u64
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
/// The largest `trust_after` and `check_halving`, in results.
pub const TRUST_KNOB_MAX: u32 = 1_000_000;
/// The placeholder a template replaces with the task's index.
pub const INDEX_PLACEHOLDER: &str = "index";
/// The placeholder a manifest's templates replace with the task's line.
pub const LINE_PLACEHOLDER: &str = "line";
/// The placeholder a `dir` job's templates replace with the task's file
/// name.
pub const FILE_PLACEHOLDER: &str = "file";

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

/// A loaded job file: everything `idlegrid submit` needs, checked. Its tasks
/// are made when asked for ([`JobFile::task`]); cloning it is cheap.
///
/// The job's spec ([`JobFile::spec_cid`]) was hashed from the module and
/// the tasks as they were loaded; the terms (limits, price, verification,
/// budget, deadline, wall time) are read from the fields when it is asked
/// for.
#[derive(Clone, PartialEq, Eq)]
pub struct JobFile {
    /// The job file.
    pub path: PathBuf,
    /// The module (or the GPU kernel), resolved against the job file's
    /// folder.
    pub module_path: PathBuf,
    /// The module's bytes (at most [`MODULE_BYTES_MAX`]): WebAssembly, or
    /// an encoded GPU program.
    pub module: Vec<u8>,
    /// `ContentId::of(&module)`.
    pub module_cid: ContentId,
    /// Where each task's input comes from; a task's index is its position.
    source: TaskSource,
    /// The Borsh encoding of the spec hashed through the module's id and
    /// every task's: the terms follow.
    spec_through_tasks: SpecThroughTasks,
    /// The most bytes of input files one task reads.
    input_bytes_max: u64,
    /// Every distinct file the tasks read, by content id, and where it is
    /// here: the requestor serves them to providers.
    pub files: Vec<JobInputFile>,
    /// What each task may consume; every replica runs with the same.
    pub limits: ExecutionLimits,
    /// The provider-side wall-clock backstop per task, seconds.
    pub wall_time_secs: u64,
    /// Tokens per million units of fuel a task uses.
    pub price_per_million_fuel: u64,
    pub verification: Verification,
    /// Under the adaptive policy, when a provider's word alone is taken:
    /// this requestor's own choice, not part of the job's spec.
    pub trust: Trust,
    /// The most the job may pay; escrowed when the job opens.
    pub budget: u64,
    /// Blocks after opening during which providers may redeem.
    pub deadline_blocks: u64,
    /// Where objects named by URL live (`[storage]`).
    pub storage: Storage,
    /// Where verified outputs are also written (`[output] url`).
    pub output_url: Option<String>,
    /// Every output goes into one file, `outputs.bin`, rather than a file
    /// per task (`[output] packed`): a job of millions of tasks.
    pub output_packed: bool,
    /// The folder input files named by URL were downloaded to; deleted
    /// with the last copy of the job file.
    pub downloads: Downloads,
}

/// Input files downloaded for a job, deleted when no copy of the job file
/// holds them any more. Equal whatever they hold: what a job's files are is
/// their content ids.
#[derive(Debug, Clone, Default)]
pub struct Downloads(Option<Arc<tempfile::TempDir>>);

impl Downloads {
    /// The folder, if anything was downloaded.
    pub fn dir(&self) -> Option<&Path> {
        self.0.as_deref().map(tempfile::TempDir::path)
    }
}

impl PartialEq for Downloads {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl Eq for Downloads {}

impl fmt::Debug for JobFile {
    // The module and the task inputs can be hundreds of MiB; show their sizes.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JobFile")
            .field("path", &self.path)
            .field("module_path", &self.module_path)
            .field("module", &format_args!("{} bytes", self.module.len()))
            .field("module_cid", &self.module_cid)
            .field("tasks", &format_args!("{} tasks", self.task_count()))
            .field("files", &format_args!("{} files", self.files.len()))
            .field("limits", &self.limits)
            .field("wall_time_secs", &self.wall_time_secs)
            .field("price_per_million_fuel", &self.price_per_million_fuel)
            .field("verification", &self.verification)
            .field("trust", &self.trust)
            .field("budget", &self.budget)
            .field("deadline_blocks", &self.deadline_blocks)
            .finish()
    }
}

/// A spec hashed through its tasks' ids. Equal when the same bytes were
/// hashed.
#[derive(Clone)]
struct SpecThroughTasks(Arc<blake3::Hasher>);

impl PartialEq for SpecThroughTasks {
    fn eq(&self, other: &Self) -> bool {
        self.0.finalize() == other.0.finalize()
    }
}

impl Eq for SpecThroughTasks {}

/// A file the job's tasks read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobInputFile {
    pub cid: ContentId,
    pub bytes: u64,
    pub path: PathBuf,
    /// Its tree, made as it was read: each chunk served is checked against
    /// it, so a file changed since is refused, not served.
    pub tree: Arc<Verifier>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawJob {
    module: Option<Spanned<String>>,
    gpu: Option<Spanned<gpu::RawGpu>>,
    price_per_million_fuel: Spanned<u64>,
    budget: Spanned<u64>,
    deadline_blocks: Option<Spanned<u64>>,
    limits: Option<RawLimits>,
    verification: Option<RawVerification>,
    tasks: Option<Spanned<RawRange>>,
    task: Option<Spanned<Vec<Spanned<RawTask>>>>,
    files: Option<Spanned<RawFiles>>,
    storage: Option<RawStorage>,
    output: Option<RawOutput>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStorage {
    endpoint: Option<String>,
    region: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawOutput {
    url: Option<Spanned<String>>,
    packed: Option<bool>,
}

/// Input files by name at `/input`: paths relative to the job file.
type RawFiles = BTreeMap<String, Spanned<String>>;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLimits {
    fuel: Option<Spanned<u64>>,
    memory_mib: Option<Spanned<u64>>,
    output_bytes: Option<Spanned<u64>>,
    wall_time_secs: Option<Spanned<u64>>,
    task_input_bytes: Option<Spanned<u64>>,
    job_input_bytes: Option<Spanned<u64>>,
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
    trust_after: Option<Spanned<u64>>,
    check_halving: Option<Spanned<u64>>,
    check_floor_permille: Option<Spanned<u64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRange {
    start: Option<Spanned<u64>>,
    end: Option<Spanned<u64>>,
    manifest: Option<Spanned<String>>,
    dir: Option<Spanned<String>>,
    args: Option<Spanned<Vec<Spanned<String>>>>,
    stdin: Option<Spanned<String>>,
    stdin_file: Option<Spanned<String>>,
    files: Option<Spanned<RawFiles>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTask {
    args: Option<Spanned<Vec<Spanned<String>>>>,
    stdin: Option<Spanned<String>>,
    stdin_file: Option<Spanned<String>>,
    files: Option<Spanned<RawFiles>>,
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

/// The length of `TaskInput`'s canonical encoding without its files: a
/// `u32` length before the argument list, each argument and the stdin.
fn encoded_len(args: &[String], stdin: &[u8]) -> u64 {
    let prefix = 4u64;
    let args_len: u64 = args.iter().map(|arg| prefix + arg.len() as u64).sum();
    prefix + args_len + prefix + stdin.len() as u64
}

impl JobFile {
    /// Reads and checks the job file at `path`; input files named by URL
    /// are downloaded (see [`crate::remote`]) under the user's cache
    /// folder.
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
        Self::parse_downloading(&text, path, Some(&download_root()))
    }

    /// Checks the job file `text`; `path` names it in messages, and relative
    /// paths in it (the module, stdin files) resolve against its folder.
    /// Input files named by URL are refused here ([`JobFile::load`] reads
    /// them).
    pub fn parse(text: &str, path: &Path) -> Result<JobFile, JobFileError> {
        Self::parse_downloading(text, path, None)
    }

    /// [`JobFile::parse`], downloading input files named by URL into a new
    /// folder under `download_root` (refusing them without one).
    pub fn parse_downloading(
        text: &str,
        path: &Path,
        download_root: Option<&Path>,
    ) -> Result<JobFile, JobFileError> {
        Self::parse_bounded(text, path, download_root, TASK_INPUTS_GENERATED_BYTES_MAX)
    }

    /// [`JobFile::parse_downloading`], a range's or manifest's inputs
    /// bounded by `generated_bytes_max`.
    fn parse_bounded(
        text: &str,
        path: &Path,
        download_root: Option<&Path>,
        generated_bytes_max: u64,
    ) -> Result<JobFile, JobFileError> {
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
        let trust = Self::trust(&report, raw.verification.as_ref(), verification)?;

        let (module_path, module) = match (&raw.module, &raw.gpu) {
            (Some(module), None) => Self::module(&report, folder, module)?,
            (None, Some(program)) => gpu::program(&report, folder, program.get_ref(), &limits)?,
            (Some(_), Some(program)) => {
                return Err(report.at(program.span(), JobFileProblem::ModuleOrGpu));
            }
            (None, None) => return Err(report.at(0..0, JobFileProblem::ModuleOrGpu)),
        };

        let storage = Storage {
            endpoint: raw.storage.as_ref().and_then(|raw| raw.endpoint.clone()),
            region: raw.storage.as_ref().and_then(|raw| raw.region.clone()),
        };
        let output_url = match raw.output.as_ref().and_then(|output| output.url.as_ref()) {
            Some(url) => {
                // Checked now, so a job never runs to find it cannot write.
                OutputTarget::check(url.get_ref(), &storage)
                    .map_err(|why| report.at(url.span(), JobFileProblem::Output(why)))?;
                Some(url.get_ref().clone())
            }
            None => None,
        };
        let output_packed = raw
            .output
            .as_ref()
            .and_then(|output| output.packed)
            .unwrap_or(false);
        let remote = download_root.map(|root| Remote {
            root: root.to_path_buf(),
            storage: storage.clone(),
            dir: None,
        });
        let mut files = Files::new(
            &report,
            folder,
            raw.limits.as_ref(),
            raw.files.as_ref(),
            remote,
        )?;
        let module_cid = ContentId::of(&module);
        let (source, ids) = match (&raw.tasks, &raw.task) {
            (Some(range), Some(explicit)) => {
                // Point at whichever form comes second: the one that conflicts.
                let span = if range.span().start > explicit.span().start {
                    range.span()
                } else {
                    explicit.span()
                };
                return Err(report.at(span, JobFileProblem::BothTaskForms));
            }
            (Some(range), None) => tasks::generate(
                &report,
                folder,
                range,
                &mut files,
                module_cid,
                generated_bytes_max,
            )?,
            (None, Some(explicit)) => {
                Self::explicit_tasks(&report, folder, explicit, &mut files, module_cid)?
            }
            (None, None) => {
                return Err(report.at(0..0, JobFileProblem::NoTasks));
            }
        };

        if raw.gpu.is_some() && !files.distinct.is_empty() {
            let span = raw.files.as_ref().map_or(0..0, Spanned::span);
            return Err(report.at(span, JobFileProblem::FilesWithGpu));
        }
        let (spec_through_tasks, input_bytes_max) = ids.finish();
        Ok(JobFile {
            path: path.to_path_buf(),
            module_path,
            module_cid,
            module,
            source,
            spec_through_tasks: SpecThroughTasks(Arc::new(spec_through_tasks)),
            input_bytes_max,
            downloads: Downloads(files.remote.and_then(|remote| remote.dir).map(Arc::new)),
            files: files.distinct,
            storage,
            output_url,
            output_packed,
            limits,
            wall_time_secs,
            price_per_million_fuel,
            verification,
            trust,
            budget,
            deadline_blocks,
        })
    }

    /// The canonical description whose content id goes on the ledger as the
    /// job's `spec`: the Borsh encoding of (module cid, each task input's
    /// content id in order, limits, price, verification as (tag, replicas),
    /// budget, deadline_blocks, wall_time_secs). The part through the
    /// tasks' ids was hashed as the job loaded; only the terms are hashed
    /// here (Borsh encodes a tuple as its fields one after another).
    pub fn spec_cid(&self) -> ContentId {
        let terms = (
            self.limits,
            self.price_per_million_fuel,
            self.verification.canonical(),
            self.budget,
            self.deadline_blocks,
            self.wall_time_secs,
        );
        let bytes = codec::encode(&terms).expect("fixed-size terms encode into memory");
        let mut spec = (*self.spec_through_tasks.0).clone();
        spec.update(&bytes);
        ContentId::from_bytes(*spec.finalize().as_bytes())
    }

    /// How many tasks the job has.
    pub fn task_count(&self) -> u64 {
        self.source.count()
    }

    /// Task `index`'s input, made now. `None` past the last task, or when
    /// a manifest no longer reads as it did at load: then
    /// [`JobFile::task_failure`] says why, and the job should not go on.
    pub fn task(&self, index: u64) -> Option<TaskInput> {
        self.try_task(index)
            .map_err(|error| self.source.record(error))
            .ok()
    }

    /// Task `index`'s input, made now, or why it cannot be.
    pub fn try_task(&self, index: u64) -> Result<TaskInput, TaskError> {
        self.source.task(index)
    }

    /// Every task's input in order (a manifest read once). Ends early, like
    /// [`JobFile::task`], at a task that cannot be made.
    pub fn tasks(&self) -> impl Iterator<Item = TaskInput> + '_ {
        self.source.iter()
    }

    /// The first task that could not be made since the job loaded (its
    /// manifest changed, or could not be read): the run stops on it.
    pub fn task_failure(&self) -> Option<&TaskError> {
        self.source.failure()
    }

    /// The most bytes of input files one task reads.
    pub fn input_bytes_max(&self) -> u64 {
        self.input_bytes_max
    }

    /// The input file of this job whose id is `cid`.
    pub fn input_file(&self, cid: &ContentId) -> Option<&JobInputFile> {
        self.files.iter().find(|file| file.cid == *cid)
    }

    /// The `OpenJob` that escrows this job's budget with its deadline at
    /// `deadline_height`, run by `agent` when the requestor names one.
    pub fn open_job_terms(
        &self,
        deadline_height: u64,
        agent: Option<idlegrid_types::AccountId>,
    ) -> idlegrid_ledger::OpenJob {
        idlegrid_ledger::OpenJob {
            module: self.module_cid,
            spec: self.spec_cid(),
            escrow: self.budget,
            price_per_million_fuel: self.price_per_million_fuel,
            deadline_height,
            limits: self.limits,
            agent,
        }
    }

    /// The WebAssembly module the job names, and its bytes.
    fn module(
        report: &Reporter<'_>,
        folder: &Path,
        module: &Spanned<String>,
    ) -> Result<(PathBuf, Vec<u8>), JobFileError> {
        let module_path = folder.join(module.get_ref());
        let bytes = read_bounded(&module_path, MODULE_BYTES_MAX)
            .map_err(|source| {
                report.at(
                    module.span(),
                    JobFileProblem::ModuleRead {
                        path: module_path.clone(),
                        source,
                    },
                )
            })?
            .ok_or_else(|| {
                report.at(
                    module.span(),
                    JobFileProblem::ModuleTooLarge {
                        path: module_path.clone(),
                        max: MODULE_BYTES_MAX,
                    },
                )
            })?;
        Ok((module_path, bytes))
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

    /// The adaptive policy's knobs, each defaulting to the market's.
    fn trust(
        report: &Reporter<'_>,
        raw: Option<&RawVerification>,
        verification: Verification,
    ) -> Result<Trust, JobFileError> {
        let default = Trust::default();
        let Some(raw) = raw else {
            return Ok(default);
        };
        let knobs = [
            ("trust_after", &raw.trust_after),
            ("check_halving", &raw.check_halving),
            ("check_floor_permille", &raw.check_floor_permille),
        ];
        if let Verification::Replicas(_) = verification
            && let Some((field, Some(value))) = knobs.iter().find(|(_, value)| value.is_some())
        {
            return Err(report.at(value.span(), JobFileProblem::TrustWithReplicas { field }));
        }
        let knob = |field, value: &Option<Spanned<u64>>, default: u32, max: u32| {
            report
                .optional(
                    field,
                    value.as_ref(),
                    u64::from(default),
                    0..=u64::from(max),
                )
                // In range, so it fits a u32.
                .map(|value| u32::try_from(value).unwrap_or(max))
        };
        Ok(Trust {
            after: knob(
                "trust_after",
                &raw.trust_after,
                default.after,
                TRUST_KNOB_MAX,
            )?,
            halving: knob(
                "check_halving",
                &raw.check_halving,
                default.halving,
                TRUST_KNOB_MAX,
            )?,
            floor_permille: knob(
                "check_floor_permille",
                &raw.check_floor_permille,
                default.floor_permille,
                1_000,
            )?,
        })
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

    fn explicit_tasks(
        report: &Reporter<'_>,
        folder: &Path,
        explicit: &Spanned<Vec<Spanned<RawTask>>>,
        files: &mut Files<'_>,
        module_cid: ContentId,
    ) -> Result<(TaskSource, TaskIds), JobFileError> {
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
            let own = raw
                .files
                .as_ref()
                .map(|named| {
                    named
                        .get_ref()
                        .iter()
                        .map(|(name, path)| files.file(position, name, path, path.get_ref()))
                        .collect::<Result<Vec<_>, _>>()
                })
                .transpose()?
                .unwrap_or_default();
            let input = Self::task_input(position, args, stdin)
                .map_err(|problem| report.at(entry.span(), problem))?;
            tasks.push(files.attach(position, entry.span(), input, own)?);
        }
        let mut ids = TaskIds::new(module_cid, count);
        for task in &tasks {
            ids.push(task.content_id(), task.file_bytes());
        }
        Ok((TaskSource::List(tasks.into()), ids))
    }
}

#[cfg(test)]
mod tests;
