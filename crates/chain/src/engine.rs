//! What commonware's consensus sees of the chain: the block type in its
//! codec, the application that proposes and verifies through [`Chain`],
//! and the reporter that applies finalized blocks. Every commonware type
//! the rest of idlegrid touches stays in this module.

use std::sync::{Arc, Mutex};

use bytes::{BufMut, Bytes};
use commonware_actor::Feedback;
use commonware_codec::{Buf, EncodeSize, Error as CodecError, RangeCfg, Read, Write};
use commonware_consensus::marshal::Update;
use commonware_consensus::marshal::ancestry::Ancestry;
use commonware_consensus::simplex::scheme::ed25519 as ed25519_scheme;
use commonware_consensus::simplex::types::Context;
use commonware_consensus::types::Height;
use commonware_consensus::{Application, BoundedBlock, Heightable, Reporter};
use commonware_cryptography::blake3::Digest;
use commonware_cryptography::ed25519::PublicKey;
use commonware_cryptography::{Digested, Digestible};
use commonware_utils::Acknowledgement;
use futures::StreamExt;
use idlegrid_ledger::{Ledger, Store};
use idlegrid_types::codec::Bounded;
use idlegrid_types::{ContentId, ReExecute};

use crate::block::{BLOCK_BYTES_MAX, Block};
use crate::chain::{Chain, Finalized};
use crate::mempool::Mempool;

/// The signing scheme of votes and certificates.
pub type Scheme = ed25519_scheme::Scheme;
/// What simplex tells the application about a round.
pub type RoundContext = Context<Digest, PublicKey>;

/// A [`Block`] as commonware carries it: our canonical bytes, length
/// prefixed, named by the same BLAKE3 digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EngineBlock(pub Block);

impl EngineBlock {
    /// Height 0: the parent of the first block, holding nothing.
    pub fn genesis(chain_id: &str) -> Self {
        Self(Block {
            parent: crate::block::genesis_digest(chain_id),
            height: 0,
            parent_state_root: [0; 32],
            transactions: Bounded::default(),
        })
    }
}

fn digest_of(id: ContentId) -> Digest {
    Digest(*id.as_bytes())
}

fn id_of(digest: &Digest) -> ContentId {
    ContentId::from_bytes(digest.0)
}

impl Write for EngineBlock {
    fn write(&self, buf: &mut impl BufMut) {
        Bytes::from(self.0.encode()).write(buf);
    }
}

impl EncodeSize for EngineBlock {
    fn encode_size(&self) -> usize {
        Bytes::from(self.0.encode()).encode_size()
    }
}

impl Read for EngineBlock {
    type Cfg = ();

    fn read_cfg(buf: &mut impl Buf, _: &()) -> Result<Self, CodecError> {
        let bytes = Bytes::read_cfg(buf, &RangeCfg::from(0..=BLOCK_BYTES_MAX))?;
        Block::decode(&bytes)
            .map(Self)
            .map_err(|_| CodecError::Invalid("idlegrid block", "malformed"))
    }
}

impl Digestible for EngineBlock {
    type Digest = Digest;

    fn digest(&self) -> Digest {
        digest_of(self.0.digest())
    }
}

impl Heightable for EngineBlock {
    fn height(&self) -> Height {
        Height::new(self.0.height)
    }
}

impl commonware_consensus::Block for EngineBlock {
    fn parent(&self) -> Digest {
        digest_of(self.0.parent)
    }
}

impl BoundedBlock for EngineBlock {
    fn max_encode_size(_: &()) -> usize {
        // The bytes and a varint length prefix.
        BLOCK_BYTES_MAX + 10
    }
}

/// A validator's chain state and mempool, shared by the consensus tasks.
pub struct Node<S: Store> {
    pub chain: Chain<S>,
    pub mempool: Mempool,
    pub executor: Box<dyn ReExecute + Send>,
}

impl<S: Store> std::fmt::Debug for Node<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node")
            .field("height", &self.chain.ledger().height())
            .field("pending", &self.mempool.len())
            .finish_non_exhaustive()
    }
}

/// The node as the engine's tasks share it.
pub type SharedNode<S> = Arc<Mutex<Node<S>>>;

/// The application simplex (through marshal) asks to propose and verify.
#[derive(Debug)]
pub struct App<S: Store> {
    node: SharedNode<S>,
}

impl<S: Store> Clone for App<S> {
    fn clone(&self) -> Self {
        Self {
            node: Arc::clone(&self.node),
        }
    }
}

impl<S: Store> App<S> {
    pub fn new(node: SharedNode<S>) -> Self {
        Self { node }
    }
}

impl<E: Send + 'static, S: Store + Send + 'static> Application<E> for App<S> {
    type SigningScheme = Scheme;
    type Context = RoundContext;
    type Block = EngineBlock;
    type Input = ();

    async fn propose(
        &mut self,
        _context: (E, RoundContext),
        mut ancestry: impl Ancestry<EngineBlock>,
        _input: (),
    ) -> Option<Digested<EngineBlock>> {
        // The first block of the ancestry is the parent.
        let parent = ancestry.next().await?;
        let Ok(mut node) = self.node.lock() else {
            return None;
        };
        let Node {
            chain,
            mempool,
            executor,
        } = &mut *node;
        match chain.propose(id_of(&parent.digest()), mempool, executor.as_ref()) {
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
        _context: (E, RoundContext),
        mut ancestry: impl Ancestry<EngineBlock>,
    ) -> bool {
        // The first block is the one to verify, then its parent.
        let Some(block) = ancestry.next().await else {
            return false;
        };
        let Ok(mut node) = self.node.lock() else {
            return false;
        };
        let Node {
            chain, executor, ..
        } = &mut *node;
        match chain.verify(&block.inner().0, executor.as_ref()) {
            Ok(()) => true,
            Err(error) => {
                tracing::info!(%error, height = block.inner().0.height, "voting against a block");
                false
            }
        }
    }
}

/// Applies finalized blocks, in order, acknowledging each once it is
/// durable; a block marshal delivers again after a restart is not applied
/// twice.
#[derive(Debug)]
pub struct Finalizer<S: Store> {
    node: SharedNode<S>,
}

impl<S: Store> Clone for Finalizer<S> {
    fn clone(&self) -> Self {
        Self {
            node: Arc::clone(&self.node),
        }
    }
}

impl<S: Store> Finalizer<S> {
    pub fn new(node: SharedNode<S>) -> Self {
        Self { node }
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
            return Feedback::Ok;
        };
        let Node {
            chain,
            mempool,
            executor,
        } = &mut *node;
        let block = &block.inner().0;
        match chain.finalize(block, executor.as_ref()) {
            Ok(outcome) => {
                if let Finalized::Applied(_) = outcome
                    && let Err(error) = mempool.finalized(&block.transactions, chain.ledger())
                {
                    tracing::error!(%error, "could not prune the mempool");
                }
                ack.acknowledge();
            }
            // Not acknowledging stops marshal: a node that cannot apply a
            // finalized block halts rather than diverge.
            Err(error) => {
                tracing::error!(%error, height = block.height, "cannot apply a finalized block")
            }
        }
        Feedback::Ok
    }
}

/// The ledger a node starts from, with the chain tip it is at.
pub fn node<S: Store>(
    ledger: Ledger<S>,
    mempool: Mempool,
    executor: Box<dyn ReExecute + Send>,
) -> SharedNode<S> {
    let genesis = EngineBlock::genesis(ledger.chain_id());
    let tip = (ledger.height() == 0).then(|| genesis.0.digest());
    Arc::new(Mutex::new(Node {
        chain: Chain::new(ledger, tip),
        mempool,
        executor,
    }))
}
