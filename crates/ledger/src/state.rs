//! Typed records, their keys, and the write overlay one block applies into.

use std::collections::BTreeMap;

use borsh::{BorshDeserialize, BorshSerialize};
use idlegrid_types::codec;
use idlegrid_types::{AccountId, ContentId, ExecutionLimits, JobId};

use crate::store::{Entries, Store, StoreError, WriteBatch};
use crate::tx::StakeRole;

/// Most unbonding entries an account may have per role at once.
pub const UNBONDINGS_MAX: usize = 16;
/// Largest stored record we will decode.
const RECORD_BYTES_MAX: usize = 1 << 20;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub struct Account {
    pub balance: u64,
    /// The nonce the account's next transaction must carry.
    pub nonce: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub struct Unbonding {
    pub release_height: u64,
    pub amount: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub struct Stake {
    pub bonded: u64,
    pub unbonding: Vec<Unbonding>,
}

impl Stake {
    pub fn unbonding_total(&self) -> u64 {
        self.unbonding.iter().map(|entry| entry.amount).sum()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub enum JobStatus {
    Open,
    Closed,
}

#[derive(Debug, Clone, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub struct Job {
    pub requestor: AccountId,
    pub module: ContentId,
    pub spec: ContentId,
    /// What is left in escrow.
    pub escrow: u64,
    pub price_per_million_fuel: u64,
    pub deadline_height: u64,
    pub limits: ExecutionLimits,
    pub status: JobStatus,
    pub redeemed_total: u64,
    /// Who runs the job for the requestor, if someone does (see
    /// [`crate::OpenJob::agent`]).
    pub agent: Option<AccountId>,
}

impl Job {
    /// Who places the job's tasks and signs its vouchers: its agent, or
    /// the requestor itself.
    pub fn runner(&self) -> AccountId {
        self.agent.unwrap_or(self.requestor)
    }

    /// The requestor or its agent: who may sign the job's vouchers and
    /// close it.
    pub fn is_run_by(&self, account: &AccountId) -> bool {
        *account == self.requestor || self.agent.as_ref() == Some(account)
    }
}

/// What a provider has redeemed from one job so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub struct Redemption {
    pub amount: u64,
    pub fuel: u64,
    pub sequence: u64,
}

/// A provider's track record, kept by the ledger so that every requestor
/// starts from it: what requestors paid it for, in how many jobs, and how
/// often a re-execution showed one of its receipts wrong.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub struct ProviderRecord {
    /// Fuel requestors paid it for, through redeemed vouchers.
    pub fuel_paid: u64,
    /// Tokens redeemed from those vouchers.
    pub amount_paid: u64,
    /// Jobs it redeemed at least one voucher from.
    pub jobs_paid: u64,
    /// Disputes whose re-execution showed one of its receipts wrong.
    pub disputes_lost: u64,
    /// Height of the last of them (0: none).
    pub last_lost_height: u64,
}

/// A validator's delegation pool: the stake others delegated to it, as
/// shares, so a slash or a reward reaches every delegator in one step.
///
/// A delegator's stake is `shares × tokens / shares`; what it undelegates
/// moves to the pool's unbonding side, which is shared the same way and
/// slashed the same way until it is released.
#[derive(Debug, Clone, Default, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub struct Pool {
    /// Delegated tokens still bonded.
    pub tokens: u64,
    /// Shares of `tokens` that delegators hold.
    pub shares: u128,
    /// Delegated tokens unbonding (still slashable).
    pub unbonding_tokens: u64,
    /// Shares of `unbonding_tokens` that unbonding entries hold.
    pub unbonding_shares: u128,
    /// Rewards per bonded share since the pool began, × 2^64.
    pub reward_per_share: u128,
    /// Delegators' rewards paid into the pool and not yet claimed (at
    /// least the sum of what every delegator is owed; the rest is
    /// rounding dust).
    pub rewards_unclaimed: u64,
    /// The validator's share of its delegators' rewards, in basis points.
    pub commission_bps: u16,
    /// The epoch of the last commission change, if any.
    pub commission_epoch: Option<u64>,
}

impl Pool {
    /// What `shares` of the bonded side are worth now.
    pub fn value_of(&self, shares: u128) -> u64 {
        share_of(self.tokens, shares, self.shares)
    }

    /// What `shares` of the unbonding side are worth now.
    pub fn unbonding_value_of(&self, shares: u128) -> u64 {
        share_of(self.unbonding_tokens, shares, self.unbonding_shares)
    }
}

/// `tokens × part / whole`, rounded down (0 when `whole` is 0); never
/// more than `tokens` for `part ≤ whole`.
pub(crate) fn share_of(tokens: u64, part: u128, whole: u128) -> u64 {
    mul_div(u128::from(tokens), part.min(whole), whole)
        .and_then(|value| u64::try_from(value).ok())
        .unwrap_or(0)
}

/// `a × b / d` rounded down, exact over the full 256-bit product; `None`
/// when `d` is 0 or the quotient does not fit 128 bits.
pub fn mul_div(a: u128, b: u128, d: u128) -> Option<u128> {
    if d == 0 {
        return None;
    }
    let (high, low) = mul_wide(a, b);
    div_wide(high, low, d)
}

/// `a × b / d` rounded up; `None` as for [`mul_div`].
pub fn mul_div_ceil(a: u128, b: u128, d: u128) -> Option<u128> {
    let floor = mul_div(a, b, d)?;
    if mul_wide(floor, d) == mul_wide(a, b) {
        Some(floor)
    } else {
        floor.checked_add(1)
    }
}

/// The 256-bit product of two 128-bit numbers, as (high, low) halves.
fn mul_wide(a: u128, b: u128) -> (u128, u128) {
    let mask = u128::from(u64::MAX);
    let (a1, a0) = (a >> 64, a & mask);
    let (b1, b0) = (b >> 64, b & mask);
    let low_product = a0 * b0;
    let (middle, carry_a) = (a0 * b1).overflowing_add(a1 * b0);
    let (middle, carry_b) = middle.overflowing_add(low_product >> 64);
    let low = (middle << 64) | (low_product & mask);
    // A carry out of the middle is worth 2^192: 2^64 in the high half.
    let carries = u128::from(carry_a) + u128::from(carry_b);
    let high = a1 * b1 + (middle >> 64) + (carries << 64);
    (high, low)
}

/// `(high · 2^128 + low) / d` rounded down, by long division one bit at a
/// time; `None` when the quotient does not fit 128 bits (`high ≥ d`).
fn div_wide(high: u128, low: u128, d: u128) -> Option<u128> {
    if high >= d {
        return None;
    }
    let mut remainder = high;
    let mut quotient = 0u128;
    for bit in (0..128).rev() {
        // The remainder is below d; doubled, it may need a 129th bit.
        let carried = remainder >> 127 == 1;
        remainder = (remainder << 1) | ((low >> bit) & 1);
        quotient <<= 1;
        if carried || remainder >= d {
            remainder = remainder.wrapping_sub(d);
            quotient |= 1;
        }
    }
    Some(quotient)
}

/// A delegator's part of one validator's pool.
#[derive(Debug, Clone, Default, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub struct Delegation {
    /// Bonded shares of the pool.
    pub shares: u128,
    /// The pool's `reward_per_share` when `rewards_owed` was last brought
    /// up to date.
    pub reward_index: u128,
    /// Rewards earned and not yet claimed.
    pub rewards_owed: u64,
    /// Undelegations waiting for release, as shares of the pool's
    /// unbonding side.
    pub unbonding: Vec<DelegationUnbonding>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub struct DelegationUnbonding {
    pub release_height: u64,
    pub shares: u128,
}

impl Delegation {
    pub fn is_empty(&self) -> bool {
        self.shares == 0 && self.rewards_owed == 0 && self.unbonding.is_empty()
    }
}

/// Where the tokens are, for the supply invariant.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub struct Supply {
    pub genesis: u64,
    pub emitted: u64,
    pub burned: u64,
}

impl Supply {
    /// genesis + emissions − burns.
    pub fn expected_total(&self) -> u64 {
        self.genesis + self.emitted - self.burned
    }
}

/// Keys. One byte of table, then the record's id.
pub(crate) mod keys {
    use super::*;

    pub const ACCOUNT: u8 = b'a';
    pub const STAKE: u8 = b's';
    pub const RELEASE: u8 = b'u';
    pub const JOB: u8 = b'j';
    pub const REDEMPTION: u8 = b'r';
    pub const EPOCH_FUEL: u8 = b'f';
    pub const DISPUTED: u8 = b'd';
    pub const PROVIDER_RECORD: u8 = b'p';
    pub const META: u8 = b'm';
    /// The validator set of each epoch, taken at the end of the one before.
    pub const VALIDATOR_SET: u8 = b'e';
    /// Each validator's delegation pool.
    pub const POOL: u8 = b'P';
    /// Delegations, by validator then delegator.
    pub const DELEGATION: u8 = b'g';
    /// The same delegations by delegator then validator (no value), to
    /// list an account's delegations.
    pub const DELEGATED_BY: u8 = b'G';
    /// Undelegations due at a height: (validator, delegator) pairs.
    pub const DELEGATION_RELEASE: u8 = b'w';
    /// Consensus faults already punished, by validator, epoch and view.
    pub const FAULT: u8 = b'q';
    /// Validators proven to have signed conflicting votes: never in a set
    /// again (the value: the epoch of their first proven fault).
    pub const JAILED: u8 = b'J';
    /// What each provider declared and proved of its capacity.
    pub const CAPACITY: u8 = b'c';
    /// Capacity challenges, by epoch then provider.
    pub const CHALLENGE: u8 = b'C';
    /// The speed each provider proved available this epoch (its share of
    /// the availability reward), until the epoch's rewards are paid.
    pub const AVAILABLE: u8 = b'A';
    /// What each provider declared and proved of its GPU's capacity.
    pub const GPU_CAPACITY: u8 = b'K';
    /// GPU challenges, by epoch then provider.
    pub const GPU_CHALLENGE: u8 = b'H';
    /// Not part of the authenticated state: the tree's own nodes and the
    /// history of roots.
    pub const TREE_NODE: u8 = b't';
    pub const ROOT_AT: u8 = b'h';
    /// Not part of the authenticated state: where each transaction landed.
    pub const TX_AT: u8 = b'x';
    /// Not part of the authenticated state: the id of the block applied at
    /// each height (the chain's tip after a restart).
    pub const BLOCK_AT: u8 = b'k';
    /// Not part of the authenticated state: the jobs in the order they were
    /// opened (height, then the order of the block's openings), for
    /// listing them.
    pub const JOB_OPENED: u8 = b'o';
    /// Not part of the authenticated state: what each dispute's
    /// re-execution found, by the dispute transaction's hash.
    pub const VERDICT_AT: u8 = b'v';
    /// Not part of the authenticated state: each tree node a block
    /// superseded, by that block's height, until pruning deletes it.
    pub const STALE_NODE: u8 = b'n';

    pub fn account(id: &AccountId) -> Vec<u8> {
        [&[ACCOUNT][..], id.as_bytes()].concat()
    }

    pub fn stake(role: StakeRole, id: &AccountId) -> Vec<u8> {
        [&[STAKE, role.tag()][..], id.as_bytes()].concat()
    }

    pub fn stake_prefix(role: StakeRole) -> Vec<u8> {
        vec![STAKE, role.tag()]
    }

    pub fn release(height: u64) -> Vec<u8> {
        [&[RELEASE][..], &height.to_be_bytes()].concat()
    }

    pub fn job(id: &JobId) -> Vec<u8> {
        [&[JOB][..], id.as_bytes()].concat()
    }

    pub fn redemption(job: &JobId, provider: &AccountId) -> Vec<u8> {
        [&[REDEMPTION][..], job.as_bytes(), provider.as_bytes()].concat()
    }

    pub fn epoch_fuel(provider: &AccountId) -> Vec<u8> {
        [&[EPOCH_FUEL][..], provider.as_bytes()].concat()
    }

    pub fn provider_record(provider: &AccountId) -> Vec<u8> {
        [&[PROVIDER_RECORD][..], provider.as_bytes()].concat()
    }

    pub fn disputed(job: &JobId, task_index: u64, provider: &AccountId) -> Vec<u8> {
        [
            &[DISPUTED][..],
            job.as_bytes(),
            &task_index.to_be_bytes(),
            provider.as_bytes(),
        ]
        .concat()
    }

    pub fn pool(validator: &AccountId) -> Vec<u8> {
        [&[POOL][..], validator.as_bytes()].concat()
    }

    pub fn delegation(validator: &AccountId, delegator: &AccountId) -> Vec<u8> {
        [
            &[DELEGATION][..],
            validator.as_bytes(),
            delegator.as_bytes(),
        ]
        .concat()
    }

    pub fn delegations_of_validator(validator: &AccountId) -> Vec<u8> {
        [&[DELEGATION][..], validator.as_bytes()].concat()
    }

    pub fn delegated_by(delegator: &AccountId, validator: &AccountId) -> Vec<u8> {
        [
            &[DELEGATED_BY][..],
            delegator.as_bytes(),
            validator.as_bytes(),
        ]
        .concat()
    }

    pub fn delegated_by_prefix(delegator: &AccountId) -> Vec<u8> {
        [&[DELEGATED_BY][..], delegator.as_bytes()].concat()
    }

    pub fn fault(validator: &AccountId, epoch: u64, view: u64) -> Vec<u8> {
        [
            &[FAULT][..],
            validator.as_bytes(),
            &epoch.to_be_bytes(),
            &view.to_be_bytes(),
        ]
        .concat()
    }

    pub fn jailed(validator: &AccountId) -> Vec<u8> {
        [&[JAILED][..], validator.as_bytes()].concat()
    }

    pub fn capacity(provider: &AccountId) -> Vec<u8> {
        [&[CAPACITY][..], provider.as_bytes()].concat()
    }

    pub fn available(provider: &AccountId) -> Vec<u8> {
        [&[AVAILABLE][..], provider.as_bytes()].concat()
    }

    pub fn challenges_of(epoch: u64) -> Vec<u8> {
        [&[CHALLENGE][..], &epoch.to_be_bytes()].concat()
    }

    pub fn challenge(epoch: u64, provider: &AccountId) -> Vec<u8> {
        [&challenges_of(epoch)[..], provider.as_bytes()].concat()
    }

    pub fn gpu_capacity(provider: &AccountId) -> Vec<u8> {
        [&[GPU_CAPACITY][..], provider.as_bytes()].concat()
    }

    pub fn gpu_challenges_of(epoch: u64) -> Vec<u8> {
        [&[GPU_CHALLENGE][..], &epoch.to_be_bytes()].concat()
    }

    pub fn gpu_challenge(epoch: u64, provider: &AccountId) -> Vec<u8> {
        [&gpu_challenges_of(epoch)[..], provider.as_bytes()].concat()
    }

    pub fn delegation_release(height: u64) -> Vec<u8> {
        [&[DELEGATION_RELEASE][..], &height.to_be_bytes()].concat()
    }

    pub fn validator_set(epoch: u64) -> Vec<u8> {
        [&[VALIDATOR_SET][..], &epoch.to_be_bytes()].concat()
    }

    pub fn meta(name: &str) -> Vec<u8> {
        [&[META][..], name.as_bytes()].concat()
    }

    pub fn root_at(height: u64) -> Vec<u8> {
        [&[ROOT_AT][..], &height.to_be_bytes()].concat()
    }

    /// A tree node's key, from its encoded `jmt` node key.
    pub fn tree_node(encoded_node_key: &[u8]) -> Vec<u8> {
        [&[TREE_NODE][..], encoded_node_key].concat()
    }

    /// Big-endian height first, so key order is the order in which nodes
    /// were superseded and pruning reads the oldest first.
    pub fn stale_node(stale_since: u64, encoded_node_key: &[u8]) -> Vec<u8> {
        [
            &[STALE_NODE][..],
            &stale_since.to_be_bytes(),
            encoded_node_key,
        ]
        .concat()
    }

    /// The height and encoded node key of a stale-node key.
    pub fn split_stale_node(key: &[u8]) -> Option<(u64, &[u8])> {
        let rest = key.strip_prefix(&[STALE_NODE])?;
        let (height, node) = rest.split_first_chunk::<8>()?;
        Some((u64::from_be_bytes(*height), node))
    }

    pub fn block_at(height: u64) -> Vec<u8> {
        [&[BLOCK_AT][..], &height.to_be_bytes()].concat()
    }

    pub fn tx_at(hash: &ContentId) -> Vec<u8> {
        [&[TX_AT][..], hash.as_bytes()].concat()
    }

    pub fn verdict_at(hash: &ContentId) -> Vec<u8> {
        [&[VERDICT_AT][..], hash.as_bytes()].concat()
    }

    /// Big-endian height and ordinal first, so key order is opening order
    /// (`ordinal`: the count of jobs the block opened before this one).
    pub fn job_opened(height: u64, ordinal: u32, job: &JobId) -> Vec<u8> {
        [
            &[JOB_OPENED][..],
            &height.to_be_bytes(),
            &ordinal.to_be_bytes(),
            job.as_bytes(),
        ]
        .concat()
    }

    /// The last 32 bytes of a key: the account in stake and epoch-fuel keys.
    pub fn trailing_account(key: &[u8]) -> Option<AccountId> {
        trailing_32(key).map(AccountId::from_bytes)
    }

    /// The last 32 bytes of a key: the job in job-opened keys.
    pub fn trailing_job(key: &[u8]) -> Option<JobId> {
        trailing_32(key).map(JobId::from_bytes)
    }

    fn trailing_32(key: &[u8]) -> Option<[u8; 32]> {
        key.get(key.len().checked_sub(32)?..)?.try_into().ok()
    }

    /// Whether a key is part of the authenticated state.
    pub fn is_state(key: &[u8]) -> bool {
        !matches!(
            key.first(),
            Some(&TREE_NODE)
                | Some(&ROOT_AT)
                | Some(&TX_AT)
                | Some(&BLOCK_AT)
                | Some(&JOB_OPENED)
                | Some(&VERDICT_AT)
                | Some(&STALE_NODE)
        )
    }
}

pub(crate) fn decode_record<T: BorshDeserialize>(bytes: &[u8]) -> Result<T, StoreError> {
    codec::decode(bytes, RECORD_BYTES_MAX)
        .map_err(|error| StoreError(format!("a stored record is corrupt: {error}")))
}

pub(crate) fn encode_record<T: BorshSerialize>(value: &T) -> Vec<u8> {
    codec::encode(value).expect("ledger records encode")
}

/// A key and what the overlay held for it before a write (`None`: nothing).
type JournalEntry = (Vec<u8>, Option<Option<Vec<u8>>>);

/// The writes of the block being applied, over the committed store, with an
/// undo journal so a rejected transaction leaves no trace.
pub(crate) struct Overlay<'s, S: Store> {
    store: &'s S,
    writes: BTreeMap<Vec<u8>, Option<Vec<u8>>>,
    /// What `writes` held for each key before each write, in write order.
    journal: Vec<JournalEntry>,
}

impl<'s, S: Store> Overlay<'s, S> {
    pub fn new(store: &'s S) -> Self {
        Self {
            store,
            writes: BTreeMap::new(),
            journal: Vec::new(),
        }
    }

    pub fn get_raw(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        match self.writes.get(key) {
            Some(value) => Ok(value.clone()),
            None => self.store.get(key),
        }
    }

    pub fn get<T: BorshDeserialize>(&self, key: &[u8]) -> Result<Option<T>, StoreError> {
        self.get_raw(key)?
            .map(|bytes| decode_record(&bytes))
            .transpose()
    }

    pub fn put_raw(&mut self, key: Vec<u8>, value: Option<Vec<u8>>) {
        let previous = self.writes.insert(key.clone(), value);
        self.journal.push((key, previous));
    }

    pub fn put<T: BorshSerialize>(&mut self, key: Vec<u8>, value: &T) {
        self.put_raw(key, Some(encode_record(value)));
    }

    pub fn delete(&mut self, key: Vec<u8>) {
        self.put_raw(key, None);
    }

    /// Entries under `prefix`, committed merged with pending writes.
    pub fn scan_prefix(&self, prefix: &[u8]) -> Result<Entries, StoreError> {
        let mut merged: BTreeMap<Vec<u8>, Vec<u8>> =
            self.store.scan_prefix(prefix)?.into_iter().collect();
        crate::store::apply_under_prefix(&mut merged, &self.writes, prefix);
        Ok(merged.into_iter().collect())
    }

    pub fn checkpoint(&self) -> usize {
        self.journal.len()
    }

    pub fn rollback(&mut self, checkpoint: usize) {
        while self.journal.len() > checkpoint {
            let Some((key, previous)) = self.journal.pop() else {
                break;
            };
            match previous {
                Some(value) => self.writes.insert(key, value),
                None => self.writes.remove(&key),
            };
        }
    }

    pub fn into_batch(self) -> WriteBatch {
        self.writes
    }

    pub fn writes(&self) -> &BTreeMap<Vec<u8>, Option<Vec<u8>>> {
        &self.writes
    }
}
