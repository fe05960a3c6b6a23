//! Content kept on disk by id, bounded in bytes: a folder of files named by
//! their BLAKE3 hex, the least recently used deleted to make room. A
//! provider keeps the modules it fetched here (and serves them to peers), a
//! gateway the blobs its HTTP clients upload.
//!
//! What an earlier run left is kept (oldest first out); a file whose bytes
//! are no longer its id is deleted when read.
//!
//! Content can be pinned (a provider's task output, until its requestor
//! has fetched it): pinned content is never deleted to make room, and new
//! content that would only fit by deleting it is refused instead. Pins live
//! in memory: a new run starts with none.

use std::collections::HashMap;
use std::fs::File;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::SystemTime;

use idlegrid_types::ContentId;
use idlegrid_types::blob_tree::{self, GROUP_BYTES, Verifier};
use idlegrid_types::codec::Bounded;

use crate::protocol::Response;

/// Why content could not be stored.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// More than the store's bound, or more than it has room for beside
    /// the content pinned in it.
    #[error("{len} bytes is more than this store keeps ({max}{})", pinned_note(*pinned))]
    TooLarge { len: u64, max: u64, pinned: u64 },
    #[error("failed to store {} in {}: {source}", cid.map_or("content".to_owned(), |cid| cid.to_string()), dir.display())]
    Io {
        cid: Option<ContentId>,
        dir: PathBuf,
        source: std::io::Error,
    },
    #[error("failed to read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
}

fn pinned_note(pinned: u64) -> String {
    if pinned == 0 {
        String::new()
    } else {
        format!(", {pinned} of them pinned")
    }
}

/// Content on disk by id.
#[derive(Debug)]
pub struct ContentStore {
    dir: PathBuf,
    bytes_max: u64,
    inner: Mutex<Inner>,
    watcher: OnceLock<Watcher>,
}

/// What a store's watcher hears (see [`ContentStore::watch`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreChange {
    /// Content is held now (stored, fetched or put).
    Held(ContentId),
    /// Content is held no more (evicted, trimmed, or found damaged).
    Gone(ContentId),
}

type WatchFn = dyn Fn(StoreChange) + Send + Sync;

struct Watcher(Box<WatchFn>);

impl std::fmt::Debug for Watcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Watcher")
    }
}

#[derive(Debug, Default)]
struct Inner {
    /// Each item's size and when it was last used (a counter).
    items: HashMap<ContentId, (u64, u64)>,
    /// The checked tree of each item served or stored since it was opened
    /// (32 bytes per 64 KiB held).
    trees: HashMap<ContentId, Arc<Verifier>>,
    /// How many times each held item is pinned (never zero): pinned items
    /// are not evicted.
    pins: HashMap<ContentId, u32>,
    /// Bytes of the pinned items.
    pinned_total: u64,
    total: u64,
    clock: u64,
}

impl Inner {
    fn next_clock(&mut self) -> u64 {
        self.clock += 1;
        self.clock
    }

    fn touch(&mut self, cid: &ContentId) -> bool {
        self.clock += 1;
        let clock = self.clock;
        match self.items.get_mut(cid) {
            Some(entry) => {
                entry.1 = clock;
                true
            }
            None => false,
        }
    }

    /// Forgets the least recently used that are not pinned until at most
    /// `bytes` are held (or only pinned ones are left); gives what was
    /// forgotten (its files are the caller's to delete).
    fn evict_to(&mut self, bytes: u64) -> Vec<ContentId> {
        let mut evicted = Vec::new();
        while self.total > bytes {
            let oldest = self
                .items
                .iter()
                .filter(|(cid, _)| !self.pins.contains_key(cid))
                .min_by_key(|(_, (_, used))| *used);
            let Some((&oldest, _)) = oldest else {
                break;
            };
            self.forget(&oldest);
            evicted.push(oldest);
        }
        evicted
    }

    fn forget(&mut self, cid: &ContentId) {
        self.trees.remove(cid);
        if let Some((size, _)) = self.items.remove(cid) {
            self.total -= size;
            // Content gone (damaged on disk) is pinned no more.
            if self.pins.remove(cid).is_some() {
                self.pinned_total -= size;
            }
        }
    }

    /// Pins a held item once more: whether it is held.
    fn pin(&mut self, cid: &ContentId) -> bool {
        let Some(&(size, _)) = self.items.get(cid) else {
            return false;
        };
        let count = self.pins.entry(*cid).or_insert(0);
        if *count == 0 {
            self.pinned_total += size;
        }
        *count = count.saturating_add(1);
        true
    }

    fn unpin(&mut self, cid: &ContentId) {
        let Some(count) = self.pins.get_mut(cid) else {
            return;
        };
        *count -= 1;
        if *count == 0 {
            self.pins.remove(cid);
            if let Some((size, _)) = self.items.get(cid) {
                self.pinned_total -= size;
            }
        }
    }
}

/// Where fetches that did not finish keep what they checked, by id, to
/// resume from.
const PARTIAL_DIR: &str = "partial";

/// Deletes the oldest unfinished fetches until at most `bytes_max` bytes
/// of them are left.
fn trim_partials(dir: &Path, bytes_max: u64) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let metadata = entry.metadata()?;
        if !metadata.is_file() || cid_of_name(&entry.file_name().to_string_lossy()).is_none() {
            std::fs::remove_file(entry.path())?;
            continue;
        }
        let modified = metadata.modified().unwrap_or(SystemTime::UNIX_EPOCH);
        found.push((modified, entry.path(), metadata.len()));
    }
    found.sort();
    let mut total: u64 = found.iter().map(|(_, _, len)| len).sum();
    for (_, path, len) in found {
        if total <= bytes_max {
            break;
        }
        std::fs::remove_file(path)?;
        total -= len;
    }
    Ok(())
}

/// The id a file name stands for: 64 hex digits.
fn cid_of_name(name: &str) -> Option<ContentId> {
    let mut bytes = [0u8; 32];
    (name.len() == 64)
        .then(|| hex::decode_to_slice(name, &mut bytes).ok())
        .flatten()
        .map(|()| ContentId::from_bytes(bytes))
}

impl ContentStore {
    /// The store in `dir`, holding at most `bytes_max` bytes: what an
    /// earlier run left is indexed (by name and size, oldest modified
    /// first out) and trimmed to the bound; unfinished writes are deleted;
    /// other files are left alone.
    pub fn open(dir: &Path, bytes_max: u64) -> std::io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        trim_partials(&dir.join(PARTIAL_DIR), bytes_max / 4)?;
        let mut found: Vec<(SystemTime, ContentId, u64)> = Vec::new();
        for entry in std::fs::read_dir(dir)? {
            let entry = entry?;
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if name.ends_with(".partial") {
                std::fs::remove_file(entry.path())?;
                continue;
            }
            let Some(cid) = cid_of_name(&name) else {
                continue;
            };
            let metadata = entry.metadata()?;
            if metadata.is_file() {
                let modified = metadata.modified().unwrap_or(SystemTime::UNIX_EPOCH);
                found.push((modified, cid, metadata.len()));
            }
        }
        found.sort();
        let store = Self {
            dir: dir.to_path_buf(),
            bytes_max,
            inner: Mutex::default(),
            watcher: OnceLock::new(),
        };
        {
            let mut inner = store.inner();
            for (_, cid, size) in found {
                inner.clock += 1;
                let clock = inner.clock;
                inner.items.insert(cid, (size, clock));
                inner.total += size;
            }
        }
        store.shrink_to(bytes_max);
        Ok(store)
    }

    /// Calls `watcher` with every change to what the store holds from now
    /// on, outside the store's lock (a provider announces what it holds
    /// with it). A store has one watcher: false if it had one already.
    pub fn watch(&self, watcher: impl Fn(StoreChange) + Send + Sync + 'static) -> bool {
        self.watcher.set(Watcher(Box::new(watcher))).is_ok()
    }

    fn tell(&self, change: StoreChange) {
        if let Some(Watcher(watcher)) = self.watcher.get() {
            watcher(change);
        }
    }

    fn inner(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn file(&self, cid: &ContentId) -> PathBuf {
        self.dir.join(hex::encode(cid.as_bytes()))
    }

    /// Deletes the least recently used until `incoming` more bytes fit;
    /// counts them as held (so concurrent writes cannot pass the bound
    /// together). Refused, deleting nothing, when they would fit only by
    /// deleting pinned content.
    fn make_room(&self, incoming: u64) -> Result<(), StoreError> {
        let evicted = {
            let mut inner = self.inner();
            let pinned = inner.pinned_total;
            if pinned.saturating_add(incoming) > self.bytes_max {
                return Err(StoreError::TooLarge {
                    len: incoming,
                    max: self.bytes_max,
                    pinned,
                });
            }
            let evicted = inner.evict_to(self.bytes_max - incoming);
            inner.total += incoming;
            evicted
        };
        self.delete(evicted);
        Ok(())
    }

    /// The error for content larger than the whole store.
    fn too_large(&self, len: u64) -> Option<StoreError> {
        (len > self.bytes_max).then_some(StoreError::TooLarge {
            len,
            max: self.bytes_max,
            pinned: 0,
        })
    }

    fn delete(&self, evicted: Vec<ContentId>) {
        for cid in evicted {
            let _ = std::fs::remove_file(self.file(&cid));
            self.tell(StoreChange::Gone(cid));
        }
    }

    /// Stores `bytes` (whose id the caller computed or checked): whether
    /// they are new here.
    pub fn put(&self, cid: ContentId, bytes: &[u8]) -> Result<bool, StoreError> {
        self.put_and_pin(cid, bytes, false)
    }

    /// [`ContentStore::put`], and pins the content in the same step (once
    /// more, when it was held already), so it cannot be evicted between the
    /// two: whether it is new here. Release it with [`ContentStore::unpin`].
    pub fn put_pinned(&self, cid: ContentId, bytes: &[u8]) -> Result<bool, StoreError> {
        self.put_and_pin(cid, bytes, true)
    }

    fn put_and_pin(&self, cid: ContentId, bytes: &[u8], pin: bool) -> Result<bool, StoreError> {
        let size = bytes.len() as u64;
        {
            let mut inner = self.inner();
            if inner.touch(&cid) {
                if pin {
                    inner.pin(&cid);
                }
                return Ok(false);
            }
        }
        if let Some(error) = self.too_large(size) {
            return Err(error);
        }
        self.make_room(size)?;
        let path = self.file(&cid);
        let partial = path.with_extension("partial");
        let written =
            std::fs::write(&partial, bytes).and_then(|()| std::fs::rename(&partial, &path));
        let mut inner = self.inner();
        if let Err(source) = written {
            inner.total -= size;
            let _ = std::fs::remove_file(&partial);
            return Err(StoreError::Io {
                cid: Some(cid),
                dir: self.dir.clone(),
                source,
            });
        }
        inner.clock += 1;
        let clock = inner.clock;
        let new = inner.items.insert(cid, (size, clock)).is_none();
        if !new {
            // Another write of the same bytes finished first.
            inner.total -= size;
        }
        if pin {
            inner.pin(&cid);
        }
        drop(inner);
        if new {
            self.tell(StoreChange::Held(cid));
        }
        Ok(true)
    }

    /// Pins held content once more, so it is not evicted to make room until
    /// unpinned as many times: whether it is held.
    pub fn pin(&self, cid: &ContentId) -> bool {
        self.inner().pin(cid)
    }

    /// Takes one pin off the content (nothing when it has none): with none
    /// left it is evicted like any other, least recently used first.
    pub fn unpin(&self, cid: &ContentId) {
        self.inner().unpin(cid);
    }

    /// Bytes of pinned content held.
    pub fn pinned_bytes(&self) -> u64 {
        self.inner().pinned_total
    }

    /// Copies the file at `path` in, hashing it as it streams (its bytes
    /// are read once): its id, its length, and whether it is new here.
    pub fn put_file(self: &Arc<Self>, path: &Path) -> Result<(ContentId, u64, bool), StoreError> {
        let read_error = |source| StoreError::Read {
            path: path.to_path_buf(),
            source,
        };
        let source = File::open(path).map_err(read_error)?;
        let size = source.metadata().map_err(read_error)?.len();
        let mut writer = self.writer(size)?;
        let tree = Verifier::read(std::io::BufReader::new(source), |group| {
            writer.write_all(group)
        })
        .map_err(read_error)?;
        if tree.len() != size {
            return Err(read_error(std::io::Error::other(
                "the file changed while it was read",
            )));
        }
        let cid = tree.cid();
        let new = !self.contains(&cid);
        writer.finish(cid)?;
        let mut inner = self.inner();
        if inner.items.contains_key(&cid) {
            inner.trees.insert(cid, Arc::new(tree));
        }
        Ok((cid, size, new))
    }

    /// A writer for content of `len` bytes arriving (checked by the
    /// caller as it streams): room is made for it now; it joins the store
    /// at [`StoreWriter::finish`], and is deleted if dropped before.
    pub fn writer(self: &Arc<Self>, len: u64) -> Result<StoreWriter, StoreError> {
        if let Some(error) = self.too_large(len) {
            return Err(error);
        }
        self.make_room(len)?;
        let partial = self.dir.join(format!(
            "{}-{}.partial",
            std::process::id(),
            self.inner().next_clock()
        ));
        match File::create(&partial) {
            Ok(file) => Ok(StoreWriter {
                store: Arc::clone(self),
                len,
                partial,
                file: Some(std::io::BufWriter::with_capacity(GROUP_BYTES, file)),
                keep_partial: false,
            }),
            Err(source) => {
                self.inner().total -= len;
                Err(StoreError::Io {
                    cid: None,
                    dir: self.dir.clone(),
                    source,
                })
            }
        }
    }

    /// [`ContentStore::writer`] for content `cid` of `len` bytes that
    /// keeps what was written if it is dropped unfinished (a fetch that
    /// failed, a process killed), and resumes it: the writer, and how many
    /// bytes it holds already (whole groups, short of the end). What a
    /// resumed writer holds is checked whole before it is finished.
    pub fn resume_writer(
        self: &Arc<Self>,
        cid: ContentId,
        len: u64,
    ) -> Result<(StoreWriter, u64), StoreError> {
        if let Some(error) = self.too_large(len) {
            return Err(error);
        }
        let io_error = |source| StoreError::Io {
            cid: Some(cid),
            dir: self.dir.clone(),
            source,
        };
        let partial = self.dir.join(PARTIAL_DIR).join(hex::encode(cid.as_bytes()));
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&partial)
            .map_err(io_error)?;
        let held = file.metadata().map_err(io_error)?.len();
        // Whole groups only (the last may have been cut short), and never
        // the whole: at least one chunk is fetched, so the fetch ends.
        let group = GROUP_BYTES as u64;
        let resumed = held.min(len.saturating_sub(1)) / group * group;
        file.set_len(resumed).map_err(io_error)?;
        let mut file = std::io::BufWriter::with_capacity(GROUP_BYTES, file);
        std::io::Seek::seek(&mut file, std::io::SeekFrom::Start(resumed)).map_err(io_error)?;
        self.make_room(len)?;
        Ok((
            StoreWriter {
                store: Arc::clone(self),
                len,
                partial,
                file: Some(file),
                keep_partial: true,
            },
            resumed,
        ))
    }

    /// The content's checked tree, if held (and whole: a file whose bytes
    /// are no longer its id is deleted). Computed from the file once.
    pub fn tree(&self, cid: &ContentId) -> Option<Arc<Verifier>> {
        {
            let mut inner = self.inner();
            if !inner.touch(cid) {
                return None;
            }
            if let Some(tree) = inner.trees.get(cid) {
                return Some(Arc::clone(tree));
            }
        }
        let read = File::open(self.file(cid))
            .and_then(|file| Verifier::read(std::io::BufReader::new(file), |_| Ok(())));
        match read {
            Ok(tree) if tree.cid() == *cid => {
                let tree = Arc::new(tree);
                let mut inner = self.inner();
                if inner.items.contains_key(cid) {
                    inner.trees.insert(*cid, Arc::clone(&tree));
                }
                Some(tree)
            }
            _ => {
                self.damaged(cid);
                None
            }
        }
    }

    fn damaged(&self, cid: &ContentId) {
        self.inner().forget(cid);
        let _ = std::fs::remove_file(self.file(cid));
        self.tell(StoreChange::Gone(*cid));
    }

    /// The answer to a `ContentTree` request for `cid`'s values from group
    /// `from` on.
    pub fn tree_response(&self, cid: &ContentId, from: u64) -> Response {
        match self.tree(cid) {
            Some(tree) => tree_response(&tree, from),
            None => not_held(cid),
        }
    }

    /// The answer to a `Content` request for `cid` from `offset`: a chunk
    /// read from the file, each of its groups checked before it is sent (a
    /// file damaged since is deleted, not served).
    pub fn chunk_response(&self, cid: &ContentId, offset: u64) -> Response {
        let Some(tree) = self.tree(cid) else {
            return not_held(cid);
        };
        match chunk_response(&self.file(cid), &tree, offset) {
            Some(response) => response,
            None => {
                self.damaged(cid);
                not_held(cid)
            }
        }
    }

    /// The answer to a peer's request for content (its tree or a chunk)
    /// from what is held here; `None` for other requests.
    pub fn answer(&self, request: &crate::Request) -> Option<Response> {
        match request {
            crate::Request::ContentTree { cid, from } => Some(self.tree_response(cid, *from)),
            crate::Request::Content { cid, offset } => Some(self.chunk_response(cid, *offset)),
            _ => None,
        }
    }

    /// The content's bytes, if held and still whole (a damaged file is
    /// deleted).
    pub fn read(&self, cid: &ContentId) -> Option<Vec<u8>> {
        if !self.inner().touch(cid) {
            return None;
        }
        match std::fs::read(self.file(cid)) {
            Ok(bytes) if ContentId::of(&bytes) == *cid => Some(bytes),
            _ => {
                self.damaged(cid);
                None
            }
        }
    }

    /// Whether the content is held.
    pub fn contains(&self, cid: &ContentId) -> bool {
        self.inner().touch(cid)
    }

    /// Where the content's file is, if held.
    pub fn path(&self, cid: &ContentId) -> Option<PathBuf> {
        self.inner().touch(cid).then(|| self.file(cid))
    }

    /// What it holds, least recently used first: (id, bytes).
    pub fn entries(&self) -> Vec<(ContentId, u64)> {
        let inner = self.inner();
        let mut entries: Vec<(u64, ContentId, u64)> = inner
            .items
            .iter()
            .map(|(cid, (size, used))| (*used, *cid, *size))
            .collect();
        entries.sort();
        entries
            .into_iter()
            .map(|(_, cid, size)| (cid, size))
            .collect()
    }

    /// Deletes the least recently used until at most `bytes` are held (or
    /// only pinned content is left).
    pub fn shrink_to(&self, bytes: u64) {
        let evicted = self.inner().evict_to(bytes);
        self.delete(evicted);
    }

    /// The folder it keeps its files in.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The most bytes it holds.
    pub fn bytes_max(&self) -> u64 {
        self.bytes_max
    }

    /// Bytes held.
    pub fn bytes(&self) -> u64 {
        self.inner().total
    }

    /// How many items it holds.
    pub fn len(&self) -> usize {
        self.inner().items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Content being written into a [`ContentStore`]; see
/// [`ContentStore::writer`].
#[derive(Debug)]
pub struct StoreWriter {
    store: Arc<ContentStore>,
    /// The room held for it.
    len: u64,
    partial: PathBuf,
    file: Option<std::io::BufWriter<File>>,
    /// Dropped unfinished, it leaves what it wrote to be resumed.
    keep_partial: bool,
}

impl Write for StoreWriter {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        match &mut self.file {
            Some(file) => file.write(bytes),
            None => Err(std::io::Error::other("the content was finished")),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match &mut self.file {
            Some(file) => file.flush(),
            None => Ok(()),
        }
    }
}

impl StoreWriter {
    /// Where what it wrote is (flushed), until it is finished.
    pub fn path(&mut self) -> std::io::Result<&Path> {
        self.flush()?;
        Ok(&self.partial)
    }

    /// Deletes what it wrote (it was not the content after all).
    pub fn discard(mut self) {
        self.keep_partial = false;
    }

    /// Puts what was written in the store under `cid` (the caller checked
    /// the bytes against it as they came): its length.
    pub fn finish(mut self, cid: ContentId) -> Result<u64, StoreError> {
        let store = Arc::clone(&self.store);
        let io_error = |source| StoreError::Io {
            cid: Some(cid),
            dir: store.dir.clone(),
            source,
        };
        let file = self.file.take().expect("finished once");
        let written = file
            .into_inner()
            .map_err(|error| error.into_error())
            .and_then(|file| file.metadata().map(|metadata| metadata.len()));
        let written = match written {
            Ok(written) => written,
            Err(source) => return Err(io_error(source)),
        };
        let mut inner = store.inner();
        // The room held becomes what it holds.
        inner.total = inner.total - self.len + written;
        if inner.touch(&cid) {
            inner.total -= written;
            self.len = 0;
            drop(inner);
            let _ = std::fs::remove_file(&self.partial);
            return Ok(written);
        }
        if let Err(source) = std::fs::rename(&self.partial, store.file(&cid)) {
            inner.total -= written;
            self.len = 0;
            return Err(io_error(source));
        }
        let clock = inner.next_clock();
        inner.items.insert(cid, (written, clock));
        self.len = 0;
        drop(inner);
        store.tell(StoreChange::Held(cid));
        Ok(written)
    }
}

impl Drop for StoreWriter {
    fn drop(&mut self) {
        if let Some(mut file) = self.file.take() {
            if self.keep_partial {
                // What was checked stays, to be resumed.
                let _ = file.flush();
            } else {
                drop(file);
                let _ = std::fs::remove_file(&self.partial);
            }
            self.store.inner().total -= self.len;
        }
    }
}

/// The answer to a `ContentTree` request for the values from group `from`
/// on of the content `tree` checks.
pub fn tree_response(tree: &Verifier, from: u64) -> Response {
    crate::content::tree_answer(tree.len(), tree.leaves(), from)
}

/// The answer to a `Content` request from `offset` for the content in the
/// file at `path`, which `tree` checks: a chunk whose every group is
/// checked before it is sent. `None` when the file cannot be read or is no
/// longer the content.
pub fn chunk_response(path: &Path, tree: &Verifier, offset: u64) -> Option<Response> {
    let std::ops::Range { start, end } = crate::content::chunk_range(tree.len(), offset);
    let mut bytes = vec![0u8; usize::try_from(end - start).unwrap_or(0)];
    File::open(path)
        .and_then(|file| file.read_exact_at(&mut bytes, start))
        .ok()?;
    if start.is_multiple_of(GROUP_BYTES as u64) {
        let mut rest: &[u8] = &bytes;
        let mut group = start / GROUP_BYTES as u64;
        while !rest.is_empty() {
            let range = blob_tree::group_range(tree.len(), group);
            let whole = range.end - range.start;
            let take = usize::try_from(whole).unwrap_or(usize::MAX).min(rest.len());
            let (piece, after) = rest.split_at(take);
            // A group cut short by the chunk's end is checked with the
            // next chunk, which starts at it.
            if piece.len() as u64 == whole && tree.check(group, piece).is_err() {
                return None;
            }
            rest = after;
            group += 1;
        }
    }
    Some(Response::Content {
        total_bytes: tree.len(),
        bytes: Bounded::new(bytes).expect("at most one chunk"),
    })
}

fn not_held(cid: &ContentId) -> Response {
    Response::refused("not_found", format!("this node holds no {cid}"))
}

#[cfg(test)]
mod tests;
