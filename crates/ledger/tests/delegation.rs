//! Delegation: the exact 256-bit arithmetic under it, the validator set's
//! capped voting power, delegation pools under random transactions and
//! validator slashes, and the rules case by case.
//!
//! The random ledger test drives a few accounts and validators with short
//! epochs and unbonding periods, and after every block checks that:
//!
//! - (a) every token is accounted for, and the supply moves only by the
//!   epoch's emission (exactly the validator set's shares) and by what
//!   slashes burn;
//! - (b) each pool's shares are exactly its delegations' shares (bonded and
//!   unbonding), and what they are worth is the pool's tokens less at most
//!   one token of rounding per delegation;
//! - (c) delegators are never owed more than their pool holds for them,
//!   and each epoch's reward is split as the rules say;
//! - (d) a validator slash takes its fraction of the validator's own stake
//!   and of every delegation, bonded or unbonding (within rounding), and
//!   each fault is punished once;
//! - undelegations come back at their height, and the delegation indexes
//!   agree with the delegations.

use std::collections::{BTreeMap, BTreeSet};

use idlegrid_ledger::state::mul_div_ceil;
use idlegrid_ledger::{
    BlockOutcome, Delegation, Event, Genesis, Ledger, MemoryStore, NoReExecution, Params, Pool,
    Rejection, SignedTransaction, Stake, StakeRole, Supply, Transaction, TxKind, capped_powers,
    mul_div,
};
use idlegrid_types::codec::Bounded;
use idlegrid_types::{
    AccountId, ConsensusFault, Execution, ExecutionLimits, Keypair, ReExecute, TaskInput,
};
use proptest::collection::vec;
use proptest::prelude::*;

const CHAIN: &str = "idlegrid-delegation";

fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        // Keep failures out of the source tree; a failure prints its case.
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

// ---------------------------------------------------------------------------
// `mul_div` and `mul_div_ceil`, against a reference that works in 64-bit
// limbs.

/// A 256-bit number as four 64-bit limbs, least significant first.
type Wide = [u64; 4];

fn wide(value: u128) -> Wide {
    [value as u64, (value >> 64) as u64, 0, 0]
}

/// Schoolbook multiplication, one limb at a time.
fn wide_mul(a: u128, b: u128) -> Wide {
    let a = [a as u64, (a >> 64) as u64];
    let b = [b as u64, (b >> 64) as u64];
    let mut out = [0u64; 4];
    for i in 0..2 {
        let mut carry = 0u128;
        for j in 0..2 {
            let sum = u128::from(out[i + j]) + u128::from(a[i]) * u128::from(b[j]) + carry;
            out[i + j] = sum as u64;
            carry = sum >> 64;
        }
        for limb in out.iter_mut().skip(i + 2) {
            let sum = u128::from(*limb) + carry;
            *limb = sum as u64;
            carry = sum >> 64;
        }
        assert_eq!(carry, 0, "a 128 × 128-bit product fits 256 bits");
    }
    out
}

fn wide_less(a: &Wide, b: &Wide) -> bool {
    a.iter().rev().cmp(b.iter().rev()) == std::cmp::Ordering::Less
}

fn wide_sub(a: &Wide, b: &Wide) -> Option<Wide> {
    let mut out = [0u64; 4];
    let mut borrow = false;
    for i in 0..4 {
        let (diff, under_a) = a[i].overflowing_sub(b[i]);
        let (diff, under_b) = diff.overflowing_sub(u64::from(borrow));
        out[i] = diff;
        borrow = under_a || under_b;
    }
    (!borrow).then_some(out)
}

/// `a × b / 2^64` rounded down, if it fits 128 bits.
fn mul_shr64(a: u128, b: u128) -> Option<u128> {
    let product = wide_mul(a, b);
    (product[3] == 0).then(|| (u128::from(product[2]) << 64) | u128::from(product[1]))
}

/// What `mul_div(a, b, d)` must be: `None` for `d == 0` or a quotient of
/// 2^128 or more; otherwise the `q` with `q·d ≤ a·b < (q+1)·d`, checked
/// through the remainder. Returns (quotient, exact).
fn check_mul_div(a: u128, b: u128, d: u128) -> Result<Option<(u128, bool)>, TestCaseError> {
    let product = wide_mul(a, b);
    let floor = mul_div(a, b, d);
    let ceil = mul_div_ceil(a, b, d);
    if d == 0 {
        prop_assert_eq!(floor, None);
        prop_assert_eq!(ceil, None);
        return Ok(None);
    }
    let d_shifted: Wide = [0, 0, d as u64, (d >> 64) as u64];
    if !wide_less(&product, &d_shifted) {
        prop_assert_eq!(floor, None, "{} × {} / {} does not fit", a, b, d);
        prop_assert_eq!(ceil, None);
        return Ok(None);
    }
    let Some(q) = floor else {
        return Err(TestCaseError::fail(format!(
            "{a} × {b} / {d} fits but mul_div gave None"
        )));
    };
    let remainder = wide_sub(&product, &wide_mul(q, d))
        .ok_or_else(|| TestCaseError::fail(format!("{a} × {b} / {d}: {q} is too large")))?;
    prop_assert!(
        wide_less(&remainder, &wide(d)),
        "{} × {} / {}: {} is too small",
        a,
        b,
        d,
        q
    );
    let exact = remainder == [0; 4];
    let expected_ceil = if exact { Some(q) } else { q.checked_add(1) };
    prop_assert_eq!(ceil, expected_ceil, "ceil of {} × {} / {}", a, b, d);
    Ok(Some((q, exact)))
}

fn big() -> impl Strategy<Value = u128> {
    prop_oneof![
        3 => any::<u128>(),
        2 => any::<u64>().prop_map(u128::from),
        1 => 0u128..1_000,
        2 => (0u32..128).prop_map(|shift| 1u128 << shift),
        1 => (0u32..128, any::<u128>()).prop_map(|(shift, noise)| noise >> shift),
        1 => (0u128..1_000).prop_map(|below| u128::MAX - below),
    ]
}

#[test]
fn mul_div_known_cases() {
    let max = u128::MAX;
    assert_eq!(mul_div(max, max, max), Some(max));
    assert_eq!(mul_div_ceil(max, max, max), Some(max));
    assert_eq!(mul_div(1 << 100, 1 << 100, 1 << 120), Some(1 << 80));
    assert_eq!(mul_div_ceil(1 << 100, 1 << 100, 1 << 120), Some(1 << 80));
    assert_eq!(mul_div(max, max - 1, max), Some(max - 1));
    assert_eq!(mul_div(max - 1, max, max), Some(max - 1));
    assert_eq!(mul_div(max, 2, 2), Some(max));
    assert_eq!(mul_div(1 << 127, 2, 2), Some(1 << 127));
    // Quotients of 2^128 and above do not fit.
    assert_eq!(mul_div(1 << 127, 2, 1), None);
    assert_eq!(mul_div(max, 2, 1), None);
    assert_eq!(mul_div(max, max, max - 1), None);
    assert_eq!(mul_div_ceil(max, 3, 2), None);
    // Division by zero.
    assert_eq!(mul_div(1, 1, 0), None);
    assert_eq!(mul_div(0, 0, 0), None);
    assert_eq!(mul_div_ceil(5, 5, 0), None);
    // Rounding.
    assert_eq!(mul_div(1, 1, 3), Some(0));
    assert_eq!(mul_div_ceil(1, 1, 3), Some(1));
    assert_eq!(mul_div(0, max, 7), Some(0));
    assert_eq!(mul_div_ceil(0, max, 7), Some(0));
    assert_eq!(mul_div(10, 10, 3), Some(33));
    assert_eq!(mul_div_ceil(10, 10, 3), Some(34));
    // Where the product carries out of the middle limbs.
    let near = (1u128 << 64) - 1;
    assert_eq!(
        mul_div(max, near, near),
        Some(max),
        "(2^128−1)(2^64−1)/(2^64−1)"
    );
    assert_eq!(mul_div(max, max, 1 << 127), None);
    assert_eq!(mul_div(max, 1 << 127, max), Some(1 << 127));
    assert_eq!(mul_div_ceil(max, max - 1, max - 1), Some(max));
    // A quotient of exactly 2^128 − 1 with a remainder, whose ceiling does
    // not fit: (2^43 − 1)(2^86 + 2^43 + 1) = 2^129 − 1 = 2·max + 1.
    let (a, b) = ((1u128 << 43) - 1, (1u128 << 86) + (1 << 43) + 1);
    assert_eq!(mul_div(a, b, 2), Some(max));
    assert_eq!(mul_div_ceil(a, b, 2), None);
    assert_eq!(mul_div_ceil(a, b - 1, 2), Some(max - (1 << 42) + 1));
}

proptest! {
    #![proptest_config(config(1_000))]

    #[test]
    fn mul_div_matches_u128_where_the_product_fits(a in any::<u64>(), b in any::<u64>(), d in any::<u128>()) {
        let (a, b) = (u128::from(a), u128::from(b));
        let product = a * b;
        if d == 0 {
            prop_assert_eq!(mul_div(a, b, d), None);
            prop_assert_eq!(mul_div_ceil(a, b, d), None);
        } else {
            prop_assert_eq!(mul_div(a, b, d), Some(product / d));
            prop_assert_eq!(mul_div_ceil(a, b, d), Some(product.div_ceil(d)));
            prop_assert_eq!(mul_div(b, a, d), Some(product / d), "commutes");
        }
    }

    #[test]
    fn mul_div_is_exact_over_256_bits(a in big(), b in big(), d in big()) {
        if let Some((q, exact)) = check_mul_div(a, b, d)? {
            prop_assert_eq!(mul_div(b, a, d), Some(q), "commutes");
            if d == a && a != 0 {
                prop_assert_eq!(q, b);
                prop_assert!(exact);
            }
        }
        // The reference agrees with plain u128 arithmetic where it can.
        if let Some(product) = a.checked_mul(b) && d != 0 {
            prop_assert_eq!(mul_div(a, b, d), Some(product / d));
        }
    }
}

// ---------------------------------------------------------------------------
// Capped voting power.

#[test]
fn capped_powers_known_cases() {
    assert_eq!(capped_powers(&[], 3_000), Vec::<u64>::new());
    // Too few to stay under the cap: uncapped.
    assert_eq!(capped_powers(&[10], 3_000), vec![10]);
    assert_eq!(
        capped_powers(&[60_000, 50_000], 3_000),
        vec![60_000, 50_000]
    );
    assert_eq!(capped_powers(&[7, 1, 1], 3_333), vec![7, 1, 1]);
    // Nobody above the cap: unchanged.
    assert_eq!(capped_powers(&[25; 4], 3_000), vec![25; 4]);
    assert_eq!(
        capped_powers(&[30, 30, 20, 20], 3_000),
        vec![30, 30, 20, 20]
    );
    // The largest brought down to one level.
    assert_eq!(
        capped_powers(&[70, 10, 10, 10], 3_000),
        vec![12, 10, 10, 10]
    );
    assert_eq!(capped_powers(&[100, 1, 1, 1], 3_000), vec![1; 4]);
    assert_eq!(
        capped_powers(&[100_000, 50_000, 20_000, 10_000], 3_000),
        vec![22_500, 22_500, 20_000, 10_000]
    );
    // A cap of 100% changes nothing.
    assert_eq!(capped_powers(&[9, 1], 10_000), vec![9, 1]);
    // Stakes near u64::MAX do not overflow.
    let huge = capped_powers(&[u64::MAX; 5], 3_000);
    assert_eq!(huge, vec![u64::MAX; 5]);
    let huge = capped_powers(&[u64::MAX, u64::MAX, 1, 1], 3_000);
    assert!(huge.iter().all(|power| *power >= 1));
}

fn stakes() -> impl Strategy<Value = Vec<u64>> {
    vec(
        prop_oneof![
            6 => 1u64..1_000,
            3 => 1u64..1_000_000_000,
            2 => 1_000_000_000_000u64..1_000_000_000_000_000,
            1 => (u64::MAX / 2)..=u64::MAX,
        ],
        1..120,
    )
    .prop_map(|mut stakes| {
        stakes.sort_unstable_by(|a, b| b.cmp(a));
        stakes
    })
}

fn cap() -> impl Strategy<Value = u16> {
    prop_oneof![
        4 => 1u16..=3_333,
        1 => Just(3_000u16),
        1 => 3_334u16..=10_000,
    ]
}

proptest! {
    #![proptest_config(config(1_000))]

    #[test]
    fn capped_powers_keep_order_stay_under_the_cap_and_keep_small_stakes(
        stakes in stakes(),
        cap in cap(),
    ) {
        let powers = capped_powers(&stakes, cap);
        let count = stakes.len() as u128;
        let cap_wide = u128::from(cap);
        let total: u128 = stakes.iter().map(|stake| u128::from(*stake)).sum();
        prop_assert_eq!(powers.len(), stakes.len());
        prop_assert!(powers.windows(2).all(|pair| pair[0] >= pair[1]), "order kept: {:?}", powers);
        if u128::from(stakes[0]) * 10_000 <= cap_wide * total {
            prop_assert_eq!(&powers, &stakes, "nobody is above the cap");
        }
        if count * cap_wide < 10_000 {
            prop_assert_eq!(powers, stakes, "too few for the cap: uncapped");
            return Ok(());
        }
        let sum: u128 = powers.iter().map(|power| u128::from(*power)).sum();
        for (power, stake) in powers.iter().zip(&stakes) {
            prop_assert!(power <= stake, "{} above its stake {}", power, stake);
            prop_assert!(*power >= 1, "every validator keeps some power");
            prop_assert!(
                u128::from(*power) * 10_000 <= cap_wide * sum,
                "{} is above {} bps of {}", power, cap, sum
            );
        }
        // The capped ones share one level, the rest keep their stake, and
        // no higher level would stay under the cap.
        let capped = powers.iter().zip(&stakes).take_while(|(power, stake)| power < stake).count();
        prop_assert_eq!(&powers[capped..], &stakes[capped..]);
        if capped > 0 {
            let level = powers[0];
            prop_assert!(powers[..capped].iter().all(|power| *power == level));
            let rest: u128 = stakes[capped..].iter().map(|stake| u128::from(*stake)).sum();
            let higher = u128::from(level) + 1;
            prop_assert!(
                higher * 10_000 > cap_wide * (higher * capped as u128 + rest),
                "level {} is not the highest under the cap", level
            );
        }
    }
}

// ---------------------------------------------------------------------------
// A network of a few keys, with a host that judges consensus faults.

/// Judges fault evidence of the form `validator (32 bytes) ‖ epoch ‖ view`
/// (big-endian): proven when the validator is in that epoch's set.
struct FaultJudge;

fn evidence(validator: &AccountId, epoch: u64, view: u64) -> Vec<u8> {
    let mut bytes = validator.as_bytes().to_vec();
    bytes.extend_from_slice(&epoch.to_be_bytes());
    bytes.extend_from_slice(&view.to_be_bytes());
    bytes
}

impl ReExecute for FaultJudge {
    fn re_execute(
        &self,
        _module: &[u8],
        _input: &TaskInput,
        _seed: [u8; 32],
        _limits: &ExecutionLimits,
    ) -> Result<Execution, String> {
        Err("this host runs no tasks".to_owned())
    }

    fn check_fault(
        &self,
        chain_id: &str,
        evidence: &[u8],
        validators_of: &dyn Fn(u64) -> Option<Vec<AccountId>>,
    ) -> Result<ConsensusFault, String> {
        if chain_id != CHAIN {
            return Err(format!("evidence for another chain than {chain_id}"));
        }
        if evidence.len() != 48 {
            return Err(format!("{} bytes of evidence, not 48", evidence.len()));
        }
        let validator = AccountId::from_bytes(evidence[..32].try_into().expect("32 bytes"));
        let epoch = u64::from_be_bytes(evidence[32..40].try_into().expect("8 bytes"));
        let view = u64::from_be_bytes(evidence[40..].try_into().expect("8 bytes"));
        let set = validators_of(epoch).ok_or_else(|| format!("no validator set for {epoch}"))?;
        if !set.contains(&validator) {
            return Err(format!("{validator} did not validate epoch {epoch}"));
        }
        Ok(ConsensusFault {
            validator,
            epoch,
            view,
        })
    }
}

fn report(validator: &AccountId, epoch: u64, view: u64) -> TxKind {
    TxKind::ReportFault {
        evidence: Bounded::new(evidence(validator, epoch, view)).expect("48 bytes"),
    }
}

struct Net {
    ledger: Ledger<MemoryStore>,
    keys: Vec<Keypair>,
    fee: u64,
}

impl Net {
    fn new(params: Params, accounts: usize, balance: u64, validators: &[(usize, u64)]) -> Self {
        let keys: Vec<Keypair> = (0..accounts)
            .map(|index| Keypair::from_seed([index as u8 + 101; 32]))
            .collect();
        let genesis = Genesis {
            chain_id: CHAIN.to_owned(),
            params,
            balances: keys.iter().map(|key| (key.account_id(), balance)).collect(),
            validators: validators
                .iter()
                .map(|(index, stake)| (keys[*index].account_id(), *stake))
                .collect(),
        };
        Self {
            ledger: Ledger::init(MemoryStore::default(), &genesis).expect("genesis"),
            keys,
            fee: 10,
        }
    }

    fn id(&self, who: usize) -> AccountId {
        self.keys[who].account_id()
    }

    fn params(&self) -> &Params {
        self.ledger.params()
    }

    fn sign_with_nonce(&self, who: usize, nonce: u64, kind: TxKind) -> SignedTransaction {
        self.keys[who].sign(Transaction::new(CHAIN, nonce, self.fee, kind).expect("tx"))
    }

    fn sign(&self, who: usize, kind: TxKind) -> SignedTransaction {
        let nonce = self.ledger.account(&self.id(who)).expect("account").nonce;
        self.sign_with_nonce(who, nonce, kind)
    }

    fn block(&mut self, txs: &[SignedTransaction]) -> BlockOutcome {
        let height = self.ledger.height() + 1;
        self.ledger
            .apply_block(height, 0, txs, &FaultJudge)
            .expect("the block applies")
    }

    /// One transaction in a block of its own: its outcome, and the block's
    /// own events.
    fn submit_in_block(
        &mut self,
        who: usize,
        kind: TxKind,
    ) -> (Result<Vec<Event>, Rejection>, Vec<Event>) {
        let signed = self.sign(who, kind);
        let outcome = self.block(&[signed]);
        (
            outcome.transactions[0].outcome.clone(),
            outcome.block_events,
        )
    }

    fn submit(&mut self, who: usize, kind: TxKind) -> Result<Vec<Event>, Rejection> {
        self.submit_in_block(who, kind).0
    }

    /// Empty blocks through `height`; the block events of the last.
    fn blocks_through(&mut self, height: u64) -> Vec<Event> {
        let mut events = Vec::new();
        while self.ledger.height() < height {
            events = self.block(&[]).block_events;
        }
        events
    }

    /// Empty blocks through the end of the epoch under way; the last
    /// block's events (its rewards).
    fn through_epoch_end(&mut self) -> Vec<Event> {
        let length = self.params().epoch_length_blocks;
        let end = (self.ledger.height() / length + 1) * length;
        self.blocks_through(end)
    }

    fn balance(&self, who: usize) -> u64 {
        self.ledger.account(&self.id(who)).expect("account").balance
    }

    fn pool(&self, validator: usize) -> Pool {
        self.ledger.pool(&self.id(validator)).expect("pool")
    }

    fn delegation(&self, validator: usize, delegator: usize) -> Delegation {
        self.ledger
            .delegation(&self.id(validator), &self.id(delegator))
            .expect("delegation")
    }

    fn own_stake(&self, who: usize) -> Stake {
        self.ledger
            .stake(StakeRole::Validator, &self.id(who))
            .expect("stake")
    }

    fn assert_books_balance(&self) {
        let supply = self.ledger.supply().expect("supply");
        assert_eq!(
            self.ledger.tokens_in_existence().expect("tokens"),
            supply.expected_total()
        );
    }
}

fn code(result: Result<Vec<Event>, Rejection>) -> &'static str {
    match result {
        Ok(events) => panic!("expected a rejection, it applied: {events:?}"),
        Err(rejection) => {
            assert!(!rejection.to_string().is_empty());
            rejection.code()
        }
    }
}

fn bps(amount: u64, basis_points: u16) -> u64 {
    (u128::from(amount) * u128::from(basis_points) / 10_000) as u64
}

fn share(amount: u64, part: u64, whole: u64) -> u64 {
    if whole == 0 {
        return 0;
    }
    (u128::from(amount) * u128::from(part) / u128::from(whole)) as u64
}

// ---------------------------------------------------------------------------
// The rules, case by case.

const V: usize = 0;
const D: usize = 1;
const D2: usize = 2;
const REPORTER: usize = 3;
const OTHER: usize = 4;

fn short_params() -> Params {
    Params {
        epoch_length_blocks: 10,
        unbonding_blocks: 3,
        emission_per_epoch: 100_000,
        validator_reward_share_bps: 10_000,
        validator_slash_fraction_bps: 1_000,
        slash_reporter_share_bps: 5_000,
        ..Params::default()
    }
}

#[test]
fn a_delegator_earns_its_share_less_commission_and_claiming_pays_it() {
    let mut net = Net::new(short_params(), 5, 1_000_000, &[(V, 30_000)]);
    let (v, d) = (net.id(V), net.id(D));
    assert_eq!(
        net.submit(
            V,
            TxKind::SetCommission {
                commission_bps: 500
            }
        )
        .expect("commission set"),
        vec![
            Event::FeePaid {
                payer: v,
                amount: net.fee
            },
            Event::CommissionSet {
                validator: v,
                commission_bps: 500
            }
        ]
    );
    let events = net
        .submit(
            D,
            TxKind::Delegate {
                validator: v,
                amount: 10_000,
            },
        )
        .expect("delegates");
    assert!(events.contains(&Event::Delegated {
        delegator: d,
        validator: v,
        amount: 10_000,
        shares: 10_000,
    }));
    let pool = net.pool(V);
    assert_eq!(
        (pool.tokens, pool.shares, pool.commission_bps),
        (10_000, 10_000, 500)
    );
    assert_eq!(net.delegation(V, D).shares, 10_000);
    assert_eq!(net.ledger.delegator_count(&v).expect("count"), 1);
    let listed = net.ledger.delegations_of(&d).expect("list");
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].0, v);
    assert_eq!(net.balance(D), 1_000_000 - 10_000 - net.fee);

    // The epoch's only validator takes the emission and both fees; a
    // quarter of its stake is delegated, so a quarter goes to the pool,
    // less 5% commission.
    let validator_before = net.balance(V);
    let events = net.through_epoch_end();
    let reward = 100_000 + 2 * net.fee;
    let delegated_part = reward / 4;
    let commission = delegated_part * 500 / 10_000;
    let to_delegators = delegated_part - commission;
    assert_eq!(
        (delegated_part, commission, to_delegators),
        (25_005, 1_250, 23_755)
    );
    assert_eq!(
        events,
        vec![
            Event::ValidatorRewarded {
                validator: v,
                amount: reward - to_delegators,
            },
            Event::DelegatorsRewarded {
                validator: v,
                amount: to_delegators,
                commission,
            }
        ]
    );
    assert_eq!(net.balance(V), validator_before + reward - to_delegators);
    let pool = net.pool(V);
    assert_eq!(pool.rewards_unclaimed, to_delegators);
    // 23 755 / 10 000 per share, ×2^64 rounded down, then × 10 000 shares
    // rounded down: one token short, which stays in the pool.
    let owed = net.delegation(V, D).rewards_owed;
    assert_eq!(owed, to_delegators - 1);
    assert_eq!(net.ledger.supply().expect("supply").emitted, 100_000);
    net.assert_books_balance();

    let before = net.balance(D);
    let events = net
        .submit(D, TxKind::ClaimRewards { validator: v })
        .expect("claims");
    assert!(events.contains(&Event::RewardsClaimed {
        delegator: d,
        validator: v,
        amount: owed,
    }));
    assert_eq!(net.balance(D), before + owed - net.fee);
    assert_eq!(net.delegation(V, D).rewards_owed, 0);
    assert_eq!(net.pool(V).rewards_unclaimed, 1, "the rounding dust");
    assert_eq!(
        code(net.submit(D, TxKind::ClaimRewards { validator: v })),
        "no_rewards"
    );
    net.assert_books_balance();
}

#[test]
fn an_undelegation_returns_after_the_unbonding_period() {
    let mut net = Net::new(short_params(), 5, 1_000_000, &[(V, 30_000)]);
    let (v, d) = (net.id(V), net.id(D));
    let delegate = TxKind::Delegate {
        validator: v,
        amount: 10_000,
    };
    net.submit(D, delegate).expect("delegates");
    let height = net.ledger.height() + 1;
    let events = net
        .submit(
            D,
            TxKind::Undelegate {
                validator: v,
                amount: 4_000,
            },
        )
        .expect("undelegates");
    let release = height + net.params().unbonding_blocks;
    assert!(events.contains(&Event::UndelegationStarted {
        delegator: d,
        validator: v,
        amount: 4_000,
        release_height: release,
    }));
    let pool = net.pool(V);
    assert_eq!((pool.tokens, pool.unbonding_tokens), (6_000, 4_000));
    let record = net.delegation(V, D);
    assert_eq!(record.shares, 6_000);
    assert_eq!(record.unbonding.len(), 1);
    assert_eq!(record.unbonding[0].release_height, release);

    let before = net.balance(D);
    net.blocks_through(release - 1);
    assert_eq!(net.balance(D), before, "still unbonding");
    let events = net.blocks_through(release);
    assert_eq!(
        events,
        vec![Event::Undelegated {
            delegator: d,
            validator: v,
            amount: 4_000,
        }]
    );
    assert_eq!(net.balance(D), before + 4_000, "released");
    let pool = net.pool(V);
    assert_eq!((pool.unbonding_tokens, pool.unbonding_shares), (0, 0));
    assert!(net.delegation(V, D).unbonding.is_empty());

    // Asking for more than the delegation is worth takes all of it.
    let height = net.ledger.height() + 1;
    let events = net
        .submit(
            D,
            TxKind::Undelegate {
                validator: v,
                amount: u64::MAX,
            },
        )
        .expect("undelegates all");
    assert!(events.contains(&Event::UndelegationStarted {
        delegator: d,
        validator: v,
        amount: 6_000,
        release_height: height + net.params().unbonding_blocks,
    }));
    assert_eq!(
        code(net.submit(
            D,
            TxKind::Undelegate {
                validator: v,
                amount: 1
            }
        )),
        "no_delegation"
    );
    let before = net.balance(D);
    net.blocks_through(height + net.params().unbonding_blocks);
    assert!(
        net.ledger.height() < net.params().epoch_length_blocks,
        "no rewards to leave behind"
    );
    assert_eq!(net.balance(D), before + 6_000);
    assert_eq!(net.pool(V).tokens, 0);
    assert_eq!(net.pool(V).shares, 0);
    assert_eq!(net.delegation(V, D), Delegation::default());
    assert_eq!(net.ledger.delegator_count(&v).expect("count"), 0);
    assert!(net.ledger.delegations_of(&d).expect("list").is_empty());
    net.assert_books_balance();
}

#[test]
fn a_validator_slash_reaches_its_bonded_and_unbonding_delegations() {
    let mut net = Net::new(short_params(), 6, 1_000_000, &[(V, 20_000)]);
    let v = net.id(V);
    for who in [D, D2] {
        net.submit(
            who,
            TxKind::Delegate {
                validator: v,
                amount: 10_000,
            },
        )
        .expect("delegates");
    }
    let unbond = TxKind::Undelegate {
        validator: v,
        amount: u64::MAX,
    };
    let release = net.ledger.height() + 1 + net.params().unbonding_blocks;
    net.submit(D2, unbond).expect("undelegates");
    let unstake = TxKind::Unstake {
        role: StakeRole::Validator,
        amount: 4_000,
    };
    net.submit(V, unstake).expect("unstakes");
    assert!(net.ledger.height() + 1 < release, "D2 still unbonding");

    // 10% of everything at stake with the validator: its own 20 000
    // (bonded first), D's 10 000 and D2's unbonding 10 000.
    let reporter_before = net.balance(REPORTER);
    let events = net
        .submit(REPORTER, report(&v, 0, 1))
        .expect("the fault is proven");
    assert!(events.contains(&Event::ValidatorSlashed {
        validator: v,
        epoch: 0,
        view: 1,
        own: 2_000,
        delegated: 2_000,
        burned: 3_000,
        to_reporter: 1_000,
    }));
    // The reporter's share is of the validator's own loss only; what the
    // delegators lose burns.
    assert_eq!(net.balance(REPORTER), reporter_before + 1_000 - net.fee);
    assert_eq!(net.ledger.supply().expect("supply").burned, 3_000);
    let own = net.own_stake(V);
    assert_eq!((own.bonded, own.unbonding_total()), (14_000, 4_000));
    let pool = net.pool(V);
    assert_eq!((pool.tokens, pool.unbonding_tokens), (9_000, 9_000));
    assert_eq!(pool.value_of(net.delegation(V, D).shares), 9_000);
    net.assert_books_balance();

    // The same fault is punished once. (D2's undelegation comes back in
    // this block, slashed.)
    let d2 = net.id(D2);
    let d2_before = net.balance(D2);
    assert_eq!(net.ledger.height() + 1, release);
    let (result, block_events) = net.submit_in_block(REPORTER, report(&v, 0, 1));
    assert_eq!(code(result), "fault_already_reported");
    assert_eq!(
        block_events,
        vec![Event::Undelegated {
            delegator: d2,
            validator: v,
            amount: 9_000,
        }]
    );
    assert_eq!(net.balance(D2), d2_before + 9_000);
    // Evidence that does not hold.
    let d = net.id(D);
    assert_eq!(
        code(net.submit(REPORTER, report(&d, 0, 1))),
        "fault_not_proven"
    );
    assert_eq!(
        code(net.submit(REPORTER, report(&v, 7, 1))),
        "fault_not_proven",
        "no set for that epoch yet"
    );
    let short = TxKind::ReportFault {
        evidence: Bounded::new(vec![1; 47]).expect("small"),
    };
    assert_eq!(code(net.submit(REPORTER, short)), "fault_not_proven");
    // A host that does not judge faults proves none.
    let signed = net.sign(REPORTER, report(&v, 0, 2));
    let height = net.ledger.height() + 1;
    let outcome = net
        .ledger
        .execute_block(height, 0, &[signed], &NoReExecution)
        .expect("executes")
        .1;
    assert_eq!(
        outcome.transactions[0]
            .outcome
            .clone()
            .expect_err("not proven")
            .code(),
        "fault_not_proven"
    );

    // The validator's own unbonding stake came back slashed too.
    net.blocks_through(release + 1);
    assert_eq!(net.own_stake(V).unbonding_total(), 0);

    // A proven fault tombstones the validator: it takes no more
    // delegations, and the next epoch's set leaves it out.
    let refused = net
        .submit(
            OTHER,
            TxKind::Delegate {
                validator: v,
                amount: 900,
            },
        )
        .expect_err("jailed");
    assert_eq!(refused.code(), "validator_jailed");
    assert_eq!(net.ledger.jailed_since(&v).expect("read"), Some(0));

    // Another view is another fault: 10% again, of what is there now.
    let events = net
        .submit(REPORTER, report(&v, 0, 2))
        .expect("another fault");
    assert!(
        events.contains(&Event::ValidatorSlashed {
            validator: v,
            epoch: 0,
            view: 2,
            own: 1_400,
            delegated: 900,
            burned: 1_600,
            to_reporter: 700,
        }),
        "{events:?}"
    );
    let pool = net.pool(V);
    assert_eq!(pool.value_of(net.delegation(V, D).shares), 8_100);
    let next = net.ledger.epoch_of(net.ledger.height()) + 1;
    net.blocks_through(next * net.params().epoch_length_blocks);
    let set = net
        .ledger
        .validator_set(next)
        .expect("read")
        .expect("recorded");
    // It was the only validator: rather than halt, the chain keeps the
    // set it had (see the next test for a set that loses it).
    assert_eq!(
        set.iter().map(|(account, _)| *account).collect::<Vec<_>>(),
        vec![v]
    );
    net.assert_books_balance();
}

#[test]
fn a_validator_proven_faulty_leaves_the_next_set_for_good() {
    let mut net = Net::new(
        short_params(),
        5,
        1_000_000,
        &[(V, 30_000), (OTHER, 30_000)],
    );
    let (v, other) = (net.id(V), net.id(OTHER));
    net.submit(REPORTER, report(&v, 0, 1))
        .expect("the fault is proven");
    // More stake than anyone does not bring it back.
    net.submit(
        V,
        TxKind::Stake {
            role: StakeRole::Validator,
            amount: 500_000,
        },
    )
    .expect("stakes");
    let length = net.params().epoch_length_blocks;
    for epoch in 1..=3 {
        net.blocks_through(epoch * length);
        let set = net
            .ledger
            .validator_set(epoch)
            .expect("read")
            .expect("recorded");
        assert_eq!(
            set.iter().map(|(account, _)| *account).collect::<Vec<_>>(),
            vec![other]
        );
    }
    assert_eq!(net.ledger.jailed_since(&v).expect("read"), Some(0));
}

#[test]
fn commission_changes_are_bounded_in_size_and_once_per_epoch() {
    let mut net = Net::new(short_params(), 5, 1_000_000, &[(V, 30_000)]);
    let set = |commission_bps| TxKind::SetCommission { commission_bps };
    let params = net.params().clone();
    assert_eq!(
        (params.commission_max_bps, params.commission_change_max_bps),
        (2_500, 500)
    );
    assert_eq!(code(net.submit(V, set(501))), "commission_step_too_large");
    assert_eq!(code(net.submit(V, set(2_501))), "commission_too_high");
    assert_eq!(code(net.submit(OTHER, set(100))), "not_a_validator");
    net.submit(V, set(500)).expect("a first step of 500");
    assert_eq!(net.pool(V).commission_bps, 500);
    assert_eq!(net.pool(V).commission_epoch, Some(0));
    assert_eq!(
        code(net.submit(V, set(600))),
        "commission_changed_this_epoch"
    );
    assert_eq!(
        code(net.submit(V, set(500))),
        "commission_changed_this_epoch"
    );
    assert_eq!(code(net.submit(V, set(u16::MAX))), "commission_too_high");
    // The epoch's last block is still the epoch.
    net.blocks_through(params.epoch_length_blocks - 1);
    assert_eq!(
        code(net.submit(V, set(700))),
        "commission_changed_this_epoch"
    );
    assert_eq!(net.ledger.height(), params.epoch_length_blocks);

    assert_eq!(code(net.submit(V, set(1_001))), "commission_step_too_large");
    net.submit(V, set(1_000)).expect("step to 1000");
    for target in [1_500, 2_000, 2_500] {
        net.through_epoch_end();
        assert_eq!(
            code(net.submit(V, set(target + 1))),
            if target + 1 > 2_500 {
                "commission_too_high"
            } else {
                "commission_step_too_large"
            }
        );
        net.submit(V, set(target)).expect("one step");
    }
    net.through_epoch_end();
    assert_eq!(code(net.submit(V, set(2_501))), "commission_too_high");
    assert_eq!(code(net.submit(V, set(1_999))), "commission_step_too_large");
    net.submit(V, set(2_000)).expect("back down by a step");
    assert_eq!(net.pool(V).commission_bps, 2_000);
    net.assert_books_balance();
}

#[test]
fn delegation_rejections() {
    let mut net = Net::new(short_params(), 5, 1_000_000, &[(V, 30_000)]);
    let (v, other) = (net.id(V), net.id(OTHER));
    let delegate = |validator, amount| TxKind::Delegate { validator, amount };
    assert_eq!(code(net.submit(D, delegate(other, 100))), "not_a_validator");
    let d = net.id(D);
    assert_eq!(code(net.submit(D, delegate(d, 100))), "not_a_validator");
    assert_eq!(code(net.submit(D, delegate(v, 0))), "zero_amount");
    assert_eq!(
        code(net.submit(D, delegate(v, 2_000_000))),
        "insufficient_balance"
    );
    let undelegate = TxKind::Undelegate {
        validator: v,
        amount: 1,
    };
    assert_eq!(code(net.submit(D, undelegate.clone())), "no_delegation");
    assert_eq!(
        code(net.submit(D, TxKind::ClaimRewards { validator: v })),
        "no_delegation"
    );
    net.submit(D, delegate(v, 1_000)).expect("delegates");
    assert_eq!(
        code(net.submit(D, TxKind::ClaimRewards { validator: v })),
        "no_rewards"
    );
    assert_eq!(
        code(net.submit(
            D,
            TxKind::Undelegate {
                validator: v,
                amount: 0
            }
        )),
        "zero_amount"
    );
    // Sixteen undelegations wait at most.
    let nonce = net.ledger.account(&d).expect("account").nonce;
    let txs: Vec<_> = (0..17)
        .map(|index| net.sign_with_nonce(D, nonce + index, undelegate.clone()))
        .collect();
    let outcome = net.block(&txs);
    assert!(
        outcome.transactions[..16]
            .iter()
            .all(|tx| tx.outcome.is_ok())
    );
    assert_eq!(
        outcome.transactions[16]
            .outcome
            .clone()
            .expect_err("the 17th")
            .code(),
        "too_many_unbondings"
    );
    // A validator that leaves takes no new delegations; old ones can go.
    net.submit(
        V,
        TxKind::Unstake {
            role: StakeRole::Validator,
            amount: 30_000,
        },
    )
    .expect("leaves");
    assert_eq!(code(net.submit(OTHER, delegate(v, 100))), "not_a_validator");
    assert_eq!(
        code(net.submit(
            V,
            TxKind::SetCommission {
                commission_bps: 100
            }
        )),
        "not_a_validator"
    );
    net.blocks_through(net.ledger.height() + net.params().unbonding_blocks);
    net.submit(
        D,
        TxKind::Undelegate {
            validator: v,
            amount: u64::MAX,
        },
    )
    .expect("a delegation outlives its validator's stake");
    net.assert_books_balance();
}

#[test]
fn the_validator_set_is_the_largest_by_total_stake_capped_and_paid_by_its_powers() {
    let params = Params {
        validators_max: 4,
        voting_power_cap_bps: 3_000,
        ..short_params()
    };
    let stakes = [100_000u64, 50_000, 20_000, 10_000, 5_000, 1_000];
    let genesis: Vec<(usize, u64)> = stakes.iter().copied().enumerate().collect();
    let mut net = Net::new(params.clone(), 8, 1_000_000, &genesis);
    let set = |net: &Net, epoch: u64| -> Vec<(AccountId, u64)> {
        net.ledger
            .validator_set(epoch)
            .expect("readable")
            .unwrap_or_else(|| panic!("no set for epoch {epoch}"))
    };
    let check_cap = |set: &[(AccountId, u64)]| {
        assert!(set.len() <= params.validators_max as usize);
        let total: u128 = set.iter().map(|(_, power)| u128::from(*power)).sum();
        for (_, power) in set {
            assert!(u128::from(*power) * 10_000 <= u128::from(params.voting_power_cap_bps) * total);
        }
    };
    let first = set(&net, 0);
    check_cap(&first);
    assert_eq!(
        first,
        vec![
            (net.id(0), 22_500),
            (net.id(1), 22_500),
            (net.id(2), 20_000),
            (net.id(3), 10_000),
        ]
    );

    // Delegations count towards a validator's place: the smallest one
    // takes the lead for the next epoch, but is paid nothing for this one.
    let smallest = net.id(5);
    net.submit(
        6,
        TxKind::Delegate {
            validator: smallest,
            amount: 200_000,
        },
    )
    .expect("delegates");
    let before: Vec<u64> = (0..6).map(|who| net.balance(who)).collect();
    let events = net.through_epoch_end();
    let total_power = 75_000;
    let fees = net.fee;
    for (index, (account, power)) in first.iter().enumerate() {
        let reward = share(100_000, *power, total_power) + share(fees, *power, total_power);
        assert!(events.contains(&Event::ValidatorRewarded {
            validator: *account,
            amount: reward,
        }));
        assert_eq!(net.balance(index), before[index] + reward);
    }
    assert_eq!(net.balance(4), before[4]);
    assert_eq!(net.balance(5), before[5]);
    assert_eq!(net.pool(5).rewards_unclaimed, 0);

    let second = set(&net, 1);
    check_cap(&second);
    let expected_stakes = [201_000, 100_000, 50_000, 20_000];
    assert_eq!(
        second,
        vec![net.id(5), net.id(0), net.id(1), net.id(2)]
            .into_iter()
            .zip(capped_powers(&expected_stakes, 3_000))
            .collect::<Vec<_>>()
    );
    // Now it is paid, and its delegator gets most of that.
    let events = net.through_epoch_end();
    assert!(
        events
            .iter()
            .any(|event| matches!(event, Event::DelegatorsRewarded { validator, amount, .. } if *validator == smallest && *amount > 0))
    );
    assert!(net.delegation(5, 6).rewards_owed > 0);
    net.assert_books_balance();
}

// ---------------------------------------------------------------------------
// Random transactions and slashes, with the invariants after every block.

const ACCOUNTS: usize = 5;
const START: u64 = 100_000;

#[derive(Debug, Clone)]
enum Op {
    Transfer { to: usize, amount: u64 },
    Stake { amount: u64 },
    Unstake { amount: u64 },
    Delegate { validator: usize, amount: u64 },
    Undelegate { validator: Target, amount: u64 },
    Claim { validator: Target },
    SetCommission { commission_bps: u16 },
}

/// Which validator an undelegation or a claim names.
#[derive(Debug, Clone, Copy)]
enum Target {
    /// One of the sender's delegations (by position, wrapping), or this
    /// account when it has none.
    Held(usize),
    /// This account, delegated to or not.
    Account(usize),
}

#[derive(Debug, Clone)]
struct Step {
    sender: usize,
    op: Op,
}

#[derive(Debug, Clone)]
struct Fault {
    reporter: usize,
    validator: usize,
    /// Epochs before the current one; 3 names the next (no set yet).
    epochs_back: u64,
    view: u64,
    malformed: bool,
}

#[derive(Debug, Clone)]
enum Block {
    Txs(Vec<Step>),
    /// A fault report alone in its block, so what it takes can be checked
    /// against the state before it.
    Fault(Fault),
}

#[derive(Debug, Clone)]
struct Scenario {
    genesis_validators: Vec<u64>,
    emission: u64,
    validator_share_bps: u16,
    slash_bps: u16,
    reporter_share_bps: u16,
    validators_max: u32,
    cap_bps: u16,
    blocks: Vec<Block>,
}

fn amount() -> impl Strategy<Value = u64> {
    prop_oneof![
        10 => 1u64..5_000,
        1 => Just(0u64),
        2 => 5_000u64..60_000,
        1 => Just(u64::MAX),
    ]
}

/// Mostly the genesis validators.
fn validator() -> impl Strategy<Value = usize> {
    prop_oneof![4 => 0usize..3, 1 => 0..ACCOUNTS]
}

fn target() -> impl Strategy<Value = Target> {
    prop_oneof![
        4 => (0..ACCOUNTS).prop_map(Target::Held),
        1 => validator().prop_map(Target::Account),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        1 => (0..ACCOUNTS, amount()).prop_map(|(to, amount)| Op::Transfer { to, amount }),
        1 => amount().prop_map(|amount| Op::Stake { amount }),
        1 => amount().prop_map(|amount| Op::Unstake { amount }),
        5 => (validator(), amount()).prop_map(|(validator, amount)| Op::Delegate { validator, amount }),
        3 => (target(), amount()).prop_map(|(validator, amount)| Op::Undelegate { validator, amount }),
        2 => target().prop_map(|validator| Op::Claim { validator }),
        1 => prop_oneof![3 => 0u16..=600, 1 => 0u16..=3_000]
            .prop_map(|commission_bps| Op::SetCommission { commission_bps }),
    ]
}

fn block() -> impl Strategy<Value = Block> {
    prop_oneof![
        7 => vec((0..ACCOUNTS, op()).prop_map(|(sender, op)| Step { sender, op }), 0..5)
            .prop_map(Block::Txs),
        1 => (
            0..ACCOUNTS,
            validator(),
            prop_oneof![4 => Just(0u64), 2 => 1u64..3, 1 => Just(3u64)],
            0u64..3,
            prop::bool::weighted(0.1),
        )
            .prop_map(|(reporter, validator, epochs_back, view, malformed)| {
                Block::Fault(Fault { reporter, validator, epochs_back, view, malformed })
            }),
    ]
}

fn scenario() -> impl Strategy<Value = Scenario> {
    (
        vec(1_000u64..30_000, 2..=3),
        1u64..20_000,
        prop_oneof![Just(10_000u16), 0u16..=10_000],
        prop_oneof![2 => 1u16..=2_000, 1 => 2_000u16..10_000, 1 => Just(9_999u16)],
        0u16..=10_000,
        prop_oneof![3 => Just(100u32), 1 => 1u32..=3],
        prop_oneof![2 => Just(3_000u16), 1 => 1u16..=3_333],
        vec(block(), 10..30),
    )
        .prop_map(
            |(
                genesis_validators,
                emission,
                validator_share_bps,
                slash_bps,
                reporter_share_bps,
                validators_max,
                cap_bps,
                blocks,
            )| Scenario {
                genesis_validators,
                emission,
                validator_share_bps,
                slash_bps,
                reporter_share_bps,
                validators_max,
                cap_bps,
                blocks,
            },
        )
}

/// Everything the checks compare across a block.
#[derive(Debug, Clone)]
struct Snapshot {
    supply: Supply,
    tokens: u64,
    fee_pool: u64,
    balances: Vec<u64>,
    own: Vec<Stake>,
    pools: Vec<Pool>,
    /// `[validator][delegator]`, rewards brought up to date.
    delegations: Vec<Vec<Delegation>>,
    /// The latest recorded validator set.
    set: Vec<(AccountId, u64)>,
}

struct Harness {
    net: Net,
    ids: Vec<AccountId>,
    /// Faults punished so far: (validator, epoch, view).
    reported: BTreeSet<(AccountId, u64, u64)>,
}

impl Harness {
    fn new(scenario: &Scenario) -> Self {
        let params = Params {
            epoch_length_blocks: 3,
            unbonding_blocks: 2,
            emission_per_epoch: scenario.emission,
            validator_reward_share_bps: scenario.validator_share_bps,
            validator_slash_fraction_bps: scenario.slash_bps,
            slash_reporter_share_bps: scenario.reporter_share_bps,
            validators_max: scenario.validators_max,
            voting_power_cap_bps: scenario.cap_bps,
            ..Params::default()
        };
        let genesis: Vec<(usize, u64)> = scenario
            .genesis_validators
            .iter()
            .copied()
            .enumerate()
            .collect();
        let mut net = Net::new(params, ACCOUNTS, START, &genesis);
        net.fee = 1;
        let ids = (0..ACCOUNTS).map(|who| net.id(who)).collect();
        Self {
            net,
            ids,
            reported: BTreeSet::new(),
        }
    }

    fn snapshot(&self) -> Snapshot {
        let ledger = &self.net.ledger;
        let balances: Vec<u64> = (0..ACCOUNTS).map(|who| self.net.balance(who)).collect();
        let own: Vec<Stake> = (0..ACCOUNTS).map(|who| self.net.own_stake(who)).collect();
        let pools: Vec<Pool> = (0..ACCOUNTS).map(|who| self.net.pool(who)).collect();
        let delegations = (0..ACCOUNTS)
            .map(|v| (0..ACCOUNTS).map(|d| self.net.delegation(v, d)).collect())
            .collect();
        let tokens = ledger.tokens_in_existence().expect("tokens");
        let held: u64 = balances.iter().sum::<u64>()
            + own
                .iter()
                .map(|stake| stake.bonded + stake.unbonding_total())
                .sum::<u64>()
            + pools
                .iter()
                .map(|pool| pool.tokens + pool.unbonding_tokens + pool.rewards_unclaimed)
                .sum::<u64>();
        let epoch = ledger.height() / ledger.params().epoch_length_blocks;
        Snapshot {
            supply: ledger.supply().expect("supply"),
            tokens,
            // Nothing else holds tokens here (no jobs, no provider stake).
            fee_pool: tokens.checked_sub(held).expect("the fee pool"),
            balances,
            own,
            pools,
            delegations,
            set: ledger
                .validator_set(epoch)
                .expect("set")
                .expect("every epoch has a set"),
        }
    }

    fn index_of(&self, account: &AccountId) -> usize {
        self.ids
            .iter()
            .position(|id| id == account)
            .expect("one of ours")
    }

    fn target(&self, sender: AccountId, target: Target) -> AccountId {
        match target {
            Target::Account(index) => self.ids[index],
            Target::Held(position) => {
                let held = self.net.ledger.delegations_of(&sender).expect("list");
                if held.is_empty() {
                    self.ids[position]
                } else {
                    held[position % held.len()].0
                }
            }
        }
    }

    /// Signs the steps in order, each with the nonce its sender will have
    /// when it runs (rejected transactions use none).
    fn build(&self, height: u64, steps: &[Step]) -> Vec<SignedTransaction> {
        let mut txs: Vec<SignedTransaction> = Vec::new();
        for step in steps {
            let sender = self.ids[step.sender];
            let mut nonce = self.net.ledger.account(&sender).expect("account").nonce;
            if txs.iter().any(|tx| tx.signer == sender) {
                let (_, outcome) = self
                    .net
                    .ledger
                    .execute_block(height, 0, &txs, &FaultJudge)
                    .expect("execute the block so far");
                nonce += txs
                    .iter()
                    .zip(&outcome.transactions)
                    .filter(|(tx, result)| tx.signer == sender && result.outcome.is_ok())
                    .count() as u64;
            }
            let kind = match step.op {
                Op::Transfer { to, amount } => TxKind::Transfer {
                    to: self.ids[to],
                    amount,
                },
                Op::Stake { amount } => TxKind::Stake {
                    role: StakeRole::Validator,
                    amount,
                },
                Op::Unstake { amount } => TxKind::Unstake {
                    role: StakeRole::Validator,
                    amount,
                },
                Op::Delegate { validator, amount } => TxKind::Delegate {
                    validator: self.ids[validator],
                    amount,
                },
                Op::Undelegate { validator, amount } => TxKind::Undelegate {
                    validator: self.target(sender, validator),
                    amount,
                },
                Op::Claim { validator } => TxKind::ClaimRewards {
                    validator: self.target(sender, validator),
                },
                Op::SetCommission { commission_bps } => TxKind::SetCommission { commission_bps },
            };
            txs.push(self.net.sign_with_nonce(step.sender, nonce, kind));
        }
        txs
    }

    fn run(&mut self, scenario: &Scenario) -> Result<(), TestCaseError> {
        self.check_state(&self.snapshot())?;
        for block in &scenario.blocks {
            let before = self.snapshot();
            let height = self.net.ledger.height() + 1;
            match block {
                Block::Txs(steps) => {
                    let txs = self.build(height, steps);
                    let outcome = self.net.block(&txs);
                    for (step, result) in steps.iter().zip(&outcome.transactions) {
                        if let Err(rejection) = &result.outcome {
                            let allowed: &[&str] = match step.op {
                                Op::Transfer { .. } | Op::Stake { .. } => &["zero_amount"],
                                Op::Unstake { .. } => {
                                    &["zero_amount", "insufficient_stake", "too_many_unbondings"]
                                }
                                Op::Delegate { .. } => &[
                                    "zero_amount",
                                    "not_a_validator",
                                    "validator_jailed",
                                    "pool_full",
                                ],
                                Op::Undelegate { .. } => &[
                                    "zero_amount",
                                    "no_delegation",
                                    "too_many_unbondings",
                                    "pool_full",
                                ],
                                Op::Claim { .. } => &["no_delegation", "no_rewards"],
                                Op::SetCommission { .. } => &[
                                    "not_a_validator",
                                    "commission_too_high",
                                    "commission_step_too_large",
                                    "commission_changed_this_epoch",
                                ],
                            };
                            let code = rejection.code();
                            prop_assert!(
                                code == "insufficient_balance" || allowed.contains(&code),
                                "{:?} was refused: {}",
                                step,
                                rejection
                            );
                        }
                    }
                    let after = self.snapshot();
                    self.check_block(height, &before, &after, &outcome)?;
                }
                Block::Fault(fault) => {
                    let validator = self.ids[fault.validator];
                    let epoch_now = (height - 1) / self.net.params().epoch_length_blocks;
                    let epoch = if fault.epochs_back == 3 {
                        epoch_now + 1
                    } else {
                        epoch_now.saturating_sub(fault.epochs_back)
                    };
                    let mut bytes = evidence(&validator, epoch, fault.view);
                    if fault.malformed {
                        bytes.pop();
                    }
                    let kind = TxKind::ReportFault {
                        evidence: Bounded::new(bytes).expect("small evidence"),
                    };
                    let signed = self.net.sign(fault.reporter, kind);
                    let in_set = self
                        .net
                        .ledger
                        .validator_set(epoch)
                        .expect("set")
                        .is_some_and(|set| set.iter().any(|(account, _)| *account == validator));
                    let expected = if before.balances[fault.reporter] < self.net.fee {
                        Some("insufficient_balance")
                    } else if fault.malformed || !in_set {
                        Some("fault_not_proven")
                    } else if height
                        > (epoch + 1) * self.net.params().epoch_length_blocks
                            + self.net.params().unbonding_blocks
                    {
                        Some("fault_too_old")
                    } else if self.reported.contains(&(validator, epoch, fault.view)) {
                        Some("fault_already_reported")
                    } else {
                        None
                    };
                    let outcome = self.net.block(&[signed]);
                    let result = &outcome.transactions[0].outcome;
                    prop_assert_eq!(
                        result.as_ref().err().map(Rejection::code),
                        expected,
                        "the report of {:?}",
                        fault
                    );
                    let after = self.snapshot();
                    if result.is_ok() {
                        self.reported.insert((validator, epoch, fault.view));
                        self.check_slash(height, fault, &before, &after, &outcome)?;
                    }
                    self.check_block(height, &before, &after, &outcome)?;
                }
            }
        }
        Ok(())
    }

    /// What holds after any block, on its own.
    fn check_state(&self, now: &Snapshot) -> Result<(), TestCaseError> {
        let ledger = &self.net.ledger;
        let height = ledger.height();
        // (a) The books balance.
        prop_assert_eq!(
            now.tokens,
            now.supply.expected_total(),
            "the supply invariant"
        );
        for (v, pool) in now.pools.iter().enumerate() {
            let records = &now.delegations[v];
            // (b) Shares are exactly the delegations', on both sides.
            let shares: u128 = records.iter().map(|record| record.shares).sum();
            prop_assert_eq!(shares, pool.shares, "bonded shares of pool {}", v);
            let unbonding_shares: u128 = records
                .iter()
                .flat_map(|record| &record.unbonding)
                .map(|entry| entry.shares)
                .sum();
            prop_assert_eq!(
                unbonding_shares,
                pool.unbonding_shares,
                "unbonding shares of pool {}",
                v
            );
            // What they are worth: the tokens, less at most a token of
            // rounding for each.
            let holders = records.iter().filter(|record| record.shares > 0).count() as u64;
            let worth: u64 = records
                .iter()
                .map(|record| pool.value_of(record.shares))
                .sum();
            prop_assert!(
                worth <= pool.tokens,
                "pool {} pays out {} of {}",
                v,
                worth,
                pool.tokens
            );
            prop_assert!(
                worth + holders >= pool.tokens,
                "pool {}: {} delegations worth {} of {}",
                v,
                holders,
                worth,
                pool.tokens
            );
            let entries = records
                .iter()
                .map(|record| record.unbonding.len() as u64)
                .sum::<u64>();
            let unbonding_worth: u64 = records
                .iter()
                .flat_map(|record| &record.unbonding)
                .map(|entry| pool.unbonding_value_of(entry.shares))
                .sum();
            prop_assert!(unbonding_worth <= pool.unbonding_tokens);
            prop_assert!(
                unbonding_worth + entries >= pool.unbonding_tokens,
                "pool {}: {} unbonding entries worth {} of {}",
                v,
                entries,
                unbonding_worth,
                pool.unbonding_tokens
            );
            // A share is never worth more than a token (so rounding always
            // favours the pool), and a pool without shares holds nothing.
            prop_assert!(
                u128::from(pool.tokens) <= pool.shares,
                "pool {} {:?}",
                v,
                pool
            );
            prop_assert!(
                u128::from(pool.unbonding_tokens) <= pool.unbonding_shares,
                "pool {} {:?}",
                v,
                pool
            );
            // (c) Never owed more than paid in.
            let owed: u64 = records.iter().map(|record| record.rewards_owed).sum();
            prop_assert!(
                owed <= pool.rewards_unclaimed,
                "pool {} owes {} of {}",
                v,
                owed,
                pool.rewards_unclaimed
            );
            // Nothing is left unreleased past its height.
            for record in records {
                prop_assert!(
                    record
                        .unbonding
                        .iter()
                        .all(|entry| entry.release_height > height)
                );
                prop_assert!(record.unbonding.iter().all(|entry| entry.shares > 0));
                prop_assert_eq!(record.reward_index, pool.reward_per_share);
            }
            // The indexes agree with the delegations.
            let count = records.iter().filter(|record| !record.is_empty()).count();
            prop_assert_eq!(ledger.delegator_count(&self.ids[v]).expect("count"), count);
        }
        for (d, id) in self.ids.iter().enumerate() {
            let listed: BTreeMap<AccountId, Delegation> = ledger
                .delegations_of(id)
                .expect("list")
                .into_iter()
                .collect();
            let expected: BTreeMap<AccountId, Delegation> = (0..ACCOUNTS)
                .filter(|v| !now.delegations[*v][d].is_empty())
                .map(|v| (self.ids[v], now.delegations[v][d].clone()))
                .collect();
            prop_assert_eq!(listed, expected, "delegations of {}", d);
        }
        // The recorded set: at most validators_max, capped.
        let params = ledger.params();
        prop_assert!(now.set.len() <= params.validators_max as usize);
        let total: u128 = now.set.iter().map(|(_, power)| u128::from(*power)).sum();
        if now.set.len() as u128 * u128::from(params.voting_power_cap_bps) >= 10_000 {
            for (_, power) in &now.set {
                prop_assert!(
                    u128::from(*power) * 10_000 <= u128::from(params.voting_power_cap_bps) * total
                );
            }
        }
        Ok(())
    }

    /// What a block may change, from before it to after it.
    fn check_block(
        &self,
        height: u64,
        before: &Snapshot,
        after: &Snapshot,
        outcome: &BlockOutcome,
    ) -> Result<(), TestCaseError> {
        self.check_state(after)?;
        let params = self.net.params().clone();
        let accepted: Vec<&Vec<Event>> = outcome
            .transactions
            .iter()
            .filter_map(|result| result.outcome.as_ref().ok())
            .collect();
        let tx_events = || accepted.iter().flat_map(|events| events.iter());

        // (a) The supply moves by the emission and the slashes' burns only.
        let burned: u64 = tx_events()
            .map(|event| match event {
                Event::ValidatorSlashed { burned, .. } => *burned,
                _ => 0,
            })
            .sum();
        prop_assert_eq!(after.supply.burned - before.supply.burned, burned, "burned");
        prop_assert_eq!(after.supply.genesis, before.supply.genesis);
        let emitted = after.supply.emitted - before.supply.emitted;
        prop_assert_eq!(
            i128::from(after.tokens) - i128::from(before.tokens),
            i128::from(emitted) - i128::from(burned),
            "tokens in existence"
        );

        // Fees: every accepted transaction's, then the validators' part at
        // an epoch's end.
        let fees = before.fee_pool + accepted.len() as u64 * self.net.fee;
        let epoch_end = height.is_multiple_of(params.epoch_length_blocks);
        let set = &before.set;
        let total_power: u64 = set.iter().map(|(_, power)| power).sum();
        let validator_emission = bps(params.emission_per_epoch, params.validator_reward_share_bps);
        let mut expected_rewards = Vec::new();
        let mut to_pool = [0u64; ACCOUNTS];
        let mut growth = [0u128; ACCOUNTS];
        if epoch_end {
            let mut minted = 0;
            let mut fees_paid = 0;
            for (validator, power) in set {
                let from_emission = share(validator_emission, *power, total_power);
                let from_fees = share(fees, *power, total_power);
                minted += from_emission;
                fees_paid += from_fees;
                let reward = from_emission + from_fees;
                if reward == 0 {
                    continue;
                }
                // The split, by the stake at the end of the block.
                let v = self.index_of(validator);
                let pool = &after.pools[v];
                let own = after.own[v].bonded;
                let (mut net, mut commission, mut step) = (0, 0, 0);
                if pool.shares > 0 && pool.tokens > 0 {
                    let delegated = share(reward, pool.tokens, own + pool.tokens);
                    commission = bps(delegated, pool.commission_bps);
                    net = delegated - commission;
                    // net < 2^64, so net × 2^64 fits.
                    step = (u128::from(net) << 64) / pool.shares;
                    if net == 0 || step == 0 {
                        (net, commission, step) = (0, 0, 0);
                    }
                }
                if reward > net {
                    expected_rewards.push(Event::ValidatorRewarded {
                        validator: *validator,
                        amount: reward - net,
                    });
                }
                if net > 0 {
                    expected_rewards.push(Event::DelegatorsRewarded {
                        validator: *validator,
                        amount: net,
                        commission,
                    });
                }
                to_pool[v] = net;
                growth[v] = step;
            }
            prop_assert_eq!(emitted, minted, "the validators' emission");
            prop_assert_eq!(after.fee_pool, fees - fees_paid, "fees left");
        } else {
            prop_assert_eq!(emitted, 0, "no emission inside an epoch");
            prop_assert_eq!(after.fee_pool, fees, "fees collected");
        }
        let rewards: Vec<Event> = outcome
            .block_events
            .iter()
            .filter(|event| {
                matches!(
                    event,
                    Event::ValidatorRewarded { .. } | Event::DelegatorsRewarded { .. }
                )
            })
            .cloned()
            .collect();
        prop_assert_eq!(rewards, expected_rewards, "epoch rewards at {}", height);

        // (c) Each pool's accumulator and unclaimed rewards move by its
        // reward and its claims; each delegation earns its shares' part.
        let mut claimed: BTreeMap<(usize, usize), u64> = BTreeMap::new();
        for event in tx_events() {
            if let Event::RewardsClaimed {
                delegator,
                validator,
                amount,
            } = event
            {
                *claimed
                    .entry((self.index_of(validator), self.index_of(delegator)))
                    .or_default() += amount;
            }
        }
        for v in 0..ACCOUNTS {
            let (was, now) = (&before.pools[v], &after.pools[v]);
            let claims: u64 = (0..ACCOUNTS)
                .map(|d| claimed.get(&(v, d)).copied().unwrap_or(0))
                .sum();
            prop_assert_eq!(now.reward_per_share, was.reward_per_share + growth[v]);
            prop_assert_eq!(
                now.rewards_unclaimed + claims,
                was.rewards_unclaimed + to_pool[v],
                "unclaimed rewards of pool {}",
                v
            );
            for d in 0..ACCOUNTS {
                let claim = claimed.get(&(v, d)).copied();
                let owed_before = before.delegations[v][d].rewards_owed;
                let owed_after = after.delegations[v][d].rewards_owed;
                if let Some(claim) = claim {
                    // Claims happen before the block's rewards, at the
                    // rate of the block before.
                    prop_assert_eq!(claim, owed_before, "claimed by {} from {}", d, v);
                }
                let earned = u128::from(owed_after + claim.unwrap_or(0) - owed_before);
                let shares = after.delegations[v][d].shares;
                let exact = mul_shr64(shares, growth[v]).expect("earnings fit");
                prop_assert!(
                    earned == exact || earned == exact + 1,
                    "delegation of {} to {} earned {}, not {}",
                    d,
                    v,
                    earned,
                    exact
                );
            }
        }

        // Undelegations come back at their height, worth their shares then.
        let due: Vec<(usize, usize, u128)> = (0..ACCOUNTS)
            .flat_map(|v| (0..ACCOUNTS).map(move |d| (v, d)))
            .filter_map(|(v, d)| {
                let matured: u128 = before.delegations[v][d]
                    .unbonding
                    .iter()
                    .filter(|entry| entry.release_height == height)
                    .map(|entry| entry.shares)
                    .sum();
                (matured > 0).then_some((v, d, matured))
            })
            .collect();
        let mut released: BTreeMap<(usize, usize), u64> = BTreeMap::new();
        for event in &outcome.block_events {
            if let Event::Undelegated {
                delegator,
                validator,
                amount,
            } = event
            {
                prop_assert!(*amount > 0);
                let key = (self.index_of(validator), self.index_of(delegator));
                prop_assert!(released.insert(key, *amount).is_none(), "released twice");
            }
        }
        for (v, d, matured) in &due {
            let worth = before.pools[*v].unbonding_value_of(*matured);
            let amount = released.remove(&(*v, *d)).unwrap_or(0);
            // Releases before it in the block leave their rounding behind,
            // a token each at most.
            prop_assert!(
                amount >= worth && amount <= worth + due.len() as u64,
                "released {} of {} to {} from {}",
                amount,
                worth,
                d,
                v
            );
        }
        prop_assert!(
            released.is_empty(),
            "released what was not due: {:?}",
            released
        );
        for event in tx_events() {
            if let Event::UndelegationStarted { release_height, .. } = event {
                prop_assert_eq!(*release_height, height + params.unbonding_blocks);
            }
        }
        Ok(())
    }

    /// (d) A proven fault takes the slash fraction of the validator's own
    /// stake and of every delegation to it, bonded or unbonding.
    fn check_slash(
        &self,
        height: u64,
        fault: &Fault,
        before: &Snapshot,
        after: &Snapshot,
        outcome: &BlockOutcome,
    ) -> Result<(), TestCaseError> {
        let params = self.net.params();
        let fraction = params.validator_slash_fraction_bps;
        let v = fault.validator;
        let events = outcome.transactions[0].outcome.as_ref().expect("accepted");
        let Some(Event::ValidatorSlashed {
            validator,
            own,
            delegated,
            burned,
            to_reporter,
            ..
        }) = events
            .iter()
            .find(|event| matches!(event, Event::ValidatorSlashed { .. }))
        else {
            return Err(TestCaseError::fail("no slash event"));
        };
        prop_assert_eq!(*validator, self.ids[v]);
        // The validator's own stake, less what was released at the block's
        // start.
        let stake = &before.own[v];
        let own_total = stake.bonded
            + stake
                .unbonding
                .iter()
                .filter(|entry| entry.release_height > height)
                .map(|entry| entry.amount)
                .sum::<u64>();
        prop_assert_eq!(*own, bps(own_total, fraction));
        let now = &after.own[v];
        prop_assert_eq!(now.bonded + now.unbonding_total(), own_total - own);
        // The pool's bonded side is untouched by the block's releases; its
        // unbonding side is what was left after them.
        let (was, pool) = (&before.pools[v], &after.pools[v]);
        let from_bonded = bps(was.tokens, fraction);
        prop_assert_eq!(pool.tokens, was.tokens - from_bonded);
        prop_assert!(*delegated >= from_bonded);
        let from_unbonding = delegated - from_bonded;
        prop_assert_eq!(
            from_unbonding,
            bps(pool.unbonding_tokens + from_unbonding, fraction)
        );
        prop_assert_eq!(burned + to_reporter, own + delegated);
        prop_assert_eq!(*to_reporter, bps(*own, params.slash_reporter_share_bps));

        // Every delegation loses the fraction of its worth, within rounding.
        let releases = before
            .delegations
            .iter()
            .flatten()
            .filter(|record| {
                record
                    .unbonding
                    .iter()
                    .any(|entry| entry.release_height == height)
            })
            .count() as u64;
        let keep = |worth: u64| share(worth, 10_000 - u64::from(fraction), 10_000);
        for d in 0..ACCOUNTS {
            let record = &before.delegations[v][d];
            prop_assert_eq!(record.shares, after.delegations[v][d].shares);
            let worth = was.value_of(record.shares);
            let now = pool.value_of(record.shares);
            prop_assert!(
                now.abs_diff(keep(worth)) <= 2,
                "a delegation worth {} is worth {} after a {} bps slash",
                worth,
                now,
                fraction
            );
            for entry in record
                .unbonding
                .iter()
                .filter(|entry| entry.release_height > height)
            {
                let worth = was.unbonding_value_of(entry.shares);
                let now = pool.unbonding_value_of(entry.shares);
                prop_assert!(
                    now.abs_diff(keep(worth)) <= 2 + releases,
                    "an undelegation worth {} is worth {} after a {} bps slash",
                    worth,
                    now,
                    fraction
                );
            }
        }
        // Other validators' pools lose nothing.
        for other in (0..ACCOUNTS).filter(|other| *other != v) {
            prop_assert_eq!(before.pools[other].tokens, after.pools[other].tokens);
        }
        Ok(())
    }
}

proptest! {
    #![proptest_config(config(200))]

    #[test]
    fn random_delegation_keeps_the_pools_and_the_books_exact(scenario in scenario()) {
        Harness::new(&scenario).run(&scenario)?;
    }
}
