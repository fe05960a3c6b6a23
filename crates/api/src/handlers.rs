//! The handlers and the JSON views they answer with: transactions,
//! accounts, jobs, providers, blocks and the node's status.

use axum::Json;
use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use idlegrid_chain::{Block, TxStatus};
use idlegrid_ledger::{
    DisputeVerdict, Job, JobStatus, Stake, StakeRole, Store, decode_transaction, transaction_hash,
};
use idlegrid_types::{AccountId, ContentId, JobId, TaskOutcome};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::error::{ApiError, ErrorBody, ledger_unavailable};
use crate::limits::{ENGINE_ANSWER_TIMEOUT, JOBS_LIMIT_DEFAULT, JOBS_LIMIT_MAX};
use crate::state::{ApiState, finalized_height, with_node};

/// A path segment, or our error for one axum could not decode.
pub(crate) fn segment(path: Result<Path<String>, PathRejection>) -> Result<String, ApiError> {
    Ok(path?.0)
}

pub(crate) fn parse_account(text: &str) -> Result<AccountId, ApiError> {
    text.parse().map_err(|error| {
        ApiError::bad_request("malformed_account", format!("not an account id: {error}"))
    })
}

// ---- POST /v1/transactions ----

#[derive(Debug, Deserialize, ToSchema)]
pub(crate) struct SubmitRequest {
    /// Hex of the canonical encoding of a signed transaction.
    transaction: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct SubmitView {
    /// The transaction's hash (`b3:` and 64 hex digits).
    hash: String,
}

/// Submit a signed transaction to this validator's pool.
///
/// It is checked against the finalized state and relayed to the other
/// validators; `GET /v1/transactions/{hash}` follows it.
#[utoipa::path(
    post,
    path = "/v1/transactions",
    tag = "transactions",
    request_body = SubmitRequest,
    responses(
        (status = 200, description = "Taken into the pool", body = SubmitView),
        (status = 400, description = "Malformed JSON or transaction (`malformed_json`, `malformed_transaction`)", body = ErrorBody),
        (status = 413, description = "The body is over the limit (`payload_too_large`)", body = ErrorBody),
        (status = 415, description = "The body is not JSON (`unsupported_media_type`)", body = ErrorBody),
        (status = 422, description = "Refused: it would not apply, or the pool is full (the code says why)", body = ErrorBody),
        (status = 500, description = "The request failed inside the node (`internal`)", body = ErrorBody),
        (status = 503, description = "The node cannot answer now (`unavailable`)", body = ErrorBody),
    )
)]
pub(crate) async fn submit<S: Store + Send + 'static>(
    State(state): State<ApiState<S>>,
    request: Result<Json<SubmitRequest>, JsonRejection>,
) -> Result<Json<SubmitView>, ApiError> {
    let Json(request) = request?;
    let bytes = hex::decode(request.transaction.trim()).map_err(|error| {
        ApiError::bad_request(
            "malformed_transaction",
            format!("the transaction is not hex: {error}"),
        )
    })?;
    let transaction = decode_transaction(&bytes).map_err(|error| {
        ApiError::bad_request(
            "malformed_transaction",
            format!("the bytes are not a signed transaction: {error}"),
        )
    })?;
    // With other submissions, its signature checked in a batch outside the
    // node's lock, then into the pool under one lock for the batch.
    let hash = state.submissions.submit(transaction).await?;
    Ok(Json(SubmitView {
        hash: hash.to_string(),
    }))
}

// ---- GET /v1/transactions/{hash} ----

#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct RejectedView {
    code: String,
    message: String,
}

/// Where a transaction stands, as this validator knows it.
#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub(crate) enum TxState {
    /// In this validator's pool, waiting for a block.
    Pending,
    /// In a finalized block.
    Included,
    /// It left the pool without a block: it no longer applies.
    Dropped,
    /// Never seen, or forgotten.
    Unknown,
}

#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct TxStatusView {
    hash: String,
    status: TxState,
    #[serde(skip_serializing_if = "Option::is_none")]
    height: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    index: Option<u32>,
    /// Why it did not apply: included but rejected by the ledger, or dropped
    /// from the pool.
    #[serde(skip_serializing_if = "Option::is_none")]
    rejected: Option<RejectedView>,
    /// For a dispute that applied: what re-executing the task gave, and
    /// whose receipts differed from it (each slashed).
    #[serde(skip_serializing_if = "Option::is_none")]
    verdict: Option<VerdictView>,
}

/// What a dispute's re-execution of a task found.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct VerdictView {
    job: String,
    task: u64,
    /// The task's exit code, when it ran to its end.
    #[serde(skip_serializing_if = "Option::is_none")]
    exit_code: Option<i32>,
    /// The content id of its output, when it ran to its end.
    #[serde(skip_serializing_if = "Option::is_none")]
    output: Option<String>,
    /// Why it stopped (`out_of_fuel`, `trap`, ...), when it did not.
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
    fuel_used: u64,
    /// The signers whose receipts differed (each slashed by this dispute);
    /// empty when every receipt was right.
    wrong: Vec<String>,
}

impl From<DisputeVerdict> for VerdictView {
    fn from(verdict: DisputeVerdict) -> Self {
        let (exit_code, output, error) = match verdict.outcome {
            TaskOutcome::Completed { exit_code, output } => {
                (Some(exit_code), Some(output.to_string()), None)
            }
            TaskOutcome::Failed(kind) => (None, None, Some(kind.as_str().to_owned())),
        };
        Self {
            job: verdict.job.to_string(),
            task: verdict.task,
            exit_code,
            output,
            error,
            fuel_used: verdict.fuel_used,
            wrong: verdict.wrong.iter().map(ToString::to_string).collect(),
        }
    }
}

/// Where a transaction stands: pending, included (where), dropped (why) or
/// unknown.
#[utoipa::path(
    get,
    path = "/v1/transactions/{hash}",
    tag = "transactions",
    params(("hash" = String, Path, description = "The transaction's hash (`b3:` and 64 hex digits)")),
    responses(
        (status = 200, description = "What this validator knows of it", body = TxStatusView),
        (status = 400, description = "Not a transaction hash (`malformed_hash`, `malformed_path`)", body = ErrorBody),
        (status = 500, description = "The request failed inside the node (`internal`)", body = ErrorBody),
        (status = 503, description = "The node cannot answer now (`unavailable`)", body = ErrorBody),
    )
)]
pub(crate) async fn transaction<S: Store + Send + 'static>(
    State(state): State<ApiState<S>>,
    path: Result<Path<String>, PathRejection>,
) -> Result<Json<TxStatusView>, ApiError> {
    let text = segment(path)?;
    let hash: ContentId = text.parse().map_err(|error| {
        ApiError::bad_request("malformed_hash", format!("not a transaction hash: {error}"))
    })?;
    let (found, verdict) = with_node(&state, move |node| {
        let status = node.status(&hash).map_err(ledger_unavailable)?;
        let verdict = node.ledger().verdict(&hash).map_err(ledger_unavailable)?;
        Ok((status, verdict))
    })
    .await?;
    let mut view = TxStatusView {
        hash: hash.to_string(),
        status: TxState::Unknown,
        height: None,
        index: None,
        rejected: None,
        verdict: verdict.map(VerdictView::from),
    };
    match found {
        TxStatus::Pending => view.status = TxState::Pending,
        TxStatus::Included(record) => {
            view.status = TxState::Included;
            view.height = Some(record.height);
            view.index = Some(record.index);
            view.rejected = record
                .rejected
                .map(|(code, message)| RejectedView { code, message });
        }
        TxStatus::Dropped { code, message } => {
            view.status = TxState::Dropped;
            view.rejected = Some(RejectedView { code, message });
        }
        TxStatus::Unknown => {}
    }
    Ok(Json(view))
}

// ---- GET /v1/accounts/{account} ----

#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct UnbondingView {
    pub(crate) amount: u64,
    pub(crate) release_height: u64,
}

#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct StakeView {
    bonded: u64,
    /// Leaving the stake, still slashable until released.
    unbonding: Vec<UnbondingView>,
}

impl From<Stake> for StakeView {
    fn from(stake: Stake) -> Self {
        Self {
            bonded: stake.bonded,
            unbonding: stake
                .unbonding
                .iter()
                .map(|entry| UnbondingView {
                    amount: entry.amount,
                    release_height: entry.release_height,
                })
                .collect(),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct AccountView {
    account: String,
    balance: u64,
    /// The nonce the ledger expects next.
    nonce: u64,
    /// The nonce a new transaction should carry: past the ones pending here.
    next_nonce: u64,
    validator_stake: StakeView,
    provider_stake: StakeView,
    provider_record: ProviderRecordView,
    /// Its open capacity challenges, oldest first.
    challenges: Vec<ChallengeView>,
    /// Its open GPU challenges, oldest first.
    gpu_challenges: Vec<GpuChallengeView>,
}

/// What a provider declared and proved of its speed, in fuel per second
/// on the capacity challenge.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct CapacityView {
    /// What it says it has (0: never declared).
    declared_fuel_per_second: u64,
    /// What its latest checked answer proved (absent before one).
    proven_fuel_per_second: Option<u64>,
    /// What the market counts on: the proven speed, never above the
    /// declared one (the declared one before any proof).
    usable_fuel_per_second: u64,
    challenges_passed: u32,
    challenges_late: u32,
    challenges_missed: u32,
    challenges_wrong: u32,
}

impl CapacityView {
    fn of(capacity: &idlegrid_ledger::capacity::Capacity) -> Self {
        Self {
            declared_fuel_per_second: capacity.declared_fuel_per_second,
            proven_fuel_per_second: capacity.proven_fuel_per_second,
            usable_fuel_per_second: capacity.usable_fuel_per_second(),
            challenges_passed: capacity.passed,
            challenges_late: capacity.late,
            challenges_missed: capacity.missed,
            challenges_wrong: capacity.wrong,
        }
    }
}

/// One open capacity challenge, as its provider needs it to answer.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct ChallengeView {
    epoch: u64,
    /// The task seed the challenge module runs with (hex).
    seed: String,
    passes: u32,
    /// The fuel the challenge takes.
    fuel: u64,
    /// Block time it was issued at (ms since the Unix epoch).
    issued_ms: u64,
    /// Block time an answer is due by for the declared speed.
    deadline_ms: u64,
    /// The provider given the same seed.
    partner: Option<String>,
    answered: bool,
    answered_ms: Option<u64>,
    revealed: bool,
    settled: bool,
    /// Whether the answer may be revealed now: the partner answered, or it
    /// is no longer awaited (four times its deadline's time passed), or
    /// there is no partner.
    may_reveal: bool,
}

/// One open GPU challenge, as its provider needs it to answer: find
/// `solutions` nonces whose score (the first eight bytes, little-endian,
/// of BLAKE3 over the seed and the nonce's eight little-endian bytes) is
/// below `target`.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct GpuChallengeView {
    epoch: u64,
    /// The seed (hex).
    seed: String,
    target: u64,
    solutions: u32,
    /// The search's expected fuel.
    fuel: u64,
    /// Block time it was issued at (ms since the Unix epoch).
    issued_ms: u64,
    /// Block time an answer is due by for the declared GPU speed.
    deadline_ms: u64,
    answered: bool,
    answered_ms: Option<u64>,
    /// `on_time`, `late` or `wrong` once answered.
    result: Option<&'static str>,
}

fn gpu_challenge_views<S: Store>(
    ledger: &idlegrid_ledger::Ledger<S>,
    id: &AccountId,
) -> Result<Vec<GpuChallengeView>, ApiError> {
    Ok(ledger
        .gpu_challenges(id)
        .map_err(ledger_unavailable)?
        .into_iter()
        .map(|(epoch, record)| GpuChallengeView {
            epoch,
            seed: hex::encode(record.seed),
            target: record.target,
            solutions: idlegrid_types::capacity::GPU_CHALLENGE_SOLUTIONS,
            fuel: record.fuel(),
            issued_ms: record.issued_ms,
            deadline_ms: record.deadline_ms,
            answered: record.answered_ms.is_some(),
            answered_ms: record.answered_ms,
            result: record.result.map(|result| result.name()),
        })
        .collect())
}

fn challenge_views<S: Store>(
    ledger: &idlegrid_ledger::Ledger<S>,
    id: &AccountId,
) -> Result<Vec<ChallengeView>, ApiError> {
    let now_ms = ledger.time_ms().map_err(ledger_unavailable)?;
    let open = ledger.challenges(id).map_err(ledger_unavailable)?;
    let mut views = Vec::with_capacity(open.len());
    for (epoch, record) in open {
        let may_reveal = match record.partner {
            None => true,
            Some(partner) => ledger
                .challenges(&partner)
                .map_err(ledger_unavailable)?
                .into_iter()
                .find(|(their_epoch, _)| *their_epoch == epoch)
                .is_none_or(|(_, theirs)| {
                    theirs.commitment.is_some() || now_ms > theirs.awaited_until_ms()
                }),
        };
        views.push(ChallengeView {
            epoch,
            seed: hex::encode(record.seed),
            passes: record.passes,
            fuel: idlegrid_types::capacity::challenge_fuel(record.passes),
            issued_ms: record.issued_ms,
            deadline_ms: record.deadline_ms,
            partner: record.partner.map(|partner| partner.to_string()),
            answered: record.commitment.is_some(),
            answered_ms: record.answered_ms,
            revealed: record.revealed.is_some(),
            settled: record.settled,
            may_reveal,
        });
    }
    Ok(views)
}

/// A provider's track record on the ledger, which every requestor starts
/// from when deciding how far to trust its results.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct ProviderRecordView {
    /// Fuel requestors paid it for, through redeemed vouchers.
    fuel_paid: u64,
    /// Tokens redeemed from those vouchers.
    amount_paid: u64,
    /// Jobs it redeemed at least one voucher from.
    jobs_paid: u64,
    /// Disputes whose re-execution showed one of its receipts wrong.
    disputes_lost: u64,
    /// Height of the last of them (0: none).
    last_lost_height: u64,
    /// What one slash would take from its stake now: the requestor's cover
    /// for results it accepts on this provider's word alone.
    slashable: u64,
    /// Its declared and proven speed, and how its challenges went.
    capacity: CapacityView,
    /// The same for its GPU, in fuel per second on the GPU challenge
    /// kernel (all zero for a provider that offers no GPU).
    gpu_capacity: CapacityView,
}

fn provider_record<S: Store>(
    ledger: &idlegrid_ledger::Ledger<S>,
    id: &AccountId,
) -> Result<ProviderRecordView, ApiError> {
    let record = ledger.provider_record(id).map_err(ledger_unavailable)?;
    Ok(ProviderRecordView {
        capacity: CapacityView::of(&ledger.capacity(id).map_err(ledger_unavailable)?),
        gpu_capacity: CapacityView::of(&ledger.gpu_capacity(id).map_err(ledger_unavailable)?),
        fuel_paid: record.fuel_paid,
        amount_paid: record.amount_paid,
        jobs_paid: record.jobs_paid,
        disputes_lost: record.disputes_lost,
        last_lost_height: record.last_lost_height,
        slashable: ledger.slashable(id).map_err(ledger_unavailable)?,
    })
}

/// An account's balance, nonces and stake (an account the ledger has never
/// seen has nothing: zero balance, nonce 0).
#[utoipa::path(
    get,
    path = "/v1/accounts/{account}",
    tag = "ledger",
    params(("account" = String, Path, description = "The account (`did:key:z6Mk…`)")),
    responses(
        (status = 200, description = "The account", body = AccountView),
        (status = 400, description = "Not an account id (`malformed_account`, `malformed_path`)", body = ErrorBody),
        (status = 500, description = "The request failed inside the node (`internal`)", body = ErrorBody),
        (status = 503, description = "The node cannot answer now (`unavailable`)", body = ErrorBody),
    )
)]
pub(crate) async fn account<S: Store + Send + 'static>(
    State(state): State<ApiState<S>>,
    path: Result<Path<String>, PathRejection>,
) -> Result<Json<AccountView>, ApiError> {
    let id = parse_account(&segment(path)?)?;
    let view = with_node(&state, move |node| {
        let ledger = node.ledger();
        let account = ledger.account(&id).map_err(ledger_unavailable)?;
        let validator_stake = ledger
            .stake(StakeRole::Validator, &id)
            .map_err(ledger_unavailable)?;
        let provider_stake = ledger
            .stake(StakeRole::Provider, &id)
            .map_err(ledger_unavailable)?;
        Ok(AccountView {
            account: id.to_string(),
            balance: account.balance,
            nonce: account.nonce,
            next_nonce: node.mempool.next_nonce(&id, account.nonce),
            validator_stake: validator_stake.into(),
            provider_stake: provider_stake.into(),
            provider_record: provider_record(ledger, &id)?,
            challenges: challenge_views(ledger, &id)?,
            gpu_challenges: gpu_challenge_views(ledger, &id)?,
        })
    })
    .await?;
    Ok(Json(view))
}

// ---- GET /v1/jobs/{job} ----

#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct LimitsView {
    fuel: u64,
    memory_bytes: u64,
    output_bytes: u64,
}

/// Whether a job still takes redemptions.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub(crate) enum JobState {
    Open,
    Closed,
}

impl From<JobStatus> for JobState {
    fn from(status: JobStatus) -> Self {
        match status {
            JobStatus::Open => Self::Open,
            JobStatus::Closed => Self::Closed,
        }
    }
}

impl From<JobState> for JobStatus {
    fn from(state: JobState) -> Self {
        match state {
            JobState::Open => Self::Open,
            JobState::Closed => Self::Closed,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct JobView {
    job: String,
    requestor: String,
    module: String,
    spec: String,
    escrow: u64,
    price_per_million_fuel: u64,
    deadline_height: u64,
    limits: LimitsView,
    status: JobState,
    redeemed_total: u64,
    /// Who runs the job for the requestor (places its tasks, signs its
    /// vouchers, may close it), when someone does: a gateway's key for
    /// this job.
    agent: Option<String>,
}

impl JobView {
    fn new(id: JobId, job: Job) -> Self {
        Self {
            job: id.to_string(),
            requestor: job.requestor.to_string(),
            module: job.module.to_string(),
            spec: job.spec.to_string(),
            escrow: job.escrow,
            price_per_million_fuel: job.price_per_million_fuel,
            deadline_height: job.deadline_height,
            limits: LimitsView {
                fuel: job.limits.fuel,
                memory_bytes: job.limits.memory_bytes,
                output_bytes: job.limits.output_bytes,
            },
            status: job.status.into(),
            redeemed_total: job.redeemed_total,
            agent: job.agent.map(|agent| agent.to_string()),
        }
    }
}

/// A job: its requestor, module, escrow, price, deadline, limits and status.
#[utoipa::path(
    get,
    path = "/v1/jobs/{job}",
    tag = "ledger",
    params(("job" = String, Path, description = "The job id (`job:` and 64 hex digits)")),
    responses(
        (status = 200, description = "The job", body = JobView),
        (status = 400, description = "Not a job id (`malformed_job_id`, `malformed_path`)", body = ErrorBody),
        (status = 404, description = "No such job (`not_found`)", body = ErrorBody),
        (status = 500, description = "The request failed inside the node (`internal`)", body = ErrorBody),
        (status = 503, description = "The node cannot answer now (`unavailable`)", body = ErrorBody),
    )
)]
pub(crate) async fn job<S: Store + Send + 'static>(
    State(state): State<ApiState<S>>,
    path: Result<Path<String>, PathRejection>,
) -> Result<Json<JobView>, ApiError> {
    let text = segment(path)?;
    let id: JobId = text.parse().map_err(|error: String| {
        ApiError::bad_request("malformed_job_id", format!("not a job id: {error}"))
    })?;
    let found = with_node(&state, move |node| {
        node.ledger().job(&id).map_err(ledger_unavailable)
    })
    .await?;
    match found {
        Some(job) => Ok(Json(JobView::new(id, job))),
        None => Err(ApiError::not_found(format!("there is no job {id}"))),
    }
}

// ---- GET /v1/jobs ----

// `IntoParams` is not imported: its derive's code names it in full, which
// the `unused_qualifications` lint would flag were it in scope.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct JobsQuery {
    /// Only jobs in this status.
    status: Option<JobState>,
    /// At most this many jobs.
    // The attribute takes literals: JOBS_LIMIT_MAX and JOBS_LIMIT_DEFAULT
    // (a test checks that the document says the same).
    #[param(minimum = 1, maximum = 500, default = 50)]
    limit: Option<usize>,
}

#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct JobsView {
    /// The most recently opened first.
    jobs: Vec<JobView>,
}

/// The ledger's jobs, the most recently opened first (by the height of the
/// block that opened them, then their order in it).
#[utoipa::path(
    get,
    path = "/v1/jobs",
    tag = "ledger",
    params(JobsQuery),
    responses(
        (status = 200, description = "The jobs", body = JobsView),
        (status = 400, description = "A bad status or limit (`malformed_query`)", body = ErrorBody),
        (status = 500, description = "The request failed inside the node (`internal`)", body = ErrorBody),
        (status = 503, description = "The node cannot answer now (`unavailable`)", body = ErrorBody),
    )
)]
pub(crate) async fn jobs<S: Store + Send + 'static>(
    State(state): State<ApiState<S>>,
    query: Result<Query<JobsQuery>, QueryRejection>,
) -> Result<Json<JobsView>, ApiError> {
    let Query(query) = query?;
    let limit = query.limit.unwrap_or(JOBS_LIMIT_DEFAULT);
    if !(1..=JOBS_LIMIT_MAX).contains(&limit) {
        return Err(ApiError::bad_request(
            "malformed_query",
            format!("limit must be from 1 to {JOBS_LIMIT_MAX}, not {limit}"),
        ));
    }
    let status = query.status.map(JobStatus::from);
    let list = with_node(&state, move |node| {
        node.ledger()
            .jobs(status, limit)
            .map_err(ledger_unavailable)
    })
    .await?;
    Ok(Json(JobsView {
        jobs: list
            .into_iter()
            .map(|(id, job)| JobView::new(id, job))
            .collect(),
    }))
}

// ---- GET /v1/providers ----

#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct StakeEntry {
    account: String,
    stake: u64,
}

fn stake_entries(list: Vec<(AccountId, u64)>) -> Vec<StakeEntry> {
    list.into_iter()
        .map(|(account, stake)| StakeEntry {
            account: account.to_string(),
            stake,
        })
        .collect()
}

#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct ProviderEntry {
    account: String,
    /// Bonded provider stake.
    stake: u64,
    record: ProviderRecordView,
}

#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct ProvidersView {
    /// Accounts with bonded provider stake, how much, and their record.
    providers: Vec<ProviderEntry>,
}

/// Accounts with bonded provider stake, how much, and each one's track
/// record (fuel paid for, jobs, disputes lost, what a slash would take).
#[utoipa::path(
    get,
    path = "/v1/providers",
    tag = "ledger",
    responses(
        (status = 200, description = "The providers", body = ProvidersView),
        (status = 500, description = "The request failed inside the node (`internal`)", body = ErrorBody),
        (status = 503, description = "The node cannot answer now (`unavailable`)", body = ErrorBody),
    )
)]
pub(crate) async fn providers<S: Store + Send + 'static>(
    State(state): State<ApiState<S>>,
) -> Result<Json<ProvidersView>, ApiError> {
    let providers = with_node(&state, |node| {
        let ledger = node.ledger();
        let list = ledger.providers().map_err(ledger_unavailable)?;
        list.into_iter()
            .map(|(account, stake)| {
                Ok(ProviderEntry {
                    record: provider_record(ledger, &account)?,
                    account: account.to_string(),
                    stake,
                })
            })
            .collect::<Result<Vec<_>, ApiError>>()
    })
    .await?;
    Ok(Json(ProvidersView { providers }))
}

// ---- GET /v1/blocks/{height} ----

#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct BlockTxView {
    hash: String,
    signer: String,
    nonce: u64,
    fee: u64,
    /// The transaction kind's snake_case name (`transfer`, `stake`, …).
    #[schema(example = "transfer")]
    kind: &'static str,
}

#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct BlockView {
    height: u64,
    /// When its proposer built it (ms since the Unix epoch).
    time_ms: u64,
    digest: String,
    parent: String,
    parent_state_root: String,
    transactions: Vec<BlockTxView>,
}

impl From<&Block> for BlockView {
    fn from(block: &Block) -> Self {
        Self {
            height: block.height,
            time_ms: block.time_ms,
            digest: block.digest().to_string(),
            parent: block.parent.to_string(),
            parent_state_root: hex::encode(block.parent_state_root),
            transactions: block
                .transactions
                .iter()
                .map(|transaction| BlockTxView {
                    hash: transaction_hash(transaction).to_string(),
                    signer: transaction.signer.to_string(),
                    nonce: transaction.body.nonce,
                    fee: transaction.body.fee,
                    kind: transaction.body.kind.name(),
                })
                .collect(),
        }
    }
}

/// A finalized block and its transactions.
#[utoipa::path(
    get,
    path = "/v1/blocks/{height}",
    tag = "chain",
    params(("height" = u64, Path, description = "The block's height")),
    responses(
        (status = 200, description = "The block", body = BlockView),
        (status = 400, description = "Not a height (`malformed_height`, `malformed_path`)", body = ErrorBody),
        (status = 404, description = "This validator holds no finalized block there (`not_found`)", body = ErrorBody),
        (status = 503, description = "The engine has not started (`starting`) or did not answer (`unavailable`)", body = ErrorBody),
    )
)]
pub(crate) async fn block<S: Store + Send + 'static>(
    State(state): State<ApiState<S>>,
    path: Result<Path<String>, PathRejection>,
) -> Result<Json<BlockView>, ApiError> {
    let text = segment(path)?;
    let height: u64 = text.parse().map_err(|_| {
        ApiError::bad_request(
            "malformed_height",
            "a block height is a non-negative decimal integer",
        )
    })?;
    let Some(blocks) = state.blocks.get().cloned() else {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "starting",
            "the consensus engine has not started yet",
        ));
    };
    let found = tokio::time::timeout(ENGINE_ANSWER_TIMEOUT, blocks.at(height))
        .await
        .map_err(|_| ApiError::unavailable("the consensus engine did not answer in time"))?;
    match found {
        Some(block) => Ok(Json(BlockView::from(&block))),
        None => Err(ApiError::not_found(format!(
            "this validator holds no finalized block at height {height}"
        ))),
    }
}

// ---- GET /v1/status ----

#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct MempoolView {
    transactions: usize,
    bytes: usize,
}

#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct PeerView {
    account: String,
    last_seen_ms: u64,
}

#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct StatusView {
    chain_id: String,
    validator: String,
    /// The height of the last block applied to the ledger.
    height: u64,
    /// The highest block the engine knows is finalized (at least `height`
    /// once the engine runs; `height` before).
    finalized_height: u64,
    /// The state root after `height`, in hex.
    state_root: String,
    /// The digest of the block at `height`.
    tip: String,
    /// The time stamped on the block at `height` (ms since the Unix epoch).
    time_ms: u64,
    /// The smallest fee a transaction may pay.
    minimum_fee: u64,
    /// How this chain challenges providers' declared speed.
    challenges: ChallengeParamsView,
    mempool: MempoolView,
    /// The epoch the next block belongs to.
    epoch: u64,
    /// That epoch's validator set (the one running consensus now).
    validators: Vec<StakeEntry>,
    peers: Vec<PeerView>,
}

/// The chain's capacity challenges (genesis parameters).
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct ChallengeParamsView {
    /// Share of providers challenged each epoch, in basis points (0: none).
    share_bps: u16,
    passes: u32,
    /// Fuel of one challenge.
    fuel: u64,
    /// A deadline's slack over the declared speed's time, in basis points.
    slack_bps: u32,
    round_trip_ms: u64,
    /// How long a GPU challenge takes at the declared GPU speed.
    gpu_challenge_ms: u64,
}

/// The chain and this validator: heights, state root, fees, pool, epoch,
/// validators and peers.
#[utoipa::path(
    get,
    path = "/v1/status",
    tag = "chain",
    responses(
        (status = 200, description = "The node's status", body = StatusView),
        (status = 500, description = "The request failed inside the node (`internal`)", body = ErrorBody),
        (status = 503, description = "The node cannot answer now (`unavailable`)", body = ErrorBody),
    )
)]
pub(crate) async fn status<S: Store + Send + 'static>(
    State(state): State<ApiState<S>>,
) -> Result<Json<StatusView>, ApiError> {
    let validator = state.validator;
    let view = with_node(&state, move |node| {
        let ledger = node.ledger();
        let height = ledger.height();
        Ok(StatusView {
            chain_id: ledger.chain_id().to_owned(),
            validator: validator.to_string(),
            height,
            finalized_height: height,
            state_root: hex::encode(ledger.state_root()),
            tip: node.chain.tip().to_string(),
            time_ms: ledger.time_ms().map_err(ledger_unavailable)?,
            minimum_fee: ledger.params().minimum_fee,
            challenges: {
                let params = ledger.params();
                ChallengeParamsView {
                    share_bps: params.challenge_share_bps,
                    passes: params.challenge_passes,
                    fuel: idlegrid_types::capacity::challenge_fuel(params.challenge_passes),
                    slack_bps: params.challenge_slack_bps,
                    round_trip_ms: params.challenge_round_trip_ms,
                    gpu_challenge_ms: params.gpu_challenge_ms,
                }
            },
            mempool: MempoolView {
                transactions: node.mempool.len(),
                bytes: node.mempool.bytes(),
            },
            epoch: ledger.epoch_of(height + 1),
            validators: stake_entries(
                ledger
                    .validator_set(ledger.epoch_of(height + 1))
                    .map_err(ledger_unavailable)?
                    .unwrap_or_default(),
            ),
            peers: node
                .peers()
                .into_iter()
                .map(|(account, since)| PeerView {
                    account: account.to_string(),
                    last_seen_ms: u64::try_from(since.as_millis()).unwrap_or(u64::MAX),
                })
                .collect(),
        })
    })
    .await?;
    Ok(Json(StatusView {
        finalized_height: finalized_height(&state, view.height).await,
        ..view
    }))
}
