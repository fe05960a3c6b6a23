//! The simulated world: devices with their speed, cores, latency, sessions
//! and honesty; the messages between them and the requestor; and the
//! requestor's real [`Market`], all advanced by one seeded event queue.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::time::{Duration, Instant};

use idlegrid_market::{
    Command, Input, JobSpec, JobSummary, Market, MarketConfig, Millis, Policy, SplitMix64,
    TaskResult,
};
use idlegrid_types::{AccountId, ContentId, ExecutionLimits, JobId, Offer, TaskOutcome};

use crate::Sample;

/// How a device answers the tasks it is given.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Strategy {
    Honest,
    /// Every output is wrong (and different from everyone else's).
    AlwaysWrong,
    /// One output in ten is wrong, at random.
    RandomWrong,
    /// The same output for every task, like every other device of this kind.
    ConstantOutput,
    /// Wrong outputs agreed with a partner device, so that the two match.
    Colluding,
}

impl Strategy {
    /// The cheating strategies, in the order cheaters are dealt them.
    pub const CHEATING: [Strategy; 4] = [
        Strategy::AlwaysWrong,
        Strategy::RandomWrong,
        Strategy::ConstantOutput,
        Strategy::Colluding,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Strategy::Honest => "honest",
            Strategy::AlwaysWrong => "always_wrong",
            Strategy::RandomWrong => "random_wrong",
            Strategy::ConstantOutput => "constant_output",
            Strategy::Colluding => "colluding",
        }
    }

    pub fn parse(name: &str) -> Option<Strategy> {
        [Strategy::Honest]
            .into_iter()
            .chain(Strategy::CHEATING)
            .find(|strategy| strategy.name() == name)
    }
}

/// Everything a run depends on. The same configuration gives the same run.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SimConfig {
    pub seed: u64,
    pub devices: u32,
    /// Tasks per job.
    pub tasks: u64,
    /// Jobs submitted one after another by the same requestor; trust that
    /// providers earn in one job carries into the next.
    pub jobs: u32,
    #[serde(skip)]
    pub policy: Policy,
    /// Share of devices that cheat, dealt the strategies in `cheat_with` in turn.
    pub cheater_fraction: f64,
    pub cheat_with: Vec<Strategy>,
    /// Mean fuel of one task; each task's fuel is spread ±50% around it.
    pub task_fuel: u64,
    /// Median device speed in fuel per second; devices spread 1/4× to 4×.
    pub median_speed: u64,
    /// Share of devices slowed down by `slow_factor` (a second population).
    pub slow_fraction: f64,
    pub slow_factor: u64,
    /// One-way latency between a device and the requestor, drawn per device.
    pub latency_ms: (u64, u64),
    /// Mean online and offline time of a device; 0 online means no churn.
    pub session_mean_ms: u64,
    pub offline_mean_ms: u64,
    /// Share of departures that are crashes (silent) rather than goodbyes.
    pub crash_fraction: f64,
    /// How long a crashed device's connection takes to be declared lost.
    pub crash_detect_ms: u64,
    /// Share of tasks a device fails to run (host error, not fraud).
    pub failure_fraction: f64,
    /// Time from fraud evidence to the stake being slashed on the ledger.
    pub dispute_delay_ms: u64,
    /// Job budget as a multiple of one assignment's cost per task.
    pub budget_factor: f64,
    pub price_per_million_fuel: u64,
    pub tick_ms: u64,
    pub sample_ms: u64,
    /// Simulated time after which the run stops, finished or not.
    pub time_limit_ms: u64,
}

impl Default for SimConfig {
    fn default() -> Self {
        Self {
            seed: 1,
            devices: 1_000,
            tasks: 10_000,
            jobs: 1,
            policy: Policy::Adaptive,
            cheater_fraction: 0.05,
            cheat_with: Strategy::CHEATING.to_vec(),
            task_fuel: 2_000_000_000,
            median_speed: 1_000_000_000,
            slow_fraction: 0.0,
            slow_factor: 10,
            latency_ms: (10, 150),
            session_mean_ms: 30 * 60_000,
            offline_mean_ms: 10 * 60_000,
            crash_fraction: 0.5,
            crash_detect_ms: 10_000,
            failure_fraction: 0.001,
            dispute_delay_ms: 5_000,
            budget_factor: 4.0,
            price_per_million_fuel: 10,
            tick_ms: 250,
            sample_ms: 500,
            time_limit_ms: 24 * 3_600_000,
        }
    }
}

/// Per-strategy totals of a run.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct StrategyStats {
    pub strategy: &'static str,
    pub devices: u64,
    /// Devices that ran at least one task.
    pub active: u64,
    /// Devices that sent at least one wrong result.
    pub lied: u64,
    pub detected: u64,
    pub slashed: u64,
    pub tasks_completed: u64,
    pub wrong_results_sent: u64,
    pub wrong_accepted: u64,
}

/// What a run did.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Report {
    pub finished: bool,
    pub jobs_finished: u32,
    pub tasks: u64,
    pub tasks_accepted: u64,
    pub tasks_failed: u64,
    /// Simulated time until the last job finished (or the run stopped).
    pub makespan_ms: u64,
    pub fuel_executed: u64,
    pub fuel_useful: u64,
    /// `fuel_executed / fuel_useful`.
    pub overhead: f64,
    /// The same over the last job only: with trust carried over from the
    /// jobs before it.
    pub last_job_overhead: f64,
    /// Fuel devices spent, including cancelled and crashed work.
    pub fuel_burned: u64,
    pub wrong_accepted: u64,
    pub cheaters: u64,
    /// Cheaters that ran at least one task (the others never had a chance
    /// to be caught).
    pub cheaters_active: u64,
    /// Cheaters that sent at least one wrong result (the others behaved).
    pub cheaters_lied: u64,
    pub cheaters_detected: u64,
    /// Fraud reported against honest devices (disputes they would win).
    pub honest_accused: u64,
    pub strategies: Vec<StrategyStats>,
    /// Sum of every provider's latest voucher.
    pub paid: u64,
    pub budget: u64,
    pub crashes: u64,
    pub departures: u64,
    /// Tasks a device held when it crashed or left.
    pub tasks_lost_to_churn: u64,
    pub assignments: u64,
    /// Times a job stopped placing work because of its budget.
    pub stalls: u64,
    pub events: u64,
    /// Broken invariants (voucher went down, window exceeded, budget
    /// exceeded, a task decided twice); empty in a correct run.
    pub violations: Vec<String>,
    pub wall_ms: u64,
}

/// One device's figures after a run.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DeviceStats {
    pub id: AccountId,
    pub strategy: Strategy,
    pub speed: u64,
    pub cores: u32,
    /// One of the `slow_fraction` devices slowed by `slow_factor`.
    pub slowed: bool,
    pub tasks_completed: u64,
    pub wrong_sent: u64,
    /// Tasks where its wrong output was accepted.
    pub wrong_accepted: u64,
    pub detected: bool,
}

#[derive(Debug)]
struct Device {
    id: AccountId,
    cores: u32,
    speed: u64,
    latency_ms: u64,
    strategy: Strategy,
    /// For colluders: the pair they agree within.
    pair: u32,
    slowed: bool,
    online: bool,
    /// Bumped whenever the device goes away: its pending events go stale.
    epoch: u32,
    queue: VecDeque<(u32, u64)>,
    running: Vec<(u32, u64)>,
    cancelled: Vec<(u32, u64)>,
    offer_sequence: u64,
    detected: bool,
    slashed: bool,
    tasks_completed: u64,
    wrong_sent: u64,
    /// Tasks where this device's wrong output was accepted.
    wrong_accepted: u64,
}

#[derive(Debug)]
enum Event {
    Arrive(u32),
    Depart(u32),
    /// A crashed device's connection is declared lost.
    Silent {
        device: u32,
        epoch: u32,
    },
    Assign {
        device: u32,
        epoch: u32,
        job: u32,
        tasks: Vec<u64>,
    },
    Cancel {
        device: u32,
        epoch: u32,
        job: u32,
        task: u64,
    },
    Finish {
        device: u32,
        epoch: u32,
        job: u32,
        task: u64,
    },
    RefreshOffer {
        device: u32,
        epoch: u32,
    },
    /// A message reaching the requestor's market.
    ToMarket(Input),
    Slash(u32),
    SubmitJob(u32),
    Tick,
    Sample,
}

#[derive(Debug)]
struct SimJob {
    id: JobId,
    budget: u64,
    finished: Option<JobSummary>,
    /// Summary of the job's results as the market keeps them.
    decided: u64,
}

/// Offers last this long; devices renew them at half-life.
const OFFER_TTL_MS: Millis = 10 * 60_000;

/// A run in progress. [`Simulation::run`] drives it to the end.
#[derive(Debug)]
pub struct Simulation {
    config: SimConfig,
    rng: SplitMix64,
    market: Market,
    devices: Vec<Device>,
    by_account: HashMap<AccountId, u32>,
    /// (time, sequence, slot in `events`): small entries keep the heap fast;
    /// the events themselves wait in slots reused once taken.
    queue: BinaryHeap<Reverse<(Millis, u64, u32)>>,
    events_waiting: Vec<Option<Event>>,
    free_slots: Vec<u32>,
    sequence: u64,
    now: Millis,
    jobs: Vec<SimJob>,
    module: ContentId,
    limits: ExecutionLimits,
    /// Latest voucher per (job, provider): (amount, sequence).
    vouchers: HashMap<(u32, u32), (u64, u64)>,
    /// Wrong outputs sent for tasks not yet decided, to tell which
    /// strategy got a wrong result accepted.
    wrong_outputs: HashMap<(u32, u64), Vec<(ContentId, u32)>>,
    paid: u64,
    wrong_accepted: u64,
    honest_accused: u64,
    cheaters_detected: u64,
    fuel_burned: u64,
    crashes: u64,
    departures: u64,
    tasks_lost_to_churn: u64,
    assignments: u64,
    in_flight: u64,
    online: u64,
    events: u64,
    stalls: u64,
    violations: Vec<String>,
    samples: Vec<Sample>,
    done_at: Option<Millis>,
}

/// Most violations kept; the count past this is still noticed.
const VIOLATIONS_MAX: usize = 32;

fn account(index: u32) -> AccountId {
    let mut bytes = [0u8; 32];
    bytes[..4].copy_from_slice(&index.to_le_bytes());
    bytes[4..8].copy_from_slice(b"sim!");
    AccountId::from_bytes(bytes)
}

fn exponential(rng: &mut SplitMix64, mean: u64) -> u64 {
    let u = rng.unit().max(1e-12);
    (-(mean as f64) * u.ln()) as u64
}

impl Simulation {
    pub fn new(config: SimConfig) -> Self {
        let mut rng = SplitMix64::new(config.seed);
        let cheaters = (f64::from(config.devices) * config.cheater_fraction).round() as u32;
        let mut devices = Vec::with_capacity(config.devices as usize);
        let mut by_account = HashMap::with_capacity(config.devices as usize);
        for index in 0..config.devices {
            // The first `cheaters` cheat; a shuffle below spreads them.
            let strategy = if index < cheaters && !config.cheat_with.is_empty() {
                config.cheat_with[index as usize % config.cheat_with.len()]
            } else {
                Strategy::Honest
            };
            let cores = [1, 2, 4, 4, 8, 8, 16][rng.below(7) as usize];
            // Log-uniform between a quarter and four times the median.
            let spread = 2f64.powf(rng.unit() * 4.0 - 2.0);
            let speed = ((config.median_speed as f64 * spread) as u64).max(1);
            let (low, high) = config.latency_ms;
            let latency_ms = low + rng.below(high.saturating_sub(low) + 1);
            devices.push(Device {
                id: account(index),
                cores,
                speed,
                latency_ms,
                strategy,
                pair: 0,
                slowed: false,
                online: false,
                epoch: 0,
                queue: VecDeque::new(),
                running: Vec::new(),
                cancelled: Vec::new(),
                offer_sequence: 0,
                detected: false,
                slashed: false,
                tasks_completed: 0,
                wrong_sent: 0,
                wrong_accepted: 0,
            });
        }
        // Deal the roles to random devices, so that cheaters and slow
        // devices do not share an id range or a speed band.
        for index in (1..devices.len()).rev() {
            let other = rng.below(index as u64 + 1) as usize;
            let (a, b) = (devices[index].strategy, devices[other].strategy);
            devices[index].strategy = b;
            devices[other].strategy = a;
        }
        let mut colluders = 0;
        for device in devices.iter_mut() {
            if device.strategy == Strategy::Colluding {
                device.pair = colluders / 2;
                colluders += 1;
            }
            if rng.unit() < config.slow_fraction {
                device.speed = (device.speed / config.slow_factor.max(1)).max(1);
                device.slowed = true;
            }
        }
        for (index, device) in devices.iter().enumerate() {
            by_account.insert(device.id, index as u32);
        }
        let market = Market::new(MarketConfig {
            seed: config.seed ^ 0x6d61_726b_6574,
            offers_max: (config.devices as usize).max(1),
            ..MarketConfig::default()
        });
        let limits = ExecutionLimits {
            fuel: config.task_fuel.saturating_mul(2),
            memory_bytes: 64 << 20,
            output_bytes: 1 << 20,
        };
        let mut simulation = Self {
            rng,
            market,
            devices,
            by_account,
            queue: BinaryHeap::new(),
            events_waiting: Vec::new(),
            free_slots: Vec::new(),
            sequence: 0,
            now: 0,
            jobs: Vec::new(),
            module: ContentId::of(b"idlegrid-sim module"),
            limits,
            vouchers: HashMap::new(),
            wrong_outputs: HashMap::new(),
            paid: 0,
            wrong_accepted: 0,
            honest_accused: 0,
            cheaters_detected: 0,
            fuel_burned: 0,
            crashes: 0,
            departures: 0,
            tasks_lost_to_churn: 0,
            assignments: 0,
            in_flight: 0,
            online: 0,
            events: 0,
            stalls: 0,
            violations: Vec::new(),
            samples: Vec::new(),
            done_at: None,
            config,
        };
        simulation.start();
        simulation
    }

    fn schedule(&mut self, at: Millis, event: Event) {
        self.sequence += 1;
        let slot = match self.free_slots.pop() {
            Some(slot) => {
                self.events_waiting[slot as usize] = Some(event);
                slot
            }
            None => {
                self.events_waiting.push(Some(event));
                (self.events_waiting.len() - 1) as u32
            }
        };
        self.queue.push(Reverse((at, self.sequence, slot)));
    }

    fn start(&mut self) {
        let config = &self.config;
        let churn = config.session_mean_ms > 0;
        let online_share = if churn {
            config.session_mean_ms as f64 / (config.session_mean_ms + config.offline_mean_ms) as f64
        } else {
            1.0
        };
        let mut arrivals = Vec::with_capacity(self.devices.len());
        for index in 0..self.devices.len() as u32 {
            // Devices come up over the first second, or later if they
            // start offline.
            let at = if self.rng.unit() < online_share {
                self.rng.below(1_000)
            } else {
                exponential(&mut self.rng, self.config.offline_mean_ms)
            };
            arrivals.push((at, index));
        }
        for (at, index) in arrivals {
            self.schedule(at, Event::Arrive(index));
        }
        self.schedule(0, Event::SubmitJob(0));
        self.schedule(self.config.tick_ms, Event::Tick);
        self.schedule(0, Event::Sample);
    }

    /// Runs to the end: every job decided, the time limit, or nothing left
    /// to happen.
    pub fn run(&mut self) -> Report {
        self.run_observed(&mut |_| {})
    }

    /// [`Simulation::run`], showing `observe` each sample as it is taken.
    pub fn run_observed(&mut self, observe: &mut dyn FnMut(&Sample)) -> Report {
        let started = Instant::now();
        while let Some(Reverse((at, _, slot))) = self.queue.pop() {
            if at > self.config.time_limit_ms {
                break;
            }
            let Some(event) = self.events_waiting[slot as usize].take() else {
                continue;
            };
            self.free_slots.push(slot);
            self.now = at;
            self.events += 1;
            self.step(event, observe);
            if self.done_at.is_some() {
                break;
            }
        }
        self.record_sample();
        self.report(started.elapsed())
    }

    /// The devices as they ended.
    pub fn devices(&self) -> Vec<DeviceStats> {
        self.devices
            .iter()
            .map(|device| DeviceStats {
                id: device.id,
                strategy: device.strategy,
                speed: device.speed,
                cores: device.cores,
                slowed: device.slowed,
                tasks_completed: device.tasks_completed,
                wrong_sent: device.wrong_sent,
                wrong_accepted: device.wrong_accepted,
                detected: device.detected,
            })
            .collect()
    }

    /// Progress over simulated time, one sample per `sample_ms`.
    pub fn samples(&self) -> &[Sample] {
        &self.samples
    }

    fn step(&mut self, event: Event, observe: &mut dyn FnMut(&Sample)) {
        match event {
            Event::Arrive(device) => self.arrive(device),
            Event::Depart(device) => self.depart(device),
            Event::Silent { device, epoch } => {
                // Unless it has come back since, the requestor gives up on it.
                if self.devices[device as usize].epoch == epoch {
                    let id = self.devices[device as usize].id;
                    self.deliver(Input::Lost(id));
                }
            }
            Event::Assign {
                device,
                epoch,
                job,
                tasks,
            } => {
                let record = &mut self.devices[device as usize];
                if record.epoch != epoch || !record.online {
                    return;
                }
                self.in_flight += tasks.len() as u64;
                record
                    .queue
                    .extend(tasks.into_iter().map(|task| (job, task)));
                self.start_tasks(device);
            }
            Event::Cancel {
                device,
                epoch,
                job,
                task,
            } => {
                let record = &mut self.devices[device as usize];
                if record.epoch != epoch {
                    return;
                }
                if let Some(position) = record.queue.iter().position(|held| *held == (job, task)) {
                    record.queue.remove(position);
                    self.in_flight -= 1;
                } else if record.running.contains(&(job, task)) {
                    record.cancelled.push((job, task));
                }
            }
            Event::Finish {
                device,
                epoch,
                job,
                task,
            } => {
                if self.devices[device as usize].epoch == epoch {
                    self.finish(device, job, task);
                }
            }
            Event::RefreshOffer { device, epoch } => {
                let record = &self.devices[device as usize];
                if record.epoch == epoch && record.online {
                    self.send_offer(device);
                    let next = self.now + OFFER_TTL_MS / 2;
                    self.schedule(next, Event::RefreshOffer { device, epoch });
                }
            }
            Event::ToMarket(input) => self.deliver(input),
            Event::Slash(device) => {
                let record = &mut self.devices[device as usize];
                record.slashed = true;
                let id = record.id;
                self.deliver(Input::Stake {
                    provider: id,
                    amount: 0,
                });
            }
            Event::SubmitJob(index) => self.submit_job(index),
            Event::Tick => {
                self.deliver(Input::Tick);
                let next = self.now + self.config.tick_ms.max(1);
                self.schedule(next, Event::Tick);
            }
            Event::Sample => {
                self.record_sample();
                if let Some(sample) = self.samples.last() {
                    observe(sample);
                }
                let next = self.now + self.config.sample_ms.max(1);
                self.schedule(next, Event::Sample);
            }
        }
    }

    fn submit_job(&mut self, index: u32) {
        let mut nonce = [0u8; 32];
        nonce[..4].copy_from_slice(&index.to_le_bytes());
        nonce[4..12].copy_from_slice(&self.config.seed.to_le_bytes());
        let id = JobId::derive(&AccountId::from_bytes(nonce), u64::from(index));
        let per_assignment = u128::from(self.limits.fuel)
            * u128::from(self.config.price_per_million_fuel)
            / 1_000_000;
        let budget = (per_assignment as f64 * self.config.tasks as f64 * self.config.budget_factor)
            .min(u64::MAX as f64) as u64;
        self.jobs.push(SimJob {
            id,
            budget,
            finished: None,
            decided: 0,
        });
        self.deliver(Input::SubmitJob(JobSpec {
            id,
            module: self.module,
            task_count: self.config.tasks,
            limits: self.limits,
            price_per_million_fuel: self.config.price_per_million_fuel,
            policy: self.config.policy,
            budget,
        }));
    }

    fn arrive(&mut self, index: u32) {
        let record = &mut self.devices[index as usize];
        if record.online {
            return;
        }
        record.online = true;
        self.online += 1;
        let (id, epoch, slashed, latency) =
            (record.id, record.epoch, record.slashed, record.latency_ms);
        self.send_offer(index);
        let at = self.now + latency;
        self.schedule(
            at,
            Event::ToMarket(Input::Stake {
                provider: id,
                amount: if slashed { 0 } else { 1_000_000 },
            }),
        );
        self.schedule(at, Event::ToMarket(Input::Connected(id)));
        let renew = self.now + OFFER_TTL_MS / 2;
        self.schedule(
            renew,
            Event::RefreshOffer {
                device: index,
                epoch,
            },
        );
        if self.config.session_mean_ms > 0 {
            let leave = self.now + exponential(&mut self.rng, self.config.session_mean_ms).max(1);
            self.schedule(leave, Event::Depart(index));
        }
    }

    fn send_offer(&mut self, index: u32) {
        let record = &mut self.devices[index as usize];
        record.offer_sequence += 1;
        let offer = Offer {
            cores: record.cores,
            memory_bytes: 4 << 30,
            gpus: 0,
            benchmark_fuel_per_second: record.speed,
            price_floor_per_million_fuel: 1 + u64::from(record.cores % 3),
            concurrency: record.cores * 2,
            idle_only: true,
            operator: None,
            sequence: record.offer_sequence,
            expires_at_ms: self.now + OFFER_TTL_MS,
        };
        let (id, at) = (record.id, self.now + record.latency_ms);
        self.schedule(
            at,
            Event::ToMarket(Input::Offer {
                provider: id,
                offer,
            }),
        );
    }

    fn depart(&mut self, index: u32) {
        let crash = self.rng.unit() < self.config.crash_fraction;
        let record = &mut self.devices[index as usize];
        if !record.online {
            return;
        }
        record.online = false;
        record.epoch += 1;
        let held = (record.queue.len() + record.running.len()) as u64;
        let cancelled = record.cancelled.len() as u64;
        record.queue.clear();
        record.running.clear();
        record.cancelled.clear();
        self.in_flight -= held;
        self.tasks_lost_to_churn += held - cancelled.min(held);
        self.online -= 1;
        self.departures += 1;
        let (id, epoch, latency) = (record.id, record.epoch, record.latency_ms);
        if crash {
            self.crashes += 1;
            let at = self.now + self.config.crash_detect_ms;
            self.schedule(
                at,
                Event::Silent {
                    device: index,
                    epoch,
                },
            );
        } else {
            self.schedule(self.now + latency, Event::ToMarket(Input::Lost(id)));
        }
        let back = self.now + exponential(&mut self.rng, self.config.offline_mean_ms).max(1);
        self.schedule(back, Event::Arrive(index));
    }

    fn start_tasks(&mut self, index: u32) {
        loop {
            let record = &mut self.devices[index as usize];
            if record.running.len() >= record.cores as usize {
                return;
            }
            let Some((job, task)) = record.queue.pop_front() else {
                return;
            };
            record.running.push((job, task));
            let run_ms = (task_fuel(&self.config, job, task) * 1_000 / record.speed).max(1);
            let epoch = record.epoch;
            self.schedule(
                self.now + run_ms,
                Event::Finish {
                    device: index,
                    epoch,
                    job,
                    task,
                },
            );
        }
    }

    fn finish(&mut self, index: u32, job: u32, task: u64) {
        let fuel = task_fuel(&self.config, job, task);
        let fail = self.rng.unit() < self.config.failure_fraction;
        let wrong_roll = self.rng.unit();
        let record = &mut self.devices[index as usize];
        let Some(position) = record.running.iter().position(|held| *held == (job, task)) else {
            return;
        };
        record.running.swap_remove(position);
        self.in_flight -= 1;
        self.fuel_burned += fuel;
        let cancelled = match record
            .cancelled
            .iter()
            .position(|held| *held == (job, task))
        {
            Some(position) => {
                record.cancelled.swap_remove(position);
                true
            }
            None => false,
        };
        let (id, latency) = (record.id, record.latency_ms);
        let job_id = self.jobs[job as usize].id;
        if !cancelled {
            record.tasks_completed += 1;
            let input = if fail {
                Input::ProviderFailed {
                    provider: id,
                    job: job_id,
                    task,
                }
            } else {
                let truth = truth(job_id, task);
                let output = match record.strategy {
                    Strategy::Honest => truth,
                    Strategy::RandomWrong if wrong_roll >= 0.1 => truth,
                    Strategy::AlwaysWrong | Strategy::RandomWrong => {
                        wrong(job_id, task, b"own", u64::from(index))
                    }
                    Strategy::ConstantOutput => ContentId::of(b"idlegrid-sim constant output"),
                    Strategy::Colluding => wrong(job_id, task, b"pair", u64::from(record.pair)),
                };
                if output != truth {
                    record.wrong_sent += 1;
                    self.wrong_outputs
                        .entry((job, task))
                        .or_default()
                        .push((output, index));
                }
                Input::Result {
                    provider: id,
                    job: job_id,
                    task,
                    result: TaskResult {
                        outcome: TaskOutcome::Completed {
                            exit_code: 0,
                            output,
                        },
                        fuel_used: fuel,
                        receipt: None,
                    },
                }
            };
            self.schedule(self.now + latency, Event::ToMarket(input));
        }
        self.start_tasks(index);
    }

    fn deliver(&mut self, input: Input) {
        let commands = self.market.handle(self.now, input);
        for command in commands {
            self.command(command);
        }
    }

    fn job_index(&self, id: &JobId) -> Option<u32> {
        self.jobs
            .iter()
            .position(|job| job.id == *id)
            .map(|index| index as u32)
    }

    fn violation(&mut self, what: String) {
        if self.violations.len() < VIOLATIONS_MAX {
            self.violations.push(what);
        }
    }

    /// Schedules a message from the market to a provider's device, arriving
    /// after its latency and meant for its current session.
    fn send_to_device(
        &mut self,
        provider: AccountId,
        job: JobId,
        message: impl FnOnce(u32, u32, u32) -> Event,
    ) {
        let (Some(&device), Some(job_index)) =
            (self.by_account.get(&provider), self.job_index(&job))
        else {
            return;
        };
        let record = &self.devices[device as usize];
        let (at, epoch) = (self.now + record.latency_ms, record.epoch);
        self.schedule(at, message(device, epoch, job_index));
    }

    fn command(&mut self, command: Command) {
        match command {
            Command::Assign {
                provider,
                job,
                tasks,
                ..
            } => {
                self.assignments += tasks.len() as u64;
                if self.market.in_flight(&provider) > self.market.window(&provider) {
                    self.violation(format!("{provider} holds more than its window"));
                }
                self.send_to_device(provider, job, |device, epoch, job| Event::Assign {
                    device,
                    epoch,
                    job,
                    tasks,
                });
            }
            Command::Cancel {
                provider,
                job,
                task,
            } => self.send_to_device(provider, job, |device, epoch, job| Event::Cancel {
                device,
                epoch,
                job,
                task,
            }),
            Command::Voucher {
                job,
                provider,
                cumulative_amount,
                sequence,
                ..
            } => {
                let (Some(&device), Some(job_index)) =
                    (self.by_account.get(&provider), self.job_index(&job))
                else {
                    return;
                };
                let latest = self.vouchers.entry((job_index, device)).or_default();
                if cumulative_amount < latest.0 || sequence <= latest.1 {
                    let message = format!("voucher for {provider} went backwards");
                    self.violation(message);
                    return;
                }
                self.paid += cumulative_amount - latest.0;
                *latest = (cumulative_amount, sequence);
            }
            Command::Fraud { provider, .. } => {
                let Some(&device) = self.by_account.get(&provider) else {
                    return;
                };
                let record = &mut self.devices[device as usize];
                if record.strategy == Strategy::Honest {
                    // A dispute would re-execute the task and find the
                    // honest result right: no slash.
                    self.honest_accused += 1;
                } else if !record.detected {
                    record.detected = true;
                    self.cheaters_detected += 1;
                    let at = self.now + self.config.dispute_delay_ms;
                    self.schedule(at, Event::Slash(device));
                }
            }
            Command::TaskAccepted {
                job, task, outcome, ..
            } => {
                let expected = TaskOutcome::Completed {
                    exit_code: 0,
                    output: truth(job, task),
                };
                let Some(job_index) = self.job_index(&job) else {
                    return;
                };
                let sent = self.wrong_outputs.remove(&(job_index, task));
                if outcome != expected {
                    self.wrong_accepted += 1;
                    let winner = sent.into_iter().flatten().find(|(output, _)| {
                        outcome
                            == TaskOutcome::Completed {
                                exit_code: 0,
                                output: *output,
                            }
                    });
                    if let Some((_, device)) = winner {
                        self.devices[device as usize].wrong_accepted += 1;
                    }
                }
                self.task_decided(job_index);
            }
            Command::TaskFailed { job, task, .. } => {
                if let Some(job_index) = self.job_index(&job) {
                    self.wrong_outputs.remove(&(job_index, task));
                    self.task_decided(job_index);
                }
            }
            Command::JobStalled { .. } => self.stalls += 1,
            Command::JobFinished { job, summary } => {
                let Some(index) = self.job_index(&job) else {
                    return;
                };
                let record = &mut self.jobs[index as usize];
                if record.finished.is_some() {
                    self.violation(format!("job {job} finished twice"));
                    return;
                }
                record.finished = Some(summary);
                if summary.paid > record.budget {
                    self.violation(format!("job {job} paid more than its budget"));
                }
                let next = index + 1;
                if next < self.config.jobs {
                    self.schedule(self.now, Event::SubmitJob(next));
                } else {
                    self.done_at = Some(self.now);
                }
            }
        }
    }

    fn task_decided(&mut self, job: u32) {
        let record = &mut self.jobs[job as usize];
        record.decided += 1;
        if record.decided > self.config.tasks {
            let message = format!("job {} decided a task twice", record.id);
            self.violation(message);
        }
    }

    fn totals(&self) -> JobSummary {
        let mut total = JobSummary::default();
        for job in &self.jobs {
            let summary = job
                .finished
                .or_else(|| self.market.summary(&job.id))
                .unwrap_or_default();
            total.tasks_accepted += summary.tasks_accepted;
            total.tasks_failed += summary.tasks_failed;
            total.fuel_executed += summary.fuel_executed;
            total.fuel_useful += summary.fuel_useful;
            total.paid += summary.paid;
        }
        total
    }

    fn record_sample(&mut self) {
        let totals = self.totals();
        let sample = Sample {
            time_ms: self.now,
            tasks_accepted: totals.tasks_accepted,
            tasks_failed: totals.tasks_failed,
            fuel_executed: totals.fuel_executed,
            fuel_useful: totals.fuel_useful,
            devices_online: self.online,
            tasks_in_flight: self.in_flight,
            wrong_accepted: self.wrong_accepted,
            cheaters_detected: self.cheaters_detected,
            paid: self.paid,
        };
        if self.samples.last().map(|last| last.time_ms) == Some(self.now) {
            self.samples.pop();
        }
        self.samples.push(sample);
    }

    fn report(&mut self, wall: Duration) -> Report {
        let totals = self.totals();
        if totals.paid != self.paid {
            let message = format!(
                "vouchers add up to {} but the market paid {}",
                self.paid, totals.paid
            );
            self.violation(message);
        }
        let mut strategies: Vec<StrategyStats> = Vec::new();
        for device in &self.devices {
            let name = device.strategy.name();
            let index = match strategies.iter().position(|stats| stats.strategy == name) {
                Some(index) => index,
                None => {
                    strategies.push(StrategyStats {
                        strategy: name,
                        ..StrategyStats::default()
                    });
                    strategies.len() - 1
                }
            };
            let stats = &mut strategies[index];
            stats.devices += 1;
            stats.active += u64::from(device.tasks_completed > 0);
            stats.lied += u64::from(device.wrong_sent > 0);
            stats.wrong_accepted += device.wrong_accepted;
            stats.detected += u64::from(device.detected);
            stats.slashed += u64::from(device.slashed);
            stats.tasks_completed += device.tasks_completed;
            stats.wrong_results_sent += device.wrong_sent;
        }
        strategies.sort_by_key(|stats| Strategy::parse(stats.strategy));
        let ratio = |executed: u64, useful: u64| {
            if useful == 0 {
                0.0
            } else {
                executed as f64 / useful as f64
            }
        };
        let last = self
            .jobs
            .last()
            .and_then(|job| job.finished.or_else(|| self.market.summary(&job.id)))
            .unwrap_or_default();
        let finished_jobs = self
            .jobs
            .iter()
            .filter(|job| job.finished.is_some())
            .count();
        Report {
            finished: self.done_at.is_some(),
            jobs_finished: finished_jobs as u32,
            tasks: self.config.tasks * u64::from(self.config.jobs),
            tasks_accepted: totals.tasks_accepted,
            tasks_failed: totals.tasks_failed,
            makespan_ms: self.done_at.unwrap_or(self.now),
            fuel_executed: totals.fuel_executed,
            fuel_useful: totals.fuel_useful,
            overhead: ratio(totals.fuel_executed, totals.fuel_useful),
            last_job_overhead: ratio(last.fuel_executed, last.fuel_useful),
            fuel_burned: self.fuel_burned,
            wrong_accepted: self.wrong_accepted,
            cheaters: self
                .devices
                .iter()
                .filter(|device| device.strategy != Strategy::Honest)
                .count() as u64,
            cheaters_active: self
                .devices
                .iter()
                .filter(|device| device.strategy != Strategy::Honest && device.tasks_completed > 0)
                .count() as u64,
            cheaters_lied: self
                .devices
                .iter()
                .filter(|device| device.wrong_sent > 0)
                .count() as u64,
            cheaters_detected: self.cheaters_detected,
            honest_accused: self.honest_accused,
            strategies,
            paid: self.paid,
            budget: self.jobs.iter().map(|job| job.budget).sum(),
            crashes: self.crashes,
            departures: self.departures,
            tasks_lost_to_churn: self.tasks_lost_to_churn,
            assignments: self.assignments,
            stalls: self.stalls,
            events: self.events,
            violations: self.violations.clone(),
            wall_ms: wall.as_millis() as u64,
        }
    }
}

/// A task's fuel: deterministic, spread ±50% around the configured mean.
fn task_fuel(config: &SimConfig, job: u32, task: u64) -> u64 {
    let mut rng = SplitMix64::new(config.seed ^ (u64::from(job) << 48) ^ task);
    let spread = 0.5 + rng.unit();
    ((config.task_fuel as f64 * spread) as u64).max(1)
}

/// The right output of a task.
fn truth(job: JobId, task: u64) -> ContentId {
    let mut bytes = [0u8; 40];
    bytes[..32].copy_from_slice(job.as_bytes());
    bytes[32..].copy_from_slice(&task.to_le_bytes());
    ContentId::of(&bytes)
}

/// A wrong output, the same for the same `(job, task, kind, who)`.
fn wrong(job: JobId, task: u64, kind: &[u8], who: u64) -> ContentId {
    let mut bytes = Vec::with_capacity(56);
    bytes.extend_from_slice(job.as_bytes());
    bytes.extend_from_slice(&task.to_le_bytes());
    bytes.extend_from_slice(kind);
    bytes.extend_from_slice(&who.to_le_bytes());
    ContentId::of(&bytes)
}
