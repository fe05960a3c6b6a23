//! The blobs HTTP clients upload to a gateway (modules, task inputs): a
//! [`ContentStore`] (files by BLAKE3 hex, bounded in bytes, least recently
//! used out) whose failures are answers in the API's shape.
//!
//! A job reads the blobs it names when it is created and serves them to
//! providers while it runs: each is pinned ([`BlobPin`]) until the job
//! ends, so no upload evicts it meanwhile.

use std::path::Path;
use std::sync::Arc;

use axum::http::StatusCode;
use idlegrid_net::{ContentStore, StoreError};
use idlegrid_types::ContentId;

use crate::refusal::Refusal;

/// Largest blob taken, bytes: a job's module (8 MiB) is the largest thing
/// a job reads from one.
pub const BLOB_BYTES_MAX: usize = 8 << 20;
/// Bytes of blobs a gateway keeps at most, by default.
pub const BLOB_STORE_BYTES_DEFAULT: u64 = 4 << 30;

/// Uploaded blobs by content id.
#[derive(Debug)]
pub struct BlobStore(Arc<ContentStore>);

/// A blob kept from eviction while a job needs it; let go when dropped.
#[derive(Debug)]
pub struct BlobPin {
    store: Arc<ContentStore>,
    cid: ContentId,
}

impl Drop for BlobPin {
    fn drop(&mut self) {
        self.store.unpin(&self.cid);
    }
}

impl BlobStore {
    /// The store in `dir`, holding at most `bytes_max` bytes (what an
    /// earlier run uploaded is kept, within the bound).
    pub fn open(dir: &Path, bytes_max: u64) -> anyhow::Result<Self> {
        ContentStore::open(dir, bytes_max)
            .map(|store| Self(Arc::new(store)))
            .map_err(|error| {
                anyhow::anyhow!("failed to open the blob folder {}: {error}", dir.display())
            })
    }

    /// Stores `bytes`: their content id, and whether they are new here.
    pub fn put(&self, bytes: &[u8]) -> Result<(ContentId, bool), Refusal> {
        let cid = ContentId::of(bytes);
        match self.0.put(cid, bytes) {
            Ok(new) => Ok((cid, new)),
            Err(error @ StoreError::TooLarge { .. }) => Err(Refusal::new(
                StatusCode::INSUFFICIENT_STORAGE,
                "storage_full",
                error.to_string(),
            )),
            Err(error @ (StoreError::Io { .. } | StoreError::Read { .. })) => {
                Err(Refusal::internal(error.to_string()))
            }
        }
    }

    /// The answer to a peer's request for a blob (its tree or a chunk);
    /// `None` for other requests.
    pub fn answer(&self, request: &idlegrid_net::Request) -> Option<idlegrid_net::Response> {
        self.0.answer(request)
    }

    /// The blob's bytes, if held and whole.
    pub fn read(&self, cid: &ContentId) -> Option<Vec<u8>> {
        self.0.read(cid)
    }

    /// Keeps the blob from eviction until the pin is dropped; `None` when it
    /// is not held.
    pub fn pin(&self, cid: &ContentId) -> Option<BlobPin> {
        self.0.pin(cid).then(|| BlobPin {
            store: Arc::clone(&self.0),
            cid: *cid,
        })
    }

    /// Where the blob is, if held (a job file names it by this path).
    pub fn path(&self, cid: &ContentId) -> Option<std::path::PathBuf> {
        self.0.path(cid)
    }

    /// The folder the blobs are in.
    pub fn dir(&self) -> &Path {
        self.0.dir()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blobs_are_stored_by_content_id_and_a_blob_above_the_bound_is_507() {
        let folder = tempfile::tempdir().expect("tempdir");
        let store = BlobStore::open(folder.path(), 100).expect("opens");
        let (cid, new) = store.put(&[1; 40]).expect("stored");
        assert_eq!((cid, new), (ContentId::of(&[1; 40]), true));
        assert_eq!(store.put(&[1; 40]).expect("again"), (cid, false));
        assert_eq!(store.read(&cid).as_deref(), Some(&[1u8; 40][..]));
        let refused = store.put(&[4; 101]).expect_err("larger than the store");
        assert_eq!(
            (refused.status, refused.code),
            (StatusCode::INSUFFICIENT_STORAGE, "storage_full")
        );
    }
}
