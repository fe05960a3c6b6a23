//! Four validators on commonware's deterministic runtime and simulated
//! network finalize blocks of real ledger transactions through simplex and
//! marshal, agree on every state root, apply each transfer once, and replay
//! identically from the same seed.

use std::time::Duration;

use commonware_broadcast::buffered;
use commonware_consensus::marshal::core::Actor as Marshal;
use commonware_consensus::marshal::resolver::p2p as marshal_resolver;
use commonware_consensus::marshal::standard::{Inline, Standard};
use commonware_consensus::marshal::{self, Start};
use commonware_consensus::simplex::elector::RoundRobin;
use commonware_consensus::simplex::{self, Floor, ForwardPolicy, SkipBudget, SkipPolicy};
use commonware_consensus::types::{Epoch, FixedEpocher, ViewDelta};
use commonware_cryptography::blake3::Digest;
use commonware_cryptography::certificate::{ConstantProvider, Verifier as _};
use commonware_cryptography::ed25519::{PrivateKey, PublicKey};
use commonware_cryptography::sha256::Sha256;
use commonware_cryptography::{Digested, Digestible, Signer};
use commonware_p2p::simulated::{self, Link, Network, Oracle};
use commonware_parallel::Sequential;
use commonware_runtime::buffer::paged::CacheRef;
use commonware_runtime::{Clock, Handle, Quota, Runner, Spawner, Supervisor, deterministic};
use commonware_storage::archive::immutable;
use commonware_utils::ordered::Set;
use commonware_utils::{NZDuration, NZU16, NZU32, NZU64, NZUsize, probability};
mod common;

use common::{key, ledger, transfer};
use idlegrid_chain::engine::{App, EngineBlock, Finalizer, Scheme, SharedNode, node};
use idlegrid_chain::{Mempool, MempoolConfig};
use idlegrid_ledger::{MemoryStore, NoReExecution, SignedTransaction};

const NAMESPACE: &[u8] = b"idlegrid-chain-test";
const VALIDATORS: u64 = 4;
const TRANSFERS: u64 = 24;
const QUOTA: Quota = Quota::per_second(NZU32!(10_000));

fn transfers() -> Vec<SignedTransaction> {
    (0..TRANSFERS)
        .map(|index| transfer(1 + (index % 3) as u8, index / 3, 2, 10))
        .collect()
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

/// Starts one validator: marshal with its archives, resolver and broadcast
/// buffer, and one simplex engine (one epoch for the whole test).
async fn start_validator(
    context: deterministic::Context,
    oracle: &Oracle<PublicKey, deterministic::Context>,
    signer: PrivateKey,
    participants: Set<PublicKey>,
    shared: SharedNode<MemoryStore>,
) -> Handle<()> {
    let me = signer.public_key();
    let control = oracle.control(me.clone());
    let votes = control.register(0, QUOTA).await.expect("votes");
    let certificates = control.register(1, QUOTA).await.expect("certificates");
    let requests = control.register(2, QUOTA).await.expect("requests");
    let broadcast = control.register(3, QUOTA).await.expect("broadcast");
    let backfill = control.register(4, QUOTA).await.expect("backfill");
    let manager = oracle.manager();
    let prefix = format!("validator-{me}");
    context.spawn(move |context| async move {
        let scheme = Scheme::signer(NAMESPACE, participants, signer).expect("a participant");
        let cache = CacheRef::new(NZU16!(4096), NZUsize!(64));
        let epocher = FixedEpocher::new(NZU64!(1_000_000));
        let resolver = marshal_resolver::init(
            context.child("marshal_resolver"),
            marshal_resolver::Config {
                public_key: me.clone(),
                peer_provider: manager.clone(),
                blocker: control.clone(),
                mailbox_size: NZUsize!(1024),
                fetch_timeout: NZDuration!(Duration::from_secs(2)),
                fetch_retry_delay: Duration::from_millis(100),
                priority_requests: false,
                priority_responses: false,
            },
            backfill,
        );
        let (buffer_engine, buffer) = buffered::Engine::new(
            context.child("buffer"),
            buffered::Config {
                public_key: me.clone(),
                mailbox_size: NZUsize!(1024),
                deque_size: 10,
                priority: false,
                codec_config: (),
                peer_provider: manager.clone(),
                strategy: Sequential,
            },
        );
        buffer_engine.start(broadcast);
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
        .expect("finalizations archive");
        let blocks = immutable::Archive::init(
            context.child("blocks"),
            archive(&prefix, "blocks", &cache, ()),
        )
        .await
        .expect("blocks archive");
        let chain_id = shared
            .lock()
            .map(|node| node.chain.ledger().chain_id().to_owned());
        let genesis = EngineBlock::genesis(&chain_id.expect("node"));
        let genesis_digest = genesis.digest();
        let (actor, mailbox, _floor) = Marshal::init(
            context.child("marshal"),
            finalizations,
            blocks,
            marshal::Config {
                provider: ConstantProvider::<Scheme, Epoch>::new(scheme.clone()),
                epocher: epocher.clone(),
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
        actor.start(Finalizer::new(shared.clone()), buffer, resolver);
        let epoch = Epoch::zero();
        let inline = Inline::new(context.child("inline"), App::new(shared), mailbox, epocher);
        let engine = simplex::Engine::new(
            context.child("simplex"),
            simplex::Config {
                scheme,
                elector: RoundRobin::<Sha256>::default(),
                blocker: control.clone(),
                automaton: inline.clone(),
                relay: inline.clone(),
                reporter: inline,
                strategy: Sequential,
                partition: format!("{prefix}-simplex"),
                mailbox_size: NZUsize!(1024),
                epoch,
                floor: Floor::Genesis(genesis_digest),
                replay_buffer: NZUsize!(1 << 20),
                write_buffer: NZUsize!(1 << 20),
                page_cache: cache,
                leader_timeout: Duration::from_secs(1),
                certification_timeout: Duration::from_secs(2),
                timeout_retry: Duration::from_secs(5),
                view_retention: ViewDelta::new(256),
                skip: SkipPolicy::Enabled {
                    timeout: Duration::from_secs(10),
                    budget: SkipBudget::Participants,
                },
                fetch_timeout: NZDuration!(Duration::from_secs(1)),
                fetch_retry_delay: Duration::from_millis(100),
                forward: ForwardPolicy::SilentLeader,
                track_historical_votes: false,
            },
        );
        let handle = engine.start(votes, certificates, requests);
        let _ = handle.await;
    })
}

fn height(node: &SharedNode<MemoryStore>) -> u64 {
    node.lock().map_or(0, |node| node.chain.ledger().height())
}

async fn link_all(oracle: &Oracle<PublicKey, deterministic::Context>, keys: &[PublicKey]) {
    for a in keys {
        for b in keys {
            if a != b {
                let link = Link {
                    latency: Duration::from_millis(20),
                    jitter: Duration::from_millis(5),
                    success_rate: probability!(1.0),
                };
                // Already linked is fine.
                let _ = oracle.add_link(a.clone(), b.clone(), link).await;
            }
        }
    }
}

async fn wait_for(
    context: &deterministic::Context,
    nodes: &[SharedNode<MemoryStore>],
    target: u64,
) {
    // Simulated time: the runtime advances it; nothing waits on a wall clock.
    while nodes.iter().any(|node| height(node) < target) {
        context.sleep(Duration::from_millis(100)).await;
    }
}

/// What a scenario does with the running network.
#[derive(Debug, Clone, Copy)]
enum Scenario {
    /// Run until every node has `target` blocks.
    Steady { target: u64 },
    /// Crash the last validator, let the others go on, restart it over its
    /// stored state, and wait for it to catch up; then split the network
    /// 2–2 (no quorum) and heal it.
    CrashAndPartition,
}

/// Runs four validators through a scenario; returns the runtime's audit of
/// everything that happened, each node, and the heights seen while the
/// network was split (before and after waiting).
fn run(seed: u64, scenario: Scenario) -> (String, Vec<SharedNode<MemoryStore>>, Vec<u64>) {
    let config = deterministic::Config::default()
        .with_seed(seed)
        .with_timeout(Some(Duration::from_secs(600)));
    deterministic::Runner::new(config).start(|context| async move {
        let signers: Vec<PrivateKey> = (0..VALIDATORS).map(PrivateKey::from_seed).collect();
        let keys: Vec<PublicKey> = signers.iter().map(Signer::public_key).collect();
        let participants = Set::try_from(keys.clone()).expect("distinct keys");
        let max_size = commonware_p2p::max_message_size(&[
            commonware_p2p::utils::mux::prefixed(simplex::max_payload_size::<Scheme, Digest>(
                VALIDATORS as u32,
            )),
            marshal::max_payload_size::<Standard<EngineBlock>, Scheme>(VALIDATORS as u32, &()),
        ]);
        let (network, oracle) = Network::new_with_peers(
            context.child("network"),
            simulated::Config {
                max_size,
                max_peers_per_set: NZUsize!(VALIDATORS as usize),
                disconnect_on_block: true,
                tracked_peer_sets: NZUsize!(1),
            },
            keys.clone(),
        )
        .await;
        network.start();
        link_all(&oracle, &keys).await;
        let mut nodes = Vec::new();
        let mut handles = Vec::new();
        for (index, signer) in signers.iter().enumerate() {
            let ledger = ledger(3);
            let mut mempool = Mempool::new(MempoolConfig::default());
            for tx in transfers() {
                mempool
                    .insert(tx, &ledger, &NoReExecution)
                    .expect("mempool takes it");
            }
            let shared = node(ledger, mempool, Box::new(NoReExecution));
            handles.push(
                start_validator(
                    context.child("validator").with_attribute("index", index),
                    &oracle,
                    signer.clone(),
                    participants.clone(),
                    shared.clone(),
                )
                .await,
            );
            nodes.push(shared);
        }
        let mut split = Vec::new();
        match scenario {
            Scenario::Steady { target } => wait_for(&context, &nodes, target).await,
            Scenario::CrashAndPartition => {
                wait_for(&context, &nodes, 3).await;
                if let Some(handle) = handles.pop() {
                    handle.abort();
                }
                let crashed_at = height(&nodes[3]);
                // Three of four are a quorum: the chain goes on.
                wait_for(&context, &nodes[..3], crashed_at + 5).await;
                assert_eq!(
                    height(&nodes[3]),
                    crashed_at,
                    "a crashed node applies nothing"
                );
                // Restart over the same stored state (ledger and engine journals).
                start_validator(
                    context.child("validator").with_attribute("index", 3),
                    &oracle,
                    signers[3].clone(),
                    participants.clone(),
                    nodes[3].clone(),
                )
                .await;
                let target = nodes.iter().map(height).max().unwrap_or(0) + 2;
                wait_for(&context, &nodes, target).await;
                // Split 2–2: neither side has a quorum.
                for a in 0..2 {
                    for b in 2..4 {
                        let _ = oracle.remove_link(keys[a].clone(), keys[b].clone()).await;
                        let _ = oracle.remove_link(keys[b].clone(), keys[a].clone()).await;
                    }
                }
                context.sleep(Duration::from_secs(3)).await;
                let before = nodes.iter().map(height).max().unwrap_or(0);
                context.sleep(Duration::from_secs(20)).await;
                let after = nodes.iter().map(height).max().unwrap_or(0);
                split = vec![before, after];
                link_all(&oracle, &keys).await;
                wait_for(&context, &nodes, after + 3).await;
            }
        }
        (context.auditor().state(), nodes, split)
    })
}

/// Every node holds the same state root at every height they all reached;
/// every transfer was applied exactly once.
fn assert_agree(nodes: &[SharedNode<MemoryStore>]) {
    let common = nodes.iter().map(height).min().unwrap_or(0);
    let recipient = key(100).account_id();
    let roots: Vec<Vec<[u8; 32]>> = nodes
        .iter()
        .map(|node| {
            let node = node.lock().expect("node");
            let ledger = node.chain.ledger();
            assert_eq!(
                ledger.account(&recipient).expect("account").balance,
                TRANSFERS * 10,
                "every transfer applied exactly once"
            );
            (1..=common)
                .map(|height| {
                    ledger
                        .state_root_at(height)
                        .expect("readable")
                        .expect("a root per height")
                })
                .collect()
        })
        .collect();
    assert!(
        roots.iter().all(|node| *node == roots[0]),
        "state roots differ"
    );
}

#[test]
fn four_validators_finalize_the_same_ledger_and_replay_by_seed() {
    let scenario = Scenario::Steady { target: 6 };
    let (audit, nodes, _) = run(7, scenario);
    assert!(nodes.iter().all(|node| height(node) >= 6));
    assert!(
        nodes
            .iter()
            .all(|node| node.lock().expect("node").mempool.is_empty())
    );
    assert_agree(&nodes);
    let (replay, _, _) = run(7, scenario);
    assert_eq!(audit, replay, "the same seed must replay the same run");
}

#[test]
fn a_crashed_validator_catches_up_and_a_split_network_stalls_then_heals() {
    for seed in [1, 2, 3] {
        let (_, nodes, split) = run(seed, Scenario::CrashAndPartition);
        assert_eq!(split[0], split[1], "seed {seed}: no quorum, no blocks");
        assert!(nodes.iter().all(|node| height(node) >= split[1] + 3));
        assert_agree(&nodes);
    }
}
