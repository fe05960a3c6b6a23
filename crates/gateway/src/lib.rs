//! Serve the network to those outside it: a relay through which providers
//! behind NAT are reachable, the validator's API for light clients, and
//! the dashboard.

pub mod dashboard;
pub mod gateway;

pub use dashboard::{ImageLayout, JobPhase, Local, LocalJob, LocalProvider};
pub use gateway::{GatewayConfig, GatewayDoc, GatewayReady, gateway_document, run_gateway};
