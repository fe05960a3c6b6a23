//! The ledger node: orders signed transactions into blocks that
//! `idlegrid-ledger` applies.
//!
//! The bounded [`Mempool`] (fee order across accounts, nonce order within
//! one), [`Block`]s, the [`Chain`] that proposes, verifies and finalizes
//! them (executing blocks that are not final yet over their ancestors'
//! writes), [`engine`], the adapter through which commonware's simplex
//! consensus (one engine per epoch) and marshal order and deliver them,
//! [`validator`], a validator on commonware's tokio runtime and
//! authenticated p2p, and [`campaign`], seeded fault campaigns on its
//! deterministic runtime and simulated network.

mod block;
pub mod campaign;
mod chain;
pub mod engine;
mod mempool;
mod node;
mod uptime;
pub mod validator;

pub use block::{
    BLOCK_BYTES_MAX, BLOCK_TIME_DRIFT_MS, BLOCK_TRANSACTIONS_MAX, Block, genesis_digest,
};
pub use chain::{Chain, ChainError, Finalized, Invalid};
pub use mempool::{Mempool, MempoolConfig, Refused};
pub use node::{
    FinalizedBlock, FinalizedCounts, Node, OUTBOX_MAX, SUBMIT_BATCH_MAX, SUBSCRIBER_BACKLOG,
    SharedNode, TxStatus, shared, signature_cache, submit_batch,
};
pub use uptime::{UPTIME_WINDOW, Uptime};
