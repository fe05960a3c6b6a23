//! The state machine: offer book, placement, leases, verification, payment.
//!
//! The records and placement live here; lease bookkeeping is in `lease`
//! and deciding and paying for results in `verify`.

pub(crate) mod audit;
mod lease;
mod verify;

pub use verify::spot_check_permille;

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};

use idlegrid_types::{AccountId, GpuClass, GpuOffer, JobId, Offer, SignedReceipt, TaskOutcome};

use crate::types::{
    Command, Input, JobSpec, JobSummary, MarketConfig, Millis, Policy, Stall, Standing, Waiting,
};
use idlegrid_types::SplitMix64;

type ProviderIndex = u32;

/// Pending replicas looked at per placement before the job waits.
const PENDING_SCAN_MAX: usize = 32;

/// Whether a result that arrives after its lease ended still counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Late {
    /// The lease timed out; the provider may still deliver.
    Counts,
    /// The provider disconnected; its work on the task is gone.
    Ignored,
}

/// Ready providers ordered best first: (expected ms per task including
/// queue and failures, price floor, index).
type RankKey = (u64, u64, ProviderIndex);

#[derive(Debug)]
struct Provider {
    id: AccountId,
    offer: Option<Offer>,
    standing: Standing,
    /// Value of its results accepted on its word alone in jobs still
    /// running (a catch re-checks them): never more than its stake's cover.
    exposed: u64,
    connected: bool,
    in_flight: u32,
    /// Consecutive results that matched the accepted one, here.
    streak: u32,
    failures: u32,
    /// A re-execution showed one of its results wrong: it gets no more work
    /// and its word counts for nothing, here or in tasks it vouched for.
    caught: bool,
    rank: Option<RankKey>,
    /// Tasks whose lease it let expire and may still answer late.
    late: Vec<(JobId, u64)>,
}

impl Provider {
    /// Results of validated history: its streak here, plus what the ledger
    /// says requestors paid it for (in tasks of `fuel_per_task`) when no
    /// dispute ever went against it.
    fn history(&self, fuel_per_task: Option<u64>) -> u32 {
        let carried = match fuel_per_task {
            Some(fuel) if self.standing.disputes_lost == 0 && self.standing.jobs_paid > 0 => {
                u32::try_from(self.standing.fuel_paid / fuel.max(1)).unwrap_or(u32::MAX)
            }
            _ => 0,
        };
        self.streak.saturating_add(carried)
    }

    /// Tasks it may hold at once: `tasks_per_core` per core, more (up to
    /// `tasks_per_core_max`) when tasks are known to be short, never more
    /// than its offer's concurrency.
    fn capacity(&self, config: &MarketConfig, fuel_per_task: Option<u64>) -> u32 {
        self.offer.as_ref().map_or(0, |offer| {
            let floor = config.tasks_per_core.max(1);
            let per_core = fuel_per_task.map_or(floor, |fuel| {
                let ahead = u128::from(config.pipeline_ms) * u128::from(self.benchmark())
                    / 1_000
                    / u128::from(fuel.max(1));
                u32::try_from(ahead)
                    .unwrap_or(u32::MAX)
                    .clamp(floor, config.tasks_per_core_max.max(floor))
            });
            let window = offer.cores.max(1).saturating_mul(per_core);
            window.min(offer.concurrency.max(1)).max(1)
        })
    }

    /// Its speed as placement counts it: what its offer says, but no more
    /// than the chain's challenges let it count on.
    fn benchmark(&self) -> u64 {
        let offered = self
            .offer
            .as_ref()
            .map_or(1, |offer| offer.benchmark_fuel_per_second.max(1));
        match self.standing.usable_fuel_per_second {
            0 => offered,
            usable => offered.min(usable),
        }
    }

    /// Its speed for a task of `job`: its GPU's (as the chain's GPU
    /// challenges let it count on) for a GPU task, else [`Self::benchmark`].
    fn speed_for(&self, job: &JobSpec) -> u64 {
        if job.gpu.is_none() {
            return self.benchmark();
        }
        let offered = self
            .offer
            .as_ref()
            .and_then(|offer| offer.gpu.as_ref())
            .map_or(1, |gpu| gpu.fuel_per_second.max(1));
        match self.standing.usable_gpu_fuel_per_second {
            0 => offered,
            usable => offered.min(usable),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TaskStatus {
    Open,
    Accepted,
    Failed,
}

#[derive(Debug)]
struct Received {
    provider: ProviderIndex,
    /// The provider had a validated result behind it (a positive streak)
    /// when this one arrived.
    vouched: bool,
    outcome: TaskOutcome,
    fuel_used: u64,
    receipt: Option<Box<SignedReceipt>>,
    /// Its payment is owed already (a task reopened keeps what it paid).
    paid: bool,
}

#[derive(Debug)]
struct Task {
    status: TaskStatus,
    /// Matching results needed to accept.
    quorum: u8,
    running: Vec<(ProviderIndex, Millis)>,
    /// Providers whose lease expired; their late result still counts.
    expired: Vec<ProviderIndex>,
    results: Vec<Received>,
    /// Replicas waiting in the job's pending queue.
    queued: u8,
    attempts: u32,
    /// Assignments whose cost is still reserved against the budget.
    reserved: u32,
    /// Waiting for a re-execution's verdict.
    refereeing: bool,
    /// What re-execution gave, once known.
    verdict: Option<(TaskOutcome, u64)>,
    /// The verdict's output is held by the caller.
    output_held: bool,
    /// Times it was reopened after a backer was caught.
    reopened: u8,
}

impl Task {
    fn new(quorum: u8, reopened: u8) -> Self {
        Task {
            status: TaskStatus::Open,
            quorum,
            running: Vec::new(),
            expired: Vec::new(),
            results: Vec::new(),
            queued: 0,
            attempts: 0,
            reserved: 0,
            refereeing: false,
            verdict: None,
            output_held: false,
            reopened,
        }
    }

    /// Providers that hold a replica, let one expire, or answered.
    fn holders(&self) -> Vec<ProviderIndex> {
        self.running
            .iter()
            .map(|(index, _)| *index)
            .chain(self.expired.iter().copied())
            .chain(self.results.iter().map(|result| result.provider))
            .collect()
    }
}

/// A job's tasks, kept only while undecided: a task nobody was given yet
/// is a number past `fresh`, and a decided one is a bit.
#[derive(Debug)]
struct Tasks {
    /// Tasks placed at least once and not decided.
    open: HashMap<u64, Task>,
    /// Tasks from here on were never placed.
    fresh: u64,
    count: u64,
    /// One bit per task: decided.
    decided: Vec<u64>,
    /// Times each task that was ever reopened was (decided ones too).
    reopened: HashMap<u64, u8>,
}

impl Tasks {
    fn new(count: u64) -> Self {
        Tasks {
            open: HashMap::new(),
            fresh: 0,
            count,
            decided: vec![0; usize::try_from(count.div_ceil(64)).unwrap_or(0)],
            reopened: HashMap::new(),
        }
    }

    fn get(&self, task: u64) -> Option<&Task> {
        self.open.get(&task)
    }

    fn get_mut(&mut self, task: u64) -> Option<&mut Task> {
        self.open.get_mut(&task)
    }

    fn is_decided(&self, task: u64) -> bool {
        self.decided
            .get((task / 64) as usize)
            .is_some_and(|word| word & (1 << (task % 64)) != 0)
    }

    fn set_decided(&mut self, task: u64, decided: bool) {
        if let Some(word) = self.decided.get_mut((task / 64) as usize) {
            if decided {
                *word |= 1 << (task % 64);
            } else {
                *word &= !(1 << (task % 64));
            }
        }
    }

    /// Forgets a decided task but for its bit.
    fn close(&mut self, task: u64) {
        if let Some(closed) = self.open.remove(&task)
            && closed.reopened > 0
        {
            self.reopened.insert(task, closed.reopened);
        }
        self.set_decided(task, true);
    }
}

#[derive(Debug)]
struct Job {
    spec: JobSpec,
    tasks: Tasks,
    /// Replicas waiting to be placed, of tasks already opened; tasks past
    /// `tasks.fresh` join it as it runs low.
    pending: VecDeque<u64>,
    /// Cost reserved for one assignment: the task fuel limit at the job price.
    cost_per_assignment: u64,
    reserved: u64,
    paid: u64,
    owed: HashMap<ProviderIndex, (u64, u64, u64)>,
    /// Tasks accepted on providers' word, for audits when one is caught.
    audit: Box<dyn audit::AuditLog>,
    /// Value accepted on each provider's word alone (its share of the
    /// provider's `exposed`, released when the job finishes).
    exposed: HashMap<ProviderIndex, u64>,
    decided: u64,
    stalled: bool,
    summary: JobSummary,
}

impl Job {
    /// Matching results a task needs at first.
    fn quorum(&self) -> u8 {
        match self.spec.policy {
            Policy::Replicas(count) => count.max(1),
            Policy::Adaptive => 1,
        }
    }

    /// The task of the pending replica at `position`, opening tasks never
    /// placed until there is one; `None` past the last.
    fn pending_at(&mut self, position: usize) -> Option<u64> {
        while position >= self.pending.len() {
            let task = self.tasks.fresh;
            if task >= self.tasks.count {
                return None;
            }
            self.tasks.fresh += 1;
            let quorum = self.quorum();
            let mut opened = Task::new(quorum, 0);
            opened.queued = quorum;
            self.tasks.open.insert(task, opened);
            for _ in 0..quorum {
                self.pending.push_back(task);
            }
        }
        self.pending.get(position).copied()
    }
}

/// Cost of `fuel` at `price` per million, rounded up.
/// Whether `offer` may run `job`'s tasks at all: a GPU job needs a GPU
/// offered at or below the job's price.
pub(crate) fn serves(offer: &Offer, job: &JobSpec) -> bool {
    job.gpu.is_none()
        || offer
            .gpu
            .as_ref()
            .is_some_and(|gpu| gpu.price_floor_per_million_fuel <= job.price_per_million_fuel)
}

fn cost(fuel: u64, price_per_million_fuel: u64) -> u64 {
    let product = u128::from(fuel) * u128::from(price_per_million_fuel);
    u64::try_from(product.div_ceil(1_000_000)).unwrap_or(u64::MAX)
}

/// The scheduler and verifier of one requestor node.
#[derive(Debug)]
pub struct Market {
    config: MarketConfig,
    rng: SplitMix64,
    providers: Vec<Provider>,
    index: HashMap<AccountId, ProviderIndex>,
    ready: BTreeSet<RankKey>,
    offer_expiry: BTreeSet<(Millis, ProviderIndex)>,
    leases: BTreeSet<(Millis, ProviderIndex, JobId, u64)>,
    /// The same leases by provider, to drop a lost provider's quickly.
    leases_by_provider: BTreeSet<(ProviderIndex, Millis, JobId, u64)>,
    jobs: BTreeMap<JobId, Job>,
    /// Totals of finished jobs (the jobs themselves are dropped).
    finished: HashMap<JobId, JobSummary>,
    /// Providers owed a new voucher after the current input.
    dirty: BTreeSet<(JobId, ProviderIndex)>,
    /// Fuel a task has used, on average over recent results (none yet:
    /// providers get the least window).
    fuel_per_task: Option<u64>,
    /// Makes each job's audit log.
    audit_logs: audit::AuditLogs,
}

impl Market {
    pub fn new(config: MarketConfig) -> Self {
        Self {
            rng: SplitMix64::new(config.seed),
            config,
            providers: Vec::new(),
            index: HashMap::new(),
            ready: BTreeSet::new(),
            offer_expiry: BTreeSet::new(),
            leases: BTreeSet::new(),
            leases_by_provider: BTreeSet::new(),
            jobs: BTreeMap::new(),
            finished: HashMap::new(),
            dirty: BTreeSet::new(),
            fuel_per_task: None,
            audit_logs: audit::MemoryAuditLog::boxed,
        }
    }

    /// Keeps each job's audit trail (tasks accepted on providers' word,
    /// read again only when one of them is caught) where `logs` makes it,
    /// rather than in memory.
    pub fn with_audit_logs(mut self, logs: audit::AuditLogs) -> Self {
        self.audit_logs = logs;
        self
    }

    /// Providers in the book.
    pub fn provider_count(&self) -> usize {
        self.providers.len()
    }

    /// Providers in the book with an offer that has not expired at `now_ms`
    /// (a connected peer that offers nothing is not one).
    pub fn offering_count(&self, now_ms: u64) -> usize {
        self.providers
            .iter()
            .filter(|provider| {
                provider
                    .offer
                    .as_ref()
                    .is_some_and(|offer| offer.expires_at_ms > now_ms)
            })
            .count()
    }

    /// Tasks a provider holds now.
    pub fn in_flight(&self, provider: &AccountId) -> u32 {
        self.index
            .get(provider)
            .map_or(0, |index| self.providers[*index as usize].in_flight)
    }

    /// Tasks all providers hold now.
    pub fn in_flight_total(&self) -> u64 {
        self.providers
            .iter()
            .map(|provider| u64::from(provider.in_flight))
            .sum()
    }

    /// What a provider may hold at once.
    pub fn window(&self, provider: &AccountId) -> u32 {
        self.index.get(provider).map_or(0, |index| {
            self.providers[*index as usize].capacity(&self.config, self.fuel_per_task)
        })
    }

    /// A job's totals so far.
    pub fn summary(&self, job: &JobId) -> Option<JobSummary> {
        self.jobs
            .get(job)
            .map(|job| job.summary)
            .or_else(|| self.finished.get(job).copied())
    }

    /// Cost reserved plus paid for a job (never above its budget).
    pub fn committed(&self, job: &JobId) -> Option<u64> {
        self.jobs
            .get(job)
            .map(|job| job.reserved + job.paid)
            .or_else(|| self.finished.get(job).map(|summary| summary.paid))
    }

    /// What an unfinished job waits for (`None`: no such job running).
    /// Looks at every task: meant for a caller that asks now and then.
    pub fn waiting(&self, job_id: &JobId) -> Option<Waiting> {
        let job = self.jobs.get(job_id)?;
        let ready: Vec<ProviderIndex> = self
            .providers
            .iter()
            .enumerate()
            .filter(|(_, provider)| {
                provider.connected
                    && !provider.caught
                    && provider.offer.is_some()
                    && provider.standing.stake >= self.config.minimum_stake
            })
            .map(|(index, _)| index as ProviderIndex)
            .collect();
        let quorum = u64::from(job.quorum());
        let mut waiting = Waiting {
            pending: job.pending.len() as u64 + (job.tasks.count - job.tasks.fresh) * quorum,
            providers_ready: ready.len() as u64,
            budget_spent: job.stalled,
            ..Waiting::default()
        };
        for task in job.tasks.open.values() {
            if task.status != TaskStatus::Open {
                continue;
            }
            if task.refereeing {
                waiting.refereeing += 1;
                continue;
            }
            let idle = task.running.is_empty() && !task.results.is_empty();
            let checkable = ready.iter().any(|index| {
                !task.results.iter().any(|result| result.provider == *index)
                    && !task.expired.contains(index)
            });
            if idle && !checkable {
                waiting.second_opinion += 1;
            }
        }
        Some(waiting)
    }

    /// Applies one input at time `now` and returns what to do.
    pub fn handle(&mut self, now: Millis, input: Input) -> Vec<Command> {
        self.handle_all(now, [input])
    }

    /// Applies several inputs that arrived together (a batch of results),
    /// then places work and pays once: one voucher per provider and
    /// batches as large as the windows allow, where input by input would
    /// give one of each per result.
    pub fn handle_all(
        &mut self,
        now: Millis,
        inputs: impl IntoIterator<Item = Input>,
    ) -> Vec<Command> {
        let mut commands = Vec::new();
        for input in inputs {
            self.input(now, input, &mut commands);
        }
        self.dispatch(now, &mut commands);
        self.emit_vouchers(&mut commands);
        // A finished job has paid its last vouchers: only its totals stay.
        for command in &commands {
            if let Command::JobFinished { job, summary } = command {
                // What was accepted on one provider's word is final now.
                if let Some(finished) = self.jobs.remove(job) {
                    for (index, value) in finished.exposed {
                        let provider = &mut self.providers[index as usize];
                        provider.exposed = provider.exposed.saturating_sub(value);
                    }
                }
                self.finished.insert(*job, *summary);
            }
        }
        commands
    }

    fn input(&mut self, now: Millis, input: Input, commands: &mut Vec<Command>) {
        match input {
            Input::Offer { provider, offer } => self.offer(now, provider, offer),
            Input::Standing { provider, standing } => {
                if let Some(index) = self.provider_index(provider) {
                    self.providers[index as usize].standing = standing;
                    self.rerank(now, index);
                }
            }
            Input::Connected(provider) => {
                if let Some(index) = self.provider_index(provider) {
                    self.providers[index as usize].connected = true;
                    self.rerank(now, index);
                }
            }
            Input::Lost(provider) => {
                if let Some(&index) = self.index.get(&provider) {
                    self.providers[index as usize].connected = false;
                    self.rerank(now, index);
                    let held: Vec<_> = self
                        .leases_by_provider
                        .range((index, 0, JobId::from_bytes([0; 32]), 0)..)
                        .take_while(|lease| lease.0 == index)
                        .map(|&(index, deadline, job, task)| (deadline, index, job, task))
                        .collect();
                    for lease in held {
                        self.expire(now, lease, Late::Ignored, commands);
                    }
                    // Late results it owed are not coming either.
                    for (job_id, task_index) in
                        std::mem::take(&mut self.providers[index as usize].late)
                    {
                        if let Some(job) = self.jobs.get_mut(&job_id)
                            && let Some(task) = job.tasks.get_mut(task_index)
                            && let Some(position) =
                                task.expired.iter().position(|held| *held == index)
                        {
                            task.expired.swap_remove(position);
                            Self::release_reservation(job, task_index);
                        }
                    }
                }
            }
            Input::SubmitJob(spec) => self.submit(spec),
            Input::Result {
                provider,
                job,
                task,
                result,
            } => self.result(now, provider, job, task, result, commands),
            Input::ProviderFailed {
                provider,
                job,
                task,
            } => self.provider_failed(now, provider, job, task, commands),
            Input::Budget { job, budget } => {
                if let Some(record) = self.jobs.get_mut(&job) {
                    record.spec.budget = budget;
                    record.stalled = false;
                }
            }
            Input::Verdict {
                job,
                task,
                outcome,
                fuel_used,
                output_held,
            } => self.verdict(now, job, task, (outcome, fuel_used), output_held, commands),
            Input::RefereeFailed { job, task, reason } => {
                let reason = format!("it could not be re-executed: {reason}");
                self.fail_task(now, job, task, &reason, commands);
            }
            Input::Tick => self.tick(now, commands),
        }
    }

    fn provider_index(&mut self, provider: AccountId) -> Option<ProviderIndex> {
        if let Some(&index) = self.index.get(&provider) {
            return Some(index);
        }
        if self.providers.len() >= self.config.offers_max {
            return None;
        }
        let index = u32::try_from(self.providers.len()).ok()?;
        self.providers.push(Provider {
            id: provider,
            offer: None,
            standing: Standing::default(),
            exposed: 0,
            connected: false,
            in_flight: 0,
            streak: 0,
            failures: 0,
            caught: false,
            rank: None,
            late: Vec::new(),
        });
        self.index.insert(provider, index);
        Some(index)
    }

    fn offer(&mut self, now: Millis, provider: AccountId, offer: Offer) {
        if offer.expires_at_ms <= now {
            return;
        }
        let Some(index) = self.provider_index(provider) else {
            return;
        };
        let record = &mut self.providers[index as usize];
        if let Some(current) = &record.offer {
            if current.sequence >= offer.sequence {
                return;
            }
            self.offer_expiry.remove(&(current.expires_at_ms, index));
        }
        self.offer_expiry.insert((offer.expires_at_ms, index));
        record.offer = Some(offer);
        self.rerank(now, index);
    }

    /// Recomputes whether and where a provider stands in the ready set.
    fn rerank(&mut self, now: Millis, index: ProviderIndex) {
        let provider = &mut self.providers[index as usize];
        if let Some(key) = provider.rank.take() {
            self.ready.remove(&key);
        }
        let Some(offer) = &provider.offer else {
            return;
        };
        let eligible = provider.connected
            && !provider.caught
            && provider.standing.stake >= self.config.minimum_stake
            && offer.expires_at_ms > now
            && provider.in_flight < provider.capacity(&self.config, self.fuel_per_task);
        if !eligible {
            return;
        }
        // Expected milliseconds until one more task would finish, per
        // billion fuel, slowed by past failures.
        let queue = u64::from(provider.in_flight) + 1;
        let expected = queue * 1_000_000_000_000 / provider.benchmark()
            * (1 + u64::from(provider.failures.min(100)));
        let key = (expected, offer.price_floor_per_million_fuel, index);
        provider.rank = Some(key);
        self.ready.insert(key);
    }

    fn submit(&mut self, spec: JobSpec) {
        if self.jobs.contains_key(&spec.id) || self.finished.contains_key(&spec.id) {
            return;
        }
        let tasks = Tasks::new(spec.task_count);
        let cost_per_assignment = cost(spec.limits.fuel, spec.price_per_million_fuel);
        self.jobs.insert(
            spec.id,
            Job {
                spec,
                tasks,
                pending: VecDeque::new(),
                cost_per_assignment,
                reserved: 0,
                paid: 0,
                owed: HashMap::new(),
                audit: (self.audit_logs)(),
                exposed: HashMap::new(),
                decided: 0,
                stalled: false,
                summary: JobSummary::default(),
            },
        );
    }

    /// Fills free provider windows with pending tasks, jobs taking turns.
    fn dispatch(&mut self, now: Millis, commands: &mut Vec<Command>) {
        let mut batches: BTreeMap<(ProviderIndex, JobId), (Vec<u64>, Millis)> = BTreeMap::new();
        let job_ids: Vec<JobId> = self.jobs.keys().copied().collect();
        if self.ready.is_empty() {
            // Nobody to place with: replicas nobody in the book may ever
            // take (every provider caught, or asked) go to a referee now
            // rather than wait for a provider that will not come.
            for job_id in &job_ids {
                self.referee_stranded(*job_id, commands);
            }
        }
        let mut active = job_ids;
        while !active.is_empty() && !self.ready.is_empty() {
            let mut next_round = Vec::new();
            for job_id in active {
                if self.place_one(now, job_id, &mut batches, commands) {
                    next_round.push(job_id);
                }
            }
            active = next_round;
        }
        for ((index, job), (tasks, deadline)) in batches {
            let provider = self.providers[index as usize].id;
            for chunk in tasks.chunks(self.config.batch_tasks_max.max(1)) {
                commands.push(Command::Assign {
                    provider,
                    job,
                    tasks: chunk.to_vec(),
                    lease_deadline_ms: deadline,
                });
            }
        }
    }

    /// Sends to a referee the job's next pending replicas that no provider
    /// in the book may ever take.
    fn referee_stranded(&mut self, job_id: JobId, commands: &mut Vec<Command>) {
        let mut position = 0;
        while position < PENDING_SCAN_MAX {
            let Some(task_index) = self
                .jobs
                .get_mut(&job_id)
                .and_then(|job| job.pending_at(position))
            else {
                return;
            };
            if !self.stranded(job_id, task_index) {
                position += 1;
                continue;
            }
            self.strand(job_id, position, commands);
        }
    }

    /// Whether a task's pending replicas can never be placed: nothing of it
    /// is under way (a result still coming could settle it) and no provider
    /// in the book may take it.
    fn stranded(&self, job_id: JobId, task_index: u64) -> bool {
        if !self.config.referee_unanswerable {
            return false;
        }
        let running = self
            .jobs
            .get(&job_id)
            .and_then(|job| job.tasks.get(task_index))
            .is_some_and(|task| !task.running.is_empty());
        !running && !self.could_answer(job_id, task_index)
    }

    /// Drops the pending replica at `position`, which nobody may take; its
    /// task goes to a referee once nothing else is under way for it.
    fn strand(&mut self, job_id: JobId, position: usize, commands: &mut Vec<Command>) {
        let Some(job) = self.jobs.get_mut(&job_id) else {
            return;
        };
        let Some(task_index) = job.pending.remove(position) else {
            return;
        };
        let Some(task) = job.tasks.get_mut(task_index) else {
            return;
        };
        task.queued = task.queued.saturating_sub(1);
        if task.status == TaskStatus::Open && task.queued == 0 && task.running.is_empty() {
            self.referee_unanswerable(job_id, task_index, commands);
        }
    }

    /// The best ready provider that may run a replica of this task: within
    /// the job's price, offering the memory its tasks may use (and a GPU
    /// for a GPU job), not already holding or having answered it, not of an
    /// operator that did.
    fn candidate(&self, job_id: JobId, task_index: u64) -> Option<ProviderIndex> {
        let job = self.jobs.get(&job_id)?;
        let task = job.tasks.get(task_index)?;
        let price = job.spec.price_per_million_fuel;
        let memory = job.spec.limits.memory_bytes;
        let holders = task.holders();
        let same_class = self.pinned_class(job, &holders);
        let operators: Vec<AccountId> = holders
            .iter()
            .filter_map(|index| {
                self.providers[*index as usize]
                    .offer
                    .as_ref()
                    .and_then(|offer| offer.operator)
            })
            .collect();
        self.ready
            .iter()
            .take(self.config.candidates_per_placement_max)
            .find(|(_, price_floor, index)| {
                let provider = &self.providers[*index as usize];
                let operator = provider.offer.as_ref().and_then(|offer| offer.operator);
                let fits = provider
                    .offer
                    .as_ref()
                    .is_some_and(|offer| offer.memory_bytes >= memory && serves(offer, &job.spec));
                (job.spec.gpu.is_some() || *price_floor <= price)
                    && fits
                    && same_class.is_none_or(|first| {
                        provider
                            .offer
                            .as_ref()
                            .and_then(|offer| offer.gpu.as_ref())
                            .is_some_and(|gpu| gpu.same_class(first))
                    })
                    && !holders.contains(index)
                    && operator.is_none_or(|operator| !operators.contains(&operator))
            })
            .map(|(_, _, index)| *index)
    }

    /// The class of GPU a `class` task's replicas must all run on: the one
    /// its first holder in `holders` offers. `None` for other tasks, and
    /// before any replica was placed.
    fn pinned_class(&self, job: &Job, holders: &[ProviderIndex]) -> Option<&GpuOffer> {
        if job.spec.gpu != Some(GpuClass::Class) {
            return None;
        }
        let first = holders.first()?;
        self.providers[*first as usize]
            .offer
            .as_ref()
            .and_then(|offer| offer.gpu.as_ref())
    }

    /// Places the first placeable replica among the job's next pending ones;
    /// false when the job can place nothing more now. A replica no ready
    /// provider may take (they all tried that task) is passed over, not
    /// allowed to block the queue behind it.
    fn place_one(
        &mut self,
        now: Millis,
        job_id: JobId,
        batches: &mut BTreeMap<(ProviderIndex, JobId), (Vec<u64>, Millis)>,
        commands: &mut Vec<Command>,
    ) -> bool {
        let mut chosen = None;
        let mut position = 0;
        while position < PENDING_SCAN_MAX {
            let Some(job) = self.jobs.get_mut(&job_id) else {
                return false;
            };
            let Some(task_index) = job.pending_at(position) else {
                return false;
            };
            let placeable = match job.tasks.get_mut(task_index) {
                Some(task) if task.status == TaskStatus::Open => {
                    let placeable = !task.refereeing && task.queued > 0;
                    if !placeable {
                        task.queued = task.queued.saturating_sub(1);
                    }
                    placeable
                }
                _ => false,
            };
            if !placeable {
                // Decided, or a verdict will decide it (what it needs then
                // is queued anew), or left over from before it was decided
                // and reopened.
                job.pending.remove(position);
                continue;
            }
            if job.paid + job.reserved + job.cost_per_assignment > job.spec.budget {
                if !job.stalled {
                    job.stalled = true;
                    commands.push(Command::JobStalled {
                        job: job_id,
                        reason: Stall::Budget,
                    });
                }
                return false;
            }
            if let Some(index) = self.candidate(job_id, task_index) {
                chosen = Some((position, task_index, index));
                break;
            }
            if self.stranded(job_id, task_index) {
                // No provider in the book may ever take this replica (all
                // caught, or all asked already): a re-execution decides.
                self.strand(job_id, position, commands);
                continue;
            }
            position += 1;
        }
        let Some((position, task_index, index)) = chosen else {
            return false;
        };
        let Some(job) = self.jobs.get_mut(&job_id) else {
            return false;
        };
        let Some(task) = job.tasks.open.get_mut(&task_index) else {
            return false;
        };
        let provider = &mut self.providers[index as usize];
        // Tasks queued ahead of this one on each of its cores.
        let ahead = u64::from(provider.in_flight)
            / u64::from(
                provider
                    .offer
                    .as_ref()
                    .map_or(1, |offer| offer.cores.max(1)),
            );
        provider.in_flight += 1;
        let run_ms = job.spec.limits.fuel.saturating_mul(1_000) / provider.speed_for(&job.spec);
        let fetch_ms = job.spec.input_bytes.saturating_mul(1_000)
            / self.config.lease_input_bytes_per_second.max(1);
        let deadline = now
            .saturating_add(
                run_ms
                    .saturating_mul(ahead + 1)
                    .saturating_mul(self.config.lease_factor),
            )
            .saturating_add(fetch_ms)
            .saturating_add(self.config.lease_base_ms);
        job.pending.remove(position);
        task.queued = task.queued.saturating_sub(1);
        task.running.push((index, deadline));
        task.reserved += 1;
        job.reserved += job.cost_per_assignment;
        self.leases.insert((deadline, index, job_id, task_index));
        self.leases_by_provider
            .insert((index, deadline, job_id, task_index));
        let batch = batches
            .entry((index, job_id))
            .or_insert_with(|| (Vec::new(), deadline));
        batch.0.push(task_index);
        batch.1 = batch.1.max(deadline);
        self.rerank(now, index);
        true
    }
}
