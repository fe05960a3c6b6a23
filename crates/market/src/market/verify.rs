//! Verification and payment: results tallied into a decision, the
//! winners owed and the losers reported, and cumulative vouchers.

use idlegrid_types::{AccountId, JobId, TaskOutcome};

use super::{Market, ProviderIndex, Received, TaskStatus, cost};
use crate::types::{Command, Millis, Policy, TaskResult};

impl Market {
    pub(super) fn result(
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

    pub(super) fn fail_task(
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

    pub(super) fn emit_vouchers(&mut self, commands: &mut Vec<Command>) {
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
