//! The idlegrid daemon: a validator process from its configuration file,
//! its HTTP API, key files, and local testnets.

pub mod api;
pub mod client;
pub mod config;
pub mod dashboard;
pub mod devnet;
pub mod gateway;
pub mod hardware;
pub mod jobspec;
pub mod keys;
pub mod metrics;
pub mod provider;
pub mod requestor;
pub mod run;
pub mod submissions;
pub mod testnet;

pub use config::{ConfigError, PeerConfig, ValidatorConfig};
pub use keys::{KeyError, generate, read_key, write_key};
pub use run::{Validator, run_validator, start_validator};
pub use testnet::{Testnet, TestnetPlan};
