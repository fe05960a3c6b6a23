//! The provider's shell: starts the sandbox, the workers and the overlay,
//! feeds the [`ProviderCore`] what happens (requests, finished tasks,
//! ledger answers, timers) and carries out what it decides.

use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use idlegrid_api::client::ApiClient;
use idlegrid_gpu::{Gpu, Program};
use idlegrid_net::{
    BATCH_TASKS_MAX, CONTENT_BYTES_MAX, ContentStore, Event, Multiaddr, Overlay, OverlayConfig,
    Reply, RequestError, Response, StoreChange, fetch_content_from,
};
use idlegrid_sandbox::{Sandbox, SandboxConfig};
use idlegrid_types::{
    AccountId, ContentId, ErrorKind, GpuOffer, GpuProgram, JobId, Keypair, Offer,
};
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, info, warn};

use crate::core::{
    Cheat, Command, ContentPart, CoreConfig, Input, ModuleStatus, ProviderCore, QUEUE_BYTES_MAX,
    RequestId, RunResult, Task, VoucherAnswer,
};
use crate::energy::{self, EnergyMeter};
use crate::gpu::{self, GpuChoice};
use crate::hardware::{self, Hardware};
use crate::ledger::{Redeemer, check_job, ensure_stake};
use crate::staging::Stager;
use crate::store::{VoucherWriter, load_vouchers};
use crate::worker::{OutputKeeper, Prepared, Workers};

/// Largest module a provider fetches, bytes.
pub const MODULE_BYTES_MAX: usize = 8 << 20;
/// Bytes of fetched content a provider keeps on disk, by default.
pub const CONTENT_BYTES_DEFAULT: u64 = 2 << 30;
/// A completed task's output larger than this stays with the provider, in
/// its content store, for the requestor to fetch by id, rather than going
/// back inline in the result, bytes.
pub const KEEP_OUTPUTS_OVER_BYTES: usize = 256 << 10;
/// Tasks a provider offers to hold per core, queued or running. Requestors
/// send this many only when tasks are short (see the market's window), so
/// that a core never waits for the network between them.
const TASKS_QUEUED_PER_CORE: u32 = 64;
/// How long an ask for a voucher waits for its answer.
const VOUCHER_ASK_TIMEOUT: Duration = Duration::from_secs(10);
/// How long shutdown waits for the last redemptions.
const SHUTDOWN_REDEEM_TIMEOUT: Duration = Duration::from_secs(60);

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
    /// The GPU offered for GPU tasks.
    pub gpu: GpuChoice,
    /// The lowest price taken for GPU tasks [default: the CPU's floor].
    pub gpu_price_floor_per_million_fuel: Option<u64>,
    /// Skip the GPU benchmark and offer this score.
    pub gpu_benchmark_fuel_per_second: Option<u64>,
    /// Bytes of fetched content (modules, input files) and kept outputs
    /// on disk at most; the least recently used make room, except outputs
    /// kept until their requestors are done with them. A batch whose tasks
    /// may write more than half of it is refused.
    pub content_bytes_max: u64,
    /// A completed task's output over this many bytes is kept in the
    /// content store and fetched by id [default: `KEEP_OUTPUTS_OVER_BYTES`;
    /// at most `OUTPUT_INLINE_BYTES_MAX` go inline whatever it says].
    pub keep_outputs_over_bytes: usize,
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
            gpu: GpuChoice::Off,
            gpu_price_floor_per_million_fuel: None,
            gpu_benchmark_fuel_per_second: None,
            content_bytes_max: CONTENT_BYTES_DEFAULT,
            keep_outputs_over_bytes: KEEP_OUTPUTS_OVER_BYTES,
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
    /// Content fetched from peers (modules and input files), and its bytes.
    pub fetched_blobs: AtomicU64,
    pub fetched_bytes: AtomicU64,
    /// Outputs kept here for requestors to fetch (too large to go back
    /// inline), and their bytes.
    pub outputs_kept: AtomicU64,
    pub outputs_kept_bytes: AtomicU64,
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
    /// The GPU offered, if any.
    pub gpu: Option<GpuOffer>,
    /// Its score was read from the cache rather than measured now.
    pub gpu_benchmark_cached: bool,
    /// Where each task's advisory energy figure comes from.
    pub energy: String,
}

/// Totals when the provider stops.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ProviderSummary {
    pub tasks_done: u64,
    pub fuel_used: u64,
    pub earned: u64,
    /// Owed by vouchers that could not be redeemed.
    pub unredeemed: u64,
    /// Content fetched from peers (modules and input files), and its bytes.
    pub fetched_blobs: u64,
    pub fetched_bytes: u64,
}

/// What reaches the loop from the threads and tasks it started.
enum Message {
    Core(Input),
    /// A module fetched and compiled: the module, the deterministic
    /// failure compiling it gave, or why it could not be had.
    Module {
        cid: ContentId,
        module: Result<Result<Prepared, ErrorKind>, String>,
    },
    /// A task's input files are here, in this folder, or why not.
    Staged {
        task: Task,
        dir: Result<tempfile::TempDir, String>,
    },
}

impl From<Input> for Message {
    fn from(input: Input) -> Self {
        Message::Core(input)
    }
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| {
            u64::try_from(since.as_millis()).unwrap_or(u64::MAX)
        })
}

fn duration_ms(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
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
    let content_dir = config.data_dir.join("content");
    let content = Arc::new(
        ContentStore::open(&content_dir, config.content_bytes_max)
            .with_context(|| format!("failed to open {}", content_dir.display()))?,
    );
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
    let gpu_setup = {
        let choice = config.gpu.clone();
        let cache = config.data_dir.join("gpu-benchmark.json");
        let price_floor = config
            .gpu_price_floor_per_million_fuel
            .unwrap_or(config.price_floor_per_million_fuel);
        let score = config.gpu_benchmark_fuel_per_second;
        tokio::task::spawn_blocking(move || gpu::open(&choice, &cache, price_floor, score))
            .await
            .context("the GPU thread failed")??
    };
    let provider_stake = ensure_stake(&client, &config.key, config.stake).await?;

    let (overlay, mut events, _driver) = Overlay::start(&config.key, config.overlay.clone())?;
    announce_content(&content, &overlay);
    let addresses = listening(&overlay, &mut events).await?;
    let energy = Arc::new(EnergyMeter::new(
        Path::new(energy::RAPL_PACKAGE_DIR),
        gpu_setup.as_ref().map(|setup| setup.gpu.info()),
    ));
    info!(source = %energy, "energy figures");
    let _ = ready.send(ProviderReady {
        account: config.key.account_id(),
        addresses,
        hardware: hardware.clone(),
        cores,
        benchmark_fuel_per_second,
        benchmark_cached,
        provider_stake,
        gpu: gpu_setup.as_ref().map(|setup| setup.offer.clone()),
        gpu_benchmark_cached: gpu_setup.as_ref().is_some_and(|setup| setup.cached),
        energy: energy.to_string(),
    });

    let (messages_tx, mut messages) = mpsc::unbounded_channel::<Message>();
    let (inputs_tx, mut inputs) = mpsc::unbounded_channel::<Input>();
    let gpu = gpu_setup.as_ref().map(|setup| Arc::clone(&setup.gpu));
    let keep_over_bytes = config.keep_outputs_over_bytes;
    let workers = Workers::start(
        cores,
        &sandbox,
        gpu.as_ref(),
        &energy,
        &OutputKeeper {
            store: Arc::clone(&content),
            keep_over_bytes,
        },
        config.slowdown,
        &stats,
        &inputs_tx,
    )?;
    let redeemer = Redeemer::start(client.clone(), config.key.clone(), inputs_tx.clone())?;
    let _challenges = crate::challenges::ChallengeAnswerer::start(
        client.clone(),
        config.key.clone(),
        Arc::clone(&sandbox),
        benchmark_fuel_per_second,
        gpu_setup
            .as_ref()
            .map(|setup| (Arc::clone(&setup.gpu), setup.offer.fuel_per_second)),
    )?;
    let voucher_writer = VoucherWriter::start(config.data_dir.clone())?;
    let concurrency = cores.saturating_mul(TASKS_QUEUED_PER_CORE);
    let core = ProviderCore::new(
        CoreConfig {
            key: config.key.clone(),
            offer: Offer {
                cores,
                memory_bytes,
                gpu: gpu_setup.as_ref().map(|setup| setup.offer.clone()),
                benchmark_fuel_per_second,
                price_floor_per_million_fuel: config.price_floor_per_million_fuel,
                concurrency,
                idle_only: config.idle_only_percent.is_some(),
                operator: None,
                sequence: 0,
                expires_at_ms: 0,
            },
            offer_ttl_ms: duration_ms(config.offer_ttl),
            // What it offers, and a batch more: a result may be on its way
            // back while the requestor already fills the place it left.
            queue_tasks_max: usize::try_from(concurrency)
                .unwrap_or(usize::MAX)
                .saturating_add(BATCH_TASKS_MAX),
            queue_bytes_max: QUEUE_BYTES_MAX,
            // Half the store, so that one output leaves room for others
            // (and for modules and inputs); what goes inline needs none.
            output_bytes_max: (content.bytes_max() / 2)
                .min(CONTENT_BYTES_MAX)
                .max(keep_over_bytes as u64),
            cheat: config.cheat,
        },
        // Vouchers held before a crash or restart are redeemed like new ones.
        load_vouchers(&config.data_dir, &config.key.account_id()),
    );
    if let Some(threshold) = config.idle_only_percent {
        spawn_idle_watch(threshold, inputs_tx.clone());
    }
    let mut shell = Shell {
        core,
        client,
        overlay: overlay.clone(),
        sandbox,
        workers,
        modules: HashMap::new(),
        replies: HashMap::new(),
        next_request: 0,
        messages: messages_tx,
        voucher_writer,
        redeemer,
        stats: Arc::clone(&stats),
        stager: Stager::new(
            overlay.clone(),
            Arc::clone(&content),
            config.data_dir.join("inputs"),
            Arc::clone(&stats),
        ),
        content,
        memory_bytes,
        // A job is checked before its module says whether it is a GPU
        // job: the lower floor admits it, and the market places each kind
        // at its own floor.
        price_floor: gpu_setup
            .as_ref()
            .map_or(config.price_floor_per_million_fuel, |setup| {
                setup
                    .offer
                    .price_floor_per_million_fuel
                    .min(config.price_floor_per_million_fuel)
            }),
        gpu,
    };
    shell.input(Input::OfferTimer).await;

    let start = tokio::time::Instant::now();
    let mut offer_timer =
        tokio::time::interval_at(start + config.offer_interval, config.offer_interval);
    let mut redeem_timer = tokio::time::interval(config.redeem_interval);
    tokio::pin!(shutdown);
    loop {
        let wake_in = shell
            .core
            .wake_at()
            .map(|at| Duration::from_millis(at.saturating_sub(unix_ms())));
        tokio::select! {
            () = &mut shutdown => break,
            Some(event) = events.recv() => shell.event(event).await,
            Some(input) = inputs.recv() => shell.input(input).await,
            Some(message) = messages.recv() => shell.message(message).await,
            _ = offer_timer.tick() => shell.input(Input::OfferTimer).await,
            // A subscriber that came too soon after the last offer gets the
            // next one as soon as the pace allows, not an interval later;
            // asks for vouchers and kept outputs' holds end on time.
            () = tokio::time::sleep(wake_in.unwrap_or_default()), if wake_in.is_some() => {
                shell.input(Input::Wake).await;
            }
            _ = redeem_timer.tick() => shell.input(Input::RedeemTimer).await,
        }
    }
    info!("shutting down: redeeming vouchers");
    shell.input(Input::Shutdown).await;
    let deadline = tokio::time::Instant::now() + SHUTDOWN_REDEEM_TIMEOUT;
    while shell.core.redeeming() > 0 {
        match tokio::time::timeout_at(deadline, inputs.recv()).await {
            Ok(Some(input)) => shell.input(input).await,
            Ok(None) | Err(_) => break,
        }
    }
    Ok(ProviderSummary {
        tasks_done: stats.tasks_done.load(Ordering::Relaxed),
        fuel_used: stats.fuel_used.load(Ordering::Relaxed),
        earned: stats.earned.load(Ordering::Relaxed),
        unredeemed: stats.owed.load(Ordering::Relaxed),
        fetched_blobs: stats.fetched_blobs.load(Ordering::Relaxed),
        fetched_bytes: stats.fetched_bytes.load(Ordering::Relaxed),
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

fn spawn_idle_watch(threshold_percent: f32, inputs: mpsc::UnboundedSender<Input>) {
    std::thread::spawn(move || {
        let mut load = hardware::HostLoad::new();
        let mut gate = hardware::IdleGate::new(threshold_percent);
        loop {
            std::thread::sleep(Duration::from_secs(1));
            if let Some(paused) = gate.update(load.owner_busy_percent()) {
                info!(paused, "the owner's load changed");
                if inputs.send(Input::Paused(paused)).is_err() {
                    return;
                }
            }
            if inputs.is_closed() {
                return;
            }
        }
    });
}

/// Carries out the core's commands.
struct Shell {
    core: ProviderCore,
    client: ApiClient,
    overlay: Overlay,
    sandbox: Arc<Sandbox>,
    workers: Workers,
    /// Compiled modules the core holds ready.
    modules: HashMap<ContentId, Prepared>,
    /// Requests waiting for their answer.
    replies: HashMap<RequestId, Reply>,
    next_request: RequestId,
    messages: mpsc::UnboundedSender<Message>,
    voucher_writer: VoucherWriter,
    redeemer: Redeemer,
    stats: Arc<ProviderStats>,
    /// Modules and input files fetched, and outputs kept (pinned until
    /// the core releases them), served to peers that ask.
    content: Arc<ContentStore>,
    stager: Stager,
    memory_bytes: u64,
    price_floor: u64,
    /// The GPU offered, if any.
    gpu: Option<Arc<Gpu>>,
}

impl Shell {
    async fn event(&mut self, event: Event) {
        match event {
            Event::Request {
                peer,
                request,
                reply,
            } => {
                self.next_request += 1;
                let id = self.next_request;
                self.replies.insert(id, reply);
                self.input(Input::Request { id, peer, request }).await;
            }
            Event::OfferSubscriber(_) => self.input(Input::OfferSubscriber).await,
            Event::Connected(peer) => self.input(Input::Connected(peer)).await,
            Event::Misbehaved { peer, reason } => warn!(%peer, %reason, "peer blocked"),
            _ => {}
        }
    }

    async fn message(&mut self, message: Message) {
        match message {
            Message::Core(input) => self.input(input).await,
            Message::Module { cid, module } => {
                let status = match module {
                    Ok(Ok(module)) => {
                        self.modules.insert(cid, module);
                        ModuleStatus::Ready
                    }
                    Ok(Err(kind)) => ModuleStatus::Invalid(kind),
                    Err(reason) => {
                        warn!(%cid, %reason, "module not available");
                        ModuleStatus::Unavailable(reason)
                    }
                };
                self.input(Input::ModuleReady { cid, status }).await;
            }
            Message::Staged { task, dir } => {
                let ran = match dir {
                    Ok(dir) => self.run(task, Some(dir)),
                    Err(reason) => Some(Input::TaskDone {
                        job: task.job,
                        index: task.index,
                        result: RunResult::NotRun { reason },
                    }),
                };
                if let Some(input) = ran {
                    self.input(input).await;
                }
            }
        }
    }

    /// Hands `task` to the workers, its input files (if any) in `dir`;
    /// what the core must hear when it cannot run.
    fn run(&mut self, task: Task, dir: Option<tempfile::TempDir>) -> Option<Input> {
        match self.modules.get(&task.module) {
            Some(module) => {
                self.workers.run(task, module.clone(), dir);
                None
            }
            None => Some(Input::TaskDone {
                job: task.job,
                index: task.index,
                result: RunResult::NotRun {
                    reason: "the provider no longer holds the module".to_owned(),
                },
            }),
        }
    }

    /// Gives the core `input` (and what its commands lead to at once),
    /// then shows its counts.
    async fn input(&mut self, input: Input) {
        let mut pending = VecDeque::from([input]);
        while let Some(input) = pending.pop_front() {
            if let Input::TaskDone { job, index, .. } | Input::TaskSkipped { job, index } = &input {
                self.workers.ended(*job, *index);
            }
            for command in self.core.handle(unix_ms(), input) {
                if let Some(next) = self.apply(command).await {
                    pending.push_back(next);
                }
            }
        }
        let totals = self.core.totals();
        self.stats.earned.store(totals.earned, Ordering::Relaxed);
        self.stats.owed.store(totals.owed, Ordering::Relaxed);
        self.stats.paused.store(totals.paused, Ordering::Relaxed);
        self.stats
            .tasks_done
            .store(totals.tasks_done, Ordering::Relaxed);
        self.stats
            .fuel_used
            .store(totals.fuel_used, Ordering::Relaxed);
        self.stats
            .outputs_kept
            .store(totals.outputs_kept, Ordering::Relaxed);
        self.stats
            .outputs_kept_bytes
            .store(totals.outputs_kept_bytes, Ordering::Relaxed);
    }

    /// Carries out one command; gives what the core must hear at once.
    async fn apply(&mut self, command: Command) -> Option<Input> {
        match command {
            Command::Reply { id, response } => self.reply(id, response),
            Command::ServeContent { id, cid, part } => {
                // Off the loop: a tree not yet made reads the whole file.
                let content = Arc::clone(&self.content);
                let reply = self.replies.remove(&id);
                tokio::task::spawn_blocking(move || {
                    let response = match part {
                        ContentPart::Tree { from } => content.tree_response(&cid, from),
                        ContentPart::From(offset) => content.chunk_response(&cid, offset),
                    };
                    if let Some(reply) = reply {
                        reply.send(response);
                    }
                });
            }
            Command::CheckJob { job } => {
                let client = self.client.clone();
                let messages = self.messages.clone();
                let (price_floor, memory) = (self.price_floor, self.memory_bytes);
                tokio::task::spawn_blocking(move || {
                    let check = check_job(&client, &job, price_floor, memory);
                    let _ = messages.send(Input::JobChecked { job, check }.into());
                });
            }
            Command::FetchModule { from, holders, cid } => self.fetch_module(from, holders, cid),
            Command::DropModule(cid) => {
                self.modules.remove(&cid);
            }
            Command::Run(task) if !task.input.files.is_empty() => {
                let stager = self.stager.clone();
                let messages = self.messages.clone();
                tokio::spawn(async move {
                    let dir = stager.stage(&task).await;
                    let _ = messages.send(Message::Staged { task, dir });
                });
            }
            Command::Run(task) => return self.run(task, None),
            Command::Cancel { job, index } => self.workers.cancel(job, index),
            Command::SendResults {
                batch,
                requestor,
                results,
            } => {
                // On its way now; a task waits for the answer.
                let answer = self
                    .overlay
                    .send(&requestor, idlegrid_net::Request::Results(results));
                let messages = self.messages.clone();
                tokio::spawn(async move {
                    let delivered = match answer.await {
                        Ok(_) => true,
                        Err(error) => {
                            debug!(%requestor, %error, "results not delivered");
                            false
                        }
                    };
                    let _ = messages.send(Input::ResultsAnswered { batch, delivered }.into());
                });
            }
            Command::PublishOffer(offer) => {
                if let Err(error) = self.overlay.publish_offer(&offer).await {
                    debug!(%error, "offer not published");
                }
            }
            Command::StoreVoucher { voucher, reply } => {
                // On disk before it is acknowledged: a provider killed at
                // any moment keeps every voucher it said it had.
                match reply {
                    Some(id) => {
                        if let Some(reply) = self.replies.remove(&id) {
                            self.voucher_writer.store(voucher, Some(reply));
                        }
                    }
                    None => self.voucher_writer.store(voucher, None),
                }
            }
            Command::AskVoucher { requestor, job } => self.ask_voucher(requestor, job),
            Command::ForgetVoucher(job) => self.voucher_writer.forget(job),
            Command::Redeem(vouchers) => self.redeemer.order(vouchers),
            Command::ReleaseOutputs { job, outputs } => {
                // Served while the cache holds them; evictable from now.
                debug!(%job, outputs = outputs.len(), "kept outputs released");
                for cid in &outputs {
                    self.content.unpin(cid);
                }
            }
        }
        None
    }

    fn ask_voucher(&self, requestor: AccountId, job: JobId) {
        let answer = self
            .overlay
            .send(&requestor, idlegrid_net::Request::NewestVoucher { job });
        let messages = self.messages.clone();
        tokio::spawn(async move {
            // An ask stuck on a connection that died unnoticed gives way to
            // the next (a reconnection asks at once).
            let answer = tokio::time::timeout(VOUCHER_ASK_TIMEOUT, answer)
                .await
                .unwrap_or(Err(RequestError::Timeout(requestor)));
            let answer = match answer {
                Ok(Response::Voucher { voucher, job_done }) => VoucherAnswer::Voucher {
                    voucher: *voucher,
                    job_done,
                },
                Ok(Response::Refused { code, .. }) if &*code == "no_voucher" => {
                    VoucherAnswer::NothingOwed
                }
                Ok(other) => {
                    debug!(%requestor, %job, ?other, "asked for a voucher, and none will come");
                    VoucherAnswer::NotItsJob
                }
                Err(error) => {
                    debug!(%requestor, %job, %error, "asked for a voucher, and no answer came");
                    VoucherAnswer::Unanswered
                }
            };
            let input = Input::VoucherAsked {
                job,
                requestor,
                answer,
            };
            let _ = messages.send(input.into());
        });
    }

    fn reply(&mut self, id: RequestId, response: Response) {
        if let Some(reply) = self.replies.remove(&id) {
            reply.send(response);
        }
    }

    fn fetch_module(&self, from: AccountId, holders: Vec<AccountId>, cid: ContentId) {
        let overlay = self.overlay.clone();
        let sandbox = Arc::clone(&self.sandbox);
        let has_gpu = self.gpu.is_some();
        let messages = self.messages.clone();
        let content = Arc::clone(&self.content);
        let stats = Arc::clone(&self.stats);
        tokio::spawn(async move {
            let module = async {
                let held = {
                    let content = Arc::clone(&content);
                    tokio::task::spawn_blocking(move || content.read(&cid))
                        .await
                        .map_err(|error| format!("the store thread failed: {error}"))?
                };
                let bytes = match held {
                    Some(bytes) => bytes,
                    None => {
                        let bytes =
                            fetch_content_from(&overlay, &holders, &from, cid, MODULE_BYTES_MAX)
                                .await?;
                        stats.fetched_blobs.fetch_add(1, Ordering::Relaxed);
                        stats
                            .fetched_bytes
                            .fetch_add(bytes.len() as u64, Ordering::Relaxed);
                        // Kept when it fits; run either way.
                        if let Err(error) = content.put(cid, &bytes) {
                            warn!(%cid, %error, "the module is not kept");
                        }
                        bytes
                    }
                };
                tokio::task::spawn_blocking(move || prepare(&sandbox, has_gpu, &bytes))
                    .await
                    .map_err(|error| format!("the compile thread failed: {error}"))?
            }
            .await;
            let _ = messages.send(Message::Module { cid, module });
        });
    }
}

/// Held content announced when a provider starts, the most recently used
/// first; what it stores later is announced as it comes.
const ANNOUNCED_AT_START_MAX: usize = 1024;

/// Peers learn what the store holds (the most recently used first, then
/// every change): a provider that needs a module or file this one fetched
/// before finds it here, and the requestor serves only what nobody else
/// holds.
fn announce_content(content: &ContentStore, overlay: &Overlay) {
    let watching = overlay.clone();
    content.watch(move |change| match change {
        StoreChange::Held(cid) => watching.announce(vec![cid]),
        StoreChange::Gone(cid) => watching.withdraw(cid),
    });
    let held = content
        .entries()
        .into_iter()
        .rev()
        .take(ANNOUNCED_AT_START_MAX)
        .map(|(cid, _)| cid)
        .collect();
    overlay.announce(held);
}

/// Compiles a module for the sandbox or, when it is a GPU program, for the
/// GPU. `Ok(Err(kind))` is a deterministic refusal every replica reports;
/// `Err` means this provider cannot run it (no GPU), which says nothing
/// about the module.
fn prepare(
    sandbox: &Sandbox,
    has_gpu: bool,
    bytes: &[u8],
) -> Result<Result<Prepared, ErrorKind>, String> {
    if GpuProgram::is_program(bytes) {
        if !has_gpu {
            return Err("a GPU program, and this provider offers no GPU".to_owned());
        }
        return Ok(match Program::prepare(bytes) {
            Ok(program) => Ok(Prepared::Gpu(Arc::new(program))),
            Err(error) => {
                debug!(%error, "GPU program refused");
                Err(ErrorKind::InvalidModule)
            }
        });
    }
    Ok(sandbox
        .prepare(bytes)
        .map(|(module, _)| Prepared::Wasi(module))
        .map_err(|error| error.kind))
}
