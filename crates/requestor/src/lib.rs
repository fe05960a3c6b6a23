//! Run a job on the network: read its job file, open its escrow, place its
//! tasks with providers, verify what comes back, pay for verified work,
//! dispute wrong receipts, write the results, and close it for the refund.
//!
//! [`core`] decides (place, check, pay, dispute, record) without I/O;
//! [`submit`] is the shell around it: the overlay, the ledger and the disk.

mod audit;
pub mod core;
pub mod jobspec;
mod ledger;
mod records;
mod referee;
pub mod remote;
pub mod report;
mod run;
mod waiting;

pub use jobspec::{JobFile, Verification};
pub use report::{DisputeRecord, ProviderRecord, SubmitReport, TaskRecord, TrackRecord};
pub use run::{OpenedJob, ProgressDetail, ResultFeed, SubmitConfig, SubmitProgress, submit};
