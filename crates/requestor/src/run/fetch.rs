//! Outputs providers keep: fetched by content id from those whose results
//! were accepted, each 64 KiB checked as it arrives, into a file; made
//! again by re-executing the task here when none of them can serve it.

use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use idlegrid_net::{Overlay, fetch_content_into};
use idlegrid_types::{AccountId, ContentId, JobId, TaskOutcome};
use tracing::{info, warn};

use super::SubmitProgress;
use crate::jobspec::JobFile;
use crate::referee::ReExecutor;

/// Fetches kept outputs for the output thread, which blocks on each in
/// turn: outputs are written in the order tasks were decided.
pub(super) struct OutputFetcher {
    overlay: Overlay,
    runtime: tokio::runtime::Handle,
    executor: ReExecutor,
    bytes_max: u64,
}

impl OutputFetcher {
    /// Fetches over `overlay`, driven by `runtime` (the requestor's).
    pub(super) fn new(
        overlay: Overlay,
        runtime: tokio::runtime::Handle,
        job: JobId,
        job_file: Arc<JobFile>,
    ) -> Self {
        let bytes_max = job_file.limits.output_bytes;
        Self {
            overlay,
            runtime,
            executor: ReExecutor::new(job, job_file),
            bytes_max,
        }
    }

    /// Writes task `task`'s output `cid` to `path`, from `holders` in turn
    /// (a holder that breaks off is left for the next, which resumes from
    /// the bytes checked), else by running the task again; counts each in
    /// `progress`. Gives why neither worked.
    pub(super) fn fetch(
        &self,
        task: u64,
        cid: ContentId,
        holders: &[AccountId],
        path: &Path,
        progress: &SubmitProgress,
    ) -> Result<(), String> {
        let fetched = match holders.split_last() {
            Some((last, others)) => self.fetch_from(cid, others, last, path),
            None => Err("no provider keeps it".to_owned()),
        };
        let why = match fetched {
            Ok(bytes) => {
                progress.outputs_fetched.fetch_add(1, Ordering::Relaxed);
                progress
                    .outputs_fetched_bytes
                    .fetch_add(bytes, Ordering::Relaxed);
                return Ok(());
            }
            Err(why) => why,
        };
        warn!(task, %cid, %why, "an accepted output could not be fetched: running the task here");
        let execution = self.executor.run(task).map_err(|error| {
            format!("its output could not be fetched ({why}) nor made again here: {error}")
        })?;
        match execution.outcome {
            TaskOutcome::Completed { output, .. } if output == cid => {}
            TaskOutcome::Completed { output, .. } => {
                return Err(format!(
                    "its output could not be fetched ({why}), and running it here gave {output} \
                     rather than {cid}"
                ));
            }
            TaskOutcome::Failed(kind) => {
                return Err(format!(
                    "its output could not be fetched ({why}), and running it here failed: {}",
                    kind.as_str()
                ));
            }
        }
        std::fs::write(path, &execution.stdout)
            .map_err(|error| format!("failed to write {}: {error}", path.display()))?;
        progress.outputs_made_here.fetch_add(1, Ordering::Relaxed);
        info!(task, %cid, "an accepted output made again here");
        Ok(())
    }

    fn fetch_from(
        &self,
        cid: ContentId,
        others: &[AccountId],
        last: &AccountId,
        path: &Path,
    ) -> Result<u64, String> {
        let file = std::fs::File::create(path)
            .map_err(|error| format!("failed to create {}: {error}", path.display()))?;
        let sink = std::io::BufWriter::with_capacity(1 << 20, file);
        let fetch = fetch_content_into(&self.overlay, others, last, cid, self.bytes_max, sink, 0);
        let mut sink = self.runtime.block_on(fetch)?;
        let written = sink.flush().and_then(|()| sink.get_ref().metadata());
        written
            .map(|metadata| metadata.len())
            .map_err(|error| format!("failed to write {}: {error}", path.display()))
    }
}
