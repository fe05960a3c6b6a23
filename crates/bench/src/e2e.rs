//! `idlegrid-bench e2e`: a job's whole path (escrow on the ledger, offers
//! and task batches on the overlay, the provider's sandbox, signed
//! receipts, verification and vouchers) on one validator and in-process
//! providers on loopback, against the same tasks run directly in the
//! sandbox.
//!
//! Goals: a task's round trip (first assignment to acceptance) within
//! 0.5 ms at the median, and at least 10,000 tasks a second with one
//! replica per task. They are not asserted: the figures are what was
//! measured.
//!
//! Every task is `examples/pi` drawing one sample, so there is next to
//! nothing to compute: what the figures show is what the network,
//! signatures, verification and bookkeeping add to a sandbox run. Each
//! figure is a fresh job (a fresh `submit`, with its own overlay node);
//! the validator and the providers are shared by all of them. The round
//! trip is measured on one provider with one replica per task, one task
//! at a time (so that no task waits behind another). Throughput is
//! measured on three providers of one core each, as tasks over the time
//! from the first task placed to the last decided; how long the job took
//! to place its first task (finding the providers) is a figure of its
//! own. Every job must end with every task accepted.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, anyhow, bail, ensure};
use idlegrid_market::MarketConfig;
use idlegrid_net::{Event, Multiaddr, Overlay, OverlayConfig, Request, Response};
use idlegrid_node::testnet::{self, TestnetPlan};
use idlegrid_node::{Validator, start_validator};
use idlegrid_provider::{ProviderConfig, ProviderStats, ProviderSummary, run_provider};
use idlegrid_requestor::JobFile;
use idlegrid_requestor::core::REFEREE_FUEL_DEFAULT;
use idlegrid_requestor::{SubmitConfig, SubmitProgress, SubmitReport, submit};
use idlegrid_sandbox::{Sandbox, SandboxConfig, TaskSpec, seed_from_u64, task_limits};
use idlegrid_types::{AccountId, Keypair};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::Measurement;

#[derive(Debug, clap::Args)]
pub struct Options {
    #[command(flatten)]
    pub common: crate::Common,
    /// Where the validator, the providers and the requestor keep their
    /// files (a temporary directory inside it, removed at the end). The
    /// requestor writes a file per task, so a file system slow to create
    /// files shows in the throughput; the default is the system's
    /// temporary directory.
    #[arg(long, value_name = "DIR")]
    dir: Option<PathBuf>,
}

/// Tasks in each job.
#[derive(Debug, Clone, Copy)]
struct Sizes {
    /// The round-trip job (one provider, one replica).
    round_trip_tasks: u64,
    /// Each throughput job (three providers).
    throughput_tasks: u64,
}

const FULL: Sizes = Sizes {
    round_trip_tasks: 2_000,
    throughput_tasks: 30_000,
};

const QUICK: Sizes = Sizes {
    round_trip_tasks: 200,
    throughput_tasks: 600,
};

/// The chain, and so the overlay's network name.
const CHAIN_ID: &str = "idlegrid-bench-e2e";
/// The module every task runs.
const PI_WASM: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/pi/pi.wasm");
/// What the requestor and each provider hold at genesis.
const ACCOUNT_BALANCE: u64 = 1 << 40;
/// Providers for the throughput figures (the first also runs the round trip).
const PROVIDERS: usize = 3;
/// Provider stake each bonds before offering.
const PROVIDER_STAKE: u64 = 5_000;
/// Worker threads per provider.
const PROVIDER_CORES: u32 = 1;
/// The benchmark score each provider offers, fuel per second: given, so
/// that no provider spends its start measuring one.
const PROVIDER_BENCHMARK_FUEL_PER_SECOND: u64 = 50_000_000;
/// How often a provider publishes its offer. A provider that is not yet
/// connected to a new requestor reaches it only through another's relay
/// of its next offer, so this bounds how late a job finds it.
const OFFER_INTERVAL: Duration = Duration::from_secs(1);
/// Longer than any run: vouchers are redeemed when a job is done.
const REDEEM_INTERVAL: Duration = Duration::from_secs(3_600);
/// Fuel a task may use; pi with one sample uses a small part of it.
const TASK_FUEL_MAX: u64 = 1_000_000;
/// The price every job pays, per million fuel.
const PRICE_PER_MILLION_FUEL: u64 = 1;
/// Blocks providers have to redeem; jobs are not closed.
const DEADLINE_BLOCKS: u64 = 10_000;
/// How often the requestor checks leases and offers.
const REQUESTOR_TICK: Duration = Duration::from_millis(100);
/// How long the validator may take to finalize its first block.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a provider may take to bond its stake and listen.
const PROVIDER_START_TIMEOUT: Duration = Duration::from_secs(60);
/// How long one job may take, from its escrow to its last task.
const JOB_TIMEOUT: Duration = Duration::from_secs(600);
/// How long a provider may take to stop (it waits up to 60 s for its
/// last redemptions).
const PROVIDER_STOP_TIMEOUT: Duration = Duration::from_secs(90);

pub fn run(options: &Options) -> anyhow::Result<Vec<Measurement>> {
    let sizes = if options.common.quick { QUICK } else { FULL };
    let directory = match &options.dir {
        Some(dir) => tempfile::tempdir_in(dir)
            .with_context(|| format!("failed to make a directory in {}", dir.display()))?,
        None => tempfile::tempdir()?,
    };
    let requestor = Keypair::from_seed([1; 32]);
    let provider_keys: Vec<Keypair> = (2..)
        .take(PROVIDERS)
        .map(|seed| Keypair::from_seed([seed; 32]))
        .collect();

    // The baselines first, while nothing else runs in this process.
    let round_trip_direct = run_directly(&job_file(sizes.round_trip_tasks, 1)?)?;
    let throughput_direct = run_directly(&job_file(sizes.throughput_tasks, 1)?)?;

    let accounts = std::iter::once(&requestor)
        .chain(&provider_keys)
        .map(|key| (key.account_id(), ACCOUNT_BALANCE))
        .collect();
    let validator = start_one_validator(&directory.path().join("testnet"), accounts)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("failed to start the async runtime")?;
    let overlay_requests = runtime.block_on(overlay_round_trips(sizes.round_trip_tasks))?;
    let reports = runtime.block_on(async {
        let mut network = Network {
            api: format!("http://{}", validator.api),
            directory: directory.path().to_owned(),
            bootstrap: None,
            providers: Vec::new(),
        };
        let reports = measure(&mut network, &requestor, &provider_keys, sizes).await;
        let stopped = network.stop_providers().await;
        let reports = reports?;
        stopped?;
        anyhow::Ok(reports)
    });
    runtime.shutdown_timeout(Duration::from_secs(5));
    // Stopped before its files go with the directory.
    validator.stop()?;
    let [round_trip, replicas_1, replicas_2] = reports?;

    let mut rows = Vec::new();
    for (name, value_us, fraction) in [
        ("p50", round_trip.task_round_trip_us_p50, 0.50),
        ("p99", round_trip.task_round_trip_us_p99, 0.99),
    ] {
        let baseline = round_trip_direct.percentile(fraction);
        rows.push(baseline_over_value(Measurement::new(
            format!("e2e_round_trip_{name}"),
            value_us as f64 / 1e3,
            "ms",
            baseline.as_secs_f64() * 1e3,
            format!("the same task run directly in the sandbox ({name}); ratio = baseline / value"),
        )));
    }
    // The floor under a task's round trip: the overlay's own request and
    // answer (a task's trip is one request each way).
    let task_p50_ms = round_trip.task_round_trip_us_p50 as f64 / 1e3;
    rows.push(Measurement::new(
        "e2e_overlay_request_p50",
        overlay_requests.as_secs_f64() * 1e3,
        "ms",
        task_p50_ms,
        "an empty request answered between two overlay nodes, against the task round trip p50; ratio = value / baseline",
    ));
    let direct_rate = throughput_direct.per_second();
    for (replicas, report) in [(1, replicas_1), (2, replicas_2)] {
        // Sustained: from the first task placed to the last decided, so
        // that finding the providers (up to a second's wait for offers
        // they republish for a new requestor) is not counted as work.
        let running_ms = report.run_ms.saturating_sub(report.first_placed_ms);
        ensure!(
            running_ms > 0,
            "the replicas-{replicas} job reports a run time of 0 ms"
        );
        rows.push(Measurement::new(
            format!("e2e_tasks_per_second_replicas_{replicas}"),
            report.tasks_total as f64 / (running_ms as f64 / 1e3),
            "1/s",
            direct_rate,
            "the same tasks run directly in the sandbox, one thread",
        ));
        rows.push(Measurement::new(
            format!("e2e_first_placement_replicas_{replicas}"),
            report.first_placed_ms as f64,
            "ms",
            report.run_ms as f64,
            "the whole job, from its escrow to its last task; ratio = value / baseline",
        ));
    }
    Ok(rows)
}

/// The three jobs, in order: the round trip on one provider, then
/// throughput on all of them with one and with two replicas.
async fn measure(
    network: &mut Network,
    requestor: &Keypair,
    provider_keys: &[Keypair],
    sizes: Sizes,
) -> anyhow::Result<[SubmitReport; 3]> {
    let (first, others) = provider_keys
        .split_first()
        .context("the benchmark needs a provider")?;
    network.start_provider(first, "provider-0").await?;
    let round_trip = network
        .run_job(
            requestor,
            job_file(sizes.round_trip_tasks, 1)?,
            "round-trip",
            // One task at a time: what a task's trip costs, not the time
            // it queues behind others.
            MarketConfig {
                tasks_per_core: 1,
                tasks_per_core_max: 1,
                ..MarketConfig::default()
            },
        )
        .await?;
    for (index, key) in others.iter().enumerate() {
        network
            .start_provider(key, &format!("provider-{}", index + 1))
            .await?;
    }
    let replicas_1 = network
        .run_job(
            requestor,
            job_file(sizes.throughput_tasks, 1)?,
            "throughput-replicas-1",
            MarketConfig::default(),
        )
        .await?;
    let replicas_2 = network
        .run_job(
            requestor,
            job_file(sizes.throughput_tasks, 2)?,
            "throughput-replicas-2",
            MarketConfig::default(),
        )
        .await?;
    Ok([round_trip, replicas_1, replicas_2])
}

/// The median time for one overlay node to send another an empty request
/// (`JobDone`) and have its answer, over `count` requests one after
/// another, on loopback TCP.
async fn overlay_round_trips(count: u64) -> anyhow::Result<Duration> {
    let config = || -> anyhow::Result<OverlayConfig> {
        let mut overlay = OverlayConfig::new(CHAIN_ID);
        overlay.listen = vec!["/ip4/127.0.0.1/tcp/0".parse()?];
        overlay.mdns = false;
        Ok(overlay)
    };
    let server_key = Keypair::from_seed([201; 32]);
    let (server, mut server_events, _server_driver) = Overlay::start(&server_key, config()?)?;
    loop {
        match tokio::time::timeout(STARTUP_TIMEOUT, server_events.recv()).await {
            Ok(Some(Event::Listening(_))) => break,
            Ok(Some(_)) => {}
            _ => bail!("the overlay's test server did not listen"),
        }
    }
    let address = server
        .listen_addresses()
        .await?
        .into_iter()
        .next()
        .context("the overlay's test server listens nowhere")?;
    tokio::spawn(async move {
        while let Some(event) = server_events.recv().await {
            if let Event::Request { reply, .. } = event {
                reply.send(Response::Ok);
            }
        }
    });
    let mut client_config = config()?;
    client_config.bootstrap = vec![address];
    let (client, _client_events, _client_driver) =
        Overlay::start(&Keypair::from_seed([202; 32]), client_config)?;
    let job = idlegrid_types::JobId::from_bytes([0; 32]);
    let peer = server.account();
    // The first requests connect (the client knows the server's address
    // from its bootstrap list) and warm up.
    let connected = tokio::time::timeout(STARTUP_TIMEOUT, async {
        while client
            .request(&peer, Request::JobDone { job })
            .await
            .is_err()
        {}
    });
    connected
        .await
        .map_err(|_| anyhow!("the overlay's test client did not connect"))?;
    for _ in 0..100 {
        client.request(&peer, Request::JobDone { job }).await?;
    }
    let mut times = Vec::new();
    for _ in 0..count {
        let started = Instant::now();
        client.request(&peer, Request::JobDone { job }).await?;
        times.push(started.elapsed());
    }
    times.sort();
    times
        .get(times.len() / 2)
        .copied()
        .context("no overlay requests were measured")
}

/// A measurement whose ratio is baseline over value: below 1 when the
/// measured figure is a time longer than its baseline's.
fn baseline_over_value(mut row: Measurement) -> Measurement {
    row.ratio = if row.value > 0.0 {
        row.baseline / row.value
    } else {
        f64::NAN
    };
    row
}

/// `tasks` pi tasks of one sample each (the index seeds each), verified by
/// `replicas` providers, with a budget of twice the worst case.
fn job_file(tasks: u64, replicas: u8) -> anyhow::Result<JobFile> {
    let worst_case =
        (tasks * u64::from(replicas) * TASK_FUEL_MAX * PRICE_PER_MILLION_FUEL).div_ceil(1_000_000);
    let budget = 2 * worst_case;
    let text = format!(
        "module = {PI_WASM:?}\n\
         price_per_million_fuel = {PRICE_PER_MILLION_FUEL}\n\
         budget = {budget}\n\
         deadline_blocks = {DEADLINE_BLOCKS}\n\
         \n\
         [limits]\n\
         fuel = {TASK_FUEL_MAX}\n\
         output_bytes = 4096\n\
         \n\
         [verification]\n\
         policy = \"replicas\"\n\
         replicas = {replicas}\n\
         \n\
         [tasks]\n\
         end = {tasks}\n\
         args = [\"1\", \"{{index}}\"]\n"
    );
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("bench-e2e-job.toml");
    JobFile::parse(&text, &path).context("building the benchmark's job file")
}

/// A job's tasks run one after another in a sandbox of this process.
#[derive(Debug)]
struct DirectRun {
    /// Each task's `Sandbox::run`, sorted.
    per_task: Vec<Duration>,
    /// The whole loop.
    total: Duration,
}

impl DirectRun {
    /// The nearest-rank percentile of the per-task times.
    fn percentile(&self, fraction: f64) -> Duration {
        let rank = (fraction * self.per_task.len() as f64).ceil() as usize;
        self.per_task[rank.clamp(1, self.per_task.len()) - 1]
    }

    fn per_second(&self) -> f64 {
        self.per_task.len() as f64 / self.total.as_secs_f64()
    }
}

/// Runs every task of `job` with the limits a provider gives it, on this
/// thread, after compiling the module once.
fn run_directly(job: &JobFile) -> anyhow::Result<DirectRun> {
    let sandbox = Sandbox::new(SandboxConfig {
        concurrent_tasks_max: 1,
        ..SandboxConfig::default()
    })?;
    let (module, _) = sandbox
        .prepare(&job.module)
        .map_err(|error| anyhow!("failed to prepare {}: {error}", job.module_path.display()))?;
    let limits = task_limits(&job.limits, Duration::from_secs(job.wall_time_secs));
    let mut per_task = Vec::new();
    let started = Instant::now();
    for (index, input) in job.tasks().enumerate() {
        let spec = TaskSpec {
            args: input.arg_strings(),
            stdin: input.stdin.to_vec(),
            seed: seed_from_u64(index as u64),
            limits,
            ..TaskSpec::default()
        };
        let before = Instant::now();
        let report = sandbox.run(&module, &spec)?;
        per_task.push(before.elapsed());
        match report.result {
            Ok(completion) if completion.exit_code == 0 => {}
            Ok(completion) => bail!(
                "task {index} exited with {} in the sandbox",
                completion.exit_code
            ),
            Err(error) => bail!("task {index} failed in the sandbox: {error}"),
        }
    }
    let total = started.elapsed();
    if let Some(error) = job.task_failure() {
        bail!("{error}");
    }
    ensure!(!per_task.is_empty(), "the job has no tasks");
    per_task.sort();
    Ok(DirectRun { per_task, total })
}

/// Writes a one-validator testnet funding `accounts`, starts its validator
/// (ports chosen by the OS) and waits for its first finalized block.
fn start_one_validator(
    directory: &Path,
    accounts: Vec<(AccountId, u64)>,
) -> anyhow::Result<Validator> {
    let plan = TestnetPlan {
        validators: 1,
        chain_id: CHAIN_ID.to_owned(),
        p2p_port: 0,
        api_port: 0,
        accounts,
        ..TestnetPlan::default()
    };
    let testnet = testnet::init(directory, &plan)?;
    let config = testnet
        .configs
        .first()
        .context("the testnet has no validator")?;
    let validator = start_validator(config).context("starting the validator")?;
    let blocks = validator
        .node
        .lock()
        .map_err(|_| anyhow!("the validator's node state is poisoned"))?
        .subscribe();
    blocks
        .recv_timeout(STARTUP_TIMEOUT)
        .with_context(|| format!("the validator finalized no block within {STARTUP_TIMEOUT:?}"))?;
    Ok(validator)
}

/// A provider running on the bench's runtime.
struct RunningProvider {
    stop: oneshot::Sender<()>,
    task: JoinHandle<anyhow::Result<ProviderSummary>>,
}

/// The providers and what a requestor needs to reach them.
struct Network {
    /// The validator's HTTP API.
    api: String,
    /// Where providers and requestors keep their files.
    directory: PathBuf,
    /// The first provider's address, through which the others join.
    bootstrap: Option<Multiaddr>,
    providers: Vec<RunningProvider>,
}

impl Network {
    /// Overlay settings on loopback, joining through the first provider.
    fn overlay(&self) -> anyhow::Result<OverlayConfig> {
        let mut overlay = OverlayConfig::new(CHAIN_ID);
        overlay.listen = vec!["/ip4/127.0.0.1/tcp/0".parse()?];
        overlay.mdns = false;
        overlay.bootstrap = self.bootstrap.iter().cloned().collect();
        Ok(overlay)
    }

    /// Starts a provider and waits until it has bonded its stake and listens.
    async fn start_provider(&mut self, key: &Keypair, name: &str) -> anyhow::Result<()> {
        let mut config = ProviderConfig::new(
            key.clone(),
            self.api.clone(),
            self.directory.join(name),
            self.overlay()?,
        );
        config.stake = Some(PROVIDER_STAKE);
        config.cores = Some(PROVIDER_CORES);
        config.benchmark_fuel_per_second = Some(PROVIDER_BENCHMARK_FUEL_PER_SECOND);
        config.offer_interval = OFFER_INTERVAL;
        config.redeem_interval = REDEEM_INTERVAL;
        let (ready_tx, ready_rx) = oneshot::channel();
        let (stop, stopped) = oneshot::channel::<()>();
        let shutdown = async move {
            let _ = stopped.await;
        };
        let stats = Arc::new(ProviderStats::default());
        let task = tokio::spawn(run_provider(config, ready_tx, stats, shutdown));
        let ready = match tokio::time::timeout(PROVIDER_START_TIMEOUT, ready_rx).await {
            Ok(Ok(ready)) => ready,
            Ok(Err(_)) => {
                let outcome = task
                    .await
                    .with_context(|| format!("{name} panicked while starting"))?;
                outcome.with_context(|| format!("{name} failed to start"))?;
                bail!("{name} stopped before it was ready");
            }
            Err(_) => {
                task.abort();
                bail!("{name} was not ready within {PROVIDER_START_TIMEOUT:?}");
            }
        };
        self.providers.push(RunningProvider { stop, task });
        ensure!(
            ready.provider_stake >= PROVIDER_STAKE,
            "{name} bonded {} of {PROVIDER_STAKE} stake",
            ready.provider_stake
        );
        if self.bootstrap.is_none() {
            let address = ready
                .addresses
                .first()
                .with_context(|| format!("{name} listens on no address"))?;
            self.bootstrap = Some(address.clone());
        }
        Ok(())
    }

    /// Submits a fresh job and waits for its last task; every task must be
    /// accepted.
    async fn run_job(
        &self,
        requestor: &Keypair,
        job: JobFile,
        name: &str,
        market: MarketConfig,
    ) -> anyhow::Result<SubmitReport> {
        let mut overlay = self.overlay()?;
        overlay.dial_offer_authors = true;
        let tasks = job.task_count();
        let config = SubmitConfig {
            key: requestor.clone(),
            node: self.api.clone(),
            overlay,
            job,
            out_dir: self.directory.join(name),
            close: false,
            market,
            tick: REQUESTOR_TICK,
            referee_fuel: REFEREE_FUEL_DEFAULT,
            opened: None,
            reporter: None,
        };
        let progress = Arc::new(SubmitProgress::default());
        let report = tokio::time::timeout(JOB_TIMEOUT, submit(config, progress))
            .await
            .map_err(|_| anyhow!("the {name} job did not finish within {JOB_TIMEOUT:?}"))?
            .with_context(|| format!("running the {name} job"))?;
        ensure!(
            report.accepted == tasks && report.failed == 0,
            "the {name} job ended with {} of {tasks} tasks accepted and {} failed",
            report.accepted,
            report.failed
        );
        Ok(report)
    }

    /// Stops every provider and waits for each to finish its redemptions.
    async fn stop_providers(&mut self) -> anyhow::Result<()> {
        let providers: Vec<_> = self
            .providers
            .drain(..)
            .map(|provider| {
                let _ = provider.stop.send(());
                provider.task
            })
            .collect();
        let mut first_error = None;
        for (index, task) in providers.into_iter().enumerate() {
            let outcome = match tokio::time::timeout(PROVIDER_STOP_TIMEOUT, task).await {
                Ok(Ok(Ok(_summary))) => Ok(()),
                Ok(Ok(Err(error))) => Err(error.context(format!("provider {index} failed"))),
                Ok(Err(error)) => Err(anyhow!("provider {index} panicked: {error}")),
                Err(_) => Err(anyhow!(
                    "provider {index} did not stop within {PROVIDER_STOP_TIMEOUT:?}"
                )),
            };
            if let Err(error) = outcome {
                first_error.get_or_insert(error);
            }
        }
        first_error.map_or(Ok(()), Err)
    }
}
