//! The ledger node: orders signed transactions into blocks that
//! `idlegrid-ledger` applies.
//!
//! Today this is the engine-independent half: the bounded [`Mempool`]
//! (fee order across accounts, nonce order within one) and block building
//! through [`idlegrid_ledger::Ledger::select`]. Consensus (commonware
//! simplex + marshal) is not wired yet.

mod mempool;

pub use mempool::{Mempool, MempoolConfig, Refused};
