//! Four validators on commonware's deterministic runtime and simulated
//! network finalize blocks of real ledger transactions through simplex and
//! marshal, agree on every state root, apply each transfer once, and replay
//! identically from the same seed.

use std::time::Duration;

use commonware_cryptography::Signer;
use commonware_cryptography::ed25519::{PrivateKey, PublicKey};
use commonware_p2p::simulated::{self, Link, Network, Oracle};
use commonware_runtime::{Clock, Handle, Quota, Runner, Spawner, Supervisor, deterministic};
use commonware_utils::{NZU32, NZUsize, probability};
// This test builds its own genesis (its validators are its consensus keys).
#[expect(dead_code)]
mod common;

use common::{CHAIN, key, transfer};
use idlegrid_chain::engine::{
    Channels, EngineConfig, account_of, channel, max_message_size, private_key, start,
};
use idlegrid_chain::{Chain, Mempool, MempoolConfig, SharedNode, shared};
use idlegrid_ledger::{Genesis, Ledger, Params, StakeRole, Transaction, TxKind};
use idlegrid_ledger::{MemoryStore, NoReExecution, SignedTransaction};
use idlegrid_types::Keypair;

const VALIDATORS: u64 = 4;
const TRANSFERS: u64 = 24;
const EPOCH: u64 = 4;
/// Each validator's stake at genesis.
const STAKE: u64 = 50_000;

/// Validator `index`'s key, as a ledger account.
fn validator_key(index: u64) -> Keypair {
    Keypair::from_seed([200 + index as u8; 32])
}
const QUOTA: Quota = Quota::per_second(NZU32!(10_000));

/// A ledger whose validators are the test's consensus keys and where
/// accounts 1 to 3 hold 1,000 each.
fn ledger(validators: &[PublicKey]) -> Ledger<MemoryStore> {
    let genesis = Genesis {
        chain_id: CHAIN.to_owned(),
        // Short epochs: every scenario crosses several, each with its own
        // simplex engine and validator set.
        params: Params {
            epoch_length_blocks: EPOCH,
            ..Params::default()
        },
        balances: (1..=3)
            .map(|seed| (key(seed).account_id(), 1_000))
            .chain(validators.iter().map(|key| (account_of(key), 2 * STAKE)))
            .collect(),
        validators: validators
            .iter()
            .map(|key| (account_of(key), STAKE))
            .collect(),
    };
    Ledger::init(MemoryStore::default(), &genesis).expect("genesis")
}

fn transfers() -> Vec<SignedTransaction> {
    (0..TRANSFERS)
        .map(|index| transfer(1 + (index % 3) as u8, index / 3, 2, 10))
        .collect()
}

/// Starts one validator through the library's engine wiring, over the
/// simulated network.
async fn start_validator(
    context: deterministic::Context,
    oracle: &Oracle<PublicKey, deterministic::Context>,
    signer: PrivateKey,
    shared: SharedNode<MemoryStore>,
) -> Handle<()> {
    let me = signer.public_key();
    let control = oracle.control(me.clone());
    let mut registered = Vec::new();
    for id in channel::ALL {
        registered.push(control.register(id, QUOTA).await.expect("channel"));
    }
    let mut registered = registered.into_iter();
    let mut next = || registered.next().expect("six channels");
    let channels = Channels {
        votes: next(),
        certificates: next(),
        requests: next(),
        broadcast: next(),
        backfill: next(),
        transactions: next(),
    };
    let manager = oracle.manager();
    let mut config = EngineConfig::new(CHAIN);
    config.partition_prefix = format!("validator-{me}");
    context.spawn(move |context| async move {
        let running =
            match start(context, &config, signer, shared, manager, control, channels).await {
                Ok(running) => running,
                Err(error) => panic!("the engine does not start: {error}"),
            };
        let _ = running.engine.await;
    })
}

fn height(node: &SharedNode<MemoryStore>) -> u64 {
    node.lock().map_or(0, |node| node.chain.ledger().height())
}

/// A link between two validators: a quick reliable LAN, or a slow one
/// that drops one message in seven and delays the rest unevenly.
fn link(lossy: bool) -> Link {
    if lossy {
        Link {
            latency: Duration::from_millis(80),
            jitter: Duration::from_millis(60),
            success_rate: probability!(0.85),
        }
    } else {
        Link {
            latency: Duration::from_millis(20),
            jitter: Duration::from_millis(5),
            success_rate: probability!(1.0),
        }
    }
}

async fn link_all(
    oracle: &Oracle<PublicKey, deterministic::Context>,
    keys: &[PublicKey],
    lossy: bool,
) {
    for a in keys {
        for b in keys {
            if a != b {
                let link = link(lossy);
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
    /// The same over links that drop and delay messages.
    Lossy { target: u64 },
    /// The last validator unstakes: from the epoch after, the other three
    /// run consensus and it follows; then it stakes again and is back in
    /// a later epoch's set.
    Rotation,
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
        let signers: Vec<PrivateKey> = (0..VALIDATORS)
            .map(|index| private_key(validator_key(index).seed()))
            .collect();
        let keys: Vec<PublicKey> = signers.iter().map(Signer::public_key).collect();
        let max_size = max_message_size(VALIDATORS as u32);
        let (network, oracle) = Network::new_with_peers(
            context.child("network"),
            simulated::Config {
                max_size,
                max_peers_per_set: NZUsize!(VALIDATORS as usize),
                disconnect_on_block: true,
                tracked_peer_sets: NZUsize!(2),
            },
            keys.clone(),
        )
        .await;
        network.start();
        link_all(&oracle, &keys, matches!(scenario, Scenario::Lossy { .. })).await;
        let mut nodes = Vec::new();
        let mut handles = Vec::new();
        for (index, signer) in signers.iter().enumerate() {
            let chain = Chain::new(ledger(&keys)).expect("a fresh chain");
            let shared = shared(
                chain,
                Mempool::new(MempoolConfig::default()),
                Box::new(NoReExecution),
            );
            handles.push(
                start_validator(
                    context.child("validator").with_attribute("index", index),
                    &oracle,
                    signer.clone(),
                    shared.clone(),
                )
                .await,
            );
            nodes.push(shared);
        }
        // Clients reach one validator; the relay carries their
        // transactions to the others (any of which may lead a round).
        {
            let mut first = nodes[0].lock().expect("node");
            for tx in transfers() {
                first.submit(tx).expect("the pool takes it");
            }
        }
        let mut split = Vec::new();
        match scenario {
            Scenario::Steady { target } | Scenario::Lossy { target } => {
                wait_for(&context, &nodes, target).await
            }
            Scenario::Rotation => {
                let leaver = validator_key(3);
                let stake = |kind: fn(StakeRole, u64) -> TxKind, nonce: u64| {
                    let body = Transaction::new(CHAIN, nonce, 1, kind(StakeRole::Validator, STAKE))
                        .expect("tx");
                    leaver.sign(body)
                };
                let unstake = stake(|role, amount| TxKind::Unstake { role, amount }, 0);
                nodes[0]
                    .lock()
                    .expect("node")
                    .submit(unstake)
                    .expect("taken");
                let members = |node: &SharedNode<MemoryStore>| {
                    let node = node.lock().expect("node");
                    let ledger = node.ledger();
                    let epoch = ledger.epoch_of(ledger.height() + 1);
                    ledger
                        .validator_set(epoch)
                        .expect("readable")
                        .map_or(0, |set| set.len())
                };
                while nodes.iter().any(|node| members(node) != 3) {
                    context.sleep(Duration::from_millis(100)).await;
                }
                // Two whole epochs run by three validators, the fourth
                // following.
                let target = nodes.iter().map(height).max().unwrap_or(0) + 2 * EPOCH;
                wait_for(&context, &nodes, target).await;
                let restake = stake(|role, amount| TxKind::Stake { role, amount }, 1);
                nodes[1]
                    .lock()
                    .expect("node")
                    .submit(restake)
                    .expect("taken");
                while nodes.iter().any(|node| members(node) != 4) {
                    context.sleep(Duration::from_millis(100)).await;
                }
                let target = nodes.iter().map(height).max().unwrap_or(0) + 2 * EPOCH;
                wait_for(&context, &nodes, target).await;
            }
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
                link_all(&oracle, &keys, false).await;
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
    for node in &nodes {
        let counts = node.lock().expect("node").finalized_transactions();
        assert_eq!(
            (counts.applied, counts.rejected),
            (TRANSFERS, 0),
            "each node counts the transfers it finalized"
        );
    }
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

#[test]
fn four_validators_agree_over_links_that_drop_and_delay_messages() {
    for seed in [4, 5] {
        let (_, nodes, _) = run(seed, Scenario::Lossy { target: 8 });
        assert!(nodes.iter().all(|node| height(node) >= 8));
        assert!(
            nodes
                .iter()
                .all(|node| node.lock().expect("node").mempool.is_empty()),
            "seed {seed}: every transfer was relayed and finalized"
        );
        assert_agree(&nodes);
    }
}

#[test]
fn the_validator_set_follows_stake_from_epoch_to_epoch() {
    for seed in [11, 12, 13] {
        rotation(seed);
    }
}

fn rotation(seed: u64) {
    let (_, nodes, _) = run(seed, Scenario::Rotation);
    let leaver = account_of(&private_key(validator_key(3).seed()).public_key());
    for node in &nodes {
        let node = node.lock().expect("node");
        let ledger = node.ledger();
        let sets: Vec<Vec<_>> = (0..=ledger.epoch_of(ledger.height()))
            .map(|epoch| {
                ledger
                    .validator_set(epoch)
                    .expect("readable")
                    .expect("a set per epoch")
                    .into_iter()
                    .map(|(account, _)| account)
                    .collect()
            })
            .collect();
        assert!(
            sets.iter()
                .any(|set| set.len() == 3 && !set.contains(&leaver)),
            "seed {seed}: the leaver left a set"
        );
        assert!(
            sets.last().is_some_and(|set| set.contains(&leaver)),
            "seed {seed}: the leaver came back"
        );
    }
    assert_agree(&nodes);
}
