//! What commonware's consensus sees of the chain: the block type in its
//! codec, the application that proposes and verifies through [`Chain`],
//! and the reporter that applies finalized blocks. Every commonware type
//! the rest of idlegrid touches stays in this module.
//!
//! `block` carries our blocks in commonware's codec and reads them back
//! from marshal's store; `application` proposes, verifies and applies
//! them; `epochs` maps the ledger's epochs and validator sets onto
//! commonware's; `relay` passes accepted transactions between validators;
//! `start` wires all of it into a running validator.

mod application;
mod block;
mod epochs;
mod faults;
mod relay;
mod start;

use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use commonware_codec::DecodeExt;
use commonware_consensus::marshal;
use commonware_consensus::marshal::standard::Standard;
use commonware_consensus::simplex;
use commonware_consensus::simplex::scheme::ed25519 as ed25519_scheme;
use commonware_consensus::simplex::types::Context;
use commonware_cryptography::blake3::Digest;
use commonware_cryptography::ed25519::{PrivateKey, PublicKey};
use idlegrid_types::AccountId;

pub use application::{App, Finalizer, Progress};
pub use block::{Blocks, EngineBlock};
pub use epochs::{EpochSchemes, LedgerEpocher, validator_set};
pub use faults::{
    FaultJudge, FaultReporter, check_fault, conflicting_notarize, fault_evidence, namespace,
};
pub use relay::{RELAY_BYTES_MAX, RELAY_TRANSACTIONS_MAX, decode_relay};
pub use start::{Running, start};

/// The signing scheme of votes and certificates.
pub type Scheme = ed25519_scheme::Scheme;
/// What simplex tells the application about a round.
pub type RoundContext = Context<Digest, PublicKey>;

/// The p2p channels a validator uses, in registration order.
pub mod channel {
    pub const VOTES: u64 = 0;
    pub const CERTIFICATES: u64 = 1;
    pub const REQUESTS: u64 = 2;
    pub const BROADCAST: u64 = 3;
    pub const BACKFILL: u64 = 4;
    /// Transactions one validator accepted, relayed to the others.
    pub const TRANSACTIONS: u64 = 5;
    pub const ALL: [u64; 6] = [
        VOTES,
        CERTIFICATES,
        REQUESTS,
        BROADCAST,
        BACKFILL,
        TRANSACTIONS,
    ];
}

/// A channel's sending and receiving halves.
pub type Channel<S, R> = (S, R);

/// The channels of [`channel::ALL`], registered on a p2p network.
#[derive(Debug)]
pub struct Channels<S, R> {
    pub votes: Channel<S, R>,
    pub certificates: Channel<S, R>,
    pub requests: Channel<S, R>,
    pub broadcast: Channel<S, R>,
    pub backfill: Channel<S, R>,
    pub transactions: Channel<S, R>,
}

/// The largest message any channel carries, for `validators` validators.
pub fn max_message_size(validators: u32) -> u32 {
    commonware_p2p::max_message_size(&[
        commonware_p2p::utils::mux::prefixed(simplex::max_payload_size::<Scheme, Digest>(
            validators,
        )),
        marshal::max_payload_size::<Standard<EngineBlock>, Scheme>(validators, &()),
        RELAY_BYTES_MAX,
    ])
}

/// The consensus key of a node: the same ed25519 key as its account.
pub fn private_key(seed: [u8; 32]) -> PrivateKey {
    // Thirty-two bytes are always a valid ed25519 seed.
    PrivateKey::decode(Bytes::copy_from_slice(&seed)).expect("an ed25519 seed is 32 bytes")
}

/// An account as a consensus participant.
pub fn public_key(account: &AccountId) -> Result<PublicKey, EngineError> {
    PublicKey::decode(Bytes::copy_from_slice(account.as_bytes()))
        .map_err(|_| EngineError::BadKey(account.to_string()))
}

/// A consensus participant as an account.
pub fn account_of(key: &PublicKey) -> AccountId {
    let mut bytes = [0u8; 32];
    bytes.copy_from_slice(key.as_ref());
    AccountId::from_bytes(bytes)
}

/// Why a validator's engine could not start, or stopped.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("`{0}` is not a usable ed25519 key")]
    BadKey(String),
    #[error("the ledger names no validators")]
    NoValidators,
    #[error("the ledger lists a validator twice")]
    DuplicateValidator,
    #[error("the node's state is unavailable (a task panicked while holding it)")]
    Poisoned,
    #[error("the ledger could not be read: {0}")]
    Ledger(String),
    /// `location` is relative to the runtime's storage directory until
    /// [`EngineError::under`] places it.
    #[error("storage for {what} at {} is unusable: {error}", location.display())]
    Storage {
        what: &'static str,
        location: PathBuf,
        error: String,
    },
    #[error(
        "the ledger is at height {ledger}, below the height {delivered} consensus already \
         delivered to it, and the engine's archive no longer holds the blocks between: the \
         ledger store lost committed blocks"
    )]
    LedgerBehind { ledger: u64, delivered: u64 },
    /// The engine never stops on its own; this says why it did.
    #[error("consensus stopped: {0}")]
    Stopped(String),
    #[error("the validator's tasks did not finish within {0:?} of being asked to stop")]
    StopTimedOut(Duration),
}

impl EngineError {
    /// Places a storage error's location under `directory`, the runtime's
    /// storage directory, so the message names the damaged file.
    pub fn under(self, directory: &Path) -> Self {
        match self {
            Self::Storage {
                what,
                location,
                error,
            } => Self::Storage {
                what,
                location: directory.join(location),
                error,
            },
            other => other,
        }
    }
}

/// How a validator's engine is tuned (the defaults suit a LAN or loopback).
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Separates this chain's signatures from every other's.
    pub namespace: Vec<u8>,
    /// Prefix of every storage partition (one validator may share a
    /// directory with others in tests).
    pub partition_prefix: String,
    pub leader_timeout: Duration,
    pub certification_timeout: Duration,
    pub timeout_retry: Duration,
    pub fetch_timeout: Duration,
    /// How often accepted transactions are relayed to the other validators.
    pub relay_interval: Duration,
    /// How long a leader with an empty pool waits for a transaction before
    /// proposing an empty block (an idle chain then makes a few blocks a
    /// second instead of spinning).
    pub idle_block_wait: Duration,
}

impl EngineConfig {
    pub fn new(chain_id: &str) -> Self {
        Self {
            namespace: namespace(chain_id),
            partition_prefix: "idlegrid".to_owned(),
            leader_timeout: Duration::from_secs(1),
            certification_timeout: Duration::from_secs(2),
            timeout_retry: Duration::from_secs(5),
            fetch_timeout: Duration::from_secs(2),
            relay_interval: Duration::from_millis(10),
            idle_block_wait: Duration::from_millis(200),
        }
    }
}
