//! The provider's GPU: which adapter it offers, its score on the GPU
//! challenge kernel (measured once and cached, as the CPU's is), and what
//! it offers.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use idlegrid_gpu::Gpu;
use idlegrid_gpu::challenge::{self, CHALLENGE_WGSL};
use idlegrid_types::Bounded;
use idlegrid_types::gpu::GpuOffer;
use serde::{Deserialize, Serialize};

use crate::hardware::{fuel_per_second, read_cache, write_cache};

/// Runs before measuring (the driver compiles the pipeline) and measured.
const WARMUP_RUNS: u32 = 1;
const MEASURED_RUNS: u32 = 3;
/// How long one measured run should take at least: batches grow until
/// one does, so fast GPUs are timed over more than their launch cost.
const MEASURED_RUN_MIN: Duration = Duration::from_millis(200);
/// The largest batch: a dispatch's most workgroups in one dimension.
const BATCH_WORKGROUPS_MAX: u32 = idlegrid_gpu::WORKGROUPS_PER_DIMENSION_MAX;
/// How long one reference run may take before the GPU is not offered.
const REFERENCE_WALL_TIME: Duration = Duration::from_secs(60);

/// Which GPU a provider offers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GpuChoice {
    /// The first usable adapter, if there is one.
    Auto,
    /// The first adapter whose name contains this; none is an error.
    Named(String),
    /// None.
    Off,
}

/// An opened GPU and what is offered on it.
#[derive(Debug)]
pub struct GpuSetup {
    pub gpu: Arc<Gpu>,
    pub offer: GpuOffer,
    /// The score was read from the cache rather than measured now.
    pub cached: bool,
}

/// What a cached GPU score was measured on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct CacheKey {
    adapter: String,
    vendor: u32,
    device: u32,
    driver: String,
    kernel: String,
    crate_version: String,
}

/// Opens the GPU `choice` names and scores it (or takes `score`), to be
/// offered at `price_floor` per million fuel. `Auto` without a usable
/// adapter gives `None`.
pub fn open(
    choice: &GpuChoice,
    cache_file: &Path,
    price_floor: u64,
    score: Option<u64>,
) -> anyhow::Result<Option<GpuSetup>> {
    let gpu = match choice {
        GpuChoice::Off => return Ok(None),
        GpuChoice::Auto => match Gpu::open(None) {
            Ok(gpu) => gpu,
            Err(error) => {
                tracing::info!(%error, "no GPU offered");
                return Ok(None);
            }
        },
        GpuChoice::Named(name) => Gpu::open(Some(name))?,
    };
    let info = gpu.info().clone();
    let key = CacheKey {
        adapter: info.name.clone(),
        vendor: info.vendor,
        device: info.device,
        driver: format!("{} {}", info.driver, info.driver_info),
        kernel: idlegrid_types::ContentId::of(CHALLENGE_WGSL.as_bytes()).to_string(),
        crate_version: env!("CARGO_PKG_VERSION").to_owned(),
    };
    let (fuel_per_second, cached) = match score {
        Some(score) => (score, false),
        None => match read_cache(cache_file, &key) {
            Some(score) => (score, true),
            None => {
                let score = benchmark(&gpu).context("failed to score the GPU")?;
                if let Err(error) = write_cache(cache_file, &key, score) {
                    tracing::warn!(path = %cache_file.display(), %error, "failed to cache the GPU score");
                }
                (score, false)
            }
        },
    };
    let bounded = |text: &str| {
        let mut text = text.to_owned();
        while Bounded::<String, { idlegrid_types::gpu::GPU_NAME_BYTES_MAX }>::new(text.clone())
            .is_err()
        {
            text.pop();
        }
        Bounded::new(text).expect("shortened to fit")
    };
    let offer = GpuOffer {
        name: bounded(&info.name),
        vendor: info.vendor,
        device: info.device,
        driver: bounded(&key.driver),
        fuel_per_second,
        price_floor_per_million_fuel: price_floor,
    };
    Ok(Some(GpuSetup {
        gpu: Arc::new(gpu),
        offer,
        cached,
    }))
}

/// The best fuel per second of the measured runs of the GPU challenge
/// kernel (the proof of work the chain's GPU challenges time), so the
/// speed offered is in the units challenges check. Batches double from a
/// small one until a run takes [`MEASURED_RUN_MIN`].
fn benchmark(gpu: &Gpu) -> anyhow::Result<u64> {
    let mut workgroups = 16u32;
    for _ in 0..WARMUP_RUNS {
        challenge::benchmark_run(gpu, workgroups, REFERENCE_WALL_TIME)?;
    }
    loop {
        let started = Instant::now();
        challenge::benchmark_run(gpu, workgroups, REFERENCE_WALL_TIME)?;
        if started.elapsed() >= MEASURED_RUN_MIN || workgroups == BATCH_WORKGROUPS_MAX {
            break;
        }
        workgroups = workgroups.saturating_mul(2).min(BATCH_WORKGROUPS_MAX);
    }
    let mut best = 0;
    for _ in 0..MEASURED_RUNS {
        let started = Instant::now();
        let fuel = challenge::benchmark_run(gpu, workgroups, REFERENCE_WALL_TIME)?;
        best = best.max(fuel_per_second(fuel, started.elapsed()));
    }
    anyhow::ensure!(best > 0, "the GPU challenge kernel measured no speed");
    Ok(best)
}
