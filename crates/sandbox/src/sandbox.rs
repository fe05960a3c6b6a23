//! The engine, the compiled-module caches and the run of one task.

use std::collections::{HashMap, HashSet, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use idlegrid_types::ContentId;
use wasmtime::{
    Config, Engine, ExternType, InstanceAllocationStrategy, InstancePre, Linker, Module, OptLevel,
    PoolingAllocationConfig, Store, Trap,
};
use wasmtime_wasi::p2::pipe::MemoryInputPipe;
use wasmtime_wasi::{FsPerms, I32Exit, WasiCtxBuilder};

use crate::cache::DiskCache;
use crate::error::{ErrorKind, SetupError, TaskError};
use crate::host::{
    CapturedPipe, FixedMonotonicClock, FixedWallClock, LimitHits, Overflow, SeededRandom, TaskState,
};
use crate::limits::{
    EPOCH_TICK, MEMORY_BYTES_CEILING_DEFAULT, MODULE_BYTES_MAX_DEFAULT, PREPARED_MODULES_MAX,
    TABLE_ELEMENTS_MAX, TaskLimits, WASM_STACK_BYTES_DEFAULT,
};
use crate::output::{TaskOutput, collect_files};
use crate::overrides;

/// The WASI module every task imports from.
const WASI_MODULE: &str = "wasi_snapshot_preview1";
/// `argv[0]` of every task: fixed, so the module name cannot change output.
pub const PROGRAM_NAME: &str = "task";
/// Where the input directory appears inside the task.
pub const INPUT_DIR_GUEST: &str = "/input";
/// Where the output directory appears inside the task.
pub const OUTPUT_DIR_GUEST: &str = "/output";
const WASM_PAGE_BYTES: u64 = 64 << 10;

/// How a sandbox is set up; the defaults suit a provider with a few cores.
#[derive(Debug, Clone)]
pub struct SandboxConfig {
    /// Where compiled modules are cached between processes; `None` keeps
    /// them in memory only.
    pub cache_dir: Option<PathBuf>,
    pub module_bytes_max: usize,
    /// The most memory any task may be given (each concurrent task slot
    /// reserves this much address space, not resident memory).
    pub memory_bytes_ceiling: u64,
    pub wasm_stack_bytes: usize,
    /// Tasks that may run at the same time.
    pub concurrent_tasks_max: u32,
    /// How fuel and the wall-clock backstop are metered. A provider uses
    /// [`Metering::InModule`]: fuel is both the bill and a limit.
    pub metering: Metering,
    /// Where NaNs are made canonical. A provider uses [`Nans::Observed`]:
    /// without canonical NaNs their bit patterns differ between CPU
    /// families and replicas disagree. The others are there to measure
    /// what each costs.
    pub nans: Nans,
}

/// How the sandbox meters fuel and enforces the wall clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Metering {
    /// Both written into the module when it is prepared, checks ending in a
    /// trap (`crate::meter`): the same fuel as wasmtime's metering for a
    /// run that finishes, at a fraction of the cost for float loops.
    #[default]
    InModule,
    /// wasmtime's own fuel and epoch interruption (the profile before).
    /// For measurements.
    Wasmtime,
    /// Neither: no fuel (`fuel_used` is 0) and no wall-clock limit. For
    /// measuring what metering costs only.
    Off,
}

impl Metering {
    pub fn counts_fuel(self) -> bool {
        self != Self::Off
    }
}

/// Where the sandbox makes NaNs canonical.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Nans {
    /// Where a task can observe their bits (stores, reinterpretation,
    /// `copysign`'s sign, vectors), by rewriting the module once when it is
    /// prepared (`crate::nan`). Deterministic, and far cheaper for float
    /// code.
    #[default]
    Observed,
    /// After every float operation (wasmtime's canonicalization).
    EveryOperation,
    /// Nowhere: NaN bits depend on the CPU. For measurements only.
    Off,
}

impl Default for SandboxConfig {
    fn default() -> Self {
        Self {
            cache_dir: None,
            module_bytes_max: MODULE_BYTES_MAX_DEFAULT,
            memory_bytes_ceiling: MEMORY_BYTES_CEILING_DEFAULT,
            wasm_stack_bytes: WASM_STACK_BYTES_DEFAULT,
            concurrent_tasks_max: 16,
            metering: Metering::InModule,
            nans: Nans::Observed,
        }
    }
}

/// Where a prepared module's machine code came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModuleOrigin {
    /// Compiled now.
    Compiled,
    /// Loaded from the on-disk cache.
    DiskCache,
    /// Already prepared in this process.
    Memory,
}

/// A module compiled, checked and linked, ready to instantiate many times.
pub struct PreparedModule {
    cid: ContentId,
    pre: InstancePre<TaskState>,
    initial_memory_bytes: u64,
}

impl std::fmt::Debug for PreparedModule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PreparedModule")
            .field("cid", &self.cid)
            .field("initial_memory_bytes", &self.initial_memory_bytes)
            .finish_non_exhaustive()
    }
}

impl PreparedModule {
    pub fn content_id(&self) -> ContentId {
        self.cid
    }
}

/// One task: what the module sees and what it may use.
#[derive(Debug, Clone, Default)]
pub struct TaskSpec {
    /// Arguments after `argv[0]` (which is always [`PROGRAM_NAME`]).
    pub args: Vec<String>,
    pub stdin: Vec<u8>,
    /// Host directory shown read-only at [`INPUT_DIR_GUEST`].
    pub input_dir: Option<PathBuf>,
    /// Empty host directory shown writable at [`OUTPUT_DIR_GUEST`]; its
    /// files become part of the output.
    pub output_dir: Option<PathBuf>,
    /// Seeds `random_get`.
    pub seed: [u8; 32],
    pub limits: TaskLimits,
}

/// A 32-byte task seed from a number, for people typing `--seed 7`.
pub fn seed_from_u64(seed: u64) -> [u8; 32] {
    let mut bytes = [0u8; 32];
    bytes[..8].copy_from_slice(&seed.to_le_bytes());
    bytes
}

/// A task that ran to its end (returned from `_start` or called `proc_exit`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Completion {
    pub exit_code: i32,
    pub output: TaskOutput,
    pub output_cid: ContentId,
}

/// Everything known about one run of a task.
#[derive(Debug, Clone)]
pub struct TaskReport {
    pub result: Result<Completion, TaskError>,
    pub fuel_used: u64,
    pub stderr: Vec<u8>,
    pub stderr_truncated: bool,
    /// Instantiation plus execution, excluding compilation.
    pub duration: Duration,
}

/// The host could not run the task; this says nothing about the module.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("failed to open input directory {path}: {message}")]
    InputDir { path: PathBuf, message: String },
    #[error("failed to use output directory {path}: {message}")]
    OutputDir { path: PathBuf, message: String },
    #[error("failed to set up the task: {0}")]
    Host(String),
}

struct PreparedCache {
    modules: HashMap<ContentId, Arc<PreparedModule>>,
    order: VecDeque<ContentId>,
}

/// Runs WASI modules deterministically. Cheap to share between threads.
pub struct Sandbox {
    engine: Engine,
    linker: Linker<TaskState>,
    provided_imports: HashSet<(String, String)>,
    prepared: Mutex<PreparedCache>,
    disk_cache: Option<DiskCache>,
    config: SandboxConfig,
    /// The engine with the features a task's own module may use: the
    /// rewritten module uses a second memory, the task may not.
    validator: Engine,
    interrupts: Option<crate::meter::Interrupts>,
    _epoch_ticker: Option<EpochTicker>,
}

impl std::fmt::Debug for Sandbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sandbox")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Sandbox {
    pub fn new(config: SandboxConfig) -> Result<Self, SetupError> {
        let engine = Engine::new(&engine_config(&config)).map_err(setup_error)?;
        let validator = Engine::new(&task_features()).map_err(setup_error)?;

        let mut wasi = Linker::new(&engine);
        wasmtime_wasi::p1::add_to_linker_sync(&mut wasi, |state: &mut TaskState| &mut state.wasi)
            .map_err(setup_error)?;
        let mut linker = wasi;
        overrides::add_to_linker(&mut linker).map_err(setup_error)?;

        let provided_imports = {
            let mut store = Store::new(&engine, blank_state());
            linker
                .iter(&mut store)
                .map(|(module, name, _)| (module.to_owned(), name.to_owned()))
                .collect()
        };
        let disk_cache = match &config.cache_dir {
            Some(dir) => Some(DiskCache::open(
                dir,
                &engine,
                &format!("{:?}/{:?}", config.metering, config.nans),
            )?),
            None => None,
        };
        let metering = config.metering;
        Ok(Self {
            _epoch_ticker: (metering == Metering::Wasmtime)
                .then(|| EpochTicker::start(engine.clone())),
            interrupts: (metering == Metering::InModule).then(crate::meter::Interrupts::start),
            validator,
            engine,
            linker,
            provided_imports,
            prepared: Mutex::new(PreparedCache {
                modules: HashMap::new(),
                order: VecDeque::new(),
            }),
            disk_cache,
            config,
        })
    }

    pub fn config(&self) -> &SandboxConfig {
        &self.config
    }

    /// Compiles (or finds already compiled) and checks a module.
    pub fn prepare(&self, bytes: &[u8]) -> Result<(Arc<PreparedModule>, ModuleOrigin), TaskError> {
        if bytes.len() > self.config.module_bytes_max {
            return Err(invalid_module(format!(
                "the module is {} bytes, above the limit of {} bytes",
                bytes.len(),
                self.config.module_bytes_max
            )));
        }
        let cid = ContentId::of(bytes);
        if let Some(prepared) = self.lock_prepared().modules.get(&cid) {
            return Ok((Arc::clone(prepared), ModuleOrigin::Memory));
        }

        // Checked before compiling: a module whose memory cannot fit this
        // sandbox is a memory-limit failure, not a compile error.
        let initial_memory = initial_memory_bytes(bytes);
        if initial_memory > self.config.memory_bytes_ceiling {
            return Err(TaskError::new(
                ErrorKind::MemoryLimit,
                format!(
                    "the module starts with {} MiB of memory; this sandbox allows at most {} MiB",
                    initial_memory >> 20,
                    self.config.memory_bytes_ceiling >> 20
                ),
            ));
        }
        let cached = self
            .disk_cache
            .as_ref()
            .and_then(|cache| cache.load(&self.engine, &cid));
        let (module, origin) = match cached {
            Some(module) => (module, ModuleOrigin::DiskCache),
            None => {
                let compile_error =
                    |error: wasmtime::Error| invalid_module(describe_compile_error(&error));
                Module::validate(&self.validator, bytes).map_err(compile_error)?;
                let nans =
                    (self.config.nans == Nans::Observed).then_some(crate::nan::Rewrite::Observed);
                let meter = self.config.metering == Metering::InModule;
                let rewritten;
                let source = if nans.is_some() || meter {
                    rewritten = crate::nan::prepare(bytes, nans, meter).map_err(invalid_module)?;
                    &rewritten[..]
                } else {
                    bytes
                };
                let module = Module::new(&self.engine, source).map_err(compile_error)?;
                (module, ModuleOrigin::Compiled)
            }
        };
        let prepared = Arc::new(self.link(cid, initial_memory, &module)?);
        if origin == ModuleOrigin::Compiled
            && let Some(cache) = &self.disk_cache
        {
            cache.store(&cid, &module);
        }

        let mut cache = self.lock_prepared();
        if cache.order.len() >= PREPARED_MODULES_MAX
            && let Some(oldest) = cache.order.pop_front()
        {
            cache.modules.remove(&oldest);
        }
        cache.order.push_back(cid);
        cache.modules.insert(cid, Arc::clone(&prepared));
        Ok((prepared, origin))
    }

    fn lock_prepared(&self) -> std::sync::MutexGuard<'_, PreparedCache> {
        self.prepared.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn link(
        &self,
        cid: ContentId,
        initial_memory_bytes: u64,
        module: &Module,
    ) -> Result<PreparedModule, TaskError> {
        for import in module.imports() {
            let key = (import.module().to_owned(), import.name().to_owned());
            if !self.provided_imports.contains(&key) {
                let hint = if import.module() == WASI_MODULE {
                    "it is not part of WASI preview 1 as the sandbox provides it"
                } else {
                    "the sandbox provides only WASI preview 1 (`wasi_snapshot_preview1`)"
                };
                return Err(invalid_module(format!(
                    "the module imports `{}.{}`, which the sandbox does not provide: {hint}",
                    import.module(),
                    import.name()
                )));
            }
        }
        match module.get_export("_start") {
            Some(ExternType::Func(func))
                if func.params().len() == 0 && func.results().len() == 0 => {}
            Some(_) => {
                return Err(invalid_module(
                    "the module's `_start` export is not a function without parameters or results",
                ));
            }
            None => {
                return Err(invalid_module(
                    "the module has no `_start` function; build it as a WASI command, \
                     e.g. `clang --target=wasm32-wasi` with a `main`",
                ));
            }
        }
        let pre = self
            .linker
            .instantiate_pre(module)
            .map_err(|error| invalid_module(format!("{error}")))?;
        Ok(PreparedModule {
            cid,
            pre,
            initial_memory_bytes,
        })
    }

    /// Prepares `bytes` and runs one task on it. A module the sandbox refuses
    /// is a task failure of kind `invalid_module`, not a host error.
    pub fn run_module(&self, bytes: &[u8], task: &TaskSpec) -> Result<TaskReport, RunError> {
        match self.prepare(bytes) {
            Ok((module, _)) => self.run(&module, task),
            Err(error) => Ok(TaskReport {
                result: Err(error),
                fuel_used: 0,
                stderr: Vec::new(),
                stderr_truncated: false,
                duration: Duration::ZERO,
            }),
        }
    }

    /// Runs one task on a prepared module.
    ///
    /// Called from inside an async runtime (a validator settling a dispute
    /// on its consensus thread), the task runs on a thread of its own:
    /// wasmtime-wasi drives its I/O with its own runtime, which cannot start
    /// inside another.
    pub fn run(&self, module: &PreparedModule, task: &TaskSpec) -> Result<TaskReport, RunError> {
        if tokio::runtime::Handle::try_current().is_ok() {
            return std::thread::scope(|scope| {
                scope
                    .spawn(|| self.run_here(module, task))
                    .join()
                    .map_err(|_| RunError::Host("the task's thread panicked".to_owned()))?
            });
        }
        self.run_here(module, task)
    }

    fn run_here(&self, module: &PreparedModule, task: &TaskSpec) -> Result<TaskReport, RunError> {
        let started = Instant::now();
        let limits = task.limits;
        if limits.memory_bytes > self.config.memory_bytes_ceiling {
            return Err(RunError::Host(format!(
                "the task asks for {} MiB of memory; this sandbox allows at most {} MiB",
                limits.memory_bytes >> 20,
                self.config.memory_bytes_ceiling >> 20
            )));
        }
        if module.initial_memory_bytes > limits.memory_bytes {
            return Ok(TaskReport {
                result: Err(TaskError::new(
                    ErrorKind::MemoryLimit,
                    format!(
                        "the module starts with {} MiB of memory; the limit is {} MiB",
                        module.initial_memory_bytes >> 20,
                        limits.memory_bytes >> 20
                    ),
                )),
                fuel_used: 0,
                stderr: Vec::new(),
                stderr_truncated: false,
                duration: started.elapsed(),
            });
        }
        if let Some(dir) = &task.output_dir {
            check_output_dir(dir)?;
        }

        let hits = Arc::new(Mutex::new(LimitHits::default()));
        let stdout = CapturedPipe::new(limits.output_bytes, Overflow::Trap, Arc::clone(&hits));
        let stderr = CapturedPipe::new(limits.stderr_bytes, Overflow::Truncate, Arc::clone(&hits));
        let wasi = build_wasi(task, &stdout, &stderr)?;
        let state = TaskState::new(wasi, limits.memory_bytes, limits.output_bytes, &hits);
        let mut store = Store::new(&self.engine, state);
        store.limiter(|state| &mut state.limiter);
        let (outcome, fuel_used, stopped) = match self.config.metering {
            Metering::InModule => self.run_metered(module, &mut store, limits),
            Metering::Wasmtime => {
                store
                    .set_fuel(limits.fuel)
                    .map_err(|error| RunError::Host(error.to_string()))?;
                let ticks = limits.wall_time.as_millis() / EPOCH_TICK.as_millis() + 1;
                store.set_epoch_deadline(u64::try_from(ticks).unwrap_or(u64::MAX));
                store.epoch_deadline_trap();
                let outcome = call_start(module, &mut store);
                let fuel_used = limits.fuel - store.get_fuel().unwrap_or(limits.fuel);
                (outcome, fuel_used, None)
            }
            Metering::Off => (call_start(module, &mut store), 0, None),
        };
        drop(store);

        let hits = std::mem::take(&mut *hits.lock().unwrap_or_else(|p| p.into_inner()));
        let result = match outcome {
            Ok(()) => Ok(0),
            Err(error) => classify(&error, hits, stopped),
        }
        .and_then(|exit_code| {
            let files = match &task.output_dir {
                Some(dir) => Some(collect_files(dir, limits.output_bytes)?),
                None => None,
            };
            let output = TaskOutput {
                stdout: stdout.take(),
                files,
            };
            if output.total_bytes() > limits.output_bytes {
                return Err(TaskError::new(
                    ErrorKind::OutputLimit,
                    format!(
                        "the task's output totals {} bytes, above the limit of {}",
                        output.total_bytes(),
                        limits.output_bytes
                    ),
                ));
            }
            Ok(Completion {
                exit_code,
                output_cid: output.content_id(),
                output,
            })
        });
        Ok(TaskReport {
            result,
            fuel_used,
            stderr_truncated: stderr.was_truncated(),
            stderr: stderr.take(),
            duration: started.elapsed(),
        })
    }

    /// Runs a module metered by `crate::meter`: sets its fuel, watches its
    /// deadline, calls its start function and `_start`. Returns the
    /// outcome, the fuel used, and what a trap at a metering check meant.
    fn run_metered(
        &self,
        module: &PreparedModule,
        store: &mut Store<TaskState>,
        limits: TaskLimits,
    ) -> (wasmtime::Result<()>, u64, Option<ErrorKind>) {
        let budget = i64::try_from(limits.fuel).unwrap_or(i64::MAX);
        let instance = match module.pre.instantiate(&mut *store) {
            Ok(instance) => instance,
            Err(error) => return (Err(error), 0, None),
        };
        let (Some(fuel), Some(stopped), Some(floor), Some(interrupts)) = (
            instance.get_global(&mut *store, crate::meter::FUEL_EXPORT),
            instance.get_global(&mut *store, crate::meter::STOPPED_EXPORT),
            instance.get_memory(&mut *store, crate::meter::INTERRUPT_EXPORT),
            &self.interrupts,
        ) else {
            let error = wasmtime::format_err!("the prepared module is not metered");
            return (Err(error), 0, None);
        };
        if let Err(error) = fuel.set(&mut *store, wasmtime::Val::I64(budget)) {
            return (Err(error), 0, None);
        }
        #[expect(
            unsafe_code,
            reason = "the ticker thread writes the task's floor while `watching` lives"
        )]
        // SAFETY: the interrupt memory is the instance's own one-page memory,
        // which lives as long as `store`; `watching` is dropped at the end of
        // this function, before the store.
        let watching = unsafe {
            interrupts.watch(
                floor.data_ptr(&*store),
                Instant::now().checked_add(limits.wall_time),
            )
        };
        let start = instance.get_typed_func::<(), ()>(&mut *store, crate::meter::START_EXPORT);
        let outcome = match start {
            Ok(start) => start.call(&mut *store, ()),
            Err(_) => Ok(()),
        }
        .and_then(|()| {
            let main = instance.get_typed_func::<(), ()>(&mut *store, "_start")?;
            main.call(&mut *store, ())
        });
        let left = match fuel.get(&mut *store) {
            wasmtime::Val::I64(left) => left,
            _ => budget,
        };
        let fuel_used = limits
            .fuel
            .saturating_sub(u64::try_from(left.max(0)).unwrap_or(0));
        let at_check = outcome.is_err() && stopped.get(&mut *store).i32() == Some(1);
        let stopped = match (at_check, watching.fired()) {
            (false, _) => None,
            (true, true) => Some(ErrorKind::WallTimeout),
            (true, false) => Some(ErrorKind::OutOfFuel),
        };
        drop(watching);
        (outcome, fuel_used, stopped)
    }

    /// Instantiates a prepared module into a fresh store without running it:
    /// the per-task fixed cost, for the benchmark.
    pub fn instantiate_only(&self, module: &PreparedModule) -> Result<Duration, RunError> {
        let hits = Arc::new(Mutex::new(LimitHits::default()));
        let task = TaskSpec::default();
        let stdout = CapturedPipe::new(1, Overflow::Trap, Arc::clone(&hits));
        let stderr = CapturedPipe::new(1, Overflow::Truncate, Arc::clone(&hits));
        let wasi = build_wasi(&task, &stdout, &stderr)?;
        let state = TaskState::new(wasi, task.limits.memory_bytes, 0, &hits);
        let mut store = Store::new(&self.engine, state);
        store.limiter(|state| &mut state.limiter);
        let started = Instant::now();
        module
            .pre
            .instantiate(&mut store)
            .map_err(|error| RunError::Host(error.to_string()))?;
        Ok(started.elapsed())
    }
}

/// Bytes of a slot's memory, and of its tables, kept resident between tasks.
const KEEP_RESIDENT_BYTES: usize = 1 << 20;

fn engine_config(config: &SandboxConfig) -> Config {
    let mut pool = PoolingAllocationConfig::default();
    let slots = config.concurrent_tasks_max.max(1);
    pool.total_core_instances(slots)
        .total_memories(slots * 2)
        .total_tables(slots * 4)
        .max_memories_per_module(2)
        .max_tables_per_module(4)
        .table_elements(TABLE_ELEMENTS_MAX)
        .max_memory_size(usize::try_from(config.memory_bytes_ceiling).unwrap_or(usize::MAX))
        // A finished task's memory is zeroed with memset up to this much,
        // rather than returned to the kernel with madvise: each madvise
        // flushes every core's TLB, which for short tasks cost more than
        // the task (most of a provider's time in the e2e benchmark). Past
        // it, and with the kernel's page-map scan where it has one (Linux
        // 6.7), only pages the task touched are reset.
        .linear_memory_keep_resident(KEEP_RESIDENT_BYTES)
        .table_keep_resident(KEEP_RESIDENT_BYTES)
        .pagemap_scan(wasmtime::Enabled::Auto);

    let mut engine = task_features();
    engine
        // Determinism: one NaN bit pattern.
        .cranelift_nan_canonicalization(config.nans == Nans::EveryOperation)
        .relaxed_simd_deterministic(true)
        // The metered module's interrupt memory is its second; a task's
        // own module is validated without (`task_features` alone).
        .wasm_multi_memory(config.metering == Metering::InModule)
        // Billing and the limits.
        .consume_fuel(config.metering == Metering::Wasmtime)
        .epoch_interruption(config.metering == Metering::Wasmtime)
        .max_wasm_stack(config.wasm_stack_bytes)
        .cranelift_opt_level(OptLevel::Speed)
        .allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    engine
}

/// The features a task's own module may use: no relaxed SIMD, 32-bit
/// memory, one memory, standard pages, no components. Threads (and so
/// shared memory) are off because wasmtime's `threads` feature is not
/// compiled in; a test checks that shared memory is refused.
fn task_features() -> Config {
    let mut config = Config::new();
    config
        .wasm_relaxed_simd(false)
        .wasm_memory64(false)
        .wasm_multi_memory(false)
        .wasm_custom_page_sizes(false)
        .wasm_component_model(false);
    config
}

fn build_wasi(
    task: &TaskSpec,
    stdout: &CapturedPipe,
    stderr: &CapturedPipe,
) -> Result<wasmtime_wasi::p1::WasiP1Ctx, RunError> {
    let mut builder = WasiCtxBuilder::new();
    builder
        .arg(PROGRAM_NAME)
        .args(&task.args)
        .stdin(MemoryInputPipe::new(task.stdin.clone()))
        .stdout(stdout.clone())
        .stderr(stderr.clone())
        .wall_clock(FixedWallClock)
        .monotonic_clock(FixedMonotonicClock)
        .secure_random(SeededRandom::new(&task.seed))
        .insecure_random(SeededRandom::new(&blake3::hash(&task.seed).into()))
        .insecure_random_seed(u128::from_le_bytes(
            task.seed[..16].try_into().expect("16 bytes"),
        ))
        .allow_blocking_current_thread(true)
        .allow_tcp(false)
        .allow_udp(false)
        .allow_ip_name_lookup(false);
    if let Some(dir) = &task.input_dir {
        builder
            .preopened_dir(dir, INPUT_DIR_GUEST, FsPerms::ReadOnly)
            .map_err(|error| RunError::InputDir {
                path: dir.clone(),
                message: error.to_string(),
            })?;
    }
    if let Some(dir) = &task.output_dir {
        builder
            .preopened_dir(dir, OUTPUT_DIR_GUEST, FsPerms::ReadWrite)
            .map_err(|error| RunError::OutputDir {
                path: dir.clone(),
                message: error.to_string(),
            })?;
    }
    Ok(builder.build_p1())
}

fn check_output_dir(dir: &Path) -> Result<(), RunError> {
    let failure = |message: String| RunError::OutputDir {
        path: dir.to_path_buf(),
        message,
    };
    let mut entries = std::fs::read_dir(dir).map_err(|error| failure(error.to_string()))?;
    if entries.next().is_some() {
        return Err(failure(
            "it must be empty, so that the output holds only what the task wrote".to_owned(),
        ));
    }
    Ok(())
}

/// A store for listing what the linker provides; never runs anything.
fn blank_state() -> TaskState {
    let hits = Arc::new(Mutex::new(LimitHits::default()));
    TaskState::new(WasiCtxBuilder::new().build_p1(), 0, 0, &hits)
}

/// The largest initial size of the memories a module defines, read from its
/// memory section without compiling it; 0 for unparsable bytes (compiling
/// them reports the error).
fn initial_memory_bytes(bytes: &[u8]) -> u64 {
    use wasmtime::wasmparser::{Parser, Payload};
    let mut largest_pages = 0u64;
    for payload in Parser::new(0).parse_all(bytes) {
        match payload {
            Ok(Payload::MemorySection(memories)) => {
                for memory in memories.into_iter().flatten() {
                    largest_pages = largest_pages.max(memory.initial);
                }
            }
            Ok(Payload::CodeSectionStart { .. }) | Err(_) => break,
            Ok(_) => {}
        }
    }
    largest_pages.saturating_mul(WASM_PAGE_BYTES)
}

/// Instantiates a module and calls `_start`.
fn call_start(module: &PreparedModule, store: &mut Store<TaskState>) -> wasmtime::Result<()> {
    let instance = module.pre.instantiate(&mut *store)?;
    let start = instance.get_typed_func::<(), ()>(&mut *store, "_start")?;
    start.call(&mut *store, ())
}

/// Turns the error that ended a run into an exit code or a typed failure.
/// `stopped` is what a metering check's trap meant, if the run ended at one.
fn classify(
    error: &wasmtime::Error,
    hits: LimitHits,
    stopped: Option<ErrorKind>,
) -> Result<i32, TaskError> {
    if let Some(exit) = error.downcast_ref::<I32Exit>() {
        return Ok(exit.0);
    }
    if let Some(message) = hits.output {
        return Err(TaskError::new(ErrorKind::OutputLimit, message));
    }
    if let Some(message) = hits.memory {
        return Err(TaskError::new(ErrorKind::MemoryLimit, message));
    }
    let failure = match (stopped, error.downcast_ref::<Trap>()) {
        (Some(ErrorKind::OutOfFuel), _) | (_, Some(Trap::OutOfFuel)) => TaskError::new(
            ErrorKind::OutOfFuel,
            "the task used all of its fuel before finishing",
        ),
        (_, Some(Trap::StackOverflow)) => TaskError::new(
            ErrorKind::StackOverflow,
            "the task exhausted its call stack (unbounded recursion?)",
        ),
        (Some(ErrorKind::WallTimeout), _) | (_, Some(Trap::Interrupt)) => TaskError::new(
            ErrorKind::WallTimeout,
            "the task ran past its wall-clock limit",
        ),
        (_, Some(trap)) => TaskError::new(ErrorKind::Trap, trap.to_string()),
        (_, None) => TaskError::new(ErrorKind::Trap, root_cause(error)),
    };
    Err(failure)
}

/// The innermost message of an error chain: wasmtime wraps host errors in
/// "error while executing at wasm backtrace", which says nothing of the cause.
fn root_cause(error: &wasmtime::Error) -> String {
    error
        .chain()
        .last()
        .map_or_else(|| error.to_string(), ToString::to_string)
}

fn describe_compile_error(error: &wasmtime::Error) -> String {
    // wasmtime's top-level message is "failed to parse WebAssembly module";
    // the cause underneath says what is wrong.
    let mut message = error.to_string();
    if let Some(cause) = error.chain().nth(1) {
        message = format!("{message}: {cause}");
    }
    message
}

fn invalid_module(message: impl Into<String>) -> TaskError {
    TaskError::new(ErrorKind::InvalidModule, message)
}

fn setup_error(error: wasmtime::Error) -> SetupError {
    SetupError::Engine(format!("{error:?}"))
}

/// Advances the engine's epoch so that tasks past their wall-clock deadline
/// trap. Stops when dropped.
struct EpochTicker {
    _stop: mpsc::Sender<()>,
}

impl EpochTicker {
    fn start(engine: Engine) -> Self {
        let (stop, stopped) = mpsc::channel::<()>();
        std::thread::Builder::new()
            .name("idlegrid-epoch".to_owned())
            .spawn(move || {
                while let Err(mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(EPOCH_TICK) {
                    engine.increment_epoch();
                }
            })
            .expect("spawning the epoch thread");
        Self { _stop: stop }
    }
}
