//! A GPU task as a provider runs it and a validator re-executes it: the
//! program read from the module bytes, its kernels compiled, its buffers
//! filled from the task's input, its dispatches run in order, and the
//! result in the form replicas compare.
//!
//! Every check that can fail a task is deterministic (it depends only on
//! the program, the input and the job's limits), so every replica fails
//! the same way.

use std::time::Duration;

use idlegrid_types::gpu::{GpuBinding, GpuClass, GpuProgram, param_words};
use idlegrid_types::{
    ContentId, ErrorKind, Execution, ExecutionLimits, ReExecute, TaskInput, TaskOutcome,
};

use crate::{Class, Gpu, GpuError, Kernel, Metered, Step, Stopped};

/// Most workgroups of a dispatch in each dimension (WebGPU's default
/// limit, which every Vulkan GPU meets).
pub const WORKGROUPS_PER_DIMENSION_MAX: u32 = 65_535;

/// Runs a program's dispatches over its buffers: a GPU, or the CPU path.
pub trait Executor {
    /// Runs the steps, stopping once their fuel is past `budget` (see
    /// [`Gpu::execute_with_budget`]).
    fn execute_with_budget(
        &self,
        steps: &[Step<'_>],
        buffers: &mut [Vec<u8>],
        budget: u64,
        timeout: Duration,
    ) -> Result<Metered, GpuError>;

    /// Runs the steps with no budget.
    fn execute(
        &self,
        steps: &[Step<'_>],
        buffers: &mut [Vec<u8>],
        timeout: Duration,
    ) -> Result<Metered, GpuError> {
        self.execute_with_budget(steps, buffers, u64::MAX, timeout)
    }
}

impl Executor for Gpu {
    fn execute_with_budget(
        &self,
        steps: &[Step<'_>],
        buffers: &mut [Vec<u8>],
        budget: u64,
        timeout: Duration,
    ) -> Result<Metered, GpuError> {
        Gpu::execute_with_budget(self, steps, buffers, budget, timeout)
    }
}

/// The CPU path: an interpreter of the kernels' compiled modules, giving
/// the bytes, fuel and stop flags a GPU gives (see [`crate::execute_on_cpu`]).
#[derive(Debug, Clone, Copy, Default)]
pub struct Cpu;

impl Executor for Cpu {
    fn execute_with_budget(
        &self,
        steps: &[Step<'_>],
        buffers: &mut [Vec<u8>],
        budget: u64,
        timeout: Duration,
    ) -> Result<Metered, GpuError> {
        crate::execute_on_cpu_with_budget(steps, buffers, budget, timeout)
    }
}

/// Re-executes GPU tasks on the CPU alone, as a validator settling a
/// dispute (or a requestor settling a disagreement) must: no GPU needed,
/// the same verdict on every machine.
#[derive(Debug, Clone, Copy)]
pub struct CpuReExecutor {
    /// How long one re-execution may run before it is given up (which is
    /// not a verdict).
    pub wall_time: Duration,
}

impl CpuReExecutor {
    /// Runs the task again on the CPU and gives what it found with its
    /// output. An `Err` means it could not be run here (past the wall
    /// clock, or a construct the CPU path does not support): not a verdict.
    pub fn re_execute_with_output(
        &self,
        module: &[u8],
        input: &TaskInput,
        limits: &ExecutionLimits,
    ) -> Result<(Execution, Vec<u8>), String> {
        if let Some(Ok(program)) = GpuProgram::decode(module)
            && program.class == GpuClass::Class
        {
            return Err(
                "a `class` GPU task gives the same bytes only on its own vendor, \
                        device and driver: the CPU path cannot judge it"
                    .to_owned(),
            );
        }
        let program = match Program::prepare(module) {
            Ok(program) => program,
            // Every provider refuses it the same way.
            Err(_) => {
                let refused = Execution {
                    outcome: TaskOutcome::Failed(ErrorKind::InvalidModule),
                    fuel_used: 0,
                };
                return Ok((refused, Vec::new()));
            }
        };
        match program.run(&Cpu, input, limits, self.wall_time) {
            Ok(run) => Ok((
                Execution {
                    outcome: run.outcome,
                    fuel_used: run.fuel_used,
                },
                run.output,
            )),
            Err(GpuError::WallTimeout(limit)) => Err(format!(
                "the re-execution on the CPU ran past its wall-clock limit of {limit:?}"
            )),
            Err(error) => Err(format!("the GPU task could not be re-executed: {error}")),
        }
    }
}

impl ReExecute for CpuReExecutor {
    fn re_execute(
        &self,
        module: &[u8],
        input: &TaskInput,
        _seed: [u8; 32],
        limits: &ExecutionLimits,
    ) -> Result<Execution, String> {
        self.re_execute_with_output(module, input, limits)
            .map(|(execution, _)| execution)
    }
}

/// A GPU task's module, checked and compiled.
#[derive(Debug, Clone)]
pub struct Program {
    program: GpuProgram,
    /// One kernel per distinct entry point.
    kernels: Vec<Kernel>,
    /// Each dispatch: its kernel's index and its workgroups.
    dispatches: Vec<(usize, [u32; 3])>,
}

/// What running a task gave, as a sandbox run gives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskRun {
    pub outcome: TaskOutcome,
    pub fuel_used: u64,
    /// The output buffers, concatenated in binding order (empty when the
    /// task failed).
    pub output: Vec<u8>,
}

impl TaskRun {
    fn failed(kind: ErrorKind, fuel_used: u64) -> Self {
        Self {
            outcome: TaskOutcome::Failed(kind),
            fuel_used,
            output: Vec::new(),
        }
    }
}

impl Program {
    /// Reads and compiles the program in `module`. An error means every
    /// provider refuses it: the task fails `invalid_module`.
    pub fn prepare(module: &[u8]) -> Result<Self, GpuError> {
        let program = GpuProgram::decode(module)
            .ok_or_else(|| GpuError::Invalid("not a GPU program".to_owned()))?
            .map_err(|error| {
                GpuError::Invalid(format!("the GPU program does not decode: {error}"))
            })?;
        Self::compile(program)
    }

    /// Compiles `program`'s entry points and checks its bindings and
    /// dispatches against them.
    pub fn compile(program: GpuProgram) -> Result<Self, GpuError> {
        if program.dispatches.is_empty() {
            return Err(GpuError::Dispatch("the program has no dispatch".to_owned()));
        }
        let class = match program.class {
            GpuClass::Exact => Class::Exact,
            GpuClass::Class => Class::SameDevice,
        };
        let mut kernels: Vec<Kernel> = Vec::new();
        let mut dispatches = Vec::new();
        for dispatch in program.dispatches.iter() {
            if let Some(count) = dispatch
                .workgroups
                .iter()
                .find(|count| **count > WORKGROUPS_PER_DIMENSION_MAX)
            {
                return Err(GpuError::Dispatch(format!(
                    "{count} workgroups in one dimension; at most \
                     {WORKGROUPS_PER_DIMENSION_MAX}"
                )));
            }
            let entry = dispatch.entry_point.as_str();
            let index = match kernels
                .iter()
                .position(|kernel| kernel.entry_point == entry)
            {
                Some(index) => index,
                None => {
                    kernels.push(Kernel::compile(
                        &program.wgsl,
                        entry,
                        class,
                        program.fuel_per_invocation,
                    )?);
                    kernels.len() - 1
                }
            };
            dispatches.push((index, dispatch.workgroups));
        }
        let bindings = &kernels[0].bindings;
        if let Some(other) = kernels.iter().find(|kernel| kernel.bindings != *bindings) {
            return Err(GpuError::Bindings(format!(
                "entry points `{}` and `{}` bind different buffers",
                kernels[0].entry_point, other.entry_point
            )));
        }
        if program.bindings.len() != bindings.len() {
            return Err(GpuError::Bindings(format!(
                "the kernel declares {} storage buffers and the program gives {}",
                bindings.len(),
                program.bindings.len()
            )));
        }
        for (given, declared) in program.bindings.iter().zip(bindings) {
            if given.writable() != declared.writable {
                let want = if declared.writable {
                    "`read_write` (an output or scratch buffer)"
                } else {
                    "read only (a shared input, stdin or params)"
                };
                return Err(GpuError::Bindings(format!(
                    "binding {} is declared {want} in the kernel, and the program gives {}",
                    declared.binding,
                    describe(given)
                )));
            }
        }
        if !program
            .bindings
            .iter()
            .any(|binding| matches!(binding, GpuBinding::Output(_)))
        {
            return Err(GpuError::Bindings(
                "the program has no output buffer".to_owned(),
            ));
        }
        Ok(Self {
            program,
            kernels,
            dispatches,
        })
    }

    pub fn program(&self) -> &GpuProgram {
        &self.program
    }

    /// Invocations over all dispatches; each costs at least one fuel.
    pub fn invocations(&self) -> u64 {
        self.dispatches
            .iter()
            .map(|(kernel, workgroups)| {
                let size = self.kernels[*kernel].workgroup_size;
                size.iter()
                    .chain(workgroups)
                    .map(|count| u64::from(*count))
                    .fold(1u64, u64::saturating_mul)
            })
            .fold(0u64, u64::saturating_add)
    }

    /// Runs the task with `input` under `limits` on `executor`. Whatever
    /// the program or the input makes fail is in the returned outcome; an
    /// `Err` is the host's failure (the device, or the wall clock), not a
    /// verdict on the task.
    pub fn run(
        &self,
        executor: &dyn Executor,
        input: &TaskInput,
        limits: &ExecutionLimits,
        timeout: Duration,
    ) -> Result<TaskRun, GpuError> {
        let args = input.arg_strings();
        let params = match param_words(&args) {
            Ok(params) => params,
            Err(_) if !self.uses(|binding| matches!(binding, GpuBinding::Params)) => Vec::new(),
            Err(_) => return Ok(TaskRun::failed(ErrorKind::Trap, 0)),
        };
        let stdin = input.stdin.as_slice();
        let buffer_bytes = self.program.buffer_bytes(stdin.len(), params.len() / 4);
        if buffer_bytes > limits.memory_bytes {
            return Ok(TaskRun::failed(ErrorKind::MemoryLimit, 0));
        }
        if self.program.output_bytes() > limits.output_bytes {
            return Ok(TaskRun::failed(ErrorKind::OutputLimit, 0));
        }
        if self.invocations() > limits.fuel {
            return Ok(TaskRun::failed(ErrorKind::OutOfFuel, limits.fuel));
        }
        // Checked before anything is allocated: a program may declare an
        // output of any size, and limits may allow it.
        let oversized = |bytes: u64| bytes > crate::BUFFER_BYTES_MAX;
        if self.program.bindings.iter().any(|binding| match binding {
            GpuBinding::Shared(bytes) => oversized(bytes.len() as u64),
            GpuBinding::Stdin => oversized(stdin.len() as u64),
            GpuBinding::Params => oversized(params.len() as u64),
            GpuBinding::Output(bytes) | GpuBinding::Scratch(bytes) => oversized(*bytes),
        }) {
            return Ok(TaskRun::failed(ErrorKind::MemoryLimit, 0));
        }
        let mut buffers: Vec<Vec<u8>> = self
            .program
            .bindings
            .iter()
            .map(|binding| match binding {
                GpuBinding::Shared(bytes) => bytes.to_vec(),
                GpuBinding::Stdin => stdin.to_vec(),
                GpuBinding::Params => params.clone(),
                GpuBinding::Output(bytes) | GpuBinding::Scratch(bytes) => {
                    vec![0; *bytes as usize]
                }
            })
            .collect();
        let steps: Vec<Step<'_>> = self
            .dispatches
            .iter()
            .map(|(kernel, workgroups)| Step {
                kernel: &self.kernels[*kernel],
                workgroups: *workgroups,
            })
            .collect();
        // The job's fuel is the kernel's budget: a run past it stops on the
        // device. Past the job's fuel the task fails `out_of_fuel` before
        // any other flag counts, stopped early or not, because which
        // invocations ran (and raised flags) before the stop can differ
        // between devices; the whole run's fuel, over or not, cannot.
        let metered = executor.execute_with_budget(&steps, &mut buffers, limits.fuel, timeout)?;
        if metered.stopped == Some(Stopped::Budget) || metered.fuel > limits.fuel {
            return Ok(TaskRun::failed(ErrorKind::OutOfFuel, limits.fuel));
        }
        let fuel_used = metered.fuel;
        match metered.stopped {
            Some(Stopped::OutOfFuel) => {
                return Ok(TaskRun::failed(ErrorKind::OutOfFuel, fuel_used));
            }
            Some(Stopped::LoopLimit) => return Ok(TaskRun::failed(ErrorKind::Trap, fuel_used)),
            Some(Stopped::Budget) | None => {}
        }
        let output: Vec<u8> = self
            .program
            .bindings
            .iter()
            .zip(buffers)
            .filter(|(binding, _)| matches!(binding, GpuBinding::Output(_)))
            .flat_map(|(_, bytes)| bytes)
            .collect();
        Ok(TaskRun {
            outcome: TaskOutcome::Completed {
                exit_code: 0,
                output: ContentId::of(&output),
            },
            fuel_used,
            output,
        })
    }

    fn uses(&self, kind: impl Fn(&GpuBinding) -> bool) -> bool {
        self.program.bindings.iter().any(kind)
    }
}

fn describe(binding: &GpuBinding) -> &'static str {
    match binding {
        GpuBinding::Shared(_) => "a shared input",
        GpuBinding::Stdin => "the task's stdin",
        GpuBinding::Params => "the task's params",
        GpuBinding::Output(_) => "an output",
        GpuBinding::Scratch(_) => "a scratch buffer",
    }
}
