//! Rent out a machine's idle cores and GPU: offer them on the overlay, run
//! the tasks requestors send in the sandbox or on the GPU, sign receipts for what ran, and
//! redeem the vouchers that pay for it.
//!
//! [`core`] decides (what to take, run, sign, keep and redeem) without I/O;
//! [`run_provider`] is the shell around it: the overlay, the worker pool,
//! the disk and the ledger.

mod challenges;
pub mod core;
pub mod energy;
pub mod gpu;
pub mod hardware;
mod ledger;
mod run;
mod staging;
mod store;
mod worker;

pub use crate::core::Cheat;
pub use crate::gpu::GpuChoice;
pub use run::{
    CONTENT_BYTES_DEFAULT, KEEP_OUTPUTS_OVER_BYTES, MODULE_BYTES_MAX, ProviderConfig,
    ProviderReady, ProviderStats, ProviderSummary, run_provider,
};
