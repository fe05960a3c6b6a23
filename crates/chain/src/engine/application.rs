//! What consensus calls into: [`App`], which proposes and verifies blocks
//! through [`Chain`](crate::Chain), and [`Finalizer`], which applies the
//! finalized ones.

use std::sync::Arc;
use std::time::Duration;

use commonware_actor::Feedback;
use commonware_consensus::marshal::Update;
use commonware_consensus::marshal::ancestry::Ancestry;
use commonware_consensus::{Application, Reporter};
use commonware_cryptography::{Digested, Digestible};
use commonware_runtime::Clock;
use commonware_utils::Acknowledgement;
use futures::StreamExt;
use futures::channel::mpsc;
use idlegrid_ledger::Store;
use idlegrid_types::ContentId;

use super::block::{EngineBlock, id_of};
use super::{RoundContext, Scheme};
use crate::block::Block;
use crate::chain::{ChainError, Finalized};
use crate::node::{Node, SharedNode};

/// The application simplex (through marshal) asks to propose and verify.
#[derive(Debug)]
pub struct App<S: Store> {
    node: SharedNode<S>,
    /// How long a leader with nothing to propose waits for a transaction
    /// before proposing an empty block.
    idle_wait: Duration,
}

impl<S: Store> Clone for App<S> {
    fn clone(&self) -> Self {
        Self {
            node: Arc::clone(&self.node),
            idle_wait: self.idle_wait,
        }
    }
}

impl<S: Store> App<S> {
    pub fn new(node: SharedNode<S>, idle_wait: Duration) -> Self {
        Self { node, idle_wait }
    }
}

/// How often a waiting leader looks at its pool.
const IDLE_POLL: Duration = Duration::from_millis(2);

impl<E: Clock + Send + 'static, S: Store + Send + 'static> Application<E> for App<S> {
    type SigningScheme = Scheme;
    type Context = RoundContext;
    type Block = EngineBlock;
    type Input = ();

    async fn propose(
        &mut self,
        (context, _): (E, RoundContext),
        mut ancestry: impl Ancestry<EngineBlock>,
        _input: (),
    ) -> Option<Digested<EngineBlock>> {
        // The first block of the ancestry is the parent.
        let parent = ancestry.next().await?;
        let parent_digest = id_of(&parent.digest());
        self.verify_chain(parent, &mut ancestry, unix_ms(&context))
            .await?;
        // An idle chain does not spin: with an empty pool the leader waits
        // a little for a transaction (well within the leader timeout).
        let started = context.current();
        while self.node.lock().ok()?.mempool.is_empty()
            && context
                .current()
                .duration_since(started)
                .unwrap_or_default()
                < self.idle_wait
        {
            context.sleep(IDLE_POLL).await;
        }
        let Ok(mut node) = self.node.lock() else {
            return None;
        };
        let Node {
            chain,
            mempool,
            executor,
            ..
        } = &mut *node;
        match chain.propose(parent_digest, unix_ms(&context), mempool, executor.as_ref()) {
            Ok(block) => {
                let block = EngineBlock(block);
                let digest = block.digest();
                Some(Digested::precomputed(block, digest))
            }
            Err(error) => {
                tracing::warn!(%error, "not proposing on this parent");
                None
            }
        }
    }

    async fn verify(
        &mut self,
        (context, _): (E, RoundContext),
        mut ancestry: impl Ancestry<EngineBlock>,
    ) -> bool {
        // The first block is the one to verify, then its ancestors.
        let Some(block) = ancestry.next().await else {
            return false;
        };
        // A block's time is not held to be recent: a proposer stamps it
        // before executing it, and a block that re-executes a dispute can
        // take longer than any drift to build. Its parent's time bounds
        // it from below.
        self.verify_chain(block, &mut ancestry, unix_ms(&context))
            .await
            .is_some()
    }
}

/// The runtime's clock as milliseconds since the Unix epoch (what blocks
/// are stamped with).
fn unix_ms(clock: &impl Clock) -> u64 {
    clock
        .current()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|since| u64::try_from(since.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// The most unknown ancestors a node verifies to reach a block (after a
/// restart, the notarized blocks above its last finalized one).
const ANCESTRY_MAX: usize = 256;

impl<S: Store> App<S> {
    /// Verifies `block` and, first, those of its ancestors this node has
    /// not seen (a restarted node knows only its finalized tip).
    async fn verify_chain(
        &self,
        block: Digested<EngineBlock>,
        ancestry: &mut impl Ancestry<EngineBlock>,
        now_ms: u64,
    ) -> Option<()> {
        // Digested blocks carry their digest and share the block itself.
        let mut blocks = vec![block];
        loop {
            let oldest = blocks.last()?;
            let (known, parent_known, finalized) = {
                let node = self.node.lock().ok()?;
                (
                    node.chain.knows(&id_of(&oldest.digest())),
                    node.chain.knows(&oldest.inner().0.parent),
                    node.ledger().height(),
                )
            };
            if known {
                blocks.pop();
                break;
            }
            if parent_known {
                break;
            }
            // An unknown parent at or below the finalized height is on a
            // fork that can never be final.
            if oldest.inner().0.height <= finalized + 1 || blocks.len() >= ANCESTRY_MAX {
                tracing::info!(
                    height = oldest.inner().0.height,
                    "voting against a block on an unknown branch"
                );
                return None;
            }
            blocks.push(ancestry.next().await?);
        }
        let mut node = self.node.lock().ok()?;
        let Node {
            chain, executor, ..
        } = &mut *node;
        for block in blocks.iter().rev() {
            let digest = id_of(&block.digest());
            let block = &block.inner().0;
            if let Err(error) = chain.verify_named(block, digest, now_ms, executor.as_ref()) {
                tracing::info!(%error, height = block.height, "voting against a block");
                return None;
            }
        }
        Some(())
    }
}

/// What the [`Finalizer`] tells the epoch orchestrator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Progress {
    /// The last block of this epoch was applied.
    EpochEnded(u64),
    /// A finalized block could not be applied: the node halts rather than
    /// diverge, and says why.
    Halted(String),
}

/// Applies the finalized `block` (named `digest`) to the ledger, then
/// prunes the pool and tells subscribers; a block already applied is left
/// alone. Returns whether it was new, and its height.
pub(super) fn apply_finalized<S: Store>(
    node: &mut Node<S>,
    block: &Block,
    digest: ContentId,
) -> Result<Option<u64>, ChainError> {
    let Node {
        chain,
        mempool,
        executor,
        ..
    } = node;
    let Finalized::Applied(outcome) = chain.finalize_named(block, digest, executor.as_ref())?
    else {
        return Ok(None);
    };
    if let Err(error) = mempool.finalized(&block.transactions, chain.ledger()) {
        tracing::error!(%error, "could not prune the mempool");
    }
    node.applied(&outcome);
    Ok(Some(outcome.height))
}

/// Applies finalized blocks, in order, acknowledging each once it is
/// durable; a block marshal delivers again after a restart is not applied
/// twice. After an epoch's last block it tells the orchestrator, which
/// starts the next epoch's engine.
#[derive(Debug)]
pub struct Finalizer<S: Store> {
    node: SharedNode<S>,
    progress: mpsc::UnboundedSender<Progress>,
}

impl<S: Store> Clone for Finalizer<S> {
    fn clone(&self) -> Self {
        Self {
            node: Arc::clone(&self.node),
            progress: self.progress.clone(),
        }
    }
}

impl<S: Store> Finalizer<S> {
    pub fn new(node: SharedNode<S>, progress: mpsc::UnboundedSender<Progress>) -> Self {
        Self { node, progress }
    }
}

impl<S: Store + Send + 'static> Reporter for Finalizer<S> {
    type Activity = Update<EngineBlock>;

    fn report(&mut self, activity: Update<EngineBlock>) -> Feedback {
        let Update::Block(block, ack) = activity else {
            return Feedback::Ok;
        };
        let Ok(mut node) = self.node.lock() else {
            tracing::error!("node state poisoned; not acknowledging");
            let _ = self
                .progress
                .unbounded_send(Progress::Halted("the node's state is poisoned".to_owned()));
            return Feedback::Ok;
        };
        let digest = id_of(&block.digest());
        let block = &block.inner().0;
        match apply_finalized(&mut node, block, digest) {
            Ok(applied) => {
                if let Some(height) = applied {
                    let ledger = node.ledger();
                    let epoch = ledger.epoch_of(height);
                    if ledger.epoch_of(height + 1) != epoch {
                        let _ = self.progress.unbounded_send(Progress::EpochEnded(epoch));
                    }
                }
                ack.acknowledge();
            }
            // Not acknowledging stops marshal: a node that cannot apply a
            // finalized block halts rather than diverge.
            Err(error) => {
                tracing::error!(%error, height = block.height, "cannot apply a finalized block");
                let _ = self.progress.unbounded_send(Progress::Halted(format!(
                    "finalized block {} cannot be applied: {error}",
                    block.height
                )));
            }
        }
        Feedback::Ok
    }
}
