//! The devices: coming and going, running the tasks they are given, and
//! answering honestly or not.

use idlegrid_market::{Input, SplitMix64, Standing, TaskResult};
use idlegrid_types::{ContentId, JobId, Offer, TaskOutcome};

use super::{
    Event, OFFER_TTL_MS, SLASH_FRACTION_BPS, SimConfig, Simulation, Strategy, exponential,
};

impl Simulation {
    pub(super) fn arrive(&mut self, index: u32) {
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
            Event::ToMarket(Input::Standing {
                provider: id,
                standing: if slashed {
                    Standing::default()
                } else {
                    Standing::staked(self.config.stake, SLASH_FRACTION_BPS)
                },
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

    pub(super) fn send_offer(&mut self, index: u32) {
        let record = &mut self.devices[index as usize];
        record.offer_sequence += 1;
        let offer = Offer {
            cores: record.cores,
            memory_bytes: 4 << 30,
            gpu: None,
            benchmark_fuel_per_second: record.offered(),
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

    pub(super) fn depart(&mut self, index: u32) {
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

    pub(super) fn start_tasks(&mut self, index: u32) {
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

    pub(super) fn finish(&mut self, index: u32, job: u32, task: u64) {
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
}

/// A task's fuel: deterministic, spread ±50% around the configured mean.
pub(super) fn task_fuel(config: &SimConfig, job: u32, task: u64) -> u64 {
    let mut rng = SplitMix64::new(config.seed ^ (u64::from(job) << 48) ^ task);
    let spread = 0.5 + rng.unit();
    ((config.task_fuel as f64 * spread) as u64).max(1)
}

/// The right output of a task.
pub(super) fn truth(job: JobId, task: u64) -> ContentId {
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
