//! A task's input files, before it runs: each fetched by content id into
//! the provider's store (from providers the batch names, then from peers
//! that announce holding it, then from the requestor; checked as it
//! streams), once however many tasks read it, then shown to the task as a
//! folder of links at `/input`.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, PoisonError};

use idlegrid_net::{ContentStore, Overlay, fetch_shared_content_into};
use idlegrid_sandbox::stage_input_dir;
use idlegrid_types::blob_tree::Verifier;
use idlegrid_types::{AccountId, ContentId, InputFile};
use tokio::sync::{Semaphore, oneshot};
use tracing::{debug, warn};

use crate::ProviderStats;
use crate::core::Task;

/// Fetches of input files at once (each keeps a few chunks in flight).
const FETCHES_AT_ONCE: usize = 4;

type Waiters = Vec<oneshot::Sender<Result<(), String>>>;

/// Stages tasks' input files; cheap to clone.
#[derive(Clone)]
pub(crate) struct Stager {
    overlay: Overlay,
    content: Arc<ContentStore>,
    /// Where each task's `/input` folder is made.
    root: PathBuf,
    /// Content being fetched, and the tasks waiting for it.
    fetching: Arc<Mutex<HashMap<ContentId, Waiters>>>,
    fetches: Arc<Semaphore>,
    stats: Arc<ProviderStats>,
}

impl Stager {
    pub(crate) fn new(
        overlay: Overlay,
        content: Arc<ContentStore>,
        root: PathBuf,
        stats: Arc<ProviderStats>,
    ) -> Self {
        // Folders a killed run left behind.
        let _ = std::fs::remove_dir_all(&root);
        Self {
            overlay,
            content,
            root,
            fetching: Arc::default(),
            fetches: Arc::new(Semaphore::new(FETCHES_AT_ONCE)),
            stats,
        }
    }

    /// The task's `/input` folder, once every file it reads is here: an
    /// `Err` says why it cannot run on this provider (not a claim about
    /// the task).
    pub(crate) async fn stage(&self, task: &Task) -> Result<tempfile::TempDir, String> {
        task.input.check_files()?;
        let bytes = task.input.file_bytes();
        if bytes > self.content.bytes_max() {
            return Err(format!(
                "the task reads {bytes} bytes of files; this provider keeps at most {}",
                self.content.bytes_max()
            ));
        }
        for file in task.input.files.iter() {
            self.ensure(file, &task.holders, &task.requestor).await?;
        }
        let content = Arc::clone(&self.content);
        let root = self.root.clone();
        let files = task.input.files.to_vec();
        tokio::task::spawn_blocking(move || {
            let mut named = Vec::with_capacity(files.len());
            for file in &files {
                // Evicted since it was fetched: the task is given back.
                let path = content
                    .path(&file.cid)
                    .ok_or_else(|| format!("{} left the store before the task ran", file.cid))?;
                named.push((file.name.to_string(), path));
            }
            stage_input_dir(&root, &named)
                .map_err(|error| format!("failed to stage the task's input files: {error}"))
        })
        .await
        .map_err(|error| format!("the staging thread failed: {error}"))?
    }

    /// `file` in the store: held already, fetched now, or fetched by
    /// another task that waits for it too.
    async fn ensure(
        &self,
        file: &InputFile,
        holders: &[AccountId],
        requestor: &AccountId,
    ) -> Result<(), String> {
        let cid = file.cid;
        let waiting = {
            let mut fetching = self.fetching.lock().unwrap_or_else(PoisonError::into_inner);
            if self.content.contains(&cid) {
                return Ok(());
            }
            match fetching.get_mut(&cid) {
                Some(waiters) => {
                    let (tell, told) = oneshot::channel();
                    waiters.push(tell);
                    Some(told)
                }
                None => {
                    fetching.insert(cid, Vec::new());
                    None
                }
            }
        };
        if let Some(told) = waiting {
            return told
                .await
                .unwrap_or_else(|_| Err(format!("the fetch of {cid} stopped")));
        }
        let fetched = self.fetch(file, holders, requestor).await;
        let waiters = self
            .fetching
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&cid)
            .unwrap_or_default();
        for waiter in waiters {
            let _ = waiter.send(fetched.clone());
        }
        fetched
    }

    async fn fetch(
        &self,
        file: &InputFile,
        holders: &[AccountId],
        requestor: &AccountId,
    ) -> Result<(), String> {
        let _turn = self
            .fetches
            .acquire()
            .await
            .map_err(|_| "the provider is stopping".to_owned())?;
        let cid = file.cid;
        // Written to disk as it is checked, never held whole in memory;
        // what an earlier fetch (or run) checked is kept and resumed.
        let (writer, held) = self
            .content
            .resume_writer(cid, file.bytes)
            .map_err(|error| {
                warn!(%cid, %error, "no room for an input file");
                error.to_string()
            })?;
        if held > 0 {
            debug!(%cid, held, "resuming an input file");
        }
        // From holders the batch names, then peers that announce it, then
        // the requestor.
        let writer = fetch_shared_content_into(
            &self.overlay,
            holders,
            Some(requestor),
            cid,
            file.bytes,
            writer,
            held,
        )
        .await?;
        let len = tokio::task::spawn_blocking(move || {
            let mut writer = writer;
            if held > 0 {
                // The bytes kept from before were checked when they came,
                // but are read back once whole, against the id.
                let whole = writer.path().and_then(|path| {
                    Verifier::read(std::io::BufReader::new(std::fs::File::open(path)?), |_| {
                        Ok(())
                    })
                });
                if !whole.is_ok_and(|tree| tree.cid() == cid) {
                    writer.discard();
                    return Err(format!(
                        "{cid} resumed is not the content; it is fetched again"
                    ));
                }
            }
            writer.finish(cid).map_err(|error| {
                warn!(%cid, %error, "an input file could not be kept");
                error.to_string()
            })
        })
        .await
        .map_err(|error| format!("the store thread failed: {error}"))??;
        let len = len.saturating_sub(held);
        self.stats.fetched_blobs.fetch_add(1, Ordering::Relaxed);
        self.stats.fetched_bytes.fetch_add(len, Ordering::Relaxed);
        debug!(%cid, bytes = len, "input file fetched");
        Ok(())
    }
}
