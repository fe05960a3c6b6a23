//! `idlegrid provide` and `idlegrid submit`: the two sides of the compute
//! network, on the libp2p overlay.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, ValueEnum};
use idlegrid_api::client::ApiClient;
use idlegrid_gateway::{GatewayConfig, run_gateway};
use idlegrid_market::MarketConfig;
use idlegrid_net::{Multiaddr, OverlayConfig};
use idlegrid_node::read_key;
use idlegrid_provider::{Cheat, GpuChoice, ProviderConfig, ProviderStats, run_provider};
use idlegrid_requestor::JobFile;
use idlegrid_requestor::core::REFEREE_FUEL_DEFAULT;
use idlegrid_requestor::{SubmitConfig, SubmitProgress, submit};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::json;

use crate::resolve::{self, idlegrid_home};

/// The job ran, but not every task was accepted, or it stopped at its budget.
const EXIT_INCOMPLETE: u8 = 1;
/// (clap's) the command line was wrong.
const _EXIT_USAGE: u8 = 2;
/// Could not run: a bad job file or key, an unreachable node, the ledger refused.
const EXIT_FAILED: u8 = 3;

/// Where this node is on the overlay.
#[derive(Debug, Args)]
pub(crate) struct OverlayArgs {
    /// A validator's HTTP API [default: $IDLEGRID_NODE, else http://127.0.0.1:7700].
    #[arg(long, value_name = "URL")]
    node: Option<String>,
    /// Address to listen on for peers (repeatable) [default:
    /// /ip4/0.0.0.0/tcp/0 and /ip4/0.0.0.0/udp/0/quic-v1].
    #[arg(long, value_name = "MULTIADDR")]
    listen: Vec<Multiaddr>,
    /// A peer to join the network through, ending in /p2p/<peer id> (repeatable).
    #[arg(long, value_name = "MULTIADDR")]
    bootstrap: Vec<Multiaddr>,
    /// Do not look for peers on the local network (multicast DNS).
    #[arg(long)]
    no_mdns: bool,
    /// A gateway to be reachable through, ending in /p2p/<peer id>
    /// (repeatable): for a machine behind NAT. Without --listen, the node
    /// then listens only through its gateways.
    #[arg(long, value_name = "MULTIADDR")]
    relay: Vec<Multiaddr>,
    /// Connections one IP address may hold with this node; raise it when
    /// many peers share one address (a NAT) [default: 64].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    connections_per_ip: Option<u32>,
    /// Handshakes one IP address may have in progress with this node at
    /// once [default: 8].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    handshakes_per_ip: Option<u32>,
}

impl OverlayArgs {
    pub(crate) fn node(&self) -> String {
        resolve::node_url(self.node.as_deref())
    }

    /// The overlay settings; the network is named by the chain the node runs.
    pub(crate) fn overlay(&self, client: &ApiClient) -> anyhow::Result<OverlayConfig> {
        let status = client
            .status()
            .context("failed to ask the node which chain it runs")?;
        let chain = status["chain_id"]
            .as_str()
            .context("the node's /v1/status has no chain_id")?;
        let mut config = OverlayConfig::new(chain);
        if !self.listen.is_empty() {
            config.listen = self.listen.clone();
        } else if !self.relay.is_empty() {
            config.listen = Vec::new();
        }
        config.relays = self.relay.clone();
        config.bootstrap = self.bootstrap.clone();
        config.mdns = !self.no_mdns;
        if let Some(connections) = self.connections_per_ip {
            config.connections_per_ip_max = connections;
        }
        if let Some(handshakes) = self.handshakes_per_ip {
            config.pending_incoming_per_ip_max = handshakes;
        }
        Ok(config)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum CheatArg {
    WrongOutput,
}

/// Rent out this machine: run other people's tasks in the sandbox and get paid.
///
/// Detects the hardware, runs the reference benchmark once (the score is
/// cached), bonds stake if asked, publishes signed offers, runs task batches
/// on a bounded pool of workers and returns signed receipts. Vouchers are
/// redeemed on the ledger periodically, when a job is done and at shutdown
/// (Ctrl-C).
#[derive(Debug, Args)]
#[command(after_help = "Examples:
  idlegrid provide --stake 1000
  idlegrid provide --data-dir /tmp/p0 --listen /ip4/127.0.0.1/tcp/7800
  idlegrid provide --cores 2 --price-floor 5 --idle-only --json
  idlegrid provide --relay \"$GATEWAY\"    # an address `idlegrid gateway` printed")]
pub struct ProvideArgs {
    /// The provider's key file (its ledger account and its peer id)
    /// [default: $IDLEGRID_HOME/wallet.key].
    #[arg(long, value_name = "FILE")]
    key: Option<PathBuf>,
    #[command(flatten)]
    overlay: OverlayArgs,
    /// Modules, compiled code and the benchmark score [default: $IDLEGRID_HOME/provider].
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// Tasks run at once [default: every core].
    #[arg(long, value_name = "N")]
    cores: Option<u32>,
    /// Memory offered, MiB [default: all of it].
    #[arg(long, value_name = "N")]
    memory_mib: Option<u64>,
    /// The lowest price taken, per million fuel.
    #[arg(long, value_name = "N", default_value_t = 1)]
    price_floor: u64,
    /// Take no new work while the owner's own CPU load is above --idle-threshold.
    #[arg(long)]
    idle_only: bool,
    /// The owner's CPU load, percent of all cores, above which --idle-only pauses.
    #[arg(long, value_name = "PERCENT", default_value_t = 50.0)]
    idle_threshold: f32,
    /// Bond provider stake up to this amount before offering (no stake, no work).
    #[arg(long, value_name = "N")]
    stake: Option<u64>,
    /// Offer this benchmark score (fuel per second) instead of measuring it.
    #[arg(long, value_name = "N")]
    benchmark_fuel_per_second: Option<u64>,
    /// Offer the GPU whose adapter name contains NAME for GPU tasks
    /// [default: the first Vulkan adapter found, if any].
    #[arg(long, value_name = "NAME", conflicts_with = "no_gpu")]
    gpu: Option<String>,
    /// Offer no GPU.
    #[arg(long)]
    no_gpu: bool,
    /// The lowest price taken for GPU tasks, per million fuel [default: --price-floor].
    #[arg(long, value_name = "N")]
    gpu_price_floor: Option<u64>,
    /// Offer this GPU benchmark score (fuel per second) instead of measuring it.
    #[arg(long, value_name = "N")]
    gpu_benchmark_fuel_per_second: Option<u64>,
    /// Bytes of fetched modules kept on disk (and served to peers) at most;
    /// the least recently used make room.
    #[arg(long, value_name = "BYTES", default_value_t = idlegrid_provider::CONTENT_BYTES_DEFAULT)]
    content_cache_bytes: u64,
    /// Seconds between offers.
    #[arg(long, value_name = "SECS", default_value_t = 10)]
    offer_interval_secs: u64,
    /// Seconds between redemptions of held vouchers.
    #[arg(long, value_name = "SECS", default_value_t = 60)]
    redeem_interval_secs: u64,
    /// Print the start line and the final summary as JSON.
    #[arg(long)]
    json: bool,
    /// For tests of verification only: lie about results.
    #[arg(long, hide = true, value_name = "HOW")]
    cheat: Option<CheatArg>,
    /// For tests of verification only: with --cheat, run this many tasks
    /// honestly first.
    #[arg(long, hide = true, value_name = "TASKS", default_value_t = 0)]
    cheat_after: u64,
}

pub fn provide(args: ProvideArgs) -> ExitCode {
    let json = args.json;
    match run_provide(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => fail(&error, json),
    }
}

fn fail(error: &anyhow::Error, json: bool) -> ExitCode {
    resolve::report_error(error, json);
    ExitCode::from(EXIT_FAILED)
}

fn run_provide(args: ProvideArgs) -> anyhow::Result<()> {
    let home = idlegrid_home()?;
    let key_path = resolve::key_path(args.key.as_deref())?;
    let key = read_key(&key_path)
        .with_context(|| format!("failed to load the key {}", key_path.display()))?;
    let node = args.overlay.node();
    let client = ApiClient::new(&node);
    let overlay = args.overlay.overlay(&client)?;
    let mut config = ProviderConfig::new(
        key,
        node,
        args.data_dir
            .clone()
            .unwrap_or_else(|| home.join("provider")),
        overlay,
    );
    config.cores = args.cores;
    config.memory_bytes = args.memory_mib.map(|mib| mib << 20);
    config.price_floor_per_million_fuel = args.price_floor;
    config.idle_only_percent = args.idle_only.then_some(args.idle_threshold);
    config.stake = args.stake;
    config.benchmark_fuel_per_second = args.benchmark_fuel_per_second;
    config.gpu = match (&args.gpu, args.no_gpu) {
        (_, true) => GpuChoice::Off,
        (Some(name), false) => GpuChoice::Named(name.clone()),
        (None, false) => GpuChoice::Auto,
    };
    config.gpu_price_floor_per_million_fuel = args.gpu_price_floor;
    config.gpu_benchmark_fuel_per_second = args.gpu_benchmark_fuel_per_second;
    config.content_bytes_max = args.content_cache_bytes;
    config.offer_interval = Duration::from_secs(args.offer_interval_secs.max(1));
    config.redeem_interval = Duration::from_secs(args.redeem_interval_secs.max(1));
    config.cheat = args.cheat.map(|CheatArg::WrongOutput| Cheat::WrongOutput {
        honest_first: args.cheat_after,
    });

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("failed to start the async runtime")?;
    runtime.block_on(async move {
        let stats = Arc::new(ProviderStats::default());
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
        let provider = tokio::spawn(run_provider(
            config,
            ready_tx,
            Arc::clone(&stats),
            shutdown_signal(),
        ));
        let Ok(ready) = ready_rx.await else {
            return provider.await.context("the provider failed")?.map(|_| ());
        };
        let addresses: Vec<String> = ready.addresses.iter().map(ToString::to_string).collect();
        if args.json {
            println!(
                "{}",
                json!({
                    "account": ready.account.to_string(),
                    "addresses": addresses,
                    "cores": ready.cores,
                    "hardware": ready.hardware.describe(),
                    "benchmark_fuel_per_second": ready.benchmark_fuel_per_second,
                    "provider_stake": ready.provider_stake,
                    "energy": ready.energy,
                    "gpu": ready.gpu.as_ref().map(|gpu| json!({
                        "name": gpu.name.as_str(),
                        "driver": gpu.driver.as_str(),
                        "fuel_per_second": gpu.fuel_per_second,
                        "price_floor_per_million_fuel": gpu.price_floor_per_million_fuel,
                    })),
                })
            );
        } else {
            println!("provider {}", ready.account);
            println!(
                "  machine    {} (running {} at once)",
                ready.hardware.describe(),
                ready.cores
            );
            println!(
                "  benchmark  {} fuel/s{}",
                ready.benchmark_fuel_per_second,
                if ready.benchmark_cached {
                    " (cached)"
                } else {
                    ""
                }
            );
            match &ready.gpu {
                Some(gpu) => println!(
                    "  gpu        {} ({}), {} fuel/s{}, from {} per million fuel",
                    gpu.name.as_str(),
                    gpu.driver.as_str(),
                    gpu.fuel_per_second,
                    if ready.gpu_benchmark_cached {
                        " (cached)"
                    } else {
                        ""
                    },
                    gpu.price_floor_per_million_fuel
                ),
                None => println!("  gpu        none offered"),
            }
            println!("  energy     {} (advisory, on receipts)", ready.energy);
            println!("  stake      {}", ready.provider_stake);
            for address in &addresses {
                println!("  listening  {address}");
            }
            if ready.provider_stake == 0 {
                println!("  no provider stake: requestors will not place work here (see --stake)");
            }
        }
        let live =
            (!args.json && std::io::stderr().is_terminal()).then(|| live_line(Arc::clone(&stats)));
        let summary = provider.await.context("the provider failed")??;
        if let Some(live) = live {
            live.abort();
        }
        if args.json {
            println!(
                "{}",
                json!({
                    "tasks_done": summary.tasks_done,
                    "fuel_used": summary.fuel_used,
                    "earned": summary.earned,
                    "unredeemed": summary.unredeemed,
                    "fetched_blobs": summary.fetched_blobs,
                    "fetched_bytes": summary.fetched_bytes,
                    "outputs_kept": stats.outputs_kept.load(Ordering::Relaxed),
                    "outputs_kept_bytes": stats.outputs_kept_bytes.load(Ordering::Relaxed),
                })
            );
        } else {
            println!(
                "stopped: {} tasks, {} fuel, earned {} ({} left unredeemed); fetched {} blobs, {} bytes; \
                 kept {} outputs, {} bytes",
                summary.tasks_done,
                summary.fuel_used,
                summary.earned,
                summary.unredeemed,
                summary.fetched_blobs,
                summary.fetched_bytes,
                stats.outputs_kept.load(Ordering::Relaxed),
                stats.outputs_kept_bytes.load(Ordering::Relaxed)
            );
        }
        Ok(())
    })
}

/// The provider's status line: tasks done, fuel, earned.
fn live_line(stats: Arc<ProviderStats>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let bar = ProgressBar::new_spinner();
        let mut timer = tokio::time::interval(Duration::from_millis(500));
        loop {
            timer.tick().await;
            let state = if stats.paused.load(Ordering::Relaxed) {
                "paused (owner busy)"
            } else {
                "working"
            };
            bar.set_message(format!(
                "{} tasks · {} fuel · earned {} (+{} owed) · {} running, {} queued · {state}",
                stats.tasks_done.load(Ordering::Relaxed),
                stats.fuel_used.load(Ordering::Relaxed),
                stats.earned.load(Ordering::Relaxed),
                stats.owed.load(Ordering::Relaxed),
                stats.running.load(Ordering::Relaxed),
                stats.queued.load(Ordering::Relaxed),
            ));
            bar.tick();
        }
    })
}

/// Ctrl-C or SIGTERM.
pub(crate) async fn shutdown_signal() {
    #[cfg(unix)]
    {
        let mut terminate =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(signal) => signal,
                Err(_) => {
                    let _ = tokio::signal::ctrl_c().await;
                    return;
                }
            };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = terminate.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// Relay for machines behind NAT and serve the ledger's HTTP API to clients.
///
/// Providers that cannot be reached directly start with `--relay` and this
/// gateway's address; peers reach them through it (circuit relay v2), and
/// DCUtR turns those connections into direct ones where the NAT allows.
/// `/v1/...` on the gateway's API answers as the validator (`--node`) does;
/// `/v1/gateway` describes the gateway.
#[derive(Debug, Args)]
#[command(after_help = "Examples:
  idlegrid gateway --listen /ip4/0.0.0.0/tcp/7900 --api-listen 0.0.0.0:8080
  idlegrid gateway --node http://127.0.0.1:7700 --no-mdns --json
Providers behind NAT then start with `idlegrid provide --relay ADDRESS`, an
address the gateway printed.")]
pub struct GatewayArgs {
    /// The gateway's key file (its peer id) [default: $IDLEGRID_HOME/gateway.key,
    /// made on first use].
    #[arg(long, value_name = "FILE")]
    key: Option<PathBuf>,
    #[command(flatten)]
    overlay: OverlayArgs,
    /// Where the HTTP API listens.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8080")]
    api_listen: std::net::SocketAddr,
    /// How long one relayed circuit lasts at most, seconds; the peers
    /// behind the gateway then open a fresh one [default: 3600].
    #[arg(long, value_name = "SECONDS", value_parser = clap::value_parser!(u32).range(1..))]
    relay_circuit_secs: Option<u32>,
    /// Bytes one relayed circuit carries at most, both ways together
    /// [default: 1073741824, 1 GiB].
    #[arg(long, value_name = "BYTES", value_parser = clap::value_parser!(u64).range(1..))]
    relay_circuit_bytes: Option<u64>,
    /// Run jobs for HTTP clients (`PUT /v1/blobs`, `POST /v1/jobs`, …),
    /// keeping their blobs and outputs in this folder (emptied at start).
    #[arg(long, value_name = "DIR")]
    jobs_dir: Option<PathBuf>,
    /// Take jobs only from the API keys in this file, each under its limits
    /// (docs/http-jobs.md); without it, anyone may submit.
    #[arg(long, value_name = "FILE", requires = "jobs_dir")]
    api_keys: Option<PathBuf>,
    /// Jobs waiting for a signature, opening or running at once, for all
    /// clients together.
    #[arg(long, value_name = "N", default_value_t = idlegrid_gateway::jobs::LIVE_JOBS_DEFAULT, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=1024))]
    live_jobs: usize,
    /// Refuse jobs that name their files by http(s) URL (the gateway
    /// fetches those from wherever it can reach).
    #[arg(long, requires = "jobs_dir")]
    no_url_inputs: bool,
    /// Bytes of uploaded blobs kept at most.
    #[arg(long, value_name = "BYTES", default_value_t = idlegrid_gateway::blobs::BLOB_STORE_BYTES_DEFAULT)]
    blob_store_bytes: u64,
    /// Print the start line as JSON.
    #[arg(long)]
    json: bool,
}

pub fn gateway(args: GatewayArgs) -> ExitCode {
    let json = args.json;
    match run_gateway_command(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => fail(&error, json),
    }
}

fn run_gateway_command(args: GatewayArgs) -> anyhow::Result<()> {
    let key_path = match &args.key {
        Some(path) => path.clone(),
        None => idlegrid_home()?.join("gateway.key"),
    };
    let key = if key_path.exists() {
        read_key(&key_path)
            .with_context(|| format!("failed to load the key {}", key_path.display()))?
    } else {
        let key = idlegrid_node::generate()?;
        idlegrid_node::write_key(&key_path, &key)?;
        key
    };
    let node = args.overlay.node();
    let client = ApiClient::new(&node);
    let mut overlay = args.overlay.overlay(&client)?;
    if let Some(seconds) = args.relay_circuit_secs {
        overlay.relay_circuit_duration_max = Duration::from_secs(seconds.into());
    }
    if let Some(bytes) = args.relay_circuit_bytes {
        overlay.relay_circuit_bytes_max = bytes;
    }
    let jobs = match &args.jobs_dir {
        Some(dir) => Some(idlegrid_gateway::JobServiceConfig {
            access: match &args.api_keys {
                Some(file) => idlegrid_gateway::Access::load(file)?,
                None => idlegrid_gateway::Access::Open,
            },
            live_jobs_max: args.live_jobs,
            blob_store_bytes: args.blob_store_bytes,
            url_inputs: !args.no_url_inputs,
            ..idlegrid_gateway::JobServiceConfig::new(dir.clone())
        }),
        None => None,
    };
    let config = GatewayConfig {
        key,
        node,
        overlay,
        api_listen: args.api_listen,
        local: idlegrid_gateway::Local::default(),
        jobs,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("failed to start the async runtime")?;
    runtime.block_on(async move {
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
        let gateway = tokio::spawn(run_gateway(config, ready_tx, shutdown_signal()));
        let Ok(ready) = ready_rx.await else {
            return gateway.await.context("the gateway failed")?;
        };
        let addresses: Vec<String> = ready.addresses.iter().map(ToString::to_string).collect();
        if args.json {
            println!(
                "{}",
                json!({ "account": ready.account.to_string(), "addresses": addresses, "api": format!("http://{}", ready.api) })
            );
        } else {
            println!("gateway {}", ready.account);
            println!("  api        http://{}", ready.api);
            for address in &addresses {
                println!("  listening  {address}  (providers: --relay {address})");
            }
        }
        gateway.await.context("the gateway failed")?
    })
}

/// Run a job on the network: open its escrow, place and verify its tasks,
/// pay for verified results, and write them to a directory.
///
/// The job file format is in docs/job-spec.md. Results land in --out: one
/// file per task under tasks/, and results.json with each task's output
/// content id, providers and fuel, the cost, and any disputes filed.
///
/// Exit status: 0 every task accepted; 1 some tasks failed or the budget ran
/// out; 2 usage error; 3 could not run (bad job file or key, node
/// unreachable, the ledger refused the job).
#[derive(Debug, Args)]
#[command(after_help = "Examples:
  idlegrid submit examples/pi/job.toml
  idlegrid submit examples/pi/job.toml --key /tmp/me.key --out pi --close --json
  JOB=$(idlegrid submit examples/pi/job.toml --json | jq -r .job)")]
pub struct SubmitArgs {
    /// The job file (TOML).
    job: PathBuf,
    /// The requestor's key file (pays the escrow) [default: $IDLEGRID_HOME/wallet.key].
    #[arg(long, value_name = "FILE")]
    key: Option<PathBuf>,
    #[command(flatten)]
    overlay: OverlayArgs,
    /// Where results go.
    #[arg(long, value_name = "DIR", default_value = "results")]
    out: PathBuf,
    /// After the results, wait for the job's deadline and close it (the
    /// unspent escrow comes back).
    #[arg(long)]
    close: bool,
    /// When providers' results for a task disagree, re-execute the task on
    /// this machine if its fuel limit is at most this (0: never); the
    /// re-execution decides who lied. Over it, a dispute of two differing
    /// receipts lets the ledger's re-execution decide.
    #[arg(long, value_name = "FUEL", default_value_t = REFEREE_FUEL_DEFAULT)]
    referee_fuel: u64,
    /// Print the report as one JSON object.
    #[arg(long)]
    json: bool,
}

/// Shows a running job: on the terminal's progress bar; with `--json`, one
/// `{"progress": …}` object a second on stderr; otherwise each new reason
/// it waits for, as a line on stderr. Runs until aborted.
/// Millijoules as joules, for people.
fn joules(millijoules: u64) -> String {
    format!("{}.{:03} J", millijoules / 1000, millijoules % 1000)
}

async fn watch_submit(progress: Arc<SubmitProgress>, bar: Option<ProgressBar>, json: bool) {
    let mut timer = tokio::time::interval(Duration::from_millis(200));
    let mut said: Option<String> = None;
    let mut ticks = 0u64;
    loop {
        timer.tick().await;
        ticks += 1;
        let load = |counter: &std::sync::atomic::AtomicU64| counter.load(Ordering::Relaxed);
        let waiting = progress.detail().waiting;
        if let Some(bar) = &bar {
            bar.set_position(load(&progress.accepted));
            let mut message = format!(
                "{} in flight · {} providers · {} fuel · spent {} of {}",
                load(&progress.in_flight),
                load(&progress.providers),
                load(&progress.fuel_executed),
                load(&progress.paid),
                load(&progress.budget),
            );
            if let Some(waiting) = &waiting {
                message.push_str(" · waiting: ");
                message.push_str(waiting);
            }
            bar.set_message(message);
        } else if json {
            if ticks.is_multiple_of(5) && progress.running.load(Ordering::Relaxed) {
                let line = json!({ "progress": {
                    "tasks_total": load(&progress.tasks_total),
                    "accepted": load(&progress.accepted),
                    "failed": load(&progress.failed),
                    "in_flight": load(&progress.in_flight),
                    "providers": load(&progress.providers),
                    "fuel_executed": load(&progress.fuel_executed),
                    "paid": load(&progress.paid),
                    "budget": load(&progress.budget),
                    "waiting": waiting,
                }});
                eprintln!("{line}");
            }
        } else if let Some(reason) = waiting.as_ref().filter(|_| waiting != said) {
            eprintln!("waiting: {reason}");
        }
        if waiting.is_some() {
            said = waiting;
        }
    }
}

pub fn submit_job(args: SubmitArgs) -> ExitCode {
    match run_submit(&args) {
        Ok(code) => ExitCode::from(code),
        Err(error) => fail(&error, args.json),
    }
}

fn run_submit(args: &SubmitArgs) -> anyhow::Result<u8> {
    let job = JobFile::load(&args.job)?;
    let key_path = resolve::key_path(args.key.as_deref())?;
    let key = read_key(&key_path)
        .with_context(|| format!("failed to load the key {}", key_path.display()))?;
    let node = args.overlay.node();
    let client = ApiClient::new(&node);
    let mut overlay = args.overlay.overlay(&client)?;
    overlay.dial_offer_authors = true;
    let tasks = job.task_count();
    let config = SubmitConfig {
        key,
        node,
        overlay,
        job,
        out_dir: args.out.clone(),
        close: args.close,
        market: MarketConfig::default(),
        tick: Duration::from_millis(100),
        referee_fuel: args.referee_fuel,
        opened: None,
        reporter: None,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("failed to start the async runtime")?;
    let progress = Arc::new(SubmitProgress::default());
    let bar = (!args.json && std::io::stderr().is_terminal()).then(|| {
        let bar = ProgressBar::new(tasks);
        bar.set_style(
            ProgressStyle::with_template("{bar:30} {pos}/{len} verified · {msg} · ETA {eta}")
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        bar
    });
    let report = runtime.block_on(async {
        let watcher = tokio::spawn(watch_submit(Arc::clone(&progress), bar.clone(), args.json));
        let report = submit(config, Arc::clone(&progress)).await;
        watcher.abort();
        report
    });
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    let report = report?;
    if args.json {
        let mut value = serde_json::to_value(&report).context("failed to encode the report")?;
        if let Some(object) = value.as_object_mut() {
            // The per-task list is in results.json.
            object.insert("results".to_owned(), json!(args.out.join("results.json")));
            // This process's peak memory: it does not grow with the job.
            object.insert("peak_rss_bytes".to_owned(), json!(peak_rss_bytes()));
        }
        println!("{value}");
    } else {
        println!("{}", report.job);
        println!(
            "  tasks      {} accepted, {} failed of {}",
            report.accepted, report.failed, report.tasks_total
        );
        println!(
            "  fuel       {} useful, {} executed (with replicas)",
            report.fuel_useful, report.fuel_executed
        );
        println!(
            "  energy     {} accepted, {} executed (advisory: as providers measured or modeled it)",
            joules(report.energy_millijoules),
            joules(report.energy_executed_millijoules)
        );
        println!(
            "  cost       {} of an escrow of {} ({} providers)",
            report.paid,
            report.escrow,
            report.providers.len()
        );
        println!(
            "  round trip {:.1} ms p50, {:.1} ms p99 (assigned → verified) in {:.1} s",
            report.task_round_trip_us_p50 as f64 / 1000.0,
            report.task_round_trip_us_p99 as f64 / 1000.0,
            report.elapsed_ms as f64 / 1000.0
        );
        if report.tasks_refereed > 0 || report.tasks_rechecked > 0 {
            println!(
                "  verified   {} by re-execution ({} here, {} by the ledger), {} checked again \
                 after a liar was caught",
                report.tasks_refereed,
                report.tasks_re_executed_here,
                report
                    .tasks_refereed
                    .saturating_sub(report.tasks_re_executed_here),
                report.tasks_rechecked
            );
        }
        if report.outputs_fetched > 0 || report.outputs_made_here > 0 {
            println!(
                "  outputs    {} kept by providers fetched ({:.1} MiB), {} made here when none could \
                 serve it",
                report.outputs_fetched,
                report.outputs_fetched_bytes as f64 / f64::from(1 << 20),
                report.outputs_made_here
            );
        }
        if !report.disputes.is_empty() {
            println!("  disputes   {}", report.disputes.len());
        }
        match (report.redeemed, report.refund) {
            (Some(redeemed), Some(refund)) => {
                println!("  closed     {redeemed} redeemed by providers, {refund} refunded")
            }
            _ => println!(
                "  deadline   height {}; then `idlegrid jobs cancel {} --wait` closes it for the refund",
                report.deadline_height, report.job
            ),
        }
        if let Some(bytes) = peak_rss_bytes() {
            println!(
                "  memory     {:.1} MiB at most",
                bytes as f64 / f64::from(1 << 20)
            );
        }
        println!("  results    {}", args.out.join("results.json").display());
    }
    Ok(if report.accepted == report.tasks_total {
        0
    } else {
        EXIT_INCOMPLETE
    })
}

/// The most memory this process has held resident, bytes (Linux's VmHWM);
/// `None` where it cannot be read.
fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let kib = status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))?
        .trim()
        .strip_suffix("kB")?
        .trim()
        .parse::<u64>()
        .ok()?;
    Some(kib * 1024)
}
