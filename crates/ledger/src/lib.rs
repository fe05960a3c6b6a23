//! Decide who owns what: accounts, stake, escrow, vouchers, disputes and
//! epoch rewards, one block at a time.
//!
//! The ledger is a pure, deterministic state machine: height comes in with
//! each block, disputes are settled by re-executing the task through the
//! [`idlegrid_types::ReExecute`] trait (the sandbox implements it), and state
//! lives behind the [`Store`] trait (in memory or redb). It knows nothing of
//! the network or consensus; `idlegrid-chain` orders the blocks it applies.

mod apply;
pub mod capacity;
mod delegation;
pub mod genesis;
mod ledger;
mod prune;
mod root;
pub mod state;
pub mod store;
pub mod tx;

pub use apply::VALIDATORS_MAX;
pub use delegation::capped_powers;
pub use genesis::{Genesis, GenesisError, Params};
pub use ledger::{
    BlockOutcome, BuiltBlock, DisputeVerdict, Ledger, LedgerError, NoReExecution, Selection,
    TreeStats, TxRecord, TxResult,
};
pub use prune::{PRUNE_NODES_PER_COMMIT_BASE, TREE_HISTORY_HEIGHTS_DEFAULT, TreeHistory};
pub use state::{
    Account, Delegation, DelegationUnbonding, Job, JobStatus, Pool, ProviderRecord, Redemption,
    Stake, Supply, Unbonding, mul_div,
};
pub use store::{
    Entries, Layered, MemoryStore, RedbStats, RedbStore, Store, StoreError, WriteBatch,
};
pub use tx::{
    Dispute, Event, Evidence, FAULT_EVIDENCE_BYTES_MAX, OpenJob, Rejection, SignedTransaction,
    StakeRole, Transaction, TxKind, decode_transaction, transaction_hash,
};
