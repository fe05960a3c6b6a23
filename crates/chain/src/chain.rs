//! The ledger as a node sees it between consensus and storage: the
//! finalized state, plus blocks proposed or verified on top of it but not
//! final yet, each executed over its ancestors' writes without committing.

use std::collections::HashMap;

use idlegrid_ledger::{BlockOutcome, Layered, Ledger, LedgerError, Rejection, Store, WriteBatch};
use idlegrid_types::codec::Bounded;
use idlegrid_types::{ContentId, ReExecute};

use crate::block::{
    BLOCK_BYTES_MAX, BLOCK_TIME_DRIFT_MS, BLOCK_TRANSACTIONS_MAX, Block, genesis_digest,
};
use crate::mempool::Mempool;

/// Why a block is not valid on this chain.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Invalid {
    #[error("its parent {0} is unknown")]
    UnknownParent(ContentId),
    #[error("its height is {found}, its parent's is {parent}")]
    WrongHeight { parent: u64, found: u64 },
    #[error("it names the parent state root {found}, the parent left {expected}")]
    WrongParentStateRoot { expected: String, found: String },
    #[error("it is {bytes} bytes, above {max}")]
    TooLarge { bytes: usize, max: usize },
    #[error("transaction {index} would not apply: {rejection}")]
    Transaction { index: usize, rejection: Rejection },
    #[error("its time {time_ms} ms is more than the allowed drift past this clock's {now_ms} ms")]
    FromTheFuture { time_ms: u64, now_ms: u64 },
}

#[derive(Debug, thiserror::Error)]
pub enum ChainError {
    #[error(transparent)]
    Invalid(#[from] Invalid),
    #[error(transparent)]
    Ledger(#[from] LedgerError),
    #[error("finalized block {found} does not extend the last finalized block {expected}")]
    OutOfOrder {
        expected: ContentId,
        found: ContentId,
    },
    #[error("the ledger is at height {height} but does not record which block it applied there")]
    UnknownTip { height: u64 },
    #[error("block {height} applied to state root {applied}, but it was verified as {verified}")]
    Diverged {
        height: u64,
        applied: String,
        verified: String,
    },
}

#[derive(Debug)]
struct Pending {
    parent: ContentId,
    height: u64,
    writes: WriteBatch,
    outcome: BlockOutcome,
}

/// What finalizing a block did.
#[derive(Debug)]
pub enum Finalized {
    Applied(BlockOutcome),
    /// Already part of the ledger (finalized blocks may be delivered again
    /// after a restart).
    AlreadyApplied,
}

/// The finalized ledger and the pending blocks above it.
#[derive(Debug)]
pub struct Chain<S: Store> {
    ledger: Ledger<S>,
    /// The digest of the last finalized block.
    tip: ContentId,
    pending: HashMap<ContentId, Pending>,
    transactions_max: usize,
    bytes_max: usize,
}

fn hex(root: &[u8; 32]) -> String {
    root.iter().map(|byte| format!("{byte:02x}")).collect()
}

impl<S: Store> Chain<S> {
    /// A chain over a ledger: its tip is the last block the ledger applied
    /// (the genesis digest for a fresh ledger). A signature checked once
    /// (entering the pool, say) is not checked again for the same bytes.
    pub fn new(ledger: Ledger<S>) -> Result<Self, ChainError> {
        let ledger = match ledger.signature_cache() {
            Some(_) => ledger,
            None => ledger.with_signature_cache(Default::default()),
        };
        let tip = match ledger.height() {
            0 => genesis_digest(ledger.chain_id()),
            height => ledger
                .block_id(height)?
                .ok_or(ChainError::UnknownTip { height })?,
        };
        Ok(Self {
            ledger,
            tip,
            pending: HashMap::new(),
            transactions_max: BLOCK_TRANSACTIONS_MAX,
            bytes_max: BLOCK_BYTES_MAX,
        })
    }

    /// Limits blocks this node proposes and accepts (at most the protocol's).
    pub fn with_limits(mut self, transactions_max: usize, bytes_max: usize) -> Self {
        self.transactions_max = transactions_max.min(BLOCK_TRANSACTIONS_MAX);
        self.bytes_max = bytes_max.min(BLOCK_BYTES_MAX);
        self
    }

    pub fn ledger(&self) -> &Ledger<S> {
        &self.ledger
    }

    pub fn tip(&self) -> ContentId {
        self.tip
    }

    /// Whether `digest` is the tip or a pending block (a block on it can be
    /// checked).
    pub fn knows(&self, digest: &ContentId) -> bool {
        *digest == self.tip || self.pending.contains_key(digest)
    }

    /// Blocks verified but not final.
    pub fn pending_count(&self) -> usize {
        self.pending.len()
    }

    /// The state after `parent`, as a ledger over the committed store and
    /// the writes of `parent`'s pending ancestors.
    fn view(&self, parent: ContentId) -> Result<Ledger<Layered<'_, S>>, ChainError> {
        let mut layers = Vec::new();
        let mut cursor = parent;
        while cursor != self.tip {
            let pending = self
                .pending
                .get(&cursor)
                .ok_or(Invalid::UnknownParent(parent))?;
            layers.push(&pending.writes);
            cursor = pending.parent;
        }
        layers.reverse();
        let view = Ledger::open(Layered::new(self.ledger.store(), layers))?;
        Ok(match self.ledger.signature_cache() {
            Some(cache) => view.with_signature_cache(cache.clone()),
            None => view,
        })
    }

    /// Builds a block on `parent` from the mempool (dropping what no longer
    /// applies) and keeps it as pending, executed once: building it
    /// executed it. Its time is `now_ms`, or its parent's if that is later.
    pub fn propose(
        &mut self,
        parent: ContentId,
        now_ms: u64,
        mempool: &mut Mempool,
        executor: &dyn ReExecute,
    ) -> Result<Block, ChainError> {
        let view = self.view(parent)?;
        let time_ms = now_ms.max(view.time_ms()?);
        // Leave room for the block's own fields.
        let room = self.bytes_max.saturating_sub(1024);
        let built = mempool.propose(&view, time_ms, self.transactions_max, room, executor)?;
        let block = Block {
            parent,
            height: view.height() + 1,
            time_ms,
            parent_state_root: view.state_root(),
            transactions: Bounded::new(built.selection.included).map_err(|_| {
                Invalid::TooLarge {
                    bytes: usize::MAX,
                    max: self.bytes_max,
                }
            })?,
        };
        drop(view);
        self.pending.insert(
            block.digest(),
            Pending {
                parent,
                height: block.height,
                writes: built.writes,
                outcome: built.outcome,
            },
        );
        Ok(block)
    }

    /// Checks a block proposed by someone else: known parent, next height,
    /// the parent's state root, a time not before its parent's nor more
    /// than [`BLOCK_TIME_DRIFT_MS`] past `now_ms`, within limits, and every
    /// transaction applies. A valid block is kept as pending.
    pub fn verify(
        &mut self,
        block: &Block,
        now_ms: u64,
        executor: &dyn ReExecute,
    ) -> Result<(), ChainError> {
        self.verify_named(block, block.digest(), now_ms, executor)
    }

    /// [`Chain::verify`] for a block whose digest the caller already has
    /// (consensus carries it), so it is not computed again.
    pub fn verify_named(
        &mut self,
        block: &Block,
        digest: ContentId,
        now_ms: u64,
        executor: &dyn ReExecute,
    ) -> Result<(), ChainError> {
        if self.pending.contains_key(&digest) {
            return Ok(());
        }
        if block.time_ms > now_ms.saturating_add(BLOCK_TIME_DRIFT_MS) {
            return Err(Invalid::FromTheFuture {
                time_ms: block.time_ms,
                now_ms,
            }
            .into());
        }
        let bytes = block.encode().len();
        if bytes > self.bytes_max || block.transactions.len() > self.transactions_max {
            return Err(Invalid::TooLarge {
                bytes,
                max: self.bytes_max,
            }
            .into());
        }
        let view = self.view(block.parent)?;
        if block.height != view.height() + 1 {
            return Err(Invalid::WrongHeight {
                parent: view.height(),
                found: block.height,
            }
            .into());
        }
        if block.parent_state_root != view.state_root() {
            return Err(Invalid::WrongParentStateRoot {
                expected: hex(&view.state_root()),
                found: hex(&block.parent_state_root),
            }
            .into());
        }
        let (writes, outcome) =
            view.execute_block(block.height, block.time_ms, &block.transactions, executor)?;
        if let Some((index, rejection)) = outcome
            .transactions
            .iter()
            .enumerate()
            .find_map(|(index, tx)| tx.outcome.clone().err().map(|rejection| (index, rejection)))
        {
            return Err(Invalid::Transaction { index, rejection }.into());
        }
        drop(view);
        self.pending.insert(
            digest,
            Pending {
                parent: block.parent,
                height: block.height,
                writes,
                outcome,
            },
        );
        Ok(())
    }

    /// Applies a finalized block to the ledger, once: a block at or below
    /// the ledger's height is acknowledged without applying it again.
    /// Pending blocks that can no longer become final are dropped.
    pub fn finalize(
        &mut self,
        block: &Block,
        executor: &dyn ReExecute,
    ) -> Result<Finalized, ChainError> {
        self.finalize_named(block, block.digest(), executor)
    }

    /// [`Chain::finalize`] for a block whose digest the caller already has.
    pub fn finalize_named(
        &mut self,
        block: &Block,
        digest: ContentId,
        executor: &dyn ReExecute,
    ) -> Result<Finalized, ChainError> {
        if block.height <= self.ledger.height() {
            return Ok(Finalized::AlreadyApplied);
        }
        if block.parent != self.tip {
            return Err(ChainError::OutOfOrder {
                expected: self.tip,
                found: digest,
            });
        }
        let outcome = match self.pending.remove(&digest) {
            // Executed over exactly the committed state when it was
            // verified: commit those writes rather than execute it again.
            Some(pending) if pending.parent == self.tip => {
                self.ledger
                    .commit_executed(digest, pending.writes, &pending.outcome)?;
                pending.outcome
            }
            pending => {
                let outcome = self.ledger.apply_named_block(
                    digest,
                    block.height,
                    block.time_ms,
                    &block.transactions,
                    executor,
                )?;
                if let Some(pending) = pending
                    && pending.outcome.state_root != outcome.state_root
                {
                    return Err(ChainError::Diverged {
                        height: block.height,
                        applied: hex(&outcome.state_root),
                        verified: hex(&pending.outcome.state_root),
                    });
                }
                outcome
            }
        };
        self.tip = digest;
        // Children of this block stay valid; its height's siblings and
        // everything on them do not. Ancestry is rebuilt from the new tip.
        self.prune();
        Ok(Finalized::Applied(outcome))
    }

    /// Drops pending blocks that do not descend from the tip.
    fn prune(&mut self) {
        let height = self.ledger.height();
        let mut keep: HashMap<ContentId, bool> = HashMap::new();
        let digests: Vec<ContentId> = self.pending.keys().copied().collect();
        for digest in digests {
            let mut path = Vec::new();
            let mut cursor = digest;
            let verdict = loop {
                if cursor == self.tip {
                    break true;
                }
                if let Some(&known) = keep.get(&cursor) {
                    break known;
                }
                match self.pending.get(&cursor) {
                    Some(pending) if pending.height > height => {
                        path.push(cursor);
                        cursor = pending.parent;
                    }
                    _ => break false,
                }
            };
            for step in path {
                keep.insert(step, verdict);
            }
        }
        self.pending
            .retain(|digest, _| keep.get(digest).copied().unwrap_or(false));
    }
}
