//! The provider role: offers on the overlay, task batches run in the
//! sandbox on a bounded pool of workers, signed receipts back to the
//! requestor, and vouchers redeemed on the ledger (periodically, when a job
//! is done, and at shutdown).

use std::collections::{HashMap, HashSet, VecDeque};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, mpsc as std_mpsc};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use idlegrid_ledger::{StakeRole, TxKind};
use idlegrid_net::protocol::{CONTENT_CHUNK_BYTES_MAX, REASON_BYTES_MAX, bounded_text};
use idlegrid_net::{
    AssignedTask, BATCH_TASKS_MAX, Event, MESSAGE_BYTES_MAX, Multiaddr, OUTPUT_INLINE_BYTES_MAX,
    Overlay, OverlayConfig, Reply, Request, Response, ResultBatch, TaskBatch, TaskReturn,
};
use idlegrid_sandbox::{PreparedModule, Sandbox, SandboxConfig, TaskSpec, outcome_of, task_limits};
use idlegrid_types::codec::Bounded;
use idlegrid_types::{
    AccountId, ContentId, ErrorKind, ExecutionLimits, JobId, Keypair, Offer, Receipt,
    SignedReceipt, SignedVoucher, TaskOutcome, task_seed,
};
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, info, warn};

use crate::client::{ApiClient, ApiError};
use crate::hardware::{self, Hardware};

/// Largest module a provider fetches, bytes.
pub const MODULE_BYTES_MAX: usize = 8 << 20;
/// Jobs whose ledger check a provider remembers.
const JOB_CHECKS_MAX: usize = 4096;
/// Results requests in flight to one requestor.
const RESULTS_IN_FLIGHT_MAX: usize = 2;
/// Tasks a provider offers to hold per core, queued or running. Requestors
/// send this many only when tasks are short (see the market's window), so
/// that a core never waits for the network between them.
const TASKS_QUEUED_PER_CORE: u32 = 64;
/// Offers published for new subscribers at most once per this, ms.
const REPUBLISH_PACE_MS: u64 = 1_000;
/// Bytes of task input a provider holds queued at most, from all requestors.
const QUEUE_BYTES_MAX: usize = 64 << 20;
/// Times a results batch is sent before it is given up (the requestor's
/// lease then expires and the tasks go elsewhere).
const RESULTS_ATTEMPTS_MAX: u32 = 3;
/// How long shutdown waits for the last redemptions.
const SHUTDOWN_REDEEM_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a redemption waits for its block.
const REDEEM_WAIT: Duration = Duration::from_secs(30);

/// A test-only way to make a provider lie, to test that liars are caught.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cheat {
    /// Return a wrong output (the true one with bytes appended) for every
    /// completed task, with a receipt signed over it.
    WrongOutput,
}

/// How a provider runs.
#[derive(Debug, Clone)]
pub struct ProviderConfig {
    pub key: Keypair,
    /// A validator's HTTP API.
    pub node: String,
    /// Modules, the compiled-module cache and the benchmark score.
    pub data_dir: PathBuf,
    pub overlay: OverlayConfig,
    /// Worker threads (tasks at once); at most the machine's cores.
    pub cores: Option<u32>,
    /// Memory offered; at most the machine's.
    pub memory_bytes: Option<u64>,
    pub price_floor_per_million_fuel: u64,
    /// Pause new work while the owner's own CPU load is above this percent.
    pub idle_only_percent: Option<f32>,
    /// Bond provider stake up to this amount at start.
    pub stake: Option<u64>,
    /// Skip the benchmark and offer this score (tests, throttled devices).
    pub benchmark_fuel_per_second: Option<u64>,
    pub offer_interval: Duration,
    pub offer_ttl: Duration,
    pub redeem_interval: Duration,
    pub cheat: Option<Cheat>,
    /// Run as a device this many times slower (1: as fast as this machine
    /// is): each task is followed by a pause of `slowdown - 1` times its run
    /// time, and the benchmark score is divided to match. The devnet's
    /// slower provider uses it so that placement by speed is visible.
    pub slowdown: u32,
}

impl ProviderConfig {
    pub fn new(
        key: Keypair,
        node: impl Into<String>,
        data_dir: PathBuf,
        overlay: OverlayConfig,
    ) -> Self {
        Self {
            key,
            node: node.into(),
            data_dir,
            overlay,
            cores: None,
            memory_bytes: None,
            price_floor_per_million_fuel: 1,
            idle_only_percent: None,
            stake: None,
            benchmark_fuel_per_second: None,
            offer_interval: Duration::from_secs(10),
            offer_ttl: Duration::from_secs(60),
            redeem_interval: Duration::from_secs(60),
            cheat: None,
            slowdown: 1,
        }
    }
}

/// Live counters, for the status line.
#[derive(Debug, Default)]
pub struct ProviderStats {
    pub tasks_done: AtomicU64,
    pub fuel_used: AtomicU64,
    /// Paid out on the ledger by redeemed vouchers.
    pub earned: AtomicU64,
    /// Owed by vouchers held but not yet redeemed.
    pub owed: AtomicU64,
    pub running: AtomicU64,
    pub queued: AtomicU64,
    pub paused: AtomicBool,
}

/// What a started provider tells its caller.
#[derive(Debug, Clone)]
pub struct ProviderReady {
    pub account: AccountId,
    pub addresses: Vec<Multiaddr>,
    pub hardware: Hardware,
    pub cores: u32,
    pub benchmark_fuel_per_second: u64,
    pub benchmark_cached: bool,
    pub provider_stake: u64,
}

/// Totals when the provider stops.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ProviderSummary {
    pub tasks_done: u64,
    pub fuel_used: u64,
    pub earned: u64,
    /// Owed by vouchers that could not be redeemed.
    pub unredeemed: u64,
}

/// One task waiting for a worker.
struct Work {
    requestor: AccountId,
    job: JobId,
    module_cid: ContentId,
    /// The prepared module, or the deterministic failure preparing it gave.
    module: Result<Arc<PreparedModule>, ErrorKind>,
    limits: ExecutionLimits,
    wall_time: Duration,
    task: AssignedTask,
}

/// A task's result on its way back, before it is signed: the results sent
/// together are signed together, under one signature.
#[derive(Debug, Clone)]
enum Finished {
    Ran {
        receipt: Receipt,
        stdout: Bounded<Vec<u8>, OUTPUT_INLINE_BYTES_MAX>,
    },
    NotRun {
        index: u64,
        reason: Bounded<String, REASON_BYTES_MAX>,
    },
}

impl Finished {
    /// Roughly what it takes on the wire, for packing batches.
    fn encoded_bytes_estimate(&self) -> usize {
        match self {
            Finished::Ran { stdout, .. } => stdout.len() + 512,
            Finished::NotRun { reason, .. } => reason.len() + 16,
        }
    }

    /// Signs the receipts of `results` as one batch.
    fn sign(key: &Keypair, results: Vec<Finished>) -> Vec<TaskReturn> {
        let receipts = results
            .iter()
            .filter_map(|result| match result {
                Finished::Ran { receipt, .. } => Some(receipt.clone()),
                Finished::NotRun { .. } => None,
            })
            .collect();
        let mut signed = SignedReceipt::sign_batch(key, receipts).into_iter();
        results
            .into_iter()
            .map(|result| match result {
                Finished::Ran { stdout, .. } => TaskReturn::Ran {
                    receipt: signed.next().expect("one receipt per result that ran"),
                    stdout,
                },
                Finished::NotRun { index, reason } => TaskReturn::NotRun { index, reason },
            })
            .collect()
    }
}

/// Tasks a provider holds: queued or running. Shared with the workers.
#[derive(Default)]
struct Holdings {
    queued: HashSet<(JobId, u64)>,
    /// Bytes of task input queued.
    queued_bytes: usize,
    cancelled: HashSet<(JobId, u64)>,
}

enum JobCheck {
    Approved {
        requestor: AccountId,
        module: ContentId,
    },
    Rejected {
        code: &'static str,
        message: String,
    },
}

enum Internal {
    JobChecked {
        job: JobId,
        check: JobCheck,
        peer: AccountId,
        batch: TaskBatch,
        reply: Reply,
    },
    ModuleReady {
        cid: ContentId,
        module: Result<Result<Arc<PreparedModule>, ErrorKind>, String>,
    },
    Finished {
        requestor: AccountId,
        job: JobId,
        result: Finished,
    },
    ResultsSent {
        requestor: AccountId,
        failed: Option<(JobId, Vec<Finished>, u32)>,
    },
    Paused(bool),
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| {
            u64::try_from(since.as_millis()).unwrap_or(u64::MAX)
        })
}

/// Runs a provider until `shutdown` resolves, then redeems what it is owed.
pub async fn run_provider(
    config: ProviderConfig,
    ready: oneshot::Sender<ProviderReady>,
    stats: Arc<ProviderStats>,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<ProviderSummary> {
    let client = ApiClient::new(&config.node);
    let hardware = hardware::detect();
    let cores = config
        .cores
        .unwrap_or(hardware.cores)
        .clamp(1, hardware.cores.max(1));
    let memory_bytes = config
        .memory_bytes
        .unwrap_or(hardware.memory_bytes)
        .min(hardware.memory_bytes);
    std::fs::create_dir_all(config.data_dir.join("content"))
        .with_context(|| format!("failed to create {}", config.data_dir.display()))?;
    let sandbox = Arc::new(
        Sandbox::new(SandboxConfig {
            cache_dir: Some(config.data_dir.join("modules")),
            concurrent_tasks_max: cores,
            ..SandboxConfig::default()
        })
        .context("failed to start the sandbox")?,
    );
    let (benchmark_fuel_per_second, benchmark_cached) = match config.benchmark_fuel_per_second {
        Some(score) => (score, false),
        None => {
            let sandbox = Arc::clone(&sandbox);
            let cache = config.data_dir.join("benchmark.json");
            let hardware = hardware.clone();
            let benchmark = tokio::task::spawn_blocking(move || {
                hardware::benchmark(&sandbox, &cache, &hardware)
            })
            .await
            .context("the benchmark thread failed")?
            .context("failed to run the reference benchmark")?;
            (
                benchmark.fuel_per_second / u64::from(config.slowdown.max(1)),
                benchmark.cached,
            )
        }
    };
    let provider_stake = ensure_stake(&client, &config.key, config.stake).await?;

    let (overlay, mut events, _driver) = Overlay::start(&config.key, config.overlay.clone())?;
    let addresses = listening(&overlay, &mut events).await?;
    let _ = ready.send(ProviderReady {
        account: config.key.account_id(),
        addresses,
        hardware: hardware.clone(),
        cores,
        benchmark_fuel_per_second,
        benchmark_cached,
        provider_stake,
    });

    let (internal_tx, mut internal) = mpsc::unbounded_channel();
    let holdings = Arc::new(Mutex::new(Holdings::default()));
    let (work_tx, work_rx) = std_mpsc::channel::<Work>();
    let work_rx = Arc::new(Mutex::new(work_rx));
    for index in 0..cores {
        let worker = Worker {
            sandbox: Arc::clone(&sandbox),
            work: Arc::clone(&work_rx),
            done: internal_tx.clone(),
            holdings: Arc::clone(&holdings),
            cheat: config.cheat,
            slowdown: config.slowdown.max(1),
            stats: Arc::clone(&stats),
        };
        std::thread::Builder::new()
            .name(format!("provider-worker-{index}"))
            .spawn(move || worker.run())
            .context("failed to start a worker thread")?;
    }
    let redeemer = Redeemer::start(
        client.clone(),
        config.key.clone(),
        Arc::clone(&stats),
        config.data_dir.clone(),
    )?;
    let voucher_writer = VoucherWriter::start(config.data_dir.clone())?;
    // Vouchers held before a crash or restart are redeemed like new ones.
    let vouchers = load_vouchers(&config.data_dir, &config.key.account_id());

    let mut provider = ProviderLoop {
        offer: Offer {
            cores,
            memory_bytes,
            gpus: u32::try_from(hardware.gpus.len()).unwrap_or(u32::MAX),
            benchmark_fuel_per_second,
            price_floor_per_million_fuel: config.price_floor_per_million_fuel,
            concurrency: cores.saturating_mul(TASKS_QUEUED_PER_CORE),
            idle_only: config.idle_only_percent.is_some(),
            operator: None,
            sequence: 0,
            expires_at_ms: 0,
        },
        // What it offers, and a batch more: a result may be on its way back
        // while the requestor already fills the place it left.
        queue_tasks_max: usize::try_from(cores.saturating_mul(TASKS_QUEUED_PER_CORE))
            .unwrap_or(usize::MAX)
            .saturating_add(BATCH_TASKS_MAX),
        config,
        client,
        overlay,
        sandbox,
        internal: internal_tx.clone(),
        holdings,
        work: work_tx,
        jobs: HashMap::new(),
        modules: HashMap::new(),
        waiting: HashMap::new(),
        outbox: HashMap::new(),
        in_flight: HashMap::new(),
        vouchers,
        voucher_writer,
        redeemer,
        stats: Arc::clone(&stats),
        last_offer_ms: 0,
        republish: false,
    };
    provider.stats.owed.store(
        provider.redeemer.owed(&provider.vouchers),
        Ordering::Relaxed,
    );
    provider.publish_offer().await;
    if let Some(threshold) = provider.config.idle_only_percent {
        spawn_idle_watch(threshold, internal_tx.clone());
    }

    let mut offer_timer = tokio::time::interval(provider.config.offer_interval);
    let mut redeem_timer = tokio::time::interval(provider.config.redeem_interval);
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            Some(event) = events.recv() => provider.event(event).await,
            Some(message) = internal.recv() => provider.internal(message).await,
            _ = offer_timer.tick() => provider.publish_offer().await,
            // A subscriber that came too soon after the last offer gets the
            // next one as soon as the pace allows, not an interval later.
            () = tokio::time::sleep(provider.republish_in()), if provider.republish => {
                provider.publish_offer().await;
            }
            _ = redeem_timer.tick() => provider.redeem(None),
        }
    }
    info!("shutting down: redeeming vouchers");
    provider.stats.paused.store(true, Ordering::Relaxed);
    let (done, finished) = oneshot::channel();
    provider
        .redeemer
        .order(provider.vouchers.values().cloned().collect(), Some(done));
    let _ = tokio::time::timeout(SHUTDOWN_REDEEM_TIMEOUT, finished).await;
    Ok(ProviderSummary {
        tasks_done: stats.tasks_done.load(Ordering::Relaxed),
        fuel_used: stats.fuel_used.load(Ordering::Relaxed),
        earned: stats.earned.load(Ordering::Relaxed),
        unredeemed: stats.owed.load(Ordering::Relaxed),
    })
}

/// Waits for the overlay to listen, then gives its addresses.
async fn listening(
    overlay: &Overlay,
    events: &mut mpsc::Receiver<Event>,
) -> anyhow::Result<Vec<Multiaddr>> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while let Ok(Some(event)) = tokio::time::timeout_at(deadline, events.recv()).await {
        if matches!(event, Event::Listening(_)) {
            break;
        }
    }
    Ok(overlay.listen_addresses().await?)
}

/// Bonds provider stake up to `wanted`; gives the bonded stake.
async fn ensure_stake(
    client: &ApiClient,
    key: &Keypair,
    wanted: Option<u64>,
) -> anyhow::Result<u64> {
    let client = client.clone();
    let key = key.clone();
    tokio::task::spawn_blocking(move || -> anyhow::Result<u64> {
        let account = client
            .account(&key.account_id())
            .context("failed to read this provider's account")?;
        let Some(wanted) = wanted.filter(|wanted| *wanted > account.provider_stake) else {
            return Ok(account.provider_stake);
        };
        let amount = wanted - account.provider_stake;
        let sent = client
            .send(
                &key,
                TxKind::Stake {
                    role: StakeRole::Provider,
                    amount,
                },
                None,
            )
            .context("failed to stake")?;
        client
            .wait_included(&sent.hash, REDEEM_WAIT)
            .context("the stake did not apply")?;
        Ok(wanted)
    })
    .await
    .context("the stake thread failed")?
}

fn spawn_idle_watch(threshold_percent: f32, internal: mpsc::UnboundedSender<Internal>) {
    std::thread::spawn(move || {
        let mut load = hardware::HostLoad::new();
        let mut gate = hardware::IdleGate::new(threshold_percent);
        loop {
            std::thread::sleep(Duration::from_secs(1));
            if let Some(paused) = gate.update(load.owner_busy_percent())
                && internal.send(Internal::Paused(paused)).is_err()
            {
                return;
            }
            if internal.is_closed() {
                return;
            }
        }
    });
}

struct ProviderLoop {
    config: ProviderConfig,
    client: ApiClient,
    overlay: Overlay,
    sandbox: Arc<Sandbox>,
    internal: mpsc::UnboundedSender<Internal>,
    holdings: Arc<Mutex<Holdings>>,
    work: std_mpsc::Sender<Work>,
    offer: Offer,
    queue_tasks_max: usize,
    jobs: HashMap<JobId, JobCheck>,
    modules: HashMap<ContentId, Result<Arc<PreparedModule>, ErrorKind>>,
    /// Tasks waiting for their module to arrive.
    waiting: HashMap<ContentId, Vec<Work>>,
    /// Results waiting to go back, per requestor.
    outbox: HashMap<AccountId, VecDeque<(JobId, Finished)>>,
    in_flight: HashMap<AccountId, usize>,
    /// The newest voucher of each job.
    vouchers: HashMap<JobId, SignedVoucher>,
    voucher_writer: VoucherWriter,
    redeemer: Redeemer,
    stats: Arc<ProviderStats>,
    last_offer_ms: u64,
    /// A new subscriber is owed the offer once the pace allows.
    republish: bool,
}

impl ProviderLoop {
    fn holdings(&self) -> std::sync::MutexGuard<'_, Holdings> {
        self.holdings
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// How long until an offer may be published again for a new
    /// subscriber: at most one a second.
    fn republish_in(&self) -> Duration {
        let since = unix_ms().saturating_sub(self.last_offer_ms);
        Duration::from_millis(REPUBLISH_PACE_MS.saturating_sub(since))
    }

    async fn publish_offer(&mut self) {
        let now = unix_ms();
        let paused = self.stats.paused.load(Ordering::Relaxed);
        self.offer.sequence = now.max(self.offer.sequence + 1);
        // A paused provider's offer expires at once, so requestors stop
        // placing work with it.
        self.offer.expires_at_ms = if paused {
            now
        } else {
            now + duration_ms(self.config.offer_ttl)
        };
        self.last_offer_ms = now;
        self.republish = false;
        let signed = self.config.key.sign(self.offer.clone());
        if let Err(error) = self.overlay.publish_offer(&signed).await {
            debug!(%error, "offer not published");
        }
    }

    async fn event(&mut self, event: Event) {
        match event {
            Event::Request {
                peer,
                request,
                reply,
            } => self.request(peer, request, reply),
            Event::OfferSubscriber(_) => {
                if self.republish_in().is_zero() {
                    self.publish_offer().await;
                } else {
                    self.republish = true;
                }
            }
            Event::Misbehaved { peer, reason } => warn!(%peer, %reason, "peer blocked"),
            _ => {}
        }
    }

    fn request(&mut self, peer: AccountId, request: Request, reply: Reply) {
        match request {
            Request::Tasks(batch) => self.tasks(peer, batch, reply),
            Request::Cancel { job, tasks } => {
                let mut holdings = self.holdings();
                for task in tasks.iter() {
                    if holdings.queued.contains(&(job, *task)) {
                        holdings.cancelled.insert((job, *task));
                    }
                }
                drop(holdings);
                for works in self.waiting.values_mut() {
                    works.retain(|work| !(work.job == job && tasks.contains(&work.task.index)));
                }
                reply.send(Response::Ok);
            }
            Request::Voucher(voucher) => self.voucher(peer, voucher, reply),
            Request::JobDone { job } => {
                reply.send(Response::Ok);
                self.redeem(Some(job));
            }
            Request::Content { cid, offset } => reply.send(self.content(cid, offset)),
            Request::Results(_) => reply.send(Response::refused(
                "not_a_requestor",
                "this node is a provider",
            )),
        }
    }

    fn tasks(&mut self, peer: AccountId, batch: TaskBatch, reply: Reply) {
        if self.stats.paused.load(Ordering::Relaxed) {
            return reply.send(Response::refused(
                "paused",
                "the provider's owner is using the machine",
            ));
        }
        if batch.price_per_million_fuel < self.config.price_floor_per_million_fuel {
            return reply.send(Response::refused(
                "price_too_low",
                format!(
                    "the job pays {} per million fuel; this provider asks at least {}",
                    batch.price_per_million_fuel, self.config.price_floor_per_million_fuel
                ),
            ));
        }
        let (queued, queued_bytes) = {
            let holdings = self.holdings();
            (holdings.queued.len(), holdings.queued_bytes)
        };
        let waiting = self.waiting.values().flatten();
        let held = queued + waiting.clone().count();
        let held_bytes = queued_bytes
            + waiting
                .map(|work| work.task.input.encoded_len())
                .sum::<usize>();
        let batch_bytes: usize = batch
            .tasks
            .iter()
            .map(|task| task.input.encoded_len())
            .sum();
        if held + batch.tasks.len() > self.queue_tasks_max
            || held_bytes + batch_bytes > QUEUE_BYTES_MAX
        {
            return reply.send(Response::refused("busy", "the provider's queue is full"));
        }
        match self.jobs.get(&batch.job) {
            Some(check) => {
                let response = self.admit(check_verdict(check, peer, &batch), peer, batch);
                reply.send(response);
            }
            None => {
                let client = self.client.clone();
                let internal = self.internal.clone();
                let price_floor = self.config.price_floor_per_million_fuel;
                let memory = self.offer.memory_bytes;
                tokio::task::spawn_blocking(move || {
                    let check = check_job(&client, &batch.job, price_floor, memory);
                    let _ = internal.send(Internal::JobChecked {
                        job: batch.job,
                        check,
                        peer,
                        batch,
                        reply,
                    });
                });
            }
        }
    }

    /// Queues an approved batch's tasks; answers the batch.
    fn admit(
        &mut self,
        verdict: Result<(), Response>,
        peer: AccountId,
        batch: TaskBatch,
    ) -> Response {
        if let Err(refusal) = verdict {
            return refusal;
        }
        let wall_time = Duration::from_millis(batch.wall_time_ms.clamp(1, 3_600_000));
        let works = batch.tasks.into_inner().into_iter().map(|task| Work {
            requestor: peer,
            job: batch.job,
            module_cid: batch.module,
            module: Err(ErrorKind::InvalidModule),
            limits: batch.limits,
            wall_time,
            task,
        });
        match self.modules.get(&batch.module) {
            Some(module) => {
                let module = module.clone();
                for mut work in works {
                    work.module = module.clone();
                    self.queue(work);
                }
            }
            None => {
                let fetching = self.waiting.contains_key(&batch.module);
                self.waiting.entry(batch.module).or_default().extend(works);
                if !fetching {
                    self.fetch_module(peer, batch.module);
                }
            }
        }
        Response::Ok
    }

    fn queue(&mut self, work: Work) {
        let mut holdings = self.holdings();
        holdings.queued.insert((work.job, work.task.index));
        holdings.queued_bytes += work.task.input.encoded_len();
        drop(holdings);
        self.stats.queued.fetch_add(1, Ordering::Relaxed);
        // The workers live as long as this loop.
        let _ = self.work.send(work);
    }

    fn fetch_module(&self, from: AccountId, cid: ContentId) {
        let overlay = self.overlay.clone();
        let sandbox = Arc::clone(&self.sandbox);
        let internal = self.internal.clone();
        let path = self
            .config
            .data_dir
            .join("content")
            .join(cid.to_string().replace(':', "-"));
        tokio::spawn(async move {
            let module = async {
                let bytes = match std::fs::read(&path) {
                    Ok(bytes) if ContentId::of(&bytes) == cid => bytes,
                    _ => {
                        let bytes = fetch_content(&overlay, &from, cid, MODULE_BYTES_MAX).await?;
                        store_content(&path, &bytes)
                            .map_err(|error| format!("failed to store the module: {error}"))?;
                        bytes
                    }
                };
                tokio::task::spawn_blocking(move || {
                    sandbox
                        .prepare(&bytes)
                        .map(|(module, _)| module)
                        .map_err(|error| error.kind)
                })
                .await
                .map_err(|error| format!("the compile thread failed: {error}"))
            }
            .await;
            let _ = internal.send(Internal::ModuleReady { cid, module });
        });
    }

    fn voucher(&mut self, peer: AccountId, voucher: SignedVoucher, reply: Reply) {
        if voucher.verify().is_err() || voucher.signer != peer {
            return reply.send(Response::refused(
                "bad_voucher",
                "the voucher is not signed by the requestor that sent it",
            ));
        }
        if voucher.body.provider != self.config.key.account_id() {
            return reply.send(Response::refused(
                "bad_voucher",
                "the voucher pays someone else",
            ));
        }
        let newer = self.vouchers.get(&voucher.body.job).is_none_or(|held| {
            voucher.body.sequence > held.body.sequence
                && voucher.body.cumulative_amount >= held.body.cumulative_amount
        });
        if !newer {
            return reply.send(Response::Ok);
        }
        self.vouchers.insert(voucher.body.job, voucher.clone());
        self.stats
            .owed
            .store(self.redeemer.owed(&self.vouchers), Ordering::Relaxed);
        // On disk before it is acknowledged: a provider killed at any
        // moment keeps every voucher it said it had.
        self.voucher_writer.store(voucher, reply);
    }

    fn content(&self, cid: ContentId, offset: u64) -> Response {
        let path = self
            .config
            .data_dir
            .join("content")
            .join(cid.to_string().replace(':', "-"));
        match std::fs::read(&path) {
            Ok(bytes) => content_chunk(&bytes, offset),
            Err(_) => Response::refused("not_found", format!("this node does not hold {cid}")),
        }
    }

    /// Orders redemption of one job's voucher, or of every voucher that
    /// owes more than was redeemed.
    fn redeem(&mut self, job: Option<JobId>) {
        let vouchers: Vec<SignedVoucher> = match job {
            Some(job) => self.vouchers.get(&job).cloned().into_iter().collect(),
            None => self.vouchers.values().cloned().collect(),
        };
        if !vouchers.is_empty() {
            self.redeemer.order(vouchers, None);
        }
    }

    async fn internal(&mut self, message: Internal) {
        match message {
            Internal::JobChecked {
                job,
                check,
                peer,
                batch,
                reply,
            } => {
                if self.jobs.len() >= JOB_CHECKS_MAX {
                    self.jobs.clear();
                }
                let verdict = check_verdict(&check, peer, &batch);
                self.jobs.insert(job, check);
                let response = self.admit(verdict, peer, batch);
                reply.send(response);
            }
            Internal::ModuleReady { cid, module } => {
                let works = self.waiting.remove(&cid).unwrap_or_default();
                match module {
                    Ok(module) => {
                        self.modules.insert(cid, module.clone());
                        for mut work in works {
                            work.module = module.clone();
                            self.queue(work);
                        }
                    }
                    Err(reason) => {
                        warn!(%cid, %reason, "module not available");
                        for work in works {
                            let result = Finished::NotRun {
                                index: work.task.index,
                                reason: bounded_text(reason.clone()),
                            };
                            self.finished(work.requestor, work.job, result);
                        }
                    }
                }
            }
            Internal::Finished {
                requestor,
                job,
                result,
            } => self.finished(requestor, job, result),
            Internal::ResultsSent { requestor, failed } => {
                if let Some(count) = self.in_flight.get_mut(&requestor) {
                    *count = count.saturating_sub(1);
                }
                if let Some((job, results, attempts)) = failed {
                    if attempts < RESULTS_ATTEMPTS_MAX {
                        let outbox = self.outbox.entry(requestor).or_default();
                        for result in results.into_iter().rev() {
                            outbox.push_front((job, result));
                        }
                    } else {
                        warn!(%requestor, "giving up on returning results; the requestor will reissue them");
                    }
                }
                self.flush(requestor, 1);
            }
            Internal::Paused(paused) => {
                info!(paused, "the owner's load changed");
                self.stats.paused.store(paused, Ordering::Relaxed);
                self.publish_offer().await;
            }
        }
    }

    fn finished(&mut self, requestor: AccountId, job: JobId, result: Finished) {
        self.outbox
            .entry(requestor)
            .or_default()
            .push_back((job, result));
        self.flush(requestor, 1);
    }

    /// Sends results to `requestor` while fewer than the limit are in flight.
    fn flush(&mut self, requestor: AccountId, attempt: u32) {
        loop {
            let in_flight = self.in_flight.get(&requestor).copied().unwrap_or(0);
            if in_flight >= RESULTS_IN_FLIGHT_MAX {
                return;
            }
            let Some(outbox) = self.outbox.get_mut(&requestor) else {
                return;
            };
            let Some(&(job, _)) = outbox.front() else {
                self.outbox.remove(&requestor);
                return;
            };
            let mut results = Vec::new();
            let mut bytes = 0;
            while let Some((next_job, result)) = outbox.front() {
                let size = result.encoded_bytes_estimate();
                if *next_job != job
                    || results.len() == BATCH_TASKS_MAX
                    || (bytes + size > MESSAGE_BYTES_MAX / 2 && !results.is_empty())
                {
                    break;
                }
                bytes += size;
                if let Some((_, result)) = outbox.pop_front() {
                    results.push(result);
                }
            }
            *self.in_flight.entry(requestor).or_default() += 1;
            let internal = self.internal.clone();
            let signed = Finished::sign(&self.config.key, results.clone());
            let batch = ResultBatch {
                job,
                results: Bounded::new(signed).expect("at most BATCH_TASKS_MAX results"),
            };
            // On its way now; a task waits for the answer.
            let answer = self.overlay.send(&requestor, Request::Results(batch));
            tokio::spawn(async move {
                let failed = match answer.await {
                    Ok(_) => None,
                    Err(error) => {
                        debug!(%requestor, %error, "results not delivered");
                        Some((job, results, attempt + 1))
                    }
                };
                let _ = internal.send(Internal::ResultsSent { requestor, failed });
            });
        }
    }
}

fn duration_ms(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

fn check_verdict(check: &JobCheck, peer: AccountId, batch: &TaskBatch) -> Result<(), Response> {
    match check {
        JobCheck::Rejected { code, message } => Err(Response::refused(code, message.clone())),
        JobCheck::Approved { requestor, module } => {
            if *requestor != peer {
                Err(Response::refused(
                    "not_the_requestor",
                    "the job belongs to another account",
                ))
            } else if *module != batch.module {
                Err(Response::refused(
                    "wrong_module",
                    "the job runs another module",
                ))
            } else {
                Ok(())
            }
        }
    }
}

/// Reads the job from the ledger: it must be open, at a price this
/// provider takes, with tasks that fit the memory it offers; then batches
/// from its requestor for its module run.
fn check_job(client: &ApiClient, job: &JobId, price_floor: u64, memory: u64) -> JobCheck {
    match client.job(job) {
        Ok(Some(state)) => {
            let (Ok(requestor), Ok(module)) = (
                state.requestor.parse::<AccountId>(),
                state.module.parse::<ContentId>(),
            ) else {
                return JobCheck::Rejected {
                    code: "unknown_job",
                    message: "the ledger's answer about the job does not parse".to_owned(),
                };
            };
            if !state.open {
                JobCheck::Rejected {
                    code: "job_closed",
                    message: format!("{job} is closed"),
                }
            } else if state.price_per_million_fuel < price_floor {
                JobCheck::Rejected {
                    code: "price_too_low",
                    message: format!(
                        "{job} pays {} per million fuel",
                        state.price_per_million_fuel
                    ),
                }
            } else if state.memory_bytes > memory {
                JobCheck::Rejected {
                    code: "memory_too_large",
                    message: format!(
                        "{job}'s tasks may use {} MiB; this provider offers {} MiB",
                        state.memory_bytes >> 20,
                        memory >> 20
                    ),
                }
            } else {
                JobCheck::Approved { requestor, module }
            }
        }
        Ok(None) => JobCheck::Rejected {
            code: "unknown_job",
            message: format!("the ledger has no {job}"),
        },
        Err(error) => JobCheck::Rejected {
            code: "ledger_unreachable",
            message: format!("could not check the job: {error}"),
        },
    }
}

/// A chunk of `bytes` from `offset`.
pub fn content_chunk(bytes: &[u8], offset: u64) -> Response {
    let start = usize::try_from(offset)
        .unwrap_or(usize::MAX)
        .min(bytes.len());
    let end = (start + CONTENT_CHUNK_BYTES_MAX).min(bytes.len());
    Response::Content {
        total_bytes: bytes.len() as u64,
        bytes: Bounded::new(bytes[start..end].to_vec()).expect("at most one chunk"),
    }
}

/// Fetches content by id from a peer, chunk by chunk, and checks its id.
pub async fn fetch_content(
    overlay: &Overlay,
    from: &AccountId,
    cid: ContentId,
    bytes_max: usize,
) -> Result<Vec<u8>, String> {
    let mut bytes = Vec::new();
    loop {
        let request = Request::Content {
            cid,
            offset: bytes.len() as u64,
        };
        match overlay.request(from, request).await {
            Ok(Response::Content {
                total_bytes,
                bytes: chunk,
            }) => {
                if total_bytes > bytes_max as u64 {
                    return Err(format!(
                        "{cid} is {total_bytes} bytes, over the limit of {bytes_max}"
                    ));
                }
                if chunk.is_empty() && (bytes.len() as u64) < total_bytes {
                    return Err(format!("{from} sent an empty chunk of {cid}"));
                }
                bytes.extend_from_slice(&chunk);
                if bytes.len() as u64 >= total_bytes {
                    break;
                }
            }
            Ok(Response::Refused { message, .. }) => {
                return Err(format!("{from} refused {cid}: {}", &*message));
            }
            Ok(Response::Ok) => {
                return Err(format!("{from} answered a content request without content"));
            }
            Err(error) => return Err(format!("failed to fetch {cid}: {error}")),
        }
    }
    if ContentId::of(&bytes) != cid {
        return Err(format!("{from} sent bytes that are not {cid}"));
    }
    Ok(bytes)
}

/// Largest stored voucher file, bytes.
const VOUCHER_FILE_BYTES_MAX: usize = 4096;
/// Vouchers loaded at start at most (one per job).
const VOUCHER_FILES_MAX: usize = 100_000;

fn voucher_path(data_dir: &std::path::Path, job: &JobId) -> PathBuf {
    data_dir.join("vouchers").join(hex::encode(job.as_bytes()))
}

/// Keeps the newest voucher of a job on disk, so a crash loses no earnings.
fn store_voucher(data_dir: &std::path::Path, voucher: &SignedVoucher) -> std::io::Result<()> {
    let path = voucher_path(data_dir, &voucher.body.job);
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let bytes = idlegrid_types::codec::encode(voucher)
        .map_err(|error| std::io::Error::other(error.to_string()))?;
    store_content(&path, &bytes)
}

/// The vouchers stored by an earlier run; damaged or foreign files are skipped.
fn load_vouchers(data_dir: &std::path::Path, me: &AccountId) -> HashMap<JobId, SignedVoucher> {
    let mut vouchers = HashMap::new();
    let Ok(entries) = std::fs::read_dir(data_dir.join("vouchers")) else {
        return vouchers;
    };
    for entry in entries.flatten().take(VOUCHER_FILES_MAX) {
        let Ok(bytes) = std::fs::read(entry.path()) else {
            continue;
        };
        let decoded =
            idlegrid_types::codec::decode::<SignedVoucher>(&bytes, VOUCHER_FILE_BYTES_MAX);
        match decoded {
            Ok(voucher) if voucher.verify().is_ok() && voucher.body.provider == *me => {
                vouchers.insert(voucher.body.job, voucher);
            }
            _ => {
                warn!(path = %entry.path().display(), "skipping a voucher file that does not check")
            }
        }
    }
    vouchers
}

/// Writes content atomically (a temporary file, then a rename).
fn store_content(path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    let temporary = path.with_extension("partial");
    std::fs::write(&temporary, bytes)?;
    std::fs::rename(&temporary, path)
}

struct Worker {
    sandbox: Arc<Sandbox>,
    work: Arc<Mutex<std_mpsc::Receiver<Work>>>,
    done: mpsc::UnboundedSender<Internal>,
    holdings: Arc<Mutex<Holdings>>,
    cheat: Option<Cheat>,
    slowdown: u32,
    stats: Arc<ProviderStats>,
}

impl Worker {
    fn run(self) {
        loop {
            let work = {
                let receiver = self
                    .work
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                match receiver.recv() {
                    Ok(work) => work,
                    Err(_) => return,
                }
            };
            self.stats.queued.fetch_sub(1, Ordering::Relaxed);
            let key = (work.job, work.task.index);
            let cancelled = {
                let mut holdings = self
                    .holdings
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                holdings.queued.remove(&key);
                holdings.queued_bytes = holdings
                    .queued_bytes
                    .saturating_sub(work.task.input.encoded_len());
                holdings.cancelled.remove(&key)
            };
            if cancelled {
                continue;
            }
            self.stats.running.fetch_add(1, Ordering::Relaxed);
            let started = Instant::now();
            let result = self.execute(&work);
            if self.slowdown > 1 {
                std::thread::sleep(started.elapsed() * (self.slowdown - 1));
            }
            self.stats.running.fetch_sub(1, Ordering::Relaxed);
            let finished = Internal::Finished {
                requestor: work.requestor,
                job: work.job,
                result,
            };
            if self.done.send(finished).is_err() {
                return;
            }
        }
    }

    fn execute(&self, work: &Work) -> Finished {
        let input = &work.task.input;
        let (outcome, fuel_used, mut stdout) = match &work.module {
            Err(kind) => (TaskOutcome::Failed(*kind), 0, Vec::new()),
            Ok(module) => {
                let spec = TaskSpec {
                    args: input.arg_strings(),
                    stdin: input.stdin.to_vec(),
                    input_dir: None,
                    output_dir: None,
                    seed: task_seed(&work.job, work.task.index),
                    limits: task_limits(&work.limits, work.wall_time),
                };
                match self.sandbox.run(module, &spec) {
                    Ok(report) => {
                        let stdout = match &report.result {
                            Ok(completion) => completion.output.stdout.clone(),
                            Err(_) => Vec::new(),
                        };
                        (outcome_of(&report), report.fuel_used, stdout)
                    }
                    Err(error) => {
                        return Finished::NotRun {
                            index: work.task.index,
                            reason: bounded_text(error.to_string()),
                        };
                    }
                }
            }
        };
        let mut outcome = outcome;
        if let (Some(Cheat::WrongOutput), TaskOutcome::Completed { exit_code, .. }) =
            (self.cheat, outcome)
        {
            stdout.extend_from_slice(b" (forged)");
            outcome = TaskOutcome::Completed {
                exit_code,
                output: ContentId::of(&stdout),
            };
        }
        self.stats.tasks_done.fetch_add(1, Ordering::Relaxed);
        self.stats.fuel_used.fetch_add(fuel_used, Ordering::Relaxed);
        let receipt = Receipt {
            job: work.job,
            task_index: work.task.index,
            module: work.module_cid,
            input: input.content_id(),
            outcome,
            fuel_used,
        };
        match Bounded::new(stdout) {
            Ok(stdout) => Finished::Ran { receipt, stdout },
            Err(_) => Finished::NotRun {
                index: work.task.index,
                reason: bounded_text("the output is too large to return".to_owned()),
            },
        }
    }
}

/// The ledger's answer says a voucher will never pay more: it holds this
/// voucher or a newer one already, or the job is closed or gone.
fn settled(error: &ApiError) -> bool {
    matches!(
        error.code(),
        "voucher_not_newer"
            | "voucher_below_redeemed"
            | "voucher_fuel_below_redeemed"
            | "job_closed"
            | "job_expired"
            | "unknown_job"
    )
}

/// Stores vouchers on their own thread, so that the provider's loop never
/// waits for the disk, and answers each voucher's request once it is
/// stored. Vouchers that piled up meanwhile are stored newest only.
struct VoucherWriter {
    orders: std_mpsc::Sender<(SignedVoucher, Reply)>,
}

impl VoucherWriter {
    fn start(data_dir: PathBuf) -> anyhow::Result<Self> {
        let (orders, queue) = std_mpsc::channel::<(SignedVoucher, Reply)>();
        std::thread::Builder::new()
            .name("provider-vouchers".to_owned())
            .spawn(move || {
                while let Ok(first) = queue.recv() {
                    let mut newest: HashMap<JobId, SignedVoucher> = HashMap::new();
                    let mut replies = Vec::new();
                    for (voucher, reply) in std::iter::once(first).chain(queue.try_iter()) {
                        replies.push(reply);
                        let held = newest.get(&voucher.body.job);
                        if held.is_none_or(|held| voucher.body.sequence > held.body.sequence) {
                            newest.insert(voucher.body.job, voucher);
                        }
                    }
                    for voucher in newest.values() {
                        if let Err(error) = store_voucher(&data_dir, voucher) {
                            // Still held in memory; only a crash before
                            // redeeming loses it.
                            warn!(%error, "failed to store a voucher");
                        }
                    }
                    for reply in replies {
                        reply.send(Response::Ok);
                    }
                }
            })
            .context("failed to start the voucher thread")?;
        Ok(Self { orders })
    }

    fn store(&self, voucher: SignedVoucher, reply: Reply) {
        // The thread lives as long as the provider.
        let _ = self.orders.send((voucher, reply));
    }
}

/// Redeems vouchers on the ledger, one transaction at a time, on its own
/// thread (the API client blocks).
struct Redeemer {
    orders: std_mpsc::Sender<(Vec<SignedVoucher>, Option<oneshot::Sender<()>>)>,
    redeemed: Arc<Mutex<HashMap<JobId, u64>>>,
}

impl Redeemer {
    fn start(
        client: ApiClient,
        key: Keypair,
        stats: Arc<ProviderStats>,
        data_dir: PathBuf,
    ) -> anyhow::Result<Self> {
        let (orders, queue) =
            std_mpsc::channel::<(Vec<SignedVoucher>, Option<oneshot::Sender<()>>)>();
        let redeemed: Arc<Mutex<HashMap<JobId, u64>>> = Arc::default();
        let shared = Arc::clone(&redeemed);
        std::thread::Builder::new()
            .name("provider-redeemer".to_owned())
            .spawn(move || {
                while let Ok((vouchers, done)) = queue.recv() {
                    for voucher in vouchers {
                        let job = voucher.body.job;
                        let amount = voucher.body.cumulative_amount;
                        let already = shared
                            .lock()
                            .unwrap_or_else(std::sync::PoisonError::into_inner)
                            .get(&job)
                            .copied()
                            .unwrap_or(0);
                        if amount <= already {
                            continue;
                        }
                        let result = client
                            .send(&key, TxKind::Redeem { voucher }, None)
                            .and_then(|sent| client.wait_included(&sent.hash, REDEEM_WAIT));
                        match result {
                            Ok(height) => {
                                info!(%job, amount, height, "voucher redeemed");
                                shared
                                    .lock()
                                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                                    .insert(job, amount);
                                stats.earned.fetch_add(amount - already, Ordering::Relaxed);
                                stats.owed.fetch_sub(
                                    (amount - already).min(stats.owed.load(Ordering::Relaxed)),
                                    Ordering::Relaxed,
                                );
                            }
                            Err(error) if settled(&error) => {
                                // An earlier run redeemed it (or a newer one), or
                                // the job is past paying: it owes nothing more.
                                info!(%job, amount, code = error.code(), "voucher already settled");
                                shared
                                    .lock()
                                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                                    .insert(job, amount);
                                stats.owed.fetch_sub(
                                    (amount - already).min(stats.owed.load(Ordering::Relaxed)),
                                    Ordering::Relaxed,
                                );
                                let _ = std::fs::remove_file(voucher_path(&data_dir, &job));
                            }
                            Err(error) => warn!(%job, %error, "redeeming a voucher failed"),
                        }
                    }
                    if let Some(done) = done {
                        let _ = done.send(());
                    }
                }
            })
            .context("failed to start the redeemer thread")?;
        Ok(Self { orders, redeemed })
    }

    fn order(&self, vouchers: Vec<SignedVoucher>, done: Option<oneshot::Sender<()>>) {
        let _ = self.orders.send((vouchers, done));
    }

    /// What the held vouchers owe beyond what was redeemed.
    fn owed(&self, vouchers: &HashMap<JobId, SignedVoucher>) -> u64 {
        let redeemed = self
            .redeemed
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        vouchers
            .values()
            .map(|voucher| {
                voucher
                    .body
                    .cumulative_amount
                    .saturating_sub(redeemed.get(&voucher.body.job).copied().unwrap_or(0))
            })
            .sum()
    }
}
