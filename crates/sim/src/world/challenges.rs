//! Capacity challenges: each epoch a share of the devices is challenged
//! (drawn by [`ChallengeRules::challenged`] from the epoch's randomness),
//! each one online computes the challenge's fuel at its real speed (less
//! a random slowdown up to `speed_noise`), and its answer is judged by
//! [`ChallengeRules::judge`] against the speed it offers. A late answer
//! brings the device's offer down to the speed it proved, so the market
//! places work by what a device has, not by what it claims; an offline
//! device misses its challenge.

use idlegrid_types::{ChallengeRules, ChallengeVerdict};

use super::{Event, Simulation};

/// What the challenges of a run found.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct CapacityStats {
    pub epochs: u64,
    pub challenges: u64,
    pub on_time: u64,
    pub late: u64,
    pub missed: u64,
    /// Devices that offer more speed than they have.
    pub liars: u64,
    /// Liars challenged at least once while online (the others never had
    /// a chance to be caught).
    pub liars_challenged: u64,
    /// Liars whose offer a late answer corrected.
    pub liars_caught: u64,
    /// Honest devices judged late (penalized wrongly); 0 in a sound setup.
    pub honest_late: u64,
    /// Mean simulated time from a liar's first challenge to its
    /// correction.
    pub mean_ms_to_catch: u64,
    /// Largest gap between a caught liar's proven speed and its real one,
    /// as a share of the real one (the proof's accuracy).
    pub proven_error_max: f64,
}

impl Simulation {
    pub(super) fn challenge_rules(&self) -> ChallengeRules {
        ChallengeRules {
            fuel: self.config.challenge_fuel,
            slack_bps: self.config.challenge_slack_bps,
            round_trip_ms: self.config.challenge_round_trip_ms,
            share_bps: self.config.challenge_share_bps,
        }
    }

    /// An epoch's challenges, and the next epoch.
    pub(super) fn challenge_epoch(&mut self) {
        let rules = self.challenge_rules();
        let mut randomness = [0u8; 32];
        for chunk in randomness.chunks_exact_mut(8) {
            chunk.copy_from_slice(&self.rng.next_u64().to_le_bytes());
        }
        self.capacity.epochs += 1;
        for index in 0..self.devices.len() as u32 {
            let record = &self.devices[index as usize];
            if !rules.challenged(&randomness, &record.id) {
                continue;
            }
            self.capacity.challenges += 1;
            let offered = record.offered();
            if !record.online {
                self.judge_challenge(index, offered, None);
                continue;
            }
            if record.capacity_liar && record.first_challenged_ms.is_none() {
                self.devices[index as usize].first_challenged_ms = Some(self.now);
                self.capacity.liars_challenged += 1;
            }
            let record = &self.devices[index as usize];
            let slowdown = 1.0 - self.rng.unit() * self.config.speed_noise;
            let speed = (record.speed as f64 * slowdown).max(1.0);
            let computing_ms = (rules.fuel as f64 * 1_000.0 / speed).ceil() as u64;
            let after_ms = 2 * record.latency_ms + computing_ms;
            let epoch = record.epoch;
            self.schedule(
                self.now + after_ms,
                Event::ChallengeAnswer {
                    device: index,
                    epoch,
                    offered,
                    after_ms,
                },
            );
        }
        self.schedule(
            self.now + self.config.challenge_epoch_ms,
            Event::ChallengeEpoch,
        );
    }

    /// A challenge's answer arrives (unless its device left meanwhile:
    /// then it never does).
    pub(super) fn challenge_answered(
        &mut self,
        index: u32,
        epoch: u32,
        offered: u64,
        after_ms: u64,
    ) {
        let answered = (self.devices[index as usize].epoch == epoch).then_some(after_ms);
        self.judge_challenge(index, offered, answered);
    }

    fn judge_challenge(&mut self, index: u32, offered: u64, answered_after_ms: Option<u64>) {
        let verdict = self.challenge_rules().judge(offered, answered_after_ms);
        let now = self.now;
        let record = &mut self.devices[index as usize];
        match verdict {
            ChallengeVerdict::OnTime => self.capacity.on_time += 1,
            ChallengeVerdict::Missed => self.capacity.missed += 1,
            ChallengeVerdict::Late {
                proven_fuel_per_second,
            } => {
                self.capacity.late += 1;
                if !record.capacity_liar {
                    self.capacity.honest_late += 1;
                } else if record.proven.is_none() {
                    self.capacity.liars_caught += 1;
                    let since = record.first_challenged_ms.unwrap_or(now);
                    self.caught_ms_total += now - since;
                    let error = (proven_fuel_per_second as f64 - record.speed as f64).abs()
                        / record.speed as f64;
                    self.capacity.proven_error_max = self.capacity.proven_error_max.max(error);
                }
                record.proven = Some(record.proven.map_or(proven_fuel_per_second, |proven| {
                    proven.min(proven_fuel_per_second)
                }));
                if record.online {
                    self.send_offer(index);
                }
            }
        }
    }

    pub(super) fn capacity_stats(&self) -> CapacityStats {
        let mut stats = self.capacity.clone();
        stats.liars = self
            .devices
            .iter()
            .filter(|device| device.capacity_liar)
            .count() as u64;
        stats.mean_ms_to_catch = self
            .caught_ms_total
            .checked_div(stats.liars_caught)
            .unwrap_or(0);
        stats
    }
}
