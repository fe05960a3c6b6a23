//! What a task produced, and the content id replicas compare.

use std::path::Path;

use borsh::BorshSerialize;
use idlegrid_types::{ContentId, codec};

use crate::error::{ErrorKind, TaskError};
use crate::limits::OUTPUT_ENTRIES_MAX;

/// A file a task left in its output directory.
#[derive(Debug, Clone, PartialEq, Eq, BorshSerialize)]
pub struct OutputFile {
    /// Relative to the output directory, `/`-separated.
    pub path: String,
    pub bytes: Vec<u8>,
}

/// Everything a completed task produced.
#[derive(Debug, Clone, PartialEq, Eq, BorshSerialize)]
pub struct TaskOutput {
    pub stdout: Vec<u8>,
    /// `None` when the task had no output directory; otherwise its files,
    /// sorted by path.
    pub files: Option<Vec<OutputFile>>,
}

/// Version tag of the output bundle encoding hashed for tasks with files.
const OUTPUT_BUNDLE_VERSION: u8 = 1;

impl TaskOutput {
    /// The id replicas compare. For a task without an output directory it is
    /// simply the BLAKE3 of stdout, so `b3sum` of the bytes gives the same
    /// answer; with an output directory it is the BLAKE3 of the canonical
    /// encoding of (version, stdout, files sorted by path).
    pub fn content_id(&self) -> ContentId {
        match &self.files {
            None => ContentId::of(&self.stdout),
            Some(_) => {
                let encoded = codec::encode(&(OUTPUT_BUNDLE_VERSION, self))
                    .expect("encoding bytes and strings into a Vec cannot fail");
                ContentId::of(&encoded)
            }
        }
    }

    pub fn total_bytes(&self) -> u64 {
        let files = self.files.iter().flatten();
        self.stdout.len() as u64 + files.map(|file| file.bytes.len() as u64).sum::<u64>()
    }
}

/// Reads the output directory a task wrote, refusing anything but plain files
/// and directories and stopping at `bytes_max`, judged from metadata before
/// any file is read (a sparse file cannot make us read a terabyte).
pub(crate) fn collect_files(root: &Path, bytes_max: u64) -> Result<Vec<OutputFile>, TaskError> {
    let mut files = Vec::new();
    let mut bytes_total = 0u64;
    let mut pending = vec![(root.to_path_buf(), String::new())];
    let mut entries = 0u32;
    while let Some((dir, prefix)) = pending.pop() {
        let listing = std::fs::read_dir(&dir).map_err(|error| io_failure(&dir, error))?;
        for entry in listing {
            let entry = entry.map_err(|error| io_failure(&dir, error))?;
            entries += 1;
            if entries > OUTPUT_ENTRIES_MAX {
                return Err(TaskError::new(
                    ErrorKind::OutputLimit,
                    format!("the output directory holds more than {OUTPUT_ENTRIES_MAX} entries"),
                ));
            }
            let name = entry.file_name().into_string().map_err(|name| {
                TaskError::new(
                    ErrorKind::Trap,
                    format!("output file name {name:?} is not UTF-8"),
                )
            })?;
            let path = if prefix.is_empty() {
                name
            } else {
                format!("{prefix}/{name}")
            };
            let file_type = entry.file_type().map_err(|error| io_failure(&dir, error))?;
            if file_type.is_dir() {
                pending.push((entry.path(), path));
            } else if file_type.is_file() {
                let metadata = entry.metadata().map_err(|error| io_failure(&dir, error))?;
                bytes_total = bytes_total.saturating_add(metadata.len());
                if bytes_total > bytes_max {
                    return Err(TaskError::new(
                        ErrorKind::OutputLimit,
                        format!("the output files total more than {bytes_max} bytes"),
                    ));
                }
                let bytes = std::fs::read(entry.path())
                    .map_err(|error| io_failure(&entry.path(), error))?;
                files.push(OutputFile { path, bytes });
            } else {
                return Err(TaskError::new(
                    ErrorKind::Trap,
                    format!("output entry `{path}` is neither a file nor a directory"),
                ));
            }
        }
    }
    files.sort_by(|left, right| left.path.cmp(&right.path));
    Ok(files)
}

fn io_failure(path: &Path, error: std::io::Error) -> TaskError {
    TaskError::new(
        ErrorKind::Trap,
        format!("failed to read output {}: {error}", path.display()),
    )
}
