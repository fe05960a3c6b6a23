//! What a provider's machine has, how fast it runs the reference workload, and how busy its owner keeps it.
//!
//! [`detect`] reads the machine once at start-up; [`benchmark`] scores it in
//! fuel per second on the capacity challenge (cached on disk, because the score
//! only changes with the machine, the module or this crate); [`HostLoad`]
//! and [`IdleGate`] decide, for `--idle-only`, when the owner wants the
//! machine back.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use idlegrid_sandbox::Sandbox;
use idlegrid_types::ContentId;
use serde::{Deserialize, Serialize};
use sysinfo::{
    CpuRefreshKind, MemoryRefreshKind, ProcessRefreshKind, ProcessesToUpdate, RefreshKind, System,
};

/// Where the NVIDIA driver lists one directory per GPU.
const NVIDIA_GPUS_DIR: &str = "/proc/driver/nvidia/gpus";
/// Most GPUs listed; a machine with more still reports this many.
const GPUS_MAX: usize = 64;
/// Most bytes read from one GPU's `information` file (a few hundred in practice).
const GPU_INFORMATION_BYTES_MAX: u64 = 16 << 10;
/// Longest CPU or GPU model name kept, in characters.
const MODEL_NAME_CHARS_MAX: usize = 128;

/// The benchmark runs the capacity challenge (the reference workload, so
/// that the speed a provider offers is the speed the chain's challenges
/// time) with no passes and with this many, and scores the passes alone:
/// their random reads are slower than the fill, so a challenge of any
/// length runs at least this fast.
const BENCHMARK_PASSES: u32 = 2;
/// The seed of every benchmark run (any fixed one: the work is the same).
const BENCHMARK_SEED: [u8; 32] = [0x1d; 32];
/// Runs thrown away first: they fault in the memory pool and warm caches.
const BENCHMARK_WARMUP_RUNS: u32 = 1;
/// Runs measured; the fastest counts, since interference only slows a run.
const BENCHMARK_MEASURED_RUNS: u32 = 3;
/// Wall-clock backstop for one run on a very slow or very busy machine.
const BENCHMARK_RUN_WALL_TIME_MAX: Duration = Duration::from_secs(60);
/// Largest benchmark cache file read; anything bigger is not ours.
const BENCHMARK_CACHE_BYTES_MAX: u64 = 16 << 10;

/// Consecutive samples above the threshold before work pauses.
const PAUSE_AFTER_BUSY_SAMPLES: u32 = 2;
/// Consecutive samples below the resume level before work resumes.
const RESUME_AFTER_QUIET_SAMPLES: u32 = 3;
/// How far below the pause threshold the owner's load must fall to resume,
/// in percentage points; the gap stops work flapping around the threshold.
const RESUME_MARGIN_PERCENT: f32 = 10.0;

/// What a provider's machine has.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hardware {
    /// Logical CPUs (hardware threads); at least 1.
    pub cores: u32,
    pub memory_bytes: u64,
    /// The first CPU's brand string, or `unknown`.
    pub cpu_model: String,
    /// NVIDIA GPU model names; empty when there are none or no driver.
    pub gpus: Vec<String>,
}

impl Hardware {
    /// One line for people: `2 cores, 23.5 GiB, AMD EPYC 7B13, no GPU`.
    pub fn describe(&self) -> String {
        let cores = match self.cores {
            1 => "1 core".to_owned(),
            cores => format!("{cores} cores"),
        };
        let gpus = match self.gpus.as_slice() {
            [] => "no GPU".to_owned(),
            [gpu] => format!("1 GPU: {gpu}"),
            gpus => format!("{} GPUs: {}", gpus.len(), gpus.join(", ")),
        };
        format!(
            "{cores}, {}, {}, {gpus}",
            format_gibibytes(self.memory_bytes),
            self.cpu_model
        )
    }
}

/// `23.5 GiB`, rounded to a tenth, in integers so no precision is lost.
fn format_gibibytes(bytes: u64) -> String {
    let tenths = (u128::from(bytes) * 10 + (1 << 29)) >> 30;
    format!("{}.{} GiB", tenths / 10, tenths % 10)
}

/// Reads what this machine has. Never fails: what cannot be read is
/// `unknown`, one core, or no GPU.
pub fn detect() -> Hardware {
    let system = System::new_with_specifics(
        RefreshKind::nothing()
            .with_cpu(CpuRefreshKind::nothing())
            .with_memory(MemoryRefreshKind::nothing().with_ram()),
    );
    let cpus = system.cpus();
    let cores = u32::try_from(cpus.len()).unwrap_or(u32::MAX).max(1);
    let cpu_model = cpus
        .first()
        .map(|cpu| clean_model_name(cpu.brand()))
        .filter(|brand| !brand.is_empty())
        .unwrap_or_else(|| "unknown".to_owned());
    Hardware {
        cores,
        memory_bytes: system.total_memory(),
        cpu_model,
        gpus: nvidia_gpus(Path::new(NVIDIA_GPUS_DIR)),
    }
}

fn clean_model_name(name: &str) -> String {
    name.trim().chars().take(MODEL_NAME_CHARS_MAX).collect()
}

/// The `Model:` of each GPU the NVIDIA driver lists under `dir`, in bus
/// order; empty when the directory is missing or unreadable. Reads files
/// only: running `nvidia-smi` could hang on a wedged driver.
fn nvidia_gpus(dir: &Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut information_files: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|entry| entry.path().join("information"))
        .take(GPUS_MAX)
        .collect();
    information_files.sort();
    information_files
        .iter()
        .filter_map(|path| {
            let mut text = String::new();
            std::fs::File::open(path)
                .and_then(|file| {
                    file.take(GPU_INFORMATION_BYTES_MAX)
                        .read_to_string(&mut text)
                })
                .ok()?;
            gpu_model(&text)
        })
        .collect()
}

/// The value of the `Model:` line of a driver `information` file.
fn gpu_model(information: &str) -> Option<String> {
    information.lines().find_map(|line| {
        let model = clean_model_name(line.trim_start().strip_prefix("Model:")?);
        (!model.is_empty()).then_some(model)
    })
}

/// A machine's score on the reference workload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Benchmark {
    pub fuel_per_second: u64,
    /// Read from the cache file rather than measured now.
    pub cached: bool,
}

/// Why the reference workload could not be measured.
#[derive(Debug, thiserror::Error)]
pub enum BenchmarkError {
    #[error("the sandbox does not meter fuel, so it cannot be scored in fuel per second")]
    FuelNotMetered,
    #[error("the reference workload failed: {message}")]
    Failed { message: String },
}

/// The content id of the reference workload (the capacity challenge).
pub fn reference_module_cid() -> ContentId {
    idlegrid_sandbox::challenge_module_cid()
}

/// Scores this machine in fuel per second on the reference workload, or
/// reads the score from `cache_file` when it was measured for the same
/// module, CPU, core count and crate version. A measured score is written
/// back to `cache_file`; failing to write it is logged, not fatal, since
/// the score is still good (the next start measures again).
pub fn benchmark(
    sandbox: &Sandbox,
    cache_file: &Path,
    hardware: &Hardware,
) -> Result<Benchmark, BenchmarkError> {
    let key = CacheKey::new(hardware);
    if let Some(fuel_per_second) = read_cache(cache_file, &key) {
        return Ok(Benchmark {
            fuel_per_second,
            cached: true,
        });
    }
    let fuel_per_second = measure(sandbox)?;
    if let Err(error) = write_cache(cache_file, &key, fuel_per_second) {
        tracing::warn!(
            path = %cache_file.display(),
            %error,
            "failed to cache the benchmark score"
        );
    }
    Ok(Benchmark {
        fuel_per_second,
        cached: false,
    })
}

/// The best fuel per second of the measured runs.
fn measure(sandbox: &Sandbox) -> Result<u64, BenchmarkError> {
    if !sandbox.config().metering.counts_fuel() {
        return Err(BenchmarkError::FuelNotMetered);
    }
    // The fastest of each kind of run: interference only slows a run.
    let mut fastest = [(0u64, Duration::MAX); 2];
    for run in 0..BENCHMARK_WARMUP_RUNS + BENCHMARK_MEASURED_RUNS {
        for (index, passes) in [0, BENCHMARK_PASSES].into_iter().enumerate() {
            let answer = sandbox
                .run_challenge(BENCHMARK_SEED, passes, BENCHMARK_RUN_WALL_TIME_MAX)
                .map_err(|message| BenchmarkError::Failed { message })?;
            tracing::debug!(run, passes, fuel_used = answer.fuel_used, ?answer.duration, "benchmark run");
            if run >= BENCHMARK_WARMUP_RUNS && answer.duration < fastest[index].1 {
                fastest[index] = (answer.fuel_used, answer.duration);
            }
        }
    }
    let [(fill_fuel, fill_time), (full_fuel, full_time)] = fastest;
    let best_fuel_per_second = fuel_per_second(
        full_fuel.saturating_sub(fill_fuel),
        full_time.saturating_sub(fill_time),
    );
    Ok(best_fuel_per_second)
}

pub(crate) fn fuel_per_second(fuel: u64, duration: Duration) -> u64 {
    let nanos = duration.as_nanos().max(1);
    u64::try_from(u128::from(fuel) * 1_000_000_000 / nanos).unwrap_or(u64::MAX)
}

/// What a cached score depends on: a change in any of them means measuring
/// again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct CacheKey {
    module_cid: String,
    cpu_model: String,
    cores: u32,
    crate_version: String,
}

impl CacheKey {
    fn new(hardware: &Hardware) -> Self {
        Self {
            module_cid: reference_module_cid().to_string(),
            cpu_model: hardware.cpu_model.clone(),
            cores: hardware.cores,
            crate_version: env!("CARGO_PKG_VERSION").to_owned(),
        }
    }
}

/// The cache file's JSON: what the score was measured on, and the score.
#[derive(Debug, Serialize, Deserialize)]
struct CacheFile<K> {
    #[serde(flatten)]
    key: K,
    fuel_per_second: u64,
}

/// The cached score, if the file exists, parses, has `key` and a score
/// above zero; anything else is ignored (and overwritten after measuring).
pub(crate) fn read_cache<K>(path: &Path, key: &K) -> Option<u64>
where
    K: PartialEq + serde::de::DeserializeOwned,
{
    let mut text = String::new();
    std::fs::File::open(path)
        .and_then(|file| {
            file.take(BENCHMARK_CACHE_BYTES_MAX)
                .read_to_string(&mut text)
        })
        .ok()?;
    match serde_json::from_str::<CacheFile<K>>(&text) {
        Ok(cache) if cache.key == *key && cache.fuel_per_second > 0 => Some(cache.fuel_per_second),
        Ok(_) => {
            tracing::info!(path = %path.display(), "benchmark cache is for another machine or version; measuring again");
            None
        }
        Err(error) => {
            tracing::warn!(path = %path.display(), %error, "ignoring unreadable benchmark cache");
            None
        }
    }
}

/// Writes the cache through a temporary file in the same directory and a
/// rename, so a crash leaves the old file or the new one, never half of one.
pub(crate) fn write_cache<K: Serialize + Clone>(
    path: &Path,
    key: &K,
    fuel_per_second: u64,
) -> std::io::Result<()> {
    let cache = CacheFile {
        key: key.clone(),
        fuel_per_second,
    };
    let json = serde_json::to_vec_pretty(&cache).map_err(std::io::Error::other)?;
    if let Some(dir) = path.parent().filter(|dir| !dir.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let mut temporary_name = path.file_name().unwrap_or_default().to_os_string();
    temporary_name.push(format!(".{}.partial", std::process::id()));
    let temporary = path.with_file_name(temporary_name);
    let written =
        std::fs::write(&temporary, &json).and_then(|()| std::fs::rename(&temporary, path));
    if written.is_err() {
        let _ = std::fs::remove_file(&temporary);
    }
    written
}

/// Measures how much of the host's CPU its owner is using: everything but
/// this process.
///
/// CPU usage is a difference between two readings, so call
/// [`HostLoad::owner_busy_percent`] periodically (every second, say). A call
/// less than [`sysinfo::MINIMUM_CPU_UPDATE_INTERVAL`] after [`HostLoad::new`]
/// returns 0, and one that soon after the previous call repeats its answer.
#[derive(Debug)]
pub struct HostLoad {
    system: System,
    /// `None` where the platform cannot name this process; then all CPU use
    /// counts as the owner's, which errs on the side of pausing.
    pid: Option<sysinfo::Pid>,
    sampled_at: Instant,
    last_percent: f32,
}

impl Default for HostLoad {
    fn default() -> Self {
        Self::new()
    }
}

impl HostLoad {
    /// Takes the first reading, against which the next call measures.
    pub fn new() -> Self {
        let mut load = Self {
            system: System::new(),
            pid: sysinfo::get_current_pid().ok(),
            sampled_at: Instant::now(),
            last_percent: 0.0,
        };
        load.refresh();
        load
    }

    fn refresh(&mut self) {
        // CPUs first: the process's share is computed against the CPU time
        // that passed between the last two CPU readings.
        self.system.refresh_cpu_usage();
        if let Some(pid) = self.pid {
            self.system.refresh_processes_specifics(
                ProcessesToUpdate::Some(&[pid]),
                true,
                ProcessRefreshKind::nothing().with_cpu(),
            );
        }
        self.sampled_at = Instant::now();
    }

    /// CPU used by everything except this process (all its threads), as a
    /// percentage of all cores, 0 to 100, since the previous call.
    pub fn owner_busy_percent(&mut self) -> f32 {
        // Refreshing sooner would divide this process's CPU time over a
        // short span by the CPU time of the previous, longer one.
        if self.sampled_at.elapsed() < sysinfo::MINIMUM_CPU_UPDATE_INTERVAL {
            return self.last_percent;
        }
        self.refresh();
        let cores = self.system.cpus().len().max(1);
        // Per-core percent (up to 100 × cores), made a share of the machine.
        let own_percent = self
            .pid
            .and_then(|pid| self.system.process(pid))
            .map_or(0.0, |process| process.cpu_usage() / cores as f32);
        let owner_percent = self.system.global_cpu_usage() - own_percent;
        self.last_percent = if owner_percent.is_nan() {
            0.0
        } else {
            owner_percent.clamp(0.0, 100.0)
        };
        self.last_percent
    }
}

/// Decides from periodic load samples when to pause work for the owner and
/// when to resume, with hysteresis so that a short spike or a load hovering
/// at the threshold does not flap. Pure: the caller samples and keeps time.
///
/// Work pauses after 2 consecutive samples above the threshold, and resumes
/// after 3 consecutive samples more than 10 points below it.
#[derive(Debug, Clone)]
pub struct IdleGate {
    threshold_percent: f32,
    paused: bool,
    /// Consecutive samples so far that argue for changing state.
    streak: u32,
}

impl IdleGate {
    /// A gate that starts running (not paused).
    pub fn new(threshold_percent: f32) -> Self {
        Self {
            threshold_percent,
            paused: false,
            streak: 0,
        }
    }

    pub fn paused(&self) -> bool {
        self.paused
    }

    /// Takes one sample of the owner's load; returns the new state when it
    /// changes (`Some(true)`: pause now, `Some(false)`: resume now).
    pub fn update(&mut self, owner_busy_percent: f32) -> Option<bool> {
        let (argues_for_change, samples_needed) = if self.paused {
            (
                owner_busy_percent < self.threshold_percent - RESUME_MARGIN_PERCENT,
                RESUME_AFTER_QUIET_SAMPLES,
            )
        } else {
            (
                owner_busy_percent > self.threshold_percent,
                PAUSE_AFTER_BUSY_SAMPLES,
            )
        };
        if !argues_for_change {
            self.streak = 0;
            return None;
        }
        self.streak += 1;
        if self.streak < samples_needed {
            return None;
        }
        self.streak = 0;
        self.paused = !self.paused;
        Some(self.paused)
    }
}

#[cfg(test)]
mod tests {
    use idlegrid_sandbox::SandboxConfig;

    use super::*;

    fn sandbox() -> Sandbox {
        Sandbox::new(SandboxConfig::default()).expect("sandbox")
    }

    fn hardware() -> Hardware {
        Hardware {
            cores: 2,
            memory_bytes: 8 << 30,
            cpu_model: "Test CPU 9000".to_owned(),
            gpus: Vec::new(),
        }
    }

    #[test]
    fn detect_finds_cores_and_memory() {
        let hardware = detect();
        assert!(hardware.cores >= 1, "{hardware:?}");
        assert!(hardware.memory_bytes > 0, "{hardware:?}");
        assert!(!hardware.cpu_model.is_empty(), "{hardware:?}");
    }

    #[test]
    fn describe_reads_as_one_line() {
        let mut hardware = Hardware {
            cores: 2,
            memory_bytes: 25_232_932_864,
            cpu_model: "AMD EPYC 7B13".to_owned(),
            gpus: Vec::new(),
        };
        assert_eq!(
            hardware.describe(),
            "2 cores, 23.5 GiB, AMD EPYC 7B13, no GPU"
        );
        hardware.cores = 1;
        hardware.gpus = vec!["NVIDIA H100 80GB HBM3".to_owned()];
        assert_eq!(
            hardware.describe(),
            "1 core, 23.5 GiB, AMD EPYC 7B13, 1 GPU: NVIDIA H100 80GB HBM3"
        );
        hardware.gpus.push("NVIDIA L4".to_owned());
        assert_eq!(
            hardware.describe(),
            "1 core, 23.5 GiB, AMD EPYC 7B13, 2 GPUs: NVIDIA H100 80GB HBM3, NVIDIA L4"
        );
    }

    #[test]
    fn gpus_are_read_from_the_driver_directory() {
        let dir = tempfile::tempdir().expect("tempdir");
        for (bus, model) in [
            ("0000:02:00.0", "NVIDIA L4"),
            ("0000:01:00.0", "NVIDIA H100"),
        ] {
            let gpu = dir.path().join(bus);
            std::fs::create_dir(&gpu).expect("gpu dir");
            std::fs::write(
                gpu.join("information"),
                format!("Model: \t\t {model}\nIRQ:   \t\t 42\nGPU UUID: \t GPU-1\n"),
            )
            .expect("information");
        }
        std::fs::create_dir(dir.path().join("0000:03:00.0")).expect("gpu dir without information");
        assert_eq!(nvidia_gpus(dir.path()), ["NVIDIA H100", "NVIDIA L4"]);
        assert!(nvidia_gpus(&dir.path().join("missing")).is_empty());
    }

    #[test]
    fn benchmark_is_measured_then_cached() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cache_file = dir.path().join("state").join("benchmark.json");
        let sandbox = sandbox();

        let first = benchmark(&sandbox, &cache_file, &hardware()).expect("benchmark");
        assert!(!first.cached);
        assert!(first.fuel_per_second > 0);
        eprintln!("reference benchmark: {} fuel/s", first.fuel_per_second);
        let text = std::fs::read_to_string(&cache_file).expect("cache written");
        assert!(text.contains(&reference_module_cid().to_string()), "{text}");

        let second = benchmark(&sandbox, &cache_file, &hardware()).expect("benchmark");
        assert_eq!(
            second,
            Benchmark {
                fuel_per_second: first.fuel_per_second,
                cached: true
            }
        );
    }

    #[test]
    fn benchmark_cache_for_another_cpu_or_unreadable_is_measured_again() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cache_file = dir.path().join("benchmark.json");
        let sandbox = sandbox();
        let other_cpu = Hardware {
            cpu_model: "Another CPU".to_owned(),
            ..hardware()
        };
        let first = benchmark(&sandbox, &cache_file, &other_cpu).expect("benchmark");
        assert!(!first.cached);

        let remeasured = benchmark(&sandbox, &cache_file, &hardware()).expect("benchmark");
        assert!(!remeasured.cached, "a cache for another CPU was used");
        assert!(
            benchmark(&sandbox, &cache_file, &hardware())
                .expect("benchmark")
                .cached
        );

        std::fs::write(&cache_file, b"{\"fuel_per_second\": 12, garbage").expect("garbage");
        let after_garbage = benchmark(&sandbox, &cache_file, &hardware()).expect("benchmark");
        assert!(!after_garbage.cached, "an unparsable cache was used");
        assert!(
            benchmark(&sandbox, &cache_file, &hardware())
                .expect("benchmark")
                .cached
        );
    }

    #[test]
    fn benchmark_needs_fuel_metering() {
        let dir = tempfile::tempdir().expect("tempdir");
        let sandbox = Sandbox::new(SandboxConfig {
            metering: idlegrid_sandbox::Metering::Off,
            ..SandboxConfig::default()
        })
        .expect("sandbox");
        let result = benchmark(&sandbox, &dir.path().join("benchmark.json"), &hardware());
        assert!(
            matches!(result, Err(BenchmarkError::FuelNotMetered)),
            "{result:?}"
        );
    }

    /// Feeds `loads` to a gate with `threshold` and compares what it returns,
    /// one character per sample: `.` no change, `P` pause, `R` resume.
    fn check(threshold: f32, loads: &[f32], expected: &str) {
        let mut gate = IdleGate::new(threshold);
        let actual: String = loads
            .iter()
            .map(|&load| match gate.update(load) {
                None => '.',
                Some(true) => 'P',
                Some(false) => 'R',
            })
            .collect();
        assert_eq!(actual, expected, "loads {loads:?} at threshold {threshold}");
        let last_change = actual.chars().rev().find(|&change| change != '.');
        assert_eq!(
            gate.paused(),
            last_change == Some('P'),
            "state after {loads:?}"
        );
    }

    #[test]
    fn idle_gate_hysteresis() {
        // Two busy samples in a row pause; a single spike does not.
        check(50.0, &[10.0, 60.0, 70.0], "..P");
        check(50.0, &[60.0, 10.0, 60.0, 10.0], "....");
        // At the threshold is not above it.
        check(50.0, &[50.0, 50.0, 50.0], "...");
        // Resuming takes three samples below threshold − 10.
        check(50.0, &[90.0, 90.0, 30.0, 30.0, 30.0], ".P..R");
        // Between threshold − 10 and the threshold stays paused.
        check(
            50.0,
            &[90.0, 90.0, 45.0, 45.0, 45.0, 40.0, 39.0, 39.0, 39.0],
            ".P......R",
        );
        // A busy sample breaks the quiet streak.
        check(
            50.0,
            &[90.0, 90.0, 10.0, 10.0, 60.0, 10.0, 10.0, 10.0],
            ".P.....R",
        );
        // Quiet samples while running count for nothing later.
        check(
            50.0,
            &[0.0, 0.0, 0.0, 90.0, 90.0, 0.0, 0.0, 0.0],
            "....P..R",
        );
        // Pause again after resuming.
        check(20.0, &[30.0, 30.0, 0.0, 0.0, 0.0, 30.0, 30.0], ".P..R.P");
        // A gate at 100 % never pauses.
        check(100.0, &[100.0, 100.0, 100.0], "...");
    }

    #[test]
    fn host_load_is_a_percentage() {
        let mut load = HostLoad::new();
        for _ in 0..2 {
            std::thread::sleep(sysinfo::MINIMUM_CPU_UPDATE_INTERVAL);
            let percent = load.owner_busy_percent();
            assert!((0.0..=100.0).contains(&percent), "{percent}");
        }
    }
}
