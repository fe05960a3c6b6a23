//! The requestor role: open a job's escrow on the ledger, place its tasks
//! with providers through `idlegrid-market`, verify what comes back, pay
//! with vouchers, dispute wrong receipts, write the results, and close the
//! job for the refund.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, mpsc as std_mpsc};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use idlegrid_ledger::{Dispute, Evidence, OpenJob, TxKind};
use idlegrid_market::{Command, Input, JobSpec, Market, MarketConfig, Policy, TaskResult};
use idlegrid_net::{
    AssignedTask, Event, MESSAGE_BYTES_MAX, Overlay, OverlayConfig, Request, Response, ResultBatch,
    TaskBatch, TaskReturn,
};
use idlegrid_types::codec::Bounded;
use idlegrid_types::{
    AccountId, ContentId, JobId, Keypair, SignatureCache, SignedReceipt, TaskOutcome, Voucher,
};
use prometheus_client::metrics::histogram::Histogram;
use serde::Serialize;
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use crate::client::ApiClient;
use crate::jobspec::{JobFile, Verification};
use crate::provider::content_chunk;

/// Events handled together at most, after the one that woke the loop.
const DRAIN_MAX: usize = 1_024;
/// How long a transaction of the requestor's waits for its block.
const TRANSACTION_WAIT: Duration = Duration::from_secs(60);
/// How often a provider's stake is read again.
const STAKE_REFRESH: Duration = Duration::from_secs(30);
/// Disputes filed against one provider in one job: enough to slash it,
/// without a block of disputes for every task a liar touched.
const DISPUTES_PER_PROVIDER_MAX: usize = 3;
/// How long the last vouchers and job-done notices may take.
const FAREWELL_TIMEOUT: Duration = Duration::from_secs(15);
/// The first and the longest pause between tries of one farewell.
const FAREWELL_RETRY_MIN: Duration = Duration::from_millis(200);
const FAREWELL_RETRY_MAX: Duration = Duration::from_secs(2);

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
    pub paid: AtomicU64,
    pub budget: AtomicU64,
    /// The job is open on the ledger and tasks are being placed.
    pub running: AtomicBool,
    /// What a dashboard shows beyond the counters.
    pub detail: Mutex<ProgressDetail>,
    /// Where each accepted task's round trip is recorded, seconds (a
    /// gateway's `/metrics` histogram), when someone watches.
    pub round_trips: Option<Histogram>,
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
    pub done: Vec<u64>,
    pub providers: BTreeMap<AccountId, TrackRecord>,
}

/// A provider's results in one job: those that agreed with the accepted
/// result, and those that did not.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct TrackRecord {
    pub accepted: u64,
    pub rejected: u64,
}

/// One task's line in `results.json`.
#[derive(Debug, Clone, Serialize)]
pub struct TaskRecord {
    pub index: u64,
    /// `accepted` or `failed`.
    pub status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub output: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fuel: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    /// Providers whose result was the accepted one.
    #[serde(serialize_with = "accounts_as_text")]
    pub providers: Vec<AccountId>,
}

/// Accounts as their `did:key` text (encoded when `results.json` is
/// written, not as each task is decided).
fn accounts_as_text<S: serde::Serializer>(
    accounts: &[AccountId],
    serializer: S,
) -> Result<S::Ok, S::Error> {
    serializer.collect_seq(accounts.iter().map(ToString::to_string))
}

/// A dispute the requestor filed.
#[derive(Debug, Clone, Serialize)]
pub struct DisputeRecord {
    pub task: u64,
    pub provider: String,
    pub transaction: Option<String>,
    /// `included`, or why it was not.
    pub status: String,
}

/// What one provider did for the job.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ProviderRecord {
    pub results: u64,
    pub paid: u64,
    pub fuel_paid: u64,
}

/// What `results.json` holds, and what `submit` reports.
#[derive(Debug, Clone, Serialize)]
pub struct SubmitReport {
    pub job: String,
    pub module: String,
    pub tasks_total: u64,
    pub accepted: u64,
    pub failed: u64,
    pub fuel_useful: u64,
    pub fuel_executed: u64,
    /// Promised to providers by vouchers.
    pub paid: u64,
    pub escrow: u64,
    pub opened_height: u64,
    pub deadline_height: u64,
    pub providers: BTreeMap<String, ProviderRecord>,
    pub disputes: Vec<DisputeRecord>,
    /// Set when the job was closed: what providers redeemed and what came back.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub redeemed: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refund: Option<u64>,
    pub elapsed_ms: u64,
    /// From the job being open on the ledger to its last task decided.
    pub run_ms: u64,
    /// Of that, until its first task was placed with a provider (finding
    /// providers: their offers, stake and connections).
    pub first_placed_ms: u64,
    /// From a task's first assignment to its acceptance (network, execution,
    /// replicas and verification), microseconds: median and 99th percentile.
    pub task_round_trip_us_p50: u64,
    pub task_round_trip_us_p99: u64,
    pub tasks: Vec<TaskRecord>,
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| {
            u64::try_from(since.as_millis()).unwrap_or(u64::MAX)
        })
}

enum Internal {
    /// The output thread could not write a task's output (and stopped).
    OutputFailed(String),
    /// A voucher request to this provider ended (answered or not).
    VoucherSent(AccountId),
    Stake {
        provider: AccountId,
        amount: u64,
    },
    AssignFailed {
        provider: AccountId,
        tasks: Vec<u64>,
        lost: bool,
    },
    Disputed(DisputeRecord),
}

/// Runs a job from its file to its results (and, with `close`, its refund).
pub async fn submit(
    config: SubmitConfig,
    progress: Arc<SubmitProgress>,
) -> anyhow::Result<SubmitReport> {
    let started = Instant::now();
    let client = ApiClient::new(&config.node);
    let job_file = Arc::new(config.job);
    let tasks_total = job_file.tasks.len() as u64;
    progress.tasks_total.store(tasks_total, Ordering::Relaxed);
    progress.budget.store(job_file.budget, Ordering::Relaxed);
    std::fs::create_dir_all(config.out_dir.join("tasks"))
        .with_context(|| format!("failed to create {}", config.out_dir.display()))?;

    // Open the escrow.
    let (job, opened_height, deadline_height) = {
        let client = client.clone();
        let key = config.key.clone();
        let job_file = Arc::clone(&job_file);
        tokio::task::spawn_blocking(move || open_job(&client, &key, &job_file))
            .await
            .context("the ledger thread failed")??
    };
    info!(%job, opened_height, deadline_height, "job opened");
    progress.update(|detail| detail.job = Some(job));

    let (overlay, mut events, _driver) = Overlay::start(&config.key, config.overlay.clone())?;
    let (internal_tx, mut internal) = mpsc::unbounded_channel();
    let disputes = Disputer::start(client.clone(), config.key.clone(), internal_tx.clone())?;

    let mut market = Market::new(MarketConfig {
        seed: u64::from_le_bytes(job.as_bytes()[..8].try_into().expect("8 bytes")),
        ..config.market
    });
    let spec = JobSpec {
        id: job,
        module: job_file.module_cid,
        task_count: tasks_total,
        limits: job_file.limits,
        price_per_million_fuel: job_file.price_per_million_fuel,
        policy: match job_file.verification {
            Verification::Adaptive => Policy::Adaptive,
            Verification::Replicas(replicas) => Policy::Replicas(replicas),
        },
        budget: job_file.budget,
    };
    let outputs = OutputWriter::start(Arc::clone(&progress), internal_tx.clone())?;
    let mut run = RequestorLoop {
        key: config.key.clone(),
        job,
        job_file: Arc::clone(&job_file),
        client: client.clone(),
        overlay: overlay.clone(),
        internal: internal_tx,
        disputes,
        out_dir: config.out_dir.clone(),
        input_cids: vec![None; job_file.tasks.len()],
        pending: HashMap::new(),
        records: BTreeMap::new(),
        providers: BTreeMap::new(),
        dispute_records: Vec::new(),
        stake_read: HashMap::new(),
        owed: HashMap::new(),
        vouchers_in_flight: HashSet::new(),
        vouched: HashMap::new(),
        outputs,
        signatures: SignatureCache::default(),
        output_failed: None,
        finished: None,
        stalled: false,
        progress: Arc::clone(&progress),
        assigned_at: HashMap::new(),
        first_placed: None,
        round_trips_us: Vec::new(),
    };
    let commands = market.handle(unix_ms(), Input::SubmitJob(spec));
    run.apply(commands)?;
    progress.running.store(true, Ordering::Relaxed);

    let running_since = Instant::now();
    let mut tick = tokio::time::interval(config.tick);
    while run.finished.is_none() && !run.stalled {
        let mut inputs = tokio::select! {
            Some(event) = events.recv() => run.event(event),
            Some(message) = internal.recv() => run.internal(message),
            _ = tick.tick() => {
                let now = unix_ms();
                progress
                    .providers
                    .store(market.offering_count(now) as u64, Ordering::Relaxed);
                progress
                    .in_flight
                    .store(market.in_flight_total(), Ordering::Relaxed);
                vec![Input::Tick]
            }
        };
        // What else has arrived is handled with it: one placement and one
        // voucher per provider for all of it.
        for _ in 0..DRAIN_MAX {
            let more = if let Ok(event) = events.try_recv() {
                run.event(event)
            } else if let Ok(message) = internal.try_recv() {
                run.internal(message)
            } else {
                break;
            };
            inputs.extend(more);
        }
        if !inputs.is_empty() {
            let commands = market.handle_all(unix_ms(), inputs);
            run.apply(commands)?;
        }
        run.send_vouchers();
        if let Some(error) = run.output_failed.take() {
            bail!(error);
        }
    }
    run.outputs.finish().await?;
    progress.running.store(false, Ordering::Relaxed);
    let run_ms = u64::try_from(running_since.elapsed().as_millis()).unwrap_or(u64::MAX);
    if run.stalled {
        warn!("the job stopped: placing more would pass its budget");
    }

    // Give every paid provider its newest voucher again (one sent just
    // before may still be on its way), then say the job is over, so it
    // redeems that voucher now.
    // A provider that restarted may be unreachable at first (new ports, not
    // yet found again), so each farewell is tried until it lands or the
    // time is up.
    let farewells = run.owed.iter().map(|(provider, voucher)| {
        let overlay = overlay.clone();
        let provider = *provider;
        let voucher = run.key.sign(voucher.clone());
        async move {
            let mut pause = FAREWELL_RETRY_MIN;
            loop {
                let delivered = match overlay
                    .request(&provider, Request::Voucher(voucher.clone()))
                    .await
                {
                    Ok(_) => overlay.request(&provider, Request::JobDone { job }).await,
                    Err(error) => Err(error),
                };
                match delivered {
                    Ok(_) => return,
                    Err(error) => {
                        debug!(%provider, %error, "farewell not delivered; trying again");
                        tokio::time::sleep(pause).await;
                        pause = (pause * 2).min(FAREWELL_RETRY_MAX);
                    }
                }
            }
        }
    });
    let _ = tokio::time::timeout(FAREWELL_TIMEOUT, futures::future::join_all(farewells)).await;

    // Disputes still being filed finish before the report.
    while run.dispute_records.len() < run.disputes.filed {
        match tokio::time::timeout(TRANSACTION_WAIT, internal.recv()).await {
            Ok(Some(Internal::Disputed(record))) => run.dispute_records.push(record),
            Ok(Some(_)) => {}
            Ok(None) | Err(_) => break,
        }
    }

    let summary = run.finished.unwrap_or_default();
    let mut report = SubmitReport {
        job: job.to_string(),
        module: job_file.module_cid.to_string(),
        tasks_total,
        accepted: summary.tasks_accepted,
        failed: summary.tasks_failed,
        fuel_useful: summary.fuel_useful,
        fuel_executed: summary.fuel_executed,
        paid: run.providers.values().map(|record| record.paid).sum(),
        escrow: job_file.budget,
        opened_height,
        deadline_height,
        providers: run
            .providers
            .into_iter()
            .map(|(provider, record)| (provider.to_string(), record))
            .collect(),
        disputes: run.dispute_records,
        redeemed: None,
        refund: None,
        elapsed_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
        run_ms,
        first_placed_ms: run.first_placed.map_or(run_ms, |placed| {
            u64::try_from(placed.saturating_duration_since(running_since).as_millis())
                .unwrap_or(u64::MAX)
        }),
        task_round_trip_us_p50: percentile(&mut run.round_trips_us, 50),
        task_round_trip_us_p99: percentile(&mut run.round_trips_us, 99),
        tasks: run.records.into_values().collect(),
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
    let results = serde_json::to_vec_pretty(&report).context("failed to encode results.json")?;
    std::fs::write(config.out_dir.join("results.json"), results).with_context(|| {
        format!(
            "failed to write {}",
            config.out_dir.join("results.json").display()
        )
    })?;
    if run.stalled {
        bail!(
            "the job stopped after {} of {tasks_total} tasks: placing more would pass its budget of {}",
            report.accepted,
            report.escrow
        );
    }
    Ok(report)
}

/// The `percent`th percentile (nearest rank) of `values`; 0 when empty.
fn percentile(values: &mut [u64], percent: usize) -> u64 {
    if values.is_empty() {
        return 0;
    }
    values.sort_unstable();
    let rank = (values.len() * percent)
        .div_ceil(100)
        .clamp(1, values.len());
    values[rank - 1]
}

/// Submits `OpenJob` and waits for it: (job id, height, deadline height).
fn open_job(client: &ApiClient, key: &Keypair, job: &JobFile) -> anyhow::Result<(JobId, u64, u64)> {
    let height = client
        .height()
        .context("failed to read the chain's height")?;
    let deadline_height = height + job.deadline_blocks;
    let terms = OpenJob {
        module: job.module_cid,
        spec: job.spec_cid(),
        escrow: job.budget,
        price_per_million_fuel: job.price_per_million_fuel,
        deadline_height,
        limits: job.limits,
    };
    let sent = client
        .send(key, TxKind::OpenJob(terms), None)
        .context("failed to open the job")?;
    let included = client
        .wait_included(&sent.hash, TRANSACTION_WAIT)
        .context("the ledger did not open the job")?;
    Ok((
        JobId::derive(&key.account_id(), sent.nonce),
        included,
        deadline_height,
    ))
}

/// Waits for the deadline, closes the job: (redeemed by providers, refund).
fn close_job(
    client: &ApiClient,
    key: &Keypair,
    job: &JobId,
    deadline_height: u64,
) -> anyhow::Result<(u64, u64)> {
    info!(%job, deadline_height, "waiting for the deadline to close the job");
    loop {
        let height = client
            .height()
            .context("failed to read the chain's height")?;
        if height > deadline_height {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let before = client
        .account(&key.account_id())
        .context("failed to read the balance")?
        .balance;
    let sent = client
        .send(key, TxKind::CloseJob { job: *job }, None)
        .context("failed to close the job")?;
    client
        .wait_included(&sent.hash, TRANSACTION_WAIT)
        .context("the ledger did not close the job")?;
    let after = client
        .account(&key.account_id())
        .context("failed to read the balance")?
        .balance;
    let state = client
        .job(job)?
        .with_context(|| format!("the ledger no longer knows {job}"))?;
    Ok((
        state.redeemed_total,
        (after + sent.fee).saturating_sub(before),
    ))
}

/// One provider's result for an undecided task: who, what, and the stdout
/// when it completed.
type PendingResult = (AccountId, TaskOutcome, Option<Vec<u8>>);

struct RequestorLoop {
    key: Keypair,
    job: JobId,
    job_file: Arc<JobFile>,
    client: ApiClient,
    overlay: Overlay,
    internal: mpsc::UnboundedSender<Internal>,
    disputes: Disputer,
    out_dir: PathBuf,
    input_cids: Vec<Option<ContentId>>,
    /// Results of undecided tasks.
    pending: HashMap<u64, Vec<PendingResult>>,
    records: BTreeMap<u64, TaskRecord>,
    providers: BTreeMap<AccountId, ProviderRecord>,
    dispute_records: Vec<DisputeRecord>,
    stake_read: HashMap<AccountId, Instant>,
    /// The newest voucher owed to each provider, signed or not.
    owed: HashMap<AccountId, Voucher>,
    /// Providers with a voucher on its way; the newest owed is sent when
    /// it lands (a provider stores each before answering, so one at a
    /// time, superseding those that piled up meanwhile).
    vouchers_in_flight: HashSet<AccountId>,
    /// Sequence of the newest voucher sent to each provider.
    vouched: HashMap<AccountId, u64>,
    outputs: OutputWriter,
    /// Batch signatures of receipts checked so far: a provider signs the
    /// results it returns together once.
    signatures: SignatureCache,
    /// Why the output thread stopped.
    output_failed: Option<String>,
    finished: Option<idlegrid_market::JobSummary>,
    stalled: bool,
    progress: Arc<SubmitProgress>,
    /// When each undecided task was first assigned.
    assigned_at: HashMap<u64, Instant>,
    /// When the first task was.
    first_placed: Option<Instant>,
    round_trips_us: Vec<u64>,
}

impl RequestorLoop {
    fn input_cid(&mut self, task: u64) -> Option<ContentId> {
        let slot = self.input_cids.get_mut(usize::try_from(task).ok()?)?;
        if slot.is_none() {
            *slot = Some(self.job_file.tasks[usize::try_from(task).ok()?].content_id());
        }
        *slot
    }

    fn event(&mut self, event: Event) -> Vec<Input> {
        match event {
            Event::Offer { provider, offer } => {
                if offer.body.expires_at_ms <= unix_ms() && offer.body.expires_at_ms != 0 {
                    // An expired offer withdraws the provider (it paused).
                    return vec![Input::Offer {
                        provider,
                        offer: offer.body,
                    }];
                }
                let stale = self
                    .stake_read
                    .get(&provider)
                    .is_none_or(|read| read.elapsed() >= STAKE_REFRESH);
                if stale {
                    self.stake_read.insert(provider, Instant::now());
                    let client = self.client.clone();
                    let internal = self.internal.clone();
                    tokio::task::spawn_blocking(move || match client.account(&provider) {
                        Ok(account) => {
                            let _ = internal.send(Internal::Stake {
                                provider,
                                amount: account.provider_stake,
                            });
                        }
                        Err(error) => {
                            debug!(%provider, %error, "could not read the provider's stake")
                        }
                    });
                }
                // Placement waits for a connection (the overlay dials offer authors).
                vec![Input::Offer {
                    provider,
                    offer: offer.body,
                }]
            }
            Event::Connected(peer) => vec![Input::Connected(peer)],
            Event::Disconnected(peer) => vec![Input::Lost(peer)],
            Event::Request {
                peer,
                request,
                reply,
            } => {
                let (response, inputs) = self.request(peer, request);
                reply.send(response);
                inputs
            }
            Event::Misbehaved { peer, reason } => {
                warn!(%peer, %reason, "peer blocked");
                Vec::new()
            }
            Event::Listening(_) | Event::OfferSubscriber(_) => Vec::new(),
        }
    }

    fn request(&mut self, peer: AccountId, request: Request) -> (Response, Vec<Input>) {
        match request {
            Request::Results(batch) => self.results(peer, batch),
            Request::Content { cid, offset } if cid == self.job_file.module_cid => {
                (content_chunk(&self.job_file.module, offset), Vec::new())
            }
            Request::Content { cid, .. } => (
                Response::refused("not_found", format!("this requestor does not hold {cid}")),
                Vec::new(),
            ),
            other => (
                Response::refused(
                    "not_a_provider",
                    format!("a requestor does not take `{}` requests", other.name()),
                ),
                Vec::new(),
            ),
        }
    }

    fn results(&mut self, provider: AccountId, batch: ResultBatch) -> (Response, Vec<Input>) {
        if batch.job != self.job {
            return (
                Response::refused("unknown_job", format!("this requestor runs {}", self.job)),
                Vec::new(),
            );
        }
        let mut inputs = Vec::new();
        for result in batch.results.into_inner() {
            let task = result.index();
            match result {
                TaskReturn::NotRun { reason, .. } => {
                    info!(%provider, task, reason = &*reason, "task not run");
                    inputs.push(Input::ProviderFailed {
                        provider,
                        job: self.job,
                        task,
                    });
                }
                TaskReturn::Ran { receipt, stdout } => {
                    match self.check_receipt(provider, &receipt, &stdout) {
                        Ok(()) => {
                            let outcome = receipt.body.outcome;
                            let fuel_used = receipt.body.fuel_used;
                            self.progress
                                .fuel_executed
                                .fetch_add(fuel_used, Ordering::Relaxed);
                            self.providers.entry(provider).or_default().results += 1;
                            let stdout = matches!(outcome, TaskOutcome::Completed { .. })
                                .then(|| stdout.into_inner());
                            self.pending
                                .entry(task)
                                .or_default()
                                .push((provider, outcome, stdout));
                            inputs.push(Input::Result {
                                provider,
                                job: self.job,
                                task,
                                result: TaskResult {
                                    outcome,
                                    fuel_used,
                                    receipt: Some(Box::new(receipt)),
                                },
                            });
                        }
                        Err(reason) => {
                            warn!(%provider, task, reason, "unusable result");
                            inputs.push(Input::ProviderFailed {
                                provider,
                                job: self.job,
                                task,
                            });
                        }
                    }
                }
            }
        }
        (Response::Ok, inputs)
    }

    /// A receipt counts only if its provider signed it for this job's task,
    /// module and input, and the output it names is the one sent.
    fn check_receipt(
        &mut self,
        provider: AccountId,
        receipt: &SignedReceipt,
        stdout: &[u8],
    ) -> Result<(), &'static str> {
        if receipt.signer != provider || receipt.verify_cached(&self.signatures).is_err() {
            return Err("the receipt is not signed by the provider that sent it");
        }
        let body = &receipt.body;
        if body.module != self.job_file.module_cid {
            return Err("the receipt names another module");
        }
        if self.input_cid(body.task_index) != Some(body.input) {
            return Err("the receipt names another input");
        }
        if let TaskOutcome::Completed { output, .. } = body.outcome
            && ContentId::of(stdout) != output
        {
            return Err("the output sent is not the one the receipt names");
        }
        Ok(())
    }

    /// Sends each provider the newest voucher it is owed, unless one is
    /// on its way already.
    fn send_vouchers(&mut self) {
        for (provider, voucher) in &self.owed {
            let sent = self.vouched.get(provider).copied().unwrap_or(0);
            if voucher.sequence <= sent || self.vouchers_in_flight.contains(provider) {
                continue;
            }
            self.vouched.insert(*provider, voucher.sequence);
            self.vouchers_in_flight.insert(*provider);
            let signed = self.key.sign(voucher.clone());
            let overlay = self.overlay.clone();
            let internal = self.internal.clone();
            let provider = *provider;
            tokio::spawn(async move {
                // A lost voucher is superseded by the next, or resent at the end.
                if let Err(error) = overlay.request(&provider, Request::Voucher(signed)).await {
                    debug!(%provider, %error, "voucher not delivered");
                }
                let _ = internal.send(Internal::VoucherSent(provider));
            });
        }
    }

    fn internal(&mut self, message: Internal) -> Vec<Input> {
        match message {
            Internal::OutputFailed(error) => {
                self.output_failed = Some(error);
                Vec::new()
            }
            Internal::VoucherSent(provider) => {
                self.vouchers_in_flight.remove(&provider);
                Vec::new()
            }
            Internal::Stake { provider, amount } => vec![Input::Stake { provider, amount }],
            Internal::AssignFailed {
                provider,
                tasks,
                lost,
            } => {
                if lost {
                    vec![Input::Lost(provider)]
                } else {
                    tasks
                        .into_iter()
                        .map(|task| Input::ProviderFailed {
                            provider,
                            job: self.job,
                            task,
                        })
                        .collect()
                }
            }
            Internal::Disputed(record) => {
                self.dispute_records.push(record);
                Vec::new()
            }
        }
    }

    fn apply(&mut self, commands: Vec<Command>) -> anyhow::Result<()> {
        let mut cancels: HashMap<AccountId, Vec<u64>> = HashMap::new();
        for command in commands {
            match command {
                Command::Assign {
                    provider, tasks, ..
                } => self.assign(provider, tasks),
                Command::Cancel { provider, task, .. } => {
                    cancels.entry(provider).or_default().push(task)
                }
                Command::Voucher {
                    job,
                    provider,
                    cumulative_amount,
                    cumulative_fuel,
                    sequence,
                } => {
                    let record = self.providers.entry(provider).or_default();
                    record.paid = cumulative_amount;
                    record.fuel_paid = cumulative_fuel;
                    self.progress.paid.store(
                        self.providers.values().map(|record| record.paid).sum(),
                        Ordering::Relaxed,
                    );
                    self.owed.insert(
                        provider,
                        Voucher {
                            job,
                            provider,
                            cumulative_amount,
                            cumulative_fuel,
                            sequence,
                        },
                    );
                }
                Command::Fraud {
                    task,
                    provider,
                    evidence,
                    ..
                } => {
                    warn!(%provider, task, "a provider's result lost to the accepted one");
                    let disputed = self.disputes.against.entry(provider).or_default();
                    if *disputed >= DISPUTES_PER_PROVIDER_MAX {
                        continue;
                    }
                    if let Some(evidence) = evidence {
                        *disputed += 1;
                        let (accepted, losing) = *evidence;
                        let input = self.job_file.tasks[usize::try_from(task)?].encode();
                        let dispute = Dispute {
                            evidence: Evidence::Conflicting(accepted, losing),
                            module: Bounded::new(self.job_file.module.clone()).map_err(|_| {
                                anyhow::anyhow!("the module is too large to dispute")
                            })?,
                            input: Bounded::new(input).map_err(|_| {
                                anyhow::anyhow!("the task input is too large to dispute")
                            })?,
                        };
                        self.disputes.file(task, provider, dispute);
                    }
                }
                Command::TaskAccepted {
                    task,
                    outcome,
                    fuel_used,
                    ..
                } => self.accepted(task, outcome, fuel_used),
                Command::TaskFailed { task, reason, .. } => {
                    self.pending.remove(&task);
                    self.assigned_at.remove(&task);
                    self.progress.failed.fetch_add(1, Ordering::Relaxed);
                    self.records.insert(
                        task,
                        TaskRecord {
                            index: task,
                            status: "failed",
                            exit_code: None,
                            output: None,
                            error: Some(reason),
                            fuel: None,
                            file: None,
                            providers: Vec::new(),
                        },
                    );
                }
                Command::JobStalled { .. } => self.stalled = true,
                Command::JobFinished { summary, .. } => self.finished = Some(summary),
            }
        }
        for (provider, tasks) in cancels {
            let overlay = self.overlay.clone();
            let job = self.job;
            tokio::spawn(async move {
                for chunk in tasks.chunks(idlegrid_net::BATCH_TASKS_MAX) {
                    let tasks = Bounded::new(chunk.to_vec()).expect("one chunk");
                    let _ = overlay
                        .request(&provider, Request::Cancel { job, tasks })
                        .await;
                }
            });
        }
        Ok(())
    }

    fn accepted(&mut self, task: u64, outcome: TaskOutcome, fuel_used: u64) {
        if let Some(assigned) = self.assigned_at.remove(&task) {
            let round_trip = assigned.elapsed();
            if let Some(histogram) = &self.progress.round_trips {
                histogram.observe(round_trip.as_secs_f64());
            }
            self.round_trips_us
                .push(u64::try_from(round_trip.as_micros()).unwrap_or(u64::MAX));
        }
        let results = self.pending.remove(&task).unwrap_or_default();
        self.progress.update(|detail| {
            for (provider, result, _) in &results {
                let track = detail.providers.entry(*provider).or_default();
                if *result == outcome {
                    track.accepted += 1;
                } else {
                    track.rejected += 1;
                }
            }
        });
        let providers = results
            .iter()
            .filter(|(_, result, _)| *result == outcome)
            .map(|(provider, _, _)| *provider)
            .collect();
        let mut record = TaskRecord {
            index: task,
            status: "accepted",
            exit_code: None,
            output: None,
            error: None,
            fuel: Some(fuel_used),
            file: None,
            providers,
        };
        let mut output_file = None;
        match outcome {
            TaskOutcome::Completed { exit_code, output } => {
                let stdout = results
                    .into_iter()
                    .find_map(|(_, result, stdout)| (result == outcome).then_some(stdout).flatten())
                    .unwrap_or_default();
                let file = format!("tasks/{task:06}.out");
                output_file = Some((self.out_dir.join(&file), stdout));
                record.exit_code = Some(exit_code);
                record.output = Some(output.to_string());
                record.file = Some(file);
            }
            TaskOutcome::Failed(kind) => record.error = Some(kind.as_str().to_owned()),
        }
        self.records.insert(task, record);
        self.outputs.write(task, output_file);
    }

    fn assign(&mut self, provider: AccountId, tasks: Vec<u64>) {
        let mut batches: Vec<Vec<AssignedTask>> = vec![Vec::new()];
        let mut bytes = 0;
        for task in tasks {
            let Some(input) = usize::try_from(task)
                .ok()
                .and_then(|index| self.job_file.tasks.get(index))
            else {
                continue;
            };
            let size = 8 + input.encoded_len();
            let current = batches.last_mut().expect("never empty");
            if !current.is_empty()
                && (bytes + size > MESSAGE_BYTES_MAX / 2
                    || current.len() == idlegrid_net::BATCH_TASKS_MAX)
            {
                batches.push(Vec::new());
                bytes = 0;
            }
            bytes += size;
            batches.last_mut().expect("never empty").push(AssignedTask {
                index: task,
                input: input.clone(),
            });
        }
        let now = Instant::now();
        self.first_placed.get_or_insert(now);
        for tasks in batches.into_iter().filter(|batch| !batch.is_empty()) {
            let indexes: Vec<u64> = tasks.iter().map(|task| task.index).collect();
            for index in &indexes {
                self.assigned_at.entry(*index).or_insert(now);
            }
            let batch = TaskBatch {
                job: self.job,
                module: self.job_file.module_cid,
                limits: self.job_file.limits,
                wall_time_ms: self.job_file.wall_time_secs.saturating_mul(1000),
                price_per_million_fuel: self.job_file.price_per_million_fuel,
                tasks: Bounded::new(tasks).expect("at most BATCH_TASKS_MAX"),
            };
            // On its way now, in placement order; a task waits for the answer.
            let answer = self.overlay.send(&provider, Request::Tasks(batch));
            let internal = self.internal.clone();
            tokio::spawn(async move {
                let failure = match answer.await {
                    Ok(Response::Ok) => return,
                    Ok(Response::Refused { code, message }) => {
                        info!(%provider, code = &*code, message = &*message, "batch refused");
                        false
                    }
                    Ok(Response::Content { .. }) => false,
                    Err(error) => {
                        info!(%provider, %error, "batch not delivered");
                        matches!(
                            error,
                            idlegrid_net::RequestError::Unreachable(_)
                                | idlegrid_net::RequestError::ConnectionClosed(_)
                        )
                    }
                };
                let _ = internal.send(Internal::AssignFailed {
                    provider,
                    tasks: indexes,
                    lost: failure,
                });
            });
        }
    }
}

/// An accepted task, and where its output goes (none when it failed).
type OutputOrder = (u64, Option<(PathBuf, Vec<u8>)>);

/// Writes accepted tasks' outputs on its own thread, so that the loop
/// deciding tasks never waits for the disk (creating a file costs tens to
/// hundreds of microseconds), and counts each task accepted once its file
/// is written: a reader told of the task finds it.
struct OutputWriter {
    orders: Option<std_mpsc::Sender<OutputOrder>>,
    thread: Option<std::thread::JoinHandle<anyhow::Result<()>>>,
}

impl OutputWriter {
    fn start(
        progress: Arc<SubmitProgress>,
        internal: mpsc::UnboundedSender<Internal>,
    ) -> anyhow::Result<Self> {
        let (orders, queue) = std_mpsc::channel::<OutputOrder>();
        let thread = std::thread::Builder::new()
            .name("requestor-outputs".to_owned())
            .spawn(move || {
                while let Ok((task, file)) = queue.recv() {
                    if let Some((path, stdout)) = file
                        && let Err(error) = std::fs::write(&path, &stdout)
                    {
                        let error = anyhow::Error::new(error)
                            .context(format!("failed to write {}", path.display()));
                        let _ = internal.send(Internal::OutputFailed(format!("{error:#}")));
                        return Err(error);
                    }
                    progress.accepted.fetch_add(1, Ordering::Relaxed);
                    progress.update(|detail| detail.done.push(task));
                }
                Ok(())
            })
            .context("failed to start the output thread")?;
        Ok(Self {
            orders: Some(orders),
            thread: Some(thread),
        })
    }

    fn write(&self, task: u64, file: Option<(PathBuf, Vec<u8>)>) {
        if let Some(orders) = &self.orders {
            // A thread that stopped has reported why.
            let _ = orders.send((task, file));
        }
    }

    /// Waits for every output ordered so far.
    async fn finish(&mut self) -> anyhow::Result<()> {
        self.orders = None;
        match self.thread.take() {
            Some(thread) => tokio::task::spawn_blocking(move || thread.join())
                .await
                .context("the output thread failed")?
                .map_err(|_| anyhow::anyhow!("the output thread panicked"))?,
            None => Ok(()),
        }
    }
}

/// Files disputes on the ledger, one at a time, on its own thread.
struct Disputer {
    orders: std_mpsc::Sender<(u64, AccountId, Dispute)>,
    /// Disputes ordered so far.
    filed: usize,
    /// Disputes ordered against each provider.
    against: HashMap<AccountId, usize>,
}

impl Disputer {
    fn start(
        client: ApiClient,
        key: Keypair,
        internal: mpsc::UnboundedSender<Internal>,
    ) -> anyhow::Result<Self> {
        let (orders, queue) = std_mpsc::channel::<(u64, AccountId, Dispute)>();
        std::thread::Builder::new()
            .name("requestor-disputes".to_owned())
            .spawn(move || {
                while let Ok((task, provider, dispute)) = queue.recv() {
                    let sent = client.send(&key, TxKind::Dispute(Box::new(dispute)), None);
                    let (transaction, status) = match sent {
                        Ok(sent) => {
                            let status = match client.wait_included(&sent.hash, TRANSACTION_WAIT) {
                                Ok(_) => "included".to_owned(),
                                Err(error) => error.to_string(),
                            };
                            (Some(sent.hash), status)
                        }
                        Err(error) => (None, error.to_string()),
                    };
                    info!(task, %provider, %status, "dispute filed");
                    let record = DisputeRecord {
                        task,
                        provider: provider.to_string(),
                        transaction,
                        status,
                    };
                    if internal.send(Internal::Disputed(record)).is_err() {
                        return;
                    }
                }
            })
            .context("failed to start the dispute thread")?;
        Ok(Self {
            orders,
            filed: 0,
            against: HashMap::new(),
        })
    }

    fn file(&mut self, task: u64, provider: AccountId, dispute: Dispute) {
        if self.orders.send((task, provider, dispute)).is_ok() {
            self.filed += 1;
        }
    }
}
