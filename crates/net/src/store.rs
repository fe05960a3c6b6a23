//! Content kept on disk by id, bounded in bytes: a folder of files named by
//! their BLAKE3 hex, the least recently used deleted to make room. A
//! provider keeps the modules it fetched here (and serves them to peers), a
//! gateway the blobs its HTTP clients upload.
//!
//! What an earlier run left is kept (oldest first out); a file whose bytes
//! are no longer its id is deleted when read.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::SystemTime;

use idlegrid_types::ContentId;

/// Why content could not be stored.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{len} bytes is more than this store keeps ({max})")]
    TooLarge { len: u64, max: u64 },
    #[error("failed to store {cid} in {}: {source}", dir.display())]
    Io {
        cid: ContentId,
        dir: PathBuf,
        source: std::io::Error,
    },
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
    total: u64,
    clock: u64,
}

impl Inner {
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

    /// Forgets the least recently used until at most `bytes` are held;
    /// gives what was forgotten (its files are the caller's to delete).
    fn evict_to(&mut self, bytes: u64) -> Vec<ContentId> {
        let mut evicted = Vec::new();
        while self.total > bytes {
            let Some((&oldest, _)) = self.items.iter().min_by_key(|(_, (_, used))| *used) else {
                break;
            };
            self.forget(&oldest);
            evicted.push(oldest);
        }
        evicted
    }

    fn forget(&mut self, cid: &ContentId) {
        if let Some((size, _)) = self.items.remove(cid) {
            self.total -= size;
        }
    }
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
        store.make_room(0);
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
    /// together).
    fn make_room(&self, incoming: u64) {
        let evicted = {
            let mut inner = self.inner();
            let evicted = inner.evict_to(self.bytes_max.saturating_sub(incoming));
            inner.total += incoming;
            evicted
        };
        self.delete(evicted);
    }

    fn delete(&self, evicted: Vec<ContentId>) {
        for cid in evicted {
            let _ = std::fs::remove_file(self.file(&cid));
        }
    }

    /// Stores `bytes` (whose id the caller computed or checked): whether
    /// they are new here.
    pub fn put(&self, cid: ContentId, bytes: &[u8]) -> Result<bool, StoreError> {
        let size = bytes.len() as u64;
        if self.inner().touch(&cid) {
            return Ok(false);
        }
        if size > self.bytes_max {
            return Err(StoreError::TooLarge {
                len: size,
                max: self.bytes_max,
            });
        }
        self.make_room(size);
        let path = self.file(&cid);
        let partial = path.with_extension("partial");
        let written =
            std::fs::write(&partial, bytes).and_then(|()| std::fs::rename(&partial, &path));
        let mut inner = self.inner();
        if let Err(source) = written {
            inner.total -= size;
            let _ = std::fs::remove_file(&partial);
            return Err(StoreError::Io {
                cid,
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
        Ok(true)
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

    /// Deletes the least recently used until at most `bytes` are held.
    pub fn shrink_to(&self, bytes: u64) {
        let evicted = self.inner().evict_to(bytes);
        self.delete(evicted);
    }

    /// The folder it keeps its files in.
    pub fn dir(&self) -> &Path {
        &self.dir
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

    impl ContentStore {
        fn path_exists(&self, cid: &ContentId) -> bool {
            self.file(cid).exists()
        }
    }
}
