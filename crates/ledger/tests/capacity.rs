//! Capacity challenges on the ledger: who is challenged and with what,
//! answers judged by block time, pairs that agree, disagreements decided
//! by running the challenge (in the real sandbox), wrong answers slashed,
//! silence counted as missed; GPU challenges answered by nonces checked in
//! the block that takes them.

use idlegrid_ledger::capacity::{Capacity, ChallengeResult, GpuChallenge};
use idlegrid_ledger::{
    Event, Genesis, Ledger, LedgerError, MemoryStore, Params, Rejection, StakeRole, Transaction,
    TxKind,
};
use idlegrid_sandbox::{Sandbox, SandboxConfig};
use idlegrid_types::capacity::{
    GPU_CHALLENGE_SOLUTIONS, answer_commitment, challenge_fuel, gpu_challenge_fuel,
    gpu_challenge_score,
};
use idlegrid_types::codec::Bounded;
use idlegrid_types::{AccountId, ContentId, Keypair, ReExecute};
use proptest::prelude::*;

const CHAIN: &str = "idlegrid-capacity-test";
const EPOCH: u64 = 10;
/// Block times start here and move by `STEP_MS` a block unless a test
/// says otherwise.
const T0: u64 = 1_700_000_000_000;
const STEP_MS: u64 = 100;
/// Every provider declares this: the challenge (no passes, about 1.7e8
/// fuel) is due 1.25 × 1.74 s + 2 s after it is issued.
const DECLARED: u64 = 100_000_000;
const STAKE: u64 = 100_000;

struct Chain {
    ledger: Ledger<MemoryStore>,
    keys: Vec<Keypair>,
    sandbox: Sandbox,
    time_ms: u64,
}

fn params() -> Params {
    Params {
        epoch_length_blocks: EPOCH,
        challenge_passes: 0,
        challenge_share_bps: 10_000,
        ..Params::default()
    }
}

impl Chain {
    fn new(providers: u8) -> Self {
        Self::with_params(providers, params())
    }

    fn with_params(providers: u8, params: Params) -> Self {
        let keys: Vec<Keypair> = (1..=providers + 1)
            .map(|seed| Keypair::from_seed([seed; 32]))
            .collect();
        let genesis = Genesis {
            chain_id: CHAIN.to_owned(),
            params,
            balances: keys
                .iter()
                .map(|key| (key.account_id(), 1_000_000))
                .collect(),
            // The last key validates.
            validators: vec![(keys[usize::from(providers)].account_id(), 1_000_000)],
        };
        Self {
            ledger: Ledger::init(MemoryStore::default(), &genesis).expect("genesis"),
            keys,
            sandbox: Sandbox::new(SandboxConfig::default()).expect("sandbox"),
            time_ms: T0,
        }
    }

    fn id(&self, who: usize) -> AccountId {
        self.keys[who].account_id()
    }

    /// One block at `STEP_MS` after the last holding `who`'s `kind`;
    /// returns its outcome and the block's events.
    fn submit(&mut self, who: usize, kind: TxKind) -> Result<Vec<Event>, Rejection> {
        let nonce = self.ledger.account(&self.id(who)).expect("account").nonce;
        let signed = self.keys[who].sign(Transaction::new(CHAIN, nonce, 1, kind).expect("tx"));
        let outcome = self.block(&[signed]);
        outcome.0.into_iter().next().expect("one result")
    }

    fn block(
        &mut self,
        transactions: &[idlegrid_ledger::SignedTransaction],
    ) -> (Vec<Result<Vec<Event>, Rejection>>, Vec<Event>) {
        self.time_ms += STEP_MS;
        let height = self.ledger.height() + 1;
        let outcome = self
            .ledger
            .apply_block(height, self.time_ms, transactions, &self.sandbox)
            .expect("block applies");
        (
            outcome
                .transactions
                .into_iter()
                .map(|result| result.outcome)
                .collect(),
            outcome.block_events,
        )
    }

    /// Empty blocks up to and including the next epoch's last block;
    /// returns the events of that block.
    fn run_to_epoch_end(&mut self) -> Vec<Event> {
        loop {
            let (_, events) = self.block(&[]);
            if self.ledger.height().is_multiple_of(EPOCH) {
                return events;
            }
        }
    }

    fn staked_and_declared(&mut self, who: usize, fuel_per_second: u64) {
        self.submit(
            who,
            TxKind::Stake {
                role: StakeRole::Provider,
                amount: STAKE,
            },
        )
        .expect("stakes");
        self.submit(who, TxKind::DeclareCapacity { fuel_per_second })
            .expect("declares");
    }

    fn capacity(&self, who: usize) -> Capacity {
        self.ledger.capacity(&self.id(who)).expect("capacity")
    }

    /// The output the challenge of `who`'s open challenge gives.
    fn true_output(&self, who: usize) -> (u64, ContentId) {
        let (epoch, challenge) = self.open(who);
        let output = ReExecute::run_challenge(&self.sandbox, challenge.seed, challenge.passes)
            .expect("runs");
        (epoch, output)
    }

    fn open(&self, who: usize) -> (u64, idlegrid_ledger::capacity::Challenge) {
        self.ledger
            .challenges(&self.id(who))
            .expect("challenges")
            .pop()
            .expect("an open challenge")
    }

    fn answer(
        &mut self,
        who: usize,
        epoch: u64,
        output: ContentId,
    ) -> Result<Vec<Event>, Rejection> {
        let commitment = answer_commitment(&output, &self.id(who));
        self.submit(who, TxKind::AnswerChallenge { epoch, commitment })
    }

    fn reveal(
        &mut self,
        who: usize,
        epoch: u64,
        output: ContentId,
    ) -> Result<Vec<Event>, Rejection> {
        self.submit(who, TxKind::RevealChallenge { epoch, output })
    }

    fn provider_stake(&self, who: usize) -> u64 {
        self.ledger
            .stake(StakeRole::Provider, &self.id(who))
            .expect("stake")
            .bonded
    }
}

impl Chain {
    fn staked_with_gpu(&mut self, who: usize, fuel_per_second: u64) {
        self.submit(
            who,
            TxKind::Stake {
                role: StakeRole::Provider,
                amount: STAKE,
            },
        )
        .expect("stakes");
        self.submit(who, TxKind::DeclareGpuCapacity { fuel_per_second })
            .expect("declares a GPU");
    }

    fn open_gpu(&self, who: usize) -> (u64, GpuChallenge) {
        self.ledger
            .gpu_challenges(&self.id(who))
            .expect("GPU challenges")
            .pop()
            .expect("an open GPU challenge")
    }

    fn answer_gpu(
        &mut self,
        who: usize,
        epoch: u64,
        nonces: Vec<u64>,
    ) -> Result<Vec<Event>, Rejection> {
        let nonces = Bounded::new(nonces).expect("within the bound");
        self.submit(who, TxKind::AnswerGpuChallenge { epoch, nonces })
    }

    /// Advances block time to `after_ms` past the challenge's issue, less
    /// the block that takes the answer.
    fn wait_until(&mut self, challenge: &GpuChallenge, after_ms: u64) {
        self.time_ms = challenge.issued_ms + after_ms - STEP_MS;
    }
}

/// The first solutions of a GPU challenge, found on the host.
fn gpu_solutions(challenge: &GpuChallenge) -> Vec<u64> {
    (0..)
        .filter(|nonce| gpu_challenge_score(&challenge.seed, *nonce) < challenge.target)
        .take(GPU_CHALLENGE_SOLUTIONS as usize)
        .collect()
}

fn settled(events: &[Event]) -> Vec<(AccountId, ChallengeResult, u64)> {
    settlements(events, false)
}

fn gpu_settled(events: &[Event]) -> Vec<(AccountId, ChallengeResult, u64)> {
    settlements(events, true)
}

/// The CPU (or GPU) challenges settled by `events`: who, how, and the
/// speed proven since.
fn settlements(events: &[Event], gpu: bool) -> Vec<(AccountId, ChallengeResult, u64)> {
    events
        .iter()
        .filter_map(|event| match (event, gpu) {
            (
                Event::ChallengeSettled {
                    provider,
                    result,
                    proven_fuel_per_second,
                    ..
                },
                false,
            )
            | (
                Event::GpuChallengeSettled {
                    provider,
                    result,
                    proven_fuel_per_second,
                    ..
                },
                true,
            ) => Some((*provider, *result, *proven_fuel_per_second)),
            _ => None,
        })
        .collect()
}

#[test]
fn an_epoch_challenges_declared_providers_in_pairs_that_share_a_seed() {
    let mut chain = Chain::new(5);
    for who in 0..4 {
        chain.staked_and_declared(who, DECLARED);
    }
    // Provider 4 is staked but never declares a speed.
    chain
        .submit(
            4,
            TxKind::Stake {
                role: StakeRole::Provider,
                amount: STAKE,
            },
        )
        .expect("stakes");
    let events = chain.run_to_epoch_end();
    let issued: Vec<AccountId> = events
        .iter()
        .filter_map(|event| match event {
            Event::ChallengeIssued { provider, .. } => Some(*provider),
            _ => None,
        })
        .collect();
    assert_eq!(issued.len(), 4, "{events:?}");
    assert!(!issued.contains(&chain.id(4)));
    assert!(
        chain
            .ledger
            .challenges(&chain.id(4))
            .expect("read")
            .is_empty()
    );
    for who in 0..4 {
        let (_, mine) = chain.open(who);
        let partner = mine.partner.expect("four make two pairs");
        let who_partner = (0..4)
            .find(|&other| chain.id(other) == partner)
            .expect("a provider");
        let (_, theirs) = chain.open(who_partner);
        assert_eq!(theirs.partner, Some(chain.id(who)));
        assert_eq!(theirs.seed, mine.seed, "a pair shares its seed");
        assert_eq!(mine.issued_ms, chain.time_ms);
        assert_eq!(mine.offered_fuel_per_second, DECLARED);
        // 1.25 × the declared speed's time, plus the round trip.
        let needed_ms = challenge_fuel(0) * 1_000 * 12_500 / 10_000 / DECLARED;
        assert_eq!(mine.deadline_ms, mine.issued_ms + needed_ms + 2_000);
    }
    let seeds: std::collections::BTreeSet<[u8; 32]> =
        (0..4).map(|who| chain.open(who).1.seed).collect();
    assert_eq!(seeds.len(), 2, "each pair has its own seed");
}

#[test]
fn agreeing_answers_in_time_prove_the_declared_speed_and_a_late_one_proves_less() {
    let mut chain = Chain::new(3);
    chain.staked_and_declared(0, DECLARED);
    chain.staked_and_declared(1, DECLARED);
    chain.run_to_epoch_end();
    let (epoch, output) = chain.true_output(0);
    let deadline_of_1 = chain.open(1).1.deadline_ms;
    let issued_ms = chain.open(0).1.issued_ms;
    // 0 answers at once; 1 only 10 s after the deadline.
    chain.answer(0, epoch, output).expect("0 answers");
    chain.time_ms = deadline_of_1 + 10_000;
    let answered = chain.answer(1, epoch, output).expect("1 answers late");
    assert!(
        answered.iter().any(|event| matches!(
            event,
            Event::ChallengeAnswered { after_ms, .. }
                if *after_ms == deadline_of_1 + 10_000 + STEP_MS - issued_ms
        )),
        "{answered:?}"
    );
    // 0 may reveal now that 1 committed; nothing settles until both have.
    assert!(settled(&chain.reveal(0, epoch, output).expect("0 reveals")).is_empty());
    let events = chain.reveal(1, epoch, output).expect("1 reveals");
    let results = settled(&events);
    assert_eq!(results.len(), 2, "{events:?}");
    assert_eq!(chain.capacity(0).passed, 1);
    assert_eq!(chain.capacity(0).proven_fuel_per_second, Some(DECLARED));
    let late = chain.capacity(1);
    assert_eq!((late.passed, late.late), (0, 1));
    // The fuel over the time it took, less the round trip.
    let after_ms = deadline_of_1 + 10_000 + STEP_MS - issued_ms;
    let proven = challenge_fuel(0) * 1_000 / (after_ms - 2_000);
    assert_eq!(late.proven_fuel_per_second, Some(proven));
    assert!(proven < DECLARED / 2, "{proven}");
    assert_eq!(late.usable_fuel_per_second(), proven);
    // Settled challenges are not missed when their epoch closes.
    let closing = chain.run_to_epoch_end();
    assert!(settled(&closing).is_empty(), "{closing:?}");
    assert_eq!(chain.capacity(0).missed + chain.capacity(1).missed, 0);
    // And the epoch's availability reward is theirs, by the speed each
    // proved: a fifth of the providers' part of the emission.
    let params = params();
    let providers_part = params.emission_per_epoch
        - params.emission_per_epoch * u64::from(params.validator_reward_share_bps) / 10_000;
    let pot = providers_part * u64::from(params.availability_reward_share_bps) / 10_000;
    let rewarded: Vec<(AccountId, u64)> = closing
        .iter()
        .filter_map(|event| match event {
            Event::AvailabilityRewarded { provider, amount } => Some((*provider, *amount)),
            _ => None,
        })
        .collect();
    let total = u128::from(DECLARED + proven);
    assert_eq!(
        rewarded,
        {
            let mut expected = vec![
                (
                    chain.id(0),
                    (u128::from(pot) * u128::from(DECLARED) / total) as u64,
                ),
                (
                    chain.id(1),
                    (u128::from(pot) * u128::from(proven) / total) as u64,
                ),
            ];
            expected.sort();
            expected
        },
        "{closing:?}"
    );
    // The next epoch nobody answered: nobody is paid for availability.
    let next = chain.run_to_epoch_end();
    assert!(
        !next
            .iter()
            .any(|event| matches!(event, Event::AvailabilityRewarded { .. }))
    );
}

#[test]
fn a_disagreement_is_decided_by_running_the_challenge_and_the_wrong_answer_slashed() {
    let mut chain = Chain::new(3);
    chain.staked_and_declared(0, DECLARED);
    chain.staked_and_declared(1, DECLARED);
    chain.run_to_epoch_end();
    let (epoch, output) = chain.true_output(0);
    let forged = ContentId::of(b"a guess");
    chain.answer(0, epoch, output).expect("0 answers");
    chain.answer(1, epoch, forged).expect("1 answers");
    // A reveal that is not what was committed to is refused.
    assert_eq!(
        chain.reveal(1, epoch, output).unwrap_err().code(),
        "reveal_mismatch"
    );
    chain.reveal(1, epoch, forged).expect("1 reveals its guess");
    let supply_before = chain.ledger.supply().expect("supply");
    let events = chain.reveal(0, epoch, output).expect("0 reveals");
    let results = settled(&events);
    assert!(results.contains(&(chain.id(0), ChallengeResult::OnTime, DECLARED)));
    assert!(results.contains(&(chain.id(1), ChallengeResult::Wrong, 0)));
    let slashed = STAKE * u64::from(params().slash_fraction_bps) / 10_000;
    assert!(events.contains(&Event::Slashed {
        provider: chain.id(1),
        amount: slashed,
        burned: slashed,
        to_reporter: 0,
    }));
    assert_eq!(chain.provider_stake(1), STAKE - slashed);
    assert_eq!(chain.provider_stake(0), STAKE);
    let supply = chain.ledger.supply().expect("supply");
    assert_eq!(supply.burned, supply_before.burned + slashed);
    assert_eq!(chain.capacity(1).wrong, 1);
    assert_eq!(chain.capacity(1).usable_fuel_per_second(), 0);
}

#[test]
fn a_pair_agreeing_on_a_wrong_answer_is_caught_by_a_spot_check() {
    for (share, caught) in [(10_000, true), (0, false)] {
        let mut chain = Chain::with_params(
            3,
            Params {
                challenge_spot_check_bps: share,
                ..params()
            },
        );
        chain.staked_and_declared(0, DECLARED);
        chain.staked_and_declared(1, DECLARED);
        chain.run_to_epoch_end();
        let (epoch, _) = chain.open(0);
        // Two colluders agree on an answer neither computed.
        let forged = ContentId::of(b"agreed on, not computed");
        chain.answer(0, epoch, forged).expect("0 answers");
        chain.answer(1, epoch, forged).expect("1 answers");
        chain.reveal(0, epoch, forged).expect("0 reveals");
        let events = chain.reveal(1, epoch, forged).expect("1 reveals");
        let results = settled(&events);
        if caught {
            // Run anyway, and both are slashed.
            assert!(results.contains(&(chain.id(0), ChallengeResult::Wrong, 0)));
            assert!(results.contains(&(chain.id(1), ChallengeResult::Wrong, 0)));
            assert!(chain.provider_stake(0) < STAKE && chain.provider_stake(1) < STAKE);
        } else {
            // Unchecked, agreement stands (the limit spot checks answer).
            assert!(results.contains(&(chain.id(0), ChallengeResult::OnTime, DECLARED)));
            assert_eq!(chain.provider_stake(1), STAKE);
        }
    }
}

#[test]
fn an_agreeing_pair_settles_only_after_the_block_of_its_later_answer() {
    let mut chain = Chain::with_params(
        3,
        Params {
            challenge_spot_check_bps: 10_000,
            ..params()
        },
    );
    chain.staked_and_declared(0, DECLARED);
    chain.staked_and_declared(1, DECLARED);
    chain.run_to_epoch_end();
    let (epoch, output) = chain.true_output(0);
    chain.answer(0, epoch, output).expect("0 answers");
    // 1 answers, 0 reveals and 1 reveals, all in one block: the draw of
    // the spot check is the state root after 1's answer, which does not
    // exist yet, so the settling reveal is refused.
    let sign = |chain: &Chain, who: usize, nonce_after: u64, kind: TxKind| {
        let nonce = chain.ledger.account(&chain.id(who)).expect("account").nonce + nonce_after;
        chain.keys[who].sign(Transaction::new(CHAIN, nonce, 1, kind).expect("tx"))
    };
    let commitment = answer_commitment(&output, &chain.id(1));
    let block = [
        sign(&chain, 1, 0, TxKind::AnswerChallenge { epoch, commitment }),
        sign(&chain, 0, 0, TxKind::RevealChallenge { epoch, output }),
        sign(&chain, 1, 1, TxKind::RevealChallenge { epoch, output }),
    ];
    let (results, _) = chain.block(&block);
    assert!(results[0].is_ok() && results[1].is_ok(), "{results:?}");
    assert_eq!(
        results[2].as_ref().unwrap_err().code(),
        "reveal_with_answer"
    );
    // The next block may: checked, both right.
    let events = chain.reveal(1, epoch, output).expect("1 reveals");
    assert_eq!(settled(&events).len(), 2, "{events:?}");
}

#[test]
fn an_answer_cannot_be_copied_from_a_partner_and_a_silent_one_is_missed() {
    let mut chain = Chain::new(3);
    chain.staked_and_declared(0, DECLARED);
    chain.staked_and_declared(1, DECLARED);
    chain.run_to_epoch_end();
    let (epoch, output) = chain.true_output(0);
    chain.answer(0, epoch, output).expect("0 answers");
    // 1 has neither answered nor run out of time: 0 may not show its
    // output yet.
    let early = chain.reveal(0, epoch, output).unwrap_err();
    assert_eq!(early.code(), "reveal_too_early");
    // Nor after 1's deadline: a late answer still proves a speed, so it
    // is awaited for four times the deadline's time.
    chain.time_ms = chain.open(1).1.deadline_ms + 1;
    assert_eq!(
        chain.reveal(0, epoch, output).unwrap_err().code(),
        "reveal_too_early"
    );
    // After that, 0 reveals; with nobody to agree with, the validators
    // run the challenge, and 0's answer stands.
    let (_, theirs) = chain.open(1);
    assert_eq!(
        theirs.awaited_until_ms(),
        theirs.issued_ms + 4 * (theirs.deadline_ms - theirs.issued_ms)
    );
    chain.time_ms = theirs.awaited_until_ms();
    let events = chain.reveal(0, epoch, output).expect("0 reveals");
    assert_eq!(
        settled(&events),
        vec![(chain.id(0), ChallengeResult::OnTime, DECLARED)]
    );
    // Now 1 could copy it, so it may not answer at all.
    assert_eq!(
        chain.answer(1, epoch, output).unwrap_err().code(),
        "challenge_answer_exposed"
    );
    // The epoch's end closes the challenge: 1 missed it.
    let closing = chain.run_to_epoch_end();
    assert_eq!(
        settled(&closing),
        vec![(chain.id(1), ChallengeResult::Missed, 0)]
    );
    assert_eq!(chain.capacity(1).missed, 1);
    assert_eq!(chain.capacity(0).missed, 0);
    assert!(
        chain
            .ledger
            .challenges(&chain.id(0))
            .expect("read")
            .iter()
            .all(|(open, _)| *open != epoch),
        "a closed epoch's challenges are gone"
    );
}

#[test]
fn transactions_that_do_not_fit_a_challenge_are_refused_with_a_reason() {
    let mut chain = Chain::new(2);
    assert_eq!(
        chain
            .submit(
                0,
                TxKind::DeclareCapacity {
                    fuel_per_second: DECLARED
                }
            )
            .unwrap_err()
            .code(),
        "not_a_provider"
    );
    chain.staked_and_declared(0, DECLARED);
    assert_eq!(
        chain
            .submit(0, TxKind::DeclareCapacity { fuel_per_second: 0 })
            .unwrap_err()
            .code(),
        "capacity_out_of_range"
    );
    assert_eq!(
        chain.answer(0, 1, ContentId::of(b"x")).unwrap_err().code(),
        "no_challenge"
    );
    chain.run_to_epoch_end();
    let (epoch, output) = chain.true_output(0);
    assert_eq!(
        chain.reveal(0, epoch, output).unwrap_err().code(),
        "challenge_not_answered"
    );
    chain.answer(0, epoch, output).expect("answers");
    assert_eq!(
        chain.answer(0, epoch, output).unwrap_err().code(),
        "challenge_already_answered"
    );
    // Alone in its epoch: it may reveal at once, and is checked by running.
    let events = chain.reveal(0, epoch, output).expect("reveals");
    assert_eq!(settled(&events).len(), 1);
    assert_eq!(
        chain.reveal(0, epoch, output).unwrap_err().code(),
        "challenge_already_revealed"
    );
}

#[test]
fn a_block_may_not_be_earlier_than_its_parent_and_the_ledger_keeps_its_time() {
    let mut chain = Chain::new(1);
    chain.block(&[]);
    assert_eq!(chain.ledger.time_ms().expect("time"), chain.time_ms);
    let height = chain.ledger.height() + 1;
    match chain
        .ledger
        .apply_block(height, chain.time_ms - 1, &[], &chain.sandbox)
    {
        Err(LedgerError::TimeBeforeParent { parent, found }) => {
            assert_eq!((parent, found), (chain.time_ms, chain.time_ms - 1));
        }
        other => panic!("{other:?}"),
    }
    // The same time as the parent's is allowed.
    chain
        .ledger
        .apply_block(height, chain.time_ms, &[], &chain.sandbox)
        .expect("applies");
}

#[test]
fn without_a_share_nobody_is_challenged() {
    let mut chain = Chain::new(2);
    let genesis = Genesis {
        chain_id: CHAIN.to_owned(),
        params: Params {
            challenge_share_bps: 0,
            ..params()
        },
        balances: vec![(chain.id(0), 1_000_000)],
        validators: vec![(chain.id(1), 1_000_000)],
    };
    chain.ledger = Ledger::init(MemoryStore::default(), &genesis).expect("genesis");
    chain.staked_and_declared(0, DECLARED);
    let events = chain.run_to_epoch_end();
    assert!(
        !events
            .iter()
            .any(|event| matches!(event, Event::ChallengeIssued { .. }))
    );
}

/// Declared GPU speed in the GPU tests: with the default 10 s challenge,
/// about 10,000 attempts, which the host finds in moments.
const GPU_DECLARED: u64 = 1_000;

#[test]
fn a_gpu_challenge_is_answered_with_nonces_checked_at_once_and_timed_by_its_block() {
    let mut chain = Chain::new(3);
    chain.staked_with_gpu(0, GPU_DECLARED);
    chain.staked_with_gpu(1, GPU_DECLARED);
    let events = chain.run_to_epoch_end();
    let issued = events
        .iter()
        .filter(|event| matches!(event, Event::GpuChallengeIssued { .. }))
        .count();
    assert_eq!(issued, 2, "{events:?}");
    // A GPU alone is challenged on the GPU only.
    assert!(
        chain
            .ledger
            .challenges(&chain.id(0))
            .expect("read")
            .is_empty()
    );
    let (epoch, first) = chain.open_gpu(0);
    let (_, second) = chain.open_gpu(1);
    assert_ne!(first.seed, second.seed, "each GPU has a seed of its own");
    // The target asks for the declared speed times the challenge's 10 s.
    let fuel = first.fuel();
    assert!(fuel.abs_diff(GPU_DECLARED * 10) <= 1, "{fuel}");
    assert_eq!(
        first.deadline_ms,
        first.issued_ms + fuel * 1_000 * 12_500 / 10_000 / GPU_DECLARED + 2_000
    );

    // In time: the declared speed is proven, and counts as available.
    chain.wait_until(&first, first.deadline_ms - first.issued_ms);
    let events = chain
        .answer_gpu(0, epoch, gpu_solutions(&first))
        .expect("answers");
    assert_eq!(
        gpu_settled(&events),
        vec![(chain.id(0), ChallengeResult::OnTime, GPU_DECLARED)]
    );
    let record = chain.ledger.gpu_capacity(&chain.id(0)).expect("read");
    assert_eq!(
        (record.passed, record.usable_fuel_per_second()),
        (1, GPU_DECLARED)
    );
    assert_eq!(
        chain
            .answer_gpu(0, epoch, gpu_solutions(&first))
            .unwrap_err()
            .code(),
        "challenge_already_answered"
    );

    // Sixteen seconds of searching after the round trip, past the
    // deadline: it proves the speed that time shows.
    chain.wait_until(&second, 2_000 + 16_000);
    let events = chain
        .answer_gpu(1, epoch, gpu_solutions(&second))
        .expect("answers");
    let proven = gpu_challenge_fuel(second.target) * 1_000 / 16_000;
    assert_eq!(
        gpu_settled(&events),
        vec![(chain.id(1), ChallengeResult::Late, proven)]
    );
    let record = chain.ledger.gpu_capacity(&chain.id(1)).expect("read");
    assert_eq!((record.late, record.usable_fuel_per_second()), (1, proven));

    // The CPU record is untouched, and both proved speeds are paid for
    // availability at the epoch's end.
    assert_eq!(chain.capacity(0), Capacity::default());
    let events = chain.run_to_epoch_end();
    let rewarded: Vec<AccountId> = events
        .iter()
        .filter_map(|event| match event {
            Event::AvailabilityRewarded { provider, .. } => Some(*provider),
            _ => None,
        })
        .collect();
    assert_eq!(rewarded, {
        let mut both = vec![chain.id(0), chain.id(1)];
        both.sort();
        both
    });
}

#[test]
fn a_wrong_gpu_answer_is_slashed_and_a_silent_one_is_missed() {
    let mut chain = Chain::new(3);
    chain.staked_with_gpu(0, GPU_DECLARED);
    chain.staked_with_gpu(1, GPU_DECLARED);
    chain.run_to_epoch_end();
    let (epoch, challenge) = chain.open_gpu(0);
    let right = gpu_solutions(&challenge);
    let failing = (0..)
        .find(|nonce| gpu_challenge_score(&challenge.seed, *nonce) >= challenge.target)
        .expect("most nonces fail");
    let mut repeated = right.clone();
    repeated[1] = repeated[0];
    let mut wrong = right.clone();
    wrong[7] = failing;
    // One short, a repeat, or one that does not score: each is wrong.
    for (who, nonces) in [(0, wrong), (1, repeated)] {
        let supply = chain.ledger.supply().expect("supply");
        let before = chain.provider_stake(who);
        let events = chain.answer_gpu(who, epoch, nonces).expect("taken");
        assert_eq!(
            gpu_settled(&events),
            vec![(chain.id(who), ChallengeResult::Wrong, 0)]
        );
        let cut = before - chain.provider_stake(who);
        assert_eq!(cut, before / 2, "the slash fraction");
        let after = chain.ledger.supply().expect("supply");
        assert_eq!(after.burned - supply.burned, cut, "burned, not paid");
        assert_eq!(
            chain.ledger.tokens_in_existence().expect("scan"),
            after.expected_total()
        );
    }
    assert_eq!(
        chain
            .answer_gpu(0, epoch, right[1..].to_vec())
            .unwrap_err()
            .code(),
        "challenge_already_answered"
    );
    // The next epoch: nobody answers, and the close counts it missed.
    chain.run_to_epoch_end();
    let (next, _) = chain.open_gpu(0);
    assert_eq!(next, epoch + 1);
    let events = chain.run_to_epoch_end();
    let missed = gpu_settled(&events);
    assert_eq!(missed.len(), 2, "{events:?}");
    assert!(
        missed
            .iter()
            .all(|(_, result, _)| *result == ChallengeResult::Missed)
    );
    let record = chain.ledger.gpu_capacity(&chain.id(0)).expect("read");
    assert_eq!((record.wrong, record.missed, record.passed), (1, 1, 0));
    assert_eq!(record.usable_fuel_per_second(), 0);
}

#[test]
fn gpu_transactions_that_do_not_fit_are_refused_with_a_reason() {
    let mut chain = Chain::new(2);
    assert_eq!(
        chain
            .submit(0, TxKind::DeclareGpuCapacity { fuel_per_second: 5 })
            .unwrap_err()
            .code(),
        "not_a_provider"
    );
    chain.staked_with_gpu(0, GPU_DECLARED);
    assert_eq!(
        chain
            .submit(0, TxKind::DeclareGpuCapacity { fuel_per_second: 0 })
            .unwrap_err()
            .code(),
        "capacity_out_of_range"
    );
    assert_eq!(
        chain.answer_gpu(0, 1, vec![1, 2, 3]).unwrap_err().code(),
        "no_challenge"
    );
}

/// Decides challenges by a stand-in for the module (the protocol is what
/// the property below exercises, not the sandbox): an answer is right when
/// it equals this.
struct Oracle;

impl ReExecute for Oracle {
    fn re_execute(
        &self,
        _module: &[u8],
        _input: &idlegrid_types::TaskInput,
        _seed: [u8; 32],
        _limits: &idlegrid_types::ExecutionLimits,
    ) -> Result<idlegrid_types::Execution, String> {
        Err("no tasks here".to_owned())
    }

    fn run_challenge(&self, seed: [u8; 32], passes: u32) -> Result<ContentId, String> {
        Ok(oracle_output(seed, passes))
    }
}

fn oracle_output(seed: [u8; 32], passes: u32) -> ContentId {
    ContentId::of(&[&seed[..], &passes.to_le_bytes()].concat())
}

/// One provider's move in a random play: answer right or wrong, reveal,
/// its next honest step (answer right, then reveal), or nothing, after
/// some time.
#[derive(Debug, Clone, Copy)]
enum Move {
    AnswerRight,
    AnswerWrong,
    Reveal,
    Next,
    Wait,
    GpuRight,
    GpuWrong,
}

fn moves() -> impl Strategy<Value = Vec<(usize, Move, u64)>> {
    proptest::collection::vec(
        (
            0..4usize,
            prop_oneof![
                1 => Just(Move::AnswerRight),
                1 => Just(Move::AnswerWrong),
                1 => Just(Move::Reveal),
                5 => Just(Move::Next),
                1 => Just(Move::Wait),
                2 => Just(Move::GpuRight),
                1 => Just(Move::GpuWrong),
            ],
            0u64..8_000,
        ),
        1..120,
    )
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 64,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    /// Whatever four providers do with their challenges (CPU and GPU), and whenever:
    /// tokens are conserved (only emission mints, only slashes burn), no
    /// block fails, each challenge is settled at most once, and each
    /// provider's counters are exactly its settlements.
    #[test]
    fn random_challenge_play_keeps_the_books_and_settles_each_challenge_once(
        speeds in proptest::collection::vec(10_000_000u64..1_000_000_000, 4),
        gpu_speeds in proptest::collection::vec(100u64..2_000, 4),
        plan in moves(),
    ) {
        const PLAY_EPOCH: u64 = 12;
        let keys: Vec<Keypair> = (1..=5u8).map(|seed| Keypair::from_seed([seed; 32])).collect();
        let genesis = Genesis {
            chain_id: CHAIN.to_owned(),
            params: Params {
                epoch_length_blocks: PLAY_EPOCH,
                challenge_passes: 0,
                challenge_share_bps: 7_500,
                ..Params::default()
            },
            balances: keys.iter().map(|key| (key.account_id(), 1_000_000)).collect(),
            validators: vec![(keys[4].account_id(), 1_000_000)],
        };
        let mut ledger = Ledger::init(MemoryStore::default(), &genesis).expect("genesis");
        let mut time_ms = T0;
        let mut settled_once = std::collections::BTreeSet::new();
        let mut settlements = [0u32; 4];
        let mut gpu_settlements = [0u32; 4];
        let mut committed: std::collections::BTreeMap<(usize, u64), ContentId> = Default::default();
        let apply = |ledger: &mut Ledger<MemoryStore>,
                         time_ms: u64,
                         txs: Vec<(usize, TxKind)>|
         -> Result<Vec<Event>, TestCaseError> {
            let signed: Vec<_> = txs
                .into_iter()
                .map(|(who, kind)| {
                    let nonce = ledger.account(&keys[who].account_id()).expect("account").nonce;
                    keys[who].sign(Transaction::new(CHAIN, nonce, 1, kind).expect("tx"))
                })
                .collect();
            let outcome = ledger
                .apply_block(ledger.height() + 1, time_ms, &signed, &Oracle)
                .map_err(|error| TestCaseError::fail(format!("the block failed: {error}")))?;
            let mut events = outcome.block_events.clone();
            for result in outcome.transactions {
                events.extend(result.outcome.unwrap_or_default());
            }
            prop_assert_eq!(
                ledger.tokens_in_existence().expect("scan"),
                ledger.supply().expect("supply").expected_total()
            );
            Ok(events)
        };
        for (who, speed) in speeds.iter().enumerate() {
            time_ms += 100;
            apply(&mut ledger, time_ms, vec![(who, TxKind::Stake { role: StakeRole::Provider, amount: STAKE })])?;
            time_ms += 100;
            apply(&mut ledger, time_ms, vec![(who, TxKind::DeclareCapacity { fuel_per_second: *speed })])?;
            time_ms += 100;
            let gpu = TxKind::DeclareGpuCapacity { fuel_per_second: gpu_speeds[who] };
            apply(&mut ledger, time_ms, vec![(who, gpu)])?;
        }
        for (who, play, wait_ms) in plan {
            time_ms += wait_ms;
            let id = keys[who].account_id();
            let open = ledger.challenges(&id).expect("challenges").pop();
            let play = match (play, &open) {
                (Move::Next, Some((epoch, _))) if committed.contains_key(&(who, *epoch)) => Move::Reveal,
                (Move::Next, _) => Move::AnswerRight,
                (play, _) => play,
            };
            let open_gpu = ledger.gpu_challenges(&id).expect("GPU challenges").pop();
            let tx = match (play, open) {
                (Move::GpuRight | Move::GpuWrong, _) => match open_gpu {
                    Some((epoch, challenge)) => {
                        let mut nonces = gpu_solutions(&challenge);
                        if matches!(play, Move::GpuWrong) {
                            nonces.pop();
                        }
                        let nonces = Bounded::new(nonces).expect("within the bound");
                        vec![(who, TxKind::AnswerGpuChallenge { epoch, nonces })]
                    }
                    None => Vec::new(),
                },
                (Move::AnswerRight | Move::AnswerWrong, Some((epoch, challenge))) => {
                    let output = match play {
                        Move::AnswerRight => oracle_output(challenge.seed, challenge.passes),
                        _ => ContentId::of(&epoch.to_le_bytes()),
                    };
                    committed.insert((who, epoch), output);
                    vec![(who, TxKind::AnswerChallenge { epoch, commitment: answer_commitment(&output, &id) })]
                }
                (Move::Reveal, Some((epoch, _))) => match committed.get(&(who, epoch)) {
                    Some(output) => vec![(who, TxKind::RevealChallenge { epoch, output: *output })],
                    None => Vec::new(),
                },
                _ => Vec::new(),
            };
            // Refused moves (too early, already answered…) are part of the
            // play: they must leave the books alone.
            let events = apply(&mut ledger, time_ms, tx)?;
            for event in events {
                if let Event::ChallengeSettled { provider, epoch, result, .. } = event {
                    let index = keys.iter().position(|key| key.account_id() == provider).expect("a provider");
                    // An unverified late answer closes as `Late` once, at
                    // most: any settlement is once per challenge.
                    prop_assert!(settled_once.insert((index, epoch)), "{:?} settled twice in epoch {}", result, epoch);
                    settlements[index] += 1;
                }
                if let Event::GpuChallengeSettled { provider, epoch, result, .. } = event {
                    let index = keys.iter().position(|key| key.account_id() == provider).expect("a provider");
                    prop_assert!(settled_once.insert((index + 4, epoch)), "GPU {:?} settled twice in epoch {}", result, epoch);
                    gpu_settlements[index] += 1;
                }
            }
        }
        for (index, key) in keys.iter().take(4).enumerate() {
            let record = ledger.capacity(&key.account_id()).expect("capacity");
            prop_assert_eq!(record.passed + record.late + record.missed + record.wrong, settlements[index]);
            prop_assert!(record.usable_fuel_per_second() <= speeds[index]);
            let gpu = ledger.gpu_capacity(&key.account_id()).expect("GPU capacity");
            prop_assert_eq!(gpu.passed + gpu.late + gpu.missed + gpu.wrong, gpu_settlements[index]);
            prop_assert!(gpu.usable_fuel_per_second() <= gpu_speeds[index]);
        }
    }
}
