//! Content by id on loopback, in this process: one holder serves a blob
//! from its content store (its BLAKE3 tree, then 1 MiB chunks read from
//! the file and checked) to three fetchers at once over the real overlay,
//! each checking every 64 KiB against the id as it arrives and writing it
//! to its own store, as a provider fetches a task's input file; against a
//! plain TCP copy of the same bytes to three readers; and a read from the
//! content store (checked against its id) against reading the same file.
//! Then the requestor's memory over a job of millions of tasks
//! (`data_jobs`).

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use idlegrid_net::{ContentStore, Event, Overlay, OverlayConfig, Response, fetch_content_into};
use idlegrid_types::{ContentId, Keypair};
use tokio::sync::mpsc;

use crate::Measurement;

#[derive(Debug, clap::Args)]
pub struct Options {
    #[command(flatten)]
    pub common: crate::Common,
}

/// The blob's size, bytes.
const FULL_BYTES: usize = 1 << 30;
const QUICK_BYTES: usize = 32 << 20;
/// Fetchers at once: a job's first providers.
const FETCHERS: usize = 3;
/// How long a node gets to start listening.
const LISTEN_WAIT: Duration = Duration::from_secs(30);

pub fn run(options: &Options) -> anyhow::Result<Vec<Measurement>> {
    let size = if options.common.quick {
        QUICK_BYTES
    } else {
        FULL_BYTES
    };
    let blob: Arc<Vec<u8>> = Arc::new(
        (0..size)
            .map(|index| (index as u64).wrapping_mul(0x9E37_79B9) as u8)
            .collect(),
    );
    let cid = ContentId::of(&blob);
    let mib = (FETCHERS * size) as f64 / f64::from(1 << 20);

    let tcp = tcp_copy(&blob)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("failed to start the async runtime")?;
    let overlay = runtime.block_on(overlay_fetch(Arc::clone(&blob), cid))?;

    let (store_read, file_read) = store_read(&blob, cid)?;
    let blob_mib = size as f64 / f64::from(1 << 20);
    let jobs = crate::data_jobs::run(options.common.quick)?;
    let mut measurements = vec![
        Measurement::new(
            format!(
                "data.fetch_{}_mib_to_{FETCHERS}_peers_mib_per_s",
                size >> 20
            ),
            mib / overlay.as_secs_f64(),
            "MiB/s",
            mib / tcp.as_secs_f64(),
            "the same bytes copied over plain TCP on loopback to as many readers",
        ),
        Measurement::new(
            "data.store_hit_mib_per_s",
            blob_mib / store_read.as_secs_f64(),
            "MiB/s",
            blob_mib / file_read.as_secs_f64(),
            "reading the same file without checking it",
        ),
    ];
    measurements.extend(jobs);
    Ok(measurements)
}

/// Writes `blob` to `FETCHERS` readers at once over loopback TCP: the time
/// until every reader has all of it.
fn tcp_copy(blob: &Arc<Vec<u8>>) -> anyhow::Result<Duration> {
    let listener = TcpListener::bind("127.0.0.1:0").context("failed to listen")?;
    let address = listener.local_addr()?;
    let started = Instant::now();
    let readers: Vec<_> = (0..FETCHERS)
        .map(|_| {
            std::thread::spawn(move || -> std::io::Result<usize> {
                let mut stream = TcpStream::connect(address)?;
                let mut buffer = vec![0u8; 1 << 20];
                let mut total = 0;
                loop {
                    let read = stream.read(&mut buffer)?;
                    if read == 0 {
                        return Ok(total);
                    }
                    total += read;
                }
            })
        })
        .collect();
    let mut writers = Vec::new();
    for _ in 0..FETCHERS {
        let (mut stream, _) = listener.accept()?;
        let blob = Arc::clone(blob);
        writers.push(std::thread::spawn(move || stream.write_all(&blob)));
    }
    for writer in writers {
        writer
            .join()
            .map_err(|_| anyhow::anyhow!("a writer panicked"))??;
    }
    for reader in readers {
        let read = reader
            .join()
            .map_err(|_| anyhow::anyhow!("a reader panicked"))??;
        if read != blob.len() {
            bail!("a TCP reader got {read} of {} bytes", blob.len());
        }
    }
    Ok(started.elapsed())
}

fn config(bootstrap: Vec<idlegrid_net::Multiaddr>) -> OverlayConfig {
    let mut config = OverlayConfig::new("idlegrid-bench-data");
    config.listen = vec!["/ip4/127.0.0.1/tcp/0".parse().expect("an address")];
    config.bootstrap = bootstrap;
    config.mdns = false;
    config
}

/// Starts a node and waits until it listens.
async fn node(
    seed: u8,
    bootstrap: Vec<idlegrid_net::Multiaddr>,
) -> anyhow::Result<(Overlay, mpsc::Receiver<Event>)> {
    let key = Keypair::from_seed([seed; 32]);
    let (overlay, mut events, _driver) = Overlay::start(&key, config(bootstrap))?;
    loop {
        match tokio::time::timeout(LISTEN_WAIT, events.recv()).await {
            Ok(Some(Event::Listening(_))) => return Ok((overlay, events)),
            Ok(Some(_)) => {}
            _ => bail!("an overlay node did not start listening"),
        }
    }
}

/// One holder serves `blob` to `FETCHERS` nodes fetching it at once: the
/// time until each has all of it, checked.
async fn overlay_fetch(blob: Arc<Vec<u8>>, cid: ContentId) -> anyhow::Result<Duration> {
    let folder = tempfile::tempdir().context("failed to make a folder")?;
    let (holder, mut holder_events) = node(1, Vec::new()).await?;
    let address = holder.listen_addresses().await?[0].clone();
    let held = Arc::new(ContentStore::open(&folder.path().join("holder"), u64::MAX)?);
    held.put(cid, &blob)?;
    // Its tree is made before the clock starts, as a provider's is by the
    // first peer that asks.
    held.tree(&cid).context("the holder lost the blob")?;
    tokio::spawn(async move {
        while let Some(event) = holder_events.recv().await {
            if let Event::Request { request, reply, .. } = event {
                let held = Arc::clone(&held);
                tokio::task::spawn_blocking(move || {
                    reply.send(held.answer(&request).unwrap_or_else(|| {
                        Response::refused("unexpected", "this node only serves content")
                    }));
                });
            }
        }
    });
    let mut fetchers = Vec::with_capacity(FETCHERS);
    for index in 0..FETCHERS {
        let (fetcher, mut events) = node(2 + index as u8, vec![address.clone()]).await?;
        tokio::spawn(async move { while events.recv().await.is_some() {} });
        fetcher.dial(address.clone()).await?;
        let store = ContentStore::open(&folder.path().join(format!("fetcher-{index}")), u64::MAX)?;
        fetchers.push((fetcher, Arc::new(store)));
    }
    let from = holder.account();
    let len = blob.len() as u64;
    let started = Instant::now();
    let fetches: Vec<_> = fetchers
        .iter()
        .map(|(fetcher, store)| {
            let (fetcher, store) = (fetcher.clone(), Arc::clone(store));
            tokio::spawn(async move {
                let (writer, held) = store.resume_writer(cid, len).map_err(|e| e.to_string())?;
                let writer =
                    fetch_content_into(&fetcher, &[], &from, cid, len, writer, held).await?;
                tokio::task::spawn_blocking(move || writer.finish(cid))
                    .await
                    .map_err(|error| error.to_string())?
                    .map_err(|error| error.to_string())
            })
        })
        .collect();
    for fetch in fetches {
        let written = fetch
            .await
            .context("a fetch panicked")?
            .map_err(anyhow::Error::msg)?;
        if written != len {
            bail!("a fetcher stored {written} of {len} bytes");
        }
    }
    Ok(started.elapsed())
}

/// Reading `blob` from a content store (checked against its id) and, as
/// the baseline, reading the same file.
fn store_read(blob: &[u8], cid: ContentId) -> anyhow::Result<(Duration, Duration)> {
    let folder = tempfile::tempdir().context("failed to make a folder")?;
    let store = ContentStore::open(folder.path(), u64::MAX)?;
    store.put(cid, blob)?;
    let file = store.path(&cid).context("the blob is not in the store")?;
    let started = Instant::now();
    let read = store.read(&cid).context("the store lost the blob")?;
    let store_read = started.elapsed();
    let started = Instant::now();
    let plain = std::fs::read(&file)?;
    let file_read = started.elapsed();
    if read.len() != plain.len() {
        bail!("the store and the file differ");
    }
    Ok((store_read, file_read))
}
