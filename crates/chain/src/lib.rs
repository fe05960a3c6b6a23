//! The ledger node: orders signed transactions into blocks that
//! `idlegrid-ledger` applies.
//!
//! Today this is the engine-independent half: the bounded [`Mempool`]
//! (fee order across accounts, nonce order within one), [`Block`]s, and the
//! [`Chain`] that proposes, verifies and finalizes them, executing blocks
//! that are not final yet over their ancestors' writes. Consensus
//! (commonware simplex + marshal) is not wired yet.

mod block;
mod chain;
mod mempool;

pub use block::{BLOCK_BYTES_MAX, BLOCK_TRANSACTIONS_MAX, Block, genesis_digest};
pub use chain::{Chain, ChainError, Finalized, Invalid};
pub use mempool::{Mempool, MempoolConfig, Refused};
