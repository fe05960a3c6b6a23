//! A job's tasks, each made when it is asked for. A `[tasks]` range or
//! manifest keeps its templates, a manifest the offset of every 64th line,
//! and a file template that varies by task each task's file ids; nothing
//! else is kept per task. `[[task]]` entries are kept as written.
//!
//! Loading makes every task once, in order: its bounds are checked and its
//! content id goes into the job's spec, so a task of a loaded job can
//! always be made again, unless its manifest changed since; that is found
//! (each block of lines read is checked against what was read at load) and
//! reported, never turned into another task.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read, Write as _};
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use idlegrid_types::codec::Bounded;
use idlegrid_types::work::{TASK_ARG_BYTES_MAX, TASK_FILE_NAME_BYTES_MAX};
use idlegrid_types::{ContentId, InputFile, TaskInput};
use toml::Spanned;

use super::files::{Files, file_name};
use super::{
    FILE_PLACEHOLDER, INDEX_PLACEHOLDER, JobFile, JobFileError, JobFileProblem, LINE_PLACEHOLDER,
    LineProblem, MANIFEST_BYTES_MAX, RawRange, Reporter, TASKS_MAX, TaskError,
};

/// Lines of a manifest from one kept offset to the next: making a task
/// reads (and checks) at most this many lines.
const MANIFEST_BLOCK_LINES: u64 = 64;

/// Bytes of a manifest read at a time while it is indexed.
const MANIFEST_READ_BYTES: usize = 1 << 16;

// A spec's task count is written as Borsh's u32 sequence length.
const _: () = assert!(TASKS_MAX <= u32::MAX as u64);

/// Where a job's tasks come from.
#[derive(Clone, PartialEq, Eq)]
pub(super) enum TaskSource {
    /// A `[tasks]` range or manifest: each task made from templates.
    Generated(Arc<Generated>),
    /// `[[task]]` entries, as written.
    List(Arc<[TaskInput]>),
}

impl TaskSource {
    pub(super) fn count(&self) -> u64 {
        match self {
            TaskSource::Generated(generated) => generated.count,
            TaskSource::List(list) => list.len() as u64,
        }
    }

    /// Task `index`.
    pub(super) fn task(&self, index: u64) -> Result<TaskInput, TaskError> {
        let count = self.count();
        if index >= count {
            return Err(TaskError::NoSuchTask { index, count });
        }
        match self {
            TaskSource::Generated(generated) => generated.task(index),
            TaskSource::List(list) => usize::try_from(index)
                .ok()
                .and_then(|at| list.get(at))
                .cloned()
                .ok_or(TaskError::NoSuchTask { index, count }),
        }
    }

    /// Keeps the first task that could not be made, so the run can stop
    /// on it; asking past the last task is no failure.
    pub(super) fn record(&self, error: TaskError) {
        if matches!(error, TaskError::NoSuchTask { .. }) {
            return;
        }
        if let TaskSource::Generated(generated) = self {
            // The first failure is the one reported; later ones are
            // dropped.
            let _ = generated.failure.set(error);
        }
    }

    pub(super) fn failure(&self) -> Option<&TaskError> {
        match self {
            TaskSource::Generated(generated) => generated.failure.get(),
            TaskSource::List(_) => None,
        }
    }

    pub(super) fn iter(&self) -> Tasks<'_> {
        Tasks {
            source: self,
            next: 0,
            block: None,
        }
    }
}

/// Every task in order; a manifest's blocks read once each. Stops at the
/// first task that cannot be made (see [`TaskSource::failure`]).
pub(super) struct Tasks<'a> {
    source: &'a TaskSource,
    next: u64,
    /// The manifest block read last: its index and bytes.
    block: Option<(u64, Vec<u8>)>,
}

impl Iterator for Tasks<'_> {
    type Item = TaskInput;

    fn next(&mut self) -> Option<TaskInput> {
        let source = self.source;
        let index = self.next;
        if index >= source.count() {
            return None;
        }
        let made = match source {
            TaskSource::Generated(generated) => match &generated.rows {
                Rows::Manifest(manifest) => {
                    let block = index / MANIFEST_BLOCK_LINES;
                    let cached = self.block.take().filter(|(at, _)| *at == block);
                    let bytes = match cached {
                        Some((_, bytes)) => Ok(bytes),
                        None => manifest.block(index),
                    };
                    bytes.and_then(|bytes| {
                        let made = manifest
                            .line(&bytes, index)
                            .and_then(|line| generated.input(index, index, line));
                        self.block = Some((block, bytes));
                        made
                    })
                }
                Rows::Range { .. } => generated.task(index),
            },
            TaskSource::List(_) => source.task(index),
        };
        match made {
            Ok(task) => {
                self.next += 1;
                Some(task)
            }
            Err(error) => {
                source.record(error);
                self.next = u64::MAX;
                None
            }
        }
    }
}

/// The tasks of a `[tasks]` range or manifest.
pub(super) struct Generated {
    rows: Rows,
    count: u64,
    args: Vec<Template>,
    stdin: Vec<u8>,
    /// Every task's files, in byte order of name.
    slots: Vec<FileSlot>,
    /// How many slots vary by task.
    varying: usize,
    /// Task `i`'s file in varying slot `column` is
    /// `distinct[chosen[i * varying + column]]`.
    chosen: Vec<u32>,
    /// The (content id, bytes) of each file a varying slot names.
    distinct: Vec<(ContentId, u64)>,
    /// The first task that could not be made since the job was loaded.
    failure: OnceLock<TaskError>,
}

impl PartialEq for Generated {
    fn eq(&self, other: &Self) -> bool {
        // What the tasks are, not what went wrong reading them.
        self.rows == other.rows
            && self.count == other.count
            && self.args == other.args
            && self.stdin == other.stdin
            && self.slots == other.slots
            && self.varying == other.varying
            && self.chosen == other.chosen
            && self.distinct == other.distinct
    }
}

impl Eq for Generated {}

#[derive(PartialEq, Eq)]
enum Rows {
    /// Task `i` is index `start + i`.
    Range { start: u64 },
    /// Task `i` is line `i + 1` of the manifest, with index `i`.
    Manifest(Manifest),
}

#[derive(Clone, PartialEq, Eq)]
enum FileSlot {
    /// The same file for every task.
    Fixed(InputFile),
    /// A file named by a template: each task's own.
    Varying {
        name: Bounded<String, TASK_FILE_NAME_BYTES_MAX>,
        column: usize,
    },
}

impl Generated {
    fn task(&self, index: u64) -> Result<TaskInput, TaskError> {
        match &self.rows {
            Rows::Range { start } => self.input(index, start.saturating_add(index), ""),
            Rows::Manifest(manifest) => {
                let bytes = manifest.block(index)?;
                let line = manifest.line(&bytes, index)?;
                self.input(index, index, line)
            }
        }
    }

    /// Task `position`, its templates expanded with `index` and `line`.
    fn input(&self, position: u64, index: u64, line: &str) -> Result<TaskInput, TaskError> {
        let args = self
            .args
            .iter()
            .map(|template| {
                let mut arg = String::new();
                expand_into(template, index, line, &mut arg);
                arg
            })
            .collect();
        let files = self
            .slots
            .iter()
            .map(|slot| match slot {
                FileSlot::Fixed(file) => file.clone(),
                FileSlot::Varying { name, column } => {
                    let (cid, bytes) = self.varying_file(position, *column);
                    InputFile {
                        name: name.clone(),
                        cid,
                        bytes,
                    }
                }
            })
            .collect();
        TaskInput::new(args, self.stdin.clone())
            .and_then(|input| input.with_files(files))
            .map_err(|source| TaskError::Input {
                index: position,
                source,
            })
    }

    fn varying_file(&self, position: u64, column: usize) -> (ContentId, u64) {
        // Loading chose a file for every task and varying slot, so both
        // lookups are in bounds for a task of the job.
        let at = usize::try_from(position).unwrap_or(usize::MAX) * self.varying + column;
        self.distinct[self.chosen[at] as usize]
    }
}

/// A manifest: one task per line, read from the file when a task is made.
pub(super) struct Manifest {
    path: PathBuf,
    /// Held open from the first read: a file put in its place is not
    /// read, and a file changed in place is found by the blocks' checks.
    file: File,
    bytes: u64,
    lines: u64,
    /// Where each run of [`MANIFEST_BLOCK_LINES`] lines starts, and a check
    /// of its bytes as the job was loaded.
    blocks: Vec<Block>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Block {
    offset: u64,
    check: u64,
}

impl PartialEq for Manifest {
    fn eq(&self, other: &Self) -> bool {
        self.path == other.path
            && self.bytes == other.bytes
            && self.lines == other.lines
            && self.blocks == other.blocks
    }
}

impl Eq for Manifest {}

impl Manifest {
    /// Reads the manifest at `path` once: each line checked and counted,
    /// every 64th line's offset kept.
    fn index(path: PathBuf) -> Result<Manifest, JobFileProblem> {
        let file = match File::open(&path) {
            Ok(file) => file,
            Err(source) => return Err(JobFileProblem::ManifestRead { path, source }),
        };
        let bytes = match file.metadata() {
            Ok(metadata) => metadata.len(),
            Err(source) => return Err(JobFileProblem::ManifestRead { path, source }),
        };
        if bytes > MANIFEST_BYTES_MAX {
            return Err(JobFileProblem::ManifestTooLarge {
                path,
                bytes,
                max: MANIFEST_BYTES_MAX,
            });
        }
        // The bytes there when it was opened; a file growing meanwhile is
        // found when its blocks are read again.
        let mut reader = BufReader::with_capacity(MANIFEST_READ_BYTES, (&file).take(bytes));
        let mut blocks = Vec::new();
        let mut line = Vec::with_capacity(TASK_ARG_BYTES_MAX + 2);
        // Whether a line has begun and not yet ended.
        let mut open = false;
        let mut offset = 0u64;
        let mut lines = 0u64;
        let line_problem = |path: &Path, lines: u64, why| JobFileProblem::ManifestLine {
            path: path.to_path_buf(),
            line: lines + 1,
            why,
        };
        loop {
            let buffer = match reader.fill_buf() {
                Ok(buffer) => buffer,
                Err(source) => return Err(JobFileProblem::ManifestRead { path, source }),
            };
            if buffer.is_empty() {
                break;
            }
            if !open {
                if lines == TASKS_MAX {
                    return Err(JobFileProblem::ManifestTooManyLines {
                        path,
                        max: TASKS_MAX,
                    });
                }
                if lines.is_multiple_of(MANIFEST_BLOCK_LINES) {
                    blocks.push(Block { offset, check: 0 });
                }
                open = true;
            }
            let newline = buffer.iter().position(|byte| *byte == b'\n');
            let part = &buffer[..newline.unwrap_or(buffer.len())];
            // One byte over for a `\r` before the newline.
            if line.len() + part.len() > TASK_ARG_BYTES_MAX + 1 {
                let why = LineProblem::TooLong {
                    max: TASK_ARG_BYTES_MAX,
                };
                return Err(line_problem(&path, lines, why));
            }
            line.extend_from_slice(part);
            let used = newline.map_or(buffer.len(), |at| at + 1);
            reader.consume(used);
            offset += used as u64;
            if newline.is_some() {
                check_line(&line).map_err(|why| line_problem(&path, lines, why))?;
                lines += 1;
                line.clear();
                open = false;
            }
        }
        if open {
            check_line(&line).map_err(|why| line_problem(&path, lines, why))?;
            lines += 1;
        }
        if lines == 0 {
            return Err(JobFileProblem::ManifestEmpty { path });
        }
        Ok(Manifest {
            path,
            file,
            bytes: offset,
            lines,
            blocks,
        })
    }

    /// The bytes of block `block` as they are now.
    fn read_block(&self, block: usize) -> io::Result<Vec<u8>> {
        let start = self.blocks[block].offset;
        let end = self
            .blocks
            .get(block + 1)
            .map_or(self.bytes, |next| next.offset);
        let len = usize::try_from(end - start)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "block too large"))?;
        let mut bytes = vec![0; len];
        self.file.read_exact_at(&mut bytes, start)?;
        Ok(bytes)
    }

    /// The checked bytes of the block holding task `index`'s line.
    fn block(&self, index: u64) -> Result<Vec<u8>, TaskError> {
        let changed = || TaskError::ManifestChanged {
            index,
            path: self.path.clone(),
        };
        let block = usize::try_from(index / MANIFEST_BLOCK_LINES).unwrap_or(usize::MAX);
        if block >= self.blocks.len() {
            return Err(TaskError::NoSuchTask {
                index,
                count: self.lines,
            });
        }
        let bytes = self.read_block(block).map_err(|source| {
            if source.kind() == io::ErrorKind::UnexpectedEof {
                changed()
            } else {
                TaskError::ManifestRead {
                    index,
                    path: self.path.clone(),
                    source,
                }
            }
        })?;
        if block_check(&bytes) != self.blocks[block].check {
            return Err(changed());
        }
        Ok(bytes)
    }

    /// Task `index`'s line in `block`, the checked block holding it.
    fn line<'b>(&self, block: &'b [u8], index: u64) -> Result<&'b str, TaskError> {
        let within = usize::try_from(index % MANIFEST_BLOCK_LINES).unwrap_or(usize::MAX);
        block_lines(block)
            .nth(within)
            .and_then(|line| check_line(line).ok())
            .ok_or_else(|| TaskError::ManifestChanged {
                index,
                path: self.path.clone(),
            })
    }
}

/// The lines of a block: split at newlines, without a `\r` before one.
fn block_lines(block: &[u8]) -> impl Iterator<Item = &[u8]> {
    let body = block.strip_suffix(b"\n").unwrap_or(block);
    body.split(|byte| *byte == b'\n')
        .map(|line| line.strip_suffix(b"\r").unwrap_or(line))
}

/// A manifest line (its newline and a `\r` before it gone) as a task's.
fn check_line(line: &[u8]) -> Result<&str, LineProblem> {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    if line.is_empty() {
        return Err(LineProblem::Empty);
    }
    if line.len() > TASK_ARG_BYTES_MAX {
        return Err(LineProblem::TooLong {
            max: TASK_ARG_BYTES_MAX,
        });
    }
    std::str::from_utf8(line).map_err(|_| LineProblem::NotUtf8)
}

/// The files directly in folder `dir` (a link to a file counts as the
/// file) as a manifest of their names in byte order, one task each. The
/// names go to a temporary file, gone from its folder once indexed (the
/// manifest holds it open), so no one changes them under the job; errors
/// name the folder.
fn dir_manifest(dir: &Path) -> Result<Manifest, JobFileProblem> {
    let read = |source| JobFileProblem::DirRead {
        path: dir.to_path_buf(),
        source,
    };
    let mut names = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(read)? {
        let path = entry.map_err(read)?.path();
        let problem = |why| JobFileProblem::DirEntry {
            path: path.clone(),
            why,
        };
        let metadata =
            std::fs::metadata(&path).map_err(|_| problem("cannot be read (a link to nothing?)"))?;
        if !metadata.is_file() {
            return Err(problem(
                "not a file: a `dir` job's folder holds only its tasks' files",
            ));
        }
        let name = path
            .file_name()
            .and_then(|name| name.to_str())
            .ok_or_else(|| problem("its name is not UTF-8"))?;
        if name.contains(['\n', '\r']) {
            return Err(problem("its name holds a line break"));
        }
        if name.len() > TASK_ARG_BYTES_MAX {
            return Err(problem("its name is longer than an argument may be"));
        }
        if names.len() as u64 == TASKS_MAX {
            return Err(JobFileProblem::DirTooManyFiles {
                path: dir.to_path_buf(),
                max: TASKS_MAX,
            });
        }
        names.push(name.to_owned());
    }
    if names.is_empty() {
        return Err(JobFileProblem::DirEmpty {
            path: dir.to_path_buf(),
        });
    }
    names.sort_unstable();
    let write = |source| JobFileProblem::DirRead {
        path: std::env::temp_dir(),
        source,
    };
    let temporary = tempfile::NamedTempFile::new().map_err(write)?;
    let mut writer = io::BufWriter::new(temporary.as_file());
    for name in &names {
        writer.write_all(name.as_bytes()).map_err(write)?;
        writer.write_all(b"\n").map_err(write)?;
    }
    writer.flush().map_err(write)?;
    drop(writer);
    drop(names);
    let mut manifest = Manifest::index(temporary.path().to_path_buf())?;
    manifest.path = dir.to_path_buf();
    Ok(manifest)
}

/// A check of a block's bytes: enough to find a file changed by mistake.
fn block_check(bytes: &[u8]) -> u64 {
    let hash = blake3::hash(bytes);
    let mut first = [0; 8];
    first.copy_from_slice(&hash.as_bytes()[..8]);
    u64::from_le_bytes(first)
}

/// One piece of a template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Piece {
    Literal(String),
    Index,
    Line,
}

pub(super) type Template = Vec<Piece>;

/// Splits a template into literal text and placeholders: `{index}`, and
/// the name of each task's line when its tasks are lines (`{line}` of a
/// manifest, `{file}` of a folder's files). A placeholder is `{` one or
/// more ASCII letters, digits or underscores `}`; any other brace is
/// literal text, so `{"a": 1}` and `{}` pass through unchanged.
pub(super) fn parse_template(
    template: &str,
    line: Option<&'static str>,
) -> Result<Template, JobFileProblem> {
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
        let piece = match name {
            INDEX_PLACEHOLDER => Piece::Index,
            name if Some(name) == line => Piece::Line,
            _ => {
                return Err(JobFileProblem::UnknownPlaceholder {
                    name: name.to_owned(),
                    known: match line {
                        Some(LINE_PLACEHOLDER) => "the only ones are `{index}` and `{line}`",
                        Some(FILE_PLACEHOLDER) => "the only ones are `{index}` and `{file}`",
                        _ => "the only one is `{index}`",
                    },
                });
            }
        };
        if !literal.is_empty() {
            pieces.push(Piece::Literal(std::mem::take(&mut literal)));
        }
        pieces.push(piece);
        rest = &after[name_len + 1..];
    }
    literal.push_str(rest);
    if !literal.is_empty() {
        pieces.push(Piece::Literal(literal));
    }
    Ok(pieces)
}

/// Appends `template` with `index` (in decimal) and `line` put in.
fn expand_into(template: &[Piece], index: u64, line: &str, text: &mut String) {
    for piece in template {
        match piece {
            Piece::Literal(literal) => text.push_str(literal),
            Piece::Index => {
                // Writing to a String cannot fail.
                let _ = write!(text, "{index}");
            }
            Piece::Line => text.push_str(line),
        }
    }
}

/// The job's spec hashed as far as its tasks, and the most bytes of files
/// one task reads, as each task is made at load.
pub(super) struct TaskIds {
    spec: blake3::Hasher,
    input_bytes_max: u64,
}

impl TaskIds {
    /// The spec's Borsh encoding begins with the module's id and the
    /// length of the task id list (a u32).
    pub(super) fn new(module_cid: ContentId, count: u64) -> Self {
        let mut spec = blake3::Hasher::new();
        spec.update(module_cid.as_bytes());
        // Each task form holds at most TASKS_MAX tasks, which fits a u32.
        spec.update(&u32::try_from(count).unwrap_or(u32::MAX).to_le_bytes());
        TaskIds {
            spec,
            input_bytes_max: 0,
        }
    }

    pub(super) fn push(&mut self, cid: ContentId, file_bytes: u64) {
        self.spec.update(cid.as_bytes());
        self.input_bytes_max = self.input_bytes_max.max(file_bytes);
    }

    pub(super) fn finish(self) -> (blake3::Hasher, u64) {
        (self.spec, self.input_bytes_max)
    }
}

/// Borsh's length prefix.
fn push_len(encoded: &mut Vec<u8>, len: usize) {
    // Every length here is bounded far below u32::MAX (arguments, stdin,
    // files, names).
    encoded.extend_from_slice(&u32::try_from(len).unwrap_or(u32::MAX).to_le_bytes());
}

/// An input file in Borsh: its name, its id, its length.
fn push_file(encoded: &mut Vec<u8>, name: &str, cid: &ContentId, bytes: u64) {
    push_len(encoded, name.len());
    encoded.extend_from_slice(name.as_bytes());
    encoded.extend_from_slice(cid.as_bytes());
    encoded.extend_from_slice(&bytes.to_le_bytes());
}

/// A file template of `[tasks]`: its name, where it stands, its pieces.
struct FileTemplate<'a> {
    name: &'a str,
    at: &'a Spanned<String>,
    template: Template,
}

/// Makes every task of a `[tasks]` range or manifest once, checking its
/// bounds, and keeps what makes each again.
pub(super) fn generate(
    report: &Reporter<'_>,
    folder: &Path,
    range: &Spanned<RawRange>,
    files: &mut Files<'_>,
    module_cid: ContentId,
    generated_bytes_max: u64,
) -> Result<(TaskSource, TaskIds), JobFileError> {
    let raw = range.get_ref();
    // What a template calls each task's line, when its tasks are lines.
    let mut line = None;
    let (mut rows, count) = match (&raw.manifest, &raw.dir) {
        (_, Some(dir)) => {
            let conflict = [
                ("start", raw.start.as_ref().map(Spanned::span)),
                ("end", raw.end.as_ref().map(Spanned::span)),
                ("manifest", raw.manifest.as_ref().map(Spanned::span)),
            ]
            .into_iter()
            .find_map(|(key, span)| span.map(|span| (key, span)));
            if let Some((key, span)) = conflict {
                return Err(report.at(span, JobFileProblem::DirWith { key }));
            }
            let manifest = dir_manifest(&folder.join(dir.get_ref()))
                .map_err(|problem| report.at(dir.span(), problem))?;
            let count = manifest.lines;
            line = Some(FILE_PLACEHOLDER);
            (Rows::Manifest(manifest), count)
        }
        (Some(manifest), None) => {
            let conflict = [("start", raw.start.as_ref()), ("end", raw.end.as_ref())]
                .into_iter()
                .find_map(|(key, value)| value.map(|value| (key, value.span())));
            if let Some((key, span)) = conflict {
                return Err(report.at(span, JobFileProblem::ManifestWithRange { key }));
            }
            let manifest = Manifest::index(folder.join(manifest.get_ref()))
                .map_err(|problem| report.at(manifest.span(), problem))?;
            let count = manifest.lines;
            line = Some(LINE_PLACEHOLDER);
            (Rows::Manifest(manifest), count)
        }
        (None, None) => {
            let end = raw
                .end
                .as_ref()
                .ok_or_else(|| report.at(range.span(), JobFileProblem::RangeWithoutEnd))?;
            let start = raw.start.as_ref().map_or(0, |start| *start.get_ref());
            let end_value = *end.get_ref();
            if end_value <= start {
                return Err(report.at(
                    end.span(),
                    JobFileProblem::EmptyRange {
                        start,
                        end: end_value,
                    },
                ));
            }
            let count = end_value - start;
            if count > TASKS_MAX {
                return Err(report.at(
                    end.span(),
                    JobFileProblem::TooManyTasks {
                        count,
                        max: TASKS_MAX,
                    },
                ));
            }
            (Rows::Range { start }, count)
        }
    };

    let arg_spans = JobFile::check_arg_count(report, raw.args.as_ref())?;
    let args = arg_spans
        .iter()
        .map(|arg| {
            parse_template(arg.get_ref(), line).map_err(|problem| report.at(arg.span(), problem))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let stdin = JobFile::stdin(report, folder, raw.stdin.as_ref(), raw.stdin_file.as_ref())?;

    // Files: a template without placeholders names one file for every
    // task; the others are each task's own.
    let mut slots: Vec<(String, FileSlot)> = files
        .shared()
        .iter()
        .map(|file| (file.name.to_string(), FileSlot::Fixed(file.clone())))
        .collect();
    let mut templates = Vec::new();
    let mut own_names = Vec::new();
    for (name, at) in raw
        .files
        .as_ref()
        .map(Spanned::get_ref)
        .into_iter()
        .flatten()
    {
        let template =
            parse_template(at.get_ref(), line).map_err(|problem| report.at(at.span(), problem))?;
        own_names.push(name.as_str());
        if template
            .iter()
            .all(|piece| matches!(piece, Piece::Literal(_)))
        {
            let file = files.file(0, name, at, at.get_ref())?;
            slots.push((name.clone(), FileSlot::Fixed(file)));
        } else {
            let column = templates.len();
            let name_bounded = file_name(report, name, at)?;
            slots.push((
                name.clone(),
                FileSlot::Varying {
                    name: name_bounded,
                    column,
                },
            ));
            templates.push(FileTemplate { name, at, template });
        }
    }
    files.check_names(0, range.span(), &own_names)?;
    slots.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
    let slots: Vec<FileSlot> = slots.into_iter().map(|(_, slot)| slot).collect();
    let fixed_bytes = slots
        .iter()
        .map(|slot| match slot {
            FileSlot::Fixed(file) => file.bytes,
            FileSlot::Varying { .. } => 0,
        })
        .fold(0u64, u64::saturating_add);

    let mut ids = TaskIds::new(module_cid, count);
    let mut chosen = Vec::new();
    let mut distinct = Vec::new();
    let mut distinct_at: HashMap<ContentId, u32> = HashMap::new();
    let mut own_files = vec![(ContentId::from_bytes([0; 32]), 0u64); templates.len()];
    let mut encoded = Vec::new();
    let mut text = String::new();
    let mut hasher = blake3::Hasher::new();
    let mut generated_bytes = 0u64;
    let stdin_len = stdin.len() as u64;

    // Makes task `position` (with `index` and `line`) as `Generated::input`
    // will, without keeping it: its bounds checked, its content id hashed
    // from its Borsh encoding.
    let mut each = |position: u64, index: u64, line: &str| -> Result<(), JobFileError> {
        encoded.clear();
        push_len(&mut encoded, args.len());
        for (template, at) in args.iter().zip(arg_spans) {
            text.clear();
            expand_into(template, index, line, &mut text);
            JobFile::check_arg_len(report, at, &text, position)?;
            push_len(&mut encoded, text.len());
            encoded.extend_from_slice(text.as_bytes());
        }
        let args_len = encoded.len();

        let mut file_bytes = fixed_bytes;
        for (column, file) in templates.iter().enumerate() {
            text.clear();
            expand_into(&file.template, index, line, &mut text);
            let resolved = files.file(position, file.name, file.at, &text)?;
            file_bytes = file_bytes.saturating_add(resolved.bytes);
            let id = match distinct_at.get(&resolved.cid) {
                Some(id) => *id,
                None => {
                    let id = u32::try_from(distinct.len()).map_err(|_| {
                        report.at(
                            file.at.span(),
                            JobFileProblem::TooManyFiles {
                                count: distinct.len() + 1,
                                max: u32::MAX as usize,
                            },
                        )
                    })?;
                    distinct.push((resolved.cid, resolved.bytes));
                    distinct_at.insert(resolved.cid, id);
                    id
                }
            };
            chosen.push(id);
            own_files[column] = (resolved.cid, resolved.bytes);
        }
        files.check_task_bytes(position, range.span(), stdin_len.saturating_add(file_bytes))?;

        push_len(&mut encoded, slots.len());
        for slot in &slots {
            match slot {
                FileSlot::Fixed(file) => push_file(&mut encoded, &file.name, &file.cid, file.bytes),
                FileSlot::Varying { name, column } => {
                    let (cid, bytes) = own_files[*column];
                    push_file(&mut encoded, name, &cid, bytes);
                }
            }
        }
        generated_bytes = generated_bytes
            .saturating_add(encoded.len() as u64)
            .saturating_add(4 + stdin_len);
        if generated_bytes > generated_bytes_max {
            return Err(report.at(
                range.span(),
                JobFileProblem::GeneratedInputsTooLarge {
                    task: position,
                    max: generated_bytes_max,
                },
            ));
        }
        // TaskInput's encoding: arguments, stdin, files.
        hasher.reset();
        hasher.update(&encoded[..args_len]);
        hasher.update(&u32::try_from(stdin.len()).unwrap_or(u32::MAX).to_le_bytes());
        hasher.update(&stdin);
        hasher.update(&encoded[args_len..]);
        ids.push(
            ContentId::from_bytes(*hasher.finalize().as_bytes()),
            file_bytes,
        );
        Ok(())
    };

    match &mut rows {
        Rows::Range { start } => {
            for position in 0..count {
                each(position, *start + position, "")?;
            }
        }
        Rows::Manifest(manifest) => {
            // Read again block by block: what is hashed into the spec is
            // what each block's check keeps.
            let changed = |span: Range<usize>, manifest: &Manifest| {
                report.at(
                    span,
                    JobFileProblem::ManifestChanged {
                        path: manifest.path.clone(),
                    },
                )
            };
            let span = raw.manifest.as_ref().map_or(0..0, Spanned::span);
            let mut position = 0u64;
            for block in 0..manifest.blocks.len() {
                let bytes = manifest.read_block(block).map_err(|source| {
                    if source.kind() == io::ErrorKind::UnexpectedEof {
                        changed(span.clone(), manifest)
                    } else {
                        report.at(
                            span.clone(),
                            JobFileProblem::ManifestRead {
                                path: manifest.path.clone(),
                                source,
                            },
                        )
                    }
                })?;
                manifest.blocks[block].check = block_check(&bytes);
                let expected = (manifest.lines - position).min(MANIFEST_BLOCK_LINES);
                let mut seen = 0;
                for line in block_lines(&bytes) {
                    let line = check_line(line).map_err(|_| changed(span.clone(), manifest))?;
                    if seen == expected {
                        return Err(changed(span.clone(), manifest));
                    }
                    each(position, position, line)?;
                    position += 1;
                    seen += 1;
                }
                if seen != expected {
                    return Err(changed(span.clone(), manifest));
                }
            }
        }
    }

    let generated = Generated {
        rows,
        count,
        args,
        stdin,
        slots,
        varying: templates.len(),
        chosen,
        distinct,
        failure: OnceLock::new(),
    };
    Ok((TaskSource::Generated(Arc::new(generated)), ids))
}
