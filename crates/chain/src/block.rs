//! A block: its parent, its height, its time, the state root its parent
//! left, and transactions, in the canonical encoding; named by the BLAKE3
//! of it.

use borsh::{BorshDeserialize, BorshSerialize};
use idlegrid_ledger::SignedTransaction;
use idlegrid_types::ContentId;
use idlegrid_types::codec::{self, Bounded, DecodeError};

/// Most transactions in one block.
pub const BLOCK_TRANSACTIONS_MAX: usize = 20_000;
/// Most bytes of one encoded block.
pub const BLOCK_BYTES_MAX: usize = 8 << 20;
/// How far ahead of a validator's clock a block's time may be for the
/// validator to accept it.
pub const BLOCK_TIME_DRIFT_MS: u64 = 3_000;

#[derive(Debug, Clone, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub struct Block {
    pub parent: ContentId,
    pub height: u64,
    /// When its proposer began building it, in milliseconds since the
    /// Unix epoch: never before its parent's, and at most
    /// [`BLOCK_TIME_DRIFT_MS`] ahead of the clocks of the validators that
    /// voted for it.
    pub time_ms: u64,
    /// The state root after the parent block applied.
    pub parent_state_root: [u8; 32],
    pub transactions: Bounded<Vec<SignedTransaction>, BLOCK_TRANSACTIONS_MAX>,
}

impl Block {
    pub fn encode(&self) -> Vec<u8> {
        // Every field has a fixed or bounded encoding.
        codec::encode(self).unwrap_or_default()
    }

    /// The block's name: BLAKE3 of its encoding.
    pub fn digest(&self) -> ContentId {
        ContentId::of(&self.encode())
    }

    /// Decodes a block from untrusted bytes.
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        codec::decode(bytes, BLOCK_BYTES_MAX)
    }
}

impl Block {
    /// Height 0: the parent of the first block, holding nothing; its own
    /// parent is named after the chain, so chains never share it.
    pub fn genesis(chain_id: &str) -> Self {
        Self {
            parent: ContentId::of(format!("idlegrid genesis {chain_id}").as_bytes()),
            height: 0,
            time_ms: 0,
            parent_state_root: [0; 32],
            transactions: Bounded::default(),
        }
    }
}

/// The digest of the genesis block: the parent of height 1.
pub fn genesis_digest(chain_id: &str) -> ContentId {
    Block::genesis(chain_id).digest()
}
