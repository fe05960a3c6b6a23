//! The output writer thread: each accepted output to its file (or at its
//! offset in the one packed file), to object storage when the job names
//! it, and each decided task's record kept for `results.json`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, mpsc as std_mpsc};

use anyhow::{Context, bail};
use tokio::sync::mpsc;

use super::fetch::OutputFetcher;
use super::{Internal, SubmitProgress};
use crate::core::AcceptedOutput;
use crate::records::TaskRecords;
use crate::remote::{OutputTarget, Storage};
use crate::report::TaskRecord;

/// The file a job that packs its outputs (`[output] packed`) writes them
/// all to, under its results folder.
pub const PACKED_OUTPUTS: &str = "outputs.bin";

/// Outputs packed into one file, each at the offset its record names.
struct Packed {
    file: std::io::BufWriter<std::fs::File>,
    end: u64,
    path: PathBuf,
}

impl Packed {
    fn append(&mut self, output: &[u8], record: &mut TaskRecord) -> anyhow::Result<()> {
        use std::io::Write;
        self.file
            .write_all(output)
            .with_context(|| format!("failed to write {}", self.path.display()))?;
        record.file = Some(PACKED_OUTPUTS.to_owned());
        record.offset = Some(self.end);
        record.length = Some(output.len() as u64);
        self.end += output.len() as u64;
        Ok(())
    }

    /// Appends the output fetched into `fetched`, which is then deleted.
    fn append_file(&mut self, fetched: &Path, record: &mut TaskRecord) -> anyhow::Result<()> {
        let mut source = std::fs::File::open(fetched)
            .with_context(|| format!("failed to read {}", fetched.display()))?;
        let length = std::io::copy(&mut source, &mut self.file)
            .with_context(|| format!("failed to write {}", self.path.display()))?;
        let _ = std::fs::remove_file(fetched);
        record.file = Some(PACKED_OUTPUTS.to_owned());
        record.offset = Some(self.end);
        record.length = Some(length);
        self.end += length;
        Ok(())
    }

    /// Writes out what is buffered; gives the file's path.
    fn finish(self) -> anyhow::Result<PathBuf> {
        self.file
            .into_inner()
            .map_err(std::io::IntoInnerError::into_error)
            .and_then(|file| file.sync_all())
            .with_context(|| format!("failed to write {}", self.path.display()))?;
        Ok(self.path)
    }
}

/// An accepted output at hand: its bytes, or the file it was fetched to.
enum Output {
    Bytes(Vec<u8>),
    Fetched(PathBuf),
}

/// What the output thread does, in the order decisions were made.
enum OutputOrder {
    /// A task accepted, where its output goes (none when it failed), and
    /// its record.
    Accepted(u64, Option<(PathBuf, AcceptedOutput)>, Box<TaskRecord>),
    /// An accepted task is being checked again: not counted until it is
    /// accepted again (its file is then written anew).
    Reopened(u64),
    /// A task no provider could run: its record.
    Failed(Box<TaskRecord>),
}

/// Writes accepted tasks' outputs on its own thread, so that the loop
/// deciding tasks never waits for the disk (creating a file costs tens to
/// hundreds of microseconds), and counts each task accepted once its file
/// is written: a reader told of the task finds it.
pub(super) struct OutputWriter {
    orders: Option<std_mpsc::Sender<OutputOrder>>,
    thread: Option<std::thread::JoinHandle<anyhow::Result<TaskRecords>>>,
}

impl OutputWriter {
    /// Writes each accepted output under the results folder and, with
    /// `target` (an `[output] url`, its storage, the results folder), to
    /// object storage under the same name; keeps each decided task's
    /// record in `records`, given back by [`OutputWriter::finish`]. With
    /// `packed`, every output goes into that one file instead, at the
    /// offset its record names. Outputs providers keep are fetched with
    /// `fetcher` first, in turn.
    pub(super) fn start(
        progress: Arc<SubmitProgress>,
        internal: mpsc::UnboundedSender<Internal>,
        target: Option<(String, Storage, PathBuf)>,
        mut records: TaskRecords,
        packed: Option<PathBuf>,
        fetcher: OutputFetcher,
    ) -> anyhow::Result<Self> {
        let mut packed = match packed {
            Some(path) => {
                let file = std::fs::File::create(&path)
                    .with_context(|| format!("failed to create {}", path.display()))?;
                Some(Packed {
                    file: std::io::BufWriter::with_capacity(1 << 20, file),
                    end: 0,
                    path,
                })
            }
            None => None,
        };
        let (orders, queue) = std_mpsc::channel::<OutputOrder>();
        let thread = std::thread::Builder::new()
            .name("requestor-outputs".to_owned())
            .spawn(move || {
                let target = match target {
                    Some((url, storage, out_dir)) => match OutputTarget::open(&url, &storage) {
                        Ok(target) => Some((target, out_dir)),
                        Err(why) => {
                            let _ = internal.send(Internal::OutputFailed(why.clone()));
                            return Err(anyhow::anyhow!(why));
                        }
                    },
                    None => None,
                };
                let kept = |outcome: std::io::Result<()>| {
                    outcome.map_err(|error| {
                        let error = anyhow::Error::new(error)
                            .context("failed to keep a task's record for results.json");
                        let _ = internal.send(Internal::OutputFailed(format!("{error:#}")));
                        error
                    })
                };
                // Where the packed outputs of tasks reopened lay, for those
                // accepted again with the same output.
                let mut reopened_places: HashMap<u64, (u64, u64)> = HashMap::new();
                let failed = |error: anyhow::Error| {
                    let _ = internal.send(Internal::OutputFailed(format!("{error:#}")));
                    error
                };
                while let Ok(order) = queue.recv() {
                    let (task, file, mut record) = match order {
                        OutputOrder::Accepted(task, file, record) => (task, file, record),
                        OutputOrder::Failed(record) => {
                            reopened_places.remove(&record.index);
                            kept(records.put(&record))?;
                            progress.failed.fetch_add(1, Ordering::Relaxed);
                            progress.feed.push(*record);
                            continue;
                        }
                        OutputOrder::Reopened(task) => {
                            let place = records.reopened(task).map_err(|error| {
                                failed(
                                    anyhow::Error::new(error)
                                        .context("failed to keep a task's record for results.json"),
                                )
                            })?;
                            if let Some(place) = place {
                                reopened_places.insert(task, place);
                            }
                            let _ = progress.accepted.fetch_update(
                                Ordering::Relaxed,
                                Ordering::Relaxed,
                                |accepted| accepted.checked_sub(1),
                            );
                            if progress.keep_done {
                                progress.update(|detail| detail.done.retain(|done| *done != task));
                            }
                            continue;
                        }
                    };
                    let earlier_place = reopened_places.remove(&task);
                    // An output kept by providers is fetched next to its
                    // file; one that cannot be had leaves the task's
                    // record saying why, and no file.
                    let file = match file {
                        Some((path, AcceptedOutput::Kept { cid, holders, .. })) => {
                            // Beside its file, or beside the packed file.
                            let fetched = match &packed {
                                Some(packed) => {
                                    packed.path.with_extension(format!("{task}.partial"))
                                }
                                None => path.with_extension("partial"),
                            };
                            match fetcher.fetch(task, cid, &holders, &fetched, &progress) {
                                Ok(()) => Some((path, Output::Fetched(fetched))),
                                Err(why) => {
                                    let _ = std::fs::remove_file(&fetched);
                                    tracing::error!(task, %why, "an accepted output is lost");
                                    record.file = None;
                                    record.error = Some(format!("output unavailable: {why}"));
                                    None
                                }
                            }
                        }
                        Some((path, AcceptedOutput::Bytes(bytes))) => {
                            Some((path, Output::Bytes(bytes)))
                        }
                        None => None,
                    };
                    if let Some(packed) = &mut packed
                        && let Some((_, output)) = &file
                    {
                        match output {
                            Output::Bytes(bytes) => packed.append(bytes, &mut record),
                            Output::Fetched(fetched) => packed.append_file(fetched, &mut record),
                        }
                        .map_err(failed)?;
                    } else if packed.is_some()
                        && let Some((offset, length)) = earlier_place
                        && record.file.is_some()
                    {
                        // Accepted again with the output it had: still
                        // where it was written.
                        record.file = Some(PACKED_OUTPUTS.to_owned());
                        record.offset = Some(offset);
                        record.length = Some(length);
                    } else if let Some((path, output)) = file {
                        let written = match &output {
                            Output::Bytes(bytes) => std::fs::write(&path, bytes),
                            Output::Fetched(fetched) => std::fs::rename(fetched, &path),
                        };
                        if let Err(error) = written {
                            let error = anyhow::Error::new(error)
                                .context(format!("failed to write {}", path.display()));
                            return Err(failed(error));
                        }
                        if let Some((target, out_dir)) = &target {
                            let name = path.strip_prefix(out_dir).unwrap_or(&path);
                            let name = name.to_string_lossy();
                            let put = match output {
                                Output::Bytes(bytes) => target.put(&name, bytes),
                                Output::Fetched(_) => target.put_file(&name, &path),
                            };
                            if let Err(why) = put {
                                let _ = internal.send(Internal::OutputFailed(why.clone()));
                                return Err(anyhow::anyhow!(why));
                            }
                        }
                    }
                    kept(records.put(&record))?;
                    progress.accepted.fetch_add(1, Ordering::Relaxed);
                    if progress.keep_done {
                        progress.update(|detail| detail.done.push(task));
                    }
                    progress.feed.push(*record);
                }
                if let Some(packed) = packed {
                    let path = packed.finish().map_err(failed)?;
                    if let Some((target, _)) = &target
                        && let Err(why) = target.put_file(PACKED_OUTPUTS, &path)
                    {
                        let _ = internal.send(Internal::OutputFailed(why.clone()));
                        return Err(anyhow::anyhow!(why));
                    }
                }
                Ok(records)
            })
            .context("failed to start the output thread")?;
        Ok(Self {
            orders: Some(orders),
            thread: Some(thread),
        })
    }

    pub(super) fn write(
        &self,
        task: u64,
        file: Option<(PathBuf, AcceptedOutput)>,
        record: Box<TaskRecord>,
    ) {
        self.order(OutputOrder::Accepted(task, file, record));
    }

    pub(super) fn failed(&self, record: Box<TaskRecord>) {
        self.order(OutputOrder::Failed(record));
    }

    pub(super) fn reopened(&self, task: u64) {
        self.order(OutputOrder::Reopened(task));
    }

    fn order(&self, order: OutputOrder) {
        if let Some(orders) = &self.orders {
            // A thread that stopped has reported why.
            let _ = orders.send(order);
        }
    }

    /// Takes no more orders; the wait for every output ordered so far
    /// (fetched outputs among them, so the overlay must keep running),
    /// which gives the records.
    pub(super) fn finish(
        &mut self,
    ) -> impl Future<Output = anyhow::Result<TaskRecords>> + Send + 'static + use<> {
        self.orders = None;
        let thread = self.thread.take();
        async move {
            match thread {
                Some(thread) => tokio::task::spawn_blocking(move || thread.join())
                    .await
                    .context("the output thread failed")?
                    .map_err(|_| anyhow::anyhow!("the output thread panicked"))?,
                None => bail!("the output thread was finished already"),
            }
        }
    }
}
