//! The requestor's shell: opens the job on the ledger, starts the overlay,
//! feeds the [`RequestorCore`] what happens and carries out what it
//! decides (send, cancel, pay, dispute, write), then says goodbye to the
//! providers, writes `results.json` and, when asked, closes the job.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use idlegrid_api::client::ApiClient;
use idlegrid_market::{MarketConfig, Standing};
use idlegrid_net::{
    Event, Overlay, OverlayConfig, Reply, Request, RequestError, Response, check_offer,
    chunk_response, tree_response,
};
use idlegrid_types::codec::Bounded;
use idlegrid_types::{AccountId, ContentId, JobId, Keypair, SignedVoucher};
use prometheus_client::metrics::histogram::Histogram;
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use crate::core::{Command, Input, RequestId, RequestorCore};
use crate::jobspec::{JobFile, JobInputFile};
use crate::ledger::{Disputer, TRANSACTION_WAIT, close_job, open_job};
use crate::records::TaskRecords;
use crate::referee::Referee;
use crate::remote::OutputTarget;
use crate::report::{DisputeRecord, SubmitReport, TaskRecord, TrackRecord, percentile};

mod fetch;
mod output;

use fetch::OutputFetcher;
use output::{OutputWriter, PACKED_OUTPUTS};

/// Events handled together at most, after the one that woke the loop.
const DRAIN_MAX: usize = 1_024;
/// How often the chain's height is read while the end-of-job round waits
/// for a provider (the round ends at the job's deadline).
const DEADLINE_POLL: Duration = Duration::from_secs(1);
/// How long one try of the end-of-job round to one provider may take: a
/// try stuck on a connection that died unnoticed gives way to a fresh one.
const FAREWELL_TRY_TIMEOUT: Duration = Duration::from_secs(10);

/// How a job is submitted.
#[derive(Debug)]
pub struct SubmitConfig {
    pub key: Keypair,
    /// A validator's HTTP API.
    pub node: String,
    pub overlay: OverlayConfig,
    pub job: JobFile,
    /// Where results go: one file per task under `tasks/`, and `results.json`.
    pub out_dir: PathBuf,
    /// After the results, wait for the deadline and close the job.
    pub close: bool,
    pub market: MarketConfig,
    /// How often leases and offers are checked.
    pub tick: Duration,
    /// Tasks whose results disagree are re-executed here when their fuel
    /// limit is at most this (0: never).
    pub referee_fuel: u64,
    /// A job its requestor opened already, naming `key` as its agent (a
    /// gateway running it for an HTTP client): it is run, not opened.
    pub opened: Option<OpenedJob>,
    /// Who files disputes and pays their deposits: this key, or `key`.
    pub reporter: Option<Keypair>,
}

/// A job open on the ledger: its id, the height that opened it, and its
/// deadline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpenedJob {
    pub job: JobId,
    pub opened_height: u64,
    pub deadline_height: u64,
}

/// Live counters, for the progress bar.
#[derive(Debug, Default)]
pub struct SubmitProgress {
    pub tasks_total: AtomicU64,
    pub accepted: AtomicU64,
    pub failed: AtomicU64,
    pub in_flight: AtomicU64,
    pub providers: AtomicU64,
    pub fuel_executed: AtomicU64,
    /// Advisory energy receipts stated so far, replicas included.
    pub energy_executed_millijoules: AtomicU64,
    pub paid: AtomicU64,
    pub budget: AtomicU64,
    /// The job is open on the ledger and tasks are being placed.
    pub running: AtomicBool,
    /// What a dashboard shows beyond the counters.
    pub detail: Mutex<ProgressDetail>,
    /// Where each accepted task's round trip is recorded, seconds (a
    /// gateway's `/metrics` histogram), when someone watches.
    pub round_trips: Option<Histogram>,
    /// The job stopped because placing more would pass its budget.
    pub stalled: AtomicBool,
    /// Outputs providers kept, fetched by id so far, and their bytes.
    pub outputs_fetched: AtomicU64,
    pub outputs_fetched_bytes: AtomicU64,
    /// Outputs providers kept but could not serve, made here instead.
    pub outputs_made_here: AtomicU64,
    /// Each decided task's record, in the order decided, when kept (a
    /// gateway serving results over HTTP).
    pub feed: ResultFeed,
    /// Whether `detail.done` lists the tasks accepted (a dashboard drawing
    /// them): otherwise it stays empty, as a job may have millions.
    pub keep_done: bool,
}

/// The records of decided tasks, in the order they were decided: a task
/// checked again appears again when decided anew. Kept only when asked
/// for ([`ResultFeed::kept`]); the job's task count bounds it.
#[derive(Debug, Default)]
pub struct ResultFeed {
    records: Option<Mutex<Vec<TaskRecord>>>,
}

impl ResultFeed {
    /// A feed that keeps records.
    pub fn kept() -> Self {
        Self {
            records: Some(Mutex::new(Vec::new())),
        }
    }

    fn lock(&self) -> Option<std::sync::MutexGuard<'_, Vec<TaskRecord>>> {
        self.records.as_ref().map(|records| {
            records
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
        })
    }

    fn push(&self, record: TaskRecord) {
        if let Some(mut records) = self.lock() {
            records.push(record);
        }
    }

    /// How many records it holds.
    pub fn len(&self) -> usize {
        self.lock().map_or(0, |records| records.len())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Up to `limit` records from position `after` on.
    pub fn since(&self, after: usize, limit: usize) -> Vec<TaskRecord> {
        self.lock().map_or_else(Vec::new, |records| {
            records.iter().skip(after).take(limit).cloned().collect()
        })
    }
}

impl SubmitProgress {
    /// A copy of the detail (a poisoned lock still holds good data: every
    /// writer leaves it whole).
    pub fn detail(&self) -> ProgressDetail {
        self.detail
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    fn update(&self, change: impl FnOnce(&mut ProgressDetail)) {
        change(
            &mut self
                .detail
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        );
    }
}

/// The job's id once open, the tasks accepted so far in the order they
/// were, and each provider's track record in this job.
#[derive(Debug, Clone, Default)]
pub struct ProgressDetail {
    pub job: Option<JobId>,
    /// What holds the job up and what would move it, when something does.
    pub waiting: Option<String>,
    pub done: Vec<u64>,
    pub providers: BTreeMap<AccountId, TrackRecord>,
}

/// What reaches the loop from the threads and tasks it started.
enum Internal {
    Core(Input),
    /// The output thread could not write a task's output (and stopped).
    OutputFailed(String),
    Disputed(DisputeRecord),
}

impl From<Input> for Internal {
    fn from(input: Input) -> Self {
        Internal::Core(input)
    }
}

impl From<DisputeRecord> for Internal {
    fn from(record: DisputeRecord) -> Self {
        Internal::Disputed(record)
    }
}

/// How often what the job waits for is worked out (it looks at every task).
const WAITING_EVERY: Duration = Duration::from_secs(1);

/// Microseconds since `epoch`: the core's clock.
fn micros_since(epoch: Instant) -> u64 {
    u64::try_from(epoch.elapsed().as_micros()).unwrap_or(u64::MAX)
}

/// Runs a job from its file to its results (and, with `close`, its refund).
pub async fn submit(
    config: SubmitConfig,
    progress: Arc<SubmitProgress>,
) -> anyhow::Result<SubmitReport> {
    let started = Instant::now();
    let client = ApiClient::new(&config.node);
    let job_file = Arc::new(config.job);
    let tasks_total = job_file.task_count();
    progress.tasks_total.store(tasks_total, Ordering::Relaxed);
    progress.budget.store(job_file.budget, Ordering::Relaxed);
    let outputs_dir = if job_file.output_packed {
        config.out_dir.clone()
    } else {
        config.out_dir.join("tasks")
    };
    std::fs::create_dir_all(&outputs_dir)
        .with_context(|| format!("failed to create {}", outputs_dir.display()))?;

    // Open the escrow (unless the requestor did).
    let (job, opened_height, deadline_height) = match config.opened {
        Some(opened) => (opened.job, opened.opened_height, opened.deadline_height),
        None => {
            let client = client.clone();
            let key = config.key.clone();
            let job_file = Arc::clone(&job_file);
            tokio::task::spawn_blocking(move || open_job(&client, &key, &job_file))
                .await
                .context("the ledger thread failed")??
        }
    };
    info!(%job, opened_height, deadline_height, "job opened");
    progress.update(|detail| detail.job = Some(job));

    let (overlay, mut events, _driver) = Overlay::start(&config.key, config.overlay.clone())?;
    let (internal_tx, mut internal) = mpsc::unbounded_channel();
    let reporter = config
        .reporter
        .clone()
        .unwrap_or_else(|| config.key.clone());
    let disputer = Disputer::start(client.clone(), reporter, internal_tx.clone())?;
    let records = TaskRecords::new(&config.out_dir, tasks_total).with_context(|| {
        format!(
            "failed to make the task records under {}",
            config.out_dir.display()
        )
    })?;
    let outputs = OutputWriter::start(
        Arc::clone(&progress),
        internal_tx.clone(),
        job_file.output_url.as_ref().map(|url| {
            (
                url.clone(),
                job_file.storage.clone(),
                config.out_dir.clone(),
            )
        }),
        records,
        job_file
            .output_packed
            .then(|| config.out_dir.join(PACKED_OUTPUTS)),
        OutputFetcher::new(
            overlay.clone(),
            tokio::runtime::Handle::current(),
            job,
            Arc::clone(&job_file),
        ),
    )?;
    let referee = Referee::start(job, Arc::clone(&job_file), internal_tx.clone())?;
    let epoch = Instant::now();
    let mut run = Shell {
        core: RequestorCore::new(
            config.key.clone(),
            job,
            Arc::clone(&job_file),
            config.market,
            config.referee_fuel,
        ),
        referee,
        client: client.clone(),
        overlay: overlay.clone(),
        internal: internal_tx,
        disputer,
        outputs,
        out_dir: config.out_dir.clone(),
        replies: HashMap::new(),
        next_request: 0,
        dispute_records: Vec::new(),
        output_failed: None,
        progress: Arc::clone(&progress),
        epoch,
        files: Arc::new(
            job_file
                .files
                .iter()
                .map(|file| (file.cid, file.clone()))
                .collect(),
        ),
    };
    let commands = run.core.start(micros_since(epoch));
    run.apply(commands);
    progress.running.store(true, Ordering::Relaxed);

    let running_since = Instant::now();
    let mut tick = tokio::time::interval(config.tick);
    let mut waiting_read = Instant::now();
    while !run.core.done() {
        tokio::select! {
            Some(event) = events.recv() => run.event(event),
            Some(message) = internal.recv() => run.internal(message),
            _ = tick.tick() => {
                let now = micros_since(epoch);
                progress
                    .providers
                    .store(run.core.offering(now) as u64, Ordering::Relaxed);
                progress
                    .in_flight
                    .store(run.core.in_flight(), Ordering::Relaxed);
                run.input(Input::Tick);
                if waiting_read.elapsed() >= WAITING_EVERY {
                    waiting_read = Instant::now();
                    let waiting = run.core.waiting();
                    progress.update(|detail| detail.waiting = waiting);
                }
            }
        };
        // What else has arrived is handled with it: one placement and one
        // voucher per provider for all of it.
        for _ in 0..DRAIN_MAX {
            if let Ok(event) = events.try_recv() {
                run.event(event);
            } else if let Ok(message) = internal.try_recv() {
                run.internal(message);
            } else {
                break;
            }
        }
        let commands = run.core.step(micros_since(epoch));
        run.apply(commands);
        if let Some(error) = run.output_failed.take() {
            bail!(error);
        }
        // A task that can no longer be made (its manifest changed) is
        // neither placed nor checked: the job cannot finish as opened.
        if let Some(error) = job_file.task_failure() {
            bail!("{error}");
        }
    }
    // Outputs still being written (fetched, for those providers keep)
    // are waited for while requests keep being answered.
    let finishing = run.outputs.finish();
    tokio::pin!(finishing);
    let records = loop {
        tokio::select! {
            records = &mut finishing => break records?,
            Some(event) = events.recv() => run.event(event),
            Some(message) = internal.recv() => run.internal(message),
        }
        let commands = run.core.step(micros_since(epoch));
        run.apply(commands);
    };
    if let Some(error) = run.output_failed.take() {
        bail!(error);
    }
    progress.running.store(false, Ordering::Relaxed);
    progress.update(|detail| detail.waiting = None);
    let run_ms = u64::try_from(running_since.elapsed().as_millis()).unwrap_or(u64::MAX);
    let stalled = run.core.stalled();
    if stalled {
        warn!("the job stopped: placing more would pass its budget");
        progress.stalled.store(true, Ordering::Relaxed);
    }

    // Give every paid provider its newest voucher again (one sent just
    // before may still be on its way, or have been lost with a relayed
    // circuit), then say the job is over, so it redeems that voucher now.
    // A provider that restarted, or whose circuit through its gateway
    // ended, may be unreachable for a while, so each farewell is tried
    // until it lands or the job's deadline passes (no voucher is redeemed
    // after it). Requests keep being answered meanwhile: a provider may
    // ask for its voucher itself.
    if run.core.farewells_owed() > 0 {
        let deadline = deadline_passed(client.clone(), deadline_height);
        tokio::pin!(deadline);
        loop {
            let commands = run.core.farewell(micros_since(epoch));
            run.apply(commands);
            if run.core.farewells_owed() == 0 {
                break;
            }
            tokio::select! {
                () = &mut deadline => {
                    warn!(
                        providers = run.core.farewells_owed(),
                        "the job's deadline passed before every paid provider took its last voucher"
                    );
                    break;
                }
                Some(event) = events.recv() => run.event(event),
                Some(message) = internal.recv() => run.internal(message),
                _ = tick.tick() => {}
            }
        }
    }

    // Disputes still being filed finish before the report.
    while run.dispute_records.len() < run.core.disputes_filed() {
        match tokio::time::timeout(TRANSACTION_WAIT, internal.recv()).await {
            Ok(Some(Internal::Disputed(record))) => run.dispute_records.push(record),
            Ok(Some(_)) => {}
            Ok(None) | Err(_) => break,
        }
    }

    let summary = run.core.summary();
    let mut round_trips_us = run.core.round_trips_us().to_vec();
    let first_placed_ms = run.core.first_placed_us().map_or(run_ms, |placed| {
        let running_since_us =
            u64::try_from(running_since.duration_since(epoch).as_micros()).unwrap_or(0);
        placed.saturating_sub(running_since_us) / 1000
    });
    let mut report = SubmitReport {
        job: job.to_string(),
        module: job_file.module_cid.to_string(),
        tasks_total,
        accepted: summary.tasks_accepted,
        failed: summary.tasks_failed,
        fuel_useful: summary.fuel_useful,
        fuel_executed: summary.fuel_executed,
        energy_millijoules: records.energy_millijoules(),
        energy_executed_millijoules: run.core.energy_executed_millijoules(),
        paid: run.core.paid(),
        escrow: job_file.budget,
        opened_height,
        deadline_height,
        providers: run
            .core
            .providers()
            .iter()
            .map(|(provider, record)| (provider.to_string(), record.clone()))
            .collect(),
        tasks_refereed: summary.tasks_refereed,
        tasks_re_executed_here: run.core.re_executed(),
        tasks_rechecked: summary.tasks_reopened,
        outputs_fetched: progress.outputs_fetched.load(Ordering::Relaxed),
        outputs_fetched_bytes: progress.outputs_fetched_bytes.load(Ordering::Relaxed),
        outputs_made_here: progress.outputs_made_here.load(Ordering::Relaxed),
        disputes: std::mem::take(&mut run.dispute_records),
        redeemed: None,
        refund: None,
        elapsed_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
        run_ms,
        first_placed_ms,
        task_round_trip_us_p50: percentile(&mut round_trips_us, 50),
        task_round_trip_us_p99: percentile(&mut round_trips_us, 99),
    };
    if config.close {
        let client = client.clone();
        let key = config.key.clone();
        let (redeemed, refund) =
            tokio::task::spawn_blocking(move || close_job(&client, &key, &job, deadline_height))
                .await
                .context("the ledger thread failed")??;
        report.redeemed = Some(redeemed);
        report.refund = Some(refund);
    }
    // The report with every task's record, by task index, streamed from
    // the records on disk: a job of millions of tasks is never in memory.
    let results_path = config.out_dir.join("results.json");
    let written = {
        let report = report.clone();
        let path = results_path.clone();
        tokio::task::spawn_blocking(move || records.write_results(&report, &path))
    };
    written
        .await
        .context("the results thread failed")?
        .with_context(|| format!("failed to write {}", results_path.display()))?;
    if let Some(url) = job_file.output_url.clone() {
        let storage = job_file.storage.clone();
        tokio::task::spawn_blocking(move || {
            OutputTarget::open(&url, &storage)?.put_file("results.json", &results_path)
        })
        .await
        .context("the output thread failed")?
        .map_err(anyhow::Error::msg)?;
    }
    if stalled {
        bail!(
            "the job stopped after {} of {tasks_total} tasks: placing more would pass its budget of {}",
            report.accepted,
            report.escrow
        );
    }
    Ok(report)
}

/// Carries out the core's commands.
struct Shell {
    core: RequestorCore,
    client: ApiClient,
    overlay: Overlay,
    internal: mpsc::UnboundedSender<Internal>,
    disputer: Disputer,
    referee: Referee,
    outputs: OutputWriter,
    out_dir: PathBuf,
    /// Requests waiting for their answer.
    replies: HashMap<RequestId, Reply>,
    next_request: RequestId,
    dispute_records: Vec<DisputeRecord>,
    /// Why the output thread stopped.
    output_failed: Option<String>,
    progress: Arc<SubmitProgress>,
    /// The core's clock starts here.
    epoch: Instant,
    /// The job's input files by id, served to providers from where they
    /// are here.
    files: Arc<HashMap<ContentId, JobInputFile>>,
}

impl Shell {
    fn event(&mut self, event: Event) {
        let input = match event {
            Event::Offer { provider, offer } => Input::Offer {
                provider,
                offer: offer.body,
            },
            Event::Connected(peer) => Input::Connected(peer),
            Event::Disconnected(peer) => Input::Disconnected(peer),
            Event::Request { request, reply, .. } if self.serves_file(&request) => {
                // Off the loop: a chunk is read from disk and checked.
                let files = Arc::clone(&self.files);
                tokio::task::spawn_blocking(move || {
                    let (cid, part) = match request {
                        Request::ContentTree { cid, from } => (cid, Err(from)),
                        Request::Content { cid, offset } => (cid, Ok(offset)),
                        _ => return,
                    };
                    let Some(file) = files.get(&cid) else { return };
                    let response = match part {
                        Err(from) => tree_response(&file.tree, from),
                        Ok(offset) => chunk_response(&file.path, &file.tree, offset)
                            .unwrap_or_else(|| {
                                warn!(path = %file.path.display(), "an input file changed since the job was submitted");
                                Response::refused(
                                    "not_found",
                                    format!("{cid} changed here since the job was submitted"),
                                )
                            }),
                    };
                    reply.send(response);
                });
                return;
            }
            Event::Request {
                peer,
                request,
                reply,
            } => {
                self.next_request += 1;
                let id = self.next_request;
                self.replies.insert(id, reply);
                Input::Request { id, peer, request }
            }
            Event::Misbehaved { peer, reason } => {
                warn!(%peer, %reason, "peer blocked");
                return;
            }
            Event::Listening(_) | Event::OfferSubscriber(_) => return,
        };
        self.input(input);
    }

    /// Whether `request` asks for one of the job's input files.
    fn serves_file(&self, request: &Request) -> bool {
        match request {
            Request::ContentTree { cid, .. } | Request::Content { cid, .. } => {
                self.files.contains_key(cid)
            }
            _ => false,
        }
    }

    fn internal(&mut self, message: Internal) {
        match message {
            Internal::Core(input) => self.input(input),
            Internal::OutputFailed(error) => self.output_failed = Some(error),
            Internal::Disputed(record) => self.dispute_records.push(record),
        }
    }

    fn input(&mut self, input: Input) {
        let commands = self.core.input(micros_since(self.epoch), input);
        self.apply(commands);
    }

    fn apply(&mut self, commands: Vec<Command>) {
        let mut decided = false;
        for command in commands {
            match command {
                Command::Reply { id, response } => {
                    if let Some(reply) = self.replies.remove(&id) {
                        reply.send(response);
                    }
                }
                Command::ReadStanding(provider) => {
                    let client = self.client.clone();
                    let internal = self.internal.clone();
                    tokio::task::spawn_blocking(move || match client.account(&provider) {
                        Ok(account) => {
                            let record = account.provider_record;
                            let standing = Standing {
                                stake: account.provider_stake,
                                slashable: record.slashable,
                                fuel_paid: record.fuel_paid,
                                jobs_paid: record.jobs_paid,
                                disputes_lost: record.disputes_lost,
                                usable_fuel_per_second: record.usable_fuel_per_second,
                                usable_gpu_fuel_per_second: record.usable_gpu_fuel_per_second,
                            };
                            let input = Input::Standing { provider, standing };
                            let _ = internal.send(Internal::Core(input));
                        }
                        Err(error) => {
                            debug!(%provider, %error, "could not read the provider's stake")
                        }
                    });
                }
                Command::AskOffer(peer) => self.ask_offer(peer),
                Command::SendTasks { provider, batch } => self.send_tasks(provider, batch),
                Command::Cancel { provider, tasks } => {
                    let overlay = self.overlay.clone();
                    let job = self.core.job();
                    tokio::spawn(async move {
                        for chunk in tasks.chunks(idlegrid_net::BATCH_TASKS_MAX) {
                            let tasks = Bounded::new(chunk.to_vec()).expect("one chunk");
                            let _ = overlay
                                .request(&provider, Request::Cancel { job, tasks })
                                .await;
                        }
                    });
                }
                Command::SendVoucher { provider, voucher } => {
                    let overlay = self.overlay.clone();
                    let internal = self.internal.clone();
                    tokio::spawn(async move {
                        // A lost voucher is superseded by the next, or resent at the end.
                        if let Err(error) =
                            overlay.request(&provider, Request::Voucher(voucher)).await
                        {
                            debug!(%provider, %error, "voucher not delivered");
                        }
                        let _ = internal.send(Internal::Core(Input::VoucherAnswered(provider)));
                    });
                }
                Command::Farewell { provider, voucher } => {
                    let overlay = self.overlay.clone();
                    let internal = self.internal.clone();
                    let job = self.core.job();
                    tokio::spawn(async move {
                        let delivered = farewell(&overlay, provider, job, voucher).await;
                        let input = Input::FarewellAnswered {
                            provider,
                            delivered,
                        };
                        let _ = internal.send(Internal::Core(input));
                    });
                }
                Command::Dispute {
                    task,
                    provider,
                    dispute,
                } => self.disputer.accuse(task, provider, dispute),
                Command::AskLedger { task, dispute } => self.disputer.settle(task, dispute),
                Command::ReExecute { task } => self.referee.order(task),
                Command::Reopened { task } => {
                    self.outputs.reopened(task);
                    decided = true;
                }
                Command::Accepted {
                    task,
                    output,
                    round_trip_us,
                    record,
                } => {
                    if let (Some(histogram), Some(round_trip)) =
                        (&self.progress.round_trips, round_trip_us)
                    {
                        histogram.observe(Duration::from_micros(round_trip).as_secs_f64());
                    }
                    let file = output.map(|(file, stdout)| (self.out_dir.join(file), stdout));
                    self.outputs.write(task, file, record);
                    decided = true;
                }
                Command::TaskFailed { record, .. } => {
                    self.outputs.failed(record);
                    decided = true;
                }
                Command::Stalled | Command::Finished(_) => {}
            }
        }
        self.progress
            .fuel_executed
            .store(self.core.fuel_executed(), Ordering::Relaxed);
        self.progress
            .energy_executed_millijoules
            .store(self.core.energy_executed_millijoules(), Ordering::Relaxed);
        self.progress
            .paid
            .store(self.core.paid(), Ordering::Relaxed);
        self.progress
            .failed
            .store(self.core.failed(), Ordering::Relaxed);
        if decided {
            let tracks = self.core.tracks().clone();
            self.progress.update(|detail| detail.providers = tracks);
        }
    }

    fn ask_offer(&self, peer: AccountId) {
        let overlay = self.overlay.clone();
        let internal = self.internal.clone();
        tokio::spawn(async move {
            match overlay.request(&peer, Request::Offer).await {
                Ok(Response::Offer(offer)) => match check_offer(&peer, &offer) {
                    Ok(()) => {
                        let input = Input::Offer {
                            provider: peer,
                            offer: offer.body,
                        };
                        let _ = internal.send(Internal::Core(input));
                    }
                    Err(reason) => warn!(%peer, reason, "offer asked for not taken"),
                },
                // Not a provider (a gateway, another requestor), or none yet:
                // its offers, if any, come by gossip.
                Ok(other) => debug!(%peer, ?other, "no offer given"),
                Err(error) => debug!(%peer, %error, "offer not asked"),
            }
        });
    }

    fn send_tasks(&self, provider: AccountId, batch: idlegrid_net::TaskBatch) {
        let tasks: Vec<u64> = batch.tasks.iter().map(|task| task.index).collect();
        // On its way now, in placement order; a task waits for the answer.
        let answer = self.overlay.send(&provider, Request::Tasks(batch));
        let internal = self.internal.clone();
        tokio::spawn(async move {
            let lost = match answer.await {
                Ok(Response::Ok) => return,
                Ok(Response::Refused { code, message }) => {
                    info!(%provider, code = &*code, message = &*message, "batch refused");
                    false
                }
                Ok(
                    Response::Content { .. }
                    | Response::ContentTree { .. }
                    | Response::Offer(_)
                    | Response::Voucher { .. },
                ) => false,
                Err(error) => {
                    info!(%provider, %error, "batch not delivered");
                    matches!(
                        error,
                        RequestError::Unreachable(_) | RequestError::ConnectionClosed(_)
                    )
                }
            };
            let _ = internal.send(Internal::Core(Input::AssignFailed {
                provider,
                tasks,
                lost,
            }));
        });
    }
}

/// Gives `provider` its newest voucher and then, once it took it, the job's
/// end; true when both were answered (a refusal other than `busy` will not
/// change by asking again) within [`FAREWELL_TRY_TIMEOUT`].
async fn farewell(
    overlay: &Overlay,
    provider: AccountId,
    job: JobId,
    voucher: SignedVoucher,
) -> bool {
    for request in [Request::Voucher(voucher), Request::JobDone { job }] {
        let name = request.name();
        let answer =
            tokio::time::timeout(FAREWELL_TRY_TIMEOUT, overlay.request(&provider, request))
                .await
                .unwrap_or(Err(RequestError::Timeout(provider)));
        match answer {
            Ok(Response::Ok) => {}
            Ok(Response::Refused { code, .. }) if &*code == "busy" => return false,
            Ok(other) => warn!(%provider, request = name, ?other, "refused at the job's end"),
            Err(error) => {
                debug!(%provider, %error, "farewell not delivered; trying again");
                return false;
            }
        }
    }
    true
}

/// Resolves once the chain is at `deadline_height` (or past it): a voucher
/// delivered after that can no longer be redeemed. A height that cannot be
/// read is read again.
async fn deadline_passed(client: ApiClient, deadline_height: u64) {
    loop {
        let client = client.clone();
        let height = tokio::task::spawn_blocking(move || client.height()).await;
        if let Ok(Ok(height)) = height
            && height >= deadline_height
        {
            return;
        }
        tokio::time::sleep(DEADLINE_POLL).await;
    }
}
