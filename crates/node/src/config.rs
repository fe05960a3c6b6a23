//! A validator's configuration file (TOML). Relative paths in it are
//! relative to the file's own directory.

use std::net::SocketAddr;
use std::num::NonZeroU64;
use std::path::{Path, PathBuf};

use idlegrid_ledger::TreeHistory;
use serde::{Deserialize, Serialize};

/// Why a configuration file is unusable.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("failed to read config file {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("config file {path} is malformed: {message}")]
    Malformed { path: String, message: String },
    #[error("peer `{0}` is not a did:key account")]
    BadPeer(String),
}

/// Another validator to dial.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PeerConfig {
    /// Its account (`did:key:…`), which is also its network identity.
    pub account: String,
    /// Where it listens for validators.
    pub address: SocketAddr,
}

/// `idlegrid validator --config FILE`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ValidatorConfig {
    /// The validator's key file (see `idlegrid wallet new`).
    pub key_file: PathBuf,
    /// The chain's genesis file.
    pub genesis: PathBuf,
    /// Where the ledger and the consensus journals live.
    pub data_dir: PathBuf,
    /// Where the other validators reach this one.
    pub p2p_listen: SocketAddr,
    /// The HTTP API.
    pub api_listen: SocketAddr,
    /// Runtime worker threads for consensus.
    #[serde(default = "default_workers")]
    pub worker_threads: usize,
    /// Validators to dial at start (none for a one-validator network).
    #[serde(default)]
    pub peers: Vec<PeerConfig>,
    /// How long a leader with nothing to propose waits for a transaction
    /// before proposing an empty block, in milliseconds (200 when absent;
    /// 0 makes blocks as fast as consensus allows, as benchmarks want).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle_block_wait_ms: Option<u64>,
    /// Heights of the state tree the ledger keeps on disk besides the tip;
    /// nodes only older heights need are deleted as blocks commit. When
    /// absent, [`idlegrid_ledger::TREE_HISTORY_HEIGHTS_DEFAULT`] (1,000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tree_history_heights: Option<NonZeroU64>,
}

fn default_workers() -> usize {
    2
}

impl ValidatorConfig {
    /// Reads a configuration file, resolving its paths against its folder.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: shown.clone(),
            source,
        })?;
        let mut config: Self = toml::from_str(&text).map_err(|error| ConfigError::Malformed {
            path: shown,
            message: error.message().to_owned(),
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        for field in [
            &mut config.key_file,
            &mut config.genesis,
            &mut config.data_dir,
        ] {
            if field.is_relative() {
                *field = base.join(&*field);
            }
        }
        Ok(config)
    }

    /// How much of the state tree the ledger keeps.
    pub fn tree_history(&self) -> TreeHistory {
        self.tree_history_heights
            .map_or_else(TreeHistory::default, TreeHistory::Heights)
    }

    /// The configuration as a file.
    pub fn to_toml(&self) -> String {
        toml::to_string(self).unwrap_or_default()
    }
}
