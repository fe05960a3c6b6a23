//! The compute overlay under hostile traffic, in real processes on
//! loopback: connection floods, malformed traffic on every protocol the
//! overlay speaks, peers that never read, and gossip from unstaked keys,
//! aimed at a provider. After each, every provider is still up, its memory
//! bounded, and a job started afterwards runs on all of them.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::network::{Network, STAKE, check_results, finish, pi_job, submit_with};
use common::wait_until;
use idlegrid_hostile::{self as attacker, Peer, garbage, hosts, multistream, varint, work_frame};
use idlegrid_net::protocol::WORK_PROTOCOL;
use idlegrid_types::Keypair;
use libp2p::Multiaddr;

/// The attacks take turns: each floods a 2-core machine enough on its
/// own, and a provider's handshake deadline is wall-clock time.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn take_turn() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The most memory a provider may hold after an attack.
const RESIDENT_MAX: u64 = 256 << 20;

/// The socket address of a provider's multiaddr.
fn socket_of(address: &str) -> SocketAddr {
    attacker::socket_of(&address.parse().expect("a multiaddr")).expect("a TCP address")
}

/// A process's resident memory, in bytes.
fn resident_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("the status");
    let kib: u64 = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS");
    kib << 10
}

/// Two staked providers, the second joined through the first; gives the
/// first's TCP address.
fn two_providers() -> (Network, String) {
    let mut network = Network::start();
    let stake = STAKE.to_string();
    let first = network.provider(None, &["--stake", &stake]);
    let bootstrap = network.providers[first].addresses[0].clone();
    network.provider(Some(&bootstrap), &["--stake", &stake]);
    (network, bootstrap)
}

/// The network's chain id, which names its overlay's protocols.
fn chain_id(network: &Network) -> String {
    network.testnet.status(0)["chain_id"]
        .as_str()
        .expect("a chain id")
        .to_owned()
}

/// Every provider is still running with its memory bounded, and a job
/// submitted through the first now runs on all of them (two providers:
/// every task needs both).
fn check_serves_everyone(network: &mut Network, bootstrap: &str) {
    for provider in &mut network.providers {
        let child = provider.child.as_mut().expect("started");
        assert!(
            child.try_wait().expect("waitable").is_none(),
            "provider {} exited",
            provider.account
        );
        let resident = resident_bytes(child.id());
        eprintln!("provider {} holds {} MiB", provider.account, resident >> 20);
        assert!(
            resident < RESIDENT_MAX,
            "provider {} holds {resident} bytes",
            provider.account
        );
    }
    let tasks = 100;
    let out = network.dir().join(format!("results-{}", unique()));
    // Two replicas of every task, and no re-execution by the requestor:
    // the job ends only once the requestor, which knows only the first
    // provider, has found the second.
    let policy = "policy = \"replicas\"\nreplicas = 2";
    let job = pi_job(network.dir(), tasks, policy, 30);
    let api = network.api().to_owned();
    let child = submit_with(
        network,
        &api,
        &job,
        &out,
        bootstrap,
        &["--referee-fuel", "0"],
    );
    let report = finish(network, child, &out);
    let results = check_results(&out, &report, tasks);
    for provider in &network.providers {
        let count = results["providers"][&provider.account]["results"]
            .as_u64()
            .unwrap_or(0);
        assert!(count > 0, "{} ran nothing: {results}", provider.account);
    }
}

/// A number no earlier call in this process gave.
fn unique() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// Waits until the log of provider `index` says it connected to `account`;
/// gives how long that took.
fn wait_connected(network: &Network, index: usize, account: &str) -> Duration {
    let started = Instant::now();
    let log = network.providers[index].log.clone();
    wait_until(
        Duration::from_secs(30),
        "the providers to find each other",
        || {
            std::fs::read_to_string(&log).is_ok_and(|log| {
                log.lines()
                    .any(|line| line.contains(" connected ") && line.contains(account))
            })
        },
    );
    started.elapsed()
}

/// Floods a provider with `count` connections from `hosts` addresses that
/// write `first` and then nothing, while a second provider joins through
/// it; after the flood the two find each other and serve a job.
fn flood_while_joining(hosts: u8, count: usize, first: &'static [u8]) {
    let _turn = take_turn();
    let mut network = Network::start();
    let stake = STAKE.to_string();
    let index = network.provider(None, &["--stake", &stake]);
    let bootstrap = network.providers[index].addresses[0].clone();
    let target = socket_of(&bootstrap);
    let (opened, open) = tokio::sync::oneshot::channel();
    let flood = std::thread::spawn(move || {
        attacker::runtime().block_on(async {
            let end = tokio::time::Instant::now() + Duration::from_secs(8);
            attacker::flood(target, &attacker::hosts(hosts), count, first, end, opened).await;
        });
    });
    eprintln!(
        "holding {} connections",
        open.blocking_recv().expect("the flood")
    );
    network.provider(Some(&bootstrap), &["--stake", &stake]);
    flood.join().expect("the flood");
    let account = network.providers[index].account.clone();
    let healed = wait_connected(&network, 1, &account);
    eprintln!("found each other {healed:?} after the flood");
    check_serves_everyone(&mut network, &bootstrap);
}

#[test]
fn an_idle_connection_flood_from_one_host_does_not_keep_others_out() {
    flood_while_joining(1, 1500, b"");
}

#[test]
fn a_provider_that_joined_during_an_idle_flood_from_many_hosts_is_found_after_it() {
    flood_while_joining(200, 1500, b"");
}

/// The start of a handshake: multistream-select's header and a proposal of
/// noise, then nothing.
const HALF_OPEN: &[u8] = b"\x13/multistream/1.0.0\n\x07/noise\n";

#[test]
fn a_flood_of_half_open_handshakes_passes_and_the_network_heals() {
    assert_eq!(
        HALF_OPEN,
        [multistream("/multistream/1.0.0"), multistream("/noise")].concat()
    );
    flood_while_joining(200, 1500, HALF_OPEN);
}

#[test]
fn malformed_traffic_on_every_protocol_leaves_every_provider_serving() {
    let _turn = take_turn();
    let (mut network, bootstrap) = two_providers();
    let chain_id = chain_id(&network);
    let target = socket_of(&bootstrap);
    let address: Multiaddr = bootstrap.parse().expect("an address");
    let host = hosts(1)[0];
    let runtime = attacker::runtime();
    runtime.block_on(async {
        // Before authentication: multistream-select and noise.
        let header = multistream("/multistream/1.0.0");
        let noise = [header.clone(), multistream("/noise")].concat();
        let raw = [
            garbage(4096, 1),
            [header.clone(), garbage(4096, 2)].concat(),
            [header.clone(), varint(u64::MAX >> 1)].concat(),
            [noise.clone(), garbage(4096, 3)].concat(),
            // A noise message that claims 65,535 bytes and stops.
            [noise.clone(), vec![0xff, 0xff], garbage(16, 4)].concat(),
        ];
        let exchanges = raw.iter().map(|bytes| async move {
            if let Some(stream) = attacker::tcp_from(host, target).await {
                let mut stream = libp2p::tcp::tokio::TcpStream(stream);
                attacker::write_and_wait(&mut stream, bytes).await;
            }
        });
        futures::future::join_all(exchanges).await;
        // After noise, on the multiplexer: garbage, and a yamux frame
        // claiming 4 GiB.
        let yamux = [header.clone(), multistream("/yamux/1.0.0")].concat();
        let huge_frame = [&[0u8, 0, 0, 1, 0, 0, 0, 1][..], &u32::MAX.to_be_bytes()].concat();
        let sessions =
            [garbage(4096, 5), huge_frame]
                .into_iter()
                .enumerate()
                .map(|(index, tail)| {
                    let bytes = [yamux.clone(), tail].concat();
                    async move {
                        let seed = 200 + index as u8;
                        let session = attacker::noise_session_retried(host, target, seed).await;
                        let mut session = session.expect("a noise session");
                        attacker::write_and_wait(&mut session, &bytes).await;
                    }
                });
        futures::future::join_all(sessions).await;
        // Above the multiplexer: each protocol, with garbage, a truncated
        // message and one that claims more than any bound.
        let kademlia = format!("/idlegrid/{chain_id}/kad/1");
        let length_prefixed = [
            "/ipfs/id/1.0.0",
            "/ipfs/id/push/1.0.0",
            kademlia.as_str(),
            "/meshsub/1.1.0",
            "/meshsub/1.2.0",
        ];
        let mut seed = 1u8;
        for protocol in length_prefixed {
            let payloads = [
                garbage(4096, u64::from(seed)),
                [varint(1000), garbage(10, 6)].concat(),
                [varint(1 << 40), garbage(10, 7)].concat(),
            ];
            for payload in payloads {
                seed += 1;
                let mut peer = Peer::connect([seed; 32], &address, &chain_id);
                assert!(
                    peer.send(protocol, &payload).await,
                    "the provider does not speak {protocol}"
                );
            }
        }
        let work = [
            garbage(4096, 8),
            work_frame(1000, &garbage(10, 9)),
            work_frame(u32::MAX, &garbage(10, 10)),
        ];
        for payload in work {
            seed += 1;
            let mut peer = Peer::connect([seed; 32], &address, &chain_id);
            assert!(peer.send(WORK_PROTOCOL.as_ref(), &payload).await);
        }
    });
    check_serves_everyone(&mut network, &bootstrap);
}

#[test]
fn peers_that_never_read_and_gossip_from_unstaked_keys_leave_every_provider_serving() {
    let _turn = take_turn();
    let (mut network, bootstrap) = two_providers();
    let chain_id = chain_id(&network);
    let address: Multiaddr = bootstrap.parse().expect("an address");
    let runtime = attacker::runtime();
    let _guard = runtime.enter();
    // Peers asking for the provider's offer over and over on every work
    // stream they may open, reading nothing.
    let mut silent: Vec<Peer> = (0..4)
        .map(|index| Peer::connect([100 + index; 32], &address, &chain_id))
        .collect();
    let held: Vec<_> = runtime.block_on(async {
        let mut held = Vec::new();
        for peer in &mut silent {
            held.extend(peer.never_read(8, 2000).await);
        }
        held
    });
    eprintln!("holding {} unread work streams", held.len());
    // Twenty unstaked keys gossiping offers better than any provider's.
    let gossips: Vec<(Keypair, Peer)> = (0..20)
        .map(|index| {
            let seed = [150 + index; 32];
            (
                Keypair::from_seed(seed),
                Peer::connect(seed, &address, &chain_id),
            )
        })
        .collect();
    runtime.block_on(async {
        for round in 0..10 {
            for (key, peer) in &gossips {
                peer.gossip_offers(key, round * 20, 20).await;
            }
            // The mesh forms on gossipsub's heartbeat (a second).
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    });
    // The job runs with the unread streams still open.
    check_serves_everyone(&mut network, &bootstrap);
    drop(held);
}
