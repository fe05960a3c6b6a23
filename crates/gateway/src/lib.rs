//! Serve the network to those outside it: a relay through which providers
//! behind NAT are reachable, the validator's API for light clients, the
//! dashboard, and jobs over HTTP for clients that do not join the overlay
//! ([`jobs`]).

pub mod access;
pub mod blobs;
pub mod dashboard;
pub mod gateway;
mod job_json;
pub mod jobs;
mod refusal;

pub use access::{Access, Limits};
pub use dashboard::{ImageLayout, JobPhase, Local, LocalJob, LocalProvider};
pub use gateway::{GatewayConfig, GatewayDoc, GatewayReady, gateway_document, run_gateway};
pub use jobs::JobServiceConfig;
