//! What a run did: the [`Report`], per-strategy and per-device figures,
//! and the samples taken along the way.

use std::time::Duration;

use idlegrid_market::JobSummary;
use idlegrid_types::AccountId;

use super::{CapacityStats, Simulation, Strategy};
use crate::Sample;

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
    /// `(fuel_executed + fuel_refereed) / fuel_useful`.
    pub overhead: f64,
    /// The same over the last job only: with trust carried over from the
    /// jobs before it.
    pub last_job_overhead: f64,
    /// Fuel devices spent, including cancelled and crashed work.
    pub fuel_burned: u64,
    /// Fuel the requestor spent re-executing tasks whose results disagreed
    /// (counted in the overheads).
    pub fuel_refereed: u64,
    /// Tasks whose results disagreed and went to a referee.
    pub tasks_refereed: u64,
    /// Accepted tasks checked again because a provider that vouched for
    /// them was caught lying.
    pub tasks_reopened: u64,
    /// Wrong results standing accepted at the end (after the rechecks).
    pub wrong_accepted: u64,
    /// Wrong results accepted at some point, rechecked ones included.
    pub wrong_accepted_before_rechecks: u64,
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
    /// What capacity challenges found (all zero without challenges).
    pub capacity: CapacityStats,
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
    /// The speed it claims, and the speed a late challenge answer proved.
    pub claimed: u64,
    pub proven: Option<u64>,
    pub capacity_liar: bool,
}

impl Simulation {
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
                claimed: device.claimed,
                proven: device.proven,
                capacity_liar: device.capacity_liar,
            })
            .collect()
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
            total.tasks_refereed += summary.tasks_refereed;
            total.tasks_reopened += summary.tasks_reopened;
        }
        total
    }

    pub(super) fn record_sample(&mut self) {
        let totals = self.totals();
        let sample = Sample {
            time_ms: self.now,
            tasks_accepted: totals.tasks_accepted,
            tasks_failed: totals.tasks_failed,
            fuel_executed: totals.fuel_executed,
            fuel_useful: totals.fuel_useful,
            devices_online: self.online,
            tasks_in_flight: self.in_flight,
            wrong_accepted: self.wrong_standing.len() as u64,
            cheaters_detected: self.cheaters_detected,
            paid: self.paid,
        };
        if self.samples.last().map(|last| last.time_ms) == Some(self.now) {
            self.samples.pop();
        }
        self.samples.push(sample);
    }

    pub(super) fn report(&mut self, wall: Duration) -> Report {
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
        let last_refereed = self.jobs.last().map_or(0, |job| job.fuel_refereed);
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
            overhead: ratio(
                totals.fuel_executed + self.fuel_refereed,
                totals.fuel_useful,
            ),
            last_job_overhead: ratio(last.fuel_executed + last_refereed, last.fuel_useful),
            fuel_burned: self.fuel_burned,
            fuel_refereed: self.fuel_refereed,
            tasks_refereed: totals.tasks_refereed,
            tasks_reopened: totals.tasks_reopened,
            wrong_accepted: self.wrong_standing.len() as u64,
            wrong_accepted_before_rechecks: self.wrong_accepted_ever,
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
            capacity: self.capacity_stats(),
            wall_ms: wall.as_millis() as u64,
        }
    }
}
