//! What a gateway shows people: the dashboard's static files, the network
//! as the overlay's offers and the ledger see it, the jobs and providers
//! running in this process (the devnet's), and a stream of server-sent
//! events (new blocks, accepted tasks, job states, offers).
//!
//! The ledger's own views are the validator's API, which the gateway passes
//! on under `/v1`; the routes here are the gateway's. Everything a peer or a
//! page can make it hold is bounded: providers remembered, event clients,
//! the events each may lag behind, and task outputs served.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::convert::Infallible;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use idlegrid_net::Overlay;
use idlegrid_types::{AccountId, ContentId, Offer};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use serde_json::{Value, json};
use tokio::sync::broadcast;
use tracing::debug;

use idlegrid_api::ErrorBody;
use idlegrid_api::client::ApiClient;
use idlegrid_api::metrics::{self, Metrics, gauge_value, latency_histogram};
use idlegrid_provider::ProviderStats;
use idlegrid_requestor::{SubmitProgress, TrackRecord};

/// Providers whose offers the gateway remembers (the newest offers win).
const PROVIDERS_MAX: usize = 1024;
/// Providers whose balance one `/v1/network` answer reads from the ledger.
const BALANCES_MAX: usize = 64;
/// Event-stream clients at once.
const EVENT_CLIENTS_MAX: usize = 64;
/// Events a slow client may fall behind before it skips ahead.
const EVENTS_QUEUE: usize = 1024;
/// Blocks announced after a gap (a gateway that was away does not replay
/// the whole chain).
const BLOCKS_CATCH_UP_MAX: u64 = 20;
/// How often the watcher looks at the ledger and the local jobs.
const WATCH_INTERVAL: Duration = Duration::from_millis(250);
/// Blocks with transactions remembered for `/v1/activity`.
const ACTIVITY_MAX: usize = 16;
/// The largest task output served.
const TASK_OUTPUT_BYTES_MAX: u64 = 64 << 20;

const INDEX_HTML: &str = include_str!("../assets/dashboard/index.html");
const DASHBOARD_JS: &str = include_str!("../assets/dashboard/dashboard.js");
const DASHBOARD_CSS: &str = include_str!("../assets/dashboard/dashboard.css");

/// Providers and jobs running in this process, which the dashboard can show
/// in more detail than the network tells (a standalone gateway has none).
#[derive(Debug, Clone)]
pub struct Local {
    pub providers: Vec<LocalProvider>,
    pub jobs: Arc<Mutex<Vec<Arc<LocalJob>>>>,
    /// The round trips of the local jobs' tasks, seconds.
    pub task_round_trips: Histogram,
}

impl Default for Local {
    fn default() -> Self {
        Self {
            providers: Vec::new(),
            jobs: Arc::default(),
            task_round_trips: latency_histogram(),
        }
    }
}

impl Local {
    /// Progress counters for a job to be submitted from this process, its
    /// round trips recorded in [`Local::task_round_trips`].
    pub fn progress(&self) -> SubmitProgress {
        SubmitProgress {
            round_trips: Some(self.task_round_trips.clone()),
            // The dashboard draws each task accepted.
            keep_done: true,
            ..SubmitProgress::default()
        }
    }

    /// Adds a job to show.
    pub fn add_job(&self, job: Arc<LocalJob>) {
        self.jobs
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(job);
    }

    /// Stops showing a job.
    pub fn remove_job(&self, job: &Arc<LocalJob>) {
        self.jobs
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .retain(|shown| !Arc::ptr_eq(shown, job));
    }

    fn jobs(&self) -> Vec<Arc<LocalJob>> {
        self.jobs
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

/// A provider running in this process.
#[derive(Debug, Clone)]
pub struct LocalProvider {
    pub account: AccountId,
    pub label: String,
    pub stats: Arc<ProviderStats>,
}

/// Where a local job is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobPhase {
    Opening,
    Running,
    Done,
    Failed,
}

impl JobPhase {
    fn name(self) -> &'static str {
        match self {
            Self::Opening => "opening",
            Self::Running => "running",
            Self::Done => "done",
            Self::Failed => "failed",
        }
    }
}

/// How a job's tasks make one image: task `i` renders tile `tiles[i]` (in
/// tiles, not pixels) of `tile_size` pixels, as a binary PPM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageLayout {
    pub width: u32,
    pub height: u32,
    pub tile_size: u32,
    pub tiles: Vec<(u32, u32)>,
}

/// A job submitted from this process.
#[derive(Debug)]
pub struct LocalJob {
    pub name: String,
    pub module: ContentId,
    /// Where the requestor writes `tasks/NNNNNN.out`.
    pub out_dir: PathBuf,
    pub progress: Arc<SubmitProgress>,
    pub image: Option<ImageLayout>,
    started_ms: u64,
    started: Instant,
    phase: Mutex<(JobPhase, Option<String>)>,
    /// How long it ran, once it is done or failed.
    ran: Mutex<Option<Duration>>,
}

impl LocalJob {
    pub fn new(
        name: impl Into<String>,
        module: ContentId,
        out_dir: PathBuf,
        progress: Arc<SubmitProgress>,
        image: Option<ImageLayout>,
    ) -> Self {
        Self {
            name: name.into(),
            module,
            out_dir,
            progress,
            image,
            started_ms: unix_ms(),
            started: Instant::now(),
            phase: Mutex::new((JobPhase::Opening, None)),
            ran: Mutex::new(None),
        }
    }

    /// Moves the job on (with the error, when it failed).
    pub fn set_phase(&self, phase: JobPhase, error: Option<String>) {
        *self.phase.lock().unwrap_or_else(PoisonError::into_inner) = (phase, error);
        if matches!(phase, JobPhase::Done | JobPhase::Failed) {
            *self.ran.lock().unwrap_or_else(PoisonError::into_inner) = Some(self.started.elapsed());
        }
    }

    /// How long it has run (or ran, once it ended).
    fn elapsed(&self) -> Duration {
        self.ran
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .unwrap_or_else(|| self.started.elapsed())
    }

    pub fn phase(&self) -> (JobPhase, Option<String>) {
        let (phase, error) = &*self.phase.lock().unwrap_or_else(PoisonError::into_inner);
        let phase = match phase {
            JobPhase::Opening if self.progress.running.load(Ordering::Relaxed) => JobPhase::Running,
            other => *other,
        };
        (phase, error.clone())
    }

    fn view(&self) -> Value {
        let progress = &self.progress;
        let detail = progress.detail();
        let (phase, error) = self.phase();
        let load = |counter: &std::sync::atomic::AtomicU64| counter.load(Ordering::Relaxed);
        json!({
            "job": detail.job.map(|job| job.to_string()),
            "name": self.name,
            "module": self.module.to_string(),
            "state": phase.name(),
            "error": error,
            "waiting": detail.waiting,
            "tasks_total": load(&progress.tasks_total),
            "accepted": load(&progress.accepted),
            "failed": load(&progress.failed),
            "in_flight": load(&progress.in_flight),
            "providers": load(&progress.providers),
            "fuel_executed": load(&progress.fuel_executed),
            // Advisory: what providers' receipts state, replicas included.
            "energy_executed_millijoules": load(&progress.energy_executed_millijoules),
            "paid": load(&progress.paid),
            "budget": load(&progress.budget),
            "started_ms": self.started_ms,
            "elapsed_ms": u64::try_from(self.elapsed().as_millis()).unwrap_or(u64::MAX),
            "done": detail.done,
            "image": self.image.as_ref().map(|image| json!({
                "width": image.width,
                "height": image.height,
                "tile_size": image.tile_size,
                "tiles": image.tiles.iter().map(|(x, y)| [x, y]).collect::<Vec<_>>(),
            })),
        })
    }
}

/// One server-sent event, already encoded.
#[derive(Debug, Clone)]
struct Announcement {
    kind: &'static str,
    data: Value,
}

/// The offers seen, and what the routes share.
#[derive(Debug)]
pub(crate) struct Board {
    client: ApiClient,
    overlay: Overlay,
    local: Local,
    metrics: GatewayMetrics,
    offers: Mutex<HashMap<AccountId, (Offer, u64)>>,
    events: broadcast::Sender<Announcement>,
    clients: AtomicUsize,
    /// The newest blocks that carried transactions, newest first.
    activity: Mutex<VecDeque<Value>>,
}

impl Board {
    pub(crate) fn new(node: &str, overlay: Overlay, local: Local) -> Arc<Self> {
        Arc::new(Self {
            client: ApiClient::new(node),
            overlay,
            metrics: GatewayMetrics::new(&local),
            local,
            offers: Mutex::new(HashMap::new()),
            events: broadcast::channel(EVENTS_QUEUE).0,
            clients: AtomicUsize::new(0),
            activity: Mutex::new(VecDeque::new()),
        })
    }

    /// An offer arrived by gossip (already checked against its signer).
    pub(crate) fn offer(&self, provider: AccountId, offer: Offer) {
        let mut offers = self.offers.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some((known, _)) = offers.get(&provider)
            && known.sequence >= offer.sequence
        {
            return;
        }
        if offers.len() >= PROVIDERS_MAX && !offers.contains_key(&provider) {
            // Forget the offer that expires first.
            if let Some(oldest) = offers
                .iter()
                .min_by_key(|(_, (offer, _))| offer.expires_at_ms)
                .map(|(account, _)| *account)
            {
                offers.remove(&oldest);
            }
        }
        offers.insert(provider, (offer, unix_ms()));
        drop(offers);
        self.announce("offer", json!({ "account": provider.to_string() }));
    }

    fn announce(&self, kind: &'static str, data: Value) {
        // No subscriber is not an error.
        let _ = self.events.send(Announcement { kind, data });
    }

    /// Announces new blocks and local job progress until the process ends.
    pub(crate) async fn watch(self: Arc<Self>) {
        let mut announced_height = None::<u64>;
        let mut announced_tasks: HashMap<usize, (usize, &'static str)> = HashMap::new();
        let mut interval = tokio::time::interval(WATCH_INTERVAL);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            interval.tick().await;
            announced_height = self.announce_blocks(announced_height).await;
            for (index, job) in self.local.jobs().iter().enumerate() {
                let detail = job.progress.detail();
                let (phase, _) = job.phase();
                let seen = announced_tasks.entry(index).or_insert((0, ""));
                let id = detail.job.map(|job| job.to_string());
                for task in detail.done.iter().skip(seen.0) {
                    self.announce("task", json!({ "job": id, "index": task }));
                }
                seen.0 = detail.done.len();
                if seen.1 != phase.name() {
                    seen.1 = phase.name();
                    self.announce("job", json!({ "job": id, "state": phase.name() }));
                }
            }
        }
    }

    async fn announce_blocks(&self, announced: Option<u64>) -> Option<u64> {
        let client = self.client.clone();
        let Ok(Ok(height)) = tokio::task::spawn_blocking(move || client.height()).await else {
            return announced;
        };
        let from = match announced {
            Some(announced) if announced >= height => return Some(announced),
            Some(announced) => (announced + 1).max(height.saturating_sub(BLOCKS_CATCH_UP_MAX)),
            // A new watcher starts at the tip; the page fetches the history.
            None => height,
        };
        for block_height in from..=height {
            let client = self.client.clone();
            let block = tokio::task::spawn_blocking(move || {
                client.get(&format!("/v1/blocks/{block_height}"))
            })
            .await;
            let Ok(Ok(block)) = block else {
                // Not finalized on this validator yet: try again next time.
                return Some(block_height.saturating_sub(1));
            };
            let mut kinds: BTreeMap<String, u64> = BTreeMap::new();
            let transactions = block["transactions"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            for transaction in &transactions {
                if let Some(kind) = transaction["kind"].as_str() {
                    *kinds.entry(kind.to_owned()).or_default() += 1;
                }
            }
            let summary = json!({
                "height": block_height,
                "digest": block["digest"],
                "transactions": transactions.len(),
                "kinds": kinds,
            });
            if !transactions.is_empty() {
                let mut recent = self.activity.lock().unwrap_or_else(PoisonError::into_inner);
                if recent.len() >= ACTIVITY_MAX {
                    recent.pop_back();
                }
                recent.push_front(summary.clone());
            }
            self.announce("block", summary);
        }
        Some(height)
    }

    /// The network: offers seen, stake and balances on the ledger, and the
    /// counters of providers running here.
    fn network(&self) -> Value {
        let now = unix_ms();
        let offers: Vec<(AccountId, Offer, u64)> = self
            .offers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .map(|(account, (offer, seen))| (*account, offer.clone(), *seen))
            .collect();
        let listed: Vec<Value> = self
            .client
            .get("/v1/providers")
            .ok()
            .and_then(|answer| answer["providers"].as_array().cloned())
            .unwrap_or_default();
        let stakes: BTreeMap<String, u64> = listed
            .iter()
            .filter_map(|entry| {
                Some((
                    entry["account"].as_str()?.to_owned(),
                    entry["stake"].as_u64()?,
                ))
            })
            .collect();
        // What each declared and proved of its speed (CPU and GPU) on the
        // chain.
        let capacities: BTreeMap<String, (Value, Value)> = listed
            .iter()
            .filter_map(|entry| {
                Some((
                    entry["account"].as_str()?.to_owned(),
                    (
                        entry["record"]["capacity"].clone(),
                        entry["record"]["gpu_capacity"].clone(),
                    ),
                ))
            })
            .collect();
        let mut tracks: BTreeMap<AccountId, TrackRecord> = BTreeMap::new();
        for job in self.local.jobs() {
            for (provider, track) in job.progress.detail().providers {
                let total = tracks.entry(provider).or_default();
                total.accepted += track.accepted;
                total.rejected += track.rejected;
            }
        }
        // Every provider any source knows: local ones first, in their order.
        let mut accounts: Vec<AccountId> = self.local.providers.iter().map(|p| p.account).collect();
        let mut others: Vec<AccountId> = offers.iter().map(|(account, _, _)| *account).collect();
        others.extend(
            stakes
                .keys()
                .filter_map(|account| account.parse::<AccountId>().ok()),
        );
        others.sort();
        others.dedup();
        others.retain(|account| !accounts.contains(account));
        accounts.extend(others);

        let providers: Vec<Value> = accounts
            .iter()
            .enumerate()
            .map(|(index, account)| {
                let offer = offers.iter().find(|(known, _, _)| known == account);
                let local = self.local.providers.iter().find(|p| p.account == *account);
                let balance = (index < BALANCES_MAX)
                    .then(|| self.client.account(account).ok())
                    .flatten()
                    .map(|state| state.balance);
                let track = tracks.get(account).copied().unwrap_or_default();
                let stat = |read: fn(&ProviderStats) -> u64| local.map(|local| read(&local.stats));
                let capacity = capacities
                    .get(&account.to_string())
                    .cloned()
                    .unwrap_or((Value::Null, Value::Null));
                let mut view = json!({
                    "account": account.to_string(),
                    "label": local.map(|local| local.label.clone()),
                    "online": offer.is_some_and(|(_, offer, _)| offer.expires_at_ms > now),
                    "stake": stakes.get(&account.to_string()).copied().unwrap_or(0),
                    "balance": balance,
                    "tasks_done": stat(|stats| stats.tasks_done.load(Ordering::Relaxed)),
                    "fuel_used": stat(|stats| stats.fuel_used.load(Ordering::Relaxed)),
                    "earned": stat(|stats| stats.earned.load(Ordering::Relaxed)),
                    "owed": stat(|stats| stats.owed.load(Ordering::Relaxed)),
                    "results_accepted": track.accepted,
                    "results_rejected": track.rejected,
                    "capacity": capacity.0,
                    "gpu_capacity": capacity.1,
                });
                let fields = [
                    "cores",
                    "memory_bytes",
                    "gpu",
                    "benchmark_fuel_per_second",
                    "price_floor_per_million_fuel",
                    "concurrency",
                    "idle_only",
                    "offer_expires_at_ms",
                    "offer_seen_ms",
                ];
                let values = offer.map(|(_, offer, seen)| {
                    [
                        json!(offer.cores),
                        json!(offer.memory_bytes),
                        json!(offer.gpu.as_ref().map(|gpu| json!({
                            "name": gpu.name.as_str(),
                            "vendor": gpu.vendor,
                            "device": gpu.device,
                            "driver": gpu.driver.as_str(),
                            "fuel_per_second": gpu.fuel_per_second,
                            "price_floor_per_million_fuel": gpu.price_floor_per_million_fuel,
                        }))),
                        json!(offer.benchmark_fuel_per_second),
                        json!(offer.price_floor_per_million_fuel),
                        json!(offer.concurrency),
                        json!(offer.idle_only),
                        json!(offer.expires_at_ms),
                        json!(seen),
                    ]
                });
                for (position, field) in fields.iter().enumerate() {
                    view[*field] = values
                        .as_ref()
                        .map_or(Value::Null, |values| values[position].clone());
                }
                view
            })
            .collect();
        json!({ "providers": providers })
    }

    fn local_job(&self, id: &str) -> Option<Arc<LocalJob>> {
        self.local.jobs().into_iter().find(|job| {
            job.progress
                .detail()
                .job
                .is_some_and(|job| job.to_string() == id)
        })
    }
}

/// The dashboard's routes, for the gateway's router.
pub(crate) fn routes(board: Arc<Board>) -> Router {
    Router::new()
        .route(
            "/",
            get(|| async { static_file("text/html; charset=utf-8", INDEX_HTML) }),
        )
        .route(
            "/dashboard.js",
            get(|| async { static_file("text/javascript; charset=utf-8", DASHBOARD_JS) }),
        )
        .route(
            "/dashboard.css",
            get(|| async { static_file("text/css; charset=utf-8", DASHBOARD_CSS) }),
        )
        .route("/v1/network", get(network))
        .route("/v1/local/jobs", get(local_jobs))
        .route("/v1/local/jobs/{job}/tasks/{index}", get(task_output))
        .route("/v1/events", get(events))
        .route("/v1/activity", get(activity))
        .route("/metrics", get(scrape))
        .with_state(board)
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ProviderLabels {
    provider: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct JobLabels {
    job: String,
}

/// The gateway's metrics, read at each scrape (the HTTP ones are counted
/// as requests come).
#[derive(Debug)]
struct GatewayMetrics {
    metrics: Metrics,
    peers: Gauge,
    height: Gauge,
    providers_online: Gauge,
    provider_tasks: Family<ProviderLabels, Gauge>,
    provider_fuel: Family<ProviderLabels, Gauge>,
    provider_earned: Family<ProviderLabels, Gauge>,
    provider_owed: Family<ProviderLabels, Gauge>,
    job_tasks_accepted: Family<JobLabels, Gauge>,
    job_tasks_failed: Family<JobLabels, Gauge>,
    event_clients: Gauge,
}

impl GatewayMetrics {
    fn new(local: &Local) -> Self {
        let mut metrics = Metrics::new();
        let peers =
            metrics.added::<Gauge>("overlay_peers", "Peers the gateway has a connection with");
        let height = metrics.added::<Gauge>(
            "ledger_height",
            "The validator's ledger height, as the gateway last read it",
        );
        let providers_online = metrics.added::<Gauge>(
            "providers_online",
            "Providers whose latest offer, seen by gossip, has not expired",
        );
        let event_clients = metrics.added::<Gauge>("event_clients", "Clients following /v1/events");
        let provider_tasks = metrics.added::<Family<ProviderLabels, Gauge>>(
            "provider_tasks",
            "Tasks run by each provider in this process",
        );
        let provider_fuel = metrics.added::<Family<ProviderLabels, Gauge>>(
            "provider_fuel",
            "Fuel used by each provider in this process",
        );
        let provider_earned = metrics.added::<Family<ProviderLabels, Gauge>>(
            "provider_earned",
            "Tokens each provider in this process redeemed on the ledger",
        );
        let provider_owed = metrics.added::<Family<ProviderLabels, Gauge>>(
            "provider_owed",
            "Tokens each provider in this process holds vouchers for, not yet redeemed",
        );
        let job_tasks_accepted = metrics.added::<Family<JobLabels, Gauge>>(
            "job_tasks_accepted",
            "Tasks verified and accepted, per job submitted from this process",
        );
        let job_tasks_failed = metrics.added::<Family<JobLabels, Gauge>>(
            "job_tasks_failed",
            "Tasks failed, per job submitted from this process",
        );
        metrics.register_with_unit(
            "task_round_trip",
            "From a task's first assignment to its acceptance, for jobs submitted from this process",
            prometheus_client::registry::Unit::Seconds,
            local.task_round_trips.clone(),
        );
        Self {
            metrics,
            peers,
            height,
            providers_online,
            provider_tasks,
            provider_fuel,
            provider_earned,
            provider_owed,
            job_tasks_accepted,
            job_tasks_failed,
            event_clients,
        }
    }
}

/// Prometheus metrics: peers, the ledger's height, providers online, the
/// tasks, fuel and earnings of providers in this process, local jobs'
/// tasks and their round-trip histogram, and every request by route.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "meta",
    responses((status = 200, description = "The metrics in the OpenMetrics text format", body = str, content_type = "application/openmetrics-text"))
)]
pub(crate) async fn scrape(State(board): State<Arc<Board>>) -> Response {
    let gauges = &board.metrics;
    if let Ok(peers) = board.overlay.connected().await {
        gauges.peers.set(gauge_value(peers.len()));
    }
    let client = board.client.clone();
    if let Ok(Ok(height)) = tokio::task::spawn_blocking(move || client.height()).await {
        gauges.height.set(gauge_value(height));
    }
    let now = unix_ms();
    let online = board
        .offers
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .values()
        .filter(|(offer, _)| offer.expires_at_ms > now)
        .count();
    gauges.providers_online.set(gauge_value(online));
    gauges
        .event_clients
        .set(gauge_value(board.clients.load(Ordering::Relaxed)));
    for provider in &board.local.providers {
        let labels = ProviderLabels {
            provider: provider.label.clone(),
        };
        let stats = &provider.stats;
        let set = |family: &Family<ProviderLabels, Gauge>, value: u64| {
            family.get_or_create(&labels).set(gauge_value(value));
        };
        set(
            &gauges.provider_tasks,
            stats.tasks_done.load(Ordering::Relaxed),
        );
        set(
            &gauges.provider_fuel,
            stats.fuel_used.load(Ordering::Relaxed),
        );
        set(
            &gauges.provider_earned,
            stats.earned.load(Ordering::Relaxed),
        );
        set(&gauges.provider_owed, stats.owed.load(Ordering::Relaxed));
    }
    for job in board.local.jobs() {
        let labels = JobLabels {
            job: job.name.clone(),
        };
        let progress = &job.progress;
        gauges
            .job_tasks_accepted
            .get_or_create(&labels)
            .set(gauge_value(progress.accepted.load(Ordering::Relaxed)));
        gauges
            .job_tasks_failed
            .get_or_create(&labels)
            .set(gauge_value(progress.failed.load(Ordering::Relaxed)));
    }
    (
        [(header::CONTENT_TYPE, metrics::CONTENT_TYPE)],
        gauges.metrics.render(),
    )
        .into_response()
}

/// The request metrics, for the gateway's whole router.
pub(crate) fn track(board: &Board, router: Router) -> Router {
    board.metrics.metrics.track(router)
}

fn static_file(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

/// The providers this gateway knows: by their gossiped offers, their stake
/// on the ledger, or running in this process; with their hardware,
/// benchmark, stake, balance, tasks and earnings (for those in this
/// process), and their track record in jobs submitted from it.
#[utoipa::path(
    get,
    path = "/v1/network",
    tag = "gateway",
    responses(
        (status = 200, description = "`{\"providers\":[…]}`", body = Object),
        (status = 500, description = "The view failed (`internal`)", body = ErrorBody),
    )
)]
pub(crate) async fn network(State(board): State<Arc<Board>>) -> Response {
    match tokio::task::spawn_blocking(move || board.network()).await {
        Ok(view) => axum::Json(view).into_response(),
        Err(error) => error_answer(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            &format!("the network view failed: {error}"),
        ),
    }
}

/// Jobs submitted from this process (the devnet's demo): progress, the
/// tasks accepted so far, and how their outputs make an image, if they do.
#[utoipa::path(
    get,
    path = "/v1/local/jobs",
    tag = "gateway",
    responses((status = 200, description = "`{\"jobs\":[…]}`", body = Object))
)]
pub(crate) async fn local_jobs(State(board): State<Arc<Board>>) -> Response {
    let jobs: Vec<Value> = board.local.jobs().iter().map(|job| job.view()).collect();
    axum::Json(json!({ "jobs": jobs })).into_response()
}

/// A local job's task output, once accepted: its verified stdout.
#[utoipa::path(
    get,
    path = "/v1/local/jobs/{job}/tasks/{index}",
    tag = "gateway",
    params(
        ("job" = String, Path, description = "The job id (`job:` and 64 hex digits)"),
        ("index" = u64, Path, description = "The task's index in the job"),
    ),
    responses(
        (status = 200, description = "The task's stdout", body = [u8], content_type = "application/octet-stream"),
        (status = 400, description = "A path that does not parse (`malformed_path`)", body = ErrorBody),
        (status = 404, description = "No such local job, or no accepted result yet (`not_found`)", body = ErrorBody),
    )
)]
pub(crate) async fn task_output(
    State(board): State<Arc<Board>>,
    path: Result<Path<(String, u64)>, PathRejection>,
) -> Response {
    let Ok(Path((job, index))) = path else {
        return error_answer(
            StatusCode::BAD_REQUEST,
            "malformed_path",
            "the path is /v1/local/jobs/JOB/tasks/INDEX, INDEX a number",
        );
    };
    let Some(local) = board.local_job(&job) else {
        return error_answer(
            StatusCode::NOT_FOUND,
            "not_found",
            &format!("no job {job} was submitted through this gateway"),
        );
    };
    if !local.progress.detail().done.contains(&index) {
        return error_answer(
            StatusCode::NOT_FOUND,
            "not_found",
            &format!("task {index} of job {job} has no accepted result yet"),
        );
    }
    let path = local.out_dir.join(format!("tasks/{index:06}.out"));
    let read = tokio::task::spawn_blocking(move || {
        use std::io::Read as _;
        let mut bytes = Vec::new();
        std::fs::File::open(&path)?
            .take(TASK_OUTPUT_BYTES_MAX)
            .read_to_end(&mut bytes)?;
        Ok::<_, std::io::Error>(bytes)
    })
    .await;
    match read {
        Ok(Ok(bytes)) => {
            ([(header::CONTENT_TYPE, "application/octet-stream")], bytes).into_response()
        }
        Ok(Err(error)) => error_answer(
            StatusCode::NOT_FOUND,
            "not_found",
            &format!("task {index}'s output could not be read: {error}"),
        ),
        Err(error) => error_answer(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            &format!("reading the output failed: {error}"),
        ),
    }
}

/// The newest blocks that carried transactions since the gateway started
/// (most blocks of a quiet network are empty), newest first, with their
/// transactions counted by kind, as `block` events give them.
#[utoipa::path(
    get,
    path = "/v1/activity",
    tag = "gateway",
    responses((status = 200, description = "`{\"blocks\":[{height, digest, transactions, kinds}]}`", body = Object))
)]
pub(crate) async fn activity(State(board): State<Arc<Board>>) -> Response {
    let blocks: Vec<Value> = board
        .activity
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .iter()
        .cloned()
        .collect();
    axum::Json(json!({ "blocks": blocks })).into_response()
}

/// Counts an event-stream client while it is connected.
struct ClientSlot(Arc<Board>);

impl Drop for ClientSlot {
    fn drop(&mut self) {
        self.0.clients.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Live events, as server-sent events: `block` (height, digest,
/// transactions, their kinds), `task` (job, index: accepted), `job` (job,
/// state), `offer` (account).
#[utoipa::path(
    get,
    path = "/v1/events",
    tag = "gateway",
    responses(
        (status = 200, description = "An endless stream of events", body = str, content_type = "text/event-stream"),
        (status = 503, description = "Too many clients already (`busy`)", body = ErrorBody),
    )
)]
pub(crate) async fn events(State(board): State<Arc<Board>>) -> Response {
    if board.clients.fetch_add(1, Ordering::Relaxed) >= EVENT_CLIENTS_MAX {
        board.clients.fetch_sub(1, Ordering::Relaxed);
        return error_answer(
            StatusCode::SERVICE_UNAVAILABLE,
            "busy",
            &format!("this gateway streams events to at most {EVENT_CLIENTS_MAX} clients"),
        );
    }
    let slot = ClientSlot(Arc::clone(&board));
    let receiver = board.events.subscribe();
    let stream = futures::stream::unfold((receiver, slot), |(mut receiver, slot)| async move {
        loop {
            match receiver.recv().await {
                Ok(announcement) => {
                    let event = SseEvent::default()
                        .event(announcement.kind)
                        .data(announcement.data.to_string());
                    return Some((Ok::<_, Infallible>(event), (receiver, slot)));
                }
                Err(broadcast::error::RecvError::Lagged(skipped)) => {
                    debug!(skipped, "an event client fell behind");
                }
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    });
    Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response()
}

fn error_answer(status: StatusCode, code: &str, message: &str) -> Response {
    (
        status,
        axum::Json(json!({ "error": { "code": code, "message": message } })),
    )
        .into_response()
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| {
            u64::try_from(since.as_millis()).unwrap_or(u64::MAX)
        })
}
