//! The state machine: offer book, placement, leases, verification, payment.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};

use idlegrid_types::{
    AccountId, ContentId, ExecutionLimits, JobId, Offer, SignedReceipt, TaskOutcome,
};

use crate::rng::SplitMix64;

/// Milliseconds; whatever clock the caller uses, consistently.
pub type Millis = u64;

/// How the market behaves. Every bound is here, with its unit in its name.
#[derive(Debug, Clone)]
pub struct MarketConfig {
    /// Stake a provider needs before it gets work.
    pub minimum_stake: u64,
    /// Most offers (providers) the book holds.
    pub offers_max: usize,
    /// Tasks in flight per core of a provider, at least.
    pub tasks_per_core: u32,
    /// Tasks in flight per core of a provider, at most. Between the two,
    /// a provider is sent enough to keep each core busy for `pipeline_ms`
    /// (judged by the fuel the job's tasks have used so far and the
    /// provider's benchmark), so that short tasks do not leave it idle
    /// while results and new batches cross the network.
    pub tasks_per_core_max: u32,
    /// Work per core a provider is given ahead, milliseconds.
    pub pipeline_ms: Millis,
    /// Most tasks sent to a provider in one batch.
    pub batch_tasks_max: usize,
    /// A lease lasts the task's expected run time times this, plus the base.
    pub lease_factor: u64,
    pub lease_base_ms: Millis,
    /// Provider failures (crash, timeout) a task survives before it fails.
    pub attempts_max: u32,
    /// Most results collected for one task while its replicas disagree.
    pub replicas_max: u32,
    /// Consecutive valid results before a provider's results may be trusted alone.
    pub trust_history_min: u32,
    /// The lowest spot-check probability for a trusted provider, per mille.
    pub spot_check_floor_permille: u32,
    /// Providers in the book from which, under the adaptive policy, two
    /// matching results from providers without validated history are not
    /// enough (a third must agree).
    pub vouching_providers_min: usize,
    /// Providers looked at per placement before a task waits.
    pub candidates_per_placement_max: usize,
    /// Seeds the spot checks.
    pub seed: u64,
}

impl Default for MarketConfig {
    fn default() -> Self {
        Self {
            minimum_stake: 1,
            offers_max: 1_000_000,
            tasks_per_core: 2,
            tasks_per_core_max: 64,
            pipeline_ms: 20,
            batch_tasks_max: 64,
            lease_factor: 3,
            lease_base_ms: 2_000,
            attempts_max: 5,
            replicas_max: 7,
            trust_history_min: 10,
            spot_check_floor_permille: 20,
            vouching_providers_min: 32,
            candidates_per_placement_max: 64,
            seed: 0,
        }
    }
}

/// How a job's results are verified.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    /// A quorum of this many matching results from distinct providers.
    Replicas(u8),
    /// A trusted provider's result alone, spot-checked with a probability
    /// that falls as its run of valid results grows; everyone else's
    /// replicated to two.
    Adaptive,
}

/// A job as the market sees it: tasks are numbered `0..task_count`.
#[derive(Debug, Clone)]
pub struct JobSpec {
    pub id: JobId,
    pub module: ContentId,
    pub task_count: u64,
    pub limits: ExecutionLimits,
    pub price_per_million_fuel: u64,
    pub policy: Policy,
    /// The most the job may pay in total.
    pub budget: u64,
}

/// What a provider says a task produced.
#[derive(Debug, Clone)]
pub struct TaskResult {
    pub outcome: TaskOutcome,
    pub fuel_used: u64,
    /// The signed receipt, kept as fraud evidence if the result loses.
    pub receipt: Option<Box<SignedReceipt>>,
}

/// Something that happened, with the time of the call.
#[derive(Debug, Clone)]
pub enum Input {
    /// A (signature-checked) offer.
    Offer {
        provider: AccountId,
        offer: Offer,
    },
    /// The provider's stake on the ledger.
    Stake {
        provider: AccountId,
        amount: u64,
    },
    Connected(AccountId),
    Lost(AccountId),
    SubmitJob(JobSpec),
    Result {
        provider: AccountId,
        job: JobId,
        task: u64,
        result: TaskResult,
    },
    /// The provider could not run the task (crash, host error); not fraud.
    ProviderFailed {
        provider: AccountId,
        job: JobId,
        task: u64,
    },
    Budget {
        job: JobId,
        budget: u64,
    },
    /// Time passed: expire leases and offers.
    Tick,
}

/// Why a job stopped placing work.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stall {
    /// Placing more would commit more than the budget.
    Budget,
}

/// Totals of a finished job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct JobSummary {
    pub tasks_accepted: u64,
    pub tasks_failed: u64,
    /// Fuel of every result received, replicas included.
    pub fuel_executed: u64,
    /// Fuel of the accepted results, once per task.
    pub fuel_useful: u64,
    pub paid: u64,
}

/// What the caller should do.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    Assign {
        provider: AccountId,
        job: JobId,
        tasks: Vec<u64>,
        lease_deadline_ms: Millis,
    },
    Cancel {
        provider: AccountId,
        job: JobId,
        task: u64,
    },
    /// Sign and send a cumulative voucher.
    Voucher {
        job: JobId,
        provider: AccountId,
        cumulative_amount: u64,
        cumulative_fuel: u64,
        sequence: u64,
    },
    /// A provider's result lost to the accepted one.
    Fraud {
        job: JobId,
        task: u64,
        provider: AccountId,
        /// (the accepted receipt, the losing receipt), when both were signed.
        evidence: Option<Box<(SignedReceipt, SignedReceipt)>>,
    },
    TaskAccepted {
        job: JobId,
        task: u64,
        outcome: TaskOutcome,
        fuel_used: u64,
    },
    TaskFailed {
        job: JobId,
        task: u64,
        reason: String,
    },
    JobStalled {
        job: JobId,
        reason: Stall,
    },
    JobFinished {
        job: JobId,
        summary: JobSummary,
    },
}

type ProviderIndex = u32;

/// Pending replicas looked at per placement before the job waits.
const PENDING_SCAN_MAX: usize = 32;

/// Expired leases remembered per provider before decided ones are pruned.
const LATE_HOLDS_MAX: usize = 1024;

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
    stake: u64,
    connected: bool,
    in_flight: u32,
    /// Consecutive results that matched the accepted one.
    streak: u32,
    failures: u32,
    rank: Option<RankKey>,
    /// Tasks whose lease it let expire and may still answer late.
    late: Vec<(JobId, u64)>,
}

impl Provider {
    /// Tasks it may hold at once: `tasks_per_core` per core, more (up to
    /// `tasks_per_core_max`) when tasks are known to be short, never more
    /// than its offer's concurrency.
    fn capacity(&self, config: &MarketConfig, fuel_per_task: Option<u64>) -> u32 {
        self.offer.as_ref().map_or(0, |offer| {
            let floor = config.tasks_per_core.max(1);
            let per_core = fuel_per_task.map_or(floor, |fuel| {
                let ahead = u128::from(config.pipeline_ms)
                    * u128::from(offer.benchmark_fuel_per_second)
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

    fn benchmark(&self) -> u64 {
        self.offer
            .as_ref()
            .map_or(1, |offer| offer.benchmark_fuel_per_second.max(1))
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
}

#[derive(Debug)]
struct Job {
    spec: JobSpec,
    tasks: Vec<Task>,
    pending: VecDeque<u64>,
    /// Cost reserved for one assignment: the task fuel limit at the job price.
    cost_per_assignment: u64,
    reserved: u64,
    paid: u64,
    owed: HashMap<ProviderIndex, (u64, u64, u64)>,
    decided: u64,
    stalled: bool,
    summary: JobSummary,
}

/// Cost of `fuel` at `price` per million, rounded up.
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
        }
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
                self.jobs.remove(job);
                self.finished.insert(*job, *summary);
            }
        }
        commands
    }

    fn input(&mut self, now: Millis, input: Input, commands: &mut Vec<Command>) {
        match input {
            Input::Offer { provider, offer } => self.offer(now, provider, offer),
            Input::Stake { provider, amount } => {
                if let Some(index) = self.provider_index(provider) {
                    self.providers[index as usize].stake = amount;
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
                        if let Some(job) = self.jobs.get_mut(&job_id) {
                            let task = &mut job.tasks[task_index as usize];
                            if let Some(position) =
                                task.expired.iter().position(|held| *held == index)
                            {
                                task.expired.swap_remove(position);
                                Self::release_reservation(job, task_index);
                            }
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
            stake: 0,
            connected: false,
            in_flight: 0,
            streak: 0,
            failures: 0,
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
            && provider.stake >= self.config.minimum_stake
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
        let quorum = match spec.policy {
            Policy::Replicas(count) => count.max(1),
            Policy::Adaptive => 1,
        };
        let mut pending = VecDeque::new();
        let mut tasks = Vec::new();
        for task in 0..spec.task_count {
            for _ in 0..quorum {
                pending.push_back(task);
            }
            tasks.push(Task {
                status: TaskStatus::Open,
                quorum,
                running: Vec::new(),
                expired: Vec::new(),
                results: Vec::new(),
                queued: quorum,
                attempts: 0,
                reserved: 0,
            });
        }
        let cost_per_assignment = cost(spec.limits.fuel, spec.price_per_million_fuel);
        self.jobs.insert(
            spec.id,
            Job {
                spec,
                tasks,
                pending,
                cost_per_assignment,
                reserved: 0,
                paid: 0,
                owed: HashMap::new(),
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

    /// The best ready provider that may run a replica of this task: within
    /// the job's price, offering the memory its tasks may use, not already holding or having answered it, not of an
    /// operator that did.
    fn candidate(&self, job_id: JobId, task_index: u64) -> Option<ProviderIndex> {
        let job = self.jobs.get(&job_id)?;
        let task = &job.tasks[task_index as usize];
        let price = job.spec.price_per_million_fuel;
        let memory = job.spec.limits.memory_bytes;
        let holders: Vec<ProviderIndex> = task
            .running
            .iter()
            .map(|(index, _)| *index)
            .chain(task.expired.iter().copied())
            .chain(task.results.iter().map(|result| result.provider))
            .collect();
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
                    .is_some_and(|offer| offer.memory_bytes >= memory);
                *price_floor <= price
                    && fits
                    && !holders.contains(index)
                    && operator.is_none_or(|operator| !operators.contains(&operator))
            })
            .map(|(_, _, index)| *index)
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
            let Some(&task_index) = job.pending.get(position) else {
                return false;
            };
            if job.tasks[task_index as usize].status != TaskStatus::Open {
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
            position += 1;
        }
        let Some((position, task_index, index)) = chosen else {
            return false;
        };
        let Some(job) = self.jobs.get_mut(&job_id) else {
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
        let run_ms = job.spec.limits.fuel.saturating_mul(1_000) / provider.benchmark();
        let deadline = now
            .saturating_add(
                run_ms
                    .saturating_mul(ahead + 1)
                    .saturating_mul(self.config.lease_factor),
            )
            .saturating_add(self.config.lease_base_ms);
        job.pending.remove(position);
        let task = &mut job.tasks[task_index as usize];
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

    /// Ends a provider's hold on a task (result, failure or expiry).
    fn release(
        &mut self,
        now: Millis,
        index: ProviderIndex,
        job_id: JobId,
        task_index: u64,
    ) -> bool {
        let Some(job) = self.jobs.get_mut(&job_id) else {
            return false;
        };
        let Some(task) = job.tasks.get_mut(task_index as usize) else {
            return false;
        };
        let Some(position) = task.running.iter().position(|(held, _)| *held == index) else {
            return false;
        };
        let (_, deadline) = task.running.swap_remove(position);
        self.leases.remove(&(deadline, index, job_id, task_index));
        self.leases_by_provider
            .remove(&(index, deadline, job_id, task_index));
        let provider = &mut self.providers[index as usize];
        provider.in_flight = provider.in_flight.saturating_sub(1);
        self.rerank(now, index);
        true
    }

    fn release_reservation(job: &mut Job, task_index: u64) {
        let task = &mut job.tasks[task_index as usize];
        if task.reserved > 0 {
            task.reserved -= 1;
            job.reserved -= job.cost_per_assignment;
        }
    }

    /// Queues one more replica of a task, ahead of tasks not yet started:
    /// finishing started tasks first keeps latency low and lets trust form.
    fn requeue(job: &mut Job, task_index: u64) {
        let task = &mut job.tasks[task_index as usize];
        task.queued += 1;
        job.pending.push_front(task_index);
    }

    fn expire(
        &mut self,
        now: Millis,
        lease: (Millis, ProviderIndex, JobId, u64),
        late: Late,
        commands: &mut Vec<Command>,
    ) {
        let (_, index, job_id, task_index) = lease;
        if !self.release(now, index, job_id, task_index) {
            // A failure after the lease expired: the task was already
            // reissued; only the late result it might have sent is off.
            if let Some(job) = self.jobs.get_mut(&job_id)
                && let Some(task) = job.tasks.get_mut(task_index as usize)
                && let Some(position) = task.expired.iter().position(|held| *held == index)
            {
                task.expired.swap_remove(position);
                Self::release_reservation(job, task_index);
            }
            return;
        }
        self.providers[index as usize].failures += 1;
        self.rerank(now, index);
        let attempts_max = self.config.attempts_max;
        let Some(job) = self.jobs.get_mut(&job_id) else {
            return;
        };
        match late {
            // The reservation stays: a late result may still be paid.
            Late::Counts => job.tasks[task_index as usize].expired.push(index),
            // A lost provider's work is gone; it may take the task again.
            Late::Ignored => Self::release_reservation(job, task_index),
        }
        let task = &mut job.tasks[task_index as usize];
        task.attempts += 1;
        if task.attempts >= attempts_max {
            self.fail_task(
                now,
                job_id,
                task_index,
                "its providers kept failing",
                commands,
            );
        } else {
            Self::requeue(job, task_index);
        }
        if late == Late::Counts {
            self.remember_late(index, job_id, task_index);
        }
    }

    /// Records that `index` may still answer a task late, forgetting holds
    /// on tasks decided since when the list grows.
    fn remember_late(&mut self, index: ProviderIndex, job_id: JobId, task_index: u64) {
        let jobs = &self.jobs;
        let late = &mut self.providers[index as usize].late;
        late.push((job_id, task_index));
        if late.len() > LATE_HOLDS_MAX {
            late.retain(|(job, task)| {
                jobs.get(job)
                    .is_some_and(|job| job.tasks[*task as usize].expired.contains(&index))
            });
        }
    }

    fn tick(&mut self, now: Millis, commands: &mut Vec<Command>) {
        while let Some(&lease) = self.leases.first() {
            if lease.0 > now {
                break;
            }
            self.expire(now, lease, Late::Counts, commands);
            // `expire` released it; make sure a lease never fires twice.
            let (deadline, index, job, task) = lease;
            self.leases.remove(&lease);
            self.leases_by_provider
                .remove(&(index, deadline, job, task));
        }
        while let Some(&(expires, index)) = self.offer_expiry.first() {
            if expires > now {
                break;
            }
            self.offer_expiry.remove(&(expires, index));
            self.providers[index as usize].offer = None;
            self.rerank(now, index);
        }
    }

    fn provider_failed(
        &mut self,
        now: Millis,
        provider: AccountId,
        job_id: JobId,
        task_index: u64,
        commands: &mut Vec<Command>,
    ) {
        let Some(&index) = self.index.get(&provider) else {
            return;
        };
        if !self.release(now, index, job_id, task_index) {
            // A failure after the lease expired: the task was already
            // reissued; only the late result it might have sent is off.
            if let Some(job) = self.jobs.get_mut(&job_id)
                && let Some(task) = job.tasks.get_mut(task_index as usize)
                && let Some(position) = task.expired.iter().position(|held| *held == index)
            {
                task.expired.swap_remove(position);
                Self::release_reservation(job, task_index);
            }
            return;
        }
        self.providers[index as usize].failures += 1;
        self.rerank(now, index);
        let attempts_max = self.config.attempts_max;
        let Some(job) = self.jobs.get_mut(&job_id) else {
            return;
        };
        Self::release_reservation(job, task_index);
        let task = &mut job.tasks[task_index as usize];
        task.attempts += 1;
        if task.attempts >= attempts_max {
            self.fail_task(
                now,
                job_id,
                task_index,
                "its providers kept failing",
                commands,
            );
        } else {
            Self::requeue(job, task_index);
        }
    }

    fn result(
        &mut self,
        now: Millis,
        provider: AccountId,
        job_id: JobId,
        task_index: u64,
        result: TaskResult,
        commands: &mut Vec<Command>,
    ) {
        let Some(&index) = self.index.get(&provider) else {
            return;
        };
        let was_running = self.release(now, index, job_id, task_index);
        let Some(job) = self.jobs.get_mut(&job_id) else {
            return;
        };
        let Some(task) = job.tasks.get_mut(task_index as usize) else {
            return;
        };
        let was_expired = match task.expired.iter().position(|held| *held == index) {
            Some(position) => {
                task.expired.swap_remove(position);
                true
            }
            None => false,
        };
        // Only results for work we handed out count, once per provider.
        if !was_running && !was_expired {
            return;
        }
        let fuel_per_task = match self.fuel_per_task {
            None => result.fuel_used,
            Some(average) => average - average / 8 + result.fuel_used / 8,
        };
        if self.fuel_per_task != Some(fuel_per_task) {
            self.fuel_per_task = Some(fuel_per_task);
            // Its window follows.
            self.rerank(now, index);
        }
        let Some(job) = self.jobs.get_mut(&job_id) else {
            return;
        };
        // The reservation stays until the task is decided: a received
        // result is owed its payment if it wins.
        let task = &mut job.tasks[task_index as usize];
        if task.status != TaskStatus::Open {
            return;
        }
        job.summary.fuel_executed = job.summary.fuel_executed.saturating_add(result.fuel_used);
        task.results.push(Received {
            provider: index,
            vouched: self.providers[index as usize].streak > 0,
            outcome: result.outcome,
            fuel_used: result.fuel_used,
            receipt: result.receipt,
        });
        if job.spec.policy == Policy::Adaptive && task.results.len() == 1 && task.quorum == 1 {
            let provider = &self.providers[index as usize];
            let trusted = provider.streak >= self.config.trust_history_min;
            let spot_check = trusted && {
                let odds = 10_000 / (10 + provider.streak);
                let permille = odds.max(self.config.spot_check_floor_permille);
                self.rng.chance_permille(permille)
            };
            if !trusted || spot_check {
                task.quorum = 2;
            }
        }
        self.evaluate(now, job_id, task_index, commands);
    }

    /// Accepts the task if one (outcome, fuel) has its quorum and a
    /// majority; otherwise asks for more replicas, or gives up.
    fn evaluate(
        &mut self,
        now: Millis,
        job_id: JobId,
        task_index: u64,
        commands: &mut Vec<Command>,
    ) {
        let replicas_max = self.config.replicas_max as usize;
        let Some(job) = self.jobs.get_mut(&job_id) else {
            return;
        };
        let task = &job.tasks[task_index as usize];
        let mut tallies: Vec<((TaskOutcome, u64), usize)> = Vec::new();
        for result in &task.results {
            let key = (result.outcome, result.fuel_used);
            match tallies.iter_mut().find(|(seen, _)| *seen == key) {
                Some((_, count)) => *count += 1,
                None => tallies.push((key, 1)),
            }
        }
        let Some(&(best, votes)) = tallies.iter().max_by_key(|(_, count)| *count) else {
            return;
        };
        let total = task.results.len();
        // Under the adaptive policy fresh identities cannot vouch for each
        // other: a replicated result backed only by providers with no
        // validated history needs one more matching vote, so a pair of new
        // colluding (or identically lazy) providers never carries a task on
        // its own. An explicit `Replicas(n)` means exactly n, and a book too
        // small to find third opinions (a devnet) goes without.
        let vouched = task
            .results
            .iter()
            .any(|result| result.vouched && (result.outcome, result.fuel_used) == best);
        let quorum = usize::from(task.quorum);
        let vouching = job.spec.policy == Policy::Adaptive
            && self.providers.len() >= self.config.vouching_providers_min;
        let needed = if vouching && quorum >= 2 && !vouched {
            quorum + 1
        } else {
            quorum
        };
        if votes >= needed && votes * 2 > total {
            self.accept(now, job_id, task_index, best, commands);
            return;
        }
        // Expired leases are not waited for: each was replaced when it expired
        // (its late result still counts if it comes).
        let outstanding = task.running.len() + usize::from(task.queued);
        if total + outstanding >= replicas_max {
            if outstanding == 0 {
                self.fail_task(
                    now,
                    job_id,
                    task_index,
                    "its replicas never agreed",
                    commands,
                );
            }
            return;
        }
        // One more at a time beyond the quorum: a vouched result arriving
        // meanwhile may settle the task without it.
        let missing = quorum.saturating_sub(votes).max(1);
        for _ in outstanding..missing {
            Self::requeue(job, task_index);
        }
    }

    fn accept(
        &mut self,
        now: Millis,
        job_id: JobId,
        task_index: u64,
        (outcome, fuel_used): (TaskOutcome, u64),
        commands: &mut Vec<Command>,
    ) {
        let Some(job) = self.jobs.get_mut(&job_id) else {
            return;
        };
        let task = &mut job.tasks[task_index as usize];
        task.status = TaskStatus::Accepted;
        let winner = task
            .results
            .iter()
            .find(|result| (result.outcome, result.fuel_used) == (outcome, fuel_used))
            .and_then(|result| result.receipt.clone());
        let amount = cost(fuel_used, job.spec.price_per_million_fuel);
        for result in &task.results {
            let provider = &mut self.providers[result.provider as usize];
            if (result.outcome, result.fuel_used) == (outcome, fuel_used) {
                provider.streak = provider.streak.saturating_add(1);
                let owed = job.owed.entry(result.provider).or_default();
                owed.0 += amount;
                owed.1 += fuel_used;
                job.paid += amount;
                job.summary.paid += amount;
                self.dirty.insert((job_id, result.provider));
            } else {
                provider.streak = 0;
                let evidence = match (&winner, &result.receipt) {
                    (Some(accepted), Some(losing)) => {
                        Some(Box::new(((**accepted).clone(), (**losing).clone())))
                    }
                    _ => None,
                };
                commands.push(Command::Fraud {
                    job: job_id,
                    task: task_index,
                    provider: provider.id,
                    evidence,
                });
            }
        }
        job.summary.tasks_accepted += 1;
        job.summary.fuel_useful = job.summary.fuel_useful.saturating_add(fuel_used);
        commands.push(Command::TaskAccepted {
            job: job_id,
            task: task_index,
            outcome,
            fuel_used,
        });
        self.close_task(now, job_id, task_index, commands);
    }

    fn fail_task(
        &mut self,
        now: Millis,
        job_id: JobId,
        task_index: u64,
        reason: &str,
        commands: &mut Vec<Command>,
    ) {
        let Some(job) = self.jobs.get_mut(&job_id) else {
            return;
        };
        let task = &mut job.tasks[task_index as usize];
        if task.status != TaskStatus::Open {
            return;
        }
        task.status = TaskStatus::Failed;
        job.summary.tasks_failed += 1;
        commands.push(Command::TaskFailed {
            job: job_id,
            task: task_index,
            reason: reason.to_owned(),
        });
        self.close_task(now, job_id, task_index, commands);
    }

    /// Cancels what still runs for a decided task and frees its reservations.
    fn close_task(
        &mut self,
        now: Millis,
        job_id: JobId,
        task_index: u64,
        commands: &mut Vec<Command>,
    ) {
        let running: Vec<ProviderIndex> = match self.jobs.get(&job_id) {
            Some(job) => job.tasks[task_index as usize]
                .running
                .iter()
                .map(|(index, _)| *index)
                .collect(),
            None => return,
        };
        for index in running {
            self.release(now, index, job_id, task_index);
            commands.push(Command::Cancel {
                provider: self.providers[index as usize].id,
                job: job_id,
                task: task_index,
            });
        }
        let Some(job) = self.jobs.get_mut(&job_id) else {
            return;
        };
        let task = &mut job.tasks[task_index as usize];
        job.reserved -= u64::from(task.reserved) * job.cost_per_assignment;
        task.reserved = 0;
        task.queued = 0;
        // A decided task keeps only its status: with millions of tasks the
        // results and holder lists would otherwise dominate memory.
        task.expired = Vec::new();
        task.running = Vec::new();
        task.results = Vec::new();
        job.decided += 1;
        if job.decided == job.spec.task_count {
            commands.push(Command::JobFinished {
                job: job_id,
                summary: job.summary,
            });
        }
    }

    fn emit_vouchers(&mut self, commands: &mut Vec<Command>) {
        for (job_id, index) in std::mem::take(&mut self.dirty) {
            let Some(job) = self.jobs.get_mut(&job_id) else {
                continue;
            };
            let Some(owed) = job.owed.get_mut(&index) else {
                continue;
            };
            owed.2 += 1;
            commands.push(Command::Voucher {
                job: job_id,
                provider: self.providers[index as usize].id,
                cumulative_amount: owed.0,
                cumulative_fuel: owed.1,
                sequence: owed.2,
            });
        }
    }
}
