//! What each transaction does, and what happens at block and epoch boundaries.

use idlegrid_types::{AccountId, ContentId, JobId, ReExecute, TaskInput, task_seed};

use crate::delegation;
use crate::genesis::Params;
use crate::state::{
    Account, Job, JobStatus, Overlay, ProviderRecord, Redemption, Stake, Supply, UNBONDINGS_MAX,
    Unbonding, keys,
};
use crate::store::{Store, StoreError};
use crate::tx::{
    Dispute, Event, Evidence, OpenJob, Rejection, SignedTransaction, StakeRole, TxKind,
};

/// A transaction either is refused (and changes nothing) or the storage
/// under it failed (and the block must not commit).
#[derive(Debug)]
pub(crate) enum Failure {
    Rejected(Rejection),
    Store(StoreError),
    /// A ledger invariant would break (an amount above total supply, a
    /// duplicate job id): a bug, never a user's mistake.
    Invariant(String),
}

impl From<Rejection> for Failure {
    fn from(rejection: Rejection) -> Self {
        Failure::Rejected(rejection)
    }
}

impl From<StoreError> for Failure {
    fn from(error: StoreError) -> Self {
        Failure::Store(error)
    }
}

pub(crate) type Applied = Result<Vec<Event>, Failure>;

pub(crate) const META_SUPPLY: &str = "supply";
pub(crate) const META_FEES: &str = "fees";
pub(crate) const META_HEIGHT: &str = "height";
/// The time stamped on the last block applied.
pub(crate) const META_TIME: &str = "time_ms";
pub(crate) const META_PARAMS: &str = "params";
pub(crate) const META_CHAIN: &str = "chain";

/// What every transaction in a block sees.
pub(crate) struct BlockScope<'a> {
    pub height: u64,
    /// The block's time, as its proposer stamped it (ms since the epoch).
    pub time_ms: u64,
    pub params: &'a Params,
    pub chain_id: &'a str,
    pub executor: &'a dyn ReExecute,
    pub signatures: Option<&'a idlegrid_types::SignatureCache>,
}

/// `amount × numerator / denominator`, rounded down; `numerator ≤
/// denominator` keeps the result at most `amount`.
pub(crate) fn ratio(amount: u64, numerator: u128, denominator: u128) -> u64 {
    if denominator == 0 {
        return 0;
    }
    let share = u128::from(amount) * numerator.min(denominator) / denominator;
    u64::try_from(share).expect("a share of a u64 fits a u64")
}

pub(crate) fn bps(amount: u64, basis_points: u16) -> u64 {
    ratio(amount, u128::from(basis_points), 10_000)
}

pub(crate) fn account<S: Store>(
    overlay: &Overlay<'_, S>,
    id: &AccountId,
) -> Result<Account, StoreError> {
    Ok(overlay.get(&keys::account(id))?.unwrap_or_default())
}

pub(crate) fn stake<S: Store>(
    overlay: &Overlay<'_, S>,
    role: StakeRole,
    id: &AccountId,
) -> Result<Stake, StoreError> {
    Ok(overlay.get(&keys::stake(role, id))?.unwrap_or_default())
}

pub(crate) fn supply<S: Store>(overlay: &Overlay<'_, S>) -> Result<Supply, StoreError> {
    Ok(overlay.get(&keys::meta(META_SUPPLY))?.unwrap_or_default())
}

fn fee_pool<S: Store>(overlay: &Overlay<'_, S>) -> Result<u64, StoreError> {
    Ok(overlay.get(&keys::meta(META_FEES))?.unwrap_or(0))
}

pub(crate) fn debit<S: Store>(
    overlay: &mut Overlay<'_, S>,
    id: &AccountId,
    amount: u64,
) -> Result<(), Failure> {
    let mut record = account(overlay, id)?;
    record.balance = record
        .balance
        .checked_sub(amount)
        .ok_or(Rejection::InsufficientBalance {
            needed: amount,
            available: record.balance,
        })?;
    overlay.put(keys::account(id), &record);
    Ok(())
}

pub(crate) fn credit<S: Store>(
    overlay: &mut Overlay<'_, S>,
    id: &AccountId,
    amount: u64,
) -> Result<(), Failure> {
    let mut record = account(overlay, id)?;
    record.balance = record
        .balance
        .checked_add(amount)
        .ok_or_else(|| Failure::Invariant(format!("a balance of {id} would overflow")))?;
    overlay.put(keys::account(id), &record);
    Ok(())
}

pub(crate) fn burn<S: Store>(overlay: &mut Overlay<'_, S>, amount: u64) -> Result<(), StoreError> {
    let mut totals = supply(overlay)?;
    totals.burned += amount;
    overlay.put(keys::meta(META_SUPPLY), &totals);
    Ok(())
}

fn job<S: Store>(overlay: &Overlay<'_, S>, id: &JobId) -> Result<Job, Failure> {
    overlay
        .get(&keys::job(id))?
        .ok_or(Failure::Rejected(Rejection::UnknownJob(*id)))
}

/// Applies one transaction to the overlay. On `Err` the caller rolls back.
pub(crate) fn transaction<S: Store>(
    overlay: &mut Overlay<'_, S>,
    scope: &BlockScope<'_>,
    signed: &SignedTransaction,
) -> Applied {
    let tx = match scope.signatures {
        Some(cache) => cache.verify(signed),
        None => signed.verify(),
    }
    .map_err(|_| Rejection::BadSignature)?;
    if tx.chain_id.as_str() != scope.chain_id {
        return Err(Rejection::WrongChain {
            expected: scope.chain_id.to_owned(),
            found: tx.chain_id.to_string(),
        }
        .into());
    }
    let sender = signed.signer;
    let mut record = account(overlay, &sender)?;
    if tx.nonce != record.nonce {
        return Err(Rejection::StaleNonce {
            expected: record.nonce,
            found: tx.nonce,
        }
        .into());
    }
    if tx.fee < scope.params.minimum_fee {
        return Err(Rejection::FeeTooLow {
            minimum: scope.params.minimum_fee,
            found: tx.fee,
        }
        .into());
    }
    record.balance = record
        .balance
        .checked_sub(tx.fee)
        .ok_or(Rejection::InsufficientBalance {
            needed: tx.fee,
            available: record.balance,
        })?;
    record.nonce += 1;
    overlay.put(keys::account(&sender), &record);
    let pool = fee_pool(overlay)? + tx.fee;
    overlay.put(keys::meta(META_FEES), &pool);

    let mut events = vec![Event::FeePaid {
        payer: sender,
        amount: tx.fee,
    }];
    events.extend(match &tx.kind {
        TxKind::Transfer { to, amount } => transfer(overlay, sender, *to, *amount)?,
        TxKind::Stake { role, amount } => add_stake(overlay, sender, *role, *amount)?,
        TxKind::Unstake { role, amount } => unstake(overlay, scope, sender, *role, *amount)?,
        TxKind::OpenJob(terms) => open_job(overlay, scope, sender, tx.nonce, terms)?,
        TxKind::TopUpJob { job, amount } => top_up(overlay, scope, sender, job, *amount)?,
        TxKind::Redeem { voucher } => redeem(overlay, scope, sender, voucher)?,
        TxKind::CloseJob { job } => close_job(overlay, scope, sender, job)?,
        TxKind::Dispute(dispute) => settle_dispute(overlay, scope, sender, dispute)?,
        TxKind::Delegate { validator, amount } => {
            delegation::delegate(overlay, sender, *validator, *amount)?
        }
        TxKind::Undelegate { validator, amount } => {
            delegation::undelegate(overlay, scope, sender, *validator, *amount)?
        }
        TxKind::ClaimRewards { validator } => {
            delegation::claim_rewards(overlay, sender, *validator)?
        }
        TxKind::SetCommission { commission_bps } => {
            delegation::set_commission(overlay, scope, sender, *commission_bps)?
        }
        TxKind::ReportFault { evidence } => report_fault(overlay, scope, sender, evidence)?,
        TxKind::DeclareCapacity { fuel_per_second } => {
            crate::capacity::declare(overlay, sender, *fuel_per_second)?
        }
        TxKind::AnswerChallenge { epoch, commitment } => {
            crate::capacity::answer(overlay, scope, sender, *epoch, *commitment)?
        }
        TxKind::RevealChallenge { epoch, output } => {
            crate::capacity::reveal(overlay, scope, sender, *epoch, *output)?
        }
        TxKind::DeclareGpuCapacity { fuel_per_second } => {
            crate::capacity::declare_gpu(overlay, sender, *fuel_per_second)?
        }
        TxKind::AnswerGpuChallenge { epoch, nonces } => {
            crate::capacity::answer_gpu(overlay, scope, sender, *epoch, nonces)?
        }
    });
    Ok(events)
}

pub(crate) fn nonzero(amount: u64) -> Result<(), Rejection> {
    if amount == 0 {
        return Err(Rejection::ZeroAmount);
    }
    Ok(())
}

fn transfer<S: Store>(
    overlay: &mut Overlay<'_, S>,
    from: AccountId,
    to: AccountId,
    amount: u64,
) -> Applied {
    nonzero(amount)?;
    debit(overlay, &from, amount)?;
    credit(overlay, &to, amount)?;
    Ok(vec![Event::Transferred { from, to, amount }])
}

fn add_stake<S: Store>(
    overlay: &mut Overlay<'_, S>,
    account: AccountId,
    role: StakeRole,
    amount: u64,
) -> Applied {
    nonzero(amount)?;
    debit(overlay, &account, amount)?;
    let mut record = stake(overlay, role, &account)?;
    record.bonded = record
        .bonded
        .checked_add(amount)
        .ok_or_else(|| Failure::Invariant("a stake would overflow".to_owned()))?;
    overlay.put(keys::stake(role, &account), &record);
    Ok(vec![Event::Staked {
        account,
        role,
        amount,
    }])
}

fn unstake<S: Store>(
    overlay: &mut Overlay<'_, S>,
    scope: &BlockScope<'_>,
    account: AccountId,
    role: StakeRole,
    amount: u64,
) -> Applied {
    nonzero(amount)?;
    let mut record = stake(overlay, role, &account)?;
    if record.bonded < amount {
        return Err(Rejection::InsufficientStake {
            role: role.as_str(),
            bonded: record.bonded,
            requested: amount,
        }
        .into());
    }
    if record.unbonding.len() >= UNBONDINGS_MAX {
        return Err(Rejection::TooManyUnbondings {
            limit: UNBONDINGS_MAX,
        }
        .into());
    }
    let release_height = scope.height + scope.params.unbonding_blocks.max(1);
    record.bonded -= amount;
    record.unbonding.push(Unbonding {
        release_height,
        amount,
    });
    overlay.put(keys::stake(role, &account), &record);
    let mut due: Vec<(AccountId, StakeRole)> = overlay
        .get(&keys::release(release_height))?
        .unwrap_or_default();
    if !due.contains(&(account, role)) {
        due.push((account, role));
    }
    overlay.put(keys::release(release_height), &due);
    Ok(vec![Event::UnbondingStarted {
        account,
        role,
        amount,
        release_height,
    }])
}

fn open_job<S: Store>(
    overlay: &mut Overlay<'_, S>,
    scope: &BlockScope<'_>,
    requestor: AccountId,
    nonce: u64,
    terms: &OpenJob,
) -> Applied {
    let id = JobId::derive(&requestor, nonce);
    if overlay.get_raw(&keys::job(&id))?.is_some() {
        // Ids derive from (requestor, nonce) and nonces never repeat.
        return Err(Failure::Invariant(format!("job id {id} already exists")));
    }
    nonzero(terms.escrow)?;
    if terms.price_per_million_fuel == 0 {
        return Err(Rejection::ZeroPrice.into());
    }
    if terms.deadline_height <= scope.height {
        return Err(Rejection::DeadlineInPast {
            deadline: terms.deadline_height,
            height: scope.height,
        }
        .into());
    }
    let limit = scope.params.job_deadline_blocks_max;
    if terms.deadline_height - scope.height > limit {
        return Err(Rejection::DeadlineTooFar {
            deadline: terms.deadline_height,
            limit,
        }
        .into());
    }
    if terms.limits.fuel > scope.params.dispute_fuel_max {
        return Err(Rejection::FuelLimitTooHigh {
            fuel: terms.limits.fuel,
            limit: scope.params.dispute_fuel_max,
        }
        .into());
    }
    debit(overlay, &requestor, terms.escrow)?;
    let record = Job {
        requestor,
        module: terms.module,
        spec: terms.spec,
        escrow: terms.escrow,
        price_per_million_fuel: terms.price_per_million_fuel,
        deadline_height: terms.deadline_height,
        limits: terms.limits,
        status: JobStatus::Open,
        redeemed_total: 0,
        agent: terms.agent,
    };
    overlay.put(keys::job(&id), &record);
    Ok(vec![Event::JobOpened {
        job: id,
        requestor,
        escrow: terms.escrow,
    }])
}

fn open_job_record<S: Store>(
    overlay: &Overlay<'_, S>,
    scope: &BlockScope<'_>,
    id: &JobId,
) -> Result<Job, Failure> {
    let record = job(overlay, id)?;
    if record.status == JobStatus::Closed {
        return Err(Rejection::JobClosed(*id).into());
    }
    if scope.height > record.deadline_height {
        return Err(Rejection::JobExpired {
            job: *id,
            deadline: record.deadline_height,
        }
        .into());
    }
    Ok(record)
}

fn top_up<S: Store>(
    overlay: &mut Overlay<'_, S>,
    scope: &BlockScope<'_>,
    sender: AccountId,
    id: &JobId,
    amount: u64,
) -> Applied {
    nonzero(amount)?;
    let mut record = open_job_record(overlay, scope, id)?;
    if record.requestor != sender {
        return Err(Rejection::NotRequestor.into());
    }
    debit(overlay, &sender, amount)?;
    record.escrow = record
        .escrow
        .checked_add(amount)
        .ok_or_else(|| Failure::Invariant("an escrow would overflow".to_owned()))?;
    overlay.put(keys::job(id), &record);
    Ok(vec![Event::JobToppedUp { job: *id, amount }])
}

fn redeem<S: Store>(
    overlay: &mut Overlay<'_, S>,
    scope: &BlockScope<'_>,
    provider: AccountId,
    voucher: &idlegrid_types::SignedVoucher,
) -> Applied {
    let terms = voucher
        .verify()
        .map_err(|_| Rejection::VoucherBadSignature)?;
    let id = terms.job;
    let mut record = open_job_record(overlay, scope, &id)?;
    if !record.is_run_by(&voucher.signer) {
        return Err(Rejection::VoucherNotFromRequestor.into());
    }
    if terms.provider != provider {
        return Err(Rejection::VoucherForAnotherProvider.into());
    }
    let key = keys::redemption(&id, &provider);
    let mut redeemed: Redemption = overlay.get(&key)?.unwrap_or_default();
    if terms.sequence <= redeemed.sequence {
        return Err(Rejection::VoucherNotNewer {
            last: redeemed.sequence,
            sequence: terms.sequence,
        }
        .into());
    }
    if terms.cumulative_amount < redeemed.amount {
        return Err(Rejection::VoucherBelowRedeemed {
            redeemed: redeemed.amount,
            cumulative: terms.cumulative_amount,
        }
        .into());
    }
    if terms.cumulative_fuel < redeemed.fuel {
        return Err(Rejection::VoucherFuelBelowRedeemed {
            redeemed: redeemed.fuel,
            cumulative: terms.cumulative_fuel,
        }
        .into());
    }
    // Fuel counts for epoch rewards, so a voucher may claim only as much
    // fuel as its payment buys at the job's price.
    let paid_for_fuel =
        u128::from(terms.cumulative_amount) * 1_000_000 / u128::from(record.price_per_million_fuel);
    if u128::from(terms.cumulative_fuel) > paid_for_fuel {
        return Err(Rejection::VoucherFuelExceedsPayment {
            fuel: terms.cumulative_fuel,
            amount: terms.cumulative_amount,
            price_per_million_fuel: record.price_per_million_fuel,
        }
        .into());
    }
    let owed = terms.cumulative_amount - redeemed.amount;
    if owed > record.escrow {
        return Err(Rejection::VoucherExceedsEscrow {
            owed,
            escrow: record.escrow,
        }
        .into());
    }
    let fuel = terms.cumulative_fuel - redeemed.fuel;
    let first_from_job = redeemed.sequence == 0;
    record.escrow -= owed;
    record.redeemed_total += owed;
    overlay.put(keys::job(&id), &record);
    redeemed = Redemption {
        amount: terms.cumulative_amount,
        fuel: terms.cumulative_fuel,
        sequence: terms.sequence,
    };
    overlay.put(key, &redeemed);
    credit(overlay, &provider, owed)?;
    let fuel_key = keys::epoch_fuel(&provider);
    let epoch_fuel: u64 = overlay.get(&fuel_key)?.unwrap_or(0);
    overlay.put(fuel_key, &epoch_fuel.saturating_add(fuel));
    let record_key = keys::provider_record(&provider);
    let mut track: ProviderRecord = overlay.get(&record_key)?.unwrap_or_default();
    track.fuel_paid = track.fuel_paid.saturating_add(fuel);
    track.amount_paid = track.amount_paid.saturating_add(owed);
    track.jobs_paid += u64::from(first_from_job);
    overlay.put(record_key, &track);
    Ok(vec![Event::Redeemed {
        job: id,
        provider,
        amount: owed,
        fuel,
    }])
}

fn close_job<S: Store>(
    overlay: &mut Overlay<'_, S>,
    scope: &BlockScope<'_>,
    sender: AccountId,
    id: &JobId,
) -> Applied {
    let mut record = job(overlay, id)?;
    if !record.is_run_by(&sender) {
        return Err(Rejection::NotRequestor.into());
    }
    if record.status == JobStatus::Closed {
        return Err(Rejection::JobClosed(*id).into());
    }
    if scope.height <= record.deadline_height {
        return Err(Rejection::DeadlineNotReached {
            job: *id,
            deadline: record.deadline_height,
        }
        .into());
    }
    let refund = record.escrow;
    record.escrow = 0;
    record.status = JobStatus::Closed;
    overlay.put(keys::job(id), &record);
    // The refund is the requestor's, whoever closes.
    credit(overlay, &record.requestor, refund)?;
    Ok(vec![Event::JobClosed { job: *id, refund }])
}

fn settle_dispute<S: Store>(
    overlay: &mut Overlay<'_, S>,
    scope: &BlockScope<'_>,
    reporter: AccountId,
    dispute: &Dispute,
) -> Applied {
    let deposit = scope.params.dispute_deposit;
    let available = account(overlay, &reporter)?.balance;
    if available < deposit {
        return Err(Rejection::InsufficientBalance {
            needed: deposit,
            available,
        }
        .into());
    }
    let receipts = dispute.evidence.receipts();
    let mut claims = Vec::with_capacity(receipts.len());
    for receipt in &receipts {
        claims.push(
            receipt
                .verify()
                .map_err(|_| Rejection::ReceiptBadSignature)?,
        );
    }
    let first = claims[0];
    if let Evidence::Conflicting(..) = dispute.evidence {
        let second = claims[1];
        let same_task = (first.job, first.task_index, first.module, first.input)
            == (second.job, second.task_index, second.module, second.input);
        if !same_task {
            return Err(Rejection::ReceiptsNotComparable.into());
        }
        if (first.outcome, first.fuel_used) == (second.outcome, second.fuel_used) {
            return Err(Rejection::ReceiptsAgree.into());
        }
    }
    let record = job(overlay, &first.job)?;
    if first.module != record.module {
        return Err(Rejection::ReceiptWrongModule {
            receipt: first.module,
            job: record.module,
        }
        .into());
    }
    let module_id = ContentId::of(&dispute.module);
    if module_id != first.module {
        return Err(Rejection::ModuleMismatch {
            expected: first.module,
            found: module_id,
        }
        .into());
    }
    let input_id = ContentId::of(&dispute.input);
    if input_id != first.input {
        return Err(Rejection::InputMismatch {
            expected: first.input,
            found: input_id,
        }
        .into());
    }
    let input = TaskInput::decode(&dispute.input)
        .map_err(|error| Rejection::InputMalformed(error.to_string()))?;
    for receipt in &receipts {
        let key = keys::disputed(&first.job, first.task_index, &receipt.signer);
        if overlay.get_raw(&key)?.is_some() {
            return Err(Rejection::AlreadyDisputed(receipt.signer).into());
        }
    }

    let truth = scope
        .executor
        .re_execute(
            &dispute.module,
            &input,
            task_seed(&first.job, first.task_index),
            &record.limits,
        )
        .map_err(Rejection::ReExecutionFailed)?;

    let mut events = vec![Event::Verdict {
        job: first.job,
        task: first.task_index,
        outcome: truth.outcome,
        fuel_used: truth.fuel_used,
    }];
    for (receipt, claim) in receipts.iter().zip(&claims) {
        if (claim.outcome, claim.fuel_used) == (truth.outcome, truth.fuel_used) {
            continue;
        }
        overlay.put(
            keys::disputed(&first.job, first.task_index, &receipt.signer),
            &true,
        );
        events.push(slash(overlay, scope.params, receipt.signer, reporter)?);
        let record_key = keys::provider_record(&receipt.signer);
        let mut track: ProviderRecord = overlay.get(&record_key)?.unwrap_or_default();
        track.disputes_lost += 1;
        track.last_lost_height = scope.height;
        overlay.put(record_key, &track);
    }
    if events.len() == 1 {
        // Every receipt was right: the reporter pays for the re-execution.
        debit(overlay, &reporter, deposit)?;
        burn(overlay, deposit)?;
        events.push(Event::DisputeRejected {
            reporter,
            deposit_burned: deposit,
        });
    }
    Ok(events)
}

/// Takes the slash fraction of a provider's stake (bonded first, then what
/// is unbonding), pays the reporter's share and burns the rest.
fn slash<S: Store>(
    overlay: &mut Overlay<'_, S>,
    params: &Params,
    provider: AccountId,
    reporter: AccountId,
) -> Result<Event, Failure> {
    let amount = take_stake(
        overlay,
        StakeRole::Provider,
        &provider,
        params.slash_fraction_bps,
    )?;
    let (burned, to_reporter) = pay_reporter(overlay, params, amount, reporter)?;
    Ok(Event::Slashed {
        provider,
        amount,
        burned,
        to_reporter,
    })
}

/// Takes `fraction_bps` of an account's stake of `role`, bonded and
/// unbonding together (bonded first); returns the amount taken.
pub(crate) fn take_stake<S: Store>(
    overlay: &mut Overlay<'_, S>,
    role: StakeRole,
    account: &AccountId,
    fraction_bps: u16,
) -> Result<u64, StoreError> {
    let mut record = stake(overlay, role, account)?;
    let total = record.bonded + record.unbonding_total();
    let amount = bps(total, fraction_bps);
    let mut left = amount;
    let from_bonded = left.min(record.bonded);
    record.bonded -= from_bonded;
    left -= from_bonded;
    for entry in &mut record.unbonding {
        let taken = left.min(entry.amount);
        entry.amount -= taken;
        left -= taken;
    }
    record.unbonding.retain(|entry| entry.amount > 0);
    overlay.put(keys::stake(role, account), &record);
    Ok(amount)
}

/// Pays the reporter its share of a slashed amount and burns the rest;
/// returns (burned, to the reporter).
fn pay_reporter<S: Store>(
    overlay: &mut Overlay<'_, S>,
    params: &Params,
    amount: u64,
    reporter: AccountId,
) -> Result<(u64, u64), Failure> {
    let to_reporter = bps(amount, params.slash_reporter_share_bps);
    let burned = amount - to_reporter;
    credit(overlay, &reporter, to_reporter)?;
    burn(overlay, burned)?;
    Ok((burned, to_reporter))
}

/// Evidence that a validator signed two conflicting votes: once per
/// (validator, epoch, view), and no later than the unbonding period after
/// its epoch, takes the validator slash fraction of its own stake and, in
/// one step, of everything delegated to it.
fn report_fault<S: Store>(
    overlay: &mut Overlay<'_, S>,
    scope: &BlockScope<'_>,
    reporter: AccountId,
    evidence: &[u8],
) -> Applied {
    let validators_of = |epoch: u64| {
        overlay
            .get::<Vec<(AccountId, u64)>>(&keys::validator_set(epoch))
            .ok()
            .flatten()
            .map(|set| set.into_iter().map(|(account, _)| account).collect())
    };
    let fault = scope
        .executor
        .check_fault(scope.chain_id, evidence, &validators_of)
        .map_err(Rejection::FaultNotProven)?;
    // Past its epoch's end plus the unbonding period, whatever stake did
    // the offense may be gone: later stake is not answerable for it.
    let length = scope.params.epoch_length_blocks;
    let answerable_until = fault
        .epoch
        .saturating_add(1)
        .saturating_mul(length)
        .saturating_add(scope.params.unbonding_blocks);
    if scope.height > answerable_until {
        return Err(Rejection::FaultTooOld {
            epoch: fault.epoch,
            until: answerable_until,
        }
        .into());
    }
    let key = keys::fault(&fault.validator, fault.epoch, fault.view);
    if overlay.get_raw(&key)?.is_some() {
        return Err(Rejection::FaultAlreadyReported {
            validator: fault.validator,
            epoch: fault.epoch,
            view: fault.view,
        }
        .into());
    }
    overlay.put(key, &scope.height);
    // Tombstoned: out of every set from the next, whatever its stake.
    if overlay.get_raw(&keys::jailed(&fault.validator))?.is_none() {
        overlay.put(keys::jailed(&fault.validator), &fault.epoch);
    }
    let fraction = scope.params.validator_slash_fraction_bps;
    let own = take_stake(overlay, StakeRole::Validator, &fault.validator, fraction)?;
    let delegated = delegation::slash_pool(overlay, &fault.validator, fraction)?;
    // The reporter's share comes from the validator's own stake only: were
    // it paid from the delegations too, a validator could equivocate,
    // report itself from another account and come out ahead at its
    // delegators' cost. What delegators lose is burned.
    let (burned_own, to_reporter) = pay_reporter(overlay, scope.params, own, reporter)?;
    burn(overlay, delegated)?;
    let burned = burned_own + delegated;
    Ok(vec![Event::ValidatorSlashed {
        validator: fault.validator,
        epoch: fault.epoch,
        view: fault.view,
        own,
        delegated,
        burned,
        to_reporter,
    }])
}

/// Returns matured unbondings to their owners' balances.
pub(crate) fn release_unbondings<S: Store>(
    overlay: &mut Overlay<'_, S>,
    height: u64,
) -> Result<Vec<Event>, Failure> {
    let key = keys::release(height);
    let due: Vec<(AccountId, StakeRole)> = overlay.get(&key)?.unwrap_or_default();
    let mut events = Vec::new();
    for (account, role) in due {
        let mut record = stake(overlay, role, &account)?;
        let (matured, waiting): (Vec<Unbonding>, Vec<Unbonding>) = record
            .unbonding
            .iter()
            .partition(|entry| entry.release_height <= height);
        let amount: u64 = matured.iter().map(|entry| entry.amount).sum();
        record.unbonding = waiting;
        overlay.put(keys::stake(role, &account), &record);
        if amount > 0 {
            credit(overlay, &account, amount)?;
            events.push(Event::Unbonded {
                account,
                role,
                amount,
            });
        }
    }
    overlay.delete(key);
    Ok(events)
}

/// At epoch `epoch`'s last block: mints the emission for providers (by
/// fuel paid this epoch) and the epoch's validators (by their power in
/// it), and pays out the fee pool.
/// The providers' weights kept under `table` for the epoch (fuel paid
/// for, speed proven), deleted as they are read.
fn take_weights<S: Store>(
    overlay: &mut Overlay<'_, S>,
    table: u8,
) -> Result<Vec<(AccountId, u64)>, StoreError> {
    let entries = overlay.scan_prefix(&[table])?;
    let mut weights = Vec::with_capacity(entries.len());
    for (key, value) in entries {
        let provider = keys::trailing_account(&key)
            .ok_or_else(|| StoreError(format!("a malformed key in table {}", char::from(table))))?;
        weights.push((provider, crate::state::decode_record::<u64>(&value)?));
        overlay.delete(key);
    }
    Ok(weights)
}

/// `amount` shared by weight, each part rounded down; nobody with a zero
/// part is listed.
fn shares(amount: u64, weights: &[(AccountId, u64)]) -> Vec<(AccountId, u64)> {
    let total: u128 = weights.iter().map(|(_, weight)| u128::from(*weight)).sum();
    weights
        .iter()
        .map(|(account, weight)| (*account, ratio(amount, u128::from(*weight), total)))
        .filter(|(_, part)| *part > 0)
        .collect()
}

pub(crate) fn epoch_rewards<S: Store>(
    overlay: &mut Overlay<'_, S>,
    params: &Params,
    epoch: u64,
) -> Result<Vec<Event>, Failure> {
    let mut events = Vec::new();
    let mut minted = 0u64;
    let validator_emission = bps(params.emission_per_epoch, params.validator_reward_share_bps);
    let mut provider_emission = params.emission_per_epoch - validator_emission;

    // Proven availability first: by the speed each provider proved with
    // the challenges it answered right this epoch. Unclaimed (nobody
    // proved any), it goes to work like the rest.
    let available = take_weights(overlay, keys::AVAILABLE)?;
    if available.iter().any(|(_, speed)| *speed > 0) {
        let pot = bps(provider_emission, params.availability_reward_share_bps);
        provider_emission -= pot;
        for (provider, amount) in shares(pot, &available) {
            credit(overlay, &provider, amount)?;
            minted += amount;
            events.push(Event::AvailabilityRewarded { provider, amount });
        }
    }
    // Then verified work, by the fuel each was paid for.
    let work = take_weights(overlay, keys::EPOCH_FUEL)?;
    for (provider, amount) in shares(provider_emission, &work) {
        credit(overlay, &provider, amount)?;
        minted += amount;
        events.push(Event::ProviderRewarded { provider, amount });
    }

    // The validators of the epoch that ends, by the power they held in it;
    // each one's delegators take their part from its reward.
    let validators: Vec<(AccountId, u64)> = overlay
        .get(&keys::validator_set(epoch))?
        .unwrap_or_default();
    let total_power: u128 = validators.iter().map(|(_, power)| u128::from(*power)).sum();
    let fees = fee_pool(overlay)?;
    let mut fees_paid = 0u64;
    for (validator, power) in validators {
        let from_emission = ratio(validator_emission, u128::from(power), total_power);
        let from_fees = ratio(fees, u128::from(power), total_power);
        let reward = from_emission + from_fees;
        if reward == 0 {
            continue;
        }
        minted += from_emission;
        fees_paid += from_fees;
        let split = delegation::share_reward(overlay, &validator, reward)?;
        if split.to_validator > 0 {
            credit(overlay, &validator, split.to_validator)?;
            events.push(Event::ValidatorRewarded {
                validator,
                amount: split.to_validator,
            });
        }
        if split.to_delegators > 0 {
            events.push(Event::DelegatorsRewarded {
                validator,
                amount: split.to_delegators,
                commission: split.commission,
            });
        }
    }
    overlay.put(keys::meta(META_FEES), &(fees - fees_paid));
    let mut totals = supply(overlay)?;
    totals.emitted += minted;
    overlay.put(keys::meta(META_SUPPLY), &totals);
    Ok(events)
}

/// The most validators any epoch may have (`Params::validators_max` is at
/// most this).
pub const VALIDATORS_MAX: usize = 100;

/// Records the validator set of `epoch`: every account with bonded
/// validator stake and no proven fault, the largest `validators_max` by
/// total stake (their own
/// and delegated; ties by account), with voting power capped at
/// `voting_power_cap_bps` of the set's ([`delegation::capped_powers`]). A
/// chain whose validators all left keeps the previous set rather than halt.
pub(crate) fn record_validator_set<S: Store>(
    overlay: &mut Overlay<'_, S>,
    params: &Params,
    epoch: u64,
) -> Result<(), StoreError> {
    let mut set = Vec::new();
    for (validator, own) in bonded(overlay, StakeRole::Validator)? {
        if overlay.get_raw(&keys::jailed(&validator))?.is_some() {
            continue;
        }
        set.push((
            validator,
            delegation::total_stake(overlay, &validator, own)?,
        ));
    }
    set.sort_by(|(a, stake_a), (b, stake_b)| stake_b.cmp(stake_a).then(a.cmp(b)));
    set.truncate((params.validators_max as usize).min(VALIDATORS_MAX));
    if set.is_empty()
        && let Some(previous) = epoch.checked_sub(1)
        && let Some(kept) = overlay.get::<Vec<(AccountId, u64)>>(&keys::validator_set(previous))?
    {
        set = kept;
    } else {
        let stakes: Vec<u64> = set.iter().map(|(_, stake)| *stake).collect();
        let powers = delegation::capped_powers(&stakes, params.voting_power_cap_bps);
        for ((_, power), capped) in set.iter_mut().zip(powers) {
            *power = capped;
        }
    }
    overlay.put(keys::validator_set(epoch), &set);
    Ok(())
}

/// Accounts with bonded stake of `role`, in account order.
pub(crate) fn bonded<S: Store>(
    overlay: &Overlay<'_, S>,
    role: StakeRole,
) -> Result<Vec<(AccountId, u64)>, StoreError> {
    let mut list = Vec::new();
    for (key, value) in overlay.scan_prefix(&keys::stake_prefix(role))? {
        let record: Stake = crate::state::decode_record(&value)?;
        if record.bonded > 0
            && let Some(account) = keys::trailing_account(&key)
        {
            list.push((account, record.bonded));
        }
    }
    Ok(list)
}
