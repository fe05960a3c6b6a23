//! Verification and payment: results that agree accepted on a quorum, a
//! disagreement sent to a referee whose re-execution decides (never a
//! vote), liars reported and the tasks they vouched for checked again,
//! the right answers paid with cumulative vouchers.

use idlegrid_types::{AccountId, JobId, TaskOutcome};

use super::audit::Backing;
use super::{Market, ProviderIndex, Received, Task, TaskStatus, cost};
use crate::types::{Command, Decision, FraudEvidence, Millis, Policy, TaskResult, Trust};

/// How often, per mille, a trusted provider's result is checked again: the
/// more history, the less often (`trust.halving / (trust.halving +
/// history)`), never below `trust.floor_permille`, and never so seldom that
/// a lie pays. A lie earns at most `value` when it goes unchecked and costs
/// `slashable` when checked, so with odds `q` its expected gain is
/// `(1 - q) * value - q * slashable`; `q` is kept at least twice the
/// break-even `value / (value + slashable)`, making every lie a loss in
/// expectation whatever the liar did before or does after.
pub fn spot_check_permille(history: u32, value: u64, slashable: u64, trust: &Trust) -> u32 {
    let halving = u64::from(trust.halving);
    let by_history = (1_000 * halving)
        .checked_div(halving + u64::from(history))
        .unwrap_or(0) as u32;
    let stakes = u128::from(value) + u128::from(slashable);
    let by_stake = if stakes == 0 {
        1_000
    } else {
        (2_000 * u128::from(value)).div_ceil(stakes).min(1_000) as u32
    };
    by_history
        .max(by_stake)
        .max(trust.floor_permille)
        .min(1_000)
}

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
        let Some(task) = job.tasks.get_mut(task_index) else {
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
        if self.providers[index as usize].caught {
            // Its word counts for nothing: the replica is asked elsewhere.
            Self::release_reservation(job, task_index);
            self.evaluate(now, job_id, task_index, commands);
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
        let Some(task) = job.tasks.get_mut(task_index) else {
            return;
        };
        if task.status != TaskStatus::Open {
            return;
        }
        job.summary.fuel_executed = job.summary.fuel_executed.saturating_add(result.fuel_used);
        task.results.push(Received {
            provider: index,
            vouched: self.providers[index as usize].history(self.fuel_per_task) > 0,
            outcome: result.outcome,
            fuel_used: result.fuel_used,
            receipt: result.receipt,
            paid: false,
        });
        if job.spec.policy == Policy::Adaptive && task.results.len() == 1 && task.quorum == 1 {
            // Accepted on its word alone only when its history earns it,
            // its stake covers the value so accepted, and no spot check
            // falls on it.
            let value = cost(result.fuel_used, job.spec.price_per_million_fuel);
            let provider = &mut self.providers[index as usize];
            let history = provider.history(self.fuel_per_task);
            let trusted = history >= self.config.trust.after;
            let covered = provider.exposed.saturating_add(value) <= provider.standing.slashable;
            let spot_check = trusted && covered && {
                let permille = spot_check_permille(
                    history,
                    value,
                    provider.standing.slashable,
                    &self.config.trust,
                );
                self.rng.chance_permille(permille)
            };
            if !trusted || !covered || spot_check {
                task.quorum = 2;
            } else {
                provider.exposed += value;
                *job.exposed.entry(index).or_default() += value;
            }
        }
        self.evaluate(now, job_id, task_index, commands);
    }

    /// Accepts the task when a quorum of providers not caught lying
    /// returned one (outcome, fuel) and nobody returned anything else;
    /// sends a disagreement to a referee, never to a vote; otherwise asks
    /// for more replicas, or gives up.
    pub(super) fn evaluate(
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
        let Some(task) = job.tasks.get(task_index) else {
            return;
        };
        if task.status != TaskStatus::Open || task.refereeing {
            return;
        }
        if let Some(truth) = task.verdict {
            self.judge(now, job_id, task_index, truth, commands);
            return;
        }
        let best = task
            .results
            .first()
            .map(|first| (first.outcome, first.fuel_used));
        let disagreeing = task
            .results
            .iter()
            .find(|result| Some((result.outcome, result.fuel_used)) != best);
        if let (Some(first), Some(other)) = (task.results.first(), disagreeing) {
            // Execution is deterministic: a disagreement means someone
            // lied, and running the task once more says who.
            let evidence = match (&first.receipt, &other.receipt) {
                (Some(first), Some(other)) => {
                    Some(Box::new(((**first).clone(), (**other).clone())))
                }
                _ => None,
            };
            if let Some(task) = job.tasks.get_mut(task_index) {
                task.refereeing = true;
            }
            job.summary.tasks_refereed += 1;
            commands.push(Command::Referee {
                job: job_id,
                task: task_index,
                evidence,
            });
            return;
        }
        // Every result agrees; only the word of providers not caught lying
        // counts towards the quorum.
        let providers = &self.providers;
        let honest = |result: &&Received| !providers[result.provider as usize].caught;
        let votes = task.results.iter().filter(honest).count();
        // Under the adaptive policy fresh identities cannot vouch for each
        // other: a replicated result backed only by providers with no
        // validated history needs one more matching vote, so a pair of new
        // colluding (or identically lazy) providers never carries a task on
        // its own. An explicit `Replicas(n)` means exactly n, and a book too
        // small to find third opinions (a devnet) goes without.
        let vouched = task
            .results
            .iter()
            .filter(honest)
            .any(|result| result.vouched);
        let quorum = usize::from(task.quorum);
        let vouching = job.spec.policy == Policy::Adaptive
            && self.providers.len() >= self.config.vouching_providers_min;
        let needed = if vouching && quorum >= 2 && !vouched {
            quorum + 1
        } else {
            quorum
        };
        if let Some(best) = best
            && votes >= needed
        {
            self.accept(now, job_id, task_index, best, Decision::Quorum, commands);
            return;
        }
        // Expired leases are not waited for: each was replaced when it expired
        // (its late result still counts if it comes).
        let total = task.results.len();
        let outstanding = task.running.len() + usize::from(task.queued);
        if total + outstanding >= replicas_max {
            if outstanding == 0 {
                self.fail_task(
                    now,
                    job_id,
                    task_index,
                    "too few providers not caught lying answered it",
                    commands,
                );
            }
            return;
        }
        if outstanding == 0
            && self.config.referee_unanswerable
            && !self.could_answer(job_id, task_index)
        {
            self.referee_unanswerable(job_id, task_index, commands);
            return;
        }
        let Some(job) = self.jobs.get_mut(&job_id) else {
            return;
        };
        let missing = needed.saturating_sub(votes).max(1);
        for _ in outstanding..missing {
            Self::requeue(job, task_index);
        }
    }

    /// Nobody left may give another opinion on a task: a re-execution
    /// confirms its results (or the task fails, saying so).
    pub(super) fn referee_unanswerable(
        &mut self,
        job_id: JobId,
        task_index: u64,
        commands: &mut Vec<Command>,
    ) {
        let Some(job) = self.jobs.get_mut(&job_id) else {
            return;
        };
        let Some(task) = job.tasks.get_mut(task_index) else {
            return;
        };
        if task.status != TaskStatus::Open || task.refereeing {
            return;
        }
        task.refereeing = true;
        job.summary.tasks_refereed += 1;
        commands.push(Command::Referee {
            job: job_id,
            task: task_index,
            evidence: None,
        });
    }

    /// Whether a provider in the book, not caught lying, with an offer and
    /// stake, has yet to hold or answer this task; or whether nobody offers
    /// at all yet (providers may still come).
    pub(super) fn could_answer(&self, job_id: JobId, task_index: u64) -> bool {
        let Some(job) = self.jobs.get(&job_id) else {
            return false;
        };
        let Some(task) = job.tasks.get(task_index) else {
            return false;
        };
        let pinned = self.pinned_class(job, &task.holders());
        let mut anyone_offers = false;
        for (index, provider) in self.providers.iter().enumerate() {
            let serves = provider.offer.as_ref().is_some_and(|offer| {
                super::serves(offer, &job.spec)
                    && pinned.is_none_or(|class| {
                        offer.gpu.as_ref().is_some_and(|gpu| gpu.same_class(class))
                    })
            });
            if !serves || provider.standing.stake < self.config.minimum_stake {
                continue;
            }
            anyone_offers = true;
            let index = index as ProviderIndex;
            let asked = task.results.iter().any(|result| result.provider == index)
                || task.expired.contains(&index)
                || task.running.iter().any(|(held, _)| *held == index);
            if !provider.caught && !asked {
                return true;
            }
        }
        !anyone_offers
    }

    /// A re-execution's verdict on a task.
    pub(super) fn verdict(
        &mut self,
        now: Millis,
        job_id: JobId,
        task_index: u64,
        truth: (TaskOutcome, u64),
        output_held: bool,
        commands: &mut Vec<Command>,
    ) {
        let Some(task) = self
            .jobs
            .get_mut(&job_id)
            .and_then(|job| job.tasks.get_mut(task_index))
        else {
            return;
        };
        if task.status != TaskStatus::Open {
            return;
        }
        task.refereeing = false;
        task.verdict = Some(truth);
        task.output_held = output_held;
        self.judge(now, job_id, task_index, truth, commands);
    }

    /// Judges a task's results by the truth: those that differ are fraud,
    /// their providers caught; the task is accepted with the truth when a
    /// result matches it (those providers paid) or the caller holds its
    /// output, and placed again otherwise.
    fn judge(
        &mut self,
        now: Millis,
        job_id: JobId,
        task_index: u64,
        truth: (TaskOutcome, u64),
        commands: &mut Vec<Command>,
    ) {
        let Some(job) = self.jobs.get_mut(&job_id) else {
            return;
        };
        let Some(task) = job.tasks.get_mut(task_index) else {
            return;
        };
        let matches = |result: &Received| (result.outcome, result.fuel_used) == truth;
        let honest_receipt = task
            .results
            .iter()
            .find(|result| matches(result))
            .and_then(|result| result.receipt.clone());
        let mut liars = Vec::new();
        let mut kept = Vec::with_capacity(task.results.len());
        for result in std::mem::take(&mut task.results) {
            if matches(&result) {
                kept.push(result);
                continue;
            }
            // Evidence: the losing receipt against one that differs from
            // it (the truth's, or another lie), both signed.
            let other = honest_receipt.clone().or_else(|| {
                kept.iter()
                    .chain(liars.iter().map(|(liar, _)| liar))
                    .find(|other: &&Received| {
                        (other.outcome, other.fuel_used) != (result.outcome, result.fuel_used)
                    })
                    .and_then(|other| other.receipt.clone())
            });
            let evidence = result.receipt.as_ref().map(|losing| {
                Box::new(match other {
                    Some(other) => FraudEvidence::Conflicting(*other, (**losing).clone()),
                    None => FraudEvidence::Lone((**losing).clone()),
                })
            });
            liars.push((result, evidence));
        }
        let any_match = !kept.is_empty();
        let output_held = task.output_held;
        task.results = kept;
        for (liar, evidence) in liars {
            commands.push(Command::Fraud {
                job: job_id,
                task: task_index,
                provider: self.providers[liar.provider as usize].id,
                evidence,
            });
            self.catch(now, liar.provider, commands);
        }
        if any_match || output_held {
            self.accept(
                now,
                job_id,
                task_index,
                truth,
                Decision::ReExecution,
                commands,
            );
            return;
        }
        // Nobody answered right and the truth's output is not at hand: a
        // provider not caught lying must produce it.
        let Some(job) = self.jobs.get_mut(&job_id) else {
            return;
        };
        if job.tasks.get(task_index).is_some_and(|task| {
            task.status == TaskStatus::Open && task.running.is_empty() && task.queued == 0
        }) {
            Self::requeue(job, task_index);
        }
    }

    /// A provider was shown to have lied: it gets no more work, and every
    /// task of an open job accepted on its word is placed again.
    fn catch(&mut self, now: Millis, index: ProviderIndex, commands: &mut Vec<Command>) {
        let provider = &mut self.providers[index as usize];
        provider.streak = 0;
        if provider.caught {
            return;
        }
        provider.caught = true;
        self.rerank(now, index);
        let job_ids: Vec<JobId> = self.jobs.keys().copied().collect();
        for job_id in job_ids {
            let Some(job) = self.jobs.get_mut(&job_id) else {
                continue;
            };
            for backing in Backing::naming(job.audit.as_mut(), index) {
                self.reopen(now, job_id, backing, commands);
            }
        }
    }

    /// Places an accepted task again because a provider caught lying
    /// vouched for it; its backers' results stay (paid already) and are
    /// weighed again. A record of an acceptance since undone (the task was
    /// reopened after it) no longer stands.
    fn reopen(
        &mut self,
        now: Millis,
        job_id: JobId,
        backing: Backing,
        commands: &mut Vec<Command>,
    ) {
        let Some(job) = self.jobs.get_mut(&job_id) else {
            return;
        };
        let task_index = backing.task;
        let generation = job.tasks.reopened.get(&task_index).copied().unwrap_or(0);
        let accepted = job.tasks.is_decided(task_index) && job.tasks.get(task_index).is_none();
        if !accepted || generation != backing.generation {
            return;
        }
        let (outcome, fuel_used) = (backing.outcome, backing.fuel_used);
        let energy_millijoules = backing
            .receipt
            .as_ref()
            .map(|receipt| receipt.body.energy_millijoules);
        let backers = backing
            .providers
            .iter()
            .map(|index| self.providers[*index as usize].id)
            .collect();
        let mut receipt = backing.receipt.map(Box::new);
        let mut task = Task::new(backing.quorum, generation.saturating_add(1));
        task.results = backing
            .providers
            .iter()
            .map(|provider| Received {
                provider: *provider,
                vouched: false,
                outcome,
                fuel_used,
                receipt: receipt.take(),
                paid: true,
            })
            .collect();
        job.tasks.open.insert(task_index, task);
        job.tasks
            .reopened
            .insert(task_index, generation.saturating_add(1));
        job.tasks.set_decided(task_index, false);
        job.decided -= 1;
        job.summary.tasks_accepted -= 1;
        job.summary.fuel_useful = job.summary.fuel_useful.saturating_sub(fuel_used);
        job.summary.tasks_reopened += 1;
        commands.push(Command::TaskReopened {
            job: job_id,
            task: task_index,
            outcome,
            backers,
            energy_millijoules,
        });
        self.evaluate(now, job_id, task_index, commands);
    }

    fn accept(
        &mut self,
        now: Millis,
        job_id: JobId,
        task_index: u64,
        (outcome, fuel_used): (TaskOutcome, u64),
        decision: Decision,
        commands: &mut Vec<Command>,
    ) {
        let Some(job) = self.jobs.get_mut(&job_id) else {
            return;
        };
        let Some(task) = job.tasks.get_mut(task_index) else {
            return;
        };
        task.status = TaskStatus::Accepted;
        let amount = cost(fuel_used, job.spec.price_per_million_fuel);
        let mut backers = Vec::new();
        let mut receipt = None;
        for result in &mut task.results {
            // Every result left agrees with what is accepted.
            let provider = &mut self.providers[result.provider as usize];
            if !provider.caught {
                provider.streak = provider.streak.saturating_add(1);
                backers.push(result.provider);
            }
            if receipt.is_none() {
                receipt = result.receipt.take();
            }
            if !result.paid {
                result.paid = true;
                let owed = job.owed.entry(result.provider).or_default();
                owed.0 += amount;
                owed.1 += fuel_used;
                job.paid += amount;
                job.summary.paid += amount;
                self.dirty.insert((job_id, result.provider));
            }
        }
        if decision == Decision::Quorum {
            // Accepted on these providers' word: if one is caught lying
            // before the job ends, the task is checked again.
            Backing {
                task: task_index,
                generation: task.reopened,
                quorum: task.quorum,
                outcome,
                fuel_used,
                providers: backers,
                receipt: receipt.map(|receipt| *receipt),
            }
            .keep(job.audit.as_mut());
        }
        job.summary.tasks_accepted += 1;
        job.summary.fuel_useful = job.summary.fuel_useful.saturating_add(fuel_used);
        commands.push(Command::TaskAccepted {
            job: job_id,
            task: task_index,
            outcome,
            fuel_used,
            decision,
            rechecked: task.reopened > 0,
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
        let Some(task) = job.tasks.get_mut(task_index) else {
            return;
        };
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
        let running: Vec<ProviderIndex> = match self
            .jobs
            .get(&job_id)
            .and_then(|job| job.tasks.get(task_index))
        {
            Some(task) => task.running.iter().map(|(index, _)| *index).collect(),
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
        if let Some(task) = job.tasks.get(task_index) {
            job.reserved -= u64::from(task.reserved) * job.cost_per_assignment;
        }
        // A decided task keeps only its bit (and what an audit needs, on
        // disk): with millions of tasks anything more would dominate memory.
        job.tasks.close(task_index);
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
