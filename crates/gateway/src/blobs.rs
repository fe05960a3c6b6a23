//! The blobs HTTP clients upload to a gateway (modules, task inputs), by
//! content id, in a folder of files named by their BLAKE3 hex, bounded in
//! bytes: the least recently used make room for new ones.
//!
//! A job reads the blobs it names when it is created, so an upload is
//! needed only until then.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};

use anyhow::Context;
use axum::http::StatusCode;
use idlegrid_types::ContentId;

use crate::refusal::Refusal;

/// Largest blob taken, bytes: a job's module (8 MiB) is the largest thing
/// a job reads from one.
pub const BLOB_BYTES_MAX: usize = 8 << 20;
/// Bytes of blobs a gateway keeps at most, by default.
pub const BLOB_STORE_BYTES_DEFAULT: u64 = 4 << 30;

/// Blobs on disk by content id.
#[derive(Debug)]
pub struct BlobStore {
    dir: PathBuf,
    bytes_max: u64,
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    /// Each blob's size and when it was last used (a counter).
    blobs: HashMap<ContentId, (u64, u64)>,
    total: u64,
    clock: u64,
}

impl Inner {
    fn touch(&mut self, cid: &ContentId) -> bool {
        self.clock += 1;
        let clock = self.clock;
        match self.blobs.get_mut(cid) {
            Some(entry) => {
                entry.1 = clock;
                true
            }
            None => false,
        }
    }
}

impl BlobStore {
    /// A store in `dir` holding at most `bytes_max` bytes. Blob files left
    /// there by an earlier run are deleted (no job of that run survives it).
    pub fn open(dir: &Path, bytes_max: u64) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("failed to create the blob folder {}", dir.display()))?;
        for entry in std::fs::read_dir(dir)
            .with_context(|| format!("failed to read the blob folder {}", dir.display()))?
        {
            let entry = entry?;
            let name = entry.file_name();
            let name = name.to_string_lossy();
            let ours = name.len() == 64 && name.bytes().all(|byte| byte.is_ascii_hexdigit())
                || name.ends_with(".partial");
            if ours {
                std::fs::remove_file(entry.path())
                    .with_context(|| format!("failed to delete {}", entry.path().display()))?;
            }
        }
        Ok(Self {
            dir: dir.to_path_buf(),
            bytes_max,
            inner: Mutex::default(),
        })
    }

    fn inner(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn file(&self, cid: &ContentId) -> PathBuf {
        self.dir.join(hex::encode(cid.as_bytes()))
    }

    /// Stores `bytes`: their content id, and whether they are new here.
    /// The least recently used blobs are deleted to make room; a blob
    /// larger than the store is refused (`507`).
    pub fn put(&self, bytes: &[u8]) -> Result<(ContentId, bool), Refusal> {
        let cid = ContentId::of(bytes);
        let size = bytes.len() as u64;
        let evicted = {
            let mut inner = self.inner();
            if inner.touch(&cid) {
                return Ok((cid, false));
            }
            if size > self.bytes_max {
                return Err(Refusal::new(
                    StatusCode::INSUFFICIENT_STORAGE,
                    "storage_full",
                    format!(
                        "{size} bytes is more than this gateway keeps ({})",
                        self.bytes_max
                    ),
                ));
            }
            let mut evicted = Vec::new();
            while inner.total + size > self.bytes_max {
                let Some((&oldest, &(oldest_size, _))) =
                    inner.blobs.iter().min_by_key(|(_, (_, used))| *used)
                else {
                    break;
                };
                inner.blobs.remove(&oldest);
                inner.total -= oldest_size;
                evicted.push(oldest);
            }
            // Counted now, so concurrent uploads cannot pass the bound
            // together; given back if the write fails.
            inner.total += size;
            evicted
        };
        for old in evicted {
            let _ = std::fs::remove_file(self.file(&old));
        }
        let path = self.file(&cid);
        let partial = path.with_extension("partial");
        let written =
            std::fs::write(&partial, bytes).and_then(|()| std::fs::rename(&partial, &path));
        let mut inner = self.inner();
        if let Err(error) = written {
            inner.total -= size;
            let _ = std::fs::remove_file(&partial);
            return Err(Refusal::internal(format!(
                "failed to store the blob in {}: {error}",
                self.dir.display()
            )));
        }
        inner.clock += 1;
        let clock = inner.clock;
        if inner.blobs.insert(cid, (size, clock)).is_some() {
            // Another upload of the same bytes finished first.
            inner.total -= size;
        }
        Ok((cid, true))
    }

    /// The blob's bytes, if held.
    pub fn read(&self, cid: &ContentId) -> Option<Vec<u8>> {
        if !self.inner().touch(cid) {
            return None;
        }
        std::fs::read(self.file(cid)).ok()
    }

    /// Where the blob is, if held (a job file names it by this path).
    pub fn path(&self, cid: &ContentId) -> Option<PathBuf> {
        self.inner().touch(cid).then(|| self.file(cid))
    }

    /// The folder the blobs are in.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Bytes held.
    pub fn bytes(&self) -> u64 {
        self.inner().total
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blobs_are_kept_by_content_id_within_the_bound_least_recently_used_first() {
        let folder = tempfile::tempdir().expect("tempdir");
        std::fs::write(folder.path().join("not-a-blob.txt"), b"keep").expect("write");
        let store = BlobStore::open(folder.path(), 100).expect("opens");
        let (a, new) = store.put(&[1; 40]).expect("a");
        assert!(new);
        assert_eq!(store.put(&[1; 40]).expect("again"), (a, false));
        let (b, _) = store.put(&[2; 40]).expect("b");
        // `a` is used again, so `b` is the least recently used.
        assert!(store.read(&a).is_some());
        let (c, _) = store.put(&[3; 40]).expect("c evicts b");
        assert_eq!(store.read(&a).as_deref(), Some(&[1u8; 40][..]));
        assert!(store.read(&b).is_none());
        assert_eq!(store.read(&c).as_deref(), Some(&[3u8; 40][..]));
        assert_eq!(store.bytes(), 80);
        let refused = store.put(&[4; 101]).expect_err("larger than the store");
        assert_eq!(refused.code, "storage_full");
        // A new run starts empty and leaves other files alone.
        drop(store);
        let store = BlobStore::open(folder.path(), 100).expect("reopens");
        assert!(store.read(&a).is_none());
        assert!(folder.path().join("not-a-blob.txt").exists());
        assert_eq!(std::fs::read_dir(folder.path()).expect("dir").count(), 1);
    }
}
