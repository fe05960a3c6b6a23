//! What the handlers share: the node, the submission queue, finalized
//! blocks once the engine runs, and the two ways they read the node.

use std::sync::{Arc, OnceLock};

use axum::http::StatusCode;
use futures::future::BoxFuture;
use idlegrid_chain::engine::Blocks;
use idlegrid_chain::{Block, Node, SharedNode};
use idlegrid_ledger::Store;
use idlegrid_types::AccountId;

use crate::error::ApiError;
use crate::limits::ENGINE_ANSWER_TIMEOUT;
use crate::submissions::Submissions;

/// Where the API reads finalized blocks: the consensus engine's store
/// ([`Blocks`]), or blocks a test made.
pub trait FinalizedBlocks: std::fmt::Debug + Send + Sync + 'static {
    /// The finalized block at `height`, if this validator stores it.
    fn at(&self, height: u64) -> BoxFuture<'_, Option<Block>>;
    /// The highest finalized height this validator knows of.
    fn finalized_height(&self) -> BoxFuture<'_, Option<u64>>;
}

impl FinalizedBlocks for Blocks {
    fn at(&self, height: u64) -> BoxFuture<'_, Option<Block>> {
        Box::pin(Blocks::at(self, height))
    }

    fn finalized_height(&self) -> BoxFuture<'_, Option<u64>> {
        Box::pin(Blocks::finalized_height(self))
    }
}

/// Finalized blocks, once the engine has started.
pub type BlocksOnceStarted = Arc<OnceLock<Arc<dyn FinalizedBlocks>>>;

/// What the handlers share.
#[derive(Debug)]
pub struct ApiState<S: Store> {
    pub node: SharedNode<S>,
    /// Submitted transactions, taken into `node`'s pool in batches.
    pub submissions: Arc<Submissions<S>>,
    /// Finalized blocks, once the engine has started.
    pub blocks: BlocksOnceStarted,
    /// This validator's account.
    pub validator: AccountId,
}

impl<S: Store> Clone for ApiState<S> {
    fn clone(&self) -> Self {
        Self {
            node: self.node.clone(),
            submissions: self.submissions.clone(),
            blocks: self.blocks.clone(),
            validator: self.validator,
        }
    }
}

/// Runs `read` on the locked node on a blocking thread (a submitted dispute
/// re-executes a task under the lock; the API's one worker must not wait on
/// it), so the lock never meets an `.await`.
pub(crate) async fn with_node<S, T>(
    state: &ApiState<S>,
    read: impl FnOnce(&mut Node<S>) -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError>
where
    S: Store + Send + 'static,
    T: Send + 'static,
{
    let node = state.node.clone();
    tokio::task::spawn_blocking(move || {
        let mut node = node.lock().map_err(|_| {
            ApiError::unavailable("the node's state is poisoned by an earlier failure")
        })?;
        read(&mut node)
    })
    .await
    .map_err(|error| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            format!("the request failed inside the node: {error}"),
        )
    })?
}

/// The highest finalized height: the engine's once it runs (and answers
/// in time), never below `applied`, the ledger's height.
pub(crate) async fn finalized_height<S: Store>(state: &ApiState<S>, applied: u64) -> u64 {
    let Some(blocks) = state.blocks.get().cloned() else {
        return applied;
    };
    match tokio::time::timeout(ENGINE_ANSWER_TIMEOUT, blocks.finalized_height()).await {
        Ok(Some(finalized)) => applied.max(finalized),
        _ => applied,
    }
}
