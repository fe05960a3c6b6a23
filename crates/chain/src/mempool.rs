//! Transactions waiting for a block: bounded in count, bytes and nonces per
//! account; proposed in fee order across accounts and nonce order within
//! one.

use std::collections::{BTreeMap, BTreeSet, BinaryHeap, HashMap, VecDeque};

use idlegrid_ledger::{
    BuiltBlock, Ledger, LedgerError, Rejection, SignedTransaction, Store, transaction_hash,
};
use idlegrid_types::{AccountId, ContentId, ReExecute, codec};

/// Every bound of the pool.
#[derive(Debug, Clone)]
pub struct MempoolConfig {
    pub transactions_max: usize,
    pub bytes_max: usize,
    /// How far past an account's next nonce a transaction may wait.
    pub nonces_ahead_max: u64,
}

impl Default for MempoolConfig {
    fn default() -> Self {
        Self {
            transactions_max: 50_000,
            bytes_max: 64 << 20,
            nonces_ahead_max: 64,
        }
    }
}

/// Why a transaction was not taken into the pool.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("already pending")]
    Duplicate,
    #[error("nonce {found} was already used; the account's next nonce is {next}")]
    StaleNonce { next: u64, found: u64 },
    #[error("nonce {found} is too far ahead of the account's next nonce {next}")]
    NonceTooFarAhead { next: u64, found: u64 },
    #[error("a transaction with this nonce and a fee of at least {fee} is already pending")]
    FeeTooLowToReplace { fee: u64 },
    #[error("the pool is full of transactions paying at least {fee}")]
    PoolFull { fee: u64 },
    #[error("{0}")]
    Rejected(Rejection),
    /// The node could not read its own state (not the sender's fault).
    #[error("the ledger could not be read: {0}")]
    Unavailable(String),
}

impl Refused {
    /// A stable snake_case name, for JSON.
    pub fn code(&self) -> &'static str {
        match self {
            Refused::Duplicate => "duplicate",
            Refused::StaleNonce { .. } => "stale_nonce",
            Refused::NonceTooFarAhead { .. } => "nonce_too_far_ahead",
            Refused::FeeTooLowToReplace { .. } => "fee_too_low_to_replace",
            Refused::PoolFull { .. } => "pool_full",
            Refused::Rejected(rejection) => rejection.code(),
            Refused::Unavailable(_) => "unavailable",
        }
    }
}

#[derive(Debug)]
struct Pending {
    transaction: SignedTransaction,
    hash: ContentId,
    bytes: usize,
}

/// How many dropped transactions the pool remembers the reason for.
const DROPPED_REMEMBERED: usize = 65_536;

/// The pool. Deterministic: the same inserts give the same proposals.
#[derive(Debug, Default)]
pub struct Mempool {
    config: MempoolConfig,
    accounts: HashMap<AccountId, BTreeMap<u64, Pending>>,
    hashes: HashMap<ContentId, (AccountId, u64)>,
    /// (fee, hash) of everything pending: the cheapest is evicted first.
    by_fee: BTreeSet<(u64, ContentId)>,
    bytes: usize,
    /// Why recently dropped transactions left (bounded, oldest forgotten).
    dropped: HashMap<ContentId, Rejection>,
    dropped_order: VecDeque<ContentId>,
}

impl Mempool {
    pub fn new(config: MempoolConfig) -> Self {
        Self {
            config,
            ..Self::default()
        }
    }

    pub fn len(&self) -> usize {
        self.hashes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.hashes.is_empty()
    }

    pub fn bytes(&self) -> usize {
        self.bytes
    }

    pub fn contains(&self, hash: &ContentId) -> bool {
        self.hashes.contains_key(hash)
    }

    /// Why a transaction that was pending left the pool without a block,
    /// if it did so recently.
    pub fn dropped(&self, hash: &ContentId) -> Option<&Rejection> {
        self.dropped.get(hash)
    }

    /// The first nonce at or after `from` (the account's next nonce on the
    /// ledger) that no pending transaction of `account` holds: the nonce
    /// its next new transaction should carry.
    pub fn next_nonce(&self, account: &AccountId, from: u64) -> u64 {
        let mut next = from;
        if let Some(held) = self.accounts.get(account) {
            for nonce in held.range(from..).map(|(nonce, _)| *nonce) {
                if nonce != next {
                    break;
                }
                next += 1;
            }
        }
        next
    }

    fn remember_dropped(&mut self, hash: ContentId, rejection: Rejection) {
        if self.dropped.insert(hash, rejection).is_none() {
            self.dropped_order.push_back(hash);
        }
        while self.dropped_order.len() > DROPPED_REMEMBERED {
            if let Some(old) = self.dropped_order.pop_front() {
                self.dropped.remove(&old);
            }
        }
    }

    /// Takes a transaction in, or says why not. The next transaction of an
    /// account must apply on the current state; later ones must carry a
    /// valid signature and wait their turn.
    pub fn insert<S: Store>(
        &mut self,
        transaction: SignedTransaction,
        ledger: &Ledger<S>,
        executor: &dyn ReExecute,
    ) -> Result<ContentId, Refused> {
        let hash = transaction_hash(&transaction);
        if self.hashes.contains_key(&hash) {
            return Err(Refused::Duplicate);
        }
        let sender = transaction.signer;
        let nonce = transaction.body.nonce;
        let fee = transaction.body.fee;
        let next = ledger
            .account(&sender)
            .map(|account| account.nonce)
            .map_err(|error| Refused::Unavailable(error.to_string()))?;
        if nonce < next {
            return Err(Refused::StaleNonce { next, found: nonce });
        }
        if nonce - next >= self.config.nonces_ahead_max {
            return Err(Refused::NonceTooFarAhead { next, found: nonce });
        }
        if nonce == next {
            match ledger.check(&transaction, executor) {
                Ok(Ok(_)) => {}
                Ok(Err(rejection)) => return Err(Refused::Rejected(rejection)),
                Err(error) => return Err(Refused::Unavailable(error.to_string())),
            }
        } else if let Err(rejection) = ledger.verify_signature(&transaction) {
            return Err(Refused::Rejected(rejection));
        }
        let replaced = match self.accounts.get(&sender).and_then(|held| held.get(&nonce)) {
            Some(current) if current.transaction.body.fee >= fee => {
                return Err(Refused::FeeTooLowToReplace {
                    fee: current.transaction.body.fee,
                });
            }
            Some(current) => Some(current.hash),
            None => None,
        };
        let bytes = codec::encode(&transaction).map_or(usize::MAX, |encoded| encoded.len());
        if let Some(old) = replaced {
            self.remove(&old);
        }
        while self.len() >= self.config.transactions_max
            || self.bytes.saturating_add(bytes) > self.config.bytes_max
        {
            let Some(&(cheapest_fee, cheapest)) = self.by_fee.first() else {
                break;
            };
            if cheapest_fee >= fee {
                return Err(Refused::PoolFull { fee: cheapest_fee });
            }
            self.evict(&cheapest);
        }
        self.bytes += bytes;
        self.hashes.insert(hash, (sender, nonce));
        self.by_fee.insert((fee, hash));
        self.accounts.entry(sender).or_default().insert(
            nonce,
            Pending {
                transaction,
                hash,
                bytes,
            },
        );
        Ok(hash)
    }

    /// Removes one transaction (included, dropped or replaced).
    fn remove(&mut self, hash: &ContentId) -> Option<SignedTransaction> {
        let (sender, nonce) = self.hashes.remove(hash)?;
        let held = self.accounts.get_mut(&sender)?;
        let pending = held.remove(&nonce)?;
        if held.is_empty() {
            self.accounts.remove(&sender);
        }
        self.by_fee
            .remove(&(pending.transaction.body.fee, pending.hash));
        self.bytes -= pending.bytes;
        Some(pending.transaction)
    }

    /// Evicts a transaction and the same account's later ones, which could
    /// never apply without it.
    fn evict(&mut self, hash: &ContentId) {
        let Some(&(sender, nonce)) = self.hashes.get(hash) else {
            return;
        };
        let later: Vec<ContentId> = self
            .accounts
            .get(&sender)
            .map(|held| {
                held.range(nonce..)
                    .map(|(_, pending)| pending.hash)
                    .collect()
            })
            .unwrap_or_default();
        for hash in later {
            self.remove(&hash);
        }
    }

    /// The next block's transactions: each account's run of consecutive
    /// nonces from its next one, accounts interleaved by the fee of their
    /// next transaction (highest first, ties by hash), each checked on top
    /// of the ones before. Dropped transactions leave the pool; their
    /// reasons come back in the selection.
    pub fn propose<S: Store>(
        &mut self,
        ledger: &Ledger<S>,
        time_ms: u64,
        max_count: usize,
        max_bytes: usize,
        executor: &dyn ReExecute,
    ) -> Result<BuiltBlock, LedgerError> {
        // Each account's executable run, in nonce order.
        let mut runs: Vec<Vec<&Pending>> = Vec::new();
        let mut senders: Vec<&AccountId> = self.accounts.keys().collect();
        senders.sort();
        for sender in senders {
            let next = ledger.account(sender)?.nonce;
            let mut run = Vec::new();
            for (nonce, pending) in self.accounts[sender].range(next..) {
                if *nonce != next + run.len() as u64 {
                    break;
                }
                run.push(pending);
            }
            if !run.is_empty() {
                run.reverse();
                runs.push(run);
            }
        }
        // Merge the runs by the fee of each one's head.
        let mut heads: BinaryHeap<(u64, ContentId, usize)> = runs
            .iter()
            .enumerate()
            .filter_map(|(index, run)| {
                run.last()
                    .map(|head| (head.transaction.body.fee, head.hash, index))
            })
            .collect();
        let mut ordered = Vec::new();
        while let Some((_, _, index)) = heads.pop() {
            let Some(head) = runs[index].pop() else {
                continue;
            };
            ordered.push(head.transaction.clone());
            if let Some(next) = runs[index].last() {
                heads.push((next.transaction.body.fee, next.hash, index));
            }
        }
        let built = ledger.build_block(time_ms, ordered, max_count, max_bytes, executor)?;
        for (hash, rejection) in &built.selection.dropped {
            self.remove(hash);
            self.remember_dropped(*hash, rejection.clone());
        }
        Ok(built)
    }

    /// After a block is finalized and applied: forgets what it included and
    /// anything its senders can no longer use (nonces below their next).
    pub fn finalized<S: Store>(
        &mut self,
        included: &[SignedTransaction],
        ledger: &Ledger<S>,
    ) -> Result<(), LedgerError> {
        let mut senders: Vec<AccountId> = included.iter().map(|tx| tx.signer).collect();
        senders.sort();
        senders.dedup();
        for sender in senders {
            let next = ledger.account(&sender)?.nonce;
            let stale: Vec<ContentId> = self
                .accounts
                .get(&sender)
                .map(|held| {
                    held.range(..next)
                        .map(|(_, pending)| pending.hash)
                        .collect()
                })
                .unwrap_or_default();
            for hash in stale {
                self.remove(&hash);
            }
        }
        Ok(())
    }
}
