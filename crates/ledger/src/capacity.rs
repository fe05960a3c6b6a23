//! Proven capacity: providers declare the speed they offer, each epoch's
//! last block challenges a share of them with the memory-hard challenge
//! module, and the answers' timing (by block time) proves the speed the
//! market may use. Answers are checked by pairing: two providers get the
//! same seed, commit to their answers, then reveal them; agreeing answers
//! stand, and only a disagreement (or a provider without a partner) is
//! re-executed by the validators. A wrong answer is slashed.
//!
//! GPUs are challenged the same way with a different puzzle: a proof of
//! work on the GPU challenge kernel, each provider on a seed of its own,
//! answered in one transaction and checked at once (a small hash per
//! nonce), with the target set by the GPU speed the provider declared.
//! `docs/challenges.md` has the protocol and its cost.

use borsh::{BorshDeserialize, BorshSerialize};
use idlegrid_types::capacity::{
    CHALLENGE_PASSES_MAX, ChallengeRules, ChallengeVerdict, answer_commitment, challenge_fuel,
    gpu_answer_is_right, gpu_challenge_fuel, gpu_challenge_target,
};
use idlegrid_types::{AccountId, ContentId};

use crate::apply::{Applied, BlockScope, Failure, burn, stake, take_stake};
use crate::genesis::Params;
use crate::state::{Overlay, decode_record, keys};
use crate::store::{Store, StoreError};
use crate::tx::{Event, Rejection, StakeRole};

/// The highest speed a provider may declare (fuel per second): far above
/// any machine, low enough that no deadline arithmetic overflows.
pub const DECLARED_FUEL_PER_SECOND_MAX: u64 = 10_000_000_000_000;

/// What the chain knows of a provider's capacity.
#[derive(Debug, Clone, Default, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub struct Capacity {
    /// The speed the provider says it has, in fuel per second on the
    /// challenge module.
    pub declared_fuel_per_second: u64,
    /// The speed its latest checked answer proved (`None` before one).
    pub proven_fuel_per_second: Option<u64>,
    /// Answers in time for the declared speed, and checked right.
    pub passed: u32,
    /// Answers checked right but too late for the declared speed.
    pub late: u32,
    /// Challenges not answered (or answered and never revealed).
    pub missed: u32,
    /// Answers shown wrong (each slashed).
    pub wrong: u32,
}

impl Capacity {
    /// The speed the market may count on: the proven one where there is
    /// one, never above the declared one.
    pub fn usable_fuel_per_second(&self) -> u64 {
        self.proven_fuel_per_second
            .map_or(self.declared_fuel_per_second, |proven| {
                proven.min(self.declared_fuel_per_second)
            })
    }
}

/// One provider's challenge of one epoch.
#[derive(Debug, Clone, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub struct Challenge {
    pub seed: [u8; 32],
    pub passes: u32,
    /// The time of the block that issued it.
    pub issued_ms: u64,
    /// The speed the provider declared when it was issued.
    pub offered_fuel_per_second: u64,
    /// When an answer is due for the offered speed (block time).
    pub deadline_ms: u64,
    /// The provider given the same seed, whose answer must agree.
    pub partner: Option<AccountId>,
    /// `answer_commitment(output, provider)`, as answered.
    pub commitment: Option<[u8; 32]>,
    /// The time of the block that took the commitment.
    pub answered_ms: Option<u64>,
    /// The height of that block.
    pub answered_height: Option<u64>,
    /// The output's id, once revealed.
    pub revealed: Option<ContentId>,
    /// Checked (by agreement or re-execution) and counted.
    pub settled: bool,
}

/// How many times the deadline's time an answer is awaited.
pub const AWAITED_DEADLINES: u64 = 4;

impl Challenge {
    /// Until when an answer is still awaited: [`AWAITED_DEADLINES`] times
    /// the time the deadline gives. A late answer still proves a speed
    /// (what a provider offering up to about four times the speed it has
    /// has), so its partner waits that long before it may reveal without
    /// it, which would make the validators run the challenge.
    pub fn awaited_until_ms(&self) -> u64 {
        self.issued_ms.saturating_add(
            self.deadline_ms
                .saturating_sub(self.issued_ms)
                .saturating_mul(AWAITED_DEADLINES),
        )
    }
}

/// What became of a challenge.
#[derive(Debug, Clone, Copy, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub enum ChallengeResult {
    OnTime,
    Late,
    Wrong,
    Missed,
}

impl ChallengeResult {
    pub fn name(&self) -> &'static str {
        match self {
            ChallengeResult::OnTime => "on_time",
            ChallengeResult::Late => "late",
            ChallengeResult::Wrong => "wrong",
            ChallengeResult::Missed => "missed",
        }
    }
}

/// One provider's GPU challenge of one epoch: find
/// [`idlegrid_types::capacity::GPU_CHALLENGE_SOLUTIONS`] nonces scoring
/// below `target` on `seed`.
#[derive(Debug, Clone, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub struct GpuChallenge {
    pub seed: [u8; 32],
    pub target: u64,
    /// The time of the block that issued it.
    pub issued_ms: u64,
    /// The GPU speed the provider declared when it was issued.
    pub offered_fuel_per_second: u64,
    /// When an answer is due for the offered speed (block time).
    pub deadline_ms: u64,
    /// The time of the block that took the answer.
    pub answered_ms: Option<u64>,
    /// What the answer showed, once answered.
    pub result: Option<ChallengeResult>,
}

impl GpuChallenge {
    /// The search's expected fuel.
    pub fn fuel(&self) -> u64 {
        gpu_challenge_fuel(self.target)
    }
}

/// The rules of a chain's challenges, from its parameters.
pub fn rules(params: &Params) -> ChallengeRules {
    ChallengeRules {
        fuel: challenge_fuel(params.challenge_passes),
        slack_bps: params.challenge_slack_bps,
        round_trip_ms: params.challenge_round_trip_ms,
        share_bps: u32::from(params.challenge_share_bps),
    }
}

/// The rules of a GPU challenge of `target` on a chain.
pub fn gpu_rules(params: &Params, target: u64) -> ChallengeRules {
    ChallengeRules {
        fuel: gpu_challenge_fuel(target),
        ..rules(params)
    }
}

pub(crate) fn gpu_capacity<S: Store>(
    overlay: &Overlay<'_, S>,
    provider: &AccountId,
) -> Result<Capacity, StoreError> {
    Ok(overlay
        .get(&keys::gpu_capacity(provider))?
        .unwrap_or_default())
}

pub(crate) fn gpu_challenge<S: Store>(
    overlay: &Overlay<'_, S>,
    epoch: u64,
    provider: &AccountId,
) -> Result<Option<GpuChallenge>, StoreError> {
    overlay.get(&keys::gpu_challenge(epoch, provider))
}

pub(crate) fn capacity<S: Store>(
    overlay: &Overlay<'_, S>,
    provider: &AccountId,
) -> Result<Capacity, StoreError> {
    Ok(overlay.get(&keys::capacity(provider))?.unwrap_or_default())
}

pub(crate) fn challenge<S: Store>(
    overlay: &Overlay<'_, S>,
    epoch: u64,
    provider: &AccountId,
) -> Result<Option<Challenge>, StoreError> {
    overlay.get(&keys::challenge(epoch, provider))
}

/// `DeclareCapacity`: a staked provider states its speed.
pub(crate) fn declare<S: Store>(
    overlay: &mut Overlay<'_, S>,
    provider: AccountId,
    fuel_per_second: u64,
) -> Applied {
    check_declared(overlay, &provider, fuel_per_second)?;
    let mut record = capacity(overlay, &provider)?;
    record.declared_fuel_per_second = fuel_per_second;
    overlay.put(keys::capacity(&provider), &record);
    Ok(vec![Event::CapacityDeclared {
        provider,
        fuel_per_second,
    }])
}

/// `DeclareGpuCapacity`: a staked provider states its GPU's speed.
pub(crate) fn declare_gpu<S: Store>(
    overlay: &mut Overlay<'_, S>,
    provider: AccountId,
    fuel_per_second: u64,
) -> Applied {
    check_declared(overlay, &provider, fuel_per_second)?;
    let mut record = gpu_capacity(overlay, &provider)?;
    record.declared_fuel_per_second = fuel_per_second;
    overlay.put(keys::gpu_capacity(&provider), &record);
    Ok(vec![Event::GpuCapacityDeclared {
        provider,
        fuel_per_second,
    }])
}

/// Only a staked provider declares, and only a speed in range.
fn check_declared<S: Store>(
    overlay: &Overlay<'_, S>,
    provider: &AccountId,
    fuel_per_second: u64,
) -> Result<(), Failure> {
    if stake(overlay, StakeRole::Provider, provider)?.bonded == 0 {
        return Err(Rejection::NotAProvider(*provider).into());
    }
    if fuel_per_second == 0 || fuel_per_second > DECLARED_FUEL_PER_SECOND_MAX {
        return Err(Rejection::CapacityOutOfRange {
            found: fuel_per_second,
            maximum: DECLARED_FUEL_PER_SECOND_MAX,
        }
        .into());
    }
    Ok(())
}

/// `AnswerChallenge`: the provider commits to its answer; the block's
/// time is when it answered.
pub(crate) fn answer<S: Store>(
    overlay: &mut Overlay<'_, S>,
    scope: &BlockScope<'_>,
    provider: AccountId,
    epoch: u64,
    commitment: [u8; 32],
) -> Applied {
    let mut record =
        challenge(overlay, epoch, &provider)?.ok_or(Rejection::NoChallenge { epoch })?;
    if record.commitment.is_some() {
        return Err(Rejection::ChallengeAlreadyAnswered { epoch }.into());
    }
    // Once the partner's answer is out, this one could be a copy of it.
    if let Some(partner) = record.partner
        && challenge(overlay, epoch, &partner)?.is_some_and(|theirs| theirs.revealed.is_some())
    {
        return Err(Rejection::ChallengeAnswerExposed { epoch }.into());
    }
    record.commitment = Some(commitment);
    record.answered_ms = Some(scope.time_ms);
    record.answered_height = Some(scope.height);
    overlay.put(keys::challenge(epoch, &provider), &record);
    Ok(vec![Event::ChallengeAnswered {
        provider,
        epoch,
        after_ms: scope.time_ms.saturating_sub(record.issued_ms),
    }])
}

/// `RevealChallenge`: the provider shows the output it committed to, once
/// its partner can no longer copy it (the partner committed, or it is no
/// longer awaited: [`Challenge::awaited_until_ms`]). Agreeing answers are settled together; a
/// disagreement, or an answer with no partner to agree with, is
/// re-executed.
pub(crate) fn reveal<S: Store>(
    overlay: &mut Overlay<'_, S>,
    scope: &BlockScope<'_>,
    provider: AccountId,
    epoch: u64,
    output: ContentId,
) -> Applied {
    let mut mine = challenge(overlay, epoch, &provider)?.ok_or(Rejection::NoChallenge { epoch })?;
    let Some(commitment) = mine.commitment else {
        return Err(Rejection::ChallengeNotAnswered { epoch }.into());
    };
    if mine.revealed.is_some() {
        return Err(Rejection::ChallengeAlreadyRevealed { epoch }.into());
    }
    if answer_commitment(&output, &provider) != commitment {
        return Err(Rejection::RevealMismatch { epoch }.into());
    }
    let partner = match mine.partner {
        Some(partner) => {
            let theirs = challenge(overlay, epoch, &partner)?.ok_or_else(|| {
                Failure::Invariant("a challenge's partner has no challenge".to_owned())
            })?;
            if theirs.commitment.is_none() && scope.time_ms <= theirs.awaited_until_ms() {
                return Err(Rejection::RevealTooEarly {
                    epoch,
                    until_ms: theirs.awaited_until_ms(),
                }
                .into());
            }
            Some((partner, theirs))
        }
        None => None,
    };
    mine.revealed = Some(output);
    let mut events = Vec::new();
    match partner {
        // Both revealed: agreement settles both (unless spot checked); a
        // disagreement is decided by running the challenge.
        Some((partner, mut theirs)) if theirs.revealed.is_some() => {
            let truth = if theirs.revealed == Some(output)
                && !spot_checked(overlay, scope, epoch, &mine, &theirs)?
            {
                output
            } else {
                run(scope, &mine)?
            };
            for (account, record) in [(provider, &mut mine), (partner, &mut theirs)] {
                let right = record.revealed == Some(truth);
                events.extend(settle(overlay, scope, account, epoch, record, right)?);
            }
            overlay.put(keys::challenge(epoch, &partner), &theirs);
        }
        // The partner committed but has not revealed: it settles both
        // when it does.
        Some((_, theirs)) if theirs.commitment.is_some() => {}
        // Nobody to agree with: the validators check it.
        _ => {
            let right = run(scope, &mine)? == output;
            events.extend(settle(overlay, scope, provider, epoch, &mut mine, right)?);
        }
    }
    overlay.put(keys::challenge(epoch, &provider), &mine);
    events.insert(0, Event::ChallengeRevealed { provider, epoch });
    Ok(events)
}

/// Whether an agreeing pair is checked anyway: its share
/// (`challenge_spot_check_bps`) of pairs, drawn from the state root after
/// the block of the later of the two commitments. Neither provider knew
/// that root when it committed, so a colluding pair cannot choose to
/// agree only where no check falls.
fn spot_checked<S: Store>(
    overlay: &Overlay<'_, S>,
    scope: &BlockScope<'_>,
    epoch: u64,
    mine: &Challenge,
    theirs: &Challenge,
) -> Result<bool, Failure> {
    let share = scope.params.challenge_spot_check_bps;
    if share == 0 {
        return Ok(false);
    }
    let Some(height) = mine.answered_height.max(theirs.answered_height) else {
        return Err(Failure::Invariant(
            "an agreeing pair's answers have no height".to_owned(),
        ));
    };
    // The root after the later answer's block is the draw: a reveal in
    // that very block would settle before the root exists.
    if height >= scope.height {
        return Err(Rejection::RevealWithAnswer { epoch }.into());
    }
    let root = overlay.get_raw(&keys::root_at(height))?.ok_or_else(|| {
        Failure::Invariant(format!("no state root is recorded for height {height}"))
    })?;
    let mut hasher = blake3::Hasher::new();
    hasher.update(b"idlegrid challenge spot check v1");
    hasher.update(&root);
    hasher.update(&mine.seed);
    let draw = u64::from_le_bytes(
        hasher.finalize().as_bytes()[..8]
            .try_into()
            .expect("eight bytes"),
    );
    Ok(u128::from(draw) * 10_000 < u128::from(share) << 64)
}

/// The challenge's output, run by the block's executor.
fn run(scope: &BlockScope<'_>, record: &Challenge) -> Result<ContentId, Failure> {
    scope
        .executor
        .run_challenge(record.seed, record.passes)
        .map_err(|error| Rejection::ReExecutionFailed(error).into())
}

/// Counts a checked answer: its timing proves a speed if it is right; a
/// wrong one is slashed.
fn settle<S: Store>(
    overlay: &mut Overlay<'_, S>,
    scope: &BlockScope<'_>,
    provider: AccountId,
    epoch: u64,
    record: &mut Challenge,
    right: bool,
) -> Result<Vec<Event>, Failure> {
    record.settled = true;
    let mut capacity = capacity(overlay, &provider)?;
    let after_ms = record
        .answered_ms
        .unwrap_or(record.issued_ms)
        .saturating_sub(record.issued_ms);
    let offered = record.offered_fuel_per_second;
    let verdict = right.then(|| rules(scope.params).judge(offered, Some(after_ms)));
    let (result, mut events) = count(
        overlay,
        scope.params,
        provider,
        &mut capacity,
        offered,
        verdict,
    )?;
    overlay.put(keys::capacity(&provider), &capacity);
    events.insert(
        0,
        Event::ChallengeSettled {
            provider,
            epoch,
            result,
            proven_fuel_per_second: capacity.proven_fuel_per_second.unwrap_or(0),
        },
    );
    Ok(events)
}

/// Counts one checked answer on a provider's (CPU or GPU) `capacity`
/// record, as `verdict` judged its timing (`None`: it was wrong): a right
/// one proves the offered speed if in time and what its timing shows if
/// late, and adds that to the provider's availability this epoch; a wrong
/// one proves nothing and is slashed (the slash's event is returned).
fn count<S: Store>(
    overlay: &mut Overlay<'_, S>,
    params: &Params,
    provider: AccountId,
    capacity: &mut Capacity,
    offered_fuel_per_second: u64,
    verdict: Option<ChallengeVerdict>,
) -> Result<(ChallengeResult, Vec<Event>), Failure> {
    let Some(verdict) = verdict else {
        capacity.wrong = capacity.wrong.saturating_add(1);
        capacity.proven_fuel_per_second = Some(0);
        let slashed = slash(overlay, params, provider)?;
        return Ok((ChallengeResult::Wrong, vec![slashed]));
    };
    let result = match verdict {
        ChallengeVerdict::Late {
            proven_fuel_per_second,
        } => {
            capacity.late = capacity.late.saturating_add(1);
            capacity.proven_fuel_per_second = Some(proven_fuel_per_second);
            ChallengeResult::Late
        }
        ChallengeVerdict::OnTime | ChallengeVerdict::Missed => {
            capacity.passed = capacity.passed.saturating_add(1);
            capacity.proven_fuel_per_second = Some(offered_fuel_per_second);
            ChallengeResult::OnTime
        }
    };
    // Available this epoch at the speed it proved: its share of the
    // epoch's availability reward (a GPU's proven speed adds to its
    // CPU's: both are fuel a second the market sells).
    let proven = capacity.proven_fuel_per_second.unwrap_or(0);
    let so_far: u64 = overlay.get(&keys::available(&provider))?.unwrap_or(0);
    overlay.put(keys::available(&provider), &so_far.saturating_add(proven));
    Ok((result, Vec::new()))
}

/// `AnswerGpuChallenge`: the provider's nonces, checked now. The block's
/// time is when it answered.
pub(crate) fn answer_gpu<S: Store>(
    overlay: &mut Overlay<'_, S>,
    scope: &BlockScope<'_>,
    provider: AccountId,
    epoch: u64,
    nonces: &[u64],
) -> Applied {
    let mut record =
        gpu_challenge(overlay, epoch, &provider)?.ok_or(Rejection::NoChallenge { epoch })?;
    if record.answered_ms.is_some() {
        return Err(Rejection::ChallengeAlreadyAnswered { epoch }.into());
    }
    let right = gpu_answer_is_right(&record.seed, record.target, nonces);
    let after_ms = scope.time_ms.saturating_sub(record.issued_ms);
    let mut capacity = gpu_capacity(overlay, &provider)?;
    let offered = record.offered_fuel_per_second;
    let verdict =
        right.then(|| gpu_rules(scope.params, record.target).judge(offered, Some(after_ms)));
    let (result, mut events) = count(
        overlay,
        scope.params,
        provider,
        &mut capacity,
        offered,
        verdict,
    )?;
    record.answered_ms = Some(scope.time_ms);
    record.result = Some(result);
    overlay.put(keys::gpu_capacity(&provider), &capacity);
    overlay.put(keys::gpu_challenge(epoch, &provider), &record);
    events.insert(
        0,
        Event::GpuChallengeSettled {
            provider,
            epoch,
            result,
            after_ms: Some(after_ms),
            proven_fuel_per_second: capacity.proven_fuel_per_second.unwrap_or(0),
        },
    );
    Ok(events)
}

/// Takes the slash fraction of a provider's stake for a wrong answer; all
/// of it is burned (nobody reported it: the chain found it).
fn slash<S: Store>(
    overlay: &mut Overlay<'_, S>,
    params: &Params,
    provider: AccountId,
) -> Result<Event, Failure> {
    let amount = take_stake(
        overlay,
        StakeRole::Provider,
        &provider,
        params.slash_fraction_bps,
    )?;
    burn(overlay, amount)?;
    Ok(Event::Slashed {
        provider,
        amount,
        burned: amount,
        to_reporter: 0,
    })
}

/// At an epoch's last block: closes the challenges issued a full epoch
/// earlier (unanswered or unrevealed ones count as missed), then issues
/// the next epoch's, drawn from `randomness`, at the block's time.
pub(crate) fn epoch_challenges<S: Store>(
    overlay: &mut Overlay<'_, S>,
    scope: &BlockScope<'_>,
    epoch: u64,
    randomness: &[u8; 32],
) -> Result<Vec<Event>, Failure> {
    let params = scope.params;
    let mut events = close(overlay, params, epoch.saturating_sub(1))?;
    events.extend(close_gpu(overlay, epoch.saturating_sub(1))?);
    if params.challenge_share_bps == 0 {
        return Ok(events);
    }
    events.extend(issue_gpu(overlay, scope, epoch, randomness)?);
    let rules = rules(params);
    let mut drawn = Vec::new();
    for (key, value) in overlay.scan_prefix(&[keys::CAPACITY])? {
        let Some(provider) = keys::trailing_account(&key) else {
            continue;
        };
        let record: Capacity = decode_record(&value)?;
        if record.declared_fuel_per_second == 0
            || stake(overlay, StakeRole::Provider, &provider)?.bonded == 0
            || !rules.challenged(randomness, &provider)
        {
            continue;
        }
        drawn.push((order(randomness, &provider), provider, record));
    }
    // Partners by a shuffled order nobody chooses: consecutive pairs.
    drawn.sort_by_key(|entry| entry.0);
    for pair in drawn.chunks(2) {
        let accounts: Vec<AccountId> = pair.iter().map(|(_, account, _)| *account).collect();
        let seed = seed(randomness, epoch, &accounts);
        for (index, (_, provider, record)) in pair.iter().enumerate() {
            let partner = (pair.len() == 2).then(|| accounts[1 - index]);
            let offered = record.declared_fuel_per_second;
            let issued = Challenge {
                seed,
                passes: params.challenge_passes.min(CHALLENGE_PASSES_MAX),
                issued_ms: scope.time_ms,
                offered_fuel_per_second: offered,
                deadline_ms: scope.time_ms.saturating_add(rules.deadline_ms(offered)),
                partner,
                commitment: None,
                answered_ms: None,
                answered_height: None,
                revealed: None,
                settled: false,
            };
            overlay.put(keys::challenge(epoch, provider), &issued);
            events.push(Event::ChallengeIssued {
                provider: *provider,
                epoch,
                deadline_ms: issued.deadline_ms,
            });
        }
    }
    Ok(events)
}

/// Deletes an epoch's challenges. Unanswered and unrevealed ones count as
/// missed. One revealed whose partner never revealed was never checked:
/// its timing may lower the proven speed (a late answer shows no more
/// than it claims), never raise it.
fn close<S: Store>(
    overlay: &mut Overlay<'_, S>,
    params: &Params,
    epoch: u64,
) -> Result<Vec<Event>, Failure> {
    let mut events = Vec::new();
    for (key, value) in overlay.scan_prefix(&keys::challenges_of(epoch))? {
        let Some(provider) = keys::trailing_account(&key) else {
            continue;
        };
        let record: Challenge = decode_record(&value)?;
        overlay.delete(key);
        if record.settled {
            continue;
        }
        let mut capacity = capacity(overlay, &provider)?;
        let result = match (record.revealed, record.answered_ms) {
            (Some(_), Some(answered_ms)) => {
                let after_ms = answered_ms.saturating_sub(record.issued_ms);
                match rules(params).judge(record.offered_fuel_per_second, Some(after_ms)) {
                    ChallengeVerdict::Late {
                        proven_fuel_per_second,
                    } => {
                        capacity.late = capacity.late.saturating_add(1);
                        capacity.proven_fuel_per_second = Some(
                            capacity
                                .proven_fuel_per_second
                                .map_or(proven_fuel_per_second, |proven| {
                                    proven.min(proven_fuel_per_second)
                                }),
                        );
                        ChallengeResult::Late
                    }
                    ChallengeVerdict::OnTime | ChallengeVerdict::Missed => continue,
                }
            }
            _ => {
                capacity.missed = capacity.missed.saturating_add(1);
                ChallengeResult::Missed
            }
        };
        overlay.put(keys::capacity(&provider), &capacity);
        events.push(Event::ChallengeSettled {
            provider,
            epoch,
            result,
            proven_fuel_per_second: capacity.proven_fuel_per_second.unwrap_or(0),
        });
    }
    Ok(events)
}

/// Issues an epoch's GPU challenges: its share of the providers that
/// declared a GPU speed (drawn apart from the CPU draw), each on a seed of
/// its own, so no answer can be copied and none needs a partner.
fn issue_gpu<S: Store>(
    overlay: &mut Overlay<'_, S>,
    scope: &BlockScope<'_>,
    epoch: u64,
    randomness: &[u8; 32],
) -> Result<Vec<Event>, Failure> {
    let params = scope.params;
    let randomness = gpu_randomness(randomness);
    let mut events = Vec::new();
    for (key, value) in overlay.scan_prefix(&[keys::GPU_CAPACITY])? {
        let Some(provider) = keys::trailing_account(&key) else {
            continue;
        };
        let record: Capacity = decode_record(&value)?;
        let offered = record.declared_fuel_per_second;
        if offered == 0
            || stake(overlay, StakeRole::Provider, &provider)?.bonded == 0
            || !rules(params).challenged(&randomness, &provider)
        {
            continue;
        }
        let fuel = u128::from(offered) * u128::from(params.gpu_challenge_ms) / 1_000;
        let target = gpu_challenge_target(u64::try_from(fuel).unwrap_or(u64::MAX));
        let issued = GpuChallenge {
            seed: seed(&randomness, epoch, &[provider]),
            target,
            issued_ms: scope.time_ms,
            offered_fuel_per_second: offered,
            deadline_ms: scope
                .time_ms
                .saturating_add(gpu_rules(params, target).deadline_ms(offered)),
            answered_ms: None,
            result: None,
        };
        overlay.put(keys::gpu_challenge(epoch, &provider), &issued);
        events.push(Event::GpuChallengeIssued {
            provider,
            epoch,
            target,
            deadline_ms: issued.deadline_ms,
        });
    }
    Ok(events)
}

/// Deletes an epoch's GPU challenges; unanswered ones count as missed.
fn close_gpu<S: Store>(overlay: &mut Overlay<'_, S>, epoch: u64) -> Result<Vec<Event>, Failure> {
    let mut events = Vec::new();
    for (key, value) in overlay.scan_prefix(&keys::gpu_challenges_of(epoch))? {
        let Some(provider) = keys::trailing_account(&key) else {
            continue;
        };
        let record: GpuChallenge = decode_record(&value)?;
        overlay.delete(key);
        if record.result.is_some() {
            continue;
        }
        let mut capacity = gpu_capacity(overlay, &provider)?;
        capacity.missed = capacity.missed.saturating_add(1);
        overlay.put(keys::gpu_capacity(&provider), &capacity);
        events.push(Event::GpuChallengeSettled {
            provider,
            epoch,
            result: ChallengeResult::Missed,
            after_ms: None,
            proven_fuel_per_second: capacity.proven_fuel_per_second.unwrap_or(0),
        });
    }
    Ok(events)
}

/// The GPU draw's randomness: independent of the CPU draw's.
fn gpu_randomness(randomness: &[u8; 32]) -> [u8; 32] {
    let mut hasher = blake3::Hasher::new();
    hasher.update(b"idlegrid gpu challenge v1");
    hasher.update(randomness);
    *hasher.finalize().as_bytes()
}

/// A provider's place in an epoch's shuffled order.
fn order(randomness: &[u8; 32], provider: &AccountId) -> [u8; 32] {
    let mut hasher = blake3::Hasher::new();
    hasher.update(b"idlegrid challenge order v1");
    hasher.update(randomness);
    hasher.update(provider.as_bytes());
    *hasher.finalize().as_bytes()
}

/// The seed a pair (or a lone provider) shares in an epoch.
fn seed(randomness: &[u8; 32], epoch: u64, accounts: &[AccountId]) -> [u8; 32] {
    let mut hasher = blake3::Hasher::new();
    hasher.update(b"idlegrid challenge seed v1");
    hasher.update(randomness);
    hasher.update(&epoch.to_le_bytes());
    for account in accounts {
        hasher.update(account.as_bytes());
    }
    *hasher.finalize().as_bytes()
}
