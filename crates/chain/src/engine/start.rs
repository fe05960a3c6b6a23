//! Starting a validator: the relay, marshal with its archives, resolver
//! and broadcast buffer, and the orchestrator that runs one simplex engine
//! per epoch.

use std::collections::BTreeMap;
use std::collections::btree_map::Entry;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use commonware_broadcast::buffered;
use commonware_codec::{Encode as _, Read};
use commonware_consensus::marshal::resolver::p2p as marshal_resolver;
use commonware_consensus::marshal::standard::Inline;
use commonware_consensus::marshal::{self, Start};
use commonware_consensus::simplex::elector::RoundRobin;
use commonware_consensus::simplex::types::Artifact;
use commonware_consensus::simplex::{self, Floor, ForwardPolicy, SkipBudget, SkipPolicy};
use commonware_consensus::types::{Epoch, Height, ViewDelta};
use commonware_cryptography::blake3::Digest;
use commonware_cryptography::certificate::{Scheme as _, Verifier};
use commonware_cryptography::ed25519::{PrivateKey, PublicKey};
use commonware_cryptography::sha256::Sha256;
use commonware_cryptography::{Digested, Digestible, Signer as _};
use commonware_macros::select;
use commonware_p2p::utils::mux::{Builder as _, Muxer};
use commonware_p2p::{Blocker, Manager, Provider, Receiver, Sender, TrackedPeers};
use commonware_parallel::Sequential;
use commonware_runtime::buffer::paged::CacheRef;
use commonware_runtime::{Clock, Handle, Metrics, ReadOptions, Spawner, Storage};
use commonware_storage::archive::{Archive as _, Identifier, immutable};
use commonware_storage::journal;
use commonware_storage::journal::segmented::variable::{Config as JournalConfig, Journal};
use commonware_utils::ordered::Set;
use commonware_utils::vec::NonEmptyVec;
use commonware_utils::{NZDuration, NZU16, NZU64, NZUsize, NonZeroDuration};
use futures::StreamExt;
use futures::channel::mpsc;
use idlegrid_ledger::Store;
use idlegrid_types::Keypair;

use super::application::{App, Finalizer, Progress, apply_finalized};
use super::block::{Blocks, EngineBlock, digest_of, id_of};
use super::epochs::{EpochSchemes, LedgerEpocher, epocher_epoch};
use super::faults::FaultReporter;
use super::relay::start_relay;
use super::{Channels, EngineConfig, EngineError, Scheme};
use crate::node::SharedNode;

/// A started validator: the consensus engine's task and the block store.
pub struct Running {
    /// Runs until the engine cannot go on, and gives why (it never stops
    /// on its own).
    pub engine: Handle<EngineError>,
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
    let (chain_id, epoch_length) = {
        let node = node.lock().map_err(|_| EngineError::Poisoned)?;
        let ledger = node.ledger();
        (
            ledger.chain_id().to_owned(),
            ledger.params().epoch_length_blocks,
        )
    };
    // The account behind the consensus key (the same ed25519 key), which
    // signs this validator's fault reports.
    let account_key = Keypair::from_seed(
        signer.encode()[..]
            .try_into()
            .map_err(|_| EngineError::BadKey(me.to_string()))?,
    );
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
    // An archive spans several partitions; its errors name the blob.
    let storage = |what: &'static str| {
        move |error: commonware_storage::archive::Error| EngineError::Storage {
            what,
            location: PathBuf::new(),
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
    let height = apply_archived(&blocks, &node).await?;
    let genesis = EngineBlock::genesis(&chain_id);
    let genesis_digest = genesis.digest();
    let (actor, mailbox, floor) = marshal::core::Actor::init(
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
    // Marshal goes on from the height it last saw acknowledged, so a
    // ledger below it would never get the blocks between.
    if let Some(delivered) = floor.processed().map(|processed| processed.height().get())
        && delivered > height
    {
        return Err(EngineError::LedgerBehind {
            ledger: height,
            delivered,
        });
    }
    let (progress, mut epochs) = mpsc::unbounded();
    actor.start(Finalizer::new(node.clone(), progress), buffer, resolver);
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
                    return EngineError::Ledger(format!(
                        "the ledger has no validator set for epoch {current}"
                    ));
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
                    return EngineError::Ledger(format!(
                        "the block that ended the epoch before {current} is unknown"
                    ));
                };
                tracing::info!(
                    epoch = current,
                    validators = participants.len(),
                    signs,
                    "entering epoch"
                );
                let epoch = Epoch::new(current);
                let partition = format!("{prefix}-simplex-e{current}");
                let signs = signs && {
                    let journal = check_journal(
                        context
                            .child("journal_check")
                            .with_attribute("epoch", current),
                        &partition,
                        &cache,
                        scheme.certificate_codec_config(),
                    )
                    .await;
                    match journal {
                        Ok(JournalCheck::Intact) => true,
                        // Votes it may have sent are gone: voting again in
                        // this epoch could contradict them. It follows the
                        // epoch instead and votes from the next.
                        Ok(JournalCheck::LostTail) => {
                            tracing::warn!(
                                epoch = current,
                                %partition,
                                "the consensus journal lost its tail; following this epoch without voting"
                            );
                            false
                        }
                        Err(error) => return error,
                    }
                };
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
                            reporter: FaultReporter::new(
                                inline,
                                node.clone(),
                                account_key.clone(),
                            ),
                            strategy: Sequential,
                            partition,
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
                        return EngineError::Stopped(format!(
                            "the subchannels of epoch {current} are taken"
                        ));
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
                progress = epochs.next() => match progress {
                    Some(Progress::EpochEnded(ended)) => {
                        if ended + 1 > current {
                            current = ended + 1;
                        }
                    }
                    Some(Progress::Halted(why)) => return EngineError::Stopped(why),
                    None => {
                        return EngineError::Stopped(
                            "marshal stopped delivering finalized blocks".to_owned(),
                        );
                    }
                },
                message = unrouted.recv() => {
                    // Votes for an epoch past ours: we are behind; ask the
                    // sender for the finalization that ends our epoch.
                    let Some((epoch, (from, _))) = message else {
                        return EngineError::Stopped("the p2p network closed".to_owned());
                    };
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

/// Applies the finalized blocks marshal archived above the ledger's
/// height, in order, and returns the ledger's height after them.
///
/// Marshal archives a block before the ledger applies it and goes on after
/// a restart from the last block the ledger acknowledged, so the ledger is
/// normally at or above that height. A damaged ledger file can come back
/// lower (redb falls back to its previous commit when the newest one is
/// corrupt); marshal would not deliver those blocks again.
async fn apply_archived<E, St>(
    blocks: &immutable::Archive<E, Digest, Arc<EngineBlock>>,
    node: &SharedNode<St>,
) -> Result<u64, EngineError>
where
    E: Storage + Metrics + Clock,
    St: Store,
{
    let height = |node: &SharedNode<St>| {
        node.lock()
            .map(|node| node.ledger().height())
            .map_err(|_| EngineError::Poisoned)
    };
    let from = height(node)?;
    loop {
        let next = height(node)? + 1;
        let block =
            blocks
                .get(Identifier::Index(next))
                .await
                .map_err(|error| EngineError::Storage {
                    what: "blocks",
                    location: PathBuf::new(),
                    error: error.to_string(),
                })?;
        let Some(block) = block else {
            let to = next - 1;
            if to > from {
                tracing::warn!(
                    from,
                    to,
                    "applied finalized blocks from the archive to a ledger that was behind it"
                );
            }
            return Ok(to);
        };
        let mut node = node.lock().map_err(|_| EngineError::Poisoned)?;
        apply_finalized(&mut node, &block.0, id_of(&block.digest())).map_err(|error| {
            EngineError::Ledger(format!("archived block {next} cannot be applied: {error}"))
        })?;
    }
}

/// What reading an epoch's consensus journal found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum JournalCheck {
    Intact,
    /// Its tail failed its checksums and was cut off (as after a torn
    /// write, or damage): votes this validator sent may be forgotten.
    LostTail,
}

/// Opens and replays epoch `partition`'s consensus journal as simplex will
/// when its engine starts: simplex panics on a journal it cannot read, and a
/// validator should rather stop with an error that names the file. A torn
/// or damaged tail is cut off here as simplex would cut it, and reported.
async fn check_journal<E>(
    context: E,
    partition: &str,
    cache: &CacheRef,
    certificates: <<Scheme as Verifier>::Certificate as Read>::Cfg,
) -> Result<JournalCheck, EngineError>
where
    E: Storage + Metrics + Clock,
{
    let damaged = |error: journal::Error| {
        let location = match &error {
            journal::Error::Runtime(error) => blob_of(partition, error),
            _ => PathBuf::from(partition),
        };
        EngineError::Storage {
            what: "the consensus journal",
            location,
            error: error.to_string(),
        }
    };
    let before = blob_sizes(&context, partition)
        .await
        .map_err(|error| damaged(error.into()))?;
    let journal = Journal::<_, Artifact<Scheme, Digest>>::init(
        context.child("journal"),
        JournalConfig {
            partition: partition.to_owned(),
            compression: None,
            codec_config: certificates,
            page_cache: cache.clone(),
            write_buffer: NZUsize!(1 << 16),
        },
    )
    .await
    .map_err(damaged)?;
    let mut replay = journal
        .replay(0, 0, NZUsize!(1 << 16), ReadOptions::DONT_CACHE)
        .await
        .map_err(damaged)?;
    while let Some(item) = replay.next().await {
        item.map_err(damaged)?;
    }
    // Whatever was cut off is cut off durably before simplex reopens it.
    replay
        .finish()
        .map_err(damaged)?
        .sync_all()
        .await
        .map_err(damaged)?;
    let after = blob_sizes(&context, partition)
        .await
        .map_err(|error| damaged(error.into()))?;
    let intact = before
        .iter()
        .all(|(name, size)| after.get(name).is_some_and(|now| now >= size));
    Ok(if intact {
        JournalCheck::Intact
    } else {
        JournalCheck::LostTail
    })
}

/// The logical size of each blob in `partition` (none when it is missing).
async fn blob_sizes<E: Storage>(
    storage: &E,
    partition: &str,
) -> Result<BTreeMap<Vec<u8>, u64>, commonware_runtime::Error> {
    let names = match storage.scan(partition).await {
        Ok(names) => names,
        Err(commonware_runtime::Error::PartitionMissing(_)) => return Ok(BTreeMap::new()),
        Err(error) => return Err(error),
    };
    let mut sizes = BTreeMap::new();
    for name in names {
        let (_blob, size) = storage.open(partition, &name).await?;
        sizes.insert(name, size);
    }
    Ok(sizes)
}

/// The blob a storage error is about, or else its partition (both relative
/// to the runtime's storage directory).
fn blob_of(partition: &str, error: &commonware_runtime::Error) -> PathBuf {
    use commonware_runtime::Error as Runtime;
    match error {
        Runtime::BlobCorrupt(partition, blob, _)
        | Runtime::BlobOpenFailed(partition, blob, _)
        | Runtime::BlobMissing(partition, blob)
        | Runtime::BlobResizeFailed(partition, blob, _)
        | Runtime::BlobSyncFailed(partition, blob, _) => PathBuf::from(partition).join(blob),
        _ => PathBuf::from(partition),
    }
}

impl std::fmt::Debug for Running {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Running").finish_non_exhaustive()
    }
}
