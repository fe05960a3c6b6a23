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
//! - GPU tasks on an NVIDIA GPU: NVML's energy counter for that GPU (found
//!   by its PCI address, else its name; Volta and newer), read before and
//!   after the task. GPU tasks run one at a time, so the rise is the
//!   task's (and whatever else used that GPU meanwhile).
//! - GPU tasks on other hardware GPUs, or where NVML does not load or read:
//!   busy time × [`GPU_MILLIWATTS`].

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use idlegrid_gpu::AdapterInfo;
use nvml_wrapper::Nvml;

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
/// NVIDIA's PCI vendor id.
const NVIDIA_VENDOR: u32 = 0x10de;

/// A GPU's own energy counter.
pub trait GpuCounter: fmt::Debug + fmt::Display + Send + Sync {
    /// Millijoules used since some fixed point; `None` when it does not
    /// read now.
    fn millijoules(&self) -> Option<u64>;
}

/// NVML's energy counter of one NVIDIA GPU.
pub struct NvmlCounter {
    nvml: Nvml,
    index: u32,
    name: String,
}

impl fmt::Debug for NvmlCounter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NvmlCounter")
            .field("index", &self.index)
            .field("name", &self.name)
            .finish()
    }
}

impl fmt::Display for NvmlCounter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "NVML energy counter of GPU {} ({})",
            self.index, self.name
        )
    }
}

impl NvmlCounter {
    /// NVML's device that is `adapter`: the one at its PCI address, else
    /// the one of its name. `None` where NVML does not load (no NVIDIA
    /// driver), has no such device, or cannot read its energy (GPUs
    /// before Volta).
    pub fn open(adapter: &AdapterInfo) -> Option<Self> {
        let nvml = match Nvml::init() {
            Ok(nvml) => nvml,
            Err(error) => {
                tracing::info!(%error, "NVML is not available: GPU energy is modeled");
                return None;
            }
        };
        let wanted = pci_address(&adapter.pci_bus_id);
        let count = nvml.device_count().ok()?;
        let mut by_name = None;
        let mut found = None;
        for index in 0..count {
            let Ok(device) = nvml.device_by_index(index) else {
                continue;
            };
            let name = device.name().unwrap_or_default();
            let address = device
                .pci_info()
                .ok()
                .and_then(|info| pci_address(&info.bus_id));
            if wanted.is_some() && address == wanted {
                found = Some((index, name));
                break;
            }
            if by_name.is_none() && name == adapter.name {
                by_name = Some((index, name));
            }
        }
        let (index, name) = found.or(by_name)?;
        let counter = NvmlCounter { nvml, index, name };
        match counter.millijoules() {
            Some(_) => Some(counter),
            None => {
                tracing::info!(gpu = %counter.name, "NVML reads no energy for this GPU: modeled");
                None
            }
        }
    }
}

impl GpuCounter for NvmlCounter {
    fn millijoules(&self) -> Option<u64> {
        self.nvml
            .device_by_index(self.index)
            .ok()?
            .total_energy_consumption()
            .ok()
    }
}

/// A PCI address (`domain:bus:device.function`, hex, the domain of any
/// width) as numbers, so Vulkan's and NVML's spellings compare.
fn pci_address(text: &str) -> Option<[u32; 4]> {
    let (domain, rest) = text.trim().split_once(':')?;
    let (bus, rest) = rest.split_once(':')?;
    let (device, function) = rest.split_once('.')?;
    let number = |part: &str| u32::from_str_radix(part, 16).ok();
    Some([
        number(domain)?,
        number(bus)?,
        number(device)?,
        number(function)?,
    ])
}

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
#[derive(Debug)]
enum GpuModel {
    /// A software adapter: the CPU's cores, this many.
    Cpu { cores: u64 },
    /// A hardware GPU at [`GPU_MILLIWATTS`].
    Board,
    /// The GPU's own counter.
    Counter(Box<dyn GpuCounter>),
}

/// A GPU task being measured.
#[derive(Debug)]
pub struct GpuMeasure {
    started: Instant,
    /// The GPU's counter at its start, where it has one that read.
    reading: Option<u64>,
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
            } else if info.vendor == NVIDIA_VENDOR
                && let Some(counter) = NvmlCounter::open(info)
            {
                GpuModel::Counter(Box::new(counter))
            } else {
                GpuModel::Board
            }
        });
        Self::with_gpu(rapl_dir, gpu)
    }

    /// A meter for GPU tasks on a GPU whose energy `counter` reads.
    pub fn with_gpu_counter(rapl_dir: &Path, counter: Box<dyn GpuCounter>) -> Self {
        Self::with_gpu(rapl_dir, Some(GpuModel::Counter(counter)))
    }

    fn with_gpu(rapl_dir: &Path, gpu: Option<GpuModel>) -> Self {
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

    /// Starts measuring a GPU task.
    pub fn gpu_start(&self) -> GpuMeasure {
        let reading = match &self.gpu {
            Some(GpuModel::Counter(counter)) => counter.millijoules(),
            _ => None,
        };
        GpuMeasure {
            started: Instant::now(),
            reading,
        }
    }

    /// The GPU task ended: its millijoules, the GPU counter's rise, or
    /// without one (or when it did not read at both ends) the model.
    pub fn gpu_end(&self, measure: GpuMeasure) -> u64 {
        let busy = measure.started.elapsed();
        match &self.gpu {
            Some(GpuModel::Counter(counter)) => match (measure.reading, counter.millijoules()) {
                (Some(before), Some(after)) => after.saturating_sub(before),
                _ => modeled_millijoules(busy, GPU_MILLIWATTS),
            },
            Some(GpuModel::Cpu { cores }) => {
                modeled_millijoules(busy, CPU_MILLIWATTS_PER_CORE.saturating_mul(*cores))
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
        match &self.gpu {
            Some(GpuModel::Cpu { cores }) => {
                write!(f, "; gpu: software adapter, modeled as {cores} busy cores")
            }
            Some(GpuModel::Board) => {
                write!(f, "; gpu: modeled, {} W busy", GPU_MILLIWATTS / 1000)
            }
            Some(GpuModel::Counter(counter)) => write!(f, "; gpu: {counter}"),
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
        // A hardware GPU with no counter to read (not NVIDIA, so NVML is
        // not asked).
        let hardware = AdapterInfo {
            name: "A GPU".to_owned(),
            vendor: 0x1002,
            device: 1,
            driver: String::new(),
            driver_info: String::new(),
            pci_bus_id: "0000:03:00.0".to_owned(),
        };
        let meter = EnergyMeter::new(Path::new("/nonexistent"), Some(&hardware));
        let measure = meter.gpu_start();
        let started = Instant::now();
        let millijoules = meter.gpu_end(measure);
        let most = modeled_millijoules(started.elapsed() + Duration::from_millis(1), 200_000);
        assert!(millijoules <= most, "{millijoules}");
        let lavapipe = AdapterInfo {
            vendor: MESA_SOFTWARE_VENDOR,
            ..hardware
        };
        let meter = EnergyMeter::new(Path::new("/nonexistent"), Some(&lavapipe));
        assert!(meter.to_string().contains("software adapter"));
    }

    /// A GPU counter a test moves by hand; `None` reads fail.
    #[derive(Debug, Default)]
    struct FakeCounter(Mutex<Option<u64>>);

    impl fmt::Display for FakeCounter {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a test counter")
        }
    }

    impl GpuCounter for std::sync::Arc<FakeCounter> {
        fn millijoules(&self) -> Option<u64> {
            *self.0.lock().expect("not poisoned")
        }
    }

    #[test]
    fn a_gpu_task_gets_its_gpu_counter_s_rise_or_the_model_when_it_fails() {
        let counter = std::sync::Arc::new(FakeCounter(Mutex::new(Some(5_000))));
        let meter = EnergyMeter::with_gpu_counter(
            Path::new("/nonexistent"),
            Box::new(std::sync::Arc::clone(&counter)),
        );
        assert!(meter.to_string().ends_with("gpu: a test counter"));
        let measure = meter.gpu_start();
        *counter.0.lock().expect("not poisoned") = Some(12_345);
        assert_eq!(meter.gpu_end(measure), 7_345);
        // A counter that stops reading mid-task: the model, not a guess.
        let measure = meter.gpu_start();
        *counter.0.lock().expect("not poisoned") = None;
        let started = Instant::now();
        let millijoules = meter.gpu_end(measure);
        let most =
            modeled_millijoules(started.elapsed() + Duration::from_millis(1), GPU_MILLIWATTS);
        assert!(millijoules <= most, "{millijoules}");
    }

    #[test]
    fn vulkan_and_nvml_spellings_of_a_pci_address_compare_equal() {
        assert_eq!(pci_address("0000:65:00.0"), Some([0, 0x65, 0, 0]));
        assert_eq!(pci_address("00000000:65:00.0"), pci_address("0000:65:00.0"));
        assert_eq!(pci_address("0001:a1:1f.3"), Some([1, 0xa1, 0x1f, 3]));
        for bad in ["", "65:00.0", "0000:65:00", "zz:65:00.0"] {
            assert_eq!(pci_address(bad), None, "{bad}");
        }
    }

    #[test]
    fn without_nvml_an_nvidia_gpu_is_modeled() {
        // No NVIDIA driver here (or no device at this address): the model,
        // and no failure.
        let nvidia = AdapterInfo {
            name: "NVIDIA H200".to_owned(),
            vendor: NVIDIA_VENDOR,
            device: 0x2335,
            driver: String::new(),
            driver_info: String::new(),
            pci_bus_id: "0000:ff:1f.7".to_owned(),
        };
        let meter = EnergyMeter::new(Path::new("/nonexistent"), Some(&nvidia));
        if NvmlCounter::open(&nvidia).is_none() {
            assert!(meter.to_string().contains("gpu: modeled, 200 W"), "{meter}");
        }
    }
}
