//! A validator's state as its tasks share it: the chain, the mempool, the
//! re-executor, the transactions waiting to be relayed to the other
//! validators, and who signed the latest finalizations. No commonware
//! types: the HTTP API and the CLI use this.

use std::collections::BTreeMap;
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use idlegrid_ledger::{BlockOutcome, Ledger, SignedTransaction, Store, TxRecord};
use idlegrid_types::{AccountId, ContentId, ReExecute, SignatureCache};

use crate::chain::Chain;
use crate::mempool::{Mempool, Refused};
use crate::uptime::Uptime;

/// The most transactions waiting to be relayed; past it, new ones still
/// enter the local pool but only this validator will propose them.
pub const OUTBOX_MAX: usize = 100_000;

/// A validator's chain state and mempool.
pub struct Node<S: Store> {
    pub chain: Chain<S>,
    pub mempool: Mempool,
    pub executor: Box<dyn ReExecute + Send>,
    /// Accepted here, not yet relayed to the other validators.
    outbox: Vec<SignedTransaction>,
    /// When each other validator was last heard from on the relay channel.
    peers: BTreeMap<AccountId, Instant>,
    /// Who wants to hear of each finalized block.
    subscribers: Vec<SyncSender<FinalizedBlock>>,
    /// Transactions in blocks finalized since this node started.
    finalized: FinalizedCounts,
    /// Who signed the latest finalizations this node saw.
    pub uptime: Uptime,
}

/// Transactions in the blocks a node finalized since it started, by what
/// the ledger made of them (for metrics).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FinalizedCounts {
    pub applied: u64,
    /// Carried by a block but rejected by the ledger.
    pub rejected: u64,
}

/// A block this validator finalized and applied, as observers see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FinalizedBlock {
    pub height: u64,
    pub state_root: [u8; 32],
    /// Its transactions' hashes, in block order.
    pub transactions: Vec<ContentId>,
}

/// Finalized blocks a subscriber may fall behind by before it is dropped.
pub const SUBSCRIBER_BACKLOG: usize = 4_096;

impl<S: Store> std::fmt::Debug for Node<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node")
            .field("height", &self.chain.ledger().height())
            .field("pending", &self.mempool.len())
            .finish_non_exhaustive()
    }
}

/// The node as the engine's tasks and the API share it.
pub type SharedNode<S> = Arc<Mutex<Node<S>>>;

/// Where a transaction stands, as this validator knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TxStatus {
    /// In this validator's pool, waiting for a block.
    Pending,
    /// In a finalized block.
    Included(TxRecord),
    /// It left the pool without a block: it no longer applies.
    Dropped { code: String, message: String },
    /// Never seen, or forgotten.
    Unknown,
}

impl<S: Store> Node<S> {
    pub fn new(chain: Chain<S>, mempool: Mempool, executor: Box<dyn ReExecute + Send>) -> Self {
        Self {
            chain,
            mempool,
            executor,
            outbox: Vec::new(),
            peers: BTreeMap::new(),
            subscribers: Vec::new(),
            finalized: FinalizedCounts::default(),
            uptime: Uptime::default(),
        }
    }

    pub fn ledger(&self) -> &Ledger<S> {
        self.chain.ledger()
    }

    /// A transaction from a client: into the pool (checked against the
    /// finalized state) and queued for the other validators.
    pub fn submit(&mut self, transaction: SignedTransaction) -> Result<ContentId, Refused> {
        let hash = self.mempool.insert(
            transaction.clone(),
            self.chain.ledger(),
            self.executor.as_ref(),
        )?;
        if self.outbox.len() < OUTBOX_MAX {
            self.outbox.push(transaction);
        }
        Ok(hash)
    }

    /// A transaction another validator relayed: into the pool only.
    pub fn relayed(&mut self, transaction: SignedTransaction) -> Result<ContentId, Refused> {
        self.mempool
            .insert(transaction, self.chain.ledger(), self.executor.as_ref())
    }

    /// Takes what waits to be relayed.
    pub fn take_outbox(&mut self) -> Vec<SignedTransaction> {
        std::mem::take(&mut self.outbox)
    }

    /// Every block finalized from now on. A subscriber that falls
    /// [`SUBSCRIBER_BACKLOG`] blocks behind is dropped (its receiver then
    /// reports the channel closed).
    pub fn subscribe(&mut self) -> Receiver<FinalizedBlock> {
        let (sender, receiver) = sync_channel(SUBSCRIBER_BACKLOG);
        self.subscribers.push(sender);
        receiver
    }

    /// Counts a block just applied and tells subscribers of it.
    pub(crate) fn applied(&mut self, outcome: &BlockOutcome) {
        for transaction in &outcome.transactions {
            let count = match transaction.outcome {
                Ok(_) => &mut self.finalized.applied,
                Err(_) => &mut self.finalized.rejected,
            };
            *count = count.saturating_add(1);
        }
        if self.subscribers.is_empty() {
            return;
        }
        let block = FinalizedBlock {
            height: outcome.height,
            state_root: outcome.state_root,
            transactions: outcome.transactions.iter().map(|tx| tx.hash).collect(),
        };
        self.subscribers
            .retain(|subscriber| match subscriber.try_send(block.clone()) {
                Ok(()) => true,
                Err(TrySendError::Full(_)) => {
                    tracing::warn!("dropping a subscriber that fell behind");
                    false
                }
                Err(TrySendError::Disconnected(_)) => false,
            });
    }

    /// Transactions in blocks finalized since this node started.
    pub fn finalized_transactions(&self) -> FinalizedCounts {
        self.finalized
    }

    /// Notes that `peer` was heard from just now.
    pub fn heard_from(&mut self, peer: AccountId) {
        self.peers.insert(peer, Instant::now());
    }

    /// Other validators heard from, with how long ago.
    pub fn peers(&self) -> Vec<(AccountId, std::time::Duration)> {
        self.peers
            .iter()
            .map(|(peer, seen)| (*peer, seen.elapsed()))
            .collect()
    }

    pub fn status(&self, hash: &ContentId) -> Result<TxStatus, idlegrid_ledger::LedgerError> {
        if let Some(record) = self.chain.ledger().transaction(hash)? {
            return Ok(TxStatus::Included(record));
        }
        if self.mempool.contains(hash) {
            return Ok(TxStatus::Pending);
        }
        Ok(match self.mempool.dropped(hash) {
            Some(rejection) => TxStatus::Dropped {
                code: rejection.code().to_owned(),
                message: rejection.to_string(),
            },
            None => TxStatus::Unknown,
        })
    }
}

/// The node's signature cache, to check transactions' signatures before
/// taking the node's lock: a submit then finds them checked, and block
/// building is not held up behind signature checks.
pub fn signature_cache<S: Store>(node: &SharedNode<S>) -> Option<Arc<SignatureCache>> {
    node.lock().ok()?.ledger().signature_cache().cloned()
}

/// The most transactions [`submit_batch`] takes at once.
pub const SUBMIT_BATCH_MAX: usize = 1024;

/// [`Node::submit`] for each of `transactions`, in order, one answer each:
/// their signatures are checked as one batch before the node's lock is
/// taken, and the lock is then taken once for all of them, so a burst of
/// submissions costs consensus one short wait, not one per transaction.
/// At most [`SUBMIT_BATCH_MAX`] are taken; any beyond are refused as
/// `unavailable`.
pub fn submit_batch<S: Store>(
    node: &SharedNode<S>,
    transactions: Vec<SignedTransaction>,
) -> Vec<Result<ContentId, Refused>> {
    if let Some(cache) = signature_cache(node) {
        let taken = transactions.len().min(SUBMIT_BATCH_MAX);
        // A bad signature is refused by the submit below, with its reason.
        let _ = cache.verify_many(&transactions[..taken]);
    }
    let Ok(mut node) = node.lock() else {
        return transactions
            .iter()
            .map(|_| {
                Err(Refused::Unavailable(
                    "the node's state is poisoned by an earlier failure".to_owned(),
                ))
            })
            .collect();
    };
    transactions
        .into_iter()
        .enumerate()
        .map(|(index, transaction)| {
            if index < SUBMIT_BATCH_MAX {
                node.submit(transaction)
            } else {
                Err(Refused::Unavailable(format!(
                    "at most {SUBMIT_BATCH_MAX} transactions are taken at once"
                )))
            }
        })
        .collect()
}

/// The shared node for a ledger, its chain tip at the ledger's height.
pub fn shared<S: Store>(
    chain: Chain<S>,
    mempool: Mempool,
    executor: Box<dyn ReExecute + Send>,
) -> SharedNode<S> {
    Arc::new(Mutex::new(Node::new(chain, mempool, executor)))
}
