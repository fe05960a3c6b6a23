//! Decide which provider runs which task, when a result is trusted, and what
//! each provider is owed.
//!
//! The market is sans-IO: [`Market::handle`] takes the time and one
//! [`Input`] (an offer seen, a provider connected or lost, a result, a lease
//! timer, a job submitted, a budget changed) and returns [`Command`]s (send
//! these tasks to that provider, cancel, sign a voucher, report fraud, a task
//! or job finished, re-execute a task whose results disagree). No sockets, clocks, threads or randomness except from
//! the seed it is given, so it can be tested exhaustively and simulated at
//! scale.

mod market;
mod types;

pub use idlegrid_types::SplitMix64;
pub use market::audit::{AUDIT_RECORD_BYTES_MAX, AuditLog, AuditLogs, MemoryAuditLog};
pub use market::{Market, spot_check_permille};
pub use types::{
    Command, Decision, FraudEvidence, Input, JobSpec, JobSummary, MarketConfig, Millis, Policy,
    Stall, Standing, TaskResult, Trust, Waiting,
};
