//! The HTTP/JSON API of a validator (axum): take signed transactions in,
//! and show accounts, stake, jobs, finalized blocks and the node's status.
//!
//! JSON lives here only; the chain and the ledger know nothing of it. Every
//! error, including axum's own (bad JSON, wrong content type, a body over
//! the limit, an undecodable path, no such route), is
//! `{"error":{"code":"snake_case","message":"readable"}}`.
//!
//! The node's mutex is never held across an `.await`: each handler locks it
//! on a blocking thread, copies out what it answers with, and lets go.
//!
//! `GET /v1/openapi.json` describes every route in OpenAPI 3.1, derived
//! (utoipa) from the handlers' annotations and the view types here; the
//! tests check it against [`routes`] and against the router's answers.

use std::sync::atomic::Ordering;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodFilter, MethodRouter, on};
use axum::{Json, Router};
use futures::future::BoxFuture;
use idlegrid_chain::engine::Blocks;
use idlegrid_chain::{Block, FinalizedCounts, Node, Refused, SharedNode, TxStatus};
use idlegrid_ledger::{
    Job, JobStatus, Stake, StakeRole, Store, decode_transaction, transaction_hash,
};
use idlegrid_types::{AccountId, ContentId, JobId};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use serde::{Deserialize, Serialize};
use utoipa::{OpenApi, ToSchema};

use crate::metrics::{self, Metrics, gauge_value};

/// The largest request body. The hex of a transaction is twice its bytes,
/// so this admits every transfer, stake and job transaction with room to
/// spare; a dispute carrying a module over ~500 KiB needs a binary upload
/// path, which is not built yet.
pub const REQUEST_BODY_BYTES_MAX: usize = 1 << 20;

/// How many jobs `GET /v1/jobs` lists when the request does not say.
pub const JOBS_LIMIT_DEFAULT: usize = 50;

/// The most jobs one `GET /v1/jobs` lists.
pub const JOBS_LIMIT_MAX: usize = 500;

/// A validator heard from within this long counts as connected in the
/// metrics (the relay sends at least one message a second, an empty one
/// when idle).
pub const PEER_SILENCE_MAX: Duration = Duration::from_secs(5);

/// How long a handler waits on the consensus engine's block store before
/// answering `unavailable` (the store lives on the engine's runtime).
const ENGINE_ANSWER_TIMEOUT: Duration = Duration::from_secs(5);

/// Where the API reads finalized blocks: the consensus engine's store
/// ([`Blocks`]), or blocks a test made.
pub trait FinalizedBlocks: std::fmt::Debug + Send + Sync + 'static {
    /// The finalized block at `height`, if this validator stores it.
    fn at(&self, height: u64) -> BoxFuture<'_, Option<Block>>;
    /// The highest finalized height this validator knows of.
    fn finalized_height(&self) -> BoxFuture<'_, Option<u64>>;
}

impl FinalizedBlocks for Blocks {
    fn at(&self, height: u64) -> BoxFuture<'_, Option<Block>> {
        Box::pin(Blocks::at(self, height))
    }

    fn finalized_height(&self) -> BoxFuture<'_, Option<u64>> {
        Box::pin(Blocks::finalized_height(self))
    }
}

/// Finalized blocks, once the engine has started.
pub type BlocksOnceStarted = Arc<OnceLock<Arc<dyn FinalizedBlocks>>>;

/// What the handlers share.
#[derive(Debug)]
pub struct ApiState<S: Store> {
    pub node: SharedNode<S>,
    /// Submitted transactions, taken into `node`'s pool in batches.
    pub submissions: Arc<crate::submissions::Submissions<S>>,
    /// Finalized blocks, once the engine has started.
    pub blocks: BlocksOnceStarted,
    /// This validator's account.
    pub validator: AccountId,
}

impl<S: Store> Clone for ApiState<S> {
    fn clone(&self) -> Self {
        Self {
            node: self.node.clone(),
            submissions: self.submissions.clone(),
            blocks: self.blocks.clone(),
            validator: self.validator,
        }
    }
}

/// One route: where, which method, and what answers.
struct Route<S: Store> {
    path: &'static str,
    /// The handler's method, for the tests to compare with the document.
    #[cfg(test)]
    method: MethodFilter,
    handler: MethodRouter<ApiState<S>>,
}

fn route<S, H, T>(method: MethodFilter, path: &'static str, handler: H) -> Route<S>
where
    S: Store + Send + 'static,
    H: axum::handler::Handler<T, ApiState<S>>,
    T: 'static,
{
    Route {
        path,
        #[cfg(test)]
        method,
        handler: on(method, handler),
    }
}

/// Every route, the one list the router is built from. [`ApiDoc`] must
/// describe exactly these (a test compares the two).
fn routes<S: Store + Send + 'static>(metrics: &Arc<ApiMetrics>) -> Vec<Route<S>> {
    use MethodFilter as M;
    let metrics = metrics.clone();
    vec![
        route(M::GET, "/v1/health", health),
        route(M::GET, "/v1/status", status::<S>),
        route(M::POST, "/v1/transactions", submit::<S>),
        route(M::GET, "/v1/transactions/{hash}", transaction::<S>),
        route(M::GET, "/v1/accounts/{account}", account::<S>),
        route(M::GET, "/v1/jobs", jobs::<S>),
        route(M::GET, "/v1/jobs/{job}", job::<S>),
        route(M::GET, "/v1/providers", providers::<S>),
        route(M::GET, "/v1/blocks/{height}", block::<S>),
        route(M::GET, "/v1/openapi.json", openapi_document),
        route(M::GET, "/metrics", move |state| {
            scrape(state, metrics.clone())
        }),
    ]
}

/// Every route, each request counted and timed (`/metrics`).
pub fn router<S: Store + Send + 'static>(state: ApiState<S>) -> Router {
    let metrics = Arc::new(ApiMetrics::new());
    let router = routes::<S>(&metrics)
        .into_iter()
        .fold(Router::new(), |router, route| {
            router.route(route.path, route.handler)
        })
        .fallback(no_route)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(REQUEST_BODY_BYTES_MAX));
    metrics.metrics.track(router).with_state(state)
}

/// Serves the API on `listener` until the process ends (on its own
/// single-threaded runtime, apart from consensus).
pub fn serve<S: Store + Send + 'static>(
    listener: std::net::TcpListener,
    state: ApiState<S>,
) -> std::io::Result<()> {
    listener.set_nonblocking(true)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::from_std(listener)?;
        axum::serve(listener, router(state)).await
    })
}

/// An error answer: an HTTP status and `{"error":{"code","message"}}`.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
        }
    }

    fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    /// The node could not answer (its state is unreadable or the engine is
    /// not answering); not the client's fault.
    fn unavailable(message: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", message)
    }
}

/// Every error answer.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct ErrorBody {
    error: ErrorView,
}

#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct ErrorView {
    /// What went wrong, in snake_case, for programs to match on
    /// (`malformed_json`, `not_found`, `insufficient_balance`, …).
    #[schema(example = "not_found")]
    code: &'static str,
    /// What went wrong, for people.
    message: String,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: ErrorView {
                code: self.code,
                message: self.message,
            },
        };
        (self.status, Json(body)).into_response()
    }
}

impl From<JsonRejection> for ApiError {
    fn from(rejection: JsonRejection) -> Self {
        let status = rejection.status();
        let message = rejection.body_text();
        match status {
            StatusCode::PAYLOAD_TOO_LARGE => Self::new(
                status,
                "payload_too_large",
                format!("the request body is over {REQUEST_BODY_BYTES_MAX} bytes"),
            ),
            StatusCode::UNSUPPORTED_MEDIA_TYPE => Self::new(
                status,
                "unsupported_media_type",
                "the request body must be JSON (content-type: application/json)",
            ),
            _ if status.is_server_error() => Self::unavailable(message),
            // Syntax errors (400) and JSON of the wrong shape (422) alike.
            _ => Self::bad_request("malformed_json", message),
        }
    }
}

impl From<PathRejection> for ApiError {
    fn from(rejection: PathRejection) -> Self {
        if rejection.status().is_server_error() {
            return Self::new(
                rejection.status(),
                "internal",
                format!("the route is misconfigured: {}", rejection.body_text()),
            );
        }
        Self::bad_request("malformed_path", rejection.body_text())
    }
}

impl From<QueryRejection> for ApiError {
    fn from(rejection: QueryRejection) -> Self {
        Self::bad_request("malformed_query", rejection.body_text())
    }
}

impl From<Refused> for ApiError {
    fn from(refused: Refused) -> Self {
        match refused {
            Refused::Unavailable(_) => Self::unavailable(refused.to_string()),
            other => Self::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                other.code(),
                other.to_string(),
            ),
        }
    }
}

fn ledger_unavailable(error: idlegrid_ledger::LedgerError) -> ApiError {
    ApiError::unavailable(format!("the ledger could not be read: {error}"))
}

/// Runs `read` on the locked node on a blocking thread (a submitted dispute
/// re-executes a task under the lock; the API's one worker must not wait on
/// it), so the lock never meets an `.await`.
async fn with_node<S, T>(
    state: &ApiState<S>,
    read: impl FnOnce(&mut Node<S>) -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError>
where
    S: Store + Send + 'static,
    T: Send + 'static,
{
    let node = state.node.clone();
    tokio::task::spawn_blocking(move || {
        let mut node = node.lock().map_err(|_| {
            ApiError::unavailable("the node's state is poisoned by an earlier failure")
        })?;
        read(&mut node)
    })
    .await
    .map_err(|error| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            format!("the request failed inside the node: {error}"),
        )
    })?
}

/// A path segment, or our error for one axum could not decode.
fn segment(path: Result<Path<String>, PathRejection>) -> Result<String, ApiError> {
    Ok(path?.0)
}

fn parse_account(text: &str) -> Result<AccountId, ApiError> {
    text.parse().map_err(|error| {
        ApiError::bad_request("malformed_account", format!("not an account id: {error}"))
    })
}

// ---- POST /v1/transactions ----

#[derive(Debug, Deserialize, ToSchema)]
struct SubmitRequest {
    /// Hex of the canonical encoding of a signed transaction.
    transaction: String,
}

#[derive(Debug, Serialize, ToSchema)]
struct SubmitView {
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
async fn submit<S: Store + Send + 'static>(
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
struct RejectedView {
    code: String,
    message: String,
}

/// Where a transaction stands, as this validator knows it.
#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
enum TxState {
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
struct TxStatusView {
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
async fn transaction<S: Store + Send + 'static>(
    State(state): State<ApiState<S>>,
    path: Result<Path<String>, PathRejection>,
) -> Result<Json<TxStatusView>, ApiError> {
    let text = segment(path)?;
    let hash: ContentId = text.parse().map_err(|error| {
        ApiError::bad_request("malformed_hash", format!("not a transaction hash: {error}"))
    })?;
    let found = with_node(&state, move |node| {
        node.status(&hash).map_err(ledger_unavailable)
    })
    .await?;
    let mut view = TxStatusView {
        hash: hash.to_string(),
        status: TxState::Unknown,
        height: None,
        index: None,
        rejected: None,
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
struct UnbondingView {
    amount: u64,
    release_height: u64,
}

#[derive(Debug, Serialize, ToSchema)]
struct StakeView {
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
struct AccountView {
    account: String,
    balance: u64,
    /// The nonce the ledger expects next.
    nonce: u64,
    /// The nonce a new transaction should carry: past the ones pending here.
    next_nonce: u64,
    validator_stake: StakeView,
    provider_stake: StakeView,
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
async fn account<S: Store + Send + 'static>(
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
        })
    })
    .await?;
    Ok(Json(view))
}

// ---- GET /v1/jobs/{job} ----

#[derive(Debug, Serialize, ToSchema)]
struct LimitsView {
    fuel: u64,
    memory_bytes: u64,
    output_bytes: u64,
}

/// Whether a job still takes redemptions.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
enum JobState {
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
struct JobView {
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
async fn job<S: Store + Send + 'static>(
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
struct JobsQuery {
    /// Only jobs in this status.
    status: Option<JobState>,
    /// At most this many jobs.
    // The attribute takes literals: JOBS_LIMIT_MAX and JOBS_LIMIT_DEFAULT
    // (a test checks that the document says the same).
    #[param(minimum = 1, maximum = 500, default = 50)]
    limit: Option<usize>,
}

#[derive(Debug, Serialize, ToSchema)]
struct JobsView {
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
async fn jobs<S: Store + Send + 'static>(
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
struct StakeEntry {
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
struct ProvidersView {
    /// Accounts with bonded provider stake, and how much.
    providers: Vec<StakeEntry>,
}

/// Accounts with bonded provider stake, and how much.
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
async fn providers<S: Store + Send + 'static>(
    State(state): State<ApiState<S>>,
) -> Result<Json<ProvidersView>, ApiError> {
    let list = with_node(&state, |node| {
        node.ledger().providers().map_err(ledger_unavailable)
    })
    .await?;
    Ok(Json(ProvidersView {
        providers: stake_entries(list),
    }))
}

// ---- GET /v1/blocks/{height} ----

#[derive(Debug, Serialize, ToSchema)]
struct BlockTxView {
    hash: String,
    signer: String,
    nonce: u64,
    fee: u64,
    /// The transaction kind's snake_case name (`transfer`, `stake`, …).
    #[schema(example = "transfer")]
    kind: &'static str,
}

#[derive(Debug, Serialize, ToSchema)]
struct BlockView {
    height: u64,
    digest: String,
    parent: String,
    parent_state_root: String,
    transactions: Vec<BlockTxView>,
}

impl From<&Block> for BlockView {
    fn from(block: &Block) -> Self {
        Self {
            height: block.height,
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
async fn block<S: Store + Send + 'static>(
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
struct MempoolView {
    transactions: usize,
    bytes: usize,
}

#[derive(Debug, Serialize, ToSchema)]
struct PeerView {
    account: String,
    last_seen_ms: u64,
}

#[derive(Debug, Serialize, ToSchema)]
struct StatusView {
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
    /// The smallest fee a transaction may pay.
    minimum_fee: u64,
    mempool: MempoolView,
    /// The epoch the next block belongs to.
    epoch: u64,
    /// That epoch's validator set (the one running consensus now).
    validators: Vec<StakeEntry>,
    peers: Vec<PeerView>,
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
async fn status<S: Store + Send + 'static>(
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
            minimum_fee: ledger.params().minimum_fee,
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

/// The highest finalized height: the engine's once it runs (and answers
/// in time), never below `applied`, the ledger's height.
async fn finalized_height<S: Store>(state: &ApiState<S>, applied: u64) -> u64 {
    let Some(blocks) = state.blocks.get().cloned() else {
        return applied;
    };
    match tokio::time::timeout(ENGINE_ANSWER_TIMEOUT, blocks.finalized_height()).await {
        Ok(Some(finalized)) => applied.max(finalized),
        _ => applied,
    }
}

// ---- GET /metrics ----

/// The API's metrics: the HTTP requests' (from [`Metrics::track`]) and the
/// node's, read from it at each scrape.
#[derive(Debug)]
struct ApiMetrics {
    metrics: Metrics,
    ledger_height: Gauge,
    finalized_height: Gauge,
    mempool_transactions: Gauge,
    mempool_bytes: Gauge,
    peers_connected: Gauge,
    transactions_applied: Counter,
    transactions_rejected: Counter,
}

impl ApiMetrics {
    fn new() -> Self {
        let mut metrics = Metrics::new();
        let ledger_height = metrics.added::<Gauge>(
            "ledger_height",
            "The height of the last block applied to the ledger",
        );
        let finalized_height = metrics.added::<Gauge>(
            "finalized_height",
            "The highest block the engine knows is finalized (the ledger height before the engine runs)",
        );
        let mempool_transactions = metrics.added::<Gauge>(
            "mempool_transactions",
            "Transactions waiting in this validator's pool",
        );
        let mempool_bytes = metrics.added::<Gauge>(
            "mempool_bytes",
            "Encoded bytes of the transactions waiting in this validator's pool",
        );
        let peers_connected = metrics.added::<Gauge>(
            "peers_connected",
            &format!(
                "Other validators heard from on the relay channel in the last {} seconds",
                PEER_SILENCE_MAX.as_secs()
            ),
        );
        let transactions_applied = metrics.added::<Counter>(
            "transactions_applied",
            "Transactions in blocks finalized since this node started that the ledger applied",
        );
        let transactions_rejected = metrics.added::<Counter>(
            "transactions_rejected",
            "Transactions in blocks finalized since this node started that the ledger rejected",
        );
        Self {
            metrics,
            ledger_height,
            finalized_height,
            mempool_transactions,
            mempool_bytes,
            peers_connected,
            transactions_applied,
            transactions_rejected,
        }
    }
}

/// What a scrape reads from the node under its lock.
struct NodeReading {
    height: u64,
    mempool_transactions: usize,
    mempool_bytes: usize,
    peers_connected: usize,
    finalized: FinalizedCounts,
}

/// Prometheus metrics: ledger and finalized height, the pool, peers,
/// finalized transactions, and every API request by route, method and
/// status with its latency.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "meta",
    responses(
        (status = 200, description = "The metrics in the OpenMetrics text format", body = str, content_type = "application/openmetrics-text"),
        (status = 500, description = "The request failed inside the node (`internal`)", body = ErrorBody),
        (status = 503, description = "The node cannot answer now (`unavailable`)", body = ErrorBody),
    )
)]
async fn scrape<S: Store + Send + 'static>(
    State(state): State<ApiState<S>>,
    metrics: Arc<ApiMetrics>,
) -> Result<Response, ApiError> {
    let reading = with_node(&state, |node| {
        Ok(NodeReading {
            height: node.ledger().height(),
            mempool_transactions: node.mempool.len(),
            mempool_bytes: node.mempool.bytes(),
            peers_connected: node
                .peers()
                .iter()
                .filter(|(_, silent)| *silent <= PEER_SILENCE_MAX)
                .count(),
            finalized: node.finalized_transactions(),
        })
    })
    .await?;
    let finalized_height = finalized_height(&state, reading.height).await;
    metrics.ledger_height.set(gauge_value(reading.height));
    metrics.finalized_height.set(gauge_value(finalized_height));
    metrics
        .mempool_transactions
        .set(gauge_value(reading.mempool_transactions));
    metrics
        .mempool_bytes
        .set(gauge_value(reading.mempool_bytes));
    metrics
        .peers_connected
        .set(gauge_value(reading.peers_connected));
    // The node counts; the counters follow it (never back, so two scrapes
    // at once cannot count a block twice).
    metrics
        .transactions_applied
        .inner()
        .fetch_max(reading.finalized.applied, Ordering::Relaxed);
    metrics
        .transactions_rejected
        .inner()
        .fetch_max(reading.finalized.rejected, Ordering::Relaxed);
    Ok((
        [(axum::http::header::CONTENT_TYPE, metrics::CONTENT_TYPE)],
        metrics.metrics.render(),
    )
        .into_response())
}

// ---- GET /v1/health, GET /v1/openapi.json ----

/// Whether the API answers at all (always `ok`).
#[utoipa::path(
    get,
    path = "/v1/health",
    tag = "meta",
    responses((status = 200, description = "The API answers", body = str, content_type = "text/plain", example = "ok"))
)]
async fn health() -> &'static str {
    "ok"
}

/// This document: every route of the API in OpenAPI 3.1.
#[utoipa::path(
    get,
    path = "/v1/openapi.json",
    tag = "meta",
    responses((status = 200, description = "The OpenAPI 3.1 document", body = Object))
)]
async fn openapi_document() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}

/// The API as OpenAPI 3.1, from the handlers' `#[utoipa::path]`
/// annotations (the schemas they answer with are collected from them).
#[derive(Debug, OpenApi)]
#[openapi(
    info(
        title = "idlegrid validator API",
        description = "A validator's HTTP/JSON API: take signed transactions in, and show accounts, stake, jobs, finalized blocks and the node's status. Every error is `{\"error\":{\"code\",\"message\"}}`; one with no such route answers 404 `not_found`, a wrong method 405 `method_not_allowed`."
    ),
    paths(
        health,
        status,
        submit,
        transaction,
        account,
        jobs,
        job,
        providers,
        block,
        openapi_document,
        scrape
    )
)]
pub struct ApiDoc;

// ---- everything else ----

async fn no_route() -> ApiError {
    ApiError::not_found("there is no endpoint at this path (see /v1/status)")
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "this endpoint does not take that method",
    )
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use axum::http::Request;
    use idlegrid_chain::{Chain, Mempool, MempoolConfig, genesis_digest, shared};
    use idlegrid_ledger::{
        Genesis, Ledger, MemoryStore, NoReExecution, OpenJob, Params, SignedTransaction,
        Transaction, TxKind,
    };
    use idlegrid_types::codec::Bounded;
    use idlegrid_types::{ExecutionLimits, Keypair, codec};
    use serde_json::{Value, json};
    use tower::ServiceExt as _;

    use super::*;

    const CHAIN: &str = "idlegrid-api-test";

    fn key(seed: u8) -> Keypair {
        Keypair::from_seed([seed; 32])
    }

    /// A fresh ledger: account 1 holds 1,000; key 200 is the validator.
    fn genesis_ledger() -> Ledger<MemoryStore> {
        let genesis = Genesis {
            chain_id: CHAIN.to_owned(),
            params: Params::default(),
            balances: vec![(key(1).account_id(), 1_000)],
            validators: vec![(key(200).account_id(), 50_000)],
        };
        Ledger::init(MemoryStore::default(), &genesis).expect("genesis")
    }

    /// A router over a fresh ledger with no engine behind it.
    fn api() -> Router {
        api_over(genesis_ledger())
    }

    /// Applies `transactions` as the next block (named by its height), each
    /// of which must apply.
    fn apply(ledger: &mut Ledger<MemoryStore>, transactions: &[SignedTransaction]) {
        let height = ledger.height() + 1;
        let outcome = ledger
            .apply_named_block(
                ContentId::of(&height.to_be_bytes()),
                height,
                transactions,
                &NoReExecution,
            )
            .expect("block applies");
        for result in &outcome.transactions {
            assert!(result.outcome.is_ok(), "{:?}", result.outcome);
        }
    }

    fn signed(nonce: u64, kind: TxKind) -> SignedTransaction {
        key(1).sign(Transaction::new(CHAIN, nonce, 1, kind).expect("body"))
    }

    fn open_job(nonce: u64, deadline_height: u64) -> SignedTransaction {
        signed(
            nonce,
            TxKind::OpenJob(OpenJob {
                module: ContentId::of(b"module"),
                spec: ContentId::of(b"spec"),
                escrow: 100,
                price_per_million_fuel: 5,
                deadline_height,
                limits: ExecutionLimits {
                    fuel: 1_000_000,
                    memory_bytes: 1 << 20,
                    output_bytes: 1 << 10,
                },
            }),
        )
    }

    /// Three jobs of account 1, oldest first: the first closed (in the
    /// block that opened the third, before it), the others open; and the
    /// hash of the transaction that closed the first.
    fn ledger_with_jobs() -> (Ledger<MemoryStore>, [JobId; 3], ContentId) {
        let mut ledger = genesis_ledger();
        let requestor = key(1).account_id();
        apply(&mut ledger, &[open_job(0, 2)]);
        apply(&mut ledger, &[open_job(1, 100)]);
        let first = JobId::derive(&requestor, 0);
        let close = signed(2, TxKind::CloseJob { job: first });
        let close_hash = transaction_hash(&close);
        apply(&mut ledger, &[close, open_job(3, 100)]);
        let jobs = [
            first,
            JobId::derive(&requestor, 1),
            JobId::derive(&requestor, 3),
        ];
        (ledger, jobs, close_hash)
    }

    fn api_over(ledger: Ledger<MemoryStore>) -> Router {
        router(state_over(ledger))
    }

    /// The API's state over `ledger`, with no engine (no blocks) yet.
    fn state_over(ledger: Ledger<MemoryStore>) -> ApiState<MemoryStore> {
        let chain = Chain::new(ledger).expect("chain");
        let node = shared(
            chain,
            Mempool::new(MempoolConfig::default()),
            Box::new(NoReExecution),
        );
        ApiState {
            submissions: crate::submissions::Submissions::new(node.clone()),
            node,
            blocks: Arc::new(OnceLock::new()),
            validator: key(200).account_id(),
        }
    }

    /// Finalized blocks a test made, in place of the engine's store.
    #[derive(Debug)]
    struct TestBlocks(Vec<Block>);

    impl FinalizedBlocks for TestBlocks {
        fn at(&self, height: u64) -> BoxFuture<'_, Option<Block>> {
            let found = self.0.iter().find(|block| block.height == height).cloned();
            Box::pin(async move { found })
        }

        fn finalized_height(&self) -> BoxFuture<'_, Option<u64>> {
            let highest = self.0.iter().map(|block| block.height).max();
            Box::pin(async move { highest })
        }
    }

    fn transfer(nonce: u64, amount: u64) -> SignedTransaction {
        let body = Transaction::new(
            CHAIN,
            nonce,
            1,
            TxKind::Transfer {
                to: key(2).account_id(),
                amount,
            },
        )
        .expect("body");
        key(1).sign(body)
    }

    fn submission(transaction: &SignedTransaction) -> Vec<u8> {
        let bytes = codec::encode(transaction).expect("encode");
        json!({ "transaction": hex::encode(bytes) })
            .to_string()
            .into_bytes()
    }

    /// Sends one request; returns the status and the JSON body.
    async fn call(
        api: &Router,
        method: &str,
        uri: &str,
        content_type: &str,
        body: Vec<u8>,
    ) -> (StatusCode, Value) {
        let request = Request::builder()
            .method(method)
            .uri(uri)
            .header("content-type", content_type)
            .body(Body::from(body))
            .expect("request");
        let response = api.clone().oneshot(request).await.expect("infallible");
        let status = response.status();
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .expect("body");
        let body = serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| panic!("{uri}: not JSON: {}", String::from_utf8_lossy(&bytes)));
        (status, body)
    }

    async fn get_json(api: &Router, uri: &str) -> (StatusCode, Value) {
        call(api, "GET", uri, "application/json", Vec::new()).await
    }

    /// Expects `request` to be answered with `status` and error `code`.
    async fn check(
        api: &Router,
        (method, uri, content_type, body): (&str, &str, &str, Vec<u8>),
        expected: (u16, &str),
    ) {
        let (status, answer) = call(api, method, uri, content_type, body).await;
        assert_eq!(
            (status.as_u16(), answer["error"]["code"].as_str()),
            (expected.0, Some(expected.1)),
            "{method} {uri}: {answer}"
        );
        assert!(
            answer["error"]["message"]
                .as_str()
                .is_some_and(|message| !message.is_empty()),
            "{method} {uri}: {answer}"
        );
    }

    #[tokio::test]
    async fn status_answers_before_the_engine_starts() {
        let api = api();
        let (status, body) = get_json(&api, "/v1/status").await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["chain_id"], CHAIN);
        assert_eq!(body["height"], 0);
        assert_eq!(body["finalized_height"], 0);
        assert_eq!(body["minimum_fee"], 1);
        assert_eq!(body["validator"], key(200).account_id().to_string());
        assert_eq!(body["validators"][0]["stake"], 50_000);
        assert_eq!(body["mempool"]["transactions"], 0);
        assert_eq!(body["state_root"].as_str().map(str::len), Some(64));
    }

    #[tokio::test]
    async fn submitted_transactions_are_pending_and_advance_the_next_nonce() {
        let api = api();
        let first = transfer(0, 10);
        let (status, body) = call(
            &api,
            "POST",
            "/v1/transactions",
            "application/json",
            submission(&first),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let hash = transaction_hash(&first).to_string();
        assert_eq!(body["hash"], hash.as_str());
        let (_, body) = get_json(&api, &format!("/v1/transactions/{hash}")).await;
        assert_eq!(body["status"], "pending");
        assert!(body.get("height").is_none(), "{body}");
        // A later nonce waits behind the first.
        let (status, _) = call(
            &api,
            "POST",
            "/v1/transactions",
            "application/json",
            submission(&transfer(1, 10)),
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        let (status, body) = get_json(&api, &format!("/v1/accounts/{}", key(1).account_id())).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["balance"], 1_000);
        assert_eq!(body["nonce"], 0);
        assert_eq!(body["next_nonce"], 2);
        assert_eq!(body["provider_stake"]["bonded"], 0);
        let (_, body) = get_json(&api, "/v1/status").await;
        assert_eq!(body["mempool"]["transactions"], 2);
        let unknown = ContentId::of(b"nothing");
        let (_, body) = get_json(&api, &format!("/v1/transactions/{unknown}")).await;
        assert_eq!(body["status"], "unknown");
        let (status, body) = get_json(&api, "/v1/providers").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body["providers"], json!([]));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_submissions_each_get_their_own_answer() {
        let api = api();
        let good: Vec<SignedTransaction> = (0..40).map(|nonce| transfer(nonce, 1)).collect();
        // Signed by another key than the one it names.
        let mut forged = transfer(40, 1);
        forged.signature = key(2).sign(forged.body.clone()).signature;
        let requests = good
            .iter()
            .chain([&forged])
            .map(|transaction| {
                let (api, body) = (api.clone(), submission(transaction));
                tokio::spawn(async move {
                    call(&api, "POST", "/v1/transactions", "application/json", body).await
                })
            })
            .collect::<Vec<_>>();
        let mut answers = Vec::new();
        for request in requests {
            answers.push(request.await.expect("the request ran"));
        }
        let (forged_answer, good_answers) = answers.split_last().expect("answers");
        for (transaction, (status, body)) in good.iter().zip(good_answers) {
            assert_eq!(*status, StatusCode::OK, "{body}");
            assert_eq!(
                body["hash"],
                transaction_hash(transaction).to_string().as_str()
            );
        }
        let (status, body) = forged_answer;
        assert_eq!(*status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
        assert_eq!(body["error"]["code"], "bad_signature", "{body}");
        let (_, body) = get_json(&api, "/v1/status").await;
        assert_eq!(body["mempool"]["transactions"], 40);
    }

    #[tokio::test]
    async fn jobs_are_listed_most_recently_opened_first_and_filtered() {
        let (ledger, [first, second, third], _) = ledger_with_jobs();
        let api = api_over(ledger);
        let listed = |body: &Value| -> Vec<String> {
            body["jobs"]
                .as_array()
                .unwrap_or_else(|| panic!("no job list: {body}"))
                .iter()
                .map(|job| job["job"].as_str().unwrap_or_default().to_owned())
                .collect()
        };
        let ids = |jobs: &[JobId]| -> Vec<String> { jobs.iter().map(JobId::to_string).collect() };
        for (uri, expected) in [
            ("/v1/jobs", ids(&[third, second, first])),
            ("/v1/jobs?limit=2", ids(&[third, second])),
            ("/v1/jobs?status=open", ids(&[third, second])),
            ("/v1/jobs?status=open&limit=1", ids(&[third])),
            ("/v1/jobs?status=closed", ids(&[first])),
            ("/v1/jobs?limit=500&status=closed", ids(&[first])),
        ] {
            let (status, body) = get_json(&api, uri).await;
            assert_eq!(status, StatusCode::OK, "{uri}: {body}");
            assert_eq!(listed(&body), expected, "{uri}");
        }
        // Each entry is what /v1/jobs/{job} answers.
        let (_, list) = get_json(&api, "/v1/jobs").await;
        for entry in list["jobs"].as_array().expect("jobs") {
            let uri = format!("/v1/jobs/{}", entry["job"].as_str().expect("id"));
            let (status, single) = get_json(&api, &uri).await;
            assert_eq!(status, StatusCode::OK, "{uri}");
            assert_eq!(&single, entry);
        }
        assert_eq!(list["jobs"][2]["status"], "closed");
        assert_eq!(list["jobs"][2]["escrow"], 0);
        assert_eq!(list["jobs"][0]["status"], "open");
        assert_eq!(list["jobs"][0]["limits"]["fuel"], 1_000_000);
        // A fresh ledger has none.
        let (status, body) = get_json(&api_over(genesis_ledger()), "/v1/jobs").await;
        assert_eq!((status, body), (StatusCode::OK, json!({ "jobs": [] })));
    }

    #[tokio::test]
    async fn bad_requests_get_json_errors() {
        let api = api();
        let json = "application/json";
        let mut bad_signature = codec::encode(&transfer(0, 10)).expect("encode");
        let last = bad_signature.len() - 1;
        bad_signature[last] ^= 1;
        let bad_signature = json!({ "transaction": hex::encode(bad_signature) })
            .to_string()
            .into_bytes();
        let wrong_chain = key(1).sign(
            Transaction::new(
                "another-chain",
                0,
                1,
                TxKind::Transfer {
                    to: key(2).account_id(),
                    amount: 1,
                },
            )
            .expect("body"),
        );
        let post = |body: Vec<u8>| ("POST", "/v1/transactions", json, body);
        let get = |uri: &'static str| ("GET", uri, json, Vec::new());
        let cases = [
            (post(b"{not json".to_vec()), (400, "malformed_json")),
            (post(b"[1,2,3]".to_vec()), (400, "malformed_json")),
            (post(Vec::new()), (400, "malformed_json")),
            (
                (
                    "POST",
                    "/v1/transactions",
                    "application/octet-stream",
                    vec![1],
                ),
                (415, "unsupported_media_type"),
            ),
            (
                post(br#"{"transaction":"xyz"}"#.to_vec()),
                (400, "malformed_transaction"),
            ),
            (
                post(br#"{"transaction":"00ff00ff"}"#.to_vec()),
                (400, "malformed_transaction"),
            ),
            (post(bad_signature), (422, "bad_signature")),
            (
                post(submission(&transfer(0, 5_000))),
                (422, "insufficient_balance"),
            ),
            (post(submission(&wrong_chain)), (422, "wrong_chain")),
            (
                post(vec![b' '; REQUEST_BODY_BYTES_MAX + 1]),
                (413, "payload_too_large"),
            ),
            (get("/v1/transactions/b3:zz"), (400, "malformed_hash")),
            (get("/v1/accounts/did:key:nope"), (400, "malformed_account")),
            (get("/v1/accounts/%FF%FE"), (400, "malformed_path")),
            (get("/v1/jobs/job:12"), (400, "malformed_job_id")),
            (
                get(
                    "/v1/jobs/job:0000000000000000000000000000000000000000000000000000000000000000",
                ),
                (404, "not_found"),
            ),
            (get("/v1/jobs?status=pending"), (400, "malformed_query")),
            (get("/v1/jobs?limit=many"), (400, "malformed_query")),
            (get("/v1/jobs?limit=0"), (400, "malformed_query")),
            (get("/v1/jobs?limit=501"), (400, "malformed_query")),
            (get("/v1/jobs?limit=-1"), (400, "malformed_query")),
            (get("/v1/blocks/-1"), (400, "malformed_height")),
            (get("/v1/blocks/1"), (503, "starting")),
            (get("/v1/nothing/here"), (404, "not_found")),
            (get("/v1/accounts/"), (404, "not_found")),
            (
                ("POST", "/v1/status", json, Vec::new()),
                (405, "method_not_allowed"),
            ),
            (get("/v1/transactions"), (405, "method_not_allowed")),
        ];
        for (request, expected) in cases {
            check(&api, request, expected).await;
        }
        // Nothing bad was taken in.
        let (_, body) = get_json(&api, "/v1/status").await;
        assert_eq!(body["mempool"]["transactions"], 0, "{body}");
    }

    /// Sends one request; returns the status, the content type and the body.
    async fn call_raw(
        api: &Router,
        method: &str,
        uri: &str,
        body: Vec<u8>,
    ) -> (StatusCode, String, Vec<u8>) {
        let request = Request::builder()
            .method(method)
            .uri(uri)
            .header("content-type", "application/json")
            .body(Body::from(body))
            .expect("request");
        let response = api.clone().oneshot(request).await.expect("infallible");
        let status = response.status();
        let content_type = response
            .headers()
            .get("content-type")
            .and_then(|value| value.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .expect("body");
        (status, content_type, bytes.to_vec())
    }

    /// The document as the API serves it, parsed as OpenAPI 3.1.
    async fn served_document(api: &Router) -> (Value, oas3::Spec) {
        let (status, body) = get_json(api, "/v1/openapi.json").await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let spec = oas3::from_json(body.to_string()).expect("an OpenAPI 3.1 document");
        let version = spec.validate_version().expect("a supported version");
        assert_eq!((version.major, version.minor), (3, 1));
        (body, spec)
    }

    /// Every `$ref` string in `value`, with where it was found.
    fn references(value: &Value, at: &str, found: &mut Vec<(String, String)>) {
        match value {
            Value::Object(map) => {
                for (key, inner) in map {
                    if key == "$ref"
                        && let Some(target) = inner.as_str()
                    {
                        found.push((at.to_owned(), target.to_owned()));
                    }
                    references(inner, &format!("{at}/{key}"), found);
                }
            }
            Value::Array(items) => {
                for (index, inner) in items.iter().enumerate() {
                    references(inner, &format!("{at}/{index}"), found);
                }
            }
            _ => {}
        }
    }

    #[tokio::test]
    async fn the_openapi_document_describes_exactly_the_routes() {
        let api = api();
        let (document, spec) = served_document(&api).await;
        assert_eq!(
            document,
            serde_json::to_value(ApiDoc::openapi()).expect("json")
        );

        // The same (path, method) pairs as the router's one list.
        let key = |path: &str, method: MethodFilter| format!("{method:?} {path}");
        let mut routed: Vec<String> = routes::<MemoryStore>(&Arc::new(ApiMetrics::new()))
            .iter()
            .map(|route| key(route.path, route.method))
            .collect();
        let mut documented: Vec<String> = spec
            .operations()
            .map(|(path, method, _)| {
                let filter = MethodFilter::try_from(method).expect("a method axum routes");
                key(&path, filter)
            })
            .collect();
        routed.sort();
        documented.sort();
        assert_eq!(documented, routed);

        // Every reference resolves, as a schema, in the document.
        let mut found = Vec::new();
        references(&document, "", &mut found);
        assert!(!found.is_empty());
        for (at, target) in found {
            let pointer = target.strip_prefix('#').unwrap_or(&target);
            assert!(
                document.pointer(pointer).is_some(),
                "{at}: {target} is not in the document"
            );
            oas3::spec::ObjectOrReference::<oas3::spec::Schema>::Ref {
                ref_path: target.clone(),
                summary: None,
                description: None,
            }
            .resolve(&spec)
            .unwrap_or_else(|error| panic!("{at}: {target} does not resolve: {error}"));
        }

        // Every operation documents its errors with the one error body.
        for (path, method, operation) in spec.operations() {
            let responses = operation.responses.as_ref().expect("responses");
            assert!(responses.contains_key("200"), "{method} {path}");
            for (status, response) in responses {
                if status.starts_with('2') {
                    continue;
                }
                let text = serde_json::to_string(response).expect("json");
                assert!(
                    text.contains("#/components/schemas/ErrorBody"),
                    "{method} {path} {status}: {text}"
                );
            }
        }

        // The documented bounds of `limit` are the handler's.
        let limit = document["paths"]["/v1/jobs"]["get"]["parameters"]
            .as_array()
            .expect("parameters")
            .iter()
            .find(|parameter| parameter["name"] == "limit")
            .expect("a limit parameter")
            .clone();
        assert_eq!(limit["in"], "query");
        assert_eq!(limit["schema"]["maximum"], json!(JOBS_LIMIT_MAX));
        assert_eq!(limit["schema"]["default"], json!(JOBS_LIMIT_DEFAULT));
    }

    #[tokio::test]
    async fn every_documented_route_answers_with_a_documented_status() {
        let (ledger, [_, _, job], included) = ledger_with_jobs();
        let state = state_over(ledger);
        let block = Block {
            parent: genesis_digest(CHAIN),
            height: 1,
            parent_state_root: [0; 32],
            transactions: Bounded::new(vec![open_job(0, 2)]).expect("one transaction"),
        };
        let _ = state.blocks.set(Arc::new(TestBlocks(vec![block])));
        let api = router(state);
        let (_, spec) = served_document(&api).await;
        let values: [(&str, Vec<String>); 4] = [
            ("{account}", vec![key(1).account_id().to_string()]),
            ("{job}", vec![job.to_string()]),
            ("{hash}", vec![included.to_string()]),
            ("{height}", vec!["0".to_owned(), "1".to_owned()]),
        ];
        // Account 1 opened three jobs and closed one: its next nonce is 4.
        let submitted = submission(&signed(
            4,
            TxKind::Transfer {
                to: key(2).account_id(),
                amount: 1,
            },
        ));
        let mut answered = Vec::new();
        for (template, method, operation) in spec.operations() {
            let uris: Vec<String> = match values
                .iter()
                .find(|(parameter, _)| template.contains(parameter))
            {
                Some((parameter, values)) => values
                    .iter()
                    .map(|value| template.replace(parameter, value))
                    .collect(),
                None => vec![template.clone()],
            };
            assert!(!uris.iter().any(|uri| uri.contains('{')), "{template}");
            for uri in uris {
                let body = if method == axum::http::Method::POST {
                    submitted.clone()
                } else {
                    Vec::new()
                };
                let (status, content_type, bytes) =
                    call_raw(&api, method.as_str(), &uri, body).await;
                let text = String::from_utf8_lossy(&bytes);
                let responses = operation.responses.as_ref().expect("responses");
                let documented = responses
                    .get(status.as_str())
                    .unwrap_or_else(|| panic!("{method} {uri}: {status} is not documented: {text}"))
                    .resolve(&spec)
                    .expect("a response");
                assert!(
                    !status.is_server_error() && status != StatusCode::METHOD_NOT_ALLOWED,
                    "{method} {uri}: {status} {text}"
                );
                assert!(
                    !text.contains("no endpoint at this path"),
                    "{method} {uri}: no such route"
                );
                assert!(
                    documented
                        .content
                        .keys()
                        .any(|media| content_type.starts_with(media.as_str())),
                    "{method} {uri}: answered {content_type}, documented {:?}",
                    documented.content.keys().collect::<Vec<_>>()
                );
                answered.push(format!("{method} {uri} {}", status.as_u16()));
            }
        }
        answered.sort();
        let height_zero = "GET /v1/blocks/0 404".to_owned();
        assert!(answered.contains(&height_zero), "{answered:#?}");
        assert_eq!(
            answered
                .iter()
                .filter(|line| line.ends_with(" 200"))
                .count(),
            answered.len() - 1,
            "everything but the block at height 0 is found: {answered:#?}"
        );
    }

    /// The samples of an exposition, `name{labels}` to value, after
    /// checking each line's shape: `# HELP`/`# TYPE`/`# UNIT` before each
    /// family's samples, one `# EOF` last.
    fn parse_exposition(text: &str) -> std::collections::BTreeMap<String, f64> {
        let mut samples = std::collections::BTreeMap::new();
        let mut families = Vec::new();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.last(), Some(&"# EOF"), "{text}");
        for line in &lines[..lines.len() - 1] {
            if let Some(comment) = line.strip_prefix("# ") {
                let mut words = comment.splitn(3, ' ');
                let kind = words.next().unwrap_or_default();
                assert!(["HELP", "TYPE", "UNIT"].contains(&kind), "{line}");
                families.push(words.next().expect("a family").to_owned());
                continue;
            }
            let (series, value) = line.rsplit_once(' ').expect("a sample and its value");
            let name = series.split('{').next().unwrap_or_default();
            assert!(
                name.starts_with("idlegrid_")
                    && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
                "{line}"
            );
            assert!(
                families
                    .iter()
                    .any(|family| name.starts_with(family.as_str())),
                "{line}: no # TYPE for it"
            );
            let value: f64 = value.parse().unwrap_or_else(|_| panic!("{line}: value"));
            assert!(
                samples.insert(series.to_owned(), value).is_none(),
                "{line} twice"
            );
        }
        samples
    }

    #[tokio::test]
    async fn metrics_report_the_node_and_every_request() {
        let (ledger, _, _) = ledger_with_jobs();
        let state = state_over(ledger);
        let finalized = Block {
            parent: genesis_digest(CHAIN),
            height: 5,
            parent_state_root: [0; 32],
            transactions: Bounded::new(Vec::new()).expect("empty"),
        };
        let _ = state.blocks.set(Arc::new(TestBlocks(vec![finalized])));
        let api = router(state);
        let transfer = signed(
            4,
            TxKind::Transfer {
                to: key(2).account_id(),
                amount: 1,
            },
        );
        let (status, _) = call(
            &api,
            "POST",
            "/v1/transactions",
            "application/json",
            submission(&transfer),
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        get_json(&api, "/v1/nothing/here").await;
        get_json(&api, "/v1/jobs/job:12").await;
        let (_, node) = get_json(&api, "/v1/status").await;

        let (status, content_type, body) = call_raw(&api, "GET", "/metrics", Vec::new()).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(content_type, metrics::CONTENT_TYPE);
        let text = String::from_utf8(body).expect("text");
        let samples = parse_exposition(&text);
        let value = |series: &str| {
            *samples
                .get(series)
                .unwrap_or_else(|| panic!("no {series} in\n{text}"))
        };
        // The node's numbers are /v1/status's.
        for (series, expected) in [
            ("idlegrid_ledger_height", &node["height"]),
            ("idlegrid_finalized_height", &node["finalized_height"]),
            (
                "idlegrid_mempool_transactions",
                &node["mempool"]["transactions"],
            ),
            ("idlegrid_mempool_bytes", &node["mempool"]["bytes"]),
        ] {
            assert_eq!(Some(value(series)), expected.as_f64(), "{series}");
        }
        assert_eq!(value("idlegrid_ledger_height"), 3.0);
        assert_eq!(value("idlegrid_finalized_height"), 5.0);
        assert_eq!(value("idlegrid_mempool_transactions"), 1.0);
        assert_eq!(value("idlegrid_peers_connected"), 0.0);
        // No engine here has finalized a block.
        assert_eq!(value("idlegrid_transactions_applied_total"), 0.0);
        assert_eq!(value("idlegrid_transactions_rejected_total"), 0.0);
        // Requests before this scrape, by route template.
        let requests = |labels: &str| value(&format!("idlegrid_http_requests_total{{{labels}}}"));
        assert_eq!(
            requests(r#"route="/v1/transactions",method="POST",status="200""#),
            1.0
        );
        assert_eq!(
            requests(r#"route="/v1/jobs/{job}",method="GET",status="400""#),
            1.0
        );
        assert_eq!(
            requests(r#"route="unmatched",method="GET",status="404""#),
            1.0
        );
        assert_eq!(
            requests(r#"route="/v1/status",method="GET",status="200""#),
            1.0
        );
        assert_eq!(
            value(r#"idlegrid_http_request_duration_seconds_count{route="/v1/status"}"#),
            1.0
        );
        assert!(value(r#"idlegrid_http_request_duration_seconds_sum{route="/v1/status"}"#) > 0.0);
        // The scrape itself is counted for the next one.
        let (_, _, body) = call_raw(&api, "GET", "/metrics", Vec::new()).await;
        let again = parse_exposition(&String::from_utf8(body).expect("text"));
        assert_eq!(
            again
                .get(r#"idlegrid_http_requests_total{route="/metrics",method="GET",status="200"}"#),
            Some(&1.0)
        );
    }
}
