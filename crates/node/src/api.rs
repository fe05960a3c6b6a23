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

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::extract::rejection::{JsonRejection, PathRejection};
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use idlegrid_chain::engine::Blocks;
use idlegrid_chain::{Block, Node, Refused, SharedNode, TxStatus};
use idlegrid_ledger::{
    Job, JobStatus, Stake, StakeRole, Store, decode_transaction, transaction_hash,
};
use idlegrid_types::{AccountId, ContentId, JobId};
use serde::{Deserialize, Serialize};

/// The largest request body. The hex of a transaction is twice its bytes,
/// so this admits every transfer, stake and job transaction with room to
/// spare; a dispute carrying a module over ~500 KiB needs a binary upload
/// path, which is not built yet.
pub const REQUEST_BODY_BYTES_MAX: usize = 1 << 20;

/// How long a handler waits on the consensus engine's block store before
/// answering `unavailable` (the store lives on the engine's runtime).
const ENGINE_ANSWER_TIMEOUT: Duration = Duration::from_secs(5);

/// What the handlers share.
#[derive(Debug)]
pub struct ApiState<S: Store> {
    pub node: SharedNode<S>,
    /// Finalized blocks, once the engine has started.
    pub blocks: Arc<OnceLock<Blocks>>,
    /// This validator's account.
    pub validator: AccountId,
}

impl<S: Store> Clone for ApiState<S> {
    fn clone(&self) -> Self {
        Self {
            node: self.node.clone(),
            blocks: self.blocks.clone(),
            validator: self.validator,
        }
    }
}

/// Every route.
pub fn router<S: Store + Send + 'static>(state: ApiState<S>) -> Router {
    Router::new()
        .route("/v1/health", get(|| async { "ok" }))
        .route("/v1/status", get(status::<S>))
        .route("/v1/transactions", post(submit::<S>))
        .route("/v1/transactions/{hash}", get(transaction::<S>))
        .route("/v1/accounts/{account}", get(account::<S>))
        .route("/v1/jobs/{job}", get(job::<S>))
        .route("/v1/providers", get(providers::<S>))
        .route("/v1/blocks/{height}", get(block::<S>))
        .fallback(no_route)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(REQUEST_BODY_BYTES_MAX))
        .with_state(state)
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

#[derive(Debug, Serialize)]
struct ErrorBody<'a> {
    error: ErrorView<'a>,
}

#[derive(Debug, Serialize)]
struct ErrorView<'a> {
    code: &'a str,
    message: &'a str,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: ErrorView {
                code: self.code,
                message: &self.message,
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

#[derive(Debug, Deserialize)]
struct SubmitRequest {
    /// Hex of the canonical encoding of a signed transaction.
    transaction: String,
}

#[derive(Debug, Serialize)]
struct SubmitView {
    hash: String,
}

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
    // The signature is checked outside the node's lock (a bad one is
    // refused by the submit below with its reason).
    if let Some(cache) = idlegrid_chain::signature_cache(&state.node) {
        let _ = cache.verify(&transaction);
    }
    let hash = with_node(&state, move |node| Ok(node.submit(transaction)?)).await?;
    Ok(Json(SubmitView {
        hash: hash.to_string(),
    }))
}

// ---- GET /v1/transactions/{hash} ----

#[derive(Debug, Serialize)]
struct RejectedView {
    code: String,
    message: String,
}

#[derive(Debug, Serialize)]
struct TxStatusView {
    hash: String,
    /// `pending`, `included`, `dropped` or `unknown`.
    status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    height: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    index: Option<u32>,
    /// Why it did not apply: included but rejected by the ledger, or dropped
    /// from the pool.
    #[serde(skip_serializing_if = "Option::is_none")]
    rejected: Option<RejectedView>,
}

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
        status: "unknown",
        height: None,
        index: None,
        rejected: None,
    };
    match found {
        TxStatus::Pending => view.status = "pending",
        TxStatus::Included(record) => {
            view.status = "included";
            view.height = Some(record.height);
            view.index = Some(record.index);
            view.rejected = record
                .rejected
                .map(|(code, message)| RejectedView { code, message });
        }
        TxStatus::Dropped { code, message } => {
            view.status = "dropped";
            view.rejected = Some(RejectedView { code, message });
        }
        TxStatus::Unknown => {}
    }
    Ok(Json(view))
}

// ---- GET /v1/accounts/{account} ----

#[derive(Debug, Serialize)]
struct UnbondingView {
    amount: u64,
    release_height: u64,
}

#[derive(Debug, Serialize)]
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

#[derive(Debug, Serialize)]
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

#[derive(Debug, Serialize)]
struct LimitsView {
    fuel: u64,
    memory_bytes: u64,
    output_bytes: u64,
}

#[derive(Debug, Serialize)]
struct JobView {
    job: String,
    requestor: String,
    module: String,
    spec: String,
    escrow: u64,
    price_per_million_fuel: u64,
    deadline_height: u64,
    limits: LimitsView,
    /// `open` or `closed`.
    status: &'static str,
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
            status: match job.status {
                JobStatus::Open => "open",
                JobStatus::Closed => "closed",
            },
            redeemed_total: job.redeemed_total,
        }
    }
}

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

// ---- GET /v1/providers ----

#[derive(Debug, Serialize)]
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

#[derive(Debug, Serialize)]
struct ProvidersView {
    /// Accounts with bonded provider stake, and how much.
    providers: Vec<StakeEntry>,
}

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

#[derive(Debug, Serialize)]
struct BlockTxView {
    hash: String,
    signer: String,
    nonce: u64,
    fee: u64,
    /// The transaction kind's snake_case name (`transfer`, `stake`, …).
    kind: &'static str,
}

#[derive(Debug, Serialize)]
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

#[derive(Debug, Serialize)]
struct MempoolView {
    transactions: usize,
    bytes: usize,
}

#[derive(Debug, Serialize)]
struct PeerView {
    account: String,
    last_seen_ms: u64,
}

#[derive(Debug, Serialize)]
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

async fn status<S: Store + Send + 'static>(
    State(state): State<ApiState<S>>,
) -> Result<Json<StatusView>, ApiError> {
    let validator = state.validator;
    let mut view = with_node(&state, move |node| {
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
    if let Some(blocks) = state.blocks.get().cloned()
        && let Ok(Some(finalized)) =
            tokio::time::timeout(ENGINE_ANSWER_TIMEOUT, blocks.finalized_height()).await
    {
        view.finalized_height = view.finalized_height.max(finalized);
    }
    Ok(Json(view))
}

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
    use idlegrid_chain::{Chain, Mempool, MempoolConfig, shared};
    use idlegrid_ledger::{
        Genesis, Ledger, MemoryStore, NoReExecution, Params, SignedTransaction, Transaction, TxKind,
    };
    use idlegrid_types::{Keypair, codec};
    use serde_json::{Value, json};
    use tower::ServiceExt as _;

    use super::*;

    const CHAIN: &str = "idlegrid-api-test";

    fn key(seed: u8) -> Keypair {
        Keypair::from_seed([seed; 32])
    }

    /// A router over a fresh ledger (account 1 holds 1,000; key 200 is the
    /// validator) with no engine behind it.
    fn api() -> Router {
        let genesis = Genesis {
            chain_id: CHAIN.to_owned(),
            params: Params::default(),
            balances: vec![(key(1).account_id(), 1_000)],
            validators: vec![(key(200).account_id(), 50_000)],
        };
        let ledger = Ledger::init(MemoryStore::default(), &genesis).expect("genesis");
        let chain = Chain::new(ledger).expect("chain");
        let node = shared(
            chain,
            Mempool::new(MempoolConfig::default()),
            Box::new(NoReExecution),
        );
        router(ApiState {
            node,
            blocks: Arc::new(OnceLock::new()),
            validator: key(200).account_id(),
        })
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
}
