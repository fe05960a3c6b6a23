//! `idlegrid blob`: content by id in this machine's store, the one
//! `idlegrid provide` serves to peers: put a file in, fetch one from peers
//! (named, or found by what they announce; checked against its id as it
//! streams), list what is held, trim it.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use idlegrid_api::client::ApiClient;
use idlegrid_net::content::HOLDER_LOOKUP_TIMEOUT;
use idlegrid_net::{
    ContentStore, Event, Multiaddr, Overlay, PeerId, account_of, fetch_content_into,
    fetch_shared_content_into,
};
use idlegrid_provider::CONTENT_BYTES_DEFAULT;
use idlegrid_types::{AccountId, ContentId};
use serde_json::json;

use crate::compute::OverlayArgs;
use crate::failure::EXIT_FAILED;
use crate::resolve::{self, idlegrid_home};

/// Largest blob `get` takes unless told, bytes.
const GET_BYTES_DEFAULT: u64 = 1 << 30;

/// Content by id in this machine's store (the one `idlegrid provide`
/// serves to peers): put a file in, get one from a peer, list, trim.
///
/// Exit status: 0 done; 2 usage error; 3 could not finish (an unreadable
/// file, a peer that does not hold the content or sends other bytes).
#[derive(Debug, Args)]
#[command(after_help = "Examples:
  idlegrid blob put weights.bin
  idlegrid blob get b3:9f… --from /ip4/203.0.113.7/tcp/4001/p2p/12D3KooW… -o weights.bin
  idlegrid blob ls --json
  idlegrid blob gc --keep-bytes 1073741824")]
pub struct BlobArgs {
    #[command(subcommand)]
    command: BlobCommand,
    /// The store [default: $IDLEGRID_HOME/provider/content, what `idlegrid
    /// provide` serves].
    #[arg(long, value_name = "DIR", global = true)]
    dir: Option<PathBuf>,
    /// Bytes the store holds at most; the least recently used make room.
    #[arg(long, value_name = "BYTES", global = true, default_value_t = CONTENT_BYTES_DEFAULT)]
    store_bytes: u64,
    /// Print JSON on stdout.
    #[arg(long, global = true)]
    json: bool,
}

#[derive(Debug, Subcommand)]
enum BlobCommand {
    /// Put a file in the store; prints its content id.
    #[command(after_help = "Examples:
  idlegrid blob put weights.bin
  idlegrid blob put weights.bin --json --dir /var/lib/idlegrid/provider/content")]
    Put { file: PathBuf },
    /// Fetch content by id from peers, checking every 64 KiB against the
    /// id as it arrives, into the store (and to --out, or stdout). Without
    /// --from, from the peers that announce holding it (providers announce
    /// what their stores hold), found through the network --bootstrap
    /// joins.
    #[command(after_help = "Examples:
  idlegrid blob get b3:9f… --bootstrap /ip4/203.0.113.7/tcp/4001/p2p/12D3KooW… -o weights.bin
  idlegrid blob get b3:9f… --from /ip4/203.0.113.7/tcp/4001/p2p/12D3KooW… -o weights.bin
  idlegrid blob get b3:9f… --from ADDR_A --from ADDR_B --node http://127.0.0.1:8080 > weights.bin")]
    Get {
        cid: ContentId,
        /// A peer that holds it (a provider, a gateway), ending in
        /// /p2p/<peer id> (repeatable: each is tried in turn) [default: the
        /// peers that announce holding it].
        #[arg(long, value_name = "MULTIADDR")]
        from: Vec<Multiaddr>,
        /// Where to write it [default: stdout, unless --json].
        #[arg(long, short, value_name = "FILE")]
        out: Option<PathBuf>,
        /// Largest content taken, bytes.
        #[arg(long, value_name = "BYTES", default_value_t = GET_BYTES_DEFAULT)]
        bytes_max: u64,
        #[command(flatten)]
        overlay: OverlayArgs,
    },
    /// List what the store holds, least recently used first.
    #[command(after_help = "Examples:
  idlegrid blob ls
  idlegrid blob ls --json | jq '.blobs[].cid'")]
    Ls,
    /// Delete the least recently used until at most --keep-bytes are held.
    #[command(after_help = "Examples:
  idlegrid blob gc                          # empty the store
  idlegrid blob gc --keep-bytes 1073741824  # keep the newest 1 GiB")]
    Gc {
        #[arg(long, value_name = "BYTES", default_value_t = 0)]
        keep_bytes: u64,
    },
}

pub fn blob(args: BlobArgs) -> ExitCode {
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            resolve::report_error(&error, args.json);
            ExitCode::from(EXIT_FAILED)
        }
    }
}

fn run(args: &BlobArgs) -> anyhow::Result<()> {
    let dir = match &args.dir {
        Some(dir) => dir.clone(),
        None => idlegrid_home()?.join("provider").join("content"),
    };
    let store = Arc::new(
        ContentStore::open(&dir, args.store_bytes)
            .with_context(|| format!("failed to open the store {}", dir.display()))?,
    );
    match &args.command {
        BlobCommand::Put { file } => {
            // Streamed in, hashed as it is copied: never held in memory.
            let (cid, bytes, new) = store.put_file(file)?;
            if args.json {
                println!(
                    "{}",
                    json!({ "cid": cid.to_string(), "bytes": bytes, "new": new })
                );
            } else {
                println!("{cid}");
            }
        }
        BlobCommand::Get {
            cid,
            from,
            out,
            bytes_max,
            overlay,
        } => {
            // Streamed through a file (checked as it arrives, then taken
            // into the store): never held in memory.
            let mut holders = Vec::new();
            if !store.contains(cid) {
                let fetched = dir.join(format!("get-{}.partial", std::process::id()));
                let got = fetch(overlay, from, *cid, *bytes_max, &fetched).and_then(|asked| {
                    holders = asked;
                    Ok(store.put_file(&fetched)?)
                });
                let _ = std::fs::remove_file(&fetched);
                got?;
            }
            let stored = store
                .path(cid)
                .with_context(|| format!("{cid} was let go from the store as it was taken"))?;
            let bytes = std::fs::metadata(&stored)
                .with_context(|| format!("failed to read {}", stored.display()))?
                .len();
            match out {
                Some(path) => {
                    std::fs::copy(&stored, path)
                        .with_context(|| format!("failed to write {}", path.display()))?;
                }
                None if !args.json => {
                    let mut file = std::fs::File::open(&stored)
                        .with_context(|| format!("failed to read {}", stored.display()))?;
                    std::io::copy(&mut file, &mut std::io::stdout().lock())
                        .context("failed to write to stdout")?;
                }
                None => {}
            }
            if args.json {
                println!(
                    "{}",
                    json!({
                        "cid": cid.to_string(),
                        "bytes": bytes,
                        "stored": dir.display().to_string(),
                        "holders": holders.iter().map(ToString::to_string).collect::<Vec<_>>(),
                    })
                );
            }
        }
        BlobCommand::Ls => {
            let entries = store.entries();
            if args.json {
                let listed: Vec<_> = entries
                    .iter()
                    .map(|(cid, bytes)| json!({ "cid": cid.to_string(), "bytes": bytes }))
                    .collect();
                println!(
                    "{}",
                    json!({ "dir": dir.display().to_string(), "bytes": store.bytes(), "blobs": listed })
                );
            } else {
                for (cid, bytes) in &entries {
                    println!("{cid}  {bytes}");
                }
                println!(
                    "{} blobs, {} bytes in {}",
                    entries.len(),
                    store.bytes(),
                    dir.display()
                );
            }
        }
        BlobCommand::Gc { keep_bytes } => {
            let before = (store.len(), store.bytes());
            store.shrink_to(*keep_bytes);
            let after = (store.len(), store.bytes());
            if args.json {
                println!(
                    "{}",
                    json!({ "deleted": before.0 - after.0, "freed_bytes": before.1 - after.1, "bytes": after.1 })
                );
            } else {
                println!(
                    "deleted {} blobs, {} bytes; {} bytes held",
                    before.0 - after.0,
                    before.1 - after.1,
                    after.1
                );
            }
        }
    }
    Ok(())
}

/// How long `get` without --from keeps looking for peers that announce
/// the content (the network is joined first, then asked).
const LOOKUP_PATIENCE: Duration = Duration::from_secs(20);

/// Fetches `cid` from the first of `from` that has it, or from the peers
/// that announce holding it, over the overlay, into the file at `path`:
/// the peers it could ask.
fn fetch(
    overlay_args: &OverlayArgs,
    from: &[Multiaddr],
    cid: ContentId,
    bytes_max: u64,
    path: &std::path::Path,
) -> anyhow::Result<Vec<AccountId>> {
    let mut holders = Vec::with_capacity(from.len());
    for address in from {
        let text = address.to_string();
        let Some(peer) = text
            .rsplit_once("/p2p/")
            .and_then(|(_, peer)| peer.parse::<PeerId>().ok())
        else {
            bail!("{address} does not end in /p2p/<peer id>");
        };
        holders
            .push(account_of(&peer).with_context(|| format!("{address} names no ed25519 peer"))?);
    }
    let client = ApiClient::new(&overlay_args.node());
    let mut config = overlay_args.overlay(&client)?;
    config.bootstrap.extend(from.iter().cloned());
    if holders.is_empty() && config.bootstrap.is_empty() && !config.mdns {
        bail!("no --from, and no --bootstrap peer (nor mDNS) to find holders through");
    }
    let key = idlegrid_node::generate()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("failed to start the async runtime")?;
    runtime.block_on(async move {
        let (overlay, mut events, _driver) = Overlay::start(&key, config)?;
        for address in from {
            overlay.dial(address.clone()).await?;
        }
        if holders.is_empty() {
            holders = announced(&overlay, &mut events, cid).await?;
        }
        let file = std::fs::File::create(path)
            .with_context(|| format!("failed to create {}", path.display()))?;
        let sink = std::io::BufWriter::with_capacity(1 << 20, file);
        let fetched = match holders.split_last() {
            // Named: each in turn, the last as the source (asked again if
            // an exchange with it breaks).
            Some((last, first)) if !from.is_empty() => {
                fetch_content_into(&overlay, first, last, cid, bytes_max, sink, 0).await
            }
            _ => fetch_shared_content_into(&overlay, &holders, None, cid, bytes_max, sink, 0).await,
        };
        let mut sink = fetched.map_err(anyhow::Error::msg)?;
        sink.flush()
            .with_context(|| format!("failed to write {}", path.display()))?;
        Ok(holders)
    })
}

/// The peers that announce holding `cid`, once this node has joined the
/// network: asked again, less and less often, while none is found, for
/// at most [`LOOKUP_PATIENCE`].
async fn announced(
    overlay: &Overlay,
    events: &mut tokio::sync::mpsc::Receiver<Event>,
    cid: ContentId,
) -> anyhow::Result<Vec<AccountId>> {
    let started = Instant::now();
    let mut pause = Duration::from_millis(100);
    let mut joined = false;
    while started.elapsed() < LOOKUP_PATIENCE {
        if !joined {
            // A lookup asks the peers this node knows: none before the
            // first connection.
            match tokio::time::timeout(pause, events.recv()).await {
                Ok(Some(Event::Connected(_))) => joined = true,
                Ok(Some(_)) | Err(_) => {}
                Ok(None) => bail!("the overlay stopped"),
            }
            continue;
        }
        let found = tokio::time::timeout(HOLDER_LOOKUP_TIMEOUT, overlay.holders(cid))
            .await
            .unwrap_or_default();
        if !found.is_empty() {
            return Ok(found);
        }
        // The peers joined may not have told this node yet what they
        // speak (their kademlia support): ask again shortly.
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_secs(2));
    }
    bail!(
        "no peer announced holding {cid} within {}s (name one with --from)",
        LOOKUP_PATIENCE.as_secs()
    )
}
