//! Jobs over HTTP: the gateway runs the requestor role for clients that
//! speak HTTP (a Python notebook, a shell script, a web app) without
//! holding their funds.
//!
//! 1. `PUT /v1/blobs` takes a module or an input; `POST /v1/jobs` takes a
//!    job (the job file's fields as JSON, naming blobs by content id),
//!    checks it as `idlegrid submit` would, makes a key for this job only
//!    (its *agent*), and answers the unsigned `OpenJob` transaction that
//!    escrows the budget from the client's account and names the agent.
//! 2. The client checks the transaction and signs it itself:
//!    `POST /v1/jobs/{job}/signature`. The gateway submits it and, once it
//!    is in a block, runs the job with the agent's key: the agent places
//!    the tasks and signs the vouchers, which the ledger pays from this
//!    job's escrow only, so the gateway can never pay more than the client
//!    put in; the refund after the deadline is the client's.
//! 3. `GET /v1/jobs/{job}/progress` (or `/events`, server-sent) follows
//!    it; `GET /v1/jobs/{job}/results` lists verified results as they
//!    come, with their content ids, and `GET /v1/blobs/{cid}` serves each
//!    output. Jobs live in the gateway, not in the connection: a client
//!    that went away comes back for its results.
//!
//! Access is open or by API key ([`crate::access`]); a job is visible only
//! to the key that created it.

use std::collections::HashMap;
use std::convert::Infallible;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::JsonRejection;
use axum::extract::{DefaultBodyLimit, Path as UrlPath, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use idlegrid_api::ErrorBody;
use idlegrid_api::client::ApiClient;
use idlegrid_ledger::{SignedTransaction, Transaction, TxKind};
use idlegrid_market::MarketConfig;
use idlegrid_net::{Multiaddr, OverlayConfig, Request, Response as WorkResponse};
use idlegrid_requestor::core::REFEREE_FUEL_DEFAULT;
use idlegrid_requestor::jobspec::JOB_FILE_BYTES_MAX;
use idlegrid_requestor::{
    JobFile, OpenedJob, ResultFeed, SubmitConfig, SubmitProgress, TaskRecord, submit,
};
use idlegrid_types::{AccountId, ContentId, JobId, Keypair, Signature, Signed, codec};
use serde::Deserialize;
use serde_json::{Value, json};
use tracing::{info, warn};

mod job;

use job::{HttpJob, Phase};

use crate::access::{Access, Caller, JOB_SLOT_RETRY_SECS, Uploads};
use crate::blobs::{BLOB_BYTES_MAX, BLOB_STORE_BYTES_DEFAULT, BlobStore};
use crate::dashboard::{Local, LocalJob};
use crate::job_json::{fetch_url, invalid, job_file};
use crate::refusal::Refusal;

/// Jobs (unsigned, opening or running) a gateway runs at once, by default.
pub const LIVE_JOBS_DEFAULT: usize = 16;
/// Jobs a gateway remembers (finished ones are forgotten oldest first).
pub const JOBS_KEPT_MAX: usize = 256;
/// How long an unsigned job waits for its signature.
pub const UNSIGNED_TTL: Duration = Duration::from_secs(600);
/// Results one `GET /v1/jobs/{job}/results` answers at most.
pub const RESULTS_LIMIT_MAX: usize = 10_000;
const RESULTS_LIMIT_DEFAULT: usize = 1_000;
/// Clients following a job's events at once, in all.
const EVENT_CLIENTS_MAX: usize = 256;
/// How often a followed job's progress is looked at.
const EVENTS_EVERY: Duration = Duration::from_millis(250);
/// How long fetching one URL input may take.
const URL_FETCH_TIMEOUT: Duration = Duration::from_secs(60);
/// How long the client's `OpenJob` may take to reach a block.
const OPEN_WAIT: Duration = Duration::from_secs(60);

/// How a gateway runs jobs for HTTP clients.
#[derive(Debug, Clone)]
pub struct JobServiceConfig {
    /// Where uploaded blobs and jobs' outputs go.
    pub dir: PathBuf,
    pub access: Access,
    pub blob_store_bytes: u64,
    /// Jobs unsigned, opening or running at once, for all callers.
    pub live_jobs_max: usize,
    /// A job may name its files by `http://` or `https://` URL, which the
    /// gateway fetches (counted as the caller's uploads).
    pub url_inputs: bool,
}

impl JobServiceConfig {
    /// Open access and the default bounds, in `dir`.
    pub fn new(dir: PathBuf) -> Self {
        Self {
            dir,
            access: Access::Open,
            blob_store_bytes: BLOB_STORE_BYTES_DEFAULT,
            live_jobs_max: LIVE_JOBS_DEFAULT,
            url_inputs: true,
        }
    }
}

/// The job service's state, shared by its routes.
pub(crate) struct JobService {
    access: Access,
    blobs: BlobStore,
    uploads: Uploads,
    jobs: Mutex<HashMap<JobId, Arc<HttpJob>>>,
    live_jobs_max: usize,
    jobs_dir: PathBuf,
    client: ApiClient,
    node: String,
    /// Files disputes (and pays their deposits): the gateway's own key.
    reporter: Keypair,
    /// What each job's overlay starts from.
    overlay: OverlayConfig,
    local: Local,
    event_clients: AtomicUsize,
    url_inputs: bool,
    /// Fetches URL inputs.
    http: ureq::Agent,
}

impl JobService {
    /// The service for a gateway whose key is `reporter`, whose validator
    /// is `node`, and whose overlay listens at `gateway_addresses`.
    pub(crate) fn start(
        config: &JobServiceConfig,
        node: &str,
        reporter: Keypair,
        gateway_overlay: &OverlayConfig,
        gateway_addresses: &[Multiaddr],
        local: Local,
    ) -> anyhow::Result<Arc<Self>> {
        let blobs = BlobStore::open(&config.dir.join("blobs"), config.blob_store_bytes)?;
        let jobs_dir = config.dir.join("jobs");
        if jobs_dir.exists() {
            // No job outlives the gateway that ran it.
            std::fs::remove_dir_all(&jobs_dir).map_err(|error| {
                anyhow::anyhow!("failed to clear {}: {error}", jobs_dir.display())
            })?;
        }
        std::fs::create_dir_all(&jobs_dir)
            .map_err(|error| anyhow::anyhow!("failed to create {}: {error}", jobs_dir.display()))?;
        Ok(Arc::new(Self {
            access: config.access.clone(),
            blobs,
            uploads: Uploads::default(),
            jobs: Mutex::default(),
            live_jobs_max: config.live_jobs_max,
            jobs_dir,
            client: ApiClient::new(node),
            node: node.to_owned(),
            reporter,
            overlay: job_overlay(gateway_overlay, gateway_addresses),
            local,
            event_clients: AtomicUsize::new(0),
            url_inputs: config.url_inputs,
            http: ureq::Agent::config_builder()
                .http_status_as_error(false)
                .timeout_global(Some(URL_FETCH_TIMEOUT))
                .max_redirects(3)
                .build()
                .new_agent(),
        }))
    }

    fn jobs(&self) -> std::sync::MutexGuard<'_, HashMap<JobId, Arc<HttpJob>>> {
        self.jobs.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The caller's job `id`; `404` for another caller's.
    fn job(&self, caller: &Caller, id: &str) -> Result<Arc<HttpJob>, Refusal> {
        let unknown =
            || Refusal::not_found("unknown_job", format!("this gateway runs no job {id}"));
        let id: JobId = id.parse().map_err(|_| unknown())?;
        self.jobs()
            .get(&id)
            .filter(|job| job.owner == caller.name)
            .cloned()
            .ok_or_else(unknown)
    }

    /// Makes room for one more job: forgets unsigned jobs past their time
    /// and, while full, the oldest ended ones (deleting their outputs).
    fn make_room(
        &self,
        jobs: &mut HashMap<JobId, Arc<HttpJob>>,
        now: Instant,
    ) -> Result<(), Refusal> {
        let mut forget: Vec<JobId> = jobs
            .values()
            .filter(|job| job.expired(now))
            .map(|job| job.id)
            .collect();
        let mut ended: Vec<(Instant, JobId)> = jobs
            .values()
            .filter(|job| job.phase().ended())
            .map(|job| (job.created, job.id))
            .collect();
        ended.sort();
        let over = (jobs.len() + 1)
            .saturating_sub(forget.len())
            .saturating_sub(JOBS_KEPT_MAX);
        forget.extend(ended.into_iter().take(over).map(|(_, id)| id));
        for id in forget {
            if let Some(job) = jobs.remove(&id) {
                if let Some(shown) = job
                    .shown
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .take()
                {
                    self.local.remove_job(&shown);
                }
                let _ = std::fs::remove_dir_all(&job.out_dir);
            }
        }
        if jobs.len() >= JOBS_KEPT_MAX {
            return Err(Refusal::busy(
                format!("this gateway holds {JOBS_KEPT_MAX} jobs that have not ended"),
                JOB_SLOT_RETRY_SECS,
            ));
        }
        Ok(())
    }
}

impl JobService {
    /// The answer to a peer's request for an uploaded blob (its tree or a
    /// chunk); `None` for other requests.
    pub(crate) fn answer_content(&self, request: &Request) -> Option<WorkResponse> {
        self.blobs.answer(request)
    }

    /// The bytes at `url` (`http` or `https`), counted as `caller`'s upload.
    fn fetch(&self, caller: &Caller, url: &str) -> Result<Vec<u8>, Refusal> {
        if !self.url_inputs {
            return Err(invalid(format!(
                "this gateway takes no inputs by URL ({url}): upload it with PUT /v1/blobs"
            )));
        }
        let bytes = fetch_url(&self.http, url)?;
        self.uploads
            .take(caller, bytes.len() as u64, Instant::now())?;
        Ok(bytes)
    }
}

/// A job's overlay: the gateway's settings, a port of its own on the same
/// interfaces, no relay service, and the gateway as its way in.
fn job_overlay(gateway: &OverlayConfig, gateway_addresses: &[Multiaddr]) -> OverlayConfig {
    let mut overlay = gateway.clone();
    overlay.relay_server = false;
    overlay.dial_offer_authors = true;
    overlay.listen = gateway.listen.iter().map(any_port).collect();
    let mut bootstrap = gateway_addresses.to_vec();
    bootstrap.extend(gateway.bootstrap.iter().cloned());
    overlay.bootstrap = bootstrap;
    overlay
}

/// `address` with its TCP or UDP port replaced by 0 (any free one).
fn any_port(address: &Multiaddr) -> Multiaddr {
    let text = address.to_string();
    let mut parts: Vec<&str> = text.split('/').collect();
    for index in 1..parts.len() {
        if matches!(parts[index - 1], "tcp" | "udp") {
            parts[index] = "0";
        }
    }
    parts.join("/").parse().unwrap_or_else(|_| address.clone())
}

/// The job service's routes.
pub(crate) fn routes(service: Arc<JobService>) -> Router {
    Router::new()
        .route(
            "/v1/blobs",
            put(put_blob).layer(DefaultBodyLimit::max(BLOB_BYTES_MAX)),
        )
        .route("/v1/blobs/{cid}", get(get_blob))
        .route(
            "/v1/jobs",
            post(create_job).layer(DefaultBodyLimit::max(JOB_FILE_BYTES_MAX)),
        )
        .route("/v1/jobs/{job}/signature", post(sign_job))
        .route("/v1/jobs/{job}/progress", get(job_progress))
        .route("/v1/jobs/{job}/events", get(job_events))
        .route("/v1/jobs/{job}/results", get(job_results))
        .with_state(service)
}

/// Stores a blob (a module, an input) by its content id.
#[utoipa::path(
    put,
    path = "/v1/blobs",
    tag = "jobs",
    request_body(content = Vec<u8>, content_type = "application/octet-stream", description = "The bytes, at most 8 MiB"),
    responses(
        (status = 201, description = "`{cid, bytes}`: stored", body = Object),
        (status = 200, description = "`{cid, bytes}`: held already", body = Object),
        (status = 401, description = "No known API key (`unauthorized`)", body = ErrorBody),
        (status = 413, description = "Above 8 MiB, or above what the key may upload in an hour (`upload_too_large`)", body = ErrorBody),
        (status = 429, description = "The key's upload bytes per hour are used up (`quota_exceeded`, with `Retry-After`)", body = ErrorBody),
        (status = 507, description = "Larger than the gateway keeps (`storage_full`)", body = ErrorBody),
    )
)]
pub(crate) async fn put_blob(
    State(service): State<Arc<JobService>>,
    headers: HeaderMap,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<Response, Refusal> {
    let caller = service.access.caller(&headers)?;
    let body = body.map_err(|rejection| {
        Refusal::new(
            rejection.status(),
            "upload_too_large",
            rejection.body_text(),
        )
    })?;
    service
        .uploads
        .take(&caller, body.len() as u64, Instant::now())?;
    let stored = {
        let service = Arc::clone(&service);
        let body = body.clone();
        tokio::task::spawn_blocking(move || service.blobs.put(&body))
            .await
            .map_err(|error| Refusal::internal(format!("the blob store failed: {error}")))??
    };
    let (cid, new) = stored;
    let status = if new {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((
        status,
        axum::Json(json!({ "cid": cid.to_string(), "bytes": body.len() })),
    )
        .into_response())
}

/// A blob: one uploaded, or an output of one of the caller's jobs.
#[utoipa::path(
    get,
    path = "/v1/blobs/{cid}",
    tag = "jobs",
    params(("cid" = String, Path, description = "The content id (`b3:` and 64 hex digits)")),
    responses(
        (status = 200, description = "The bytes", body = Vec<u8>, content_type = "application/octet-stream"),
        (status = 401, description = "No known API key (`unauthorized`)", body = ErrorBody),
        (status = 404, description = "Not held here (`unknown_blob`)", body = ErrorBody),
    )
)]
pub(crate) async fn get_blob(
    State(service): State<Arc<JobService>>,
    headers: HeaderMap,
    UrlPath(cid): UrlPath<String>,
) -> Result<Response, Refusal> {
    let caller = service.access.caller(&headers)?;
    let unknown =
        || Refusal::not_found("unknown_blob", format!("this gateway holds no blob {cid}"));
    let id: ContentId = cid.parse().map_err(|_| unknown())?;
    let file = service.blobs.path(&id).or_else(|| {
        let jobs: Vec<Arc<HttpJob>> = service
            .jobs()
            .values()
            .filter(|job| job.owner == caller.name)
            .cloned()
            .collect();
        jobs.iter()
            .find_map(|job| job.index_outputs().files.get(&id).cloned())
    });
    let Some(file) = file else {
        return Err(unknown());
    };
    let bytes = tokio::fs::read(&file).await.map_err(|_| unknown())?;
    // What is served is what the id names, or nothing.
    if ContentId::of(&bytes) != id {
        return Err(Refusal::internal(format!(
            "{} no longer holds {id}",
            file.display()
        )));
    }
    Ok(([(header::CONTENT_TYPE, "application/octet-stream")], bytes).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct CreateJob {
    /// The account that signs the `OpenJob` and pays the escrow.
    requestor: String,
    /// The job file's fields.
    job: serde_json::Map<String, Value>,
}

/// Takes a job and answers the `OpenJob` its requestor signs.
#[utoipa::path(
    post,
    path = "/v1/jobs",
    tag = "jobs",
    request_body(content = Object, description = "`{requestor: did:key, job: {…the job file's fields; `module` and `stdin_file` name uploaded blobs by content id…}}`"),
    responses(
        (status = 201, description = "`{job, status: \"unsigned\", tasks, agent, transaction, terms}`: sign `transaction` (hex) and send the signature", body = Object),
        (status = 400, description = "Not a job (`invalid_job`, `malformed_json`, `malformed_account`), a blob not uploaded (`unknown_blob`), or too little balance (`insufficient_balance`)", body = ErrorBody),
        (status = 401, description = "No known API key (`unauthorized`)", body = ErrorBody),
        (status = 409, description = "The requestor has an unsigned job at this nonce already (`job_exists`)", body = ErrorBody),
        (status = 413, description = "More tasks than the key may submit in a job (`too_many_tasks`)", body = ErrorBody),
        (status = 429, description = "The key has as many jobs as it may at once (`quota_exceeded`, with `Retry-After`)", body = ErrorBody),
        (status = 502, description = "The validator could not be asked (`bad_gateway`)", body = ErrorBody),
        (status = 503, description = "The gateway runs as many jobs as it may (`busy`, with `Retry-After`)", body = ErrorBody),
    )
)]
pub(crate) async fn create_job(
    State(service): State<Arc<JobService>>,
    headers: HeaderMap,
    request: Result<axum::Json<CreateJob>, JsonRejection>,
) -> Result<Response, Refusal> {
    let caller = service.access.caller(&headers)?;
    let axum::Json(request) = request.map_err(malformed_json)?;
    let requestor: AccountId = request.requestor.parse().map_err(|_| {
        Refusal::bad_request(
            "malformed_account",
            format!(
                "`requestor` is not an account (`did:key:…`): {}",
                request.requestor
            ),
        )
    })?;
    check_job_slots(&service, &caller, Instant::now())?;
    // A range's count is known before its tasks are walked (loading a job
    // of millions of them takes seconds).
    let range = request.job.get("tasks").and_then(Value::as_object);
    let bound = |key: &str| {
        range
            .and_then(|range| range.get(key))
            .and_then(Value::as_u64)
    };
    if let Some(end) = bound("end") {
        let count = end.saturating_sub(bound("start").unwrap_or(0));
        check_task_count(count, &caller)?;
    }

    let job_file = {
        let service = Arc::clone(&service);
        let caller = caller.clone();
        tokio::task::spawn_blocking(move || {
            let fetch = |url: &str| service.fetch(&caller, url);
            job_file(&service.blobs, request.job, &fetch)
        })
        .await
        .map_err(|error| Refusal::internal(format!("checking the job failed: {error}")))??
    };
    let (job_file, pins) = job_file;
    let tasks = job_file.task_count();
    check_task_count(tasks, &caller)?;

    // The terms: the requestor's next nonce, the chain's fee and height.
    let client = service.client.clone();
    let (chain_id, fee, height, nonce, balance) = tokio::task::spawn_blocking(move || {
        let status = client.status()?;
        let account = client.account(&requestor)?;
        Ok::<_, idlegrid_api::client::ApiError>((
            status["chain_id"].as_str().unwrap_or_default().to_owned(),
            status["minimum_fee"].as_u64().unwrap_or(0),
            status["height"].as_u64().unwrap_or(0),
            account.next_nonce,
            account.balance,
        ))
    })
    .await
    .map_err(|error| Refusal::internal(format!("asking the validator failed: {error}")))?
    .map_err(|error| Refusal::bad_gateway(format!("the validator could not be asked: {error}")))?;
    let needed = job_file.budget.saturating_add(fee);
    if balance < needed {
        return Err(Refusal::bad_request(
            "insufficient_balance",
            format!("{requestor} holds {balance}; the job's budget and fee need {needed}"),
        ));
    }
    let agent = new_key()?;
    let deadline_height = height + job_file.deadline_blocks;
    let terms = job_file.open_job_terms(deadline_height, Some(agent.account_id()));
    let body = Transaction::new(&chain_id, nonce, fee, TxKind::OpenJob(terms.clone()))
        .map_err(|error| Refusal::bad_gateway(format!("the validator's chain id is {error}")))?;
    let bytes = codec::encode(&body)
        .map_err(|error| Refusal::internal(format!("the transaction does not encode: {error}")))?;
    let id = JobId::derive(&requestor, nonce);
    let job = Arc::new(HttpJob {
        id,
        owner: caller.name.clone(),
        requestor,
        agent: agent.clone(),
        body,
        tasks,
        budget: job_file.budget,
        deadline_height,
        created: Instant::now(),
        phase: Mutex::new(Phase::Unsigned(Box::new(job_file))),
        progress: Arc::new(SubmitProgress {
            feed: ResultFeed::kept(),
            ..service.local.progress()
        }),
        out_dir: service.jobs_dir.join(hex::encode(id.as_bytes())),
        outputs: Mutex::default(),
        shown: Mutex::new(None),
        pins: Mutex::new(pins),
    });
    {
        let now = Instant::now();
        let mut jobs = service.jobs();
        // Checked again under the lock: another request may have taken
        // the last slot meanwhile.
        live_slots(&jobs, &caller, service.live_jobs_max, now)?;
        if let Some(old) = jobs.get(&id) {
            if old.live(now) || old.owner != caller.name {
                return Err(Refusal::new(
                    StatusCode::CONFLICT,
                    "job_exists",
                    format!(
                        "{id} (the requestor's nonce {nonce}) is taken; sign or let it expire first"
                    ),
                ));
            }
            jobs.remove(&id);
        }
        service.make_room(&mut jobs, now)?;
        jobs.insert(id, Arc::clone(&job));
    }
    info!(job = %id, %requestor, tasks, "job waiting for its requestor's signature");
    let answer = json!({
        "job": id.to_string(),
        "status": "unsigned",
        "tasks": tasks,
        "agent": agent.account_id().to_string(),
        "transaction": hex::encode(bytes),
        "terms": {
            "chain_id": chain_id,
            "nonce": nonce,
            "fee": fee,
            "module": terms.module.to_string(),
            "spec": terms.spec.to_string(),
            "escrow": terms.escrow,
            "price_per_million_fuel": terms.price_per_million_fuel,
            "deadline_height": terms.deadline_height,
            "limits": {
                "fuel": terms.limits.fuel,
                "memory_bytes": terms.limits.memory_bytes,
                "output_bytes": terms.limits.output_bytes,
            },
            "agent": agent.account_id().to_string(),
        },
    });
    Ok((StatusCode::CREATED, axum::Json(answer)).into_response())
}

/// Refuses a job of more tasks than `caller` may submit in one.
fn check_task_count(tasks: u64, caller: &Caller) -> Result<(), Refusal> {
    if tasks > caller.limits.tasks_per_job {
        return Err(Refusal::too_large(
            "too_many_tasks",
            format!(
                "the job has {tasks} tasks; this key may submit at most {} in one job",
                caller.limits.tasks_per_job
            ),
        ));
    }
    Ok(())
}

/// Refuses a new job when the caller, or the gateway, runs as many as it may.
fn check_job_slots(service: &JobService, caller: &Caller, now: Instant) -> Result<(), Refusal> {
    live_slots(&service.jobs(), caller, service.live_jobs_max, now)
}

fn live_slots(
    jobs: &HashMap<JobId, Arc<HttpJob>>,
    caller: &Caller,
    live_max: usize,
    now: Instant,
) -> Result<(), Refusal> {
    let live: Vec<&Arc<HttpJob>> = jobs.values().filter(|job| job.live(now)).collect();
    let own = live.iter().filter(|job| job.owner == caller.name).count();
    if own >= caller.limits.jobs_at_once as usize {
        return Err(Refusal::quota(
            format!(
                "this key has {own} jobs unsigned, opening or running; it may have {} at once",
                caller.limits.jobs_at_once
            ),
            JOB_SLOT_RETRY_SECS,
        ));
    }
    if live.len() >= live_max {
        return Err(Refusal::busy(
            format!("this gateway runs {live_max} jobs at once, and has that many"),
            JOB_SLOT_RETRY_SECS,
        ));
    }
    Ok(())
}

/// A fresh key for one job's agent.
fn new_key() -> Result<Keypair, Refusal> {
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed)
        .map_err(|error| Refusal::internal(format!("no randomness for a key: {error}")))?;
    Ok(Keypair::from_seed(seed))
}

/// A body that is not the JSON asked for: `400` (`413` when too large).
fn malformed_json(rejection: JsonRejection) -> Refusal {
    let status = match rejection.status() {
        StatusCode::PAYLOAD_TOO_LARGE => StatusCode::PAYLOAD_TOO_LARGE,
        _ => StatusCode::BAD_REQUEST,
    };
    Refusal::new(status, "malformed_json", rejection.body_text())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct SignatureRequest {
    /// The requestor's ed25519 signature of the transaction, 128 hex digits.
    signature: String,
}

/// The requestor's signature on its job's `OpenJob`: the gateway submits
/// it and, once it is in a block, runs the job.
#[utoipa::path(
    post,
    path = "/v1/jobs/{job}/signature",
    tag = "jobs",
    params(("job" = String, Path, description = "The job id")),
    request_body(content = Object, description = "`{signature}`: 128 hex digits, the requestor's ed25519 signature of `idlegrid transaction v1`, a zero byte, and the transaction's bytes"),
    responses(
        (status = 202, description = "The job's progress: opening", body = Object),
        (status = 400, description = "Not the requestor's signature of the transaction (`bad_signature`)", body = ErrorBody),
        (status = 401, description = "No known API key (`unauthorized`)", body = ErrorBody),
        (status = 404, description = "No such job for this key (`unknown_job`)", body = ErrorBody),
        (status = 409, description = "Signed already (`already_signed`)", body = ErrorBody),
        (status = 410, description = "It waited longer than 10 minutes (`expired`)", body = ErrorBody),
    )
)]
pub(crate) async fn sign_job(
    State(service): State<Arc<JobService>>,
    headers: HeaderMap,
    UrlPath(id): UrlPath<String>,
    request: Result<axum::Json<SignatureRequest>, JsonRejection>,
) -> Result<Response, Refusal> {
    let caller = service.access.caller(&headers)?;
    let job = service.job(&caller, &id)?;
    let axum::Json(request) = request.map_err(malformed_json)?;
    let bad = |why: &str| Refusal::bad_request("bad_signature", why.to_owned());
    let mut bytes = [0u8; 64];
    hex::decode_to_slice(request.signature.trim(), &mut bytes)
        .map_err(|_| bad("a signature is 128 hex digits"))?;
    let signed: SignedTransaction = Signed {
        body: job.body.clone(),
        signer: job.requestor,
        signature: Signature::from_bytes(bytes),
    };
    if signed.verify().is_err() {
        return Err(bad(
            "the signature is not the requestor's over this job's transaction",
        ));
    }
    let job_file = {
        let mut phase = job.phase();
        match &*phase {
            Phase::Unsigned(_) if job.created.elapsed() >= UNSIGNED_TTL => {
                return Err(Refusal::new(
                    StatusCode::GONE,
                    "expired",
                    format!(
                        "{id} waited more than {} s for its signature; submit it again",
                        UNSIGNED_TTL.as_secs()
                    ),
                ));
            }
            Phase::Unsigned(_) => {}
            _ => {
                return Err(Refusal::new(
                    StatusCode::CONFLICT,
                    "already_signed",
                    format!("{id} is signed already"),
                ));
            }
        }
        match std::mem::replace(&mut *phase, Phase::Opening) {
            Phase::Unsigned(job_file) => job_file,
            _ => unreachable!("checked above"),
        }
    };
    tokio::spawn(open_and_run(
        Arc::clone(&service),
        Arc::clone(&job),
        signed,
        job_file,
    ));
    Ok((StatusCode::ACCEPTED, axum::Json(job.view())).into_response())
}

/// Submits the signed `OpenJob`, then runs the job with its agent's key.
async fn open_and_run(
    service: Arc<JobService>,
    job: Arc<HttpJob>,
    signed: SignedTransaction,
    job_file: Box<JobFile>,
) {
    let client = service.client.clone();
    let opened = tokio::task::spawn_blocking(move || {
        let bytes =
            codec::encode(&signed).map_err(|error| ("encode".to_owned(), error.to_string()))?;
        let refused =
            |error: idlegrid_api::client::ApiError| (error.code().to_owned(), error.to_string());
        let answer = client
            .post(
                "/v1/transactions",
                &json!({ "transaction": hex::encode(bytes) }),
            )
            .map_err(refused)?;
        let hash = answer["hash"].as_str().unwrap_or_default().to_owned();
        client.wait_included(&hash, OPEN_WAIT).map_err(refused)
    })
    .await;
    let opened_height = match opened {
        Ok(Ok(height)) => height,
        Ok(Err((code, message))) => {
            warn!(job = %job.id, %code, %message, "the job did not open");
            job.set_phase(Phase::Failed { code, message });
            return;
        }
        Err(error) => {
            job.set_phase(Phase::Failed {
                code: "internal".to_owned(),
                message: format!("opening the job failed: {error}"),
            });
            return;
        }
    };
    info!(job = %job.id, opened_height, "job opened by its requestor; running it");
    let shown = Arc::new(LocalJob::new(
        format!("http job of {}", short(&job.requestor)),
        job_file.module_cid,
        job.out_dir.clone(),
        Arc::clone(&job.progress),
        None,
    ));
    service.local.add_job(Arc::clone(&shown));
    *job.shown.lock().unwrap_or_else(PoisonError::into_inner) = Some(shown);
    job.set_phase(Phase::Running);
    let config = SubmitConfig {
        key: job.agent.clone(),
        node: service.node.clone(),
        overlay: service.overlay.clone(),
        job: *job_file,
        out_dir: job.out_dir.clone(),
        close: false,
        market: MarketConfig::default(),
        tick: Duration::from_millis(100),
        referee_fuel: REFEREE_FUEL_DEFAULT,
        opened: Some(OpenedJob {
            job: job.id,
            opened_height,
            deadline_height: job.deadline_height,
        }),
        reporter: Some(service.reporter.clone()),
    };
    match submit(config, Arc::clone(&job.progress)).await {
        Ok(report) => {
            info!(job = %job.id, accepted = report.accepted, paid = report.paid, "job finished");
            job.set_phase(Phase::Finished {
                budget_exhausted: false,
            });
        }
        Err(_) if job.progress.stalled.load(Ordering::Relaxed) => {
            job.set_phase(Phase::Finished {
                budget_exhausted: true,
            });
        }
        Err(error) => {
            warn!(job = %job.id, error = %format!("{error:#}"), "job failed");
            job.set_phase(Phase::Failed {
                code: "job_failed".to_owned(),
                message: format!("{error:#}"),
            });
        }
    }
}

fn short(account: &AccountId) -> String {
    let text = account.to_string();
    let tail = text.len().saturating_sub(6);
    format!("…{}", &text[tail..])
}

/// Where a job stands.
#[utoipa::path(
    get,
    path = "/v1/jobs/{job}/progress",
    tag = "jobs",
    params(("job" = String, Path, description = "The job id")),
    responses(
        (status = 200, description = "`{job, status (unsigned, opening, running, finished, failed), tasks_total, accepted, failed, in_flight, providers, paid, budget, fuel_executed, results, waiting, budget_exhausted, error}`", body = Object),
        (status = 401, description = "No known API key (`unauthorized`)", body = ErrorBody),
        (status = 404, description = "No such job for this key (`unknown_job`)", body = ErrorBody),
    )
)]
pub(crate) async fn job_progress(
    State(service): State<Arc<JobService>>,
    headers: HeaderMap,
    UrlPath(id): UrlPath<String>,
) -> Result<Response, Refusal> {
    let caller = service.access.caller(&headers)?;
    let job = service.job(&caller, &id)?;
    Ok(axum::Json(job.view()).into_response())
}

/// A job's progress as server-sent events: `progress` whenever it changes,
/// then `end` when the job has ended.
#[utoipa::path(
    get,
    path = "/v1/jobs/{job}/events",
    tag = "jobs",
    params(("job" = String, Path, description = "The job id")),
    responses(
        (status = 200, description = "`progress` events (the progress view as data), then one `end`", body = str, content_type = "text/event-stream"),
        (status = 401, description = "No known API key (`unauthorized`)", body = ErrorBody),
        (status = 404, description = "No such job for this key (`unknown_job`)", body = ErrorBody),
        (status = 503, description = "Too many clients following jobs (`busy`)", body = ErrorBody),
    )
)]
pub(crate) async fn job_events(
    State(service): State<Arc<JobService>>,
    headers: HeaderMap,
    UrlPath(id): UrlPath<String>,
) -> Result<Response, Refusal> {
    let caller = service.access.caller(&headers)?;
    let job = service.job(&caller, &id)?;
    if service.event_clients.fetch_add(1, Ordering::Relaxed) >= EVENT_CLIENTS_MAX {
        service.event_clients.fetch_sub(1, Ordering::Relaxed);
        return Err(Refusal::busy(
            format!("this gateway streams to at most {EVENT_CLIENTS_MAX} clients"),
            JOB_SLOT_RETRY_SECS,
        ));
    }
    let slot = EventSlot(Arc::clone(&service));
    let state = (job, slot, None::<Value>, false);
    let stream = futures::stream::unfold(state, |(job, slot, last, ended)| async move {
        if ended {
            return None;
        }
        loop {
            let view = job.view();
            let over = job.phase().ended();
            if over {
                let event = SseEvent::default().event("end").data(view.to_string());
                return Some((Ok::<_, Infallible>(event), (job, slot, Some(view), true)));
            }
            if last.as_ref() != Some(&view) {
                let event = SseEvent::default().event("progress").data(view.to_string());
                return Some((Ok(event), (job, slot, Some(view), false)));
            }
            tokio::time::sleep(EVENTS_EVERY).await;
        }
    });
    Ok(Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response())
}

/// Counts a client following a job while its stream lives.
struct EventSlot(Arc<JobService>);

impl Drop for EventSlot {
    fn drop(&mut self) {
        self.0.event_clients.fetch_sub(1, Ordering::Relaxed);
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ResultsQuery {
    after: Option<usize>,
    limit: Option<usize>,
}

/// Decided tasks in the order they were decided, from position `after`.
#[utoipa::path(
    get,
    path = "/v1/jobs/{job}/results",
    tag = "jobs",
    params(
        ("job" = String, Path, description = "The job id"),
        ("after" = Option<usize>, Query, description = "Skip this many entries (the `next` of the answer before)"),
        ("limit" = Option<usize>, Query, description = "At most this many entries (default 1000, at most 10000)"),
    ),
    responses(
        (status = 200, description = "`{job, results: [{index, status (accepted, failed), exit_code, output, bytes, fuel, error, providers, verified, rechecked}], next, complete}`; a later entry for an index replaces an earlier one (a result checked again)", body = Object),
        (status = 400, description = "A query that does not parse (`malformed_query`)", body = ErrorBody),
        (status = 401, description = "No known API key (`unauthorized`)", body = ErrorBody),
        (status = 404, description = "No such job for this key (`unknown_job`)", body = ErrorBody),
    )
)]
pub(crate) async fn job_results(
    State(service): State<Arc<JobService>>,
    headers: HeaderMap,
    UrlPath(id): UrlPath<String>,
    query: Result<Query<ResultsQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, Refusal> {
    let caller = service.access.caller(&headers)?;
    let job = service.job(&caller, &id)?;
    let Query(query) = query
        .map_err(|rejection| Refusal::bad_request("malformed_query", rejection.body_text()))?;
    let after = query.after.unwrap_or(0);
    let limit = query.limit.unwrap_or(RESULTS_LIMIT_DEFAULT);
    if !(1..=RESULTS_LIMIT_MAX).contains(&limit) {
        return Err(Refusal::bad_request(
            "malformed_query",
            format!("`limit` is 1..={RESULTS_LIMIT_MAX}"),
        ));
    }
    // Read the phase first: once ended, the feed is whole.
    let ended = job.phase().ended();
    let records = job.progress.feed.since(after, limit);
    let next = after + records.len();
    let complete = ended && next >= job.progress.feed.len();
    let results: Vec<Value> = records
        .iter()
        .map(|record| result_view(&job, record))
        .collect();
    Ok(axum::Json(json!({
        "job": job.id.to_string(),
        "results": results,
        "next": next,
        "complete": complete,
    }))
    .into_response())
}

fn result_view(job: &HttpJob, record: &TaskRecord) -> Value {
    let bytes = record
        .file
        .as_ref()
        .and_then(|file| std::fs::metadata(job.out_dir.join(file)).ok())
        .map(|metadata| metadata.len());
    json!({
        "index": record.index,
        "status": record.status,
        "exit_code": record.exit_code,
        "output": record.output,
        "bytes": bytes,
        "fuel": record.fuel,
        "error": record.error,
        "providers": record.providers.iter().map(ToString::to_string).collect::<Vec<_>>(),
        "verified": record.verified,
        "rechecked": record.rechecked,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_jobs_overlay_takes_any_port_on_the_gateways_interfaces() {
        let address: Multiaddr = "/ip4/127.0.0.1/tcp/4001".parse().expect("address");
        assert_eq!(any_port(&address).to_string(), "/ip4/127.0.0.1/tcp/0");
        let quic: Multiaddr = "/ip4/0.0.0.0/udp/4001/quic-v1".parse().expect("address");
        assert_eq!(any_port(&quic).to_string(), "/ip4/0.0.0.0/udp/0/quic-v1");
    }
}
