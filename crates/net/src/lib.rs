//! Carry offers, task batches, results and content between idlegrid nodes
//! over rust-libp2p, and keep content by id on disk.
//!
//! Everything libp2p lives here: the rest of idlegrid sees an [`Overlay`]
//! handle, the [`Event`]s it reports, and the wire messages of
//! [`protocol`]. A node's libp2p identity is its ledger key.

pub mod content;
mod guard;
pub mod identity;
mod link;
pub mod overlay;
pub mod protocol;
pub mod store;

pub use content::{
    ContentFetch, FetchError, content_chunk, content_tree, fetch_content, fetch_content_from,
    fetch_content_into, fetch_shared_content_into,
};
pub use guard::raise_open_files_limit;
pub use identity::{account_of, libp2p_keypair, peer_id_of};
pub use libp2p::{Multiaddr, PeerId};
pub use overlay::{Event, NetError, Overlay, OverlayConfig, Reply, RequestError};
pub use protocol::{
    AssignedTask, BATCH_TASKS_MAX, CONTENT_BYTES_MAX, CONTENT_TREE_LEAVES_MAX, MESSAGE_BYTES_MAX,
    OUTPUT_INLINE_BYTES_MAX, Request, Response, ResultBatch, TaskBatch, TaskReturn, Wire,
    check_offer,
};
pub use store::{
    ContentStore, StoreChange, StoreError, StoreWriter, chunk_response, tree_response,
};
