//! An advisory energy figure per task, for its receipt: measured where the
//! machine lets us read a counter, modeled from busy time where it does not.
//! Honest replicas differ in it, so it is never compared, verified or paid
//! for; it tells a requestor roughly what its job cost in energy.
//!
//! Sources, in order of preference:
//! - CPU tasks: the powercap RAPL package counter
//!   (`/sys/class/powercap/intel-rapl:0/energy_uj`, read before and after
//!   the task, its wrap-around taken from `max_energy_range_uj`), its rise
//!   split evenly among the tasks running at the same time (see `Shares`). Recent kernels let only root
//!   read it, so most providers use the model.
//! - Else the CPU model: busy time × [`CPU_MILLIWATTS_PER_CORE`].
//! - GPU tasks on Mesa's software adapters (lavapipe): the CPU model for all
//!   the machine's cores, since the CPU runs the dispatch on every core.
//! - GPU tasks on a hardware GPU: busy time × [`GPU_MILLIWATTS`]. Reading
//!   NVIDIA's NVML energy counter is not done yet: it needs a binding to
//!   `libnvidia-ml.so.1` this crate does not carry.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use idlegrid_gpu::AdapterInfo;

/// Where the package counter of the first CPU socket lives.
pub const RAPL_PACKAGE_DIR: &str = "/sys/class/powercap/intel-rapl:0";

/// Power the model gives one busy core: a server package's TDP divided by
/// its cores is 5 to 15 W on current parts (for example 280 W over 28
/// cores), so 10 W.
pub const CPU_MILLIWATTS_PER_CORE: u64 = 10_000;

/// Power the model gives a busy hardware GPU: a mid-range discrete card's
/// board power under compute load. A placeholder of the right order of
/// magnitude; data-centre cards draw two to three times as much.
pub const GPU_MILLIWATTS: u64 = 200_000;

/// PCI vendor id wgpu reports for Mesa's software drivers (lavapipe).
const MESA_SOFTWARE_VENDOR: u32 = 0x10005;

/// The RAPL package counter, when it is readable.
#[derive(Debug, Clone)]
pub struct Rapl {
    energy_file: PathBuf,
    /// The counter counts up to this many microjoules, then starts at 0.
    range_microjoules: u64,
}

impl Rapl {
    /// The counter under `dir` (a powercap zone), if both its files read.
    pub fn open(dir: &Path) -> Option<Rapl> {
        let range_microjoules = read_number(&dir.join("max_energy_range_uj"))?;
        let rapl = Rapl {
            energy_file: dir.join("energy_uj"),
            range_microjoules,
        };
        rapl.read().map(|_| rapl)
    }

    /// The counter now, in microjoules.
    pub fn read(&self) -> Option<u64> {
        read_number(&self.energy_file)
    }

    /// Microjoules from reading `before` to reading `after`, once around
    /// at most.
    pub fn delta(&self, before: u64, after: u64) -> u64 {
        if after >= before {
            after - before
        } else {
            self.range_microjoules.saturating_sub(before) + after
        }
    }
}

fn read_number(path: &Path) -> Option<u64> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// Millijoules a load of `milliwatts` draws in `busy`.
pub fn modeled_millijoules(busy: Duration, milliwatts: u64) -> u64 {
    let millijoules = busy.as_micros() * u128::from(milliwatts) / 1_000_000;
    u64::try_from(millijoules).unwrap_or(u64::MAX)
}

/// How a GPU task's energy is figured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum GpuModel {
    /// A software adapter: the CPU's cores, this many.
    Cpu { cores: u64 },
    /// A hardware GPU at [`GPU_MILLIWATTS`].
    Board,
}

/// Figures each task's energy; shared by the provider's workers.
#[derive(Debug)]
pub struct EnergyMeter {
    rapl: Option<Rapl>,
    shares: Mutex<Shares>,
    gpu: Option<GpuModel>,
}

/// The RAPL counter's rise split among the CPU tasks running: at each
/// task's start and end the rise since the last reading is shared evenly by
/// the tasks that ran through it, so a task's energy is what a running
/// task's share grew by while it ran, and the tasks' figures add up to the
/// counter's rise while any ran.
#[derive(Debug, Default)]
struct Shares {
    last_reading: u64,
    running: u64,
    /// What one task running all along would have been given.
    per_task_microjoules: u64,
}

/// A CPU task being measured.
#[derive(Debug)]
pub struct CpuMeasure {
    started: Instant,
    /// `per_task_microjoules` at its start; none without the counter.
    share_at_start: Option<u64>,
}

impl EnergyMeter {
    /// A meter reading the RAPL counter under `rapl_dir` when it can, for
    /// GPU tasks on `gpu` if one is offered.
    pub fn new(rapl_dir: &Path, gpu: Option<&AdapterInfo>) -> Self {
        let gpu = gpu.map(|info| {
            if info.vendor == MESA_SOFTWARE_VENDOR {
                let cores = std::thread::available_parallelism().map_or(1, |cores| cores.get());
                GpuModel::Cpu {
                    cores: u64::try_from(cores).unwrap_or(1),
                }
            } else {
                GpuModel::Board
            }
        });
        let rapl = Rapl::open(rapl_dir);
        let shares = Shares {
            last_reading: rapl.as_ref().and_then(Rapl::read).unwrap_or(0),
            ..Shares::default()
        };
        Self {
            rapl,
            shares: Mutex::new(shares),
            gpu,
        }
    }

    /// Shares out the counter's rise since the last reading; `None` when
    /// it does not read.
    fn advance(&self, shares: &mut Shares) -> Option<()> {
        let rapl = self.rapl.as_ref()?;
        let reading = rapl.read()?;
        let rise = rapl.delta(shares.last_reading, reading);
        // Nothing running: the rise is nobody's.
        if let Some(share) = rise.checked_div(shares.running) {
            shares.per_task_microjoules = shares.per_task_microjoules.saturating_add(share);
        }
        shares.last_reading = reading;
        Some(())
    }

    /// Starts measuring a CPU task.
    pub fn cpu_start(&self) -> CpuMeasure {
        let mut shares = self.shares.lock().unwrap_or_else(PoisonError::into_inner);
        let read = self.advance(&mut shares);
        shares.running += 1;
        CpuMeasure {
            started: Instant::now(),
            share_at_start: read.map(|()| shares.per_task_microjoules),
        }
    }

    /// The CPU task ended: its millijoules, its share of the RAPL counter's
    /// rise, or without the counter the model.
    pub fn cpu_end(&self, measure: CpuMeasure) -> u64 {
        let busy = measure.started.elapsed();
        let mut shares = self.shares.lock().unwrap_or_else(PoisonError::into_inner);
        let read = self.advance(&mut shares);
        shares.running = shares.running.saturating_sub(1);
        match (read, measure.share_at_start) {
            (Some(()), Some(start)) => shares.per_task_microjoules.saturating_sub(start) / 1000,
            _ => modeled_millijoules(busy, CPU_MILLIWATTS_PER_CORE),
        }
    }

    /// A GPU task that kept the GPU busy for `busy`: its millijoules.
    pub fn gpu_task(&self, busy: Duration) -> u64 {
        match self.gpu {
            Some(GpuModel::Cpu { cores }) => {
                modeled_millijoules(busy, CPU_MILLIWATTS_PER_CORE.saturating_mul(cores))
            }
            Some(GpuModel::Board) | None => modeled_millijoules(busy, GPU_MILLIWATTS),
        }
    }
}

/// The provider's start line: which source each kind of task uses.
impl fmt::Display for EnergyMeter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.rapl {
            Some(rapl) => write!(f, "cpu: RAPL ({})", rapl.energy_file.display())?,
            None => write!(
                f,
                "cpu: modeled, {} W a busy core",
                CPU_MILLIWATTS_PER_CORE / 1000
            )?,
        }
        match self.gpu {
            Some(GpuModel::Cpu { cores }) => {
                write!(f, "; gpu: software adapter, modeled as {cores} busy cores")
            }
            Some(GpuModel::Board) => {
                write!(f, "; gpu: modeled, {} W busy", GPU_MILLIWATTS / 1000)
            }
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A powercap zone in a temporary directory.
    fn zone(energy_uj: Option<&str>, range_uj: Option<&str>) -> tempfile::TempDir {
        let dir = tempfile::tempdir().expect("a temporary directory");
        if let Some(energy) = energy_uj {
            std::fs::write(dir.path().join("energy_uj"), energy).expect("writes");
        }
        if let Some(range) = range_uj {
            std::fs::write(dir.path().join("max_energy_range_uj"), range).expect("writes");
        }
        dir
    }

    #[test]
    fn the_rapl_counter_reads_and_wraps_around() {
        let dir = zone(Some("1000\n"), Some("262143328850\n"));
        let rapl = Rapl::open(dir.path()).expect("readable");
        assert_eq!(rapl.read(), Some(1000));
        assert_eq!(rapl.delta(1000, 4000), 3000);
        // Past its range the counter starts again from 0.
        assert_eq!(rapl.delta(262_143_328_000, 150), 850 + 150);
    }

    #[test]
    fn a_task_gets_the_counters_rise_split_among_the_tasks_beside_it() {
        let dir = zone(Some("5000000"), Some("262143328850"));
        let meter = EnergyMeter::new(dir.path(), None);
        let first = meter.cpu_start();
        let second = meter.cpu_start();
        // 8 J while both ran: half each.
        std::fs::write(dir.path().join("energy_uj"), "13000000").expect("writes");
        assert_eq!(meter.cpu_end(second), 4_000);
        // 3 J more while the first ran alone: all its own.
        std::fs::write(dir.path().join("energy_uj"), "16000000").expect("writes");
        assert_eq!(meter.cpu_end(first), 7_000);
        // Nothing ran while the counter rose 1 J; the next task starts after.
        std::fs::write(dir.path().join("energy_uj"), "17000000").expect("writes");
        let third = meter.cpu_start();
        std::fs::write(dir.path().join("energy_uj"), "17500000").expect("writes");
        assert_eq!(meter.cpu_end(third), 500);
    }

    #[test]
    fn an_unreadable_counter_falls_back_to_the_model() {
        for (energy, range) in [
            (None, Some("100")),
            (Some("100"), None),
            (Some("not a number"), Some("100")),
        ] {
            let dir = zone(energy, range);
            assert!(Rapl::open(dir.path()).is_none());
            let meter = EnergyMeter::new(dir.path(), None);
            assert!(meter.to_string().starts_with("cpu: modeled, 10 W"));
        }
        // A counter that goes away after the start: the model.
        let dir = zone(Some("100"), Some("1000"));
        let meter = EnergyMeter::new(dir.path(), None);
        let measure = meter.cpu_start();
        std::fs::remove_file(dir.path().join("energy_uj")).expect("removes");
        let started = Instant::now();
        let millijoules = meter.cpu_end(measure);
        let most = modeled_millijoules(started.elapsed() + Duration::from_secs(1), 10_000);
        assert!(millijoules <= most);
    }

    #[test]
    fn the_model_is_busy_time_times_power() {
        assert_eq!(modeled_millijoules(Duration::from_secs(2), 10_000), 20_000);
        assert_eq!(modeled_millijoules(Duration::from_millis(3), 200_000), 600);
        assert_eq!(modeled_millijoules(Duration::from_micros(50), 10_000), 0);
        let hardware = AdapterInfo {
            name: "A GPU".to_owned(),
            vendor: 0x10de,
            device: 1,
            driver: String::new(),
            driver_info: String::new(),
        };
        let meter = EnergyMeter::new(Path::new("/nonexistent"), Some(&hardware));
        assert_eq!(meter.gpu_task(Duration::from_millis(10)), 2_000);
        let lavapipe = AdapterInfo {
            vendor: MESA_SOFTWARE_VENDOR,
            ..hardware
        };
        let meter = EnergyMeter::new(Path::new("/nonexistent"), Some(&lavapipe));
        let cores = std::thread::available_parallelism().map_or(1, |cores| cores.get());
        assert_eq!(
            meter.gpu_task(Duration::from_millis(10)),
            100 * u64::try_from(cores).expect("fits")
        );
        assert!(meter.to_string().contains("software adapter"));
    }
}
