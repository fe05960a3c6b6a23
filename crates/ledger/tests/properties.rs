//! Property tests of the ledger state machine.
//!
//! Random blocks of random transactions among a few keypairs (valid ones,
//! and ones with bad signatures, stale nonces, the wrong chain, low fees,
//! overdrafts, forged or stale vouchers) are applied to one ledger in memory
//! and one in redb, with short epochs and unbonding periods so rewards and
//! releases happen. After every block:
//!
//! - (a) every token is accounted for: `tokens_in_existence` equals
//!   genesis + emissions − burns;
//! - (b) an independent model, driven only by the events each accepted
//!   transaction reports and the rules, agrees with every balance, stake,
//!   unbonding entry, escrow, redemption and the fee pool, with checked
//!   arithmetic: no voucher pays more than its cumulative amount minus what
//!   was redeemed, nor more than the escrow, and only the job's requestor or
//!   its agent signs one that pays (jobs are opened with and without an
//!   agent, and vouchers signed by either or by others); a job closed by its
//!   agent refunds its requestor; epoch rewards are exactly the rule's
//!   shares, paid by the powers of the validator set recorded for the epoch
//!   that ends (the largest `validators_max` by stake, capped at
//!   `voting_power_cap_bps`), and each recorded set is the model's;
//! - (c) each account's nonce advances by exactly its accepted transactions,
//!   and a replayed transaction is refused;
//! - (d) the memory and redb ledgers give identical outcomes and state roots
//!   at every height (and redb reopens at the same root);
//! - (e) a block without its rejected transactions writes exactly the same;
//! - (f) `jobs` lists every opened job, most recently opened first.
//!
//! A second group checks that `decode_transaction` never panics on arbitrary
//! or mutated bytes and that whatever it accepts re-encodes to the same bytes.

use std::collections::{BTreeMap, BTreeSet};

use idlegrid_ledger::state::UNBONDINGS_MAX;
use idlegrid_ledger::{
    BlockOutcome, Dispute, Event, Evidence, FAULT_EVIDENCE_BYTES_MAX, Genesis, JobStatus, Ledger,
    MemoryStore, NoReExecution, OpenJob, Params, RedbStore, Redemption, SignedTransaction,
    StakeRole, Store, Transaction, TxKind, Unbonding, capped_powers, decode_transaction,
    transaction_hash,
};
use idlegrid_types::codec::{self, Bounded};
use idlegrid_types::{
    AccountId, ContentId, ErrorKind, ExecutionLimits, JobId, Keypair, Receipt, Signature,
    TaskOutcome, Voucher,
};
use proptest::collection::vec;
use proptest::prelude::*;

const CHAIN: &str = "idlegrid-properties";
/// Accounts funded at genesis: indices `0..FUNDED`.
const FUNDED: usize = 5;
/// `FUNDED` starts with nothing (it can be paid); `FUNDED + 1` also starts
/// with nothing and mostly signs vouchers it has no right to sign.
const ACCOUNTS: usize = FUNDED + 2;
const GENESIS_BALANCE: u64 = 20_000;
const UNBONDING_BLOCKS: u64 = 2;
const DEADLINE_BLOCKS_MAX: u64 = 8;
/// An id no job has.
const UNKNOWN_JOB: JobId = JobId::from_bytes([0xee; 32]);

// ---------------------------------------------------------------------------
// What a generated transaction asks for. It is turned into a signed
// transaction against the state at the time (so most nonces are right and
// vouchers refer to real jobs and redemptions).

#[derive(Debug, Clone)]
enum Op {
    Transfer {
        to: usize,
        amount: u64,
    },
    Stake {
        role: StakeRole,
        amount: u64,
    },
    Unstake {
        role: StakeRole,
        /// A percentage of what is bonded, or else `amount`.
        percent: Option<u64>,
        amount: u64,
    },
    OpenJob {
        escrow: u64,
        price: u64,
        deadline_in: u64,
        fuel_too_high: bool,
        /// An account that runs the job for its requestor.
        agent: Option<usize>,
    },
    TopUp {
        job: JobPick,
        amount: u64,
    },
    Redeem {
        job: JobPick,
        /// Added to what was already redeemed.
        extra: u64,
        fuel: u64,
        /// Added to the last redeemed sequence.
        sequence_step: i64,
        fault: VoucherFault,
    },
    Close {
        job: JobPick,
    },
}

/// Which job a transaction names: one of the latest that fit (open ones for
/// top-ups and vouchers, expired ones for closing), or one that does not exist.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum JobPick {
    Recent(usize),
    Unknown,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum VoucherFault {
    None,
    /// Signed by this account instead of the requestor.
    WrongSigner(usize),
    /// Signed by the job's agent (a wrong signer when it has none).
    ByAgent,
    /// Signed, then its amount changed.
    Tampered,
    /// Names this account as the provider.
    OtherProvider(usize),
    /// Its cumulative amount is below what was already redeemed.
    BelowRedeemed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    None,
    BadSignature,
    /// Added to the right nonce.
    Nonce(i64),
    WrongChain,
    ZeroFee,
    HugeFee,
    /// Resubmits the last accepted transaction.
    Replay,
}

#[derive(Debug, Clone)]
struct TxSpec {
    sender: usize,
    fee: u64,
    op: Op,
    fault: Fault,
}

#[derive(Debug, Clone)]
struct Scenario {
    epoch_length: u64,
    emission: u64,
    validator_share_bps: u16,
    validators_max: u32,
    voting_power_cap_bps: u16,
    validators: Vec<(usize, u64)>,
    blocks: Vec<Vec<TxSpec>>,
}

fn amount() -> impl Strategy<Value = u64> {
    prop_oneof![
        12 => 1u64..2_000,
        1 => Just(0u64),
        2 => 2_000u64..60_000,
        1 => Just(u64::MAX),
    ]
}

fn role() -> impl Strategy<Value = StakeRole> {
    prop_oneof![Just(StakeRole::Provider), Just(StakeRole::Validator)]
}

fn job_pick() -> impl Strategy<Value = JobPick> {
    prop_oneof![
        12 => (0usize..4).prop_map(JobPick::Recent),
        1 => Just(JobPick::Unknown),
    ]
}

fn voucher_fault() -> impl Strategy<Value = VoucherFault> {
    prop_oneof![
        12 => Just(VoucherFault::None),
        1 => (0..ACCOUNTS).prop_map(VoucherFault::WrongSigner),
        4 => Just(VoucherFault::ByAgent),
        1 => Just(VoucherFault::Tampered),
        1 => (0..ACCOUNTS).prop_map(VoucherFault::OtherProvider),
        1 => Just(VoucherFault::BelowRedeemed),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0..ACCOUNTS, amount()).prop_map(|(to, amount)| Op::Transfer { to, amount }),
        2 => (role(), amount()).prop_map(|(role, amount)| Op::Stake { role, amount }),
        2 => (role(), prop::option::weighted(0.7, 1u64..=100), amount())
            .prop_map(|(role, percent, amount)| Op::Unstake { role, percent, amount }),
        3 => (
            prop_oneof![4 => 1u64..3_000, 1 => amount()],
            prop_oneof![9 => 1u64..100, 1 => Just(0u64)],
            0..=DEADLINE_BLOCKS_MAX + 2,
            prop::bool::weighted(0.05),
            prop::option::weighted(0.4, 0..ACCOUNTS),
        )
            .prop_map(|(escrow, price, deadline_in, fuel_too_high, agent)| Op::OpenJob {
                escrow,
                price,
                deadline_in,
                fuel_too_high,
                agent,
            }),
        1 => (job_pick(), amount()).prop_map(|(job, amount)| Op::TopUp { job, amount }),
        5 => (
            job_pick(),
            prop_oneof![8 => 0u64..1_500, 2 => 1_500u64..100_000, 1 => Just(u64::MAX)],
            0u64..1_000_000,
            -1i64..=3,
            voucher_fault(),
        )
            .prop_map(|(job, extra, fuel, sequence_step, fault)| Op::Redeem {
                job,
                extra,
                fuel,
                sequence_step,
                fault,
            }),
        1 => job_pick().prop_map(|job| Op::Close { job }),
    ]
}

fn fault() -> impl Strategy<Value = Fault> {
    prop_oneof![
        24 => Just(Fault::None),
        1 => Just(Fault::BadSignature),
        1 => prop_oneof![Just(-1i64), Just(1), Just(3)].prop_map(Fault::Nonce),
        1 => Just(Fault::WrongChain),
        1 => Just(Fault::ZeroFee),
        1 => Just(Fault::HugeFee),
        1 => Just(Fault::Replay),
    ]
}

fn tx_spec() -> impl Strategy<Value = TxSpec> {
    (
        prop_oneof![12 => 0..FUNDED, 1 => FUNDED..ACCOUNTS],
        1u64..4,
        op(),
        fault(),
    )
        .prop_map(|(sender, fee, op, fault)| TxSpec {
            sender,
            fee,
            op,
            fault,
        })
}

fn scenario() -> impl Strategy<Value = Scenario> {
    (
        3u64..=5,
        1u64..5_000,
        0u16..=10_000,
        // Fewer than the accounts that may validate, at times, so the set
        // is cut; caps from tiny (everyone levelled) to the largest allowed.
        prop_oneof![1 => 1u32..=3, 2 => Just(Params::default().validators_max)],
        prop_oneof![1 => 1u16..=3_333, 2 => Just(Params::default().voting_power_cap_bps)],
        vec((0..FUNDED, 1u64..5_000), 0..4),
        vec(vec(tx_spec(), 0..10), 8..24),
    )
        .prop_map(
            |(
                epoch_length,
                emission,
                validator_share_bps,
                validators_max,
                voting_power_cap_bps,
                validators,
                blocks,
            )| Scenario {
                epoch_length,
                emission,
                validator_share_bps,
                validators_max,
                voting_power_cap_bps,
                validators,
                blocks,
            },
        )
}

// ---------------------------------------------------------------------------
// The model: what the ledger should hold, rebuilt from the events of accepted
// transactions and the rules, with arithmetic that panics on underflow.

fn sub(a: u64, b: u64, what: &str) -> u64 {
    a.checked_sub(b)
        .unwrap_or_else(|| panic!("{what}: {a} - {b} underflows"))
}

fn add(a: u64, b: u64, what: &str) -> u64 {
    a.checked_add(b)
        .unwrap_or_else(|| panic!("{what}: {a} + {b} overflows"))
}

fn share(amount: u64, numerator: u64, denominator: u64) -> u64 {
    if denominator == 0 {
        return 0;
    }
    u64::try_from(u128::from(amount) * u128::from(numerator) / u128::from(denominator))
        .expect("a share of an amount fits")
}

#[derive(Debug, Clone)]
struct ModelJob {
    requestor: AccountId,
    agent: Option<AccountId>,
    escrow: u64,
    redeemed_total: u64,
    deadline: u64,
    closed: bool,
}

#[derive(Debug, Default)]
struct Model {
    balances: BTreeMap<AccountId, u64>,
    bonded: BTreeMap<(StakeRole, AccountId), u64>,
    unbonding: BTreeMap<(StakeRole, AccountId), Vec<Unbonding>>,
    jobs: BTreeMap<JobId, ModelJob>,
    /// Job ids in the order their openings applied.
    opened: Vec<JobId>,
    redemptions: BTreeMap<(JobId, AccountId), Redemption>,
    /// Fuel redeemed per provider this epoch.
    epoch_fuel: BTreeMap<AccountId, u64>,
    fee_pool: u64,
    genesis_supply: u64,
    emitted: u64,
    /// The validator set recorded for the epoch under way: (account,
    /// power), largest stake first.
    validator_set: Vec<(AccountId, u64)>,
}

impl Model {
    fn credit(&mut self, account: AccountId, amount: u64, what: &str) {
        let balance = self.balances.entry(account).or_default();
        *balance = add(*balance, amount, what);
    }

    fn debit(&mut self, account: AccountId, amount: u64, what: &str) {
        let balance = self.balances.entry(account).or_default();
        *balance = sub(*balance, amount, what);
    }

    fn total_held(&self) -> u64 {
        let balances: u64 = self.balances.values().sum();
        let bonded: u64 = self.bonded.values().sum();
        let unbonding: u64 = self
            .unbonding
            .values()
            .flatten()
            .map(|entry| entry.amount)
            .sum();
        let escrow: u64 = self.jobs.values().map(|job| job.escrow).sum();
        balances + bonded + unbonding + escrow + self.fee_pool
    }

    /// Releases what matures at `height`; checks the ledger's `Unbonded`
    /// events say exactly that.
    fn release(&mut self, height: u64, events: &[Event]) {
        let mut expected = Vec::new();
        for (&(role, account), entries) in &mut self.unbonding {
            assert!(
                entries.iter().all(|entry| entry.release_height >= height),
                "an unbonding of {account:?} was not released at its height"
            );
            let amount: u64 = entries
                .iter()
                .filter(|entry| entry.release_height == height)
                .map(|entry| entry.amount)
                .sum();
            entries.retain(|entry| entry.release_height != height);
            if amount > 0 {
                expected.push((account, role, amount));
            }
        }
        self.unbonding.retain(|_, entries| !entries.is_empty());
        let mut found: Vec<(AccountId, StakeRole, u64)> = events
            .iter()
            .map(|event| match event {
                Event::Unbonded {
                    account,
                    role,
                    amount,
                } => (*account, *role, *amount),
                other => panic!("unexpected release event {other:?}"),
            })
            .collect();
        found.sort();
        expected.sort();
        assert_eq!(found, expected, "released unbondings at height {height}");
        for (account, _, amount) in expected {
            self.credit(account, amount, "release");
        }
    }

    /// Applies one accepted transaction's events, checking each against the
    /// transaction and the rules.
    fn accept(
        &mut self,
        height: u64,
        signed: &SignedTransaction,
        events: &[Event],
    ) -> Result<(), TestCaseError> {
        let tx = &signed.body;
        let sender = signed.signer;
        prop_assert_eq!(
            events.first(),
            Some(&Event::FeePaid {
                payer: sender,
                amount: tx.fee
            }),
            "the first event is the fee"
        );
        prop_assert!(tx.fee >= 1);
        self.debit(sender, tx.fee, "fee");
        self.fee_pool = add(self.fee_pool, tx.fee, "fee pool");
        let rest = &events[1..];
        prop_assert_eq!(rest.len(), 1, "one event for the transaction's effect");
        match (&tx.kind, &rest[0]) {
            (
                TxKind::Transfer { to, amount },
                Event::Transferred {
                    from,
                    to: paid,
                    amount: moved,
                },
            ) => {
                prop_assert_eq!((*from, *paid, *moved), (sender, *to, *amount));
                prop_assert!(*amount > 0);
                self.debit(sender, *amount, "transfer");
                self.credit(*to, *amount, "transfer");
            }
            (
                TxKind::Stake { role, amount },
                Event::Staked {
                    account,
                    role: staked_role,
                    amount: staked,
                },
            ) => {
                prop_assert_eq!((*account, *staked_role, *staked), (sender, *role, *amount));
                prop_assert!(*amount > 0);
                self.debit(sender, *amount, "stake");
                let bonded = self.bonded.entry((*role, sender)).or_default();
                *bonded = add(*bonded, *amount, "bonded");
            }
            (
                TxKind::Unstake { role, amount },
                Event::UnbondingStarted {
                    account,
                    role: unstaked_role,
                    amount: unstaked,
                    release_height,
                },
            ) => {
                prop_assert_eq!(
                    (*account, *unstaked_role, *unstaked, *release_height),
                    (sender, *role, *amount, height + UNBONDING_BLOCKS)
                );
                prop_assert!(*amount > 0);
                let bonded = self.bonded.entry((*role, sender)).or_default();
                *bonded = sub(*bonded, *amount, "unstake more than bonded");
                let entries = self.unbonding.entry((*role, sender)).or_default();
                entries.push(Unbonding {
                    release_height: *release_height,
                    amount: *amount,
                });
                prop_assert!(entries.len() <= UNBONDINGS_MAX);
            }
            (
                TxKind::OpenJob(terms),
                Event::JobOpened {
                    job,
                    requestor,
                    escrow,
                },
            ) => {
                prop_assert_eq!(*job, JobId::derive(&sender, tx.nonce));
                prop_assert_eq!((*requestor, *escrow), (sender, terms.escrow));
                prop_assert!(*escrow > 0 && terms.price_per_million_fuel > 0);
                prop_assert!(
                    terms.deadline_height > height
                        && terms.deadline_height - height <= DEADLINE_BLOCKS_MAX
                );
                prop_assert!(!self.jobs.contains_key(job), "a job id is reused");
                self.debit(sender, *escrow, "escrow");
                self.opened.push(*job);
                self.jobs.insert(
                    *job,
                    ModelJob {
                        requestor: sender,
                        agent: terms.agent,
                        escrow: *escrow,
                        redeemed_total: 0,
                        deadline: terms.deadline_height,
                        closed: false,
                    },
                );
            }
            (
                TxKind::TopUpJob { job, amount },
                Event::JobToppedUp {
                    job: topped,
                    amount: added,
                },
            ) => {
                prop_assert_eq!((*topped, *added), (*job, *amount));
                prop_assert!(*amount > 0);
                let record = self.jobs.get(job).expect("a top-up of a known job").clone();
                prop_assert!(record.requestor == sender && !record.closed);
                prop_assert!(height <= record.deadline, "a top-up after the deadline");
                self.debit(sender, *amount, "top-up");
                let record = self.jobs.get_mut(job).expect("known job");
                record.escrow = add(record.escrow, *amount, "escrow");
            }
            (
                TxKind::Redeem { voucher },
                Event::Redeemed {
                    job,
                    provider,
                    amount,
                    fuel,
                },
            ) => {
                let terms = voucher.verify().expect("an accepted voucher verifies");
                prop_assert_eq!((*job, *provider), (terms.job, sender));
                prop_assert_eq!(terms.provider, sender, "a voucher for another provider");
                let record = self
                    .jobs
                    .get(job)
                    .expect("a redemption of a known job")
                    .clone();
                prop_assert!(
                    voucher.signer == record.requestor || Some(voucher.signer) == record.agent,
                    "a voucher from neither the requestor nor its agent"
                );
                prop_assert!(!record.closed, "a redemption from a closed job");
                prop_assert!(height <= record.deadline, "a redemption after the deadline");
                let before = self
                    .redemptions
                    .get(&(*job, sender))
                    .copied()
                    .unwrap_or_default();
                prop_assert!(
                    terms.sequence > before.sequence,
                    "a voucher that is not newer"
                );
                // The voucher pays its cumulative amount minus what was
                // already redeemed, and never more than the escrow holds.
                let owed = sub(
                    terms.cumulative_amount,
                    before.amount,
                    "voucher below redeemed",
                );
                prop_assert_eq!(*amount, owed, "the amount paid");
                prop_assert!(
                    *amount <= record.escrow,
                    "redeemed {} from an escrow of {}",
                    amount,
                    record.escrow
                );
                let fuel_owed = sub(terms.cumulative_fuel, before.fuel, "fuel below redeemed");
                prop_assert_eq!(*fuel, fuel_owed);
                let entry = self.jobs.get_mut(job).expect("known job");
                entry.escrow = sub(entry.escrow, *amount, "escrow");
                entry.redeemed_total = add(entry.redeemed_total, *amount, "redeemed total");
                self.redemptions.insert(
                    (*job, sender),
                    Redemption {
                        amount: terms.cumulative_amount,
                        fuel: terms.cumulative_fuel,
                        sequence: terms.sequence,
                    },
                );
                self.credit(sender, *amount, "redemption");
                let epoch_fuel = self.epoch_fuel.entry(sender).or_default();
                *epoch_fuel = epoch_fuel.saturating_add(*fuel);
            }
            (
                TxKind::CloseJob { job },
                Event::JobClosed {
                    job: closed,
                    refund,
                },
            ) => {
                prop_assert_eq!(*closed, *job);
                let record = self.jobs.get(job).expect("a close of a known job").clone();
                prop_assert!(
                    (record.requestor == sender || record.agent == Some(sender)) && !record.closed
                );
                prop_assert!(height > record.deadline, "a close before the deadline");
                prop_assert_eq!(*refund, record.escrow);
                let entry = self.jobs.get_mut(job).expect("known job");
                entry.escrow = 0;
                entry.closed = true;
                // The refund is the requestor's, whoever closes.
                self.credit(record.requestor, *refund, "refund");
            }
            (kind, event) => {
                prop_assert!(false, "{} produced {:?}", kind.name(), event);
            }
        }
        Ok(())
    }

    /// At an epoch's last block: the rewards the rules give, in the ledger's
    /// event order, applied to the model.
    fn epoch_rewards(&mut self, params: &Params) -> Vec<Event> {
        let mut events = Vec::new();
        let validator_emission = share(
            params.emission_per_epoch,
            u64::from(params.validator_reward_share_bps),
            10_000,
        );
        let provider_emission = params.emission_per_epoch - validator_emission;
        let total_fuel: u64 = self.epoch_fuel.values().sum();
        for (provider, fuel) in std::mem::take(&mut self.epoch_fuel) {
            let reward = share(provider_emission, fuel, total_fuel);
            if reward > 0 {
                self.credit(provider, reward, "provider reward");
                self.emitted += reward;
                events.push(Event::ProviderRewarded {
                    provider,
                    amount: reward,
                });
            }
        }
        // Validators are paid by their power in the set of the epoch that
        // ends, in the set's order, whatever their stake is now.
        let validators = self.validator_set.clone();
        let total_power: u64 = validators.iter().map(|(_, power)| power).sum();
        let fees = self.fee_pool;
        for (validator, power) in validators {
            let from_emission = share(validator_emission, power, total_power);
            let from_fees = share(fees, power, total_power);
            if from_emission + from_fees > 0 {
                self.credit(validator, from_emission + from_fees, "validator reward");
                self.emitted += from_emission;
                self.fee_pool = sub(self.fee_pool, from_fees, "fee pool");
                events.push(Event::ValidatorRewarded {
                    validator,
                    amount: from_emission + from_fees,
                });
            }
        }
        self.record_validator_set(params);
        events
    }

    /// The next epoch's set from the validator stake now: the largest
    /// `validators_max` (ties by account), powers capped; with nobody
    /// staked, the set stays as it was.
    fn record_validator_set(&mut self, params: &Params) {
        let mut set: Vec<(AccountId, u64)> = self
            .bonded
            .iter()
            .filter(|((role, _), bonded)| *role == StakeRole::Validator && **bonded > 0)
            .map(|((_, account), bonded)| (*account, *bonded))
            .collect();
        if set.is_empty() {
            return;
        }
        set.sort_by(|(a, stake_a), (b, stake_b)| stake_b.cmp(stake_a).then(a.cmp(b)));
        set.truncate(params.validators_max as usize);
        let stakes: Vec<u64> = set.iter().map(|(_, stake)| *stake).collect();
        let powers = capped_powers(&stakes, params.voting_power_cap_bps);
        assert_eq!(powers.len(), set.len(), "a power for every validator");
        self.validator_set = set
            .into_iter()
            .zip(powers)
            .map(|((account, _), power)| (account, power))
            .collect();
    }

    /// Everything the ledger's queries say agrees with the model.
    fn matches<S: Store>(&self, ledger: &Ledger<S>, ids: &[AccountId]) {
        for id in ids {
            let balance = ledger.account(id).expect("account").balance;
            assert_eq!(
                balance,
                self.balances.get(id).copied().unwrap_or(0),
                "balance of {id:?}"
            );
            for role in [StakeRole::Provider, StakeRole::Validator] {
                let stake = ledger.stake(role, id).expect("stake");
                assert_eq!(
                    stake.bonded,
                    self.bonded.get(&(role, *id)).copied().unwrap_or(0),
                    "{} stake of {id:?}",
                    role.as_str()
                );
                assert_eq!(
                    stake.unbonding,
                    self.unbonding
                        .get(&(role, *id))
                        .cloned()
                        .unwrap_or_default(),
                    "{} unbonding of {id:?}",
                    role.as_str()
                );
            }
        }
        for (role, list) in [
            (StakeRole::Provider, ledger.providers().expect("providers")),
            (
                StakeRole::Validator,
                ledger.validators().expect("validators"),
            ),
        ] {
            let expected: Vec<(AccountId, u64)> = self
                .bonded
                .iter()
                .filter(|((r, _), bonded)| *r == role && **bonded > 0)
                .map(|((_, account), bonded)| (*account, *bonded))
                .collect();
            assert_eq!(list, expected, "bonded {} list", role.as_str());
        }
        let epoch = ledger.height() / ledger.params().epoch_length_blocks;
        assert_eq!(
            ledger.validator_set(epoch).expect("validator set"),
            Some(self.validator_set.clone()),
            "the validator set of epoch {epoch}"
        );
        assert_eq!(
            ledger.validator_set(epoch + 1).expect("validator set"),
            None,
            "no set yet for epoch {}",
            epoch + 1
        );
        for (id, job) in &self.jobs {
            let record = ledger.job(id).expect("job").expect("the job exists");
            assert_eq!(record.requestor, job.requestor);
            assert_eq!(record.escrow, job.escrow, "escrow of {id:?}");
            assert_eq!(record.redeemed_total, job.redeemed_total);
            assert_eq!(record.deadline_height, job.deadline);
            assert_eq!(record.status == JobStatus::Closed, job.closed);
            let expected: Vec<(AccountId, Redemption)> = self
                .redemptions
                .range((*id, AccountId::from_bytes([0; 32]))..)
                .take_while(|((job, _), _)| job == id)
                .map(|((_, provider), redemption)| (*provider, *redemption))
                .collect();
            assert_eq!(ledger.redemptions(id).expect("redemptions"), expected);
        }
        assert_eq!(ledger.job(&UNKNOWN_JOB).expect("job"), None);
        for status in [None, Some(JobStatus::Open), Some(JobStatus::Closed)] {
            let listed: Vec<JobId> = ledger
                .jobs(status, usize::MAX)
                .expect("jobs")
                .into_iter()
                .map(|(id, _)| id)
                .collect();
            let expected: Vec<JobId> = self
                .opened
                .iter()
                .rev()
                .filter(|id| {
                    status
                        .is_none_or(|status| self.jobs[*id].closed == (status == JobStatus::Closed))
                })
                .copied()
                .collect();
            assert_eq!(listed, expected, "jobs listed as {status:?}, newest first");
        }
        let supply = ledger.supply().expect("supply");
        assert_eq!(supply.genesis, self.genesis_supply);
        assert_eq!(supply.emitted, self.emitted, "emitted");
        assert_eq!(supply.burned, 0, "nothing burns without disputes");
        let tokens = ledger.tokens_in_existence().expect("tokens");
        assert_eq!(tokens, supply.expected_total(), "the supply invariant");
        assert_eq!(tokens, self.total_held(), "tokens held, by the model");
    }
}

// ---------------------------------------------------------------------------
// Running a scenario.

/// What a transaction's outcome must be, where the test knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    Anything,
    Rejected(&'static str),
    AnyRejection,
}

struct Harness {
    keys: Vec<Keypair>,
    ids: Vec<AccountId>,
    params: Params,
    memory: Ledger<MemoryStore>,
    disk: Ledger<RedbStore>,
    dir: tempfile::TempDir,
    model: Model,
    /// Hashes of every accepted transaction.
    accepted: BTreeSet<ContentId>,
    last_accepted: Option<SignedTransaction>,
}

impl Harness {
    fn new(scenario: &Scenario) -> Self {
        let keys: Vec<Keypair> = (0..ACCOUNTS)
            .map(|index| Keypair::from_seed([index as u8 + 1; 32]))
            .collect();
        let ids: Vec<AccountId> = keys.iter().map(Keypair::account_id).collect();
        let params = Params {
            epoch_length_blocks: scenario.epoch_length,
            emission_per_epoch: scenario.emission,
            validator_reward_share_bps: scenario.validator_share_bps,
            unbonding_blocks: UNBONDING_BLOCKS,
            minimum_fee: 1,
            job_deadline_blocks_max: DEADLINE_BLOCKS_MAX,
            validators_max: scenario.validators_max,
            voting_power_cap_bps: scenario.voting_power_cap_bps,
            ..Params::default()
        };
        let validators: BTreeMap<usize, u64> = scenario.validators.iter().copied().collect();
        let genesis = Genesis {
            chain_id: CHAIN.to_owned(),
            params: params.clone(),
            balances: ids[..FUNDED]
                .iter()
                .map(|id| (*id, GENESIS_BALANCE))
                .collect(),
            validators: validators
                .iter()
                .map(|(index, stake)| (ids[*index], *stake))
                .collect(),
        };
        let mut model = Model {
            genesis_supply: genesis.supply().expect("genesis supply"),
            ..Model::default()
        };
        for (id, balance) in &genesis.balances {
            model.balances.insert(*id, *balance);
        }
        for (id, stake) in &genesis.validators {
            model.bonded.insert((StakeRole::Validator, *id), *stake);
        }
        // Epoch 0's set is taken from the genesis validators.
        model.record_validator_set(&params);
        let dir = tempfile::tempdir().expect("tempdir");
        let memory = Ledger::init(MemoryStore::default(), &genesis).expect("init in memory");
        let disk = Ledger::init(
            RedbStore::open(&dir.path().join("ledger.redb")).expect("open redb"),
            &genesis,
        )
        .expect("init in redb");
        assert_eq!(memory.state_root(), disk.state_root());
        Self {
            keys,
            ids,
            params,
            memory,
            disk,
            dir,
            model,
            accepted: BTreeSet::new(),
            last_accepted: None,
        }
    }

    fn key_of(&self, account: &AccountId) -> Option<&Keypair> {
        self.ids
            .iter()
            .position(|id| id == account)
            .map(|index| &self.keys[index])
    }

    /// Turns the specs into signed transactions, each against the state the
    /// block has reached when it runs.
    fn build_block(&self, height: u64, specs: &[TxSpec]) -> (Vec<SignedTransaction>, Vec<Expect>) {
        let mut txs: Vec<SignedTransaction> = Vec::new();
        let mut expects = Vec::new();
        for spec in specs {
            let prefix = (!txs.is_empty()).then(|| {
                self.memory
                    .execute_block(height, 0, &txs, &NoReExecution)
                    .expect("execute the block so far")
                    .1
            });
            let (tx, expect) = self.build_tx(height, spec, &txs, prefix.as_ref());
            txs.push(tx);
            expects.push(expect);
        }
        (txs, expects)
    }

    fn build_tx(
        &self,
        height: u64,
        spec: &TxSpec,
        prefix_txs: &[SignedTransaction],
        prefix: Option<&BlockOutcome>,
    ) -> (SignedTransaction, Expect) {
        let accepted_in_block = || {
            prefix.into_iter().flat_map(|outcome| {
                outcome
                    .transactions
                    .iter()
                    .zip(prefix_txs)
                    .filter(|(result, _)| result.outcome.is_ok())
            })
        };
        if spec.fault == Fault::Replay {
            let last = accepted_in_block()
                .next_back()
                .map(|(_, tx)| tx.clone())
                .or_else(|| self.last_accepted.clone());
            if let Some(last) = last {
                return (last, Expect::Rejected("stale_nonce"));
            }
        }
        let key = &self.keys[spec.sender];
        let sender = self.ids[spec.sender];
        let next_nonce = self.memory.account(&sender).expect("account").nonce
            + accepted_in_block()
                .filter(|(_, tx)| tx.signer == sender)
                .count() as u64;
        // Jobs opened so far, committed (by deadline) then earlier in this
        // block: (id, (requestor, agent), deadline, closed when the block
        // started).
        type Runners = (AccountId, Option<AccountId>);
        let mut jobs: Vec<(JobId, Runners, u64, bool)> = self
            .model
            .jobs
            .iter()
            .map(|(id, job)| (*id, (job.requestor, job.agent), job.deadline, job.closed))
            .collect();
        jobs.sort_by_key(|(_, _, deadline, _)| *deadline);
        for (_, tx) in accepted_in_block() {
            if let TxKind::OpenJob(terms) = &tx.body.kind {
                let id = JobId::derive(&tx.signer, tx.body.nonce);
                jobs.push((id, (tx.signer, terms.agent), terms.deadline_height, false));
            }
        }
        let requestors: BTreeMap<JobId, Runners> = jobs
            .iter()
            .map(|(id, runners, _, _)| (*id, *runners))
            .collect();
        // The sender's own jobs, for a top-up: the requestor's; for a close:
        // the requestor's or its agent's.
        let owns = |(requestor, agent): &Runners| *requestor == sender || *agent == Some(sender);
        // The latest jobs that fit, loosening the fit until some do.
        let pick = |choice: JobPick, to_close: bool, own: bool| -> JobId {
            let JobPick::Recent(index) = choice else {
                return UNKNOWN_JOB;
            };
            let fits = |(_, runners, deadline, closed): &(JobId, Runners, u64, bool)| {
                !closed && (height > *deadline) == to_close && (!own || owns(runners))
            };
            let loose = |(_, runners, _, _): &(JobId, Runners, u64, bool)| !own || owns(runners);
            let mut candidates: Vec<JobId> = jobs
                .iter()
                .filter(|job| fits(job))
                .map(|(id, ..)| *id)
                .collect();
            if candidates.is_empty() {
                candidates = jobs
                    .iter()
                    .filter(|job| loose(job))
                    .map(|(id, ..)| *id)
                    .collect();
            }
            if candidates.is_empty() {
                candidates = jobs.iter().map(|(id, ..)| *id).collect();
            }
            match candidates.len() {
                0 => UNKNOWN_JOB,
                len => candidates[len - 1 - index % len],
            }
        };

        let mut expect = Expect::Anything;
        let mut nonce = next_nonce;
        let mut fee = spec.fee;
        let mut chain = CHAIN;
        match spec.fault {
            Fault::None | Fault::Replay | Fault::BadSignature => {}
            Fault::Nonce(offset) => {
                nonce = next_nonce.saturating_add_signed(offset);
                if nonce != next_nonce {
                    expect = Expect::Rejected("stale_nonce");
                }
            }
            Fault::WrongChain => {
                chain = "another-chain";
                expect = Expect::Rejected("wrong_chain");
            }
            Fault::ZeroFee => {
                fee = 0;
                expect = Expect::Rejected("fee_too_low");
            }
            Fault::HugeFee => {
                fee = u64::MAX;
                expect = Expect::Rejected("insufficient_balance");
            }
        }
        if spec.fault == Fault::BadSignature {
            expect = Expect::Rejected("bad_signature");
        }
        let must_reject = |expect: &mut Expect| {
            if *expect == Expect::Anything {
                *expect = Expect::AnyRejection;
            }
        };

        let kind = match &spec.op {
            Op::Transfer { to, amount } => TxKind::Transfer {
                to: self.ids[*to],
                amount: *amount,
            },
            Op::Stake { role, amount } => TxKind::Stake {
                role: *role,
                amount: *amount,
            },
            Op::Unstake {
                role,
                percent,
                amount,
            } => {
                // Mostly unstake a role the sender has stake in.
                let bonded_as = |role| self.memory.stake(role, &sender).expect("stake").bonded;
                let other = match role {
                    StakeRole::Provider => StakeRole::Validator,
                    StakeRole::Validator => StakeRole::Provider,
                };
                let role = if bonded_as(*role) == 0 && percent.is_some() {
                    other
                } else {
                    *role
                };
                let bonded = bonded_as(role);
                TxKind::Unstake {
                    role,
                    amount: match percent {
                        Some(percent) if bonded > 0 => share(bonded, *percent, 100).max(1),
                        _ => *amount,
                    },
                }
            }
            Op::OpenJob {
                escrow,
                price,
                deadline_in,
                fuel_too_high,
                agent,
            } => TxKind::OpenJob(OpenJob {
                module: ContentId::of(b"the property tests' module"),
                spec: ContentId::of(&nonce.to_le_bytes()),
                escrow: *escrow,
                price_per_million_fuel: *price,
                deadline_height: height + deadline_in,
                limits: ExecutionLimits {
                    fuel: if *fuel_too_high {
                        self.params.dispute_fuel_max + 1
                    } else {
                        1_000_000
                    },
                    memory_bytes: 1 << 20,
                    output_bytes: 1 << 16,
                },
                agent: agent.map(|index| self.ids[index]),
            }),
            Op::TopUp { job, amount } => TxKind::TopUpJob {
                job: pick(*job, false, true),
                amount: *amount,
            },
            Op::Close { job } => TxKind::CloseJob {
                job: pick(*job, true, true),
            },
            Op::Redeem {
                job,
                extra,
                fuel,
                sequence_step,
                fault,
            } => {
                let job = pick(*job, false, false);
                let runners = requestors.get(&job).copied();
                if runners.is_none() {
                    must_reject(&mut expect);
                }
                let (requestor, agent) = runners.unwrap_or((self.ids[0], None));
                let may_sign = |account: AccountId| account == requestor || agent == Some(account);
                let redeemed = self.memory.redemption(&job, &sender).expect("redemption");
                let mut provider = sender;
                let mut signer = self.key_of(&requestor).expect("requestors are our keys");
                let mut cumulative_amount = redeemed.amount.saturating_add(*extra);
                match fault {
                    VoucherFault::None | VoucherFault::Tampered => {}
                    VoucherFault::WrongSigner(index) => {
                        signer = &self.keys[*index];
                        if !may_sign(self.ids[*index]) {
                            must_reject(&mut expect);
                        }
                    }
                    VoucherFault::ByAgent => match agent {
                        Some(agent) => signer = self.key_of(&agent).expect("agents are our keys"),
                        None => {
                            // Anyone but the requestor stands in for an
                            // agent the job does not have.
                            let stranger = self.ids.iter().position(|id| *id != requestor);
                            signer = &self.keys[stranger.unwrap_or(0)];
                            must_reject(&mut expect);
                        }
                    },
                    VoucherFault::OtherProvider(index) => {
                        provider = self.ids[*index];
                        if provider != sender {
                            must_reject(&mut expect);
                        }
                    }
                    VoucherFault::BelowRedeemed => {
                        cumulative_amount = redeemed.amount.saturating_sub(1 + extra % 100);
                        if redeemed.amount > 0 {
                            must_reject(&mut expect);
                        }
                    }
                }
                let sequence = redeemed.sequence.saturating_add_signed(*sequence_step);
                if sequence <= redeemed.sequence {
                    must_reject(&mut expect);
                }
                // A voucher may claim only the fuel its payment buys.
                if let Some(record) = self.memory.job(&job).expect("job") {
                    let claimed = u128::from(redeemed.fuel + fuel);
                    let price = u128::from(record.price_per_million_fuel);
                    if claimed * price > u128::from(cumulative_amount) * 1_000_000 {
                        must_reject(&mut expect);
                    }
                }
                let mut voucher = signer.sign(Voucher {
                    job,
                    provider,
                    cumulative_amount,
                    cumulative_fuel: redeemed.fuel + fuel,
                    sequence,
                });
                if *fault == VoucherFault::Tampered {
                    voucher.body.cumulative_amount ^= 1;
                    must_reject(&mut expect);
                }
                TxKind::Redeem { voucher }
            }
        };
        let transaction = Transaction::new(chain, nonce, fee, kind).expect("a short chain id");
        let mut signed = key.sign(transaction);
        if spec.fault == Fault::BadSignature {
            let mut bytes = *signed.signature.as_bytes();
            bytes[7] ^= 0x20;
            signed.signature = Signature::from_bytes(bytes);
        }
        (signed, expect)
    }

    fn nonces(&self) -> Vec<u64> {
        self.ids
            .iter()
            .map(|id| self.memory.account(id).expect("account").nonce)
            .collect()
    }

    fn apply(
        &mut self,
        height: u64,
        txs: &[SignedTransaction],
        expects: &[Expect],
    ) -> Result<(), TestCaseError> {
        let nonces_before = self.nonces();
        let (full_batch, full) = self
            .memory
            .execute_block(height, 0, txs, &NoReExecution)
            .expect("execute");
        prop_assert_eq!(full.height, height);
        prop_assert_eq!(full.transactions.len(), txs.len());

        // (e) The block without its rejected transactions writes the same.
        let kept: Vec<SignedTransaction> = txs
            .iter()
            .zip(&full.transactions)
            .filter(|(_, result)| result.outcome.is_ok())
            .map(|(tx, _)| tx.clone())
            .collect();
        let (kept_batch, kept_outcome) = self
            .memory
            .execute_block(height, 0, &kept, &NoReExecution)
            .expect("execute the accepted transactions");
        prop_assert_eq!(kept_outcome.state_root, full.state_root);
        // Apart from the transaction index (key table `x`: where each
        // transaction landed, rejected ones included).
        let without_index = |batch: &idlegrid_ledger::WriteBatch| {
            batch
                .iter()
                .filter(|(key, _)| key.first() != Some(&b'x'))
                .map(|(key, value)| (key.clone(), value.clone()))
                .collect::<Vec<_>>()
        };
        prop_assert!(
            without_index(&kept_batch) == without_index(&full_batch),
            "rejected transactions left writes"
        );
        prop_assert_eq!(&kept_outcome.block_events, &full.block_events);
        let accepted_results: Vec<_> = full
            .transactions
            .iter()
            .filter(|result| result.outcome.is_ok())
            .cloned()
            .collect();
        prop_assert_eq!(&kept_outcome.transactions, &accepted_results);

        // (g) Building the block from the same candidates picks the accepted
        // ones, drops the rejected ones with their reasons, and executes it
        // exactly as verifying the built block would.
        let built = self
            .memory
            .build_block(
                0,
                txs.iter().cloned(),
                usize::MAX,
                usize::MAX,
                &NoReExecution,
            )
            .expect("build");
        prop_assert_eq!(&built.selection.included, &kept);
        let rejected: Vec<_> = full
            .transactions
            .iter()
            .filter_map(|result| {
                result
                    .outcome
                    .clone()
                    .err()
                    .map(|rejection| (result.hash, rejection))
            })
            .collect();
        prop_assert_eq!(&built.selection.dropped, &rejected);
        prop_assert!(
            built.writes == kept_batch,
            "building wrote what verifying did not"
        );
        prop_assert_eq!(&built.outcome, &kept_outcome);

        // (d) Both stores, same outcome and root.
        let in_memory = self
            .memory
            .apply_block(height, 0, txs, &NoReExecution)
            .expect("apply in memory");
        prop_assert_eq!(&in_memory, &full, "apply_block agrees with execute_block");
        let on_disk = self
            .disk
            .apply_block(height, 0, txs, &NoReExecution)
            .expect("apply in redb");
        prop_assert_eq!(&on_disk, &in_memory, "redb and memory outcomes");
        prop_assert_eq!(self.memory.height(), height);
        prop_assert_eq!(self.disk.height(), height);
        prop_assert_eq!(self.memory.state_root(), full.state_root);
        prop_assert_eq!(self.disk.state_root(), full.state_root);
        prop_assert_eq!(
            self.memory.state_root_at(height).expect("root"),
            Some(full.state_root)
        );
        prop_assert_eq!(
            self.disk.state_root_at(height).expect("root"),
            Some(full.state_root)
        );

        // What the test knows each outcome must be; replays are refused.
        for ((tx, result), expect) in txs.iter().zip(&full.transactions).zip(expects) {
            prop_assert_eq!(&result.hash, &transaction_hash(tx));
            match (expect, &result.outcome) {
                (Expect::Rejected(code), Err(rejection)) => {
                    prop_assert_eq!(rejection.code(), *code, "rejected for {}", rejection)
                }
                (Expect::Rejected(code), Ok(_)) => {
                    prop_assert!(false, "accepted a transaction that must be {}", code)
                }
                (Expect::AnyRejection, Ok(_)) => {
                    prop_assert!(false, "accepted a transaction that must be rejected")
                }
                _ => {}
            }
            if result.outcome.is_ok() {
                prop_assert!(
                    self.accepted.insert(result.hash),
                    "a transaction was accepted twice"
                );
                self.last_accepted = Some(tx.clone());
            }
        }

        // (c) Nonces advance by exactly the accepted transactions.
        let nonces_after = self.nonces();
        for (index, id) in self.ids.iter().enumerate() {
            let accepted = txs
                .iter()
                .zip(&full.transactions)
                .filter(|(tx, result)| result.outcome.is_ok() && tx.signer == *id)
                .count() as u64;
            prop_assert_eq!(nonces_after[index], nonces_before[index] + accepted);
        }

        // (b) The model, from the events.
        let (releases, rewards): (Vec<Event>, Vec<Event>) = full
            .block_events
            .iter()
            .cloned()
            .partition(|event| matches!(event, Event::Unbonded { .. }));
        self.model.release(height, &releases);
        for (tx, result) in txs.iter().zip(&full.transactions) {
            if let Ok(events) = &result.outcome {
                self.model.accept(height, tx, events)?;
            }
        }
        let expected_rewards = if height.is_multiple_of(self.params.epoch_length_blocks) {
            self.model.epoch_rewards(&self.params)
        } else {
            Vec::new()
        };
        prop_assert_eq!(rewards, expected_rewards, "epoch rewards at {}", height);

        // (a), (b) and (f): the supply invariant, and every query against the
        // model.
        self.model.matches(&self.memory, &self.ids);
        self.model.matches(&self.disk, &self.ids);
        Ok(())
    }

    /// Roots agree at every height, and redb reopens where it was.
    fn finish(self) -> Result<(), TestCaseError> {
        let height = self.memory.height();
        for at in 0..=height {
            let root = self.memory.state_root_at(at).expect("root");
            prop_assert!(root.is_some(), "no root at {}", at);
            prop_assert_eq!(root, self.disk.state_root_at(at).expect("root"));
        }
        let root = self.disk.state_root();
        drop(self.disk);
        let reopened = Ledger::open(
            RedbStore::open(&self.dir.path().join("ledger.redb")).expect("reopen redb"),
        )
        .expect("open the ledger");
        prop_assert_eq!(reopened.height(), height);
        prop_assert_eq!(reopened.state_root(), root);
        self.model.matches(&reopened, &self.ids);
        Ok(())
    }
}

fn run(scenario: &Scenario) -> Result<(), TestCaseError> {
    let mut harness = Harness::new(scenario);
    harness.model.matches(&harness.memory, &harness.ids);
    for (index, specs) in scenario.blocks.iter().enumerate() {
        let height = index as u64 + 1;
        let (txs, expects) = harness.build_block(height, specs);
        harness.apply(height, &txs, &expects)?;
    }
    harness.finish()
}

fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        // Keep failures out of the source tree; a failure prints its case.
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(config(64))]

    #[test]
    fn random_blocks_keep_the_ledger_invariants(scenario in scenario()) {
        run(&scenario)?;
    }
}

// ---------------------------------------------------------------------------
// Decoding untrusted transactions.

fn account_id() -> impl Strategy<Value = AccountId> {
    any::<[u8; 32]>().prop_map(AccountId::from_bytes)
}

fn content_id() -> impl Strategy<Value = ContentId> {
    any::<[u8; 32]>().prop_map(ContentId::from_bytes)
}

fn job_id() -> impl Strategy<Value = JobId> {
    any::<[u8; 32]>().prop_map(JobId::from_bytes)
}

fn limits() -> impl Strategy<Value = ExecutionLimits> {
    (any::<u64>(), any::<u64>(), any::<u64>()).prop_map(|(fuel, memory_bytes, output_bytes)| {
        ExecutionLimits {
            fuel,
            memory_bytes,
            output_bytes,
        }
    })
}

fn task_outcome() -> impl Strategy<Value = TaskOutcome> {
    prop_oneof![
        (any::<i32>(), content_id())
            .prop_map(|(exit_code, output)| TaskOutcome::Completed { exit_code, output }),
        (0..ErrorKind::ALL.len()).prop_map(|index| TaskOutcome::Failed(ErrorKind::ALL[index])),
    ]
}

fn receipt() -> impl Strategy<Value = idlegrid_types::SignedReceipt> {
    (
        any::<u8>(),
        job_id(),
        any::<u64>(),
        content_id(),
        content_id(),
        task_outcome(),
        any::<u64>(),
        any::<u64>(),
    )
        .prop_map(
            |(seed, job, task_index, module, input, outcome, fuel_used, energy_millijoules)| {
                idlegrid_types::SignedReceipt::sign(
                    &Keypair::from_seed([seed; 32]),
                    Receipt {
                        job,
                        task_index,
                        module,
                        input,
                        outcome,
                        fuel_used,
                        energy_millijoules,
                    },
                )
            },
        )
}

fn tx_kind() -> impl Strategy<Value = TxKind> {
    prop_oneof![
        (account_id(), any::<u64>()).prop_map(|(to, amount)| TxKind::Transfer { to, amount }),
        (role(), any::<u64>()).prop_map(|(role, amount)| TxKind::Stake { role, amount }),
        (role(), any::<u64>()).prop_map(|(role, amount)| TxKind::Unstake { role, amount }),
        (
            content_id(),
            content_id(),
            any::<u64>(),
            any::<u64>(),
            any::<u64>(),
            limits()
        )
            .prop_map(
                |(module, spec, escrow, price_per_million_fuel, deadline_height, limits)| {
                    TxKind::OpenJob(OpenJob {
                        module,
                        spec,
                        escrow,
                        price_per_million_fuel,
                        deadline_height,
                        limits,
                        agent: None,
                    })
                }
            ),
        (job_id(), any::<u64>()).prop_map(|(job, amount)| TxKind::TopUpJob { job, amount }),
        (
            any::<u8>(),
            job_id(),
            account_id(),
            any::<u64>(),
            any::<u64>(),
            any::<u64>()
        )
            .prop_map(
                |(seed, job, provider, cumulative_amount, cumulative_fuel, sequence)| {
                    TxKind::Redeem {
                        voucher: Keypair::from_seed([seed; 32]).sign(Voucher {
                            job,
                            provider,
                            cumulative_amount,
                            cumulative_fuel,
                            sequence,
                        }),
                    }
                }
            ),
        job_id().prop_map(|job| TxKind::CloseJob { job }),
        prop_oneof![
            (account_id(), any::<u64>())
                .prop_map(|(validator, amount)| TxKind::Delegate { validator, amount }),
            (account_id(), any::<u64>())
                .prop_map(|(validator, amount)| TxKind::Undelegate { validator, amount }),
            account_id().prop_map(|validator| TxKind::ClaimRewards { validator }),
            any::<u16>().prop_map(|commission_bps| TxKind::SetCommission { commission_bps }),
            prop_oneof![
                vec(any::<u8>(), 0..96),
                Just(vec![7u8; FAULT_EVIDENCE_BYTES_MAX])
            ]
            .prop_map(|evidence| TxKind::ReportFault {
                evidence: Bounded::new(evidence).expect("evidence within its bound"),
            }),
        ],
        (
            prop_oneof![
                receipt().prop_map(Evidence::Claimed),
                (receipt(), receipt()).prop_map(|(a, b)| Evidence::Conflicting(a, b)),
            ],
            vec(any::<u8>(), 0..48),
            vec(any::<u8>(), 0..48),
        )
            .prop_map(|(evidence, module, input)| {
                TxKind::Dispute(Box::new(Dispute {
                    evidence,
                    module: Bounded::new(module).expect("small module"),
                    input: Bounded::new(input).expect("small input"),
                }))
            }),
    ]
}

fn signed_transaction() -> impl Strategy<Value = SignedTransaction> {
    (
        any::<u8>(),
        prop_oneof!["[a-z0-9-]{0,64}", "\\PC{0,16}"],
        any::<u64>(),
        any::<u64>(),
        tx_kind(),
    )
        .prop_map(|(seed, chain, nonce, fee, kind)| {
            Keypair::from_seed([seed; 32])
                .sign(Transaction::new(&chain, nonce, fee, kind).expect("chain ids up to 64 bytes"))
        })
}

/// Changes to an encoding: flip bytes, cut it short, or add to it.
#[derive(Debug, Clone)]
enum Mutation {
    Flip { at: usize, mask: u8 },
    Set { at: usize, byte: u8 },
    Truncate { at: usize },
    Insert { at: usize, bytes: Vec<u8> },
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        4 => (any::<usize>(), 1u8..=255).prop_map(|(at, mask)| Mutation::Flip { at, mask }),
        2 => (any::<usize>(), prop_oneof![Just(0u8), Just(1), Just(0xff), Just(0x7f), any::<u8>()])
            .prop_map(|(at, byte)| Mutation::Set { at, byte }),
        1 => any::<usize>().prop_map(|at| Mutation::Truncate { at }),
        1 => (any::<usize>(), vec(any::<u8>(), 1..8))
            .prop_map(|(at, bytes)| Mutation::Insert { at, bytes }),
    ]
}

fn mutate(bytes: &mut Vec<u8>, mutation: &Mutation) {
    let len = bytes.len();
    match mutation {
        Mutation::Flip { at, mask } if len > 0 => bytes[at % len] ^= mask,
        Mutation::Set { at, byte } if len > 0 => bytes[at % len] = *byte,
        Mutation::Truncate { at } => bytes.truncate(at % (len + 1)),
        Mutation::Insert { at, bytes: extra } => {
            let at = at % (len + 1);
            bytes.splice(at..at, extra.iter().copied());
        }
        _ => {}
    }
}

/// Whatever decodes must re-encode to exactly the bytes it came from.
fn decodes_canonically(bytes: &[u8]) -> Result<(), TestCaseError> {
    if let Ok(transaction) = decode_transaction(bytes) {
        let encoded = codec::encode(&transaction).expect("encode");
        prop_assert!(
            encoded == bytes,
            "a second encoding of the same transaction"
        );
        prop_assert_eq!(transaction_hash(&transaction), ContentId::of(bytes));
    }
    Ok(())
}

proptest! {
    #![proptest_config(config(512))]

    #[test]
    fn decoding_arbitrary_bytes_never_panics(bytes in vec(any::<u8>(), 0..600)) {
        decodes_canonically(&bytes)?;
    }

    #[test]
    fn valid_encodings_round_trip_and_mutations_stay_canonical(
        transaction in signed_transaction(),
        mutations in vec(mutation(), 1..4),
    ) {
        let bytes = codec::encode(&transaction).expect("encode");
        let decoded = decode_transaction(&bytes).expect("a valid encoding decodes");
        prop_assert_eq!(&decoded, &transaction);
        prop_assert!(codec::encode(&decoded).expect("encode") == bytes);
        decodes_canonically(&bytes)?;
        let mut mutated = bytes.clone();
        for mutation in &mutations {
            mutate(&mut mutated, mutation);
            decodes_canonically(&mutated)?;
        }
    }
}
