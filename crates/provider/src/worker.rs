//! The worker pool: one thread per offered core, each taking the next
//! queued WebAssembly task, running it in the sandbox, and reporting what
//! it gave; and one thread for the GPU, when one is offered, running GPU
//! tasks one at a time. Each task's energy is figured around its run
//! (see [`crate::energy`]).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError, mpsc as std_mpsc};
use std::time::{Duration, Instant};

use anyhow::Context;
use idlegrid_gpu::{Gpu, GpuError, Program};
use idlegrid_sandbox::{PreparedModule, Sandbox, TaskSpec, outcome_of, task_limits};
use idlegrid_types::{JobId, task_seed};
use tokio::sync::mpsc;

use crate::ProviderStats;
use crate::core::{Input, RunResult, Task};
use crate::energy::EnergyMeter;

/// A module ready to run: WebAssembly compiled for the sandbox, or a GPU
/// program compiled for the GPU.
#[derive(Debug, Clone)]
pub(crate) enum Prepared {
    Wasi(Arc<PreparedModule>),
    Gpu(Arc<Program>),
}

/// One task for a worker: the core's order, its compiled module, and the
/// flag a cancellation raises.
struct Work {
    task: Task,
    module: Prepared,
    cancelled: Arc<AtomicBool>,
    /// The task's `/input` folder, deleted when the work is done.
    input_dir: Option<tempfile::TempDir>,
}

/// Hands tasks to the workers and cancels those not yet started.
pub(crate) struct Workers {
    queue: std_mpsc::Sender<Work>,
    /// The GPU worker's queue, when a GPU is offered.
    gpu_queue: Option<std_mpsc::Sender<Work>>,
    /// The cancellation flag of each task queued or running.
    flags: HashMap<(JobId, u64), Arc<AtomicBool>>,
    stats: Arc<ProviderStats>,
}

impl Workers {
    /// Starts `cores` workers, and one for `gpu` if there is one; each
    /// reports to `done`.
    pub(crate) fn start(
        cores: u32,
        sandbox: &Arc<Sandbox>,
        gpu: Option<&Arc<Gpu>>,
        energy: &Arc<EnergyMeter>,
        slowdown: u32,
        stats: &Arc<ProviderStats>,
        done: &mpsc::UnboundedSender<Input>,
    ) -> anyhow::Result<Self> {
        let spawn = |name: String, receiver: &Arc<Mutex<std_mpsc::Receiver<Work>>>| {
            let worker = Worker {
                sandbox: Arc::clone(sandbox),
                gpu: gpu.cloned(),
                energy: Arc::clone(energy),
                queue: Arc::clone(receiver),
                done: done.clone(),
                slowdown: slowdown.max(1),
                stats: Arc::clone(stats),
            };
            std::thread::Builder::new()
                .name(name)
                .spawn(move || worker.run())
                .context("failed to start a worker thread")
        };
        let (queue, receiver) = std_mpsc::channel::<Work>();
        let receiver = Arc::new(Mutex::new(receiver));
        for index in 0..cores {
            spawn(format!("provider-worker-{index}"), &receiver)?;
        }
        let gpu_queue = match gpu {
            Some(_) => {
                let (gpu_queue, receiver) = std_mpsc::channel::<Work>();
                spawn("provider-gpu".to_owned(), &Arc::new(Mutex::new(receiver)))?;
                Some(gpu_queue)
            }
            None => None,
        };
        Ok(Self {
            queue,
            gpu_queue,
            flags: HashMap::new(),
            stats: Arc::clone(stats),
        })
    }

    /// Queues `task` to run with `module` (and its input files in
    /// `input_dir`): a GPU program on the GPU's worker, WebAssembly on the
    /// cores'.
    pub(crate) fn run(
        &mut self,
        task: Task,
        module: Prepared,
        input_dir: Option<tempfile::TempDir>,
    ) {
        let cancelled = Arc::new(AtomicBool::new(false));
        self.flags
            .insert((task.job, task.index), Arc::clone(&cancelled));
        self.stats.queued.fetch_add(1, Ordering::Relaxed);
        let queue = match (&module, &self.gpu_queue) {
            (Prepared::Gpu(_), Some(gpu_queue)) => gpu_queue,
            _ => &self.queue,
        };
        // The workers live as long as this pool.
        let _ = queue.send(Work {
            task,
            module,
            cancelled,
            input_dir,
        });
    }

    pub(crate) fn cancel(&self, job: JobId, index: u64) {
        if let Some(flag) = self.flags.get(&(job, index)) {
            flag.store(true, Ordering::Relaxed);
        }
    }

    /// The task's worker reported back: its flag is no longer needed.
    pub(crate) fn ended(&mut self, job: JobId, index: u64) {
        self.flags.remove(&(job, index));
    }
}

struct Worker {
    sandbox: Arc<Sandbox>,
    gpu: Option<Arc<Gpu>>,
    energy: Arc<EnergyMeter>,
    queue: Arc<Mutex<std_mpsc::Receiver<Work>>>,
    done: mpsc::UnboundedSender<Input>,
    slowdown: u32,
    stats: Arc<ProviderStats>,
}

impl Worker {
    fn run(self) {
        loop {
            let work = {
                let receiver = self.queue.lock().unwrap_or_else(PoisonError::into_inner);
                match receiver.recv() {
                    Ok(work) => work,
                    Err(_) => return,
                }
            };
            self.stats.queued.fetch_sub(1, Ordering::Relaxed);
            let (job, index) = (work.task.job, work.task.index);
            let report = if work.cancelled.load(Ordering::Relaxed) {
                Input::TaskSkipped { job, index }
            } else {
                self.stats.running.fetch_add(1, Ordering::Relaxed);
                let started = Instant::now();
                let result = self.execute(&work);
                if self.slowdown > 1 {
                    std::thread::sleep(started.elapsed() * (self.slowdown - 1));
                }
                self.stats.running.fetch_sub(1, Ordering::Relaxed);
                Input::TaskDone { job, index, result }
            };
            if self.done.send(report).is_err() {
                return;
            }
        }
    }

    fn execute(&self, work: &Work) -> RunResult {
        let task = &work.task;
        let wall_time = Duration::from_millis(task.wall_time_ms);
        let module = match &work.module {
            Prepared::Wasi(module) => module,
            Prepared::Gpu(program) => return self.execute_gpu(task, program, wall_time),
        };
        let spec = TaskSpec {
            args: task.input.arg_strings(),
            stdin: task.input.stdin.to_vec(),
            input_dir: work.input_dir.as_ref().map(|dir| dir.path().to_path_buf()),
            output_dir: None,
            seed: task_seed(&task.job, task.index),
            limits: task_limits(&task.limits, wall_time),
        };
        let measure = self.energy.cpu_start();
        let ran = self.sandbox.run(module, &spec);
        let energy_millijoules = self.energy.cpu_end(measure);
        match ran {
            Ok(report) => {
                let stdout = match &report.result {
                    Ok(completion) => completion.output.stdout.clone(),
                    Err(_) => Vec::new(),
                };
                RunResult::Ran {
                    outcome: outcome_of(&report),
                    fuel_used: report.fuel_used,
                    stdout,
                    energy_millijoules,
                }
            }
            Err(error) => RunResult::NotRun {
                reason: error.to_string(),
            },
        }
    }

    /// Runs a GPU task; its output buffers are what a sandbox task's stdout
    /// is. A run past the wall clock fails `wall_timeout`, as in the
    /// sandbox; a device failure is the host's, not the task's.
    fn execute_gpu(&self, task: &Task, program: &Program, wall_time: Duration) -> RunResult {
        let Some(gpu) = &self.gpu else {
            return RunResult::NotRun {
                reason: "this provider offers no GPU".to_owned(),
            };
        };
        let started = Instant::now();
        let ran = program.run(gpu.as_ref(), &task.input, &task.limits, wall_time);
        let energy_millijoules = self.energy.gpu_task(started.elapsed());
        match ran {
            Ok(run) => RunResult::Ran {
                outcome: run.outcome,
                fuel_used: run.fuel_used,
                stdout: run.output,
                energy_millijoules,
            },
            Err(GpuError::WallTimeout(_)) => RunResult::Ran {
                outcome: idlegrid_types::TaskOutcome::Failed(
                    idlegrid_types::ErrorKind::WallTimeout,
                ),
                fuel_used: 0,
                stdout: Vec::new(),
                energy_millijoules,
            },
            Err(error) => RunResult::NotRun {
                reason: error.to_string(),
            },
        }
    }
}
