//! The compute overlay under hostile traffic, in real processes on
//! loopback: floods and malformed traffic aimed at a provider, after which
//! every provider is still up, its memory bounded, and a job started
//! afterwards runs on all of them.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::network::{Network, STAKE, check_results, finish, pi_job, submit};
use common::wait_until;

/// Hostile connections come from other loopback addresses than the honest
/// peers' 127.0.0.1, as they would from other hosts: the `hosts` addresses
/// from 127.0.1.1 on.
fn attackers(hosts: u8) -> Vec<[u8; 4]> {
    (1..=hosts).map(|host| [127, 0, 1, host]).collect()
}

/// The provider listening at `address` (a multiaddr) as a socket address.
fn socket_of(address: &str) -> SocketAddr {
    let mut parts = address.split('/');
    let ip = parts.nth(2).expect("an ip");
    let port = parts.nth(1).expect("a port");
    format!("{ip}:{port}").parse().expect("a socket address")
}

/// A provider's resident memory, in bytes.
fn resident_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("the status");
    let kib: u64 = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS");
    kib << 10
}

/// Opens `count` TCP connections to `target` from the `hosts` in turn,
/// sends nothing on them, tells `opened` how many it holds, holds them for
/// `hold` and closes them.
fn idle_flood(
    target: SocketAddr,
    hosts: &[[u8; 4]],
    count: usize,
    hold: Duration,
    opened: std::sync::mpsc::Sender<usize>,
) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    runtime.block_on(async {
        let mut open = Vec::new();
        for host in hosts.iter().cycle().take(count) {
            let socket = tokio::net::TcpSocket::new_v4().expect("a socket");
            socket
                .bind(SocketAddr::from((*host, 0)))
                .expect("bind the attacker's address");
            if let Ok(Ok(stream)) =
                tokio::time::timeout(Duration::from_secs(2), socket.connect(target)).await
            {
                open.push(stream);
            }
        }
        let _ = opened.send(open.len());
        tokio::time::sleep(hold).await;
        drop(open);
    })
}

/// Every provider is still running, its memory under `ceiling`, and a job
/// submitted through the first now runs on all of them.
fn check_serves_everyone(network: &mut Network, bootstrap: &str, ceiling: u64) {
    for provider in &mut network.providers {
        let child = provider.child.as_mut().expect("started");
        assert!(
            child.try_wait().expect("waitable").is_none(),
            "provider {} exited",
            provider.account
        );
        let resident = resident_bytes(child.id());
        assert!(
            resident < ceiling,
            "provider {} holds {resident} bytes",
            provider.account
        );
    }
    let tasks = 100;
    let out = network.dir().join("results");
    let job = pi_job(network.dir(), tasks, "policy = \"adaptive\"", 60);
    let started = Instant::now();
    let child = submit(network, &job, &out, bootstrap);
    let report = finish(network, child, &out);
    eprintln!("the job took {:?}", started.elapsed());
    let results = check_results(&out, &report, tasks);
    for provider in &network.providers {
        let count = results["providers"][&provider.account]["results"]
            .as_u64()
            .unwrap_or(0);
        assert!(count > 0, "{} ran nothing: {results}", provider.account);
    }
}

/// Floods the first of two providers with `count` idle connections from
/// `hosts` addresses while the second joins through it.
fn flood_while_joining(hosts: u8, count: usize) {
    let mut network = Network::start();
    let stake = STAKE.to_string();
    let first = network.provider(None, &["--stake", &stake]);
    let bootstrap = network.providers[first].addresses[0].clone();
    let target = socket_of(&bootstrap);
    let (opened, open) = std::sync::mpsc::channel();
    let flood = std::thread::spawn(move || {
        idle_flood(
            target,
            &attackers(hosts),
            count,
            Duration::from_secs(8),
            opened,
        )
    });
    eprintln!(
        "holding {} idle connections",
        open.recv().expect("the flood")
    );
    network.provider(Some(&bootstrap), &["--stake", &stake]);
    flood.join().expect("the flood");
    let ended = Instant::now();
    // Found again within seconds of the flood's end: the second provider
    // is connected to the first.
    let joined = network.providers[1].log.clone();
    let first_account = network.providers[first].account.clone();
    wait_until(
        Duration::from_secs(30),
        "the providers to find each other",
        || {
            std::fs::read_to_string(&joined).is_ok_and(|log| {
                log.lines()
                    .any(|line| line.contains(" connected ") && line.contains(&first_account))
            })
        },
    );
    eprintln!("found each other {:?} after the flood", ended.elapsed());
    check_serves_everyone(&mut network, &bootstrap, 256 << 20);
}

#[test]
fn an_idle_connection_flood_from_one_host_does_not_keep_others_out() {
    flood_while_joining(1, 1500);
}

#[test]
fn a_provider_that_joined_during_an_idle_flood_from_many_hosts_is_found_after_it() {
    flood_while_joining(200, 1500);
}
