//! The outputs a provider keeps for their requestors, by job, and when it
//! lets them go.
//!
//! An output too large to go back inline is written to the content store,
//! pinned, and fetched by its id. The provider holds a job's outputs until
//! its requestor sends `JobDone`, or until [`KEPT_OUTPUTS_HOLD_MS`] pass
//! with no word of the job (its results delivered, a batch or a voucher
//! from its requestor): a requestor that died is not waited for. Jobs and
//! outputs per job are bounded; an output past a bound is let go at once
//! (its bytes stay in the store's cache while they last), never held
//! without an end.

use std::collections::HashMap;

use idlegrid_types::{AccountId, ContentId, JobId, TaskOutcome};

use super::{Command, ProviderCore, RunOutput, RunResult};

/// How long a job's kept outputs are held after the last word of it, ms.
pub const KEPT_OUTPUTS_HOLD_MS: u64 = 3_600_000;
/// Outputs of one job held at once (a content store of 2 GiB holds 8,192
/// outputs of the smallest size kept).
pub const KEPT_OUTPUTS_PER_JOB_MAX: usize = 8_192;
/// Jobs whose outputs are held at once.
pub const KEPT_OUTPUTS_JOBS_MAX: usize = 64;

/// One job's kept outputs.
#[derive(Debug)]
struct Held {
    /// The only peer whose `JobDone` lets them go.
    requestor: AccountId,
    /// Each id once per time it was pinned.
    outputs: Vec<ContentId>,
    /// When they are let go unless word of the job comes first, ms.
    release_at_ms: u64,
}

/// The outputs kept, by job.
#[derive(Debug, Default)]
pub(super) struct KeptOutputs {
    jobs: HashMap<JobId, Held>,
    /// Outputs held in all jobs.
    outputs: usize,
}

impl KeptOutputs {
    /// Holds `output`, kept for `job` of `requestor`, and counts the job's
    /// hold from now: false when it is past a bound (the caller lets it go
    /// at once).
    pub(super) fn keep(
        &mut self,
        now_ms: u64,
        job: JobId,
        requestor: AccountId,
        output: ContentId,
    ) -> bool {
        let release_at_ms = now_ms.saturating_add(KEPT_OUTPUTS_HOLD_MS);
        if !self.jobs.contains_key(&job) && self.jobs.len() >= KEPT_OUTPUTS_JOBS_MAX {
            return false;
        }
        let held = self.jobs.entry(job).or_insert(Held {
            requestor,
            outputs: Vec::new(),
            release_at_ms,
        });
        if held.requestor != requestor || held.outputs.len() >= KEPT_OUTPUTS_PER_JOB_MAX {
            return false;
        }
        held.outputs.push(output);
        held.release_at_ms = held.release_at_ms.max(release_at_ms);
        self.outputs += 1;
        true
    }

    /// Word of `job` came from `peer` (results delivered to it, a batch or
    /// a voucher from it): if it is the job's requestor, the hold counts
    /// from now.
    pub(super) fn heard(&mut self, now_ms: u64, job: &JobId, peer: &AccountId) {
        if let Some(held) = self.jobs.get_mut(job)
            && held.requestor == *peer
        {
            held.release_at_ms = held
                .release_at_ms
                .max(now_ms.saturating_add(KEPT_OUTPUTS_HOLD_MS));
        }
    }

    /// `peer` says `job` is done: the job's outputs to let go, if it is the
    /// job's requestor (no one else can end the hold).
    pub(super) fn done(&mut self, job: &JobId, peer: &AccountId) -> Option<Vec<ContentId>> {
        if self.jobs.get(job)?.requestor != *peer {
            return None;
        }
        self.remove(job)
    }

    /// The jobs whose hold ended by `now_ms`, and their outputs to let go.
    pub(super) fn expired(&mut self, now_ms: u64) -> Vec<(JobId, Vec<ContentId>)> {
        let due: Vec<JobId> = self
            .jobs
            .iter()
            .filter(|(_, held)| held.release_at_ms <= now_ms)
            .map(|(job, _)| *job)
            .collect();
        due.into_iter()
            .filter_map(|job| Some((job, self.remove(&job)?)))
            .collect()
    }

    fn remove(&mut self, job: &JobId) -> Option<Vec<ContentId>> {
        let held = self.jobs.remove(job)?;
        self.outputs -= held.outputs.len();
        Some(held.outputs)
    }

    /// When the next hold ends, if any output is held.
    pub(super) fn wake_at(&self) -> Option<u64> {
        self.jobs.values().map(|held| held.release_at_ms).min()
    }

    /// Outputs held, in all jobs.
    pub(super) fn len(&self) -> usize {
        self.outputs
    }
}

impl ProviderCore {
    /// `output` of `bytes`, kept by a worker for task `job`'s requestor:
    /// held until that requestor is done (let go at once past the bounds,
    /// and served while the store's cache holds it), and counted. Gives the
    /// id the receipt claims: a liar cannot forge bytes it kept without
    /// writing them again, so it claims an id it cannot serve instead.
    pub(super) fn keep_output(
        &mut self,
        now_ms: u64,
        job: JobId,
        requestor: AccountId,
        (output, bytes): (ContentId, u64),
        lies: bool,
        commands: &mut Vec<Command>,
    ) -> ContentId {
        if !self.kept.keep(now_ms, job, requestor, output) {
            commands.push(Command::ReleaseOutputs {
                job,
                outputs: vec![output],
            });
        }
        self.outputs_kept += 1;
        self.outputs_kept_bytes = self.outputs_kept_bytes.saturating_add(bytes);
        if lies {
            ContentId::of(&[output.as_bytes().as_slice(), b" (forged)"].concat())
        } else {
            output
        }
    }
}

/// The output a worker kept for `result`, if it kept one.
pub(super) fn kept_output(result: &RunResult) -> Option<ContentId> {
    match result {
        RunResult::Ran {
            output: RunOutput::Kept { .. },
            outcome: TaskOutcome::Completed { output, .. },
            ..
        } => Some(*output),
        _ => None,
    }
}
