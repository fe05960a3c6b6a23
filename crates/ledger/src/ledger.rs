//! The ledger: genesis, applying blocks atomically, and the queries the node
//! and the CLI need.

use idlegrid_types::{AccountId, ContentId, JobId, ReExecute, TaskOutcome, codec};

use crate::apply::{self, BlockScope, Failure, META_CHAIN, META_HEIGHT, META_PARAMS, META_TIME};
use crate::genesis::{Genesis, Params};
use crate::prune::{self, TreeHistory};
use crate::root;
use crate::state::{
    Account, Delegation, Job, JobStatus, Overlay, Pool, ProviderRecord, Redemption, Stake, Supply,
    keys,
};
use crate::store::{Store, StoreError};
use crate::tx::{Event, Rejection, SignedTransaction, StakeRole, transaction_hash};

/// Why the ledger could not do what was asked (not a transaction's fault).
#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the next block must be at height {expected}, not {found}")]
    UnexpectedHeight { expected: u64, found: u64 },
    #[error("the block's time ({found} ms) is before its parent's ({parent} ms)")]
    TimeBeforeParent { parent: u64, found: u64 },
    #[error("the store holds no genesis; initialise it first")]
    NotInitialised,
    #[error("the store already holds chain `{0}`")]
    AlreadyInitialised(String),
    #[error(transparent)]
    Genesis(#[from] crate::genesis::GenesisError),
    #[error("a ledger invariant would break: {0}")]
    Invariant(String),
}

/// The re-executor of a host without a sandbox: every dispute it sees is
/// rejected with `re_execution_failed`, and everything else applies as usual.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoReExecution;

impl ReExecute for NoReExecution {
    fn re_execute(
        &self,
        _module: &[u8],
        _input: &idlegrid_types::TaskInput,
        _seed: [u8; 32],
        _limits: &idlegrid_types::ExecutionLimits,
    ) -> Result<idlegrid_types::Execution, String> {
        Err("this host has no sandbox to re-execute tasks".to_owned())
    }
}

/// One transaction's result in a block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxResult {
    pub hash: ContentId,
    pub outcome: Result<Vec<Event>, Rejection>,
}

/// Transactions picked for a block, and those dropped on the way.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Selection {
    pub included: Vec<SignedTransaction>,
    /// Encoded size of `included`.
    pub bytes: usize,
    pub dropped: Vec<(ContentId, Rejection)>,
}

/// A block built by [`Ledger::build_block`]: what was picked and dropped,
/// and the picked transactions executed as a block.
#[derive(Debug)]
pub struct BuiltBlock {
    pub selection: Selection,
    pub writes: crate::store::WriteBatch,
    pub outcome: BlockOutcome,
}

/// Where a finalized transaction landed (kept outside the authenticated
/// state, for the API's "is my transaction in?").
#[derive(Debug, Clone, PartialEq, Eq, borsh::BorshSerialize, borsh::BorshDeserialize)]
pub struct TxRecord {
    pub height: u64,
    /// Its position in the block.
    pub index: u32,
    /// The rejection's code and message, when the block carried it but it
    /// did not apply.
    pub rejected: Option<(String, String)>,
}

/// What a finalized dispute's re-execution found (kept outside the
/// authenticated state, for the reporter to learn who was wrong).
#[derive(Debug, Clone, PartialEq, Eq, borsh::BorshSerialize, borsh::BorshDeserialize)]
pub struct DisputeVerdict {
    pub job: JobId,
    pub task: u64,
    pub outcome: TaskOutcome,
    pub fuel_used: u64,
    /// The signers whose receipts differed from it, slashed by the dispute.
    pub wrong: Vec<AccountId>,
}

impl DisputeVerdict {
    /// The verdict a dispute's events carry, if they carry one.
    fn from_events(events: &[Event]) -> Option<Self> {
        let mut verdict = events.iter().find_map(|event| match event {
            Event::Verdict {
                job,
                task,
                outcome,
                fuel_used,
            } => Some(Self {
                job: *job,
                task: *task,
                outcome: *outcome,
                fuel_used: *fuel_used,
                wrong: Vec::new(),
            }),
            _ => None,
        })?;
        verdict.wrong = events
            .iter()
            .filter_map(|event| match event {
                Event::Slashed { provider, .. } => Some(*provider),
                _ => None,
            })
            .collect();
        Some(verdict)
    }
}

/// The state tree's share of the store (see [`Ledger::tree_stats`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TreeStats {
    /// Nodes stored: the tip's tree and what the kept heights still need.
    pub nodes: u64,
    /// Stored nodes a later block superseded, each listed for pruning.
    pub superseded_nodes: u64,
}

/// What applying a block did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockOutcome {
    pub height: u64,
    pub state_root: [u8; 32],
    pub transactions: Vec<TxResult>,
    /// Unbondings released and epoch rewards paid.
    pub block_events: Vec<Event>,
}

/// Ledger state over a store. Pure: height comes in with each block; no
/// clock, no randomness, no network.
#[derive(Debug)]
pub struct Ledger<S: Store> {
    store: S,
    /// Signatures this node already checked (shared by the views a chain
    /// opens over pending blocks); none by default.
    signatures: Option<std::sync::Arc<idlegrid_types::SignatureCache>>,
    /// How many heights of the state tree each commit keeps.
    tree_history: TreeHistory,
    chain_id: String,
    params: Params,
    height: u64,
    state_root: [u8; 32],
}

impl<S: Store> Ledger<S> {
    /// Writes the genesis state into an empty store (height 0).
    pub fn init(mut store: S, genesis: &Genesis) -> Result<Self, LedgerError> {
        genesis.validate()?;
        if let Some(chain) = store.get(&keys::meta(META_CHAIN))? {
            return Err(LedgerError::AlreadyInitialised(
                String::from_utf8_lossy(&chain).into_owned(),
            ));
        }
        let supply = genesis
            .supply()
            .ok_or(crate::genesis::GenesisError::Overflow)?;
        let (batch, state_root) = {
            let mut overlay = Overlay::new(&store);
            for (account, balance) in &genesis.balances {
                overlay.put(
                    keys::account(account),
                    &Account {
                        balance: *balance,
                        nonce: 0,
                    },
                );
            }
            for (validator, amount) in &genesis.validators {
                overlay.put(
                    keys::stake(StakeRole::Validator, validator),
                    &Stake {
                        bonded: *amount,
                        unbonding: Vec::new(),
                    },
                );
            }
            overlay.put(
                keys::meta(apply::META_SUPPLY),
                &Supply {
                    genesis: supply,
                    emitted: 0,
                    burned: 0,
                },
            );
            apply::record_validator_set(&mut overlay, &genesis.params, 0)?;
            overlay.put(keys::meta(META_PARAMS), &genesis.params);
            overlay.put_raw(
                keys::meta(META_CHAIN),
                Some(genesis.chain_id.as_bytes().to_vec()),
            );
            overlay.put(keys::meta(META_HEIGHT), &0u64);
            let root = root::update(&mut overlay, &store, 0)?;
            (overlay.into_batch(), root)
        };
        store.commit(batch)?;
        Ok(Self {
            store,
            signatures: None,
            tree_history: TreeHistory::default(),
            chain_id: genesis.chain_id.clone(),
            params: genesis.params.clone(),
            height: 0,
            state_root,
        })
    }

    /// Opens a store that holds a chain, at its last committed height.
    pub fn open(store: S) -> Result<Self, LedgerError> {
        let chain_id = store
            .get(&keys::meta(META_CHAIN))?
            .ok_or(LedgerError::NotInitialised)?;
        let overlay = Overlay::new(&store);
        let params: Params = overlay
            .get(&keys::meta(META_PARAMS))?
            .ok_or(LedgerError::NotInitialised)?;
        let height: u64 = overlay
            .get(&keys::meta(META_HEIGHT))?
            .ok_or(LedgerError::NotInitialised)?;
        let state_root = read_root(&store, height)?
            .ok_or_else(|| StoreError(format!("the state root of height {height} is missing")))?;
        Ok(Self {
            signatures: None,
            tree_history: TreeHistory::default(),
            chain_id: String::from_utf8_lossy(&chain_id).into_owned(),
            params,
            height,
            state_root,
            store,
        })
    }

    /// Opens the store, or initialises it with `genesis` if it is empty.
    pub fn open_or_init(store: S, genesis: &Genesis) -> Result<Self, LedgerError> {
        if store.get(&keys::meta(META_CHAIN))?.is_some() {
            Self::open(store)
        } else {
            Self::init(store, genesis)
        }
    }

    pub fn height(&self) -> u64 {
        self.height
    }

    pub fn state_root(&self) -> [u8; 32] {
        self.state_root
    }

    /// The time its proposer stamped on the last block applied, in
    /// milliseconds since the Unix epoch (0 at genesis). Blocks' times
    /// never decrease.
    pub fn time_ms(&self) -> Result<u64, LedgerError> {
        Ok(Overlay::new(&self.store)
            .get(&keys::meta(META_TIME))?
            .unwrap_or(0))
    }

    pub fn chain_id(&self) -> &str {
        &self.chain_id
    }

    pub fn params(&self) -> &Params {
        &self.params
    }

    /// Remembers verified signatures in `cache` (see [`SignatureCache`]).
    ///
    /// [`SignatureCache`]: idlegrid_types::SignatureCache
    pub fn with_signature_cache(
        mut self,
        cache: std::sync::Arc<idlegrid_types::SignatureCache>,
    ) -> Self {
        self.signatures = Some(cache);
        self
    }

    pub fn signature_cache(&self) -> Option<&std::sync::Arc<idlegrid_types::SignatureCache>> {
        self.signatures.as_ref()
    }

    /// Keeps `history` of the state tree from the next commit on (the
    /// default: [`TreeHistory::default`]). Each commit deletes the nodes
    /// that only heights older than that need; a store that kept more
    /// catches up over the following blocks.
    pub fn with_tree_history(mut self, history: TreeHistory) -> Self {
        self.tree_history = history;
        self
    }

    pub fn tree_history(&self) -> TreeHistory {
        self.tree_history
    }

    /// How many nodes of the state tree the store holds, and how many of
    /// them are superseded (kept for the heights in the history).
    pub fn tree_stats(&self) -> Result<TreeStats, LedgerError> {
        Ok(TreeStats {
            nodes: self.store.count_prefix(&[keys::TREE_NODE])?,
            superseded_nodes: self.store.count_prefix(&[keys::STALE_NODE])?,
        })
    }

    /// Checks a transaction's signature (through the cache, if any).
    pub fn verify_signature(&self, transaction: &SignedTransaction) -> Result<(), Rejection> {
        let verified = match &self.signatures {
            Some(cache) => cache.verify(transaction).map(|_| ()),
            None => transaction.verify().map(|_| ()),
        };
        verified.map_err(|_| Rejection::BadSignature)
    }

    pub fn store(&self) -> &S {
        &self.store
    }

    pub fn into_store(self) -> S {
        self.store
    }

    /// Applies the block at `height` (which must be the next one): every
    /// transaction either applies or is rejected with a reason, and the
    /// whole block commits in one write, or not at all.
    pub fn apply_block(
        &mut self,
        height: u64,
        time_ms: u64,
        transactions: &[SignedTransaction],
        executor: &dyn ReExecute,
    ) -> Result<BlockOutcome, LedgerError> {
        let (batch, outcome) = self.execute_block(height, time_ms, transactions, executor)?;
        self.commit(batch, &outcome)?;
        Ok(outcome)
    }

    /// [`Ledger::apply_block`] for a block with an id (the chain's digest of
    /// it), recorded in the same write so a restarted node knows its tip.
    pub fn apply_named_block(
        &mut self,
        id: ContentId,
        height: u64,
        time_ms: u64,
        transactions: &[SignedTransaction],
        executor: &dyn ReExecute,
    ) -> Result<BlockOutcome, LedgerError> {
        let (batch, outcome) = self.execute_block(height, time_ms, transactions, executor)?;
        self.commit_executed(id, batch, &outcome)?;
        Ok(outcome)
    }

    /// Commits a block already executed by [`Ledger::execute_block`] on
    /// this ledger's current state (its writes and outcome), recording its
    /// id as [`Ledger::apply_named_block`] does, without executing it again.
    pub fn commit_executed(
        &mut self,
        id: ContentId,
        mut batch: crate::store::WriteBatch,
        outcome: &BlockOutcome,
    ) -> Result<(), LedgerError> {
        if outcome.height != self.height + 1 {
            return Err(LedgerError::UnexpectedHeight {
                expected: self.height + 1,
                found: outcome.height,
            });
        }
        batch.insert(keys::block_at(outcome.height), Some(id.as_bytes().to_vec()));
        self.commit(batch, outcome)
    }

    /// Writes a block's batch, with the pruning its height makes due, in
    /// one commit and moves to its height.
    fn commit(
        &mut self,
        mut batch: crate::store::WriteBatch,
        outcome: &BlockOutcome,
    ) -> Result<(), LedgerError> {
        prune::superseded_nodes(&self.store, &mut batch, outcome.height, self.tree_history)?;
        self.store.commit(batch)?;
        self.height = outcome.height;
        self.state_root = outcome.state_root;
        Ok(())
    }

    /// The id of the block applied at `height`, when it was applied with one.
    pub fn block_id(&self, height: u64) -> Result<Option<ContentId>, LedgerError> {
        let bytes = self.store.get(&keys::block_at(height))?;
        Ok(bytes
            .and_then(|bytes| <[u8; 32]>::try_from(bytes.as_slice()).ok())
            .map(ContentId::from_bytes))
    }

    /// Builds the next block from `candidates`, in their order: each is
    /// tried on top of the ones already picked, a rejected one is dropped
    /// with its reason, and picking stops at `max_count` transactions or
    /// `max_bytes` of encoded transactions. Every picked transaction
    /// applies when the block does (the proposer's half of "a block is
    /// valid only if every transaction applies"), and the block comes back
    /// executed: its writes and outcome are what [`Ledger::execute_block`]
    /// gives for the picked transactions, so a proposer does not execute
    /// its own block twice.
    pub fn build_block(
        &self,
        time_ms: u64,
        candidates: impl IntoIterator<Item = SignedTransaction>,
        max_count: usize,
        max_bytes: usize,
        executor: &dyn ReExecute,
    ) -> Result<BuiltBlock, LedgerError> {
        let mut run = BlockRun::start(self, self.height + 1, time_ms, executor)?;
        let mut selection = Selection::default();
        for signed in candidates {
            if selection.included.len() >= max_count {
                break;
            }
            let encoded = codec::encode(&signed).unwrap_or_default();
            if encoded.is_empty() || selection.bytes.saturating_add(encoded.len()) > max_bytes {
                continue;
            }
            let hash = ContentId::of(&encoded);
            match apply_one(&mut run.overlay, &run.scope, &signed)? {
                Ok(events) => {
                    run.record(hash, Ok(events));
                    selection.bytes += encoded.len();
                    selection.included.push(signed);
                }
                Err(rejection) => selection.dropped.push((hash, rejection)),
            }
        }
        let (writes, outcome) = run.finish()?;
        Ok(BuiltBlock {
            selection,
            writes,
            outcome,
        })
    }

    /// Computes a block's writes and outcome without committing them.
    pub fn execute_block(
        &self,
        height: u64,
        time_ms: u64,
        transactions: &[SignedTransaction],
        executor: &dyn ReExecute,
    ) -> Result<(crate::store::WriteBatch, BlockOutcome), LedgerError> {
        let mut run = BlockRun::start(self, height, time_ms, executor)?;
        run.results.reserve(transactions.len());
        for signed in transactions {
            let outcome = apply_one(&mut run.overlay, &run.scope, signed)?;
            run.record(transaction_hash(signed), outcome);
        }
        run.finish()
    }

    fn scope<'a>(
        &'a self,
        height: u64,
        time_ms: u64,
        executor: &'a dyn ReExecute,
    ) -> BlockScope<'a> {
        BlockScope {
            height,
            time_ms,
            params: &self.params,
            chain_id: &self.chain_id,
            executor,
            signatures: self.signatures.as_deref(),
        }
    }

    /// Whether `transaction` would apply on top of the current state, as the
    /// first transaction of the next block (the mempool's admission check).
    pub fn check(
        &self,
        transaction: &SignedTransaction,
        executor: &dyn ReExecute,
    ) -> Result<Result<Vec<Event>, Rejection>, LedgerError> {
        // The next block's time is unknown: at least the last one's.
        let scope = self.scope(self.height + 1, self.time_ms()?, executor);
        apply_one(&mut Overlay::new(&self.store), &scope, transaction)
    }

    /// Where a finalized transaction landed, if it did.
    pub fn transaction(&self, hash: &ContentId) -> Result<Option<TxRecord>, LedgerError> {
        Ok(Overlay::new(&self.store).get(&keys::tx_at(hash))?)
    }

    /// What a finalized dispute's re-execution found, if `hash` is one
    /// that applied.
    pub fn verdict(&self, hash: &ContentId) -> Result<Option<DisputeVerdict>, LedgerError> {
        Ok(Overlay::new(&self.store).get(&keys::verdict_at(hash))?)
    }

    pub fn account(&self, id: &AccountId) -> Result<Account, LedgerError> {
        Ok(apply::account(&Overlay::new(&self.store), id)?)
    }

    pub fn stake(&self, role: StakeRole, id: &AccountId) -> Result<Stake, LedgerError> {
        Ok(apply::stake(&Overlay::new(&self.store), role, id)?)
    }

    /// A provider's track record (all zero for one never paid nor disputed).
    pub fn provider_record(&self, id: &AccountId) -> Result<ProviderRecord, LedgerError> {
        Ok(Overlay::new(&self.store)
            .get(&keys::provider_record(id))?
            .unwrap_or_default())
    }

    /// What a provider declared and proved of its capacity.
    pub fn capacity(&self, id: &AccountId) -> Result<crate::capacity::Capacity, LedgerError> {
        Ok(crate::capacity::capacity(&Overlay::new(&self.store), id)?)
    }

    /// A provider's open capacity challenges (at most one per epoch, from
    /// the epochs not yet closed), oldest first.
    pub fn challenges(
        &self,
        id: &AccountId,
    ) -> Result<Vec<(u64, crate::capacity::Challenge)>, LedgerError> {
        self.open_per_epoch(keys::challenge, id)
    }

    /// What a provider declared and proved of its GPU's capacity.
    pub fn gpu_capacity(&self, id: &AccountId) -> Result<crate::capacity::Capacity, LedgerError> {
        Ok(crate::capacity::gpu_capacity(
            &Overlay::new(&self.store),
            id,
        )?)
    }

    /// A provider's open GPU challenges (at most one per epoch, from the
    /// epochs not yet closed), oldest first.
    pub fn gpu_challenges(
        &self,
        id: &AccountId,
    ) -> Result<Vec<(u64, crate::capacity::GpuChallenge)>, LedgerError> {
        self.open_per_epoch(keys::gpu_challenge, id)
    }

    /// A provider's records under `key(epoch, id)` for the epochs not yet
    /// closed (the current one and the one before), oldest first.
    fn open_per_epoch<T: borsh::BorshDeserialize>(
        &self,
        key: fn(u64, &AccountId) -> Vec<u8>,
        id: &AccountId,
    ) -> Result<Vec<(u64, T)>, LedgerError> {
        let overlay = Overlay::new(&self.store);
        let current = self.height / self.params.epoch_length_blocks;
        let mut open = Vec::new();
        for epoch in current.saturating_sub(1)..=current {
            if let Some(record) = overlay.get(&key(epoch, id))? {
                open.push((epoch, record));
            }
        }
        Ok(open)
    }

    /// What one slash would take from a provider now: the slash fraction of
    /// its bonded and unbonding stake.
    pub fn slashable(&self, id: &AccountId) -> Result<u64, LedgerError> {
        let stake = self.stake(StakeRole::Provider, id)?;
        let total = stake.bonded.saturating_add(stake.unbonding_total());
        Ok(apply::bps(total, self.params.slash_fraction_bps))
    }

    pub fn job(&self, id: &JobId) -> Result<Option<Job>, LedgerError> {
        Ok(Overlay::new(&self.store).get(&keys::job(id))?)
    }

    pub fn redemption(&self, job: &JobId, provider: &AccountId) -> Result<Redemption, LedgerError> {
        Ok(Overlay::new(&self.store)
            .get(&keys::redemption(job, provider))?
            .unwrap_or_default())
    }

    /// Every provider's redemptions from a job.
    pub fn redemptions(&self, job: &JobId) -> Result<Vec<(AccountId, Redemption)>, LedgerError> {
        let prefix = [&[keys::REDEMPTION][..], job.as_bytes()].concat();
        let mut list = Vec::new();
        for (key, value) in self.store.scan_prefix(&prefix)? {
            if let Some(provider) = keys::trailing_account(&key) {
                list.push((provider, crate::state::decode_record(&value)?));
            }
        }
        Ok(list)
    }

    /// Up to `limit` jobs, the most recently opened first (by the height of
    /// the block that opened them, then their order in it), only those in
    /// `status` when it is given.
    ///
    /// The order comes from an index kept beside the state (like
    /// [`Ledger::transaction`]'s records, outside the state root), written
    /// since this version: a job opened by an older build of the ledger is
    /// not listed. Walking newest first stops at `limit` matches; a filter
    /// that matches few jobs reads every job record on the way.
    pub fn jobs(
        &self,
        status: Option<JobStatus>,
        limit: usize,
    ) -> Result<Vec<(JobId, Job)>, LedgerError> {
        let overlay = Overlay::new(&self.store);
        let mut list = Vec::new();
        if limit == 0 {
            return Ok(list);
        }
        for (key, _) in self.store.scan_prefix(&[keys::JOB_OPENED])?.iter().rev() {
            let Some(id) = keys::trailing_job(key) else {
                continue;
            };
            let Some(job) = overlay.get::<Job>(&keys::job(&id))? else {
                return Err(LedgerError::Invariant(format!(
                    "job {id} is indexed as opened but has no record"
                )));
            };
            if status.is_none_or(|wanted| job.status == wanted) {
                list.push((id, job));
                if list.len() >= limit {
                    break;
                }
            }
        }
        Ok(list)
    }

    /// Accounts with bonded provider stake, and how much.
    pub fn providers(&self) -> Result<Vec<(AccountId, u64)>, LedgerError> {
        Ok(apply::bonded(
            &Overlay::new(&self.store),
            StakeRole::Provider,
        )?)
    }

    /// Accounts with bonded validator stake, and how much.
    pub fn validators(&self) -> Result<Vec<(AccountId, u64)>, LedgerError> {
        Ok(apply::bonded(
            &Overlay::new(&self.store),
            StakeRole::Validator,
        )?)
    }

    /// A validator's delegation pool (empty when nobody delegated to it).
    pub fn pool(&self, validator: &AccountId) -> Result<Pool, LedgerError> {
        Ok(crate::delegation::pool(
            &Overlay::new(&self.store),
            validator,
        )?)
    }

    /// One delegation, with the rewards it has earned brought up to date
    /// (what claiming would pay now).
    pub fn delegation(
        &self,
        validator: &AccountId,
        delegator: &AccountId,
    ) -> Result<Delegation, LedgerError> {
        let overlay = Overlay::new(&self.store);
        let pool = crate::delegation::pool(&overlay, validator)?;
        let mut record = crate::delegation::delegation(&overlay, validator, delegator)?;
        crate::delegation::settle(&pool, &mut record)
            .map_err(|_| LedgerError::Invariant("a delegation is ahead of its pool".to_owned()))?;
        Ok(record)
    }

    /// Every delegation an account holds, by validator, up to date as
    /// [`Ledger::delegation`].
    pub fn delegations_of(
        &self,
        delegator: &AccountId,
    ) -> Result<Vec<(AccountId, Delegation)>, LedgerError> {
        let mut list = Vec::new();
        for (key, _) in self
            .store
            .scan_prefix(&keys::delegated_by_prefix(delegator))?
        {
            let validator = keys::trailing_account(&key)
                .ok_or_else(|| StoreError("a malformed delegation key".to_owned()))?;
            list.push((validator, self.delegation(&validator, delegator)?));
        }
        Ok(list)
    }

    /// The epoch of a validator's first proven consensus fault, if it has
    /// one: it is in no set from then on.
    pub fn jailed_since(&self, validator: &AccountId) -> Result<Option<u64>, LedgerError> {
        Ok(Overlay::new(&self.store).get(&keys::jailed(validator))?)
    }

    /// How many accounts delegate to a validator.
    pub fn delegator_count(&self, validator: &AccountId) -> Result<usize, LedgerError> {
        Ok(self
            .store
            .scan_prefix(&keys::delegations_of_validator(validator))?
            .len())
    }

    /// The epoch a height belongs to: epoch 0 is genesis through the first
    /// epoch's last block (`epoch_length_blocks`); epoch `e` ends at
    /// `(e + 1) × epoch_length_blocks`, where rewards are paid and the
    /// next epoch's validator set is taken.
    pub fn epoch_of(&self, height: u64) -> u64 {
        height.saturating_sub(1) / self.params.epoch_length_blocks
    }

    /// The validators of `epoch` with their stake, largest first, once the
    /// ledger has reached the end of the epoch before (epoch 0: genesis).
    pub fn validator_set(&self, epoch: u64) -> Result<Option<Vec<(AccountId, u64)>>, LedgerError> {
        Ok(Overlay::new(&self.store).get(&keys::validator_set(epoch))?)
    }

    pub fn supply(&self) -> Result<Supply, LedgerError> {
        Ok(apply::supply(&Overlay::new(&self.store))?)
    }

    /// The state root after the block at `height`, if the store has it.
    /// Roots are recorded apart from the tree and kept for every height,
    /// whatever the [`TreeHistory`].
    pub fn state_root_at(&self, height: u64) -> Result<Option<[u8; 32]>, LedgerError> {
        Ok(read_root(&self.store, height)?)
    }

    /// Every token held anywhere: balances, stake (bonded and unbonding,
    /// own and delegated), delegators' unclaimed rewards, escrow and the
    /// fee pool. Equals `supply().expected_total()`.
    pub fn tokens_in_existence(&self) -> Result<u64, LedgerError> {
        let overlay = Overlay::new(&self.store);
        let mut total = 0u64;
        for (_, value) in self.store.scan_prefix(&[keys::ACCOUNT])? {
            total += crate::state::decode_record::<Account>(&value)?.balance;
        }
        for (_, value) in self.store.scan_prefix(&[keys::STAKE])? {
            let stake: Stake = crate::state::decode_record(&value)?;
            total += stake.bonded + stake.unbonding_total();
        }
        for (_, value) in self.store.scan_prefix(&[keys::JOB])? {
            total += crate::state::decode_record::<Job>(&value)?.escrow;
        }
        for (_, value) in self.store.scan_prefix(&[keys::POOL])? {
            let pool: Pool = crate::state::decode_record(&value)?;
            total += pool.tokens + pool.unbonding_tokens + pool.rewards_unclaimed;
        }
        let fees: u64 = overlay.get(&keys::meta(apply::META_FEES))?.unwrap_or(0);
        Ok(total + fees)
    }
}

/// A block being executed over a ledger's committed state: the block-level
/// steps before its transactions, each transaction's outcome and record as
/// it comes, and the block-level steps and state root after them.
struct BlockRun<'a, S: Store> {
    ledger: &'a Ledger<S>,
    scope: BlockScope<'a>,
    overlay: Overlay<'a, S>,
    block_events: Vec<Event>,
    results: Vec<TxResult>,
    /// Counted over the jobs this block opens, not its transactions, so
    /// the index does not depend on rejected transactions around them.
    jobs_opened: u32,
}

impl<'a, S: Store> BlockRun<'a, S> {
    fn start(
        ledger: &'a Ledger<S>,
        height: u64,
        time_ms: u64,
        executor: &'a dyn ReExecute,
    ) -> Result<Self, LedgerError> {
        if height != ledger.height + 1 {
            return Err(LedgerError::UnexpectedHeight {
                expected: ledger.height + 1,
                found: height,
            });
        }
        let parent_time = ledger.time_ms()?;
        if time_ms < parent_time {
            return Err(LedgerError::TimeBeforeParent {
                parent: parent_time,
                found: time_ms,
            });
        }
        let mut overlay = Overlay::new(&ledger.store);
        let mut block_events = block_step(apply::release_unbondings(&mut overlay, height))?;
        block_events.extend(block_step(crate::delegation::release(
            &mut overlay,
            height,
        ))?);
        Ok(Self {
            ledger,
            scope: ledger.scope(height, time_ms, executor),
            overlay,
            block_events,
            results: Vec::new(),
            jobs_opened: 0,
        })
    }

    /// Records the outcome of the transaction just applied (or rolled
    /// back) as the block's next one.
    fn record(&mut self, hash: ContentId, outcome: Result<Vec<Event>, Rejection>) {
        let height = self.scope.height;
        let index = u32::try_from(self.results.len()).unwrap_or(u32::MAX);
        for event in outcome.iter().flatten() {
            if let Event::JobOpened { job, .. } = event {
                self.overlay.put_raw(
                    keys::job_opened(height, self.jobs_opened, job),
                    Some(Vec::new()),
                );
                self.jobs_opened = self.jobs_opened.saturating_add(1);
            }
        }
        let record = TxRecord {
            height,
            index,
            rejected: outcome
                .as_ref()
                .err()
                .map(|rejection| (rejection.code().to_owned(), rejection.to_string())),
        };
        self.overlay.put(keys::tx_at(&hash), &record);
        if let Some(verdict) = outcome
            .as_ref()
            .ok()
            .and_then(|events| DisputeVerdict::from_events(events))
        {
            self.overlay.put(keys::verdict_at(&hash), &verdict);
        }
        self.results.push(TxResult { hash, outcome });
    }

    fn finish(mut self) -> Result<(crate::store::WriteBatch, BlockOutcome), LedgerError> {
        let height = self.scope.height;
        let params = &self.ledger.params;
        if height.is_multiple_of(params.epoch_length_blocks) {
            let epoch = height / params.epoch_length_blocks;
            self.block_events.extend(block_step(apply::epoch_rewards(
                &mut self.overlay,
                params,
                epoch - 1,
            ))?);
            apply::record_validator_set(&mut self.overlay, params, epoch)?;
            // The parent's state root: fixed before this block, the same
            // on every validator.
            let randomness = challenge_randomness(&self.ledger.state_root, epoch);
            self.block_events
                .extend(block_step(crate::capacity::epoch_challenges(
                    &mut self.overlay,
                    &self.scope,
                    epoch,
                    &randomness,
                ))?);
        }
        self.overlay.put(keys::meta(META_HEIGHT), &height);
        self.overlay.put(keys::meta(META_TIME), &self.scope.time_ms);
        let state_root = root::update(&mut self.overlay, &self.ledger.store, height)?;
        Ok((
            self.overlay.into_batch(),
            BlockOutcome {
                height,
                state_root,
                transactions: self.results,
                block_events: self.block_events,
            },
        ))
    }
}

/// What an epoch's challenges are drawn from.
fn challenge_randomness(parent_state_root: &[u8; 32], epoch: u64) -> [u8; 32] {
    let mut hasher = blake3::Hasher::new();
    hasher.update(b"idlegrid challenge randomness v1");
    hasher.update(parent_state_root);
    hasher.update(&epoch.to_le_bytes());
    *hasher.finalize().as_bytes()
}

fn block_step(result: Result<Vec<Event>, Failure>) -> Result<Vec<Event>, LedgerError> {
    match result {
        Ok(events) => Ok(events),
        Err(Failure::Store(error)) => Err(error.into()),
        Err(Failure::Invariant(message)) => Err(LedgerError::Invariant(message)),
        Err(Failure::Rejected(rejection)) => Err(LedgerError::Invariant(format!(
            "a block-level step was rejected: {rejection}"
        ))),
    }
}

fn read_root<S: Store>(store: &S, height: u64) -> Result<Option<[u8; 32]>, StoreError> {
    match store.get(&keys::root_at(height))? {
        Some(bytes) => Ok(Some(bytes.try_into().map_err(|_| {
            StoreError(format!("the stored root of height {height} is malformed"))
        })?)),
        None => Ok(None),
    }
}

/// Applies one transaction to the overlay, or rolls it back and says why it
/// was rejected; errors are the store's or a broken invariant.
fn apply_one<S: Store>(
    overlay: &mut Overlay<'_, S>,
    scope: &BlockScope<'_>,
    signed: &SignedTransaction,
) -> Result<Result<Vec<Event>, Rejection>, LedgerError> {
    let checkpoint = overlay.checkpoint();
    match apply::transaction(overlay, scope, signed) {
        Ok(events) => Ok(Ok(events)),
        Err(Failure::Rejected(rejection)) => {
            overlay.rollback(checkpoint);
            Ok(Err(rejection))
        }
        Err(Failure::Store(error)) => Err(error.into()),
        Err(Failure::Invariant(message)) => Err(LedgerError::Invariant(message)),
    }
}
