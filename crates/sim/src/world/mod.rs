//! The simulated world: devices with their speed, cores, latency, sessions
//! and honesty; the messages between them and the requestor; and the
//! requestor's real [`Market`], all advanced by one seeded event queue.
//!
//! The devices' behaviour is in `device`, capacity challenges in
//! `challenges`, what a run reports in `report`, and what it is configured
//! with in `config`; the event loop and the requestor's side are here.

mod challenges;
mod config;
mod device;
mod report;

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::time::Instant;

use idlegrid_market::{
    Command, Input, JobSpec, JobSummary, Market, MarketConfig, Millis, SplitMix64, Standing,
};
use idlegrid_types::{AccountId, ContentId, ExecutionLimits, JobId, TaskOutcome};

use crate::Sample;
use device::truth;

pub use challenges::CapacityStats;
pub use config::{SimConfig, Strategy};
pub use report::{DeviceStats, Report, StrategyStats};

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
    /// The speed it claims (its benchmark, or more for a capacity liar).
    claimed: u64,
    /// The speed a late challenge answer proved, once one has.
    proven: Option<u64>,
    /// Offers more speed than it has.
    capacity_liar: bool,
    /// When it was first challenged while online.
    first_challenged_ms: Option<Millis>,
}

impl Device {
    /// The speed it offers: its claim, or what a challenge proved.
    fn offered(&self) -> u64 {
        self.proven
            .map_or(self.claimed, |proven| proven.min(self.claimed))
    }
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
    /// An epoch's capacity challenges.
    ChallengeEpoch,
    /// A challenge's answer reaches the chain.
    ChallengeAnswer {
        device: u32,
        epoch: u32,
        /// The speed offered when it was challenged.
        offered: u64,
        after_ms: u64,
    },
}

#[derive(Debug)]
struct SimJob {
    id: JobId,
    budget: u64,
    finished: Option<JobSummary>,
    /// Summary of the job's results as the market keeps them.
    decided: u64,
    /// Fuel the requestor spent re-executing this job's tasks.
    fuel_refereed: u64,
}

/// Offers last this long; devices renew them at half-life.
const OFFER_TTL_MS: Millis = 10 * 60_000;
/// Share of a provider's stake one slash takes: the ledger's default.
const SLASH_FRACTION_BPS: u16 = 5_000;

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
    /// Tasks accepted now with a wrong result, and the device whose output
    /// it was (if one sent it): a reopened task leaves this set.
    wrong_standing: HashMap<(u32, u64), Option<u32>>,
    /// Wrong results accepted at some point (reopened ones included).
    wrong_accepted_ever: u64,
    honest_accused: u64,
    /// Fuel the requestor spent re-executing tasks whose results disagreed.
    fuel_refereed: u64,
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
    capacity: CapacityStats,
    /// Sum over caught liars of the time from first challenge to catch.
    caught_ms_total: u64,
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
                claimed: speed,
                proven: None,
                capacity_liar: false,
                first_challenged_ms: None,
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
            device.claimed = device.speed;
            // Drawn only when asked for, so runs without liars replay as
            // they did before challenges existed.
            if config.capacity_liar_fraction > 0.0 && rng.unit() < config.capacity_liar_fraction {
                device.capacity_liar = true;
                device.claimed = (device.speed as f64 * config.claim_factor).round() as u64;
            }
        }
        for (index, device) in devices.iter().enumerate() {
            by_account.insert(device.id, index as u32);
        }
        let market = Market::new(MarketConfig {
            seed: config.seed ^ 0x6d61_726b_6574,
            offers_max: (config.devices as usize).max(1),
            // Like a requestor: it checks lone results itself only when
            // its tasks are within its re-execution limit.
            referee_unanswerable: config.task_fuel.saturating_mul(2) <= config.referee_fuel_max,
            trust: config.trust,
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
            wrong_standing: HashMap::new(),
            wrong_accepted_ever: 0,
            honest_accused: 0,
            fuel_refereed: 0,
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
            capacity: CapacityStats::default(),
            caught_ms_total: 0,
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
        if self.config.challenge_epoch_ms > 0 {
            self.schedule(self.config.challenge_epoch_ms, Event::ChallengeEpoch);
        }
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
                self.deliver(Input::Standing {
                    provider: id,
                    standing: Standing::default(),
                });
            }
            Event::SubmitJob(index) => self.submit_job(index),
            Event::ChallengeEpoch => self.challenge_epoch(),
            Event::ChallengeAnswer {
                device,
                epoch,
                offered,
                after_ms,
            } => self.challenge_answered(device, epoch, offered, after_ms),
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
            fuel_refereed: 0,
        });
        self.deliver(Input::SubmitJob(JobSpec {
            id,
            module: self.module,
            task_count: self.config.tasks,
            limits: self.limits,
            price_per_million_fuel: self.config.price_per_million_fuel,
            policy: self.config.policy,
            budget,
            input_bytes: 0,
            gpu: None,
        }));
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
                    self.wrong_accepted_ever += 1;
                    let winner = sent.into_iter().flatten().find(|(output, _)| {
                        outcome
                            == TaskOutcome::Completed {
                                exit_code: 0,
                                output: *output,
                            }
                    });
                    let device = winner.map(|(_, device)| device);
                    if let Some(device) = device {
                        self.devices[device as usize].wrong_accepted += 1;
                    }
                    self.wrong_standing.insert((job_index, task), device);
                }
                self.task_decided(job_index);
            }
            Command::TaskReopened { job, task, .. } => {
                let Some(job_index) = self.job_index(&job) else {
                    return;
                };
                if let Some(device) = self.wrong_standing.remove(&(job_index, task)).flatten() {
                    self.devices[device as usize].wrong_accepted -= 1;
                }
                self.jobs[job_index as usize].decided -= 1;
            }
            Command::Referee { job, task, .. } => {
                // The requestor re-executes the task itself, holding the
                // output, or the ledger does through a dispute.
                let Some(job_index) = self.job_index(&job) else {
                    return;
                };
                let fuel = device::task_fuel(&self.config, job_index, task);
                let (delay_ms, output_held) = if fuel <= self.config.referee_fuel_max {
                    self.fuel_refereed += fuel;
                    (fuel * 1_000 / self.config.median_speed.max(1), true)
                } else {
                    (self.config.dispute_delay_ms, false)
                };
                let verdict = Input::Verdict {
                    job,
                    task,
                    outcome: TaskOutcome::Completed {
                        exit_code: 0,
                        output: truth(job, task),
                    },
                    fuel_used: fuel,
                    output_held,
                };
                self.schedule(self.now + delay_ms.max(1), Event::ToMarket(verdict));
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
}
