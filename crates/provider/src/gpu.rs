//! The provider's GPU: which adapter it offers, its score on the reference
//! kernel (measured once and cached, as the CPU's is), and what it offers.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use idlegrid_gpu::{Gpu, Program};
use idlegrid_types::gpu::{GpuBinding, GpuClass, GpuDispatch, GpuOffer, GpuProgram};
use idlegrid_types::{Bounded, ExecutionLimits, TaskInput, TaskOutcome};
use serde::{Deserialize, Serialize};

use crate::hardware::{fuel_per_second, read_cache, write_cache};

/// The reference kernel: Mandelbrot escape counts in exact f32 (the
/// example in `examples/mandelbrot-gpu`).
const REFERENCE_KERNEL: &str = include_str!("../../../examples/mandelbrot-gpu/mandelbrot-gpu.wgsl");
/// The reference run: a 512×512 image, at most 512 iterations a pixel.
const REFERENCE_SIDE: u32 = 512;
const REFERENCE_ITERATIONS: u32 = 512;
/// Runs before measuring (the driver compiles the pipeline) and measured.
const WARMUP_RUNS: u32 = 1;
const MEASURED_RUNS: u32 = 3;
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
        kernel: idlegrid_types::ContentId::of(REFERENCE_KERNEL.as_bytes()).to_string(),
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

/// The reference kernel as a GPU task's program.
fn reference_program() -> GpuProgram {
    let step = (3.0f32 / REFERENCE_SIDE as f32).to_bits();
    let params: Vec<u8> = [
        REFERENCE_SIDE,
        REFERENCE_SIDE,
        REFERENCE_ITERATIONS,
        step,
        step,
    ]
    .iter()
    .flat_map(|word| word.to_le_bytes())
    .collect();
    let groups = REFERENCE_SIDE.div_ceil(8);
    GpuProgram {
        wgsl: Bounded::new(REFERENCE_KERNEL.to_owned()).expect("the kernel is small"),
        class: GpuClass::Exact,
        fuel_per_invocation: REFERENCE_ITERATIONS * 2,
        bindings: Bounded::new(vec![
            GpuBinding::Shared(Bounded::new(params).expect("small")),
            GpuBinding::Output(u64::from(REFERENCE_SIDE * REFERENCE_SIDE * 4)),
        ])
        .expect("two"),
        dispatches: Bounded::new(vec![GpuDispatch {
            entry_point: Bounded::new("main".to_owned()).expect("short"),
            workgroups: [groups, groups, 1],
        }])
        .expect("one"),
    }
}

/// The best fuel per second of the measured runs of the reference kernel.
fn benchmark(gpu: &Gpu) -> anyhow::Result<u64> {
    let program = Program::compile(reference_program())?;
    let limits = ExecutionLimits {
        fuel: u64::MAX,
        memory_bytes: u64::MAX,
        output_bytes: u64::MAX,
    };
    let mut best = 0;
    for run in 0..WARMUP_RUNS + MEASURED_RUNS {
        let started = Instant::now();
        let result = program.run(gpu, &TaskInput::default(), &limits, REFERENCE_WALL_TIME)?;
        let elapsed = started.elapsed();
        anyhow::ensure!(
            matches!(result.outcome, TaskOutcome::Completed { .. }),
            "the reference kernel failed: {:?}",
            result.outcome
        );
        if run >= WARMUP_RUNS {
            best = best.max(fuel_per_second(result.fuel_used, elapsed));
        }
    }
    Ok(best)
}
