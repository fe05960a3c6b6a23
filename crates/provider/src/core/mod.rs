//! The provider's decisions, without I/O: which task batches to take, what
//! to run, what to sign and send back, which vouchers to keep, and when to
//! redeem them.
//!
//! [`ProviderCore::handle`] takes the time and an [`Input`] (a peer's
//! request, a worker's result, a ledger answer, a timer) and returns the
//! [`Command`]s the shell carries out (reply, run, send, store, redeem).
//! It holds no sockets, clocks, threads or files, so every rule here is
//! tested without a network: a receipt is signed only for a task the core
//! handed to a worker and that worker ran, once; a voucher is acknowledged
//! only after the shell was told to store it; what it holds is bounded.
//!
//! An output too large to go back inline is kept by the worker, pinned in
//! the content store, and returned as [`TaskReturn::Kept`]; the core holds
//! its id per job until the requestor is done with it (`core/kept.rs`) and
//! then has the shell let it go ([`Command::ReleaseOutputs`]).

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;

use idlegrid_net::protocol::{REASON_BYTES_MAX, bounded_text};
use idlegrid_net::{
    AssignedTask, BATCH_TASKS_MAX, CONTENT_BYTES_MAX, MESSAGE_BYTES_MAX, OUTPUT_INLINE_BYTES_MAX,
    Request, Response, ResultBatch, TaskBatch, TaskReturn,
};
use idlegrid_types::codec::Bounded;
use idlegrid_types::{
    AccountId, ContentId, ErrorKind, JobId, Keypair, Receipt, SignedOffer, SignedReceipt,
    SignedVoucher, TaskOutcome,
};

mod asks;
mod kept;
mod types;
mod vouchers;

pub use asks::{
    VOUCHER_ASK_AFTER_MS, VOUCHER_ASK_BACKOFF_MAX_MS, VOUCHER_ASK_PACE_MS, VOUCHER_ASKS_MAX,
    VOUCHER_WAITS_MAX,
};
pub use kept::{KEPT_OUTPUTS_HOLD_MS, KEPT_OUTPUTS_JOBS_MAX, KEPT_OUTPUTS_PER_JOB_MAX};
pub use types::{
    BatchId, Cheat, Command, ContentPart, CoreConfig, Input, JobCheck, ModuleStatus, Redemption,
    RequestId, RunOutput, RunResult, Task, Totals, VoucherAnswer,
};

use asks::VoucherAsks;
use kept::{KeptOutputs, kept_output};

type TaskKey = (JobId, u64);

/// Jobs whose ledger check a provider remembers.
pub const JOB_CHECKS_MAX: usize = 4096;
/// Results requests in flight to one requestor.
pub const RESULTS_IN_FLIGHT_MAX: usize = 2;
/// Times a results batch is sent before it is given up (the requestor's
/// lease then expires and the tasks go elsewhere).
pub const RESULTS_ATTEMPTS_MAX: u32 = 3;
/// Offers published for new subscribers at most once per this, ms.
pub const REPUBLISH_PACE_MS: u64 = 1_000;
/// Bytes of task input a provider holds queued at most, from all requestors.
pub const QUEUE_BYTES_MAX: usize = 64 << 20;
/// Compiled modules kept ready at most; the least recently used goes first
/// (its bytes stay in the disk cache, so it comes back cheaply).
pub const MODULES_HELD_MAX: usize = 64;
/// Jobs whose newest voucher a provider holds at most (one file each).
pub const VOUCHERS_HELD_MAX: usize = 100_000;
/// The longest wall-clock backstop a task may ask for, ms.
const WALL_TIME_MS_MAX: u64 = 3_600_000;

/// A task's result before it is signed: results sent together are signed
/// together, under one signature.
#[derive(Debug, Clone)]
enum Finished {
    Ran {
        receipt: Receipt,
        stdout: Bounded<Vec<u8>, OUTPUT_INLINE_BYTES_MAX>,
    },
    /// Completed, its output of `bytes` kept here under the id the receipt
    /// names.
    Kept { receipt: Receipt, bytes: u64 },
    NotRun {
        index: u64,
        reason: Bounded<String, REASON_BYTES_MAX>,
    },
}

impl Finished {
    fn not_run(index: u64, reason: String) -> Self {
        Finished::NotRun {
            index,
            reason: bounded_text(reason),
        }
    }

    /// Roughly what it takes on the wire, for packing batches.
    fn encoded_bytes_estimate(&self) -> usize {
        match self {
            Finished::Ran { stdout, .. } => stdout.len() + 512,
            Finished::Kept { .. } => 520,
            Finished::NotRun { reason, .. } => reason.len() + 16,
        }
    }
}

/// Signs the receipts of `results` as one batch.
fn sign(key: &Keypair, results: Vec<Finished>) -> Vec<TaskReturn> {
    let receipts = results
        .iter()
        .filter_map(|result| match result {
            Finished::Ran { receipt, .. } | Finished::Kept { receipt, .. } => Some(receipt.clone()),
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
            Finished::Kept { bytes, .. } => TaskReturn::Kept {
                receipt: signed.next().expect("one receipt per result that ran"),
                bytes,
            },
            Finished::NotRun { index, reason } => TaskReturn::NotRun { index, reason },
        })
        .collect()
}

/// A task taken, not yet handed to a worker.
#[derive(Debug)]
struct Taken {
    requestor: AccountId,
    task: Task,
}

/// A batch waiting for its job's ledger check.
#[derive(Debug)]
struct Parked {
    id: RequestId,
    peer: AccountId,
    batch: TaskBatch,
}

/// A task handed to the workers, until its result (or skip) comes back.
#[derive(Debug)]
struct Handed {
    requestor: AccountId,
    module: ContentId,
    input: ContentId,
    input_bytes: usize,
}

#[derive(Debug)]
enum ModuleState {
    Fetching,
    Ready { used: u64 },
    Invalid { kind: ErrorKind, used: u64 },
}

/// A results batch on its way.
#[derive(Debug)]
struct Sending {
    requestor: AccountId,
    job: JobId,
    results: Vec<Finished>,
    attempt: u32,
}

/// The provider's state machine.
#[derive(Debug)]
pub struct ProviderCore {
    config: CoreConfig,
    account: AccountId,
    paused: bool,
    shutting_down: bool,
    last_offer_ms: Option<u64>,
    /// The newest offer published, for requestors that ask for it.
    last_offer: Option<SignedOffer>,
    /// A new subscriber is owed the offer once the pace allows.
    republish: bool,
    jobs: HashMap<JobId, JobCheck>,
    /// Batches waiting for their job's check, by job.
    parked: HashMap<JobId, Vec<Parked>>,
    modules: HashMap<ContentId, ModuleState>,
    /// Counts module uses, for dropping the least recently used.
    module_clock: u64,
    /// Tasks waiting for their module.
    waiting: HashMap<ContentId, Vec<Taken>>,
    handed: HashMap<TaskKey, Handed>,
    /// Tasks and input bytes held, in all of the above.
    held_tasks: usize,
    held_bytes: usize,
    /// Results waiting to go back, per requestor.
    outbox: HashMap<AccountId, VecDeque<(JobId, Finished)>>,
    in_flight: HashMap<AccountId, usize>,
    sending: HashMap<BatchId, Sending>,
    next_batch: BatchId,
    /// The newest voucher of each job, each stored before it was
    /// acknowledged.
    vouchers: HashMap<JobId, SignedVoucher>,
    /// What the ledger has paid (or settled) per job.
    redeemed: HashMap<JobId, u64>,
    /// Redemptions ordered and not yet ended: the amount of each.
    redeeming: HashMap<JobId, u64>,
    /// Jobs whose results were delivered and no voucher came since.
    asks: VoucherAsks,
    /// Outputs kept for requestors to fetch, by job.
    kept: KeptOutputs,
    tasks_done: u64,
    fuel_used: u64,
    earned: u64,
    outputs_kept: u64,
    outputs_kept_bytes: u64,
}

impl ProviderCore {
    /// A core holding `vouchers` (stored by an earlier run; those not
    /// signed for this provider are left out).
    pub fn new(config: CoreConfig, vouchers: Vec<SignedVoucher>) -> Self {
        let account = config.key.account_id();
        let vouchers = vouchers
            .into_iter()
            .filter(|voucher| voucher.body.provider == account && voucher.verify().is_ok())
            .map(|voucher| (voucher.body.job, voucher))
            .collect();
        Self {
            config,
            account,
            paused: false,
            shutting_down: false,
            last_offer_ms: None,
            last_offer: None,
            republish: false,
            jobs: HashMap::new(),
            parked: HashMap::new(),
            modules: HashMap::new(),
            module_clock: 0,
            waiting: HashMap::new(),
            handed: HashMap::new(),
            held_tasks: 0,
            held_bytes: 0,
            outbox: HashMap::new(),
            in_flight: HashMap::new(),
            sending: HashMap::new(),
            next_batch: 0,
            vouchers,
            redeemed: HashMap::new(),
            redeeming: HashMap::new(),
            asks: VoucherAsks::default(),
            kept: KeptOutputs::default(),
            tasks_done: 0,
            fuel_used: 0,
            earned: 0,
            outputs_kept: 0,
            outputs_kept_bytes: 0,
        }
    }

    pub fn totals(&self) -> Totals {
        Totals {
            tasks_done: self.tasks_done,
            fuel_used: self.fuel_used,
            earned: self.earned,
            owed: self.owed(),
            held: self.held_tasks as u64,
            paused: self.paused,
            outputs_kept: self.outputs_kept,
            outputs_kept_bytes: self.outputs_kept_bytes,
            outputs_held: self.kept.len() as u64,
        }
    }

    /// The vouchers held, newest per job.
    pub fn vouchers(&self) -> impl Iterator<Item = &SignedVoucher> {
        self.vouchers.values()
    }

    /// Redemptions ordered that have not ended.
    pub fn redeeming(&self) -> usize {
        self.redeeming.len()
    }

    /// When the core wants an [`Input::Wake`], if at all.
    pub fn wake_at(&self) -> Option<u64> {
        let republish = self
            .republish
            .then(|| self.last_offer_ms.unwrap_or(0) + REPUBLISH_PACE_MS);
        [republish, self.asks.wake_at(), self.kept.wake_at()]
            .into_iter()
            .flatten()
            .min()
    }

    /// Takes one input; gives what to do, in order.
    pub fn handle(&mut self, now_ms: u64, input: Input) -> Vec<Command> {
        let mut commands = Vec::new();
        match input {
            Input::Request { id, peer, request } => {
                self.request(now_ms, id, peer, request, &mut commands);
            }
            Input::OfferSubscriber => {
                if self.republish_due(now_ms) {
                    commands.push(self.publish(now_ms));
                } else {
                    self.republish = true;
                }
            }
            Input::OfferTimer => commands.push(self.publish(now_ms)),
            Input::Wake => {
                if self.republish && self.republish_due(now_ms) {
                    commands.push(self.publish(now_ms));
                }
                self.ask_vouchers(now_ms, &mut commands);
                // Requestors silent for the hold time are not waited for.
                for (job, outputs) in self.kept.expired(now_ms) {
                    commands.push(Command::ReleaseOutputs { job, outputs });
                }
            }
            Input::Connected(peer) => {
                self.asks.connected(now_ms, peer);
                self.ask_vouchers(now_ms, &mut commands);
            }
            Input::VoucherAsked {
                job,
                requestor,
                answer,
            } => self.voucher_asked(now_ms, job, requestor, answer, &mut commands),
            Input::RedeemTimer => self.redeem(None, &mut commands),
            Input::JobChecked { job, check } => self.job_checked(job, check, &mut commands),
            Input::ModuleReady { cid, status } => self.module_ready(cid, status, &mut commands),
            Input::TaskDone { job, index, result } => {
                self.task_done(now_ms, (job, index), result, &mut commands);
            }
            Input::TaskSkipped { job, index } => {
                if let Some(handed) = self.handed.remove(&(job, index)) {
                    self.release(1, handed.input_bytes);
                }
            }
            Input::ResultsAnswered { batch, delivered } => {
                self.results_answered(now_ms, batch, delivered, &mut commands);
            }
            Input::Redeemed {
                job,
                amount,
                outcome,
            } => self.redeemed(job, amount, outcome, &mut commands),
            Input::Paused(paused) => {
                self.paused = paused || self.shutting_down;
                commands.push(self.publish(now_ms));
            }
            Input::Shutdown => {
                self.shutting_down = true;
                self.paused = true;
                self.redeem(None, &mut commands);
            }
        }
        commands
    }

    fn republish_due(&self, now_ms: u64) -> bool {
        self.last_offer_ms
            .is_none_or(|last| now_ms.saturating_sub(last) >= REPUBLISH_PACE_MS)
    }

    fn publish(&mut self, now_ms: u64) -> Command {
        let offer = &mut self.config.offer;
        offer.sequence = now_ms.max(offer.sequence + 1);
        // A paused provider's offer expires at once, so requestors stop
        // placing work with it.
        offer.expires_at_ms = if self.paused {
            now_ms
        } else {
            now_ms.saturating_add(self.config.offer_ttl_ms)
        };
        self.last_offer_ms = Some(now_ms);
        self.republish = false;
        let signed = self.config.key.sign(offer.clone());
        self.last_offer = Some(signed.clone());
        Command::PublishOffer(signed)
    }

    fn request(
        &mut self,
        now_ms: u64,
        id: RequestId,
        peer: AccountId,
        request: Request,
        commands: &mut Vec<Command>,
    ) {
        let response = match request {
            Request::Tasks(batch) => {
                self.kept.heard(now_ms, &batch.job, &peer);
                match self.tasks(id, peer, batch, commands) {
                    Some(response) => response,
                    None => return,
                }
            }
            Request::Cancel { job, tasks } => {
                for index in tasks.iter() {
                    self.cancel((job, *index), commands);
                }
                Response::Ok
            }
            Request::Voucher(voucher) => {
                self.kept.heard(now_ms, &voucher.body.job, &peer);
                match self.voucher(peer, voucher) {
                    Ok(Some(voucher)) => {
                        commands.push(Command::StoreVoucher {
                            voucher,
                            reply: Some(id),
                        });
                        return;
                    }
                    Ok(None) => Response::Ok,
                    Err(refusal) => refusal,
                }
            }
            Request::JobDone { job } => {
                commands.push(Command::Reply {
                    id,
                    response: Response::Ok,
                });
                // The requestor's last round gives its newest voucher
                // before this: there is nothing more to ask for.
                self.asks.vouched(&job);
                self.redeem(Some(job), commands);
                // It has fetched the outputs it wanted.
                if let Some(outputs) = self.kept.done(&job, &peer) {
                    commands.push(Command::ReleaseOutputs { job, outputs });
                }
                return;
            }
            Request::Content { cid, offset } => {
                commands.push(Command::ServeContent {
                    id,
                    cid,
                    part: ContentPart::From(offset),
                });
                return;
            }
            Request::ContentTree { cid, from } => {
                commands.push(Command::ServeContent {
                    id,
                    cid,
                    part: ContentPart::Tree { from },
                });
                return;
            }
            Request::Offer => match &self.last_offer {
                Some(offer) => Response::Offer(Box::new(offer.clone())),
                None => Response::refused("no_offer", "this provider has made no offer yet"),
            },
            Request::Results(_) | Request::NewestVoucher { .. } => {
                Response::refused("not_a_requestor", "this node is a provider")
            }
        };
        commands.push(Command::Reply { id, response });
    }

    /// Takes a batch, parks it for its job's check, or refuses it; `None`
    /// when the answer waits for the check.
    fn tasks(
        &mut self,
        id: RequestId,
        peer: AccountId,
        batch: TaskBatch,
        commands: &mut Vec<Command>,
    ) -> Option<Response> {
        if self.paused {
            return Some(Response::refused(
                "paused",
                if self.shutting_down {
                    "the provider is shutting down"
                } else {
                    "the provider's owner is using the machine"
                },
            ));
        }
        let floor = self.config.offer.price_floor_per_million_fuel;
        if batch.price_per_million_fuel < floor {
            return Some(Response::refused(
                "price_too_low",
                format!(
                    "the job pays {} per million fuel; this provider asks at least {floor}",
                    batch.price_per_million_fuel
                ),
            ));
        }
        let output_bytes_max = self.config.output_bytes_max.min(CONTENT_BYTES_MAX);
        if batch.limits.output_bytes > output_bytes_max {
            return Some(Response::refused(
                "output_too_large",
                format!(
                    "the job's tasks may write {} bytes of output; this provider keeps outputs \
                     of at most {output_bytes_max} bytes",
                    batch.limits.output_bytes
                ),
            ));
        }
        let batch_bytes: usize = batch
            .tasks
            .iter()
            .map(|task| task.input.encoded_len())
            .sum();
        if self.held_tasks + batch.tasks.len() > self.config.queue_tasks_max
            || self.held_bytes + batch_bytes > self.config.queue_bytes_max
        {
            return Some(Response::refused("busy", "the provider's queue is full"));
        }
        self.held_tasks += batch.tasks.len();
        self.held_bytes += batch_bytes;
        match self.jobs.get(&batch.job) {
            Some(check) => {
                let verdict = verdict(check, peer, &batch);
                Some(self.admit(verdict, peer, batch, commands))
            }
            None => {
                let parked = self.parked.entry(batch.job).or_default();
                if parked.is_empty() {
                    commands.push(Command::CheckJob { job: batch.job });
                }
                parked.push(Parked { id, peer, batch });
                None
            }
        }
    }

    fn job_checked(&mut self, job: JobId, check: JobCheck, commands: &mut Vec<Command>) {
        if self.jobs.len() >= JOB_CHECKS_MAX {
            self.jobs.clear();
        }
        for Parked { id, peer, batch } in self.parked.remove(&job).unwrap_or_default() {
            let verdict = verdict(&check, peer, &batch);
            let response = self.admit(verdict, peer, batch, commands);
            commands.push(Command::Reply { id, response });
        }
        // A ledger that could not be reached, or that has not seen the job
        // yet (a validator behind the requestor's), may answer otherwise
        // for the next batch.
        let transient = matches!(
            check,
            JobCheck::Rejected {
                code: "ledger_unreachable" | "unknown_job",
                ..
            }
        );
        if !transient {
            self.jobs.insert(job, check);
        }
    }

    /// Queues a held batch's tasks if `verdict` lets it run, or lets them
    /// go; answers the batch.
    fn admit(
        &mut self,
        verdict: Result<(), Response>,
        peer: AccountId,
        batch: TaskBatch,
        commands: &mut Vec<Command>,
    ) -> Response {
        if let Err(refusal) = verdict {
            let bytes = batch
                .tasks
                .iter()
                .map(|task| task.input.encoded_len())
                .sum();
            self.release(batch.tasks.len(), bytes);
            return refusal;
        }
        let wall_time_ms = batch.wall_time_ms.clamp(1, WALL_TIME_MS_MAX);
        let module = batch.module;
        let holders: Vec<AccountId> = batch
            .module_holders
            .iter()
            .filter(|holder| **holder != self.account && **holder != peer)
            .copied()
            .collect();
        // One list for the batch, shared by its tasks.
        let shared_holders: Arc<[AccountId]> = holders.as_slice().into();
        let mut taken = Vec::with_capacity(batch.tasks.len());
        let mut keys = HashSet::with_capacity(batch.tasks.len());
        for AssignedTask { index, input } in batch.tasks.into_inner() {
            let key = (batch.job, index);
            if self.handed.contains_key(&key) || self.is_waiting(module, key) || !keys.insert(key) {
                // Sent twice: one run answers both.
                self.release(1, input.encoded_len());
                continue;
            }
            taken.push(Taken {
                requestor: peer,
                task: Task {
                    job: batch.job,
                    index,
                    module,
                    limits: batch.limits,
                    wall_time_ms,
                    input,
                    requestor: peer,
                    holders: Arc::clone(&shared_holders),
                },
            });
        }
        self.module_clock += 1;
        let clock = self.module_clock;
        match self.modules.get_mut(&module) {
            Some(ModuleState::Ready { used }) => {
                *used = clock;
                for taken in taken {
                    self.hand(taken, commands);
                }
            }
            Some(ModuleState::Invalid { kind, used }) => {
                *used = clock;
                let kind = *kind;
                for taken in taken {
                    self.refused_by_module(taken, kind, commands);
                }
            }
            Some(ModuleState::Fetching) => {
                self.waiting.entry(module).or_default().extend(taken);
            }
            None => {
                self.modules.insert(module, ModuleState::Fetching);
                self.waiting.entry(module).or_default().extend(taken);
                commands.push(Command::FetchModule {
                    from: peer,
                    holders,
                    cid: module,
                });
            }
        }
        Response::Ok
    }

    fn is_waiting(&self, module: ContentId, key: TaskKey) -> bool {
        self.waiting.get(&module).is_some_and(|waiting| {
            waiting
                .iter()
                .any(|taken| (taken.task.job, taken.task.index) == key)
        })
    }

    /// Hands a task to the workers.
    fn hand(&mut self, taken: Taken, commands: &mut Vec<Command>) {
        let task = taken.task;
        self.handed.insert(
            (task.job, task.index),
            Handed {
                requestor: taken.requestor,
                module: task.module,
                input: task.input.content_id(),
                input_bytes: task.input.encoded_len(),
            },
        );
        commands.push(Command::Run(task));
    }

    /// A task whose module the sandbox refuses: the refusal is its result,
    /// as every replica reports it.
    fn refused_by_module(&mut self, taken: Taken, kind: ErrorKind, commands: &mut Vec<Command>) {
        let task = taken.task;
        self.release(1, task.input.encoded_len());
        let receipt = Receipt {
            job: task.job,
            task_index: task.index,
            module: task.module,
            input: task.input.content_id(),
            outcome: TaskOutcome::Failed(kind),
            fuel_used: 0,
            // Nothing ran.
            energy_millijoules: 0,
        };
        self.tasks_done += 1;
        let finished = Finished::Ran {
            receipt,
            stdout: Bounded::default(),
        };
        self.finished(taken.requestor, task.job, finished, commands);
    }

    fn module_ready(&mut self, cid: ContentId, status: ModuleStatus, commands: &mut Vec<Command>) {
        let waiting = self.waiting.remove(&cid).unwrap_or_default();
        self.module_clock += 1;
        let used = self.module_clock;
        match status {
            ModuleStatus::Ready => {
                self.modules.insert(cid, ModuleState::Ready { used });
                for taken in waiting {
                    self.hand(taken, commands);
                }
            }
            ModuleStatus::Invalid(kind) => {
                self.modules
                    .insert(cid, ModuleState::Invalid { kind, used });
                for taken in waiting {
                    self.refused_by_module(taken, kind, commands);
                }
            }
            ModuleStatus::Unavailable(reason) => {
                // Tried again by the next batch that needs it.
                self.modules.remove(&cid);
                for taken in waiting {
                    self.release(1, taken.task.input.encoded_len());
                    let finished = Finished::not_run(taken.task.index, reason.clone());
                    self.finished(taken.requestor, taken.task.job, finished, commands);
                }
            }
        }
        self.drop_modules_over_limit(commands);
    }

    fn drop_modules_over_limit(&mut self, commands: &mut Vec<Command>) {
        while self.modules.len() > MODULES_HELD_MAX {
            let oldest = self
                .modules
                .iter()
                .filter_map(|(cid, state)| match state {
                    ModuleState::Ready { used } | ModuleState::Invalid { used, .. } => {
                        Some((*used, *cid))
                    }
                    ModuleState::Fetching => None,
                })
                .min();
            let Some((_, cid)) = oldest else {
                return;
            };
            if let Some(ModuleState::Ready { .. }) = self.modules.remove(&cid) {
                commands.push(Command::DropModule(cid));
            }
        }
    }

    fn cancel(&mut self, key: TaskKey, commands: &mut Vec<Command>) {
        if self.handed.contains_key(&key) {
            // Skipped by the worker if it has not started; its place is
            // freed when the worker says so.
            commands.push(Command::Cancel {
                job: key.0,
                index: key.1,
            });
            return;
        }
        let (mut tasks_released, mut bytes_released) = (0, 0);
        for waiting in self.waiting.values_mut() {
            waiting.retain(|taken| {
                let keep = (taken.task.job, taken.task.index) != key;
                if !keep {
                    tasks_released += 1;
                    bytes_released += taken.task.input.encoded_len();
                }
                keep
            });
        }
        if let Some(parked) = self.parked.get_mut(&key.0) {
            for parked in parked {
                let mut tasks = std::mem::take(&mut parked.batch.tasks).into_inner();
                tasks.retain(|task| {
                    let keep = task.index != key.1;
                    if !keep {
                        tasks_released += 1;
                        bytes_released += task.input.encoded_len();
                    }
                    keep
                });
                parked.batch.tasks = Bounded::new(tasks).expect("no more than before");
            }
        }
        self.release(tasks_released, bytes_released);
    }

    /// Tasks with `bytes` of input in all are no longer held.
    fn release(&mut self, tasks: usize, bytes: usize) {
        self.held_tasks = self.held_tasks.saturating_sub(tasks);
        self.held_bytes = self.held_bytes.saturating_sub(bytes);
    }

    fn task_done(
        &mut self,
        now_ms: u64,
        key: TaskKey,
        result: RunResult,
        commands: &mut Vec<Command>,
    ) {
        // Only a task handed out, once: nothing else is ever signed; an
        // output kept for anything else is let go at once.
        let Some(handed) = self.handed.remove(&key) else {
            if let Some(output) = kept_output(&result) {
                commands.push(Command::ReleaseOutputs {
                    job: key.0,
                    outputs: vec![output],
                });
            }
            return;
        };
        self.release(1, handed.input_bytes);
        let (outcome, fuel_used, output, energy_millijoules) = match result {
            RunResult::Ran {
                outcome,
                fuel_used,
                output,
                energy_millijoules,
            } => (outcome, fuel_used, output, energy_millijoules),
            RunResult::NotRun { reason } => {
                let finished = Finished::not_run(key.1, reason);
                self.finished(handed.requestor, key.0, finished, commands);
                return;
            }
        };
        self.tasks_done += 1;
        self.fuel_used = self.fuel_used.saturating_add(fuel_used);
        let lies = matches!(
            self.config.cheat,
            Some(Cheat::WrongOutput { honest_first }) if self.tasks_done > honest_first
        );
        let receipt = |outcome| Receipt {
            job: key.0,
            task_index: key.1,
            module: handed.module,
            input: handed.input,
            outcome,
            fuel_used,
            energy_millijoules,
        };
        let finished = match (output, outcome) {
            (RunOutput::Kept { bytes }, TaskOutcome::Completed { exit_code, output }) => {
                let claimed = self.keep_output(
                    now_ms,
                    key.0,
                    handed.requestor,
                    (output, bytes),
                    lies,
                    commands,
                );
                let receipt = receipt(TaskOutcome::Completed {
                    exit_code,
                    output: claimed,
                });
                Finished::Kept { receipt, bytes }
            }
            // Only a completed task has an output to keep: a worker that
            // says otherwise kept nothing.
            (RunOutput::Kept { .. }, failed @ TaskOutcome::Failed(_)) => Finished::Ran {
                receipt: receipt(failed),
                stdout: Bounded::default(),
            },
            (RunOutput::Inline(mut stdout), mut outcome) => {
                if lies && let TaskOutcome::Completed { exit_code, .. } = outcome {
                    stdout.extend_from_slice(b" (forged)");
                    outcome = TaskOutcome::Completed {
                        exit_code,
                        output: ContentId::of(&stdout),
                    };
                }
                let receipt = receipt(outcome);
                match Bounded::new(stdout) {
                    Ok(stdout) => Finished::Ran { receipt, stdout },
                    Err(_) => {
                        Finished::not_run(key.1, "the output is too large to return".to_owned())
                    }
                }
            }
        };
        self.finished(handed.requestor, key.0, finished, commands);
    }

    fn finished(
        &mut self,
        requestor: AccountId,
        job: JobId,
        result: Finished,
        commands: &mut Vec<Command>,
    ) {
        self.outbox
            .entry(requestor)
            .or_default()
            .push_back((job, result));
        self.flush(requestor, 1, commands);
    }

    /// Sends results to `requestor` while fewer than the limit are in
    /// flight, one job's at a time, within a message's bounds.
    fn flush(&mut self, requestor: AccountId, attempt: u32, commands: &mut Vec<Command>) {
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
            let signed = sign(&self.config.key, results.clone());
            self.next_batch += 1;
            let batch = self.next_batch;
            self.sending.insert(
                batch,
                Sending {
                    requestor,
                    job,
                    results,
                    attempt,
                },
            );
            commands.push(Command::SendResults {
                batch,
                requestor,
                results: ResultBatch {
                    job,
                    results: Bounded::new(signed).expect("at most BATCH_TASKS_MAX results"),
                },
            });
        }
    }

    fn results_answered(
        &mut self,
        now_ms: u64,
        batch: BatchId,
        delivered: bool,
        commands: &mut Vec<Command>,
    ) {
        let Some(sending) = self.sending.remove(&batch) else {
            return;
        };
        let requestor = sending.requestor;
        if delivered {
            self.asks.delivered(now_ms, sending.job, requestor);
            self.kept.heard(now_ms, &sending.job, &requestor);
        }
        if let Some(count) = self.in_flight.get_mut(&requestor) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                self.in_flight.remove(&requestor);
            }
        }
        let attempt = sending.attempt + 1;
        if !delivered && attempt <= RESULTS_ATTEMPTS_MAX {
            let outbox = self.outbox.entry(requestor).or_default();
            for result in sending.results.into_iter().rev() {
                outbox.push_front((sending.job, result));
            }
        }
        // Past the last attempt the results are given up: the requestor's
        // lease expires and the tasks go elsewhere.
        self.flush(requestor, if delivered { 1 } else { attempt }, commands);
    }
}

/// Whether a batch from `peer` may run under its job's check.
fn verdict(check: &JobCheck, peer: AccountId, batch: &TaskBatch) -> Result<(), Response> {
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
