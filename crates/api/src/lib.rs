//! Serve and call a validator's HTTP/JSON API (axum): take signed
//! transactions in, and show accounts, stake, jobs, finalized blocks and
//! the node's status; the blocking client wallets, providers and
//! requestors use; and Prometheus metrics for any axum router.
//!
//! JSON lives here only; the chain and the ledger know nothing of it. Every
//! error, including axum's own (bad JSON, wrong content type, a body over
//! the limit, an undecodable path, no such route), is
//! `{"error":{"code":"snake_case","message":"readable"}}`.
//!
//! The node's mutex is never held across an `.await`: each handler locks it
//! on a blocking thread, copies out what it answers with, and lets go.
//!
//! `GET /v1/openapi.json` describes every route in OpenAPI 3.1, derived
//! (utoipa) from the handlers' annotations and the view types; the tests
//! check it against the router's one list of routes and against its
//! answers.

pub mod client;
mod error;
mod handlers;
mod limits;
pub mod metrics;
mod router;
mod scrape;
mod staking;
mod state;
mod submissions;
#[cfg(test)]
mod tests;

pub use error::ErrorBody;
pub use limits::{JOBS_LIMIT_DEFAULT, JOBS_LIMIT_MAX, PEER_SILENCE_MAX, REQUEST_BODY_BYTES_MAX};
pub use router::{ApiDoc, router, serve};
pub use staking::DELEGATIONS_LISTED_MAX;
pub use state::{ApiState, BlocksOnceStarted, FinalizedBlocks};
pub use submissions::Submissions;
