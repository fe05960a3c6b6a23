//! Run an idlegrid validator: its configuration file, key files, start-up
//! (ledger, consensus and HTTP API), and local testnets.

pub mod config;
pub mod keys;
pub mod run;
pub mod testnet;

pub use config::{ConfigError, PeerConfig, ValidatorConfig};
pub use keys::{KeyError, generate, read_key, write_key};
pub use run::{Validator, run_validator, start_validator};
pub use testnet::{Testnet, TestnetPlan};
