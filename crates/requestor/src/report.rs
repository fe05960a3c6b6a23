//! What a job's run leaves behind: a record per task, per provider and per
//! dispute, and `results.json`, the report `submit` prints.

use std::collections::BTreeMap;

use idlegrid_types::AccountId;
use serde::Serialize;

/// A provider's results in one job: those that agreed with the accepted
/// result, and those that did not.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct TrackRecord {
    pub accepted: u64,
    pub rejected: u64,
}

/// One task's line in `results.json`.
#[derive(Debug, Clone, Serialize)]
pub struct TaskRecord {
    pub index: u64,
    /// `accepted` or `failed`.
    pub status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub output: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fuel: Option<u64>,
    /// The accepted result's energy as its provider's receipt states it
    /// (advisory, measured or modeled by the provider; 0: unknown).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub energy_millijoules: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    /// Where in `file` the output lies, when the job packs its outputs
    /// into one file (`[output] packed`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub offset: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub length: Option<u64>,
    /// Providers whose result was the accepted one.
    #[serde(serialize_with = "accounts_as_text")]
    pub providers: Vec<AccountId>,
    /// How an accepted result was established: `quorum` (providers agreed
    /// and none disagreed) or `re-execution` (results disagreed and
    /// running the task again decided); empty when the task failed.
    #[serde(skip_serializing_if = "str::is_empty")]
    pub verified: &'static str,
    /// Accepted once on the word of a provider later caught lying, and
    /// checked again.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub rechecked: bool,
}

/// Accounts as their `did:key` text (encoded when `results.json` is
/// written, not as each task is decided).
fn accounts_as_text<S: serde::Serializer>(
    accounts: &[AccountId],
    serializer: S,
) -> Result<S::Ok, S::Error> {
    serializer.collect_seq(accounts.iter().map(ToString::to_string))
}

/// A dispute the requestor filed.
#[derive(Debug, Clone, Serialize)]
pub struct DisputeRecord {
    pub task: u64,
    /// The provider accused; none for a settlement.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub provider: Option<String>,
    /// Filed for the ledger to decide a task too large to re-execute here.
    pub settlement: bool,
    /// Who the ledger's re-execution found wrong (each slashed).
    pub wrong: Vec<String>,
    pub transaction: Option<String>,
    /// `included`, or why it was not.
    pub status: String,
}

/// What one provider did for the job.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ProviderRecord {
    pub results: u64,
    pub paid: u64,
    pub fuel_paid: u64,
}

/// What `submit` reports; `results.json` holds it and, as `tasks`, every
/// decided task's [`TaskRecord`] by index.
#[derive(Debug, Clone, Serialize)]
pub struct SubmitReport {
    pub job: String,
    pub module: String,
    pub tasks_total: u64,
    pub accepted: u64,
    pub failed: u64,
    pub fuel_useful: u64,
    pub fuel_executed: u64,
    /// Advisory energy of the accepted results: the sum of the tasks'
    /// `energy_millijoules`.
    pub energy_millijoules: u64,
    /// Advisory energy of every result that counted, replicas included.
    pub energy_executed_millijoules: u64,
    /// Promised to providers by vouchers.
    pub paid: u64,
    pub escrow: u64,
    pub opened_height: u64,
    pub deadline_height: u64,
    pub providers: BTreeMap<String, ProviderRecord>,
    /// Tasks whose results disagreed (or that nobody else could check),
    /// settled by re-execution.
    pub tasks_refereed: u64,
    /// Of those, re-executed by this requestor (the rest by the ledger).
    pub tasks_re_executed_here: u64,
    /// Accepted tasks checked again after a provider that vouched for them
    /// was caught lying.
    pub tasks_rechecked: u64,
    /// Outputs providers kept that this requestor fetched by id, and their
    /// bytes (each accepted output once, whatever its replicas).
    pub outputs_fetched: u64,
    pub outputs_fetched_bytes: u64,
    /// Of the outputs providers kept, those none of them could serve and
    /// this requestor made again by running the task.
    pub outputs_made_here: u64,
    pub disputes: Vec<DisputeRecord>,
    /// Set when the job was closed: what providers redeemed and what came back.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub redeemed: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refund: Option<u64>,
    pub elapsed_ms: u64,
    /// From the job being open on the ledger to its last task decided.
    pub run_ms: u64,
    /// Of that, until its first task was placed with a provider (finding
    /// providers: their offers, stake and connections).
    pub first_placed_ms: u64,
    /// From a task's first assignment to its acceptance (network, execution,
    /// replicas and verification), microseconds: median and 99th percentile.
    pub task_round_trip_us_p50: u64,
    pub task_round_trip_us_p99: u64,
}

/// The `percent`th percentile (nearest rank) of `values`; 0 when empty.
pub(crate) fn percentile(values: &mut [u64], percent: usize) -> u64 {
    if values.is_empty() {
        return 0;
    }
    values.sort_unstable();
    let rank = (values.len() * percent)
        .div_ceil(100)
        .clamp(1, values.len());
    values[rank - 1]
}
