//! A job's input files as its tasks are expanded: each path (or object
//! URL, downloaded) read and hashed once, each task's files attached to its
//! input within the bounds on a task's and on the job's input bytes.

use std::collections::{HashMap, HashSet};
use std::io;
use std::ops::Range;
use std::path::{Path, PathBuf};

use idlegrid_types::blob_tree::Verifier;
use idlegrid_types::codec::Bounded;
use idlegrid_types::work::{TASK_FILE_NAME_BYTES_MAX, TASK_FILES_MAX};
use idlegrid_types::{ContentId, InputFile, TaskInput};
use toml::Spanned;

use super::{
    INPUT_FILE_BYTES_MAX, JOB_INPUT_BYTES_DEFAULT, JOB_INPUT_BYTES_MAX, JobFileError,
    JobFileProblem, JobInputFile, RawFiles, RawLimits, Reporter, TASK_INPUT_BYTES_DEFAULT,
    TASK_INPUT_BYTES_MAX,
};
use crate::remote::{self, Storage};

/// The input files of a job as its tasks are expanded: each path read
/// (and hashed) once, the bounds on a task's and on the job's input kept.
pub(super) struct Files<'a> {
    report: &'a Reporter<'a>,
    folder: &'a Path,
    /// Every task's files (`[files]`).
    shared: Vec<InputFile>,
    /// By path: what each file read so far is.
    read: HashMap<PathBuf, (ContentId, u64)>,
    /// Each content id once.
    pub(super) distinct: Vec<JobInputFile>,
    seen: HashSet<ContentId>,
    /// Distinct files' bytes and every task's inline input, so far.
    job_bytes: u64,
    task_max: u64,
    job_max: u64,
    /// Where files named by URL go, when they are read here.
    pub(super) remote: Option<Remote>,
}

/// Downloads of input files named by URL.
pub(super) struct Remote {
    pub(super) root: PathBuf,
    pub(super) storage: Storage,
    /// Made at the first download.
    pub(super) dir: Option<tempfile::TempDir>,
}

impl Remote {
    fn download(&mut self, url: &str) -> Result<PathBuf, String> {
        if self.dir.is_none() {
            std::fs::create_dir_all(&self.root)
                .map_err(|error| format!("failed to create {}: {error}", self.root.display()))?;
            let dir = tempfile::Builder::new()
                .prefix("job-")
                .tempdir_in(&self.root)
                .map_err(|error| {
                    format!(
                        "failed to create a folder in {}: {error}",
                        self.root.display()
                    )
                })?;
            self.dir = Some(dir);
        }
        let dir = self
            .dir
            .as_ref()
            .map(|dir| dir.path().to_path_buf())
            .unwrap_or_default();
        remote::download(url, &self.storage, &dir, INPUT_FILE_BYTES_MAX)
    }
}

/// Where input files named by URL are downloaded: the user's cache folder.
pub(super) fn download_root() -> PathBuf {
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cache")))
        .unwrap_or_else(std::env::temp_dir);
    cache.join("idlegrid").join("inputs")
}

impl<'a> Files<'a> {
    pub(super) fn new(
        report: &'a Reporter<'a>,
        folder: &'a Path,
        limits: Option<&RawLimits>,
        shared: Option<&Spanned<RawFiles>>,
        remote: Option<Remote>,
    ) -> Result<Self, JobFileError> {
        let task_max = report.optional(
            "task_input_bytes",
            limits.and_then(|raw| raw.task_input_bytes.as_ref()),
            TASK_INPUT_BYTES_DEFAULT,
            1..=TASK_INPUT_BYTES_MAX,
        )?;
        let job_max = report.optional(
            "job_input_bytes",
            limits.and_then(|raw| raw.job_input_bytes.as_ref()),
            JOB_INPUT_BYTES_DEFAULT,
            1..=JOB_INPUT_BYTES_MAX,
        )?;
        let mut files = Self {
            report,
            folder,
            shared: Vec::new(),
            read: HashMap::new(),
            distinct: Vec::new(),
            seen: HashSet::new(),
            job_bytes: 0,
            task_max,
            job_max,
            remote,
        };
        if let Some(shared) = shared {
            for (name, path) in shared.get_ref() {
                let file = files.file(0, name, path, path.get_ref())?;
                files.shared.push(file);
            }
        }
        Ok(files)
    }

    /// The file at `path` (relative to the job file) shown as `name`.
    pub(super) fn file(
        &mut self,
        task: u64,
        name: &str,
        at: &Spanned<String>,
        path: &str,
    ) -> Result<InputFile, JobFileError> {
        let report = self.report;
        let name = file_name(report, name, at)?;
        let url = remote::is_url(path).then(|| path.to_owned());
        // A URL is its own key: each object is downloaded once.
        let key = match &url {
            Some(url) => PathBuf::from(url),
            None => self.folder.join(path),
        };
        let (cid, bytes) = match self.read.get(&key) {
            Some(known) => *known,
            None => {
                let path = match &url {
                    None => key.clone(),
                    Some(url) => match &mut self.remote {
                        Some(remote) => remote
                            .download(url)
                            .map_err(|why| report.at(at.span(), JobFileProblem::Download(why)))?,
                        None => {
                            return Err(report
                                .at(at.span(), JobFileProblem::UrlNotHere { url: url.clone() }));
                        }
                    },
                };
                let read = std::fs::File::open(&path).and_then(|file| {
                    let bytes = file.metadata()?.len();
                    if bytes > INPUT_FILE_BYTES_MAX {
                        return Ok(Err(bytes));
                    }
                    Verifier::read(io::BufReader::new(file), |_| Ok(())).map(Ok)
                });
                let tree = match read {
                    Ok(Ok(tree)) => tree,
                    Ok(Err(bytes)) => {
                        return Err(report.at(
                            at.span(),
                            JobFileProblem::FileTooLarge {
                                path,
                                bytes,
                                max: INPUT_FILE_BYTES_MAX,
                            },
                        ));
                    }
                    Err(source) => {
                        return Err(report.at(at.span(), JobFileProblem::FileRead { path, source }));
                    }
                };
                let known = (tree.cid(), tree.len());
                self.read.insert(key, known);
                let tree = std::sync::Arc::new(tree);
                if self.seen.insert(known.0) {
                    self.job_bytes = self.job_bytes.saturating_add(known.1);
                    if self.job_bytes > self.job_max {
                        return Err(report.at(
                            at.span(),
                            JobFileProblem::JobInputTooLarge {
                                task,
                                max: self.job_max,
                            },
                        ));
                    }
                    self.distinct.push(JobInputFile {
                        cid: known.0,
                        bytes: known.1,
                        path,
                        tree,
                    });
                }
                known
            }
        };
        Ok(InputFile { name, cid, bytes })
    }

    /// The files every task sees (`[files]`).
    pub(super) fn shared(&self) -> &[InputFile] {
        &self.shared
    }

    /// Refuses a task whose own files, named `own`, share a name with a
    /// file of every task or are too many with them.
    pub(super) fn check_names(
        &self,
        task: u64,
        span: Range<usize>,
        own: &[&str],
    ) -> Result<(), JobFileError> {
        let report = self.report;
        if let Some(twice) = own.iter().find(|name| {
            self.shared
                .iter()
                .any(|shared| shared.name.as_str() == **name)
        }) {
            return Err(report.at(
                span,
                JobFileProblem::FileTwice {
                    name: (*twice).to_owned(),
                    task,
                },
            ));
        }
        let count = own.len() + self.shared.len();
        if count > TASK_FILES_MAX {
            return Err(report.at(
                span,
                JobFileProblem::TooManyFiles {
                    count,
                    max: TASK_FILES_MAX,
                },
            ));
        }
        Ok(())
    }

    /// Refuses a task whose stdin and files add up to more than
    /// `task_input_bytes`.
    pub(super) fn check_task_bytes(
        &self,
        task: u64,
        span: Range<usize>,
        bytes: u64,
    ) -> Result<(), JobFileError> {
        if bytes > self.task_max {
            return Err(self.report.at(
                span,
                JobFileProblem::TaskInputTooLarge {
                    task,
                    bytes,
                    max: self.task_max,
                },
            ));
        }
        Ok(())
    }

    /// `input` with the shared files and `own`, within the bounds.
    pub(super) fn attach(
        &mut self,
        task: u64,
        span: Range<usize>,
        input: TaskInput,
        own: Vec<InputFile>,
    ) -> Result<TaskInput, JobFileError> {
        let names: Vec<&str> = own.iter().map(|file| file.name.as_str()).collect();
        self.check_names(task, span.clone(), &names)?;
        let mut all = self.shared.clone();
        all.extend(own);
        let input = input.with_files(all).map_err(|source| {
            self.report
                .at(span.clone(), JobFileProblem::TaskInput { task, source })
        })?;
        let bytes = (input.stdin.len() as u64).saturating_add(input.file_bytes());
        self.check_task_bytes(task, span, bytes)?;
        Ok(input)
    }
}

/// `name` as an input file's name, when it can be one.
pub(super) fn file_name(
    report: &Reporter<'_>,
    name: &str,
    at: &Spanned<String>,
) -> Result<Bounded<String, TASK_FILE_NAME_BYTES_MAX>, JobFileError> {
    InputFile::check_name(name)
        .map_err(|why| report.at(at.span(), JobFileProblem::FileName(why)))?;
    Bounded::new(name.to_owned())
        .map_err(|_| report.at(at.span(), JobFileProblem::FileName(name.to_owned())))
}
