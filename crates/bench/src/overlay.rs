//! The overlay under a connection flood, on loopback in this process: how
//! fast a node refuses connections from one flooding address (against a
//! listener that only accepts and closes), the process's memory while 1,500
//! connections from 200 addresses hold the node's handshake places
//! (against before the flood), and how long a node that joined during the
//! flood takes to connect once it ends (against joining with no flood).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use idlegrid_hostile as hostile;
use idlegrid_net::{Event, Multiaddr, Overlay, OverlayConfig};
use idlegrid_types::Keypair;
use tokio::sync::mpsc;

use crate::Measurement;

#[derive(Debug, clap::Args)]
pub struct Options {
    #[command(flatten)]
    pub common: crate::Common,
}

struct Sizes {
    /// How long each refusal count runs.
    refusing: Duration,
    /// Connections held by the flood, and the addresses they come from.
    flood_connections: usize,
    flood_hosts: u8,
    /// How long the flood lasts.
    flood: Duration,
}

const FULL: Sizes = Sizes {
    refusing: Duration::from_secs(5),
    flood_connections: 1500,
    flood_hosts: 200,
    flood: Duration::from_secs(8),
};

const QUICK: Sizes = Sizes {
    refusing: Duration::from_secs(1),
    flood_connections: 300,
    flood_hosts: 50,
    flood: Duration::from_secs(3),
};

/// Connections the refusal count keeps trying at once.
const REFUSING_CONCURRENCY: usize = 32;
/// A connection closed within this of opening was refused at once.
const REFUSED_WITHIN: Duration = Duration::from_millis(500);

pub fn run(options: &Options) -> anyhow::Result<Vec<Measurement>> {
    let sizes = if options.common.quick { QUICK } else { FULL };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("failed to start the async runtime")?;
    idlegrid_net::raise_open_files_limit().context("failed to raise the open-files limit")?;
    runtime.block_on(measure(&sizes))
}

async fn measure(sizes: &Sizes) -> anyhow::Result<Vec<Measurement>> {
    let mut rows = Vec::new();

    // Refusals: a plain listener that accepts and closes, then a node
    // whose handshake places for the flooding address are already full.
    let plain = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let plain_address = plain.local_addr()?;
    let accepting = tokio::spawn(async move {
        while let Ok((stream, _)) = plain.accept().await {
            drop(stream);
        }
    });
    let attacker = hostile::hosts(1)[0];
    let baseline = refusals_per_second(plain_address, attacker, sizes.refusing).await;
    accepting.abort();
    let (refusing, _events, address) = node(1, Vec::new()).await?;
    let target = socket_of(&address)?;
    let (held, _flood) = flood(target, &[attacker], 8, sizes.refusing * 2).await;
    if held < 8 {
        bail!("only {held} of the flooding address's 8 handshake places were taken");
    }
    let refused = refusals_per_second(target, attacker, sizes.refusing).await;
    rows.push(Measurement::new(
        "overlay.flood.refused_per_second",
        refused,
        "conn/s",
        baseline,
        "a listener that only accepts and closes",
    ));
    drop(refusing);

    // Memory and healing: a node flooded from many addresses while a
    // second joins through it.
    let (first, _first_events, address) = node(2, Vec::new()).await?;
    let target = socket_of(&address)?;
    let before = resident_bytes()?;
    let hosts = hostile::hosts(sizes.flood_hosts);
    let (held, flood) = flood(target, &hosts, sizes.flood_connections, sizes.flood).await;
    if held < sizes.flood_connections / 2 {
        bail!(
            "the flood opened only {held} of {} connections",
            sizes.flood_connections
        );
    }
    let during = resident_bytes()?;
    rows.push(Measurement::new(
        "overlay.flood.resident_mib",
        mib(during),
        "MiB",
        mib(before),
        "this process before the flood",
    ));
    let (_second, mut second_events, _) = node(3, vec![address.clone()]).await?;
    flood.await.context("the flood failed")?;
    let ended = Instant::now();
    wait_connected(&mut second_events, &first).await?;
    let healed = ended.elapsed();

    // The same join with no flood.
    let (quiet, _quiet_events, quiet_address) = node(4, Vec::new()).await?;
    let started = Instant::now();
    let (_joiner, mut joiner_events, _) = node(5, vec![quiet_address]).await?;
    wait_connected(&mut joiner_events, &quiet).await?;
    let joined = started.elapsed();
    rows.push(Measurement::new(
        "overlay.flood.heal_ms",
        millis(healed),
        "ms",
        millis(joined),
        "joining with no flood",
    ));
    Ok(rows)
}

/// Starts a node on loopback with the key of `seed`; gives it, its events
/// and its address.
async fn node(
    seed: u8,
    bootstrap: Vec<Multiaddr>,
) -> anyhow::Result<(Overlay, mpsc::Receiver<Event>, Multiaddr)> {
    let mut config = OverlayConfig::new("overlay-bench");
    config.listen = vec!["/ip4/127.0.0.1/tcp/0".parse()?];
    config.bootstrap = bootstrap;
    config.mdns = false;
    let (overlay, mut events, _task) = Overlay::start(&Keypair::from_seed([seed; 32]), config)?;
    loop {
        match tokio::time::timeout(Duration::from_secs(30), events.recv()).await {
            Ok(Some(Event::Listening(_))) => break,
            Ok(Some(_)) => {}
            _ => bail!("the node did not start listening"),
        }
    }
    let address = overlay
        .listen_addresses()
        .await?
        .into_iter()
        .next()
        .context("the node listens nowhere")?;
    Ok((overlay, events, address))
}

async fn wait_connected(events: &mut mpsc::Receiver<Event>, to: &Overlay) -> anyhow::Result<()> {
    let account = to.account();
    tokio::time::timeout(Duration::from_secs(60), async {
        while let Some(event) = events.recv().await {
            if matches!(event, Event::Connected(peer) if peer == account) {
                return true;
            }
        }
        false
    })
    .await
    .ok()
    .filter(|connected| *connected)
    .map(|_| ())
    .context("the nodes never connected")
}

/// Starts a flood of `count` connections from `hosts` for `hold`; gives how
/// many it holds once each had its first try, and the flood to wait for.
async fn flood(
    target: SocketAddr,
    hosts: &[[u8; 4]],
    count: usize,
    hold: Duration,
) -> (usize, tokio::task::JoinHandle<()>) {
    let (opened, open) = tokio::sync::oneshot::channel();
    let hosts = hosts.to_vec();
    let end = tokio::time::Instant::now() + hold;
    let flood = tokio::spawn(async move {
        hostile::flood(target, &hosts, count, b"", end, opened).await;
    });
    (open.await.unwrap_or(0), flood)
}

async fn refusals_per_second(target: SocketAddr, host: [u8; 4], length: Duration) -> f64 {
    let end = tokio::time::Instant::now() + length;
    let refused = hostile::refusals(target, host, REFUSING_CONCURRENCY, REFUSED_WITHIN, end).await;
    refused as f64 / length.as_secs_f64()
}

fn socket_of(address: &Multiaddr) -> anyhow::Result<SocketAddr> {
    hostile::socket_of(address).with_context(|| format!("{address} is no TCP address"))
}

/// This process's resident memory, in bytes.
fn resident_bytes() -> anyhow::Result<u64> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| {
            rest.trim()
                .trim_end_matches("kB")
                .trim()
                .parse::<u64>()
                .ok()
        })
        .map(|kib| kib << 10)
        .context("no VmRSS in /proc/self/status")
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / f64::from(1 << 20)
}

fn millis(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}
