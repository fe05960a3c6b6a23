//! One job submitted over HTTP: what it is doing (`Phase`), its key and
//! terms, its progress as the API shows it, and its outputs by content id.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use idlegrid_ledger::Transaction;
use idlegrid_requestor::{JobFile, SubmitProgress};
use idlegrid_types::{AccountId, ContentId, JobId, Keypair};
use serde_json::{Value, json};

use super::UNSIGNED_TTL;
use crate::blobs::BlobPin;
use crate::dashboard::{JobPhase, LocalJob};

/// What a job is doing.
#[derive(Debug)]
pub(super) enum Phase {
    /// Waiting for the client's signature on its `OpenJob`.
    Unsigned(Box<JobFile>),
    Opening,
    Running,
    Finished {
        budget_exhausted: bool,
    },
    Failed {
        code: String,
        message: String,
    },
}

impl Phase {
    pub(super) fn name(&self) -> &'static str {
        match self {
            Phase::Unsigned(_) => "unsigned",
            Phase::Opening => "opening",
            Phase::Running => "running",
            Phase::Finished { .. } => "finished",
            Phase::Failed { .. } => "failed",
        }
    }

    pub(super) fn ended(&self) -> bool {
        matches!(self, Phase::Finished { .. } | Phase::Failed { .. })
    }
}

/// A job submitted over HTTP.
pub(super) struct HttpJob {
    pub(super) id: JobId,
    /// The caller that created it (a key's name; empty when open).
    pub(super) owner: String,
    pub(super) requestor: AccountId,
    /// This job's key: places its tasks and signs its vouchers.
    pub(super) agent: Keypair,
    /// The `OpenJob` the requestor signs.
    pub(super) body: Transaction,
    pub(super) tasks: u64,
    pub(super) budget: u64,
    pub(super) deadline_height: u64,
    pub(super) created: Instant,
    pub(super) phase: Mutex<Phase>,
    pub(super) progress: Arc<SubmitProgress>,
    pub(super) out_dir: PathBuf,
    /// Outputs by content id, from the feed's first `indexed` records.
    pub(super) outputs: Mutex<OutputIndex>,
    /// Its line on the dashboard, once it runs.
    pub(super) shown: Mutex<Option<Arc<LocalJob>>>,
    /// The blobs it names, kept from eviction until it ends.
    pub(super) pins: Mutex<Vec<BlobPin>>,
}

#[derive(Default)]
pub(super) struct OutputIndex {
    pub(super) indexed: usize,
    pub(super) files: HashMap<ContentId, PathBuf>,
}

impl HttpJob {
    pub(super) fn phase(&self) -> std::sync::MutexGuard<'_, Phase> {
        self.phase.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Moves it to `phase`; an ended job lets its blobs go.
    pub(super) fn set_phase(&self, phase: Phase) {
        let shown = match &phase {
            Phase::Finished { .. } => Some((JobPhase::Done, None)),
            Phase::Failed { message, .. } => Some((JobPhase::Failed, Some(message.clone()))),
            _ => None,
        };
        if phase.ended() {
            self.pins
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clear();
        }
        *self.phase() = phase;
        if let (Some((phase, error)), Some(job)) = (
            shown,
            self.shown
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .as_ref(),
        ) {
            job.set_phase(phase, error);
        }
    }

    /// Unsigned for longer than it may wait.
    pub(super) fn expired(&self, now: Instant) -> bool {
        let unsigned = matches!(&*self.phase(), Phase::Unsigned(_));
        unsigned && now.duration_since(self.created) >= UNSIGNED_TTL
    }

    /// Unsigned, opening or running (an unsigned job past its time is not).
    pub(super) fn live(&self, now: Instant) -> bool {
        match &*self.phase() {
            Phase::Unsigned(_) => now.duration_since(self.created) < UNSIGNED_TTL,
            Phase::Opening | Phase::Running => true,
            Phase::Finished { .. } | Phase::Failed { .. } => false,
        }
    }

    pub(super) fn view(&self) -> Value {
        let (status, budget_exhausted, error, ended) = {
            let phase = self.phase();
            let error = match &*phase {
                Phase::Failed { code, message } => json!({ "code": code, "message": message }),
                _ => Value::Null,
            };
            (
                phase.name(),
                matches!(
                    &*phase,
                    Phase::Finished {
                        budget_exhausted: true
                    }
                ),
                error,
                phase.ended(),
            )
        };
        let progress = &self.progress;
        let count = |counter: &std::sync::atomic::AtomicU64| counter.load(Ordering::Relaxed);
        json!({
            "job": self.id.to_string(),
            "status": status,
            "tasks_total": self.tasks,
            "accepted": count(&progress.accepted),
            "failed": count(&progress.failed),
            // The counter is sampled while the job runs; none is in flight
            // once it ended.
            "in_flight": if ended { 0 } else { count(&progress.in_flight) },
            "providers": count(&progress.providers),
            "paid": count(&progress.paid),
            "budget": self.budget,
            "fuel_executed": count(&progress.fuel_executed),
            "results": progress.feed.len(),
            "waiting": progress.detail().waiting,
            "budget_exhausted": budget_exhausted,
            "error": error,
        })
    }

    /// Indexes the outputs of records decided since the last call.
    pub(super) fn index_outputs(&self) -> std::sync::MutexGuard<'_, OutputIndex> {
        let mut index = self.outputs.lock().unwrap_or_else(PoisonError::into_inner);
        let fresh = self.progress.feed.since(index.indexed, usize::MAX);
        index.indexed += fresh.len();
        for record in fresh {
            if let (Some(output), Some(file)) = (&record.output, &record.file)
                && let Ok(cid) = output.parse::<ContentId>()
            {
                index.files.insert(cid, self.out_dir.join(file));
            }
        }
        index
    }
}
