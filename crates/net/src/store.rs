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
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
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
        if inner.items.insert(cid, (size, clock)).is_some() {
            // Another write of the same bytes finished first.
            inner.total -= size;
        }
        if pin {
            inner.pin(&cid);
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
                self.inner().forget(cid);
                let _ = std::fs::remove_file(self.file(cid));
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
mod tests {
    use super::*;

    fn put(store: &ContentStore, bytes: &[u8]) -> ContentId {
        let cid = ContentId::of(bytes);
        store.put(cid, bytes).expect("stored");
        cid
    }

    #[test]
    fn content_is_kept_by_id_within_the_bound_least_recently_used_first() {
        let folder = tempfile::tempdir().expect("tempdir");
        std::fs::write(folder.path().join("not-content.txt"), b"keep").expect("write");
        std::fs::write(folder.path().join("x.partial"), b"half").expect("write");
        let store = ContentStore::open(folder.path(), 100).expect("opens");
        assert!(!folder.path().join("x.partial").exists());
        let a = put(&store, &[1; 40]);
        assert!(!store.put(a, &[1; 40]).expect("again"), "held already");
        let b = put(&store, &[2; 40]);
        // `a` is used again, so `b` is the least recently used.
        assert!(store.read(&a).is_some());
        let c = put(&store, &[3; 40]);
        assert_eq!(store.read(&a).as_deref(), Some(&[1u8; 40][..]));
        assert!(store.read(&b).is_none());
        assert!(!store.path_exists(&b));
        assert_eq!(store.read(&c).as_deref(), Some(&[3u8; 40][..]));
        assert_eq!((store.bytes(), store.len()), (80, 2));
        assert_eq!(store.entries(), vec![(a, 40), (c, 40)]);
        assert!(matches!(
            store.put(ContentId::of(&[4; 101]), &[4; 101]),
            Err(StoreError::TooLarge { .. })
        ));

        // A damaged file is not served, and is forgotten.
        std::fs::write(store.file(&c), b"not c").expect("damage");
        assert!(store.read(&c).is_none());
        assert_eq!(store.len(), 1);

        // A new run keeps what is there, within its own bound, and leaves
        // other files alone.
        drop(store);
        let store = ContentStore::open(folder.path(), 100).expect("reopens");
        assert_eq!(store.read(&a).as_deref(), Some(&[1u8; 40][..]));
        store.shrink_to(0);
        assert!(store.is_empty() && store.read(&a).is_none());
        put(&store, &[5; 30]);
        drop(store);
        let smaller = ContentStore::open(folder.path(), 10).expect("reopens smaller");
        assert!(smaller.is_empty());
        assert!(folder.path().join("not-content.txt").exists());
    }

    #[test]
    fn content_written_as_it_arrives_joins_the_store_only_when_finished() {
        let folder = tempfile::tempdir().expect("tempdir");
        let store = Arc::new(ContentStore::open(folder.path(), 1000).expect("opens"));
        let bytes = [5u8; 600];
        let cid = ContentId::of(&bytes);

        let mut dropped = store.writer(600).expect("room");
        dropped.write_all(&bytes[..100]).expect("write");
        assert_eq!(store.bytes(), 600, "the room is held while it is written");
        drop(dropped);
        assert_eq!((store.bytes(), store.len()), (0, 0));
        let files = std::fs::read_dir(folder.path())
            .expect("dir")
            .filter(|entry| entry.as_ref().expect("entry").path().is_file())
            .count();
        assert_eq!(files, 0, "nothing left behind");

        let mut writer = store.writer(600).expect("room");
        writer.write_all(&bytes).expect("write");
        assert_eq!(writer.finish(cid).expect("finished"), 600);
        assert_eq!(store.read(&cid).as_deref(), Some(&bytes[..]));
        assert_eq!((store.bytes(), store.len()), (600, 1));
        assert!(matches!(
            store.writer(1001),
            Err(StoreError::TooLarge { .. })
        ));
    }

    #[test]
    fn an_unfinished_write_is_resumed_from_its_whole_groups_after_a_restart() {
        let folder = tempfile::tempdir().expect("tempdir");
        let bytes: Vec<u8> = (0..5 * GROUP_BYTES + 100)
            .map(|i| (i % 239) as u8)
            .collect();
        let cid = ContentId::of(&bytes);
        let len = bytes.len() as u64;
        {
            let store = Arc::new(ContentStore::open(folder.path(), 1 << 20).expect("opens"));
            let (mut writer, resumed) = store.resume_writer(cid, len).expect("room");
            assert_eq!(resumed, 0);
            // Two groups and part of a third, then the process stops.
            writer
                .write_all(&bytes[..2 * GROUP_BYTES + 999])
                .expect("write");
            drop(writer);
            assert_eq!((store.bytes(), store.len()), (0, 0), "room given back");
        }
        let store = Arc::new(ContentStore::open(folder.path(), 1 << 20).expect("reopens"));
        let (mut writer, resumed) = store.resume_writer(cid, len).expect("room");
        assert_eq!(resumed, 2 * GROUP_BYTES as u64, "whole groups only");
        writer.write_all(&bytes[2 * GROUP_BYTES..]).expect("write");
        let path = writer.path().expect("flushed").to_path_buf();
        assert_eq!(std::fs::read(&path).expect("read"), bytes);
        assert_eq!(writer.finish(cid).expect("finished"), len);
        assert_eq!(store.read(&cid).as_deref(), Some(&bytes[..]));

        // A writer discarded leaves nothing to resume.
        let other = ContentId::of(b"other");
        let (mut writer, _) = store
            .resume_writer(other, 3 * GROUP_BYTES as u64)
            .expect("room");
        writer.write_all(&bytes[..GROUP_BYTES]).expect("write");
        writer.discard();
        let (_, resumed) = store
            .resume_writer(other, 3 * GROUP_BYTES as u64)
            .expect("room");
        assert_eq!(resumed, 0);
    }

    #[test]
    fn a_file_put_is_served_in_checked_chunks_and_a_damaged_one_is_not() {
        let folder = tempfile::tempdir().expect("tempdir");
        let store =
            Arc::new(ContentStore::open(&folder.path().join("store"), 64 << 20).expect("opens"));
        let bytes: Vec<u8> = (0..(3 << 20) + 12_345).map(|i| (i % 241) as u8).collect();
        let source = folder.path().join("input.bin");
        std::fs::write(&source, &bytes).expect("write");
        let (cid, len, new) = store.put_file(&source).expect("put");
        assert_eq!(
            (cid, len, new),
            (ContentId::of(&bytes), bytes.len() as u64, true)
        );
        assert_eq!(store.put_file(&source).expect("again"), (cid, len, false));
        assert_eq!(store.bytes(), len, "held once");

        let mut fetch = crate::ContentFetch::new(cid, u64::MAX);
        let holder = idlegrid_types::Keypair::from_seed([9; 32]).account_id();
        let got = loop {
            let response = match fetch.request() {
                crate::Request::ContentTree { cid, from } => store.tree_response(&cid, from),
                crate::Request::Content { cid, offset } => store.chunk_response(&cid, offset),
                other => panic!("asked {other:?}"),
            };
            if let Some(got) = fetch.answer(&holder, response).expect("checks") {
                break got;
            }
        };
        assert_eq!(got, bytes);

        // One byte changed on disk after the tree was made: that chunk is
        // not served, and the content is forgotten.
        let mut damaged = bytes.clone();
        damaged[(2 << 20) + 5] ^= 1;
        std::fs::write(store.file(&cid), &damaged).expect("damage");
        assert!(matches!(
            store.chunk_response(&cid, 0),
            Response::Content { .. }
        ));
        assert!(matches!(
            store.chunk_response(&cid, 2 << 20),
            Response::Refused { .. }
        ));
        assert!(!store.contains(&cid));
    }

    #[test]
    fn pinned_content_survives_pressure_until_unpinned() {
        let folder = tempfile::tempdir().expect("tempdir");
        let store = Arc::new(ContentStore::open(folder.path(), 100).expect("opens"));
        let output = ContentId::of(&[1; 40]);
        assert!(store.put_pinned(output, &[1; 40]).expect("stored"));
        // Pinned for a second task that gave the same output.
        assert!(!store.put_pinned(output, &[1; 40]).expect("held"));
        assert_eq!(store.pinned_bytes(), 40);
        let module = put(&store, &[2; 30]);
        assert!(store.pin(&module));
        assert!(!store.pin(&ContentId::of(b"never stored")), "not held");
        assert_eq!(store.pinned_bytes(), 70);
        store.unpin(&module);

        // `output` is the least recently used, and it stays.
        for fill in 3..10u8 {
            put(&store, &[fill; 30]);
            assert!(store.read(&output).is_some(), "pinned content was evicted");
        }
        assert!(!store.contains(&module), "unpinned content is evicted");
        let mut writer = store.writer(60).expect("room beside the pinned");
        writer.write_all(&[10; 60]).expect("write");
        writer.finish(ContentId::of(&[10; 60])).expect("finished");
        assert!(store.bytes() <= 100 && store.contains(&output));
        store.shrink_to(0);
        assert_eq!(store.entries(), vec![(output, 40)]);

        // Pinned twice, it takes two unpins to become evictable.
        store.unpin(&output);
        store.shrink_to(0);
        assert!(store.contains(&output));
        store.unpin(&output);
        store.unpin(&output);
        assert_eq!(store.pinned_bytes(), 0);
        put(&store, &[11; 70]);
        assert!(!store.contains(&output), "evictable once unpinned");
    }

    #[test]
    fn content_that_fits_only_by_evicting_pinned_content_is_refused_and_evicts_nothing() {
        let folder = tempfile::tempdir().expect("tempdir");
        let store = Arc::new(ContentStore::open(folder.path(), 100).expect("opens"));
        let pinned = ContentId::of(&[1; 60]);
        store.put_pinned(pinned, &[1; 60]).expect("stored");
        let cached = put(&store, &[2; 30]);

        let refused = store.put_pinned(ContentId::of(&[3; 50]), &[3; 50]);
        let Err(error @ StoreError::TooLarge { .. }) = refused else {
            panic!("stored past pinned content: {refused:?}");
        };
        assert_eq!(
            error.to_string(),
            "50 bytes is more than this store keeps (100, 60 of them pinned)"
        );
        assert!(matches!(
            store.put(ContentId::of(&[4; 41]), &[4; 41]),
            Err(StoreError::TooLarge { pinned: 60, .. })
        ));
        assert!(matches!(store.writer(41), Err(StoreError::TooLarge { .. })));
        assert!(matches!(
            store.resume_writer(ContentId::of(&[5; 41]), 41),
            Err(StoreError::TooLarge { .. })
        ));
        assert_eq!(
            (store.bytes(), store.len()),
            (90, 2),
            "nothing was evicted or left held for the refused content"
        );
        assert!(store.contains(&cached));

        // What fits beside the pinned content evicts only what is not.
        let fits = put(&store, &[6; 40]);
        assert!(store.contains(&pinned) && store.contains(&fits));
        assert!(!store.contains(&cached));

        // Pinned content damaged on disk is forgotten, pin and all.
        std::fs::write(store.file(&pinned), b"not it").expect("damage");
        assert!(store.read(&pinned).is_none());
        assert_eq!(store.pinned_bytes(), 0);
        store.unpin(&pinned);
        assert_eq!(store.pinned_bytes(), 0);
    }

    impl ContentStore {
        fn path_exists(&self, cid: &ContentId) -> bool {
            self.file(cid).exists()
        }
    }
}
