//! When a provider asks a requestor for the voucher it is owed.
//!
//! A requestor pushes each newer voucher as it accepts results, but a push
//! can be lost with the connection it travelled on (a relayed circuit that
//! reached its limit, a reset link), and the requestor sends no other until
//! it owes more. So a provider that delivered results and has heard of no
//! voucher since asks for the newest one after [`VOUCHER_ASK_AFTER_MS`],
//! again with backoff while the answer brings nothing newer (results may
//! not be accepted yet), and at once (paced) when it connects to that
//! requestor again. Asks per job and jobs waiting are bounded.

use std::collections::HashMap;

use idlegrid_types::{AccountId, JobId};

/// Results delivered and no voucher since for this long: ask, ms.
pub const VOUCHER_ASK_AFTER_MS: u64 = 5_000;
/// The longest pause between two asks for one job, ms.
pub const VOUCHER_ASK_BACKOFF_MAX_MS: u64 = 60_000;
/// The shortest pause between two asks for one job (a reconnection asks
/// at once, but connections may come and go every second), ms.
pub const VOUCHER_ASK_PACE_MS: u64 = 1_000;
/// Asks for one job's voucher before the provider stops asking (the
/// requestor's end-of-job round still pushes it): about thirteen minutes
/// from the first.
pub const VOUCHER_ASKS_MAX: u32 = 16;
/// Jobs whose voucher a provider waits for at once; past it, results of a
/// further job rely on the requestor's pushes alone.
pub const VOUCHER_WAITS_MAX: usize = 64;

/// Results of a job delivered and no voucher heard of since.
#[derive(Debug)]
struct Wait {
    requestor: AccountId,
    /// When the next ask is due, ms.
    ask_at_ms: u64,
    /// When the last ask went out, ms.
    asked_at_ms: Option<u64>,
    asks: u32,
    /// An ask is on its way.
    asking: bool,
}

/// The jobs whose voucher the provider may ask for, and when.
#[derive(Debug, Default)]
pub(super) struct VoucherAsks {
    waits: HashMap<JobId, Wait>,
}

impl VoucherAsks {
    /// Results of `job` reached `requestor`: wait for a voucher, and ask
    /// if none comes. A wait already running keeps its time: it counts
    /// from the first results that no voucher followed.
    pub(super) fn delivered(&mut self, now_ms: u64, job: JobId, requestor: AccountId) {
        if self.waits.contains_key(&job) || self.waits.len() >= VOUCHER_WAITS_MAX {
            return;
        }
        self.waits.insert(
            job,
            Wait {
                requestor,
                ask_at_ms: now_ms.saturating_add(VOUCHER_ASK_AFTER_MS),
                asked_at_ms: None,
                asks: 0,
                asking: false,
            },
        );
    }

    /// A newer voucher of `job` arrived, or the job is over: nothing to ask.
    pub(super) fn vouched(&mut self, job: &JobId) {
        self.waits.remove(job);
    }

    /// A connection to `peer` opened: a job it owes a voucher is asked for
    /// now, or as soon as the pace allows.
    pub(super) fn connected(&mut self, now_ms: u64, peer: AccountId) {
        for wait in self.waits.values_mut() {
            if wait.requestor == peer && !wait.asking {
                let paced = wait
                    .asked_at_ms
                    .map_or(now_ms, |asked| asked.saturating_add(VOUCHER_ASK_PACE_MS));
                wait.ask_at_ms = wait.ask_at_ms.min(paced.max(now_ms));
            }
        }
    }

    /// The asks due now, each marked on its way: (requestor, job).
    pub(super) fn due(&mut self, now_ms: u64) -> Vec<(AccountId, JobId)> {
        let mut due = Vec::new();
        for (job, wait) in &mut self.waits {
            if !wait.asking && wait.ask_at_ms <= now_ms {
                wait.asking = true;
                wait.asks += 1;
                wait.asked_at_ms = Some(now_ms);
                due.push((wait.requestor, *job));
            }
        }
        due
    }

    /// An ask for `job` ended without a newer voucher: ask again later
    /// (with backoff, within [`VOUCHER_ASKS_MAX`]) when `again`, else stop.
    pub(super) fn answered(&mut self, now_ms: u64, job: &JobId, again: bool) {
        let Some(wait) = self.waits.get_mut(job) else {
            return;
        };
        wait.asking = false;
        if !again || wait.asks >= VOUCHER_ASKS_MAX {
            self.waits.remove(job);
            return;
        }
        let backoff = VOUCHER_ASK_AFTER_MS
            .saturating_mul(1 << wait.asks.min(16))
            .min(VOUCHER_ASK_BACKOFF_MAX_MS);
        wait.ask_at_ms = now_ms.saturating_add(backoff);
    }

    /// When the next ask is due, if one is waiting.
    pub(super) fn wake_at(&self) -> Option<u64> {
        self.waits
            .values()
            .filter(|wait| !wait.asking)
            .map(|wait| wait.ask_at_ms)
            .min()
    }
}
