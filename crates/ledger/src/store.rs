//! Where ledger state lives: a key-value store that commits one block's
//! writes atomically. In memory for tests, redb on disk for nodes.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};

use redb::{ReadableDatabase, TableDefinition};

/// Writes to commit together: `None` deletes the key.
pub type WriteBatch = BTreeMap<Vec<u8>, Option<Vec<u8>>>;

/// Key-value pairs in key order.
pub type Entries = Vec<(Vec<u8>, Vec<u8>)>;

/// A failure of the storage backend (disk full, corruption, …).
#[derive(Debug, Clone, thiserror::Error)]
#[error("ledger storage failed: {0}")]
pub struct StoreError(pub String);

/// An error of the redb file at `path`.
fn in_file(path: &Path, error: impl std::fmt::Display) -> StoreError {
    StoreError(format!("{}: {error}", path.display()))
}

/// An ordered key-value store with atomic batch commits.
pub trait Store {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError>;
    /// Every entry whose key starts with `prefix`, in key order.
    fn scan_prefix(&self, prefix: &[u8]) -> Result<Entries, StoreError>;
    /// The first `limit` entries whose key is in `start..end`, in key order
    /// (pruning reads what is due of a long index this way).
    fn scan_range(&self, start: &[u8], end: &[u8], limit: usize) -> Result<Entries, StoreError>;
    /// How many keys start with `prefix`.
    fn count_prefix(&self, prefix: &[u8]) -> Result<u64, StoreError> {
        Ok(self.scan_prefix(prefix)?.len() as u64)
    }
    /// Applies all of `batch` or none of it.
    fn commit(&mut self, batch: WriteBatch) -> Result<(), StoreError>;
}

/// A store in memory, for tests and simulations.
#[derive(Debug, Clone, Default)]
pub struct MemoryStore {
    entries: BTreeMap<Vec<u8>, Vec<u8>>,
}

impl Store for MemoryStore {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.entries.get(key).cloned())
    }

    fn scan_prefix(&self, prefix: &[u8]) -> Result<Entries, StoreError> {
        Ok(self
            .entries
            .range(prefix.to_vec()..)
            .take_while(|(key, _)| key.starts_with(prefix))
            .map(|(key, value)| (key.clone(), value.clone()))
            .collect())
    }

    fn scan_range(&self, start: &[u8], end: &[u8], limit: usize) -> Result<Entries, StoreError> {
        if start >= end {
            return Ok(Vec::new());
        }
        Ok(self
            .entries
            .range(start.to_vec()..end.to_vec())
            .take(limit)
            .map(|(key, value)| (key.clone(), value.clone()))
            .collect())
    }

    fn count_prefix(&self, prefix: &[u8]) -> Result<u64, StoreError> {
        Ok(self
            .entries
            .range(prefix.to_vec()..)
            .take_while(|(key, _)| key.starts_with(prefix))
            .count() as u64)
    }

    fn commit(&mut self, batch: WriteBatch) -> Result<(), StoreError> {
        for (key, value) in batch {
            match value {
                Some(value) => self.entries.insert(key, value),
                None => self.entries.remove(&key),
            };
        }
        Ok(())
    }
}

/// Applies the writes of `batch` under `prefix` to `entries`.
pub(crate) fn apply_under_prefix(
    entries: &mut BTreeMap<Vec<u8>, Vec<u8>>,
    batch: &WriteBatch,
    prefix: &[u8],
) {
    for (key, value) in batch
        .range(prefix.to_vec()..)
        .take_while(|(key, _)| key.starts_with(prefix))
    {
        match value {
            Some(value) => entries.insert(key.clone(), value.clone()),
            None => entries.remove(key),
        };
    }
}

/// The committed store seen through the writes of blocks not yet
/// committed (oldest first): how a node executes a block on top of a parent
/// that is proposed or notarized but not final. Read-only: `commit` fails.
#[derive(Debug)]
pub struct Layered<'a, S: Store> {
    base: &'a S,
    layers: Vec<&'a WriteBatch>,
}

impl<'a, S: Store> Layered<'a, S> {
    pub fn new(base: &'a S, layers: Vec<&'a WriteBatch>) -> Self {
        Self { base, layers }
    }
}

impl<S: Store> Store for Layered<'_, S> {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        for layer in self.layers.iter().rev() {
            if let Some(value) = layer.get(key) {
                return Ok(value.clone());
            }
        }
        self.base.get(key)
    }

    fn scan_prefix(&self, prefix: &[u8]) -> Result<Entries, StoreError> {
        let mut merged: BTreeMap<Vec<u8>, Vec<u8>> =
            self.base.scan_prefix(prefix)?.into_iter().collect();
        for layer in &self.layers {
            apply_under_prefix(&mut merged, layer, prefix);
        }
        Ok(merged.into_iter().collect())
    }

    /// Reads the whole range from the base, since the layers may delete
    /// any of its first `limit` entries (views read ranges rarely, and
    /// never prune).
    fn scan_range(&self, start: &[u8], end: &[u8], limit: usize) -> Result<Entries, StoreError> {
        let mut merged: BTreeMap<Vec<u8>, Vec<u8>> = self
            .base
            .scan_range(start, end, usize::MAX)?
            .into_iter()
            .collect();
        if start < end {
            for layer in &self.layers {
                for (key, value) in layer.range(start.to_vec()..end.to_vec()) {
                    match value {
                        Some(value) => merged.insert(key.clone(), value.clone()),
                        None => merged.remove(key),
                    };
                }
            }
        }
        Ok(merged.into_iter().take(limit).collect())
    }

    fn commit(&mut self, _batch: WriteBatch) -> Result<(), StoreError> {
        Err(StoreError(
            "a layered view of pending blocks cannot commit".to_owned(),
        ))
    }
}

const STATE: TableDefinition<'static, &[u8], &[u8]> = TableDefinition::new("ledger_state");

/// The state table as one read transaction sees it.
type ReadTable = redb::ReadOnlyTable<&'static [u8], &'static [u8]>;

/// The ledger in a redb file: one write transaction per block, durable when
/// `commit` returns.
///
/// Reads go through one read transaction kept open between commits (a
/// block's execution reads thousands of keys, and opening a transaction
/// and its table for each cost as much as the lookup itself). Every commit
/// drops it, so the next read sees the new state and redb can reuse the
/// pages the commit replaced. Clones share the file and the reader.
///
/// Every error names the file, so an operator knows which store is damaged.
#[derive(Clone)]
pub struct RedbStore {
    database: Arc<redb::Database>,
    reader: Arc<Mutex<Option<ReadTable>>>,
    path: Arc<Path>,
}

/// How much disk a [`RedbStore`] takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RedbStats {
    /// The file's length. redb doubles it when it runs out of free pages
    /// (up to 4 GiB, then a region at a time) and never shrinks it.
    pub file_bytes: u64,
    /// The pages in use: the data, its indexes and redb's own metadata.
    /// Pages a commit frees are reused by later commits.
    pub allocated_bytes: u64,
}

impl std::fmt::Debug for RedbStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedbStore").finish_non_exhaustive()
    }
}

impl RedbStore {
    /// Opens (or creates) the store at `path`.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let database = redb::Database::create(path).map_err(|error| in_file(path, error))?;
        let transaction = database
            .begin_write()
            .map_err(|error| in_file(path, error))?;
        transaction
            .open_table(STATE)
            .map_err(|error| in_file(path, error))?;
        transaction.commit().map_err(|error| in_file(path, error))?;
        Ok(Self {
            database: Arc::new(database),
            reader: Arc::default(),
            path: Arc::from(path),
        })
    }

    /// The file's length and the pages in use, as of the last commit.
    pub fn stats(&self) -> Result<RedbStats, StoreError> {
        let file_bytes = std::fs::metadata(&*self.path)
            .map_err(|error| self.failed(error))?
            .len();
        let transaction = self
            .database
            .begin_write()
            .map_err(|error| self.failed(error))?;
        let stats = transaction.stats().map_err(|error| self.failed(error))?;
        transaction.abort().map_err(|error| self.failed(error))?;
        Ok(RedbStats {
            file_bytes,
            allocated_bytes: stats.allocated_pages() * stats.page_size() as u64,
        })
    }

    /// An error of this store's file.
    fn failed(&self, error: impl std::fmt::Display) -> StoreError {
        in_file(&self.path, error)
    }

    /// Runs `read` on the state table as of the last commit (opened once
    /// per commit).
    fn with_table<T>(
        &self,
        read: impl FnOnce(&ReadTable) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let mut reader = self.reader_slot()?;
        let table = match reader.take() {
            Some(table) => table,
            None => self
                .database
                .begin_read()
                .map_err(|error| self.failed(error))?
                .open_table(STATE)
                .map_err(|error| self.failed(error))?,
        };
        let table = reader.insert(table);
        read(table)
    }

    fn reader_slot(&self) -> Result<MutexGuard<'_, Option<ReadTable>>, StoreError> {
        self.reader
            .lock()
            .map_err(|_| StoreError("the store's reader is poisoned".to_owned()))
    }

    /// Writes `batch` in a write transaction and drops it without committing:
    /// what a crash before commit leaves behind (for tests).
    pub fn abandon(&mut self, batch: WriteBatch) -> Result<(), StoreError> {
        let transaction = self
            .database
            .begin_write()
            .map_err(|error| self.failed(error))?;
        self.write_batch(&transaction, batch)?;
        transaction.abort().map_err(|error| self.failed(error))
    }

    fn write_batch(
        &self,
        transaction: &redb::WriteTransaction,
        batch: WriteBatch,
    ) -> Result<(), StoreError> {
        let mut table = transaction
            .open_table(STATE)
            .map_err(|error| self.failed(error))?;
        for (key, value) in batch {
            match value {
                Some(value) => {
                    table
                        .insert(key.as_slice(), value.as_slice())
                        .map_err(|error| self.failed(error))?;
                }
                None => {
                    table
                        .remove(key.as_slice())
                        .map_err(|error| self.failed(error))?;
                }
            }
        }
        Ok(())
    }
}

impl Store for RedbStore {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        self.with_table(|table| {
            Ok(table
                .get(key)
                .map_err(|error| self.failed(error))?
                .map(|value| value.value().to_vec()))
        })
    }

    fn scan_prefix(&self, prefix: &[u8]) -> Result<Entries, StoreError> {
        self.with_table(|table| {
            let mut entries = Vec::new();
            for entry in table.range(prefix..).map_err(|error| self.failed(error))? {
                let (key, value) = entry.map_err(|error| self.failed(error))?;
                if !key.value().starts_with(prefix) {
                    break;
                }
                entries.push((key.value().to_vec(), value.value().to_vec()));
            }
            Ok(entries)
        })
    }

    fn scan_range(&self, start: &[u8], end: &[u8], limit: usize) -> Result<Entries, StoreError> {
        if start >= end {
            return Ok(Vec::new());
        }
        self.with_table(|table| {
            let mut entries = Vec::new();
            for entry in table
                .range(start..end)
                .map_err(|error| self.failed(error))?
                .take(limit)
            {
                let (key, value) = entry.map_err(|error| self.failed(error))?;
                entries.push((key.value().to_vec(), value.value().to_vec()));
            }
            Ok(entries)
        })
    }

    fn count_prefix(&self, prefix: &[u8]) -> Result<u64, StoreError> {
        self.with_table(|table| {
            let mut count = 0;
            for entry in table.range(prefix..).map_err(|error| self.failed(error))? {
                let (key, _) = entry.map_err(|error| self.failed(error))?;
                if !key.value().starts_with(prefix) {
                    break;
                }
                count += 1;
            }
            Ok(count)
        })
    }

    fn commit(&mut self, batch: WriteBatch) -> Result<(), StoreError> {
        // Reads after the commit must see it, and an open read transaction
        // would keep the pages it replaces in use: the reader goes, and no
        // clone opens another until the commit is done.
        let mut reader = self.reader_slot()?;
        reader.take();
        let transaction = self
            .database
            .begin_write()
            .map_err(|error| self.failed(error))?;
        self.write_batch(&transaction, batch)?;
        transaction.commit().map_err(|error| self.failed(error))
    }
}
