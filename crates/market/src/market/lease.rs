//! Leases: a provider's hold on a task ending by result, failure, expiry
//! or loss, and the replicas requeued in its place.

use idlegrid_types::{AccountId, JobId};

use super::{Job, Late, Market, ProviderIndex};
use crate::types::{Command, Millis};

/// Expired leases remembered per provider before decided ones are pruned.
const LATE_HOLDS_MAX: usize = 1024;

impl Market {
    /// Ends a provider's hold on a task (result, failure or expiry).
    pub(super) fn release(
        &mut self,
        now: Millis,
        index: ProviderIndex,
        job_id: JobId,
        task_index: u64,
    ) -> bool {
        let Some(job) = self.jobs.get_mut(&job_id) else {
            return false;
        };
        let Some(task) = job.tasks.get_mut(task_index) else {
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

    pub(super) fn release_reservation(job: &mut Job, task_index: u64) {
        let Some(task) = job.tasks.get_mut(task_index) else {
            return;
        };
        if task.reserved > 0 {
            task.reserved -= 1;
            job.reserved -= job.cost_per_assignment;
        }
    }

    /// Queues one more replica of a task, ahead of tasks not yet started:
    /// finishing started tasks first keeps latency low and lets trust form.
    pub(super) fn requeue(job: &mut Job, task_index: u64) {
        let Some(task) = job.tasks.get_mut(task_index) else {
            return;
        };
        task.queued += 1;
        job.pending.push_front(task_index);
    }

    pub(super) fn expire(
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
                && let Some(task) = job.tasks.get_mut(task_index)
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
            Late::Counts => {
                if let Some(task) = job.tasks.get_mut(task_index) {
                    task.expired.push(index);
                }
            }
            // A lost provider's work is gone; it may take the task again.
            Late::Ignored => Self::release_reservation(job, task_index),
        }
        let Some(task) = job.tasks.get_mut(task_index) else {
            return;
        };
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
                    .and_then(|job| job.tasks.get(*task))
                    .is_some_and(|task| task.expired.contains(&index))
            });
        }
    }

    pub(super) fn tick(&mut self, now: Millis, commands: &mut Vec<Command>) {
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

    pub(super) fn provider_failed(
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
                && let Some(task) = job.tasks.get_mut(task_index)
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
        let Some(task) = job.tasks.get_mut(task_index) else {
            return;
        };
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
}
