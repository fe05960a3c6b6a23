//! The requestor's decisions, without I/O: what to place with whom (through
//! `idlegrid-market`), which results count, what to pay, whom to dispute,
//! and what each task's record says.
//!
//! The shell gives [`RequestorCore::input`] what happens (offers,
//! connections, results, ledger answers, failed deliveries), which answers
//! requests at once and queues the rest for the market; then
//! [`RequestorCore::step`] runs the market once over everything queued and
//! gives what to send, write, pay and dispute. Time is the caller's
//! (microseconds on any clock, used consistently). No sockets, clocks,
//! threads or files, so every rule is tested without a network: a result
//! counts only with a receipt its provider signed for this job's task,
//! module and input; a provider is paid once per task it answered right.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use idlegrid_market::{
    Command as MarketCommand, Decision, Input as MarketInput, JobSpec, JobSummary, Market,
    MarketConfig, Policy,
};
use idlegrid_net::protocol::MODULE_HOLDERS_MAX;
use idlegrid_net::{
    AssignedTask, BATCH_TASKS_MAX, MESSAGE_BYTES_MAX, Request, Response, TaskBatch,
};
use idlegrid_types::codec::Bounded;
use idlegrid_types::{
    AccountId, JobId, Keypair, SignatureCache, SignedVoucher, SplitMix64, TaskOutcome, Voucher,
};

mod disputes;
mod farewell;
mod io;
mod results;

use farewell::Farewells;
use results::{PendingResult, accepted_output};

pub use io::{AcceptedOutput, Command, Input, ReExecution};

use crate::jobspec::{JobFile, Verification};
use crate::report::{ProviderRecord, TaskRecord, TrackRecord};

/// Providers remembered as holders of the job's module.
const MODULE_HOLDERS_KEPT: usize = 16;

/// Names one inbound request until it is answered.
pub type RequestId = u64;

/// How often a provider's stake is read again, microseconds.
pub const STAKE_REFRESH_US: u64 = 30_000_000;
/// Disputes filed against one provider in one job: enough to slash it,
/// without a block of disputes for every task a liar touched.
pub const DISPUTES_PER_PROVIDER_MAX: usize = 3;
/// The end-of-job round's first and longest pause between tries to reach
/// one provider, microseconds.
pub const FAREWELL_RETRY_MIN_US: u64 = 200_000;
pub const FAREWELL_RETRY_MAX_US: u64 = 2_000_000;
/// Tasks of at most this much fuel are re-executed by the requestor itself
/// when their results disagree, unless it is told otherwise (about a
/// minute and a half of one core).
pub const REFEREE_FUEL_DEFAULT: u64 = 100_000_000_000;

/// How the market accepted a task.
#[derive(Debug, Clone, Copy)]
struct Accepted {
    outcome: TaskOutcome,
    fuel_used: u64,
    decision: Decision,
    rechecked: bool,
}

/// Batch signatures of receipts remembered as checked (two generations of
/// this many): each results batch's receipts share one, so this covers the
/// batches in flight many times over, where a validator's default cache
/// would take tens of MiB.
const SIGNATURES_KEPT: usize = 4096;

/// Most task round trips kept for the percentiles `results.json` reports.
pub const ROUND_TRIPS_KEPT: usize = 100_000;

/// What a task reopened had been accepted with.
#[derive(Debug)]
struct Earlier {
    output: Option<String>,
    providers: Vec<AccountId>,
    energy_millijoules: Option<u64>,
}

/// The output id a record shows for an outcome.
fn outcome_output(outcome: TaskOutcome) -> Option<String> {
    match outcome {
        TaskOutcome::Completed { output, .. } => Some(output.to_string()),
        TaskOutcome::Failed(_) => None,
    }
}

/// The requestor's state machine for one job.
#[derive(Debug)]
pub struct RequestorCore {
    key: Keypair,
    job: JobId,
    job_file: Arc<JobFile>,
    market: Market,
    /// Disagreeing tasks of at most this much fuel are re-executed here.
    referee_fuel: u64,
    /// What re-executing a task here gave, until the task is accepted.
    referee_outputs: HashMap<u64, Vec<u8>>,
    /// What accepted tasks reopened were accepted with, until they are
    /// accepted again.
    reopened: HashMap<u64, Earlier>,
    /// Tasks re-executed here so far.
    re_executed: u64,
    /// Tasks the ledger settled, with the signers it slashed for them (not
    /// disputed again).
    settled_by_ledger: HashMap<u64, Vec<AccountId>>,
    /// Market inputs waiting for the next [`RequestorCore::step`].
    queued: Vec<MarketInput>,
    /// Results of undecided tasks.
    pending: HashMap<u64, Vec<PendingResult>>,
    /// Who was sent each undecided task: only their results count, once
    /// each (the market's rule too).
    holders: HashMap<u64, Vec<AccountId>>,
    providers: BTreeMap<AccountId, ProviderRecord>,
    tracks: BTreeMap<AccountId, TrackRecord>,
    /// When each provider's stake was last asked for.
    stake_read_us: HashMap<AccountId, u64>,
    /// The newest voucher owed to each provider, signed or not.
    owed: HashMap<AccountId, Voucher>,
    /// Providers with a voucher on its way; the newest owed is sent when
    /// it lands (a provider stores each before answering, so one at a
    /// time, superseding those that piled up meanwhile).
    vouchers_in_flight: HashSet<AccountId>,
    /// Sequence of the newest voucher sent to each provider.
    vouched: HashMap<AccountId, u64>,
    /// Batch signatures of receipts checked so far: a provider signs the
    /// results it returns together once.
    signatures: SignatureCache,
    disputes_against: HashMap<AccountId, usize>,
    disputes_filed: usize,
    fuel_executed: u64,
    /// Advisory energy of every result that counted, replicas included.
    energy_executed_millijoules: u64,
    failed: u64,
    finished: Option<JobSummary>,
    stalled: bool,
    /// The module's content tree, once a provider asked for it.
    module_tree: Option<Response>,
    /// Providers that returned results, so hold the module: named in
    /// batches to others, which fetch it from them before this requestor.
    module_holders: Vec<AccountId>,
    /// When each undecided task was first assigned.
    assigned_at_us: HashMap<u64, u64>,
    first_placed_us: Option<u64>,
    /// Round trips of tasks accepted: every one, up to
    /// [`ROUND_TRIPS_KEPT`], then a uniform sample of that many.
    round_trips_us: Vec<u64>,
    round_trips_seen: u64,
    sampler: SplitMix64,
    /// The end-of-job round, once begun.
    farewells: Option<Farewells>,
}

impl RequestorCore {
    /// A core for `job`, opened on the ledger from `job_file`; `start` gives
    /// its first commands.
    pub fn new(
        key: Keypair,
        job: JobId,
        job_file: Arc<JobFile>,
        market: MarketConfig,
        referee_fuel: u64,
    ) -> Self {
        let market = Market::new(MarketConfig {
            seed: u64::from_le_bytes(job.as_bytes()[..8].try_into().expect("8 bytes")),
            // A lone result nobody else may check is re-executed here when
            // it can be; otherwise it waits for another provider.
            referee_unanswerable: job_file.limits.fuel <= referee_fuel,
            // The job file's choice of overhead against risk.
            trust: job_file.trust,
            ..market
        })
        // A job of millions of tasks keeps its audit trail on disk.
        .with_audit_logs(crate::audit::FileAuditLog::boxed);
        Self {
            key,
            job,
            job_file,
            market,
            referee_fuel,
            referee_outputs: HashMap::new(),
            reopened: HashMap::new(),
            re_executed: 0,
            settled_by_ledger: HashMap::new(),
            queued: Vec::new(),
            pending: HashMap::new(),
            holders: HashMap::new(),
            providers: BTreeMap::new(),
            tracks: BTreeMap::new(),
            stake_read_us: HashMap::new(),
            owed: HashMap::new(),
            vouchers_in_flight: HashSet::new(),
            vouched: HashMap::new(),
            signatures: SignatureCache::with_generation(SIGNATURES_KEPT),
            disputes_against: HashMap::new(),
            disputes_filed: 0,
            fuel_executed: 0,
            energy_executed_millijoules: 0,
            failed: 0,
            finished: None,
            stalled: false,
            module_tree: None,
            module_holders: Vec::new(),
            assigned_at_us: HashMap::new(),
            first_placed_us: None,
            round_trips_us: Vec::new(),
            round_trips_seen: 0,
            sampler: SplitMix64::new(u64::from_le_bytes(
                job.as_bytes()[8..16].try_into().expect("8 bytes"),
            )),
            farewells: None,
        }
    }

    /// Submits the job to the market.
    pub fn start(&mut self, now_us: u64) -> Vec<Command> {
        let spec = JobSpec {
            id: self.job,
            module: self.job_file.module_cid,
            task_count: self.job_file.task_count(),
            limits: self.job_file.limits,
            price_per_million_fuel: self.job_file.price_per_million_fuel,
            policy: match self.job_file.verification {
                Verification::Adaptive => Policy::Adaptive,
                Verification::Replicas(replicas) => Policy::Replicas(replicas),
            },
            budget: self.job_file.budget,
            input_bytes: self.job_file.input_bytes_max(),
            gpu: idlegrid_types::GpuProgram::decode(&self.job_file.module)
                .and_then(Result::ok)
                .map(|program| program.class),
        };
        self.queued.push(MarketInput::SubmitJob(spec));
        self.step(now_us)
    }

    pub fn job(&self) -> JobId {
        self.job
    }

    /// Every task is decided, or placing more would pass the budget.
    /// Every task is decided, or the budget stops placement and nothing is
    /// in flight: tasks already placed finish and are paid for (their cost
    /// was reserved), and what they cost below their reservation may pay
    /// for more.
    pub fn done(&self) -> bool {
        self.finished.is_some() || (self.stalled && self.market.in_flight_total() == 0)
    }

    /// The job ended with tasks undecided: placing more would pass its
    /// budget.
    pub fn stalled(&self) -> bool {
        self.stalled && self.finished.is_none()
    }

    pub fn summary(&self) -> JobSummary {
        self.finished.unwrap_or_default()
    }

    /// Providers with a live offer, the stake to back it and a connection.
    pub fn offering(&self, now_us: u64) -> usize {
        self.market.offering_count(now_us / 1000)
    }

    pub fn in_flight(&self) -> u64 {
        self.market.in_flight_total()
    }

    /// What holds the job up and what would move it, in words; `None`
    /// while nothing does. Looks at every task: ask now and then.
    pub fn waiting(&self) -> Option<String> {
        if self.done() {
            return None;
        }
        let waiting = self.market.waiting(&self.job)?;
        crate::waiting::explain(
            &waiting,
            self.job_file.limits.fuel,
            self.referee_fuel,
            self.in_flight(),
        )
    }

    /// Fuel of every result that counted, replicas included.
    pub fn fuel_executed(&self) -> u64 {
        self.fuel_executed
    }

    /// Energy receipts stated for every result that counted, replicas
    /// included (advisory).
    pub fn energy_executed_millijoules(&self) -> u64 {
        self.energy_executed_millijoules
    }

    pub fn failed(&self) -> u64 {
        self.failed
    }

    /// What vouchers promise in all.
    pub fn paid(&self) -> u64 {
        self.providers.values().map(|record| record.paid).sum()
    }

    pub fn providers(&self) -> &BTreeMap<AccountId, ProviderRecord> {
        &self.providers
    }

    /// Each provider's results that agreed with the accepted one and that
    /// did not.
    pub fn tracks(&self) -> &BTreeMap<AccountId, TrackRecord> {
        &self.tracks
    }

    /// The newest voucher owed to each provider, signed.
    pub fn owed_vouchers(&self) -> Vec<(AccountId, SignedVoucher)> {
        self.owed
            .iter()
            .map(|(provider, voucher)| (*provider, self.key.sign(voucher.clone())))
            .collect()
    }

    /// The end-of-job round, once the job is done: each paid provider is
    /// given its newest voucher again and then told the job is over (so it
    /// redeems that voucher now), and is tried again (200 ms doubling to
    /// 2 s, and at once when it connects again) until it has taken both.
    /// Gives what to send now; call again as time passes. Nothing goes to
    /// the market any more. The caller bounds the round by the job's
    /// deadline, past which no voucher is redeemed.
    pub fn farewell(&mut self, now_us: u64) -> Vec<Command> {
        self.queued.clear();
        let (key, owed) = (&self.key, &self.owed);
        self.farewells
            .get_or_insert_with(|| Farewells::begin(key, owed, now_us))
            .due(now_us)
    }

    /// Paid providers that have not yet taken their last voucher and the
    /// job's end (all of them before the round begins).
    pub fn farewells_owed(&self) -> usize {
        self.farewells
            .as_ref()
            .map_or(self.owed.len(), Farewells::owed)
    }

    pub fn disputes_filed(&self) -> usize {
        self.disputes_filed
    }

    /// Tasks re-executed here because their results disagreed.
    pub fn re_executed(&self) -> u64 {
        self.re_executed
    }

    /// When the first task was placed, on the caller's clock.
    pub fn first_placed_us(&self) -> Option<u64> {
        self.first_placed_us
    }

    /// Each accepted task's round trip, in the order they were accepted.
    /// Keeps a round trip, or (past [`ROUND_TRIPS_KEPT`]) keeps it in
    /// place of a kept one with the odds that leave every round trip so
    /// far equally likely kept (reservoir sampling).
    fn sample_round_trip(&mut self, round_trip: u64) {
        self.round_trips_seen += 1;
        if self.round_trips_us.len() < ROUND_TRIPS_KEPT {
            self.round_trips_us.push(round_trip);
            return;
        }
        let slot = self.sampler.next_u64() % self.round_trips_seen;
        if let Some(kept) = self.round_trips_us.get_mut(slot as usize) {
            *kept = round_trip;
        }
    }

    /// Task round trips, microseconds: all of them, or a uniform sample of
    /// [`ROUND_TRIPS_KEPT`] in a larger job.
    pub fn round_trips_us(&self) -> &[u64] {
        &self.round_trips_us
    }

    /// Takes what happened; answers requests at once and queues the rest
    /// for the next [`RequestorCore::step`].
    pub fn input(&mut self, now_us: u64, input: Input) -> Vec<Command> {
        let mut commands = Vec::new();
        match input {
            Input::Offer { provider, offer } => {
                let expired = offer.expires_at_ms != 0 && offer.expires_at_ms <= now_us / 1000;
                // An expired offer withdraws the provider (it paused); a
                // live one needs its stake, read again now and then.
                let stale = self
                    .stake_read_us
                    .get(&provider)
                    .is_none_or(|read| now_us.saturating_sub(*read) >= STAKE_REFRESH_US);
                if !expired && stale {
                    self.stake_read_us.insert(provider, now_us);
                    commands.push(Command::ReadStanding(provider));
                }
                // Placement waits for a connection (the overlay dials offer authors).
                self.queued.push(MarketInput::Offer { provider, offer });
            }
            Input::Connected(peer) => {
                if let Some(farewells) = &mut self.farewells {
                    farewells.reconnected(peer, now_us);
                }
                // A provider first heard of by this connection is asked
                // for its offer rather than left to the next gossiped one.
                if !self.stake_read_us.contains_key(&peer) {
                    commands.push(Command::AskOffer(peer));
                }
                self.queued.push(MarketInput::Connected(peer));
            }
            Input::Disconnected(peer) => self.queued.push(MarketInput::Lost(peer)),
            Input::Request { id, peer, request } => {
                let response = self.request(peer, request);
                commands.push(Command::Reply { id, response });
            }
            Input::Standing { provider, standing } => {
                self.queued
                    .push(MarketInput::Standing { provider, standing });
            }
            Input::AssignFailed {
                provider,
                tasks,
                lost,
            } => {
                if lost {
                    self.queued.push(MarketInput::Lost(provider));
                } else {
                    for task in tasks {
                        self.queued.push(MarketInput::ProviderFailed {
                            provider,
                            job: self.job,
                            task,
                        });
                    }
                }
            }
            Input::VoucherAnswered(provider) => {
                self.vouchers_in_flight.remove(&provider);
            }
            Input::FarewellAnswered {
                provider,
                delivered,
            } => {
                if let Some(farewells) = &mut self.farewells {
                    farewells.answered(provider, delivered, now_us);
                }
            }
            Input::ReExecuted { task, result } => {
                let job = self.job;
                match result {
                    Ok(execution) => {
                        if matches!(execution.outcome, TaskOutcome::Completed { .. }) {
                            self.referee_outputs.insert(task, execution.stdout);
                        }
                        self.queued.push(MarketInput::Verdict {
                            job,
                            task,
                            outcome: execution.outcome,
                            fuel_used: execution.fuel_used,
                            output_held: true,
                        });
                    }
                    Err(reason) => {
                        self.queued
                            .push(MarketInput::RefereeFailed { job, task, reason })
                    }
                }
            }
            Input::LedgerVerdict { task, result } => {
                let job = self.job;
                match result {
                    Ok((outcome, fuel_used, wrong)) => {
                        self.settled_by_ledger.insert(task, wrong);
                        self.queued.push(MarketInput::Verdict {
                            job,
                            task,
                            outcome,
                            fuel_used,
                            output_held: false,
                        });
                    }
                    Err(reason) => self.queued.push(MarketInput::RefereeFailed {
                        job,
                        task,
                        reason: format!("the ledger did not settle it: {reason}"),
                    }),
                }
            }
            Input::Tick => self.queued.push(MarketInput::Tick),
        }
        commands
    }

    /// Runs the market over everything queued (one placement and one
    /// voucher per provider for all of it); gives what to do.
    pub fn step(&mut self, now_us: u64) -> Vec<Command> {
        let mut commands = Vec::new();
        if !self.queued.is_empty() {
            let inputs = std::mem::take(&mut self.queued);
            let decided = self.market.handle_all(now_us / 1000, inputs);
            self.apply(now_us, decided, &mut commands);
        }
        self.send_vouchers(&mut commands);
        commands
    }

    fn request(&mut self, peer: AccountId, request: Request) -> Response {
        match request {
            Request::Results(batch) => self.results(peer, batch),
            Request::Content { cid, offset } if cid == self.job_file.module_cid => {
                idlegrid_net::content_chunk(&self.job_file.module, offset)
            }
            // A module's tree is one page (it is at most 8 MiB).
            Request::ContentTree { cid, from: 0 } if cid == self.job_file.module_cid => self
                .module_tree
                .get_or_insert_with(|| idlegrid_net::content_tree(&self.job_file.module, 0))
                .clone(),
            Request::ContentTree { cid, from } if cid == self.job_file.module_cid => {
                idlegrid_net::content_tree(&self.job_file.module, from)
            }
            Request::Content { cid, .. } | Request::ContentTree { cid, .. } => {
                Response::refused("not_found", format!("this requestor does not hold {cid}"))
            }
            Request::NewestVoucher { job } => self.newest_voucher(peer, job),
            other => Response::refused(
                "not_a_provider",
                format!("a requestor does not take `{}` requests", other.name()),
            ),
        }
    }

    /// A provider asks for the newest voucher it is owed (one pushed to it
    /// may have been lost): it gets it signed, and whether the job is over.
    fn newest_voucher(&self, provider: AccountId, job: JobId) -> Response {
        if job != self.job {
            return Response::refused("unknown_job", format!("this requestor runs {}", self.job));
        }
        match self.owed.get(&provider) {
            Some(voucher) => Response::Voucher {
                voucher: Box::new(self.key.sign(voucher.clone())),
                job_done: self.done(),
            },
            None if self.done() => {
                Response::refused("nothing_owed", "the job is over and owes you nothing")
            }
            None => Response::refused("no_voucher", "nothing is owed to you in this job yet"),
        }
    }

    fn apply(&mut self, now_us: u64, decided: Vec<MarketCommand>, commands: &mut Vec<Command>) {
        let mut cancels: HashMap<AccountId, Vec<u64>> = HashMap::new();
        for command in decided {
            match command {
                MarketCommand::Assign {
                    provider, tasks, ..
                } => self.assign(now_us, provider, tasks, commands),
                MarketCommand::Cancel { provider, task, .. } => {
                    cancels.entry(provider).or_default().push(task);
                }
                MarketCommand::Voucher {
                    job,
                    provider,
                    cumulative_amount,
                    cumulative_fuel,
                    sequence,
                } => {
                    let record = self.providers.entry(provider).or_default();
                    record.paid = cumulative_amount;
                    record.fuel_paid = cumulative_fuel;
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
                MarketCommand::Fraud {
                    task,
                    provider,
                    evidence,
                    ..
                } => self.fraud(task, provider, evidence, commands),
                MarketCommand::Referee { task, evidence, .. } => {
                    self.referee(task, evidence, commands)
                }
                MarketCommand::TaskReopened {
                    task,
                    outcome,
                    backers,
                    energy_millijoules,
                    ..
                } => {
                    let earlier = Earlier {
                        output: outcome_output(outcome),
                        providers: backers,
                        energy_millijoules,
                    };
                    self.reopened.insert(task, earlier);
                    commands.push(Command::Reopened { task });
                }
                MarketCommand::TaskAccepted {
                    task,
                    outcome,
                    fuel_used,
                    decision,
                    rechecked,
                    ..
                } => {
                    let accepted = Accepted {
                        outcome,
                        fuel_used,
                        decision,
                        rechecked,
                    };
                    self.accepted(now_us, task, accepted, commands);
                }
                MarketCommand::TaskFailed { task, reason, .. } => {
                    self.settled_by_ledger.remove(&task);
                    self.pending.remove(&task);
                    self.holders.remove(&task);
                    self.referee_outputs.remove(&task);
                    self.reopened.remove(&task);
                    self.assigned_at_us.remove(&task);
                    self.failed += 1;
                    let record = TaskRecord {
                        index: task,
                        status: "failed",
                        exit_code: None,
                        output: None,
                        error: Some(reason),
                        fuel: None,
                        energy_millijoules: None,
                        file: None,
                        offset: None,
                        length: None,
                        providers: Vec::new(),
                        verified: "",
                        rechecked: false,
                    };
                    commands.push(Command::TaskFailed {
                        task,
                        record: Box::new(record),
                    });
                }
                MarketCommand::JobStalled { .. } => {
                    self.stalled = true;
                    commands.push(Command::Stalled);
                }
                MarketCommand::JobFinished { summary, .. } => {
                    self.finished = Some(summary);
                    commands.push(Command::Finished(summary));
                }
            }
        }
        for (provider, tasks) in cancels {
            commands.push(Command::Cancel { provider, tasks });
        }
    }

    fn accepted(
        &mut self,
        now_us: u64,
        task: u64,
        accepted: Accepted,
        commands: &mut Vec<Command>,
    ) {
        let Accepted {
            outcome,
            fuel_used,
            decision,
            rechecked,
        } = accepted;
        let round_trip_us = self
            .assigned_at_us
            .remove(&task)
            .map(|assigned| now_us.saturating_sub(assigned));
        if let Some(round_trip) = round_trip_us
            && !rechecked
        {
            self.sample_round_trip(round_trip);
        }
        self.holders.remove(&task);
        let results = self.pending.remove(&task).unwrap_or_default();
        for (provider, result, ..) in &results {
            let track = self.tracks.entry(*provider).or_default();
            if *result == outcome {
                track.accepted += 1;
            } else {
                track.rejected += 1;
            }
        }
        let mut providers: Vec<AccountId> = results
            .iter()
            .filter(|(_, result, ..)| *result == outcome)
            .map(|(provider, ..)| *provider)
            .collect();
        // The accepted result's energy: the first agreeing receipt's (each
        // replica measured its own; they are not compared).
        let mut energy_millijoules = results
            .iter()
            .find(|(_, result, ..)| *result == outcome)
            .map(|(.., energy)| *energy);
        // Accepted again after a recheck: those who vouched for the same
        // result before still did.
        let earlier = self.reopened.remove(&task);
        let same_as_earlier = earlier
            .as_ref()
            .is_some_and(|earlier| earlier.output == outcome_output(outcome));
        if let Some(earlier) = &earlier
            && same_as_earlier
        {
            energy_millijoules = energy_millijoules.or(earlier.energy_millijoules);
            for provider in &earlier.providers {
                if !providers.contains(provider) {
                    providers.push(*provider);
                }
            }
        }
        self.settled_by_ledger.remove(&task);
        let referee_output = self.referee_outputs.remove(&task);
        let mut record = TaskRecord {
            index: task,
            status: "accepted",
            exit_code: None,
            output: None,
            error: None,
            fuel: Some(fuel_used),
            // Unknown when no provider's result was the accepted one.
            energy_millijoules: Some(energy_millijoules.unwrap_or(0)),
            file: None,
            offset: None,
            length: None,
            providers,
            verified: match decision {
                Decision::Quorum => "quorum",
                Decision::ReExecution => "re-execution",
            },
            rechecked,
        };
        let mut output = None;
        match outcome {
            TaskOutcome::Completed {
                exit_code,
                output: cid,
            } => {
                let file = format!("tasks/{task:06}.out");
                record.exit_code = Some(exit_code);
                record.output = Some(cid.to_string());
                match accepted_output(cid, results, outcome, referee_output) {
                    Some(accepted) => {
                        record.file = Some(file.clone());
                        output = Some((file, accepted));
                    }
                    // Accepted again, on the word of those who vouched for
                    // it before, with the output it had: the output written
                    // then stands (`Command::Accepted` says so).
                    None if same_as_earlier => record.file = Some(file),
                    None => tracing::warn!(task, "accepted with no output at hand to write"),
                }
            }
            TaskOutcome::Failed(kind) => record.error = Some(kind.as_str().to_owned()),
        }
        commands.push(Command::Accepted {
            task,
            output,
            round_trip_us,
            record: Box::new(record),
        });
    }

    /// Packs a provider's assignment into batches within a message's bounds.
    fn assign(
        &mut self,
        now_us: u64,
        provider: AccountId,
        tasks: Vec<u64>,
        commands: &mut Vec<Command>,
    ) {
        let mut batches: Vec<Vec<AssignedTask>> = vec![Vec::new()];
        let mut bytes = 0;
        for task in tasks {
            let Some(input) = self.job_file.task(task) else {
                continue;
            };
            let size = 8 + input.encoded_len();
            let current = batches.last_mut().expect("never empty");
            if !current.is_empty()
                && (bytes + size > MESSAGE_BYTES_MAX / 2 || current.len() == BATCH_TASKS_MAX)
            {
                batches.push(Vec::new());
                bytes = 0;
            }
            bytes += size;
            batches
                .last_mut()
                .expect("never empty")
                .push(AssignedTask { index: task, input });
        }
        self.first_placed_us.get_or_insert(now_us);
        for tasks in batches.into_iter().filter(|batch| !batch.is_empty()) {
            for task in &tasks {
                self.assigned_at_us.entry(task.index).or_insert(now_us);
                let holders = self.holders.entry(task.index).or_default();
                if !holders.contains(&provider) {
                    holders.push(provider);
                }
            }
            // The newest holders first: the likeliest to be reachable.
            let module_holders: Vec<AccountId> = self
                .module_holders
                .iter()
                .rev()
                .filter(|holder| **holder != provider)
                .take(MODULE_HOLDERS_MAX)
                .copied()
                .collect();
            commands.push(Command::SendTasks {
                provider,
                batch: TaskBatch {
                    job: self.job,
                    module: self.job_file.module_cid,
                    module_holders: Bounded::new(module_holders)
                        .expect("at most MODULE_HOLDERS_MAX"),
                    limits: self.job_file.limits,
                    wall_time_ms: self.job_file.wall_time_secs.saturating_mul(1000),
                    price_per_million_fuel: self.job_file.price_per_million_fuel,
                    tasks: Bounded::new(tasks).expect("at most BATCH_TASKS_MAX"),
                },
            });
        }
    }

    /// Sends each provider the newest voucher it is owed, unless one is
    /// on its way already.
    fn send_vouchers(&mut self, commands: &mut Vec<Command>) {
        for (provider, voucher) in &self.owed {
            let sent = self.vouched.get(provider).copied().unwrap_or(0);
            if voucher.sequence <= sent || self.vouchers_in_flight.contains(provider) {
                continue;
            }
            self.vouched.insert(*provider, voucher.sequence);
            self.vouchers_in_flight.insert(*provider);
            commands.push(Command::SendVoucher {
                provider: *provider,
                voucher: self.key.sign(voucher.clone()),
            });
        }
    }
}
