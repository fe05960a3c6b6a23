//! Starting a validator: the relay, marshal with its archives, resolver
//! and broadcast buffer, and the orchestrator that runs one simplex engine
//! per epoch.

use std::collections::BTreeMap;
use std::collections::btree_map::Entry;
use std::sync::Arc;
use std::time::Duration;

use commonware_broadcast::buffered;
use commonware_consensus::marshal::resolver::p2p as marshal_resolver;
use commonware_consensus::marshal::standard::Inline;
use commonware_consensus::marshal::{self, Start};
use commonware_consensus::simplex::elector::RoundRobin;
use commonware_consensus::simplex::{self, Floor, ForwardPolicy, SkipBudget, SkipPolicy};
use commonware_consensus::types::{Epoch, Height, ViewDelta};
use commonware_cryptography::certificate::{Scheme as _, Verifier as _};
use commonware_cryptography::ed25519::{PrivateKey, PublicKey};
use commonware_cryptography::sha256::Sha256;
use commonware_cryptography::{Digested, Digestible, Signer as _};
use commonware_macros::select;
use commonware_p2p::utils::mux::{Builder as _, Muxer};
use commonware_p2p::{Blocker, Manager, Provider, Receiver, Sender, TrackedPeers};
use commonware_parallel::Sequential;
use commonware_runtime::buffer::paged::CacheRef;
use commonware_runtime::{Clock, Handle, Metrics, Spawner, Storage};
use commonware_storage::archive::immutable;
use commonware_utils::ordered::Set;
use commonware_utils::vec::NonEmptyVec;
use commonware_utils::{NZDuration, NZU16, NZU64, NZUsize, NonZeroDuration};
use futures::StreamExt;
use futures::channel::mpsc;
use idlegrid_ledger::Store;

use super::application::{App, Finalizer};
use super::block::{Blocks, EngineBlock, digest_of};
use super::epochs::{EpochSchemes, LedgerEpocher, epocher_epoch};
use super::relay::start_relay;
use super::{Channels, EngineConfig, EngineError, Scheme};
use crate::node::SharedNode;

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
