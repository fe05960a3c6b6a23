//! What commonware's consensus sees of the chain: the block type in its
//! codec, the application that proposes and verifies through [`Chain`],
//! and the reporter that applies finalized blocks. Every commonware type
//! the rest of idlegrid touches stays in this module.

use std::collections::BTreeMap;
use std::collections::btree_map::Entry;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{BufMut, Bytes};
use commonware_actor::Feedback;
use commonware_broadcast::buffered;
use commonware_codec::{Buf, DecodeExt, EncodeSize, Error as CodecError, RangeCfg, Read, Write};
use commonware_consensus::marshal::ancestry::Ancestry;
use commonware_consensus::marshal::resolver::p2p as marshal_resolver;
use commonware_consensus::marshal::standard::{Inline, Standard};
use commonware_consensus::marshal::{self, Identifier, Start, Update};
use commonware_consensus::simplex::elector::RoundRobin;
use commonware_consensus::simplex::scheme::ed25519 as ed25519_scheme;
use commonware_consensus::simplex::types::Context;
use commonware_consensus::simplex::{self, Floor, ForwardPolicy, SkipBudget, SkipPolicy};
use commonware_consensus::types::{Epoch, EpochInfo, Epocher, Height, ViewDelta};
use commonware_consensus::{Application, BoundedBlock, Heightable, Reporter};
use commonware_cryptography::blake3::Digest;
use commonware_cryptography::certificate::{self, Scheme as _, Verifier as _};
use commonware_cryptography::ed25519::{PrivateKey, PublicKey};
use commonware_cryptography::sha256::Sha256;
use commonware_cryptography::{Digested, Digestible, Signer as _};
use commonware_macros::select;
use commonware_p2p::utils::mux::{Builder as _, Muxer};
use commonware_p2p::{Blocker, Manager, Provider, Receiver, Recipients, Sender, TrackedPeers};
use commonware_parallel::Sequential;
use commonware_runtime::buffer::paged::CacheRef;
use commonware_runtime::{Clock, Handle, Metrics, Spawner, Storage};
use commonware_storage::archive::immutable;
use commonware_utils::ordered::Set;
use commonware_utils::vec::NonEmptyVec;
use commonware_utils::{Acknowledgement, NZDuration, NZU16, NZU64, NZUsize, NonZeroDuration};
use futures::StreamExt;
use futures::channel::mpsc;
use idlegrid_ledger::{SignedTransaction, Store};
use idlegrid_types::codec::{Bounded, decode, encode};
use idlegrid_types::{AccountId, ContentId};

use crate::block::{BLOCK_BYTES_MAX, Block};
use crate::chain::Finalized;
use crate::node::{Node, SharedNode};

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
        Self(Block::genesis(chain_id))
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
        self.verify_chain(parent, &mut ancestry).await?;
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
        match chain.propose(parent_digest, mempool, executor.as_ref()) {
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
        // The first block is the one to verify, then its ancestors.
        let Some(block) = ancestry.next().await else {
            return false;
        };
        self.verify_chain(block, &mut ancestry).await.is_some()
    }
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
            if let Err(error) = chain.verify_named(block, digest, executor.as_ref()) {
                tracing::info!(%error, height = block.height, "voting against a block");
                return None;
            }
        }
        Some(())
    }
}

/// Applies finalized blocks, in order, acknowledging each once it is
/// durable; a block marshal delivers again after a restart is not applied
/// twice. After an epoch's last block it tells the orchestrator, which
/// starts the next epoch's engine.
#[derive(Debug)]
pub struct Finalizer<S: Store> {
    node: SharedNode<S>,
    epoch_ended: mpsc::UnboundedSender<u64>,
}

impl<S: Store> Clone for Finalizer<S> {
    fn clone(&self) -> Self {
        Self {
            node: Arc::clone(&self.node),
            epoch_ended: self.epoch_ended.clone(),
        }
    }
}

impl<S: Store> Finalizer<S> {
    pub fn new(node: SharedNode<S>, epoch_ended: mpsc::UnboundedSender<u64>) -> Self {
        Self { node, epoch_ended }
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
            ..
        } = &mut *node;
        let digest = id_of(&block.digest());
        let block = &block.inner().0;
        match chain.finalize_named(block, digest, executor.as_ref()) {
            Ok(outcome) => {
                if let Finalized::Applied(outcome) = outcome {
                    if let Err(error) = mempool.finalized(&block.transactions, chain.ledger()) {
                        tracing::error!(%error, "could not prune the mempool");
                    }
                    let ledger = node.ledger();
                    let epoch = ledger.epoch_of(outcome.height);
                    if ledger.epoch_of(outcome.height + 1) != epoch {
                        let _ = self.epoch_ended.unbounded_send(epoch);
                    }
                    node.applied(&outcome);
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

/// The ledger's epochs for commonware: epoch 0 is genesis through height
/// `length`; epoch `e` is `e × length + 1 ..= (e + 1) × length`, so an
/// engine epoch ends where the ledger pays rewards and takes the next set.
#[derive(Debug, Clone, Copy)]
pub struct LedgerEpocher {
    length: u64,
}

impl LedgerEpocher {
    pub fn new(length: u64) -> Self {
        Self {
            length: length.max(1),
        }
    }

    fn bounds(&self, epoch: u64) -> Option<(u64, u64)> {
        let last = epoch.checked_add(1)?.checked_mul(self.length)?;
        let first = if epoch == 0 {
            0
        } else {
            epoch.checked_mul(self.length)?.checked_add(1)?
        };
        Some((first, last))
    }
}

impl Epocher for LedgerEpocher {
    fn containing(&self, height: Height) -> Option<EpochInfo> {
        let epoch = height.get().saturating_sub(1) / self.length;
        let (first, last) = self.bounds(epoch)?;
        Some(EpochInfo::new(
            Epoch::new(epoch),
            height,
            Height::new(first),
            Height::new(last),
        ))
    }

    fn first(&self, epoch: Epoch) -> Option<Height> {
        self.bounds(epoch.get())
            .map(|(first, _)| Height::new(first))
    }

    fn last(&self, epoch: Epoch) -> Option<Height> {
        self.bounds(epoch.get()).map(|(_, last)| Height::new(last))
    }
}

/// Schemes built so far, by epoch, with whether this node signs in it.
type BuiltSchemes = Arc<Mutex<BTreeMap<u64, (Arc<Scheme>, bool)>>>;

/// Each epoch's certificate scheme, built from the validator set the
/// ledger recorded for it (none for an epoch the ledger has not reached).
pub struct EpochSchemes<S: Store> {
    node: SharedNode<S>,
    namespace: Arc<[u8]>,
    signer: PrivateKey,
    built: BuiltSchemes,
}

impl<S: Store> Clone for EpochSchemes<S> {
    fn clone(&self) -> Self {
        Self {
            node: Arc::clone(&self.node),
            namespace: Arc::clone(&self.namespace),
            signer: self.signer.clone(),
            built: Arc::clone(&self.built),
        }
    }
}

impl<S: Store> std::fmt::Debug for EpochSchemes<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EpochSchemes").finish_non_exhaustive()
    }
}

impl<S: Store> EpochSchemes<S> {
    fn new(node: SharedNode<S>, namespace: &[u8], signer: PrivateKey) -> Self {
        Self {
            node,
            namespace: namespace.into(),
            signer,
            built: Arc::default(),
        }
    }

    /// The validators of `epoch`, once the ledger knows them.
    fn participants(&self, epoch: u64) -> Option<Set<PublicKey>> {
        let set = self
            .node
            .lock()
            .ok()?
            .ledger()
            .validator_set(epoch)
            .ok()??;
        let keys: Vec<PublicKey> = set
            .iter()
            .filter_map(|(account, _)| public_key(account).ok())
            .collect();
        Set::try_from(keys).ok()
    }

    /// The scheme of `epoch`, and whether this node signs in it.
    fn get(&self, epoch: u64) -> Option<(Arc<Scheme>, bool)> {
        if let Some(found) = self.built.lock().ok()?.get(&epoch) {
            return Some(found.clone());
        }
        let participants = self.participants(epoch)?;
        let built = match Scheme::signer(&self.namespace, participants.clone(), self.signer.clone())
        {
            Some(scheme) => (Arc::new(scheme), true),
            None => (
                Arc::new(Scheme::verifier(&self.namespace, participants)),
                false,
            ),
        };
        self.built.lock().ok()?.insert(epoch, built.clone());
        Some(built)
    }
}

impl<S: Store + Send + 'static> certificate::Provider for EpochSchemes<S> {
    type Scope = Epoch;
    type Scheme = Scheme;

    fn scoped(&self, epoch: Epoch) -> Option<certificate::Scoped<Scheme>> {
        let (scheme, signs) = self.get(epoch.get())?;
        Some(if signs {
            certificate::Scoped::scheme(scheme)
        } else {
            certificate::Scoped::verifier(scheme)
        })
    }
}

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

/// The most transactions one relay message carries.
pub const RELAY_TRANSACTIONS_MAX: usize = 4_096;
/// The most bytes of one relay message.
pub const RELAY_BYTES_MAX: usize = 2 << 20;

/// How often a validator with nothing to relay says it is alive.
const HEARTBEAT: Duration = Duration::from_secs(1);

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

/// Why a validator's engine could not start.
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
    #[error("storage for {what} could not be opened: {error}")]
    Storage { what: &'static str, error: String },
}

/// The validator set of the epoch the next block belongs to (the
/// ledger's record, taken from validator stake at the end of the epoch
/// before), in key order.
pub fn validator_set<S: Store>(node: &SharedNode<S>) -> Result<Set<PublicKey>, EngineError> {
    let node = node.lock().map_err(|_| EngineError::Poisoned)?;
    let ledger = node.ledger();
    let epoch = ledger.epoch_of(ledger.height() + 1);
    let validators = ledger
        .validator_set(epoch)
        .map_err(|error| EngineError::Ledger(error.to_string()))?
        .unwrap_or_default();
    if validators.is_empty() {
        return Err(EngineError::NoValidators);
    }
    let keys = validators
        .iter()
        .map(|(account, _)| public_key(account))
        .collect::<Result<Vec<_>, _>>()?;
    Set::try_from(keys).map_err(|_| EngineError::DuplicateValidator)
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
            namespace: format!("idlegrid-chain:{chain_id}").into_bytes(),
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

type Mailbox = marshal::core::Mailbox<Scheme, Standard<EngineBlock>>;

/// Finalized blocks, as marshal stores them.
#[derive(Clone)]
pub struct Blocks {
    mailbox: Mailbox,
}

impl std::fmt::Debug for Blocks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Blocks").finish_non_exhaustive()
    }
}

impl Blocks {
    /// The finalized block at `height`, if this validator stores it.
    pub async fn at(&self, height: u64) -> Option<Block> {
        self.mailbox
            .get_block(Identifier::Height(Height::new(height)))
            .await
            .map(|block| block.inner().0.clone())
    }

    /// The highest finalized height this validator knows of (it may not
    /// have applied it yet).
    pub async fn finalized_height(&self) -> Option<u64> {
        self.mailbox
            .get_info(Identifier::Latest)
            .await
            .map(|(height, _)| height.get())
    }
}

/// A started validator: the consensus engine's task and the block store.
pub struct Running {
    pub engine: Handle<()>,
    pub blocks: Blocks,
}

fn archive<C>(prefix: &str, name: &str, cache: &CacheRef, codec_config: C) -> immutable::Config<C> {
    immutable::Config {
        metadata_partition: format!("{prefix}-{name}-metadata"),
        freezer_table_partition: format!("{prefix}-{name}-freezer-table"),
        freezer_table_initial_size: 64,
        freezer_table_resize_frequency: 10,
        freezer_table_resize_chunk_size: 10,
        freezer_key_partition: format!("{prefix}-{name}-freezer-key"),
        freezer_key_page_cache: cache.clone(),
        freezer_value_partition: format!("{prefix}-{name}-freezer-value"),
        freezer_value_target_size: 1 << 20,
        freezer_value_compression: None,
        ordinal_partition: format!("{prefix}-{name}-ordinal"),
        items_per_section: NZU64!(1024),
        codec_config,
        replay_buffer: NZUsize!(1 << 16),
        freezer_key_write_buffer: NZUsize!(1 << 16),
        freezer_value_write_buffer: NZUsize!(1 << 16),
        ordinal_write_buffer: NZUsize!(1 << 16),
    }
}

/// Starts a validator over its shared node: the transaction relay,
/// marshal (finalized blocks, backfill from peers, delivery to the ledger
/// exactly once) and, for each epoch in which this node is a validator,
/// one simplex engine over that epoch's validator set (the ledger's
/// validator stake at the end of the epoch before). `peers` tracks who is
/// in each epoch's set; `blocker` disconnects a peer that misbehaves.
pub async fn start<E, P, Bl, S, R, St>(
    context: E,
    config: &EngineConfig,
    signer: PrivateKey,
    node: SharedNode<St>,
    peers: P,
    blocker: Bl,
    channels: Channels<S, R>,
) -> Result<Running, EngineError>
where
    E: Spawner + Clock + Storage + Metrics + rand_core::CryptoRng,
    P: Provider<PublicKey = PublicKey> + Manager<PublicKey = PublicKey>,
    Bl: Blocker<PublicKey = PublicKey>,
    S: Sender<PublicKey = PublicKey>,
    R: Receiver<PublicKey = PublicKey>,
    St: Store + Send + 'static,
{
    let me = signer.public_key();
    let (chain_id, epoch_length, height) = {
        let node = node.lock().map_err(|_| EngineError::Poisoned)?;
        let ledger = node.ledger();
        (
            ledger.chain_id().to_owned(),
            ledger.params().epoch_length_blocks,
            ledger.height(),
        )
    };
    let schemes = EpochSchemes::new(node.clone(), &config.namespace, signer);
    let prefix = config.partition_prefix.clone();
    let cache = CacheRef::new(NZU16!(4096), NZUsize!(1024));
    let epocher = LedgerEpocher::new(epoch_length);
    start_relay(
        context.child("relay"),
        config.relay_interval,
        node.clone(),
        channels.transactions,
    );
    let resolver = marshal_resolver::init(
        context.child("marshal_resolver"),
        marshal_resolver::Config {
            public_key: me.clone(),
            peer_provider: peers.clone(),
            blocker: blocker.clone(),
            mailbox_size: NZUsize!(1024),
            fetch_timeout: NonZeroDuration::new(config.fetch_timeout)
                .unwrap_or(NZDuration!(Duration::from_secs(2))),
            fetch_retry_delay: Duration::from_millis(100),
            priority_requests: false,
            priority_responses: false,
        },
        channels.backfill,
    );
    let (buffer_engine, buffer) = buffered::Engine::new(
        context.child("buffer"),
        buffered::Config {
            public_key: me.clone(),
            mailbox_size: NZUsize!(1024),
            deque_size: 10,
            priority: false,
            codec_config: (),
            peer_provider: peers.clone(),
            strategy: Sequential,
        },
    );
    buffer_engine.start(channels.broadcast);
    let storage = |what: &'static str| {
        move |error: commonware_storage::archive::Error| EngineError::Storage {
            what,
            error: error.to_string(),
        }
    };
    let finalizations = immutable::Archive::init(
        context.child("finalizations"),
        archive(
            &prefix,
            "finalizations",
            &cache,
            Scheme::certificate_codec_config_unbounded(),
        ),
    )
    .await
    .map_err(storage("finalizations"))?;
    let blocks = immutable::Archive::init(
        context.child("blocks"),
        archive(&prefix, "blocks", &cache, ()),
    )
    .await
    .map_err(storage("blocks"))?;
    let genesis = EngineBlock::genesis(&chain_id);
    let genesis_digest = genesis.digest();
    let (actor, mailbox, _floor) = marshal::core::Actor::init(
        context.child("marshal"),
        finalizations,
        blocks,
        marshal::Config {
            provider: schemes.clone(),
            epocher,
            start: Start::Genesis(Digested::precomputed(genesis, genesis_digest)),
            partition_prefix: format!("{prefix}-marshal"),
            mailbox_size: NZUsize!(1024),
            view_retention: ViewDelta::new(256),
            prunable_items_per_section: NZU64!(1024),
            page_cache: cache.clone(),
            replay_buffer: NZUsize!(1 << 16),
            key_write_buffer: NZUsize!(1 << 16),
            value_write_buffer: NZUsize!(1 << 16),
            block_codec_config: (),
            max_repair: NZUsize!(16),
            max_pending_acks: NZUsize!(16),
            strategy: Sequential,
        },
    )
    .await;
    let (epoch_ended, mut epochs) = mpsc::unbounded();
    actor.start(Finalizer::new(node.clone(), epoch_ended), buffer, resolver);
    // One physical channel per simplex network, one subchannel per epoch;
    // votes for an epoch this node has no engine for reach the backup.
    let (muxer, mut votes, mut unrouted) = Muxer::builder(
        context.child("votes_mux"),
        channels.votes.0,
        channels.votes.1,
    )
    .with_backup()
    .build();
    muxer.start();
    let (muxer, mut certificates) = Muxer::new(
        context.child("certificates_mux"),
        channels.certificates.0,
        channels.certificates.1,
    );
    muxer.start();
    let (muxer, mut requests) = Muxer::new(
        context.child("requests_mux"),
        channels.requests.0,
        channels.requests.1,
    );
    muxer.start();

    // The epoch to run: the one after the last the ledger finished, or the
    // one its last block is in; its engine starts from the block that
    // ended the epoch before (genesis for epoch 0).
    let mut current = epocher_epoch(&epocher, height + 1);
    let blocks = Blocks {
        mailbox: mailbox.clone(),
    };
    let settings = config.clone();
    let orchestrator = context.child("epochs").spawn(move |context| async move {
        let mut engines: BTreeMap<u64, Handle<()>> = BTreeMap::new();
        let mut tracked = 0u64;
        let mut known: Vec<PublicKey> = Vec::new();
        let mut peers = peers;
        loop {
            // Enter `current` if it is not running.
            if let Entry::Vacant(slot) = engines.entry(current) {
                let Some((scheme, signs)) = schemes.get(current) else {
                    tracing::error!(
                        epoch = current,
                        "the ledger has no validator set for this epoch"
                    );
                    return;
                };
                let participants = scheme.participants().clone();
                // Track every validator seen so far: this epoch's as
                // primary, the others as secondary (they still follow).
                for key in participants.iter() {
                    if !known.contains(key) {
                        known.push(key.clone());
                    }
                }
                let secondary: Vec<PublicKey> = known
                    .iter()
                    .filter(|key| participants.position(key).is_none())
                    .cloned()
                    .collect();
                tracked = tracked.max(current + 1);
                let _ = peers.track(
                    tracked,
                    TrackedPeers::new(participants.clone(), Set::from_iter_dedup(secondary)),
                );
                let floor = match current.checked_sub(1) {
                    None => Some(genesis_digest),
                    Some(previous) => {
                        let boundary = epocher.bounds(previous).map(|(_, last)| last);
                        let id = boundary.and_then(|height| {
                            node.lock()
                                .ok()
                                .and_then(|node| node.ledger().block_id(height).ok().flatten())
                        });
                        id.map(digest_of)
                    }
                };
                let Some(floor) = floor else {
                    tracing::error!(
                        epoch = current,
                        "the block that ended the previous epoch is unknown"
                    );
                    return;
                };
                tracing::info!(
                    epoch = current,
                    validators = participants.len(),
                    signs,
                    "entering epoch"
                );
                let epoch = Epoch::new(current);
                if signs {
                    let inline = Inline::new(
                        context.child("inline").with_attribute("epoch", current),
                        App::new(node.clone(), settings.idle_block_wait),
                        mailbox.clone(),
                        epocher,
                    );
                    let engine = simplex::Engine::new(
                        context.child("simplex").with_attribute("epoch", current),
                        simplex::Config {
                            scheme: Arc::unwrap_or_clone(scheme),
                            elector: RoundRobin::<Sha256>::default(),
                            blocker: blocker.clone(),
                            automaton: inline.clone(),
                            relay: inline.clone(),
                            reporter: inline,
                            strategy: Sequential,
                            partition: format!("{prefix}-simplex-e{current}"),
                            mailbox_size: NZUsize!(1024),
                            epoch,
                            floor: Floor::Genesis(floor),
                            replay_buffer: NZUsize!(1 << 20),
                            write_buffer: NZUsize!(1 << 20),
                            page_cache: cache.clone(),
                            leader_timeout: settings.leader_timeout,
                            certification_timeout: settings.certification_timeout,
                            timeout_retry: settings.timeout_retry,
                            view_retention: ViewDelta::new(256),
                            skip: SkipPolicy::Enabled {
                                timeout: settings.timeout_retry * 2,
                                budget: SkipBudget::Participants,
                            },
                            fetch_timeout: NonZeroDuration::new(settings.fetch_timeout)
                                .unwrap_or(NZDuration!(Duration::from_secs(2))),
                            fetch_retry_delay: Duration::from_millis(100),
                            forward: ForwardPolicy::SilentLeader,
                            track_historical_votes: false,
                        },
                    );
                    let (Ok(vote), Ok(certificate), Ok(request)) = (
                        votes.register(current).await,
                        certificates.register(current).await,
                        requests.register(current).await,
                    ) else {
                        tracing::error!(epoch = current, "the epoch's subchannels are taken");
                        return;
                    };
                    slot.insert(engine.start(vote, certificate, request));
                } else {
                    // Not a validator this epoch: follow through marshal.
                    slot.insert(context.child("follower").spawn(|_| async {}));
                }
                // The previous epoch's engine helps laggards finish it;
                // older ones stop.
                while engines.len() > 2 {
                    if let Some((_, old)) = engines.pop_first() {
                        old.abort();
                    }
                }
            }
            select! {
                ended = epochs.next() => {
                    let Some(ended) = ended else { return };
                    if ended + 1 > current {
                        current = ended + 1;
                    }
                },
                message = unrouted.recv() => {
                    // Votes for an epoch past ours: we are behind; ask the
                    // sender for the finalization that ends our epoch.
                    let Some((epoch, (from, _))) = message else { return };
                    if epoch > current
                        && let Some((_, last)) = epocher.bounds(current)
                    {
                        mailbox.hint_finalized(Height::new(last), NonEmptyVec::new(from));
                    }
                },
            }
        }
    });
    Ok(Running {
        engine: orchestrator,
        blocks,
    })
}

impl std::fmt::Debug for Running {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Running").finish_non_exhaustive()
    }
}

/// The epoch of `height`.
fn epocher_epoch(epocher: &LedgerEpocher, height: u64) -> u64 {
    epocher
        .containing(Height::new(height))
        .map_or(0, |info| info.epoch().get())
}

/// Relays transactions this validator accepted to the others, and takes in
/// theirs; a relay message is a bounded list of signed transactions.
fn start_relay<E, S, R, St>(
    context: E,
    interval: Duration,
    node: SharedNode<St>,
    (mut sender, mut receiver): Channel<S, R>,
) where
    E: Spawner + Clock,
    S: Sender<PublicKey = PublicKey>,
    R: Receiver<PublicKey = PublicKey>,
    St: Store + Send + 'static,
{
    let outgoing = node.clone();
    context.child("out").spawn(move |context| async move {
        // An empty message now and then tells the others this validator
        // is alive even when it has nothing to relay.
        let heartbeat = (HEARTBEAT.as_millis() / interval.as_millis().max(1)).max(1);
        let mut quiet = 0u128;
        loop {
            context.sleep(interval).await;
            let Ok(batch) = outgoing.lock().map(|mut node| node.take_outbox()) else {
                return;
            };
            let mut messages = relay_messages(batch);
            quiet += 1;
            if messages.is_empty() && quiet >= heartbeat {
                messages.extend(encode(&Vec::<SignedTransaction>::new()).ok());
            }
            if !messages.is_empty() {
                quiet = 0;
            }
            for message in messages {
                sender.send(Recipients::All, message, false);
            }
        }
    });
    context.child("in").spawn(move |_| async move {
        let signatures = crate::node::signature_cache(&node);
        while let Ok((from, message)) = receiver.recv().await {
            let Some(batch) = decode_relay(message.as_ref()) else {
                tracing::debug!(peer = %account_of(&from), "malformed relay message");
                continue;
            };
            // Signatures first, outside the node's lock and as one batch;
            // the pool then finds them checked.
            let batch: Vec<SignedTransaction> = match &signatures {
                Some(cache) => {
                    let answers = cache.verify_many(&batch);
                    batch
                        .into_iter()
                        .zip(answers)
                        .filter_map(|(transaction, answer)| answer.is_ok().then_some(transaction))
                        .collect()
                }
                None => batch,
            };
            let Ok(mut node) = node.lock() else {
                return;
            };
            node.heard_from(account_of(&from));
            for transaction in batch {
                // Refusals are expected (the same transaction from several
                // peers, or already in a block) and cost the sender nothing.
                let _ = node.relayed(transaction);
            }
        }
    });
}

/// A relay message from a peer: at most [`RELAY_TRANSACTIONS_MAX`]
/// transactions in at most [`RELAY_BYTES_MAX`] bytes, or nothing.
pub fn decode_relay(bytes: &[u8]) -> Option<Vec<SignedTransaction>> {
    decode::<Bounded<Vec<SignedTransaction>, RELAY_TRANSACTIONS_MAX>>(bytes, RELAY_BYTES_MAX)
        .ok()
        .map(Bounded::into_inner)
}

/// Splits transactions into relay messages within the relay bounds.
fn relay_messages(batch: Vec<SignedTransaction>) -> Vec<Vec<u8>> {
    let mut messages = Vec::new();
    let mut current: Vec<SignedTransaction> = Vec::new();
    let mut bytes = 16;
    for transaction in batch {
        let size = encode(&transaction).map_or(usize::MAX, |encoded| encoded.len());
        if size > RELAY_BYTES_MAX / 2 {
            continue;
        }
        if current.len() == RELAY_TRANSACTIONS_MAX || bytes + size > RELAY_BYTES_MAX {
            messages.extend(encode(&std::mem::take(&mut current)).ok());
            bytes = 16;
        }
        bytes += size;
        current.push(transaction);
    }
    if !current.is_empty() {
        messages.extend(encode(&current).ok());
    }
    messages
}
