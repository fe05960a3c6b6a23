//! `idlegrid devnet`: a whole network in one process, with no
//! configuration: one validator, three providers (the third a deliberately
//! slower device), a gateway serving the dashboard, and funded accounts,
//! with state under one folder so that a second run resumes the chain.
//!
//! Every part is the real one (the same functions `idlegrid validator`,
//! `provide`, `gateway` and `submit` run), wired together on loopback.

use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use idlegrid_api::client::ApiClient;
use idlegrid_gateway::{
    Access, GatewayConfig, ImageLayout, JobPhase, JobServiceConfig, Local, LocalJob, LocalProvider,
    run_gateway,
};
use idlegrid_market::MarketConfig;
use idlegrid_net::{Multiaddr, OverlayConfig};
use idlegrid_node::testnet::{TestnetPlan, init as init_testnet};
use idlegrid_node::{generate, read_key, start_validator, write_key};
use idlegrid_provider::{GpuChoice, ProviderConfig, ProviderStats, ProviderSummary, run_provider};
use idlegrid_requestor::core::REFEREE_FUEL_DEFAULT;
use idlegrid_requestor::{JobFile, SubmitConfig, SubmitReport, submit};
use idlegrid_types::{AccountId, Keypair};
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot, watch};
use tracing::warn;

/// The chain the devnet runs.
pub const CHAIN_ID: &str = "idlegrid-devnet";
/// Providers, and which one is slower.
const PROVIDERS: usize = 3;
const SLOW_PROVIDER: usize = 2;
/// How many times slower the slow provider is.
const SLOWDOWN: u32 = 4;
const PROVIDER_BALANCE: u64 = 10_000_000;
const PROVIDER_STAKE: u64 = 100_000;
/// The requestor's account (`requestor.key`), for demo jobs and your own.
const REQUESTOR_BALANCE: u64 = 1_000_000_000_000;
/// The gateway's account: dispute deposits for the jobs it runs for HTTP
/// clients.
const GATEWAY_BALANCE: u64 = 10_000_000;
/// Marks a folder as a devnet's, so `--reset` deletes nothing else.
const MARKER: &str = "devnet.json";
/// How long the providers get to redeem their vouchers at shutdown.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(60);
/// How long the validator may take to answer after starting.
const VALIDATOR_START_TIMEOUT: Duration = Duration::from_secs(60);

/// The demo job: a Mandelbrot image in tiles, one task each.
const MANDELBROT_WASM: &[u8] = include_bytes!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../examples/mandelbrot/mandelbrot.wasm"
));
pub const DEMO_WIDTH: u32 = 960;
pub const DEMO_HEIGHT: u32 = 640;
pub const DEMO_TILE: u32 = 64;
pub const DEMO_ITERATIONS: u32 = 1500;

/// How a devnet runs.
#[derive(Debug, Clone)]
pub struct DevnetConfig {
    /// Where its state lives (`./.idlegrid` by default).
    pub dir: PathBuf,
    /// The dashboard's and the gateway API's port on 127.0.0.1.
    pub port: u16,
    /// Delete the state first.
    pub reset: bool,
    /// Submit the demo job once the network is up.
    pub demo: bool,
    /// Who may submit jobs over HTTP to its gateway.
    pub access: Access,
}

/// What is in the devnet's folder besides the chain.
#[derive(Debug, Serialize, Deserialize)]
struct Marker {
    chain_id: String,
    created_by: String,
}

/// What the devnet tells its caller as it goes.
#[derive(Debug)]
pub enum DevnetNotice {
    Ready(Box<DevnetReady>),
    /// The demo job finished; its image is written.
    DemoDone {
        image: PathBuf,
        report: Box<SubmitReport>,
    },
    DemoFailed(String),
}

/// What started.
#[derive(Debug, Clone)]
pub struct DevnetReady {
    pub dir: PathBuf,
    /// The chain was already there.
    pub resumed: bool,
    pub height: u64,
    pub validator: AccountId,
    pub validator_api: SocketAddr,
    pub dashboard: SocketAddr,
    pub gateway: AccountId,
    pub gateway_addresses: Vec<Multiaddr>,
    pub providers: Vec<DevnetProvider>,
    /// A funded key for your own jobs (`idlegrid submit --key …`).
    pub requestor_key: PathBuf,
}

/// One of the devnet's providers.
#[derive(Debug, Clone)]
pub struct DevnetProvider {
    pub account: AccountId,
    pub label: String,
    pub benchmark_fuel_per_second: u64,
    pub cores: u32,
    /// The GPU it offers, if any.
    pub gpu: Option<String>,
}

/// What the providers did, when the devnet stops.
#[derive(Debug, Clone)]
pub struct DevnetSummary {
    pub providers: Vec<(AccountId, ProviderSummary)>,
}

/// The devnet's files.
struct Layout {
    dir: PathBuf,
}

impl Layout {
    fn marker(&self) -> PathBuf {
        self.dir.join(MARKER)
    }
    fn chain(&self) -> PathBuf {
        self.dir.join("chain")
    }
    fn validator_config(&self) -> PathBuf {
        self.chain().join("validator-0").join("config.toml")
    }
    fn key(&self, name: &str) -> PathBuf {
        self.dir.join("keys").join(format!("{name}.key"))
    }
    fn provider_dir(&self, index: usize) -> PathBuf {
        self.dir.join("providers").join(format!("provider-{index}"))
    }
    fn demo(&self) -> PathBuf {
        self.dir.join("demo")
    }
    /// The gateway's blobs and the outputs of jobs submitted over HTTP.
    fn gateway(&self) -> PathBuf {
        self.dir.join("gateway")
    }
}

/// Runs a devnet until `shutdown` resolves; tells `notices` what it does.
pub async fn run_devnet(
    config: DevnetConfig,
    notices: mpsc::UnboundedSender<DevnetNotice>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<DevnetSummary> {
    let layout = Layout {
        dir: config.dir.clone(),
    };
    if config.reset {
        reset(&layout)?;
    }
    let resumed = layout.marker().exists();
    if !resumed {
        create(&layout)?;
    }
    let gateway_key = read_key(&layout.key("gateway"))?;
    let requestor_key = read_key(&layout.key("requestor"))?;
    let provider_keys = (0..PROVIDERS)
        .map(|index| read_key(&layout.key(&format!("provider-{index}"))))
        .collect::<Result<Vec<_>, _>>()?;

    // The validator.
    let config_path = layout.validator_config();
    let validator = tokio::task::spawn_blocking(move || start_validator(&config_path))
        .await
        .context("the validator's start failed")??;
    let node = format!("http://{}", validator.api);
    let client = ApiClient::new(&node);
    let height = wait_for_api(&client).await?;

    let (stop_tx, stop_rx) = watch::channel(false);
    let stopped = move || {
        let mut stop = stop_rx.clone();
        async move {
            let _ = stop.wait_for(|stop| *stop).await;
        }
    };

    // The gateway, with the dashboard.
    let stats: Vec<Arc<ProviderStats>> = (0..PROVIDERS).map(|_| Arc::default()).collect();
    let local = Local {
        providers: provider_keys
            .iter()
            .enumerate()
            .map(|(index, key)| LocalProvider {
                account: key.account_id(),
                label: provider_label(index),
                stats: Arc::clone(&stats[index]),
            })
            .collect(),
        ..Local::default()
    };
    let (gateway_ready_tx, gateway_ready) = oneshot::channel();
    let gateway = tokio::spawn(run_gateway(
        GatewayConfig {
            key: gateway_key,
            node: node.clone(),
            overlay: overlay_config(Vec::new()),
            api_listen: SocketAddr::from((Ipv4Addr::LOCALHOST, config.port)),
            local: local.clone(),
            jobs: Some(JobServiceConfig {
                access: config.access.clone(),
                ..JobServiceConfig::new(layout.gateway())
            }),
        },
        gateway_ready_tx,
        stopped(),
    ));
    let gateway_ready = match gateway_ready.await {
        Ok(ready) => ready,
        Err(_) => {
            gateway.await.context("the gateway failed")??;
            bail!("the gateway stopped before it started");
        }
    };
    let bootstrap = gateway_ready.addresses.clone();

    // The providers, joined through the gateway, one after another. They
    // share one machine, so the first measures it for all (three
    // benchmarks at once on a small machine would each see a third of it);
    // the slow one offers its share of that.
    let mut providers = Vec::new();
    let mut started = Vec::new();
    let mut machine_score = None;
    for (index, key) in provider_keys.iter().enumerate() {
        let mut provider = ProviderConfig::new(
            key.clone(),
            node.clone(),
            layout.provider_dir(index),
            overlay_config(bootstrap.clone()),
        );
        provider.cores = Some(1);
        provider.stake = Some(PROVIDER_STAKE);
        provider.redeem_interval = Duration::from_secs(20);
        provider.offer_interval = Duration::from_secs(5);
        if index == SLOW_PROVIDER {
            provider.slowdown = SLOWDOWN;
        }
        // The first offers the machine's GPU, if it has one (Mesa's
        // lavapipe counts), so GPU jobs have somewhere to run.
        if index == 0 {
            provider.gpu = GpuChoice::Auto;
        }
        provider.benchmark_fuel_per_second =
            machine_score.map(|score: u64| score / u64::from(provider.slowdown.max(1)));
        let (ready_tx, ready) = oneshot::channel();
        let running = tokio::spawn(run_provider(
            provider,
            ready_tx,
            Arc::clone(&stats[index]),
            stopped(),
        ));
        let Ok(ready) = ready.await else {
            running.await.context("a provider failed")??;
            bail!("provider {index} stopped before it started");
        };
        machine_score.get_or_insert(ready.benchmark_fuel_per_second);
        providers.push(running);
        started.push(DevnetProvider {
            account: ready.account,
            label: provider_label(index),
            benchmark_fuel_per_second: ready.benchmark_fuel_per_second,
            cores: ready.cores,
            gpu: ready.gpu.as_ref().map(|gpu| gpu.name.to_string()),
        });
    }
    let _ = notices.send(DevnetNotice::Ready(Box::new(DevnetReady {
        dir: layout.dir.clone(),
        resumed,
        height,
        validator: validator.account,
        validator_api: validator.api,
        dashboard: gateway_ready.api,
        gateway: gateway_ready.account,
        gateway_addresses: gateway_ready.addresses.clone(),
        providers: started,
        requestor_key: layout.key("requestor"),
    })));

    let demo = config.demo.then(|| {
        let notices = notices.clone();
        let job = demo_job(&layout, requestor_key, &node, bootstrap.clone(), &local);
        tokio::spawn(async move {
            let notice = match job {
                Ok(run) => run.await,
                Err(error) => DevnetNotice::DemoFailed(format!("{error:#}")),
            };
            let _ = notices.send(notice);
        })
    });

    shutdown.await;
    let _ = stop_tx.send(true);
    if let Some(demo) = demo {
        demo.abort();
    }
    let mut summary = DevnetSummary {
        providers: Vec::new(),
    };
    for (index, provider) in providers.into_iter().enumerate() {
        match tokio::time::timeout(SHUTDOWN_TIMEOUT, provider).await {
            Ok(Ok(Ok(done))) => summary
                .providers
                .push((provider_keys[index].account_id(), done)),
            Ok(Ok(Err(error))) => warn!(index, error = %format!("{error:#}"), "a provider failed"),
            Ok(Err(error)) => warn!(index, %error, "a provider's task failed"),
            Err(_) => warn!(index, "a provider did not stop in time"),
        }
    }
    match tokio::time::timeout(SHUTDOWN_TIMEOUT, gateway).await {
        Ok(Ok(result)) => result?,
        Ok(Err(error)) => warn!(%error, "the gateway's task failed"),
        Err(_) => warn!("the gateway did not stop in time"),
    }
    // Last, once nothing submits to it: the validator syncs its journals.
    match tokio::time::timeout(
        SHUTDOWN_TIMEOUT,
        tokio::task::spawn_blocking(move || validator.stop()),
    )
    .await
    {
        Ok(Ok(Ok(()))) => {}
        Ok(Ok(Err(error))) => warn!(error = %format!("{error:#}"), "the validator failed"),
        Ok(Err(error)) => warn!(%error, "the validator's task failed"),
        Err(_) => warn!("the validator did not stop in time"),
    }
    Ok(summary)
}

fn provider_label(index: usize) -> String {
    if index == SLOW_PROVIDER {
        format!("provider-{index} (slow, {SLOWDOWN}x)")
    } else {
        format!("provider-{index}")
    }
}

fn overlay_config(bootstrap: Vec<Multiaddr>) -> OverlayConfig {
    let mut overlay = OverlayConfig::new(CHAIN_ID);
    overlay.listen = vec!["/ip4/127.0.0.1/tcp/0".parse().expect("a valid address")];
    overlay.bootstrap = bootstrap;
    overlay.mdns = false;
    overlay
}

/// Deletes a devnet's folder; refuses a folder that is not one.
fn reset(layout: &Layout) -> anyhow::Result<()> {
    if !layout.dir.exists() {
        return Ok(());
    }
    let empty = std::fs::read_dir(&layout.dir)
        .with_context(|| format!("failed to read {}", layout.dir.display()))?
        .next()
        .is_none();
    if !empty && !layout.marker().exists() {
        bail!(
            "{} is not a devnet's folder (it has no {MARKER}); not deleting it",
            layout.dir.display()
        );
    }
    std::fs::remove_dir_all(&layout.dir)
        .with_context(|| format!("failed to delete {}", layout.dir.display()))
}

/// Writes a new devnet: keys, a one-validator chain that funds them, and
/// the marker (last, so a failed start leaves no half devnet that looks whole).
fn create(layout: &Layout) -> anyhow::Result<()> {
    if layout.chain().exists() {
        bail!(
            "{} holds an unfinished devnet; start over with --reset",
            layout.dir.display()
        );
    }
    let mut accounts = Vec::new();
    let mut new_key = |name: &str, balance: u64| -> anyhow::Result<()> {
        let key: Keypair = generate()?;
        write_key(&layout.key(name), &key)?;
        if balance > 0 {
            accounts.push((key.account_id(), balance));
        }
        Ok(())
    };
    // The gateway files disputes for the jobs it runs over HTTP, and pays
    // their deposits.
    new_key("gateway", GATEWAY_BALANCE)?;
    new_key("requestor", REQUESTOR_BALANCE)?;
    for index in 0..PROVIDERS {
        new_key(&format!("provider-{index}"), PROVIDER_BALANCE)?;
    }
    let plan = TestnetPlan {
        validators: 1,
        chain_id: CHAIN_ID.to_owned(),
        p2p_port: free_port()?,
        api_port: free_port()?,
        accounts,
        ..TestnetPlan::default()
    };
    init_testnet(&layout.chain(), &plan)?;
    let marker = Marker {
        chain_id: CHAIN_ID.to_owned(),
        created_by: format!("idlegrid {}", env!("CARGO_PKG_VERSION")),
    };
    std::fs::write(layout.marker(), serde_json::to_string_pretty(&marker)?)
        .with_context(|| format!("failed to write {}", layout.marker().display()))
}

/// A port free now on 127.0.0.1 (kept in the validator's configuration).
fn free_port() -> anyhow::Result<u16> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).context("no free port")?;
    Ok(listener.local_addr()?.port())
}

async fn wait_for_api(client: &ApiClient) -> anyhow::Result<u64> {
    let deadline = tokio::time::Instant::now() + VALIDATOR_START_TIMEOUT;
    loop {
        let probe = client.clone();
        if let Ok(Ok(height)) = tokio::task::spawn_blocking(move || probe.height()).await {
            return Ok(height);
        }
        if tokio::time::Instant::now() > deadline {
            bail!(
                "the validator's API at {} did not answer within {} s",
                client.base(),
                VALIDATOR_START_TIMEOUT.as_secs()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The demo job's file: every tile of the image, one task each.
pub fn demo_job_file() -> String {
    let layout = demo_layout();
    let fuel_limit: u64 = 2_000_000_000;
    let price: u64 = 1;
    let budget = layout.tiles.len() as u64 * 3 * fuel_limit / 1_000_000 * price;
    let mut text = format!(
        "# The devnet's demo: a {w}x{h} Mandelbrot image in {tile}-pixel tiles, one\n\
         # task per tile (`idlegrid submit job.toml` runs it again). Each task prints\n\
         # its tile as a binary PPM; see examples/mandelbrot/README.md.\n\n\
         module = \"mandelbrot.wasm\"\n\
         price_per_million_fuel = {price}\n\
         budget = {budget}\n\
         deadline_blocks = 600\n\n\
         [limits]\n\
         fuel = {fuel_limit}\n\
         output_bytes = {output}\n\n\
         [verification]\n\
         policy = \"adaptive\"\n",
        w = DEMO_WIDTH,
        h = DEMO_HEIGHT,
        tile = DEMO_TILE,
        output = DEMO_TILE * DEMO_TILE * 3 + 64,
    );
    for (x, y) in &layout.tiles {
        text.push_str(&format!(
            "\n[[task]]\nargs = [\"{DEMO_WIDTH}\", \"{DEMO_HEIGHT}\", \"{x}\", \"{y}\", \"{DEMO_TILE}\", \"{DEMO_ITERATIONS}\"]\n"
        ));
    }
    text
}

/// The demo image's tiles, row by row.
pub fn demo_layout() -> ImageLayout {
    let columns = DEMO_WIDTH.div_ceil(DEMO_TILE);
    let rows = DEMO_HEIGHT.div_ceil(DEMO_TILE);
    ImageLayout {
        width: DEMO_WIDTH,
        height: DEMO_HEIGHT,
        tile_size: DEMO_TILE,
        tiles: (0..rows)
            .flat_map(|y| (0..columns).map(move |x| (x, y)))
            .collect(),
    }
}

/// Writes the demo's job file and module and returns the run of its job.
fn demo_job(
    layout: &Layout,
    key: Keypair,
    node: &str,
    bootstrap: Vec<Multiaddr>,
    local: &Local,
) -> anyhow::Result<impl Future<Output = DevnetNotice> + Send + 'static> {
    let folder = layout.demo();
    std::fs::create_dir_all(&folder)
        .with_context(|| format!("failed to create {}", folder.display()))?;
    std::fs::write(folder.join("mandelbrot.wasm"), MANDELBROT_WASM)?;
    let job_path = folder.join("job.toml");
    std::fs::write(&job_path, demo_job_file())?;
    let job = JobFile::load(&job_path)?;
    // Each run's results in a folder of its own.
    let out_dir = (1..)
        .map(|run| folder.join(format!("results-{run}")))
        .find(|dir| !dir.exists())
        .context("no free results folder")?;
    let progress = Arc::new(local.progress());
    let watched = Arc::new(LocalJob::new(
        "mandelbrot (demo)",
        job.module_cid,
        out_dir.clone(),
        Arc::clone(&progress),
        Some(demo_layout()),
    ));
    local.add_job(Arc::clone(&watched));
    let mut overlay = overlay_config(bootstrap);
    overlay.dial_offer_authors = true;
    let config = SubmitConfig {
        key,
        node: node.to_owned(),
        overlay,
        job,
        out_dir: out_dir.clone(),
        close: false,
        market: MarketConfig::default(),
        tick: Duration::from_millis(100),
        referee_fuel: REFEREE_FUEL_DEFAULT,
        opened: None,
        reporter: None,
    };
    let image = folder.join("mandelbrot.png");
    Ok(async move {
        let outcome = match submit(config, progress).await {
            Ok(report) if report.accepted == report.tasks_total => {
                let layout = demo_layout();
                let written = {
                    let image = image.clone();
                    tokio::task::spawn_blocking(move || {
                        write_image(&layout, &out_dir.join("tasks"), &image)
                    })
                    .await
                    .map_err(anyhow::Error::from)
                    .and_then(|written| written)
                };
                written.map(|()| report)
            }
            Ok(report) => Err(anyhow::anyhow!(
                "{} of {} tiles were accepted ({} failed)",
                report.accepted,
                report.tasks_total,
                report.failed
            )),
            Err(error) => Err(error),
        };
        match outcome {
            Ok(report) => {
                watched.set_phase(JobPhase::Done, None);
                DevnetNotice::DemoDone {
                    image,
                    report: Box::new(report),
                }
            }
            Err(error) => {
                let message = format!("{error:#}");
                watched.set_phase(JobPhase::Failed, Some(message.clone()));
                DevnetNotice::DemoFailed(message)
            }
        }
    })
}

/// Puts the tiles (binary PPMs, `NNNNNN.out`) together into one PNG.
pub fn write_image(layout: &ImageLayout, tiles: &Path, image: &Path) -> anyhow::Result<()> {
    let width = usize::try_from(layout.width)?;
    let height = usize::try_from(layout.height)?;
    let mut pixels = vec![0u8; width * height * 3];
    for (index, (x, y)) in layout.tiles.iter().enumerate() {
        let path = tiles.join(format!("{index:06}.out"));
        let bytes =
            std::fs::read(&path).with_context(|| format!("failed to read {}", path.display()))?;
        let (tile_width, tile_height, rgb) =
            parse_ppm(&bytes).with_context(|| format!("{} is not a tile", path.display()))?;
        let left = usize::try_from(x * layout.tile_size)?;
        let top = usize::try_from(y * layout.tile_size)?;
        anyhow::ensure!(
            left + tile_width <= width && top + tile_height <= height,
            "tile {index} ({tile_width}x{tile_height} at {left},{top}) does not fit the image"
        );
        for row in 0..tile_height {
            let from = row * tile_width * 3;
            let to = ((top + row) * width + left) * 3;
            pixels[to..to + tile_width * 3].copy_from_slice(&rgb[from..from + tile_width * 3]);
        }
    }
    let file = std::fs::File::create(image)
        .with_context(|| format!("failed to create {}", image.display()))?;
    let mut encoder = png::Encoder::new(std::io::BufWriter::new(file), layout.width, layout.height);
    encoder.set_color(png::ColorType::Rgb);
    encoder.set_depth(png::BitDepth::Eight);
    let mut writer = encoder.write_header()?;
    writer.write_image_data(&pixels)?;
    writer.finish()?;
    Ok(())
}

/// A binary PPM (`P6`, 8-bit): its width, height and RGB bytes.
pub fn parse_ppm(bytes: &[u8]) -> anyhow::Result<(usize, usize, &[u8])> {
    let mut fields = Vec::new();
    let mut at = 0;
    while fields.len() < 4 {
        // Skip whitespace and comments.
        while at < bytes.len() && (bytes[at].is_ascii_whitespace() || bytes[at] == b'#') {
            if bytes[at] == b'#' {
                while at < bytes.len() && bytes[at] != b'\n' {
                    at += 1;
                }
            } else {
                at += 1;
            }
        }
        let start = at;
        while at < bytes.len() && !bytes[at].is_ascii_whitespace() {
            at += 1;
        }
        anyhow::ensure!(start < at, "the PPM header ends early");
        fields.push(std::str::from_utf8(&bytes[start..at])?);
    }
    anyhow::ensure!(
        fields[0] == "P6",
        "not a binary PPM (magic {:?})",
        fields[0]
    );
    let width: usize = fields[1].parse()?;
    let height: usize = fields[2].parse()?;
    anyhow::ensure!(fields[3] == "255", "only 8-bit PPMs are read");
    // One whitespace byte separates the header from the pixels.
    let pixels = bytes.get(at + 1..).unwrap_or_default();
    let expected = width
        .checked_mul(height)
        .and_then(|pixels| pixels.checked_mul(3))
        .context("the PPM is too large")?;
    anyhow::ensure!(
        pixels.len() == expected,
        "a {width}x{height} PPM has {expected} pixel bytes, not {}",
        pixels.len()
    );
    Ok((width, height, pixels))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_demo_job_file_parses_and_covers_the_image() {
        let folder = tempfile::tempdir().expect("a folder");
        std::fs::write(folder.path().join("mandelbrot.wasm"), MANDELBROT_WASM).expect("write");
        let path = folder.path().join("job.toml");
        std::fs::write(&path, demo_job_file()).expect("write");
        let job = JobFile::load(&path).expect("the demo job file parses");
        let layout = demo_layout();
        assert_eq!(job.task_count(), layout.tiles.len() as u64);
        assert_eq!(
            layout.tiles.len(),
            usize::try_from((DEMO_WIDTH / DEMO_TILE) * (DEMO_HEIGHT / DEMO_TILE)).expect("fits")
        );
        assert_eq!(
            job.task(17).expect("task 17").arg_strings(),
            vec!["960", "640", "2", "1", "64", "1500"]
        );
    }

    #[test]
    fn tiles_make_one_image_and_bad_tiles_are_refused() {
        let folder = tempfile::tempdir().expect("a folder");
        let layout = ImageLayout {
            width: 4,
            height: 2,
            tile_size: 2,
            tiles: vec![(0, 0), (1, 0)],
        };
        let tile = |shade: u8| {
            let mut bytes = b"P6\n# a comment\n2 2\n255\n".to_vec();
            bytes.extend(std::iter::repeat_n(shade, 12));
            bytes
        };
        std::fs::write(folder.path().join("000000.out"), tile(10)).expect("write");
        std::fs::write(folder.path().join("000001.out"), tile(200)).expect("write");
        let image = folder.path().join("image.png");
        write_image(&layout, folder.path(), &image).expect("an image");
        let decoder = png::Decoder::new(std::io::BufReader::new(
            std::fs::File::open(&image).expect("open"),
        ));
        let mut reader = decoder.read_info().expect("a PNG");
        let mut pixels = vec![0; reader.output_buffer_size()];
        reader.next_frame(&mut pixels).expect("a frame");
        assert_eq!(&pixels[..6], &[10; 6]);
        assert_eq!(&pixels[6..12], &[200; 6]);

        std::fs::write(folder.path().join("000001.out"), b"P6\n2 2\n255\nshort").expect("write");
        let error = write_image(&layout, folder.path(), &image).expect_err("a short tile");
        assert!(format!("{error:#}").contains("pixel bytes"), "{error:#}");
        assert!(parse_ppm(b"P3\n1 1\n255\n000").is_err());
        assert!(parse_ppm(b"P6\n").is_err());
    }
}
