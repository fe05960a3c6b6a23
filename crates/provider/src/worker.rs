//! The worker pool: one thread per offered core, each taking the next
//! queued WebAssembly task, running it in the sandbox, and reporting what
//! it gave; and one thread for the GPU, when one is offered, running GPU
//! tasks one at a time. Each task's energy is figured around its run
//! (see [`crate::energy`]). A completed task's output too large to go back
//! inline is written to the content store, pinned, before it is reported.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError, mpsc as std_mpsc};
use std::time::{Duration, Instant};

use anyhow::Context;
use idlegrid_gpu::{Gpu, GpuError, Program};
use idlegrid_net::{ContentStore, OUTPUT_INLINE_BYTES_MAX, StoreError};
use idlegrid_sandbox::{PreparedModule, Sandbox, TaskSpec, outcome_of, task_limits};
use idlegrid_types::{JobId, TaskOutcome, task_seed};
use tokio::sync::mpsc;

use crate::ProviderStats;
use crate::core::{Input, RunOutput, RunResult, Task};
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
    /// keeps outputs over `outputs.keep_over_bytes` in `outputs.store` and
    /// reports to `done`.
    #[expect(
        clippy::too_many_arguments,
        reason = "each is a separate part of the provider the workers share"
    )]
    pub(crate) fn start(
        cores: u32,
        sandbox: &Arc<Sandbox>,
        gpu: Option<&Arc<Gpu>>,
        energy: &Arc<EnergyMeter>,
        outputs: &OutputKeeper,
        slowdown: u32,
        stats: &Arc<ProviderStats>,
        done: &mpsc::UnboundedSender<Input>,
    ) -> anyhow::Result<Self> {
        let spawn = |name: String, receiver: &Arc<Mutex<std_mpsc::Receiver<Work>>>| {
            let worker = Worker {
                sandbox: Arc::clone(sandbox),
                gpu: gpu.cloned(),
                energy: Arc::clone(energy),
                outputs: outputs.clone(),
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

/// Where the workers keep outputs too large to go back inline.
#[derive(Debug, Clone)]
pub(crate) struct OutputKeeper {
    pub(crate) store: Arc<ContentStore>,
    /// A completed task's output over this many bytes is kept (never more
    /// than [`OUTPUT_INLINE_BYTES_MAX`], the most that goes inline).
    pub(crate) keep_over_bytes: usize,
}

impl OutputKeeper {
    /// Where a completed task's `output` (named `outcome`) goes: back
    /// inline, or into the store, pinned (the bytes are dropped once they
    /// are written). `Err` says why it could not be kept.
    fn place(&self, outcome: &TaskOutcome, output: Vec<u8>) -> Result<RunOutput, String> {
        let TaskOutcome::Completed { output: cid, .. } = outcome else {
            return Ok(RunOutput::Inline(output));
        };
        if output.len() <= self.keep_over_bytes.min(OUTPUT_INLINE_BYTES_MAX) {
            return Ok(RunOutput::Inline(output));
        }
        let bytes = output.len() as u64;
        match self.store.put_pinned(*cid, &output) {
            Ok(_) => Ok(RunOutput::Kept { bytes }),
            Err(error @ StoreError::TooLarge { .. }) => Err(format!(
                "no room to keep a {} output: {error}",
                size_text(bytes)
            )),
            Err(error) => Err(format!(
                "could not keep a {} output: {error}",
                size_text(bytes)
            )),
        }
    }
}

/// `bytes` for a person: whole MiB or KiB, or B.
fn size_text(bytes: u64) -> String {
    if bytes >= 1 << 20 {
        format!("{} MiB", bytes >> 20)
    } else if bytes >= 1 << 10 {
        format!("{} KiB", bytes >> 10)
    } else {
        format!("{bytes} B")
    }
}

/// The result of a run that gave `outcome` and `output`, the output kept
/// when it is too large to go back inline.
fn run_result(
    outputs: &OutputKeeper,
    outcome: TaskOutcome,
    fuel_used: u64,
    output: Vec<u8>,
    energy_millijoules: u64,
) -> RunResult {
    match outputs.place(&outcome, output) {
        Ok(output) => RunResult::Ran {
            outcome,
            fuel_used,
            output,
            energy_millijoules,
        },
        Err(reason) => RunResult::NotRun { reason },
    }
}

struct Worker {
    sandbox: Arc<Sandbox>,
    gpu: Option<Arc<Gpu>>,
    energy: Arc<EnergyMeter>,
    outputs: OutputKeeper,
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
                let outcome = outcome_of(&report);
                // Moved out, not copied: an output of up to the job's bound
                // is held once.
                let stdout = match report.result {
                    Ok(completion) => completion.output.stdout,
                    Err(_) => Vec::new(),
                };
                run_result(
                    &self.outputs,
                    outcome,
                    report.fuel_used,
                    stdout,
                    energy_millijoules,
                )
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
        let measure = self.energy.gpu_start();
        let ran = program.run(gpu.as_ref(), &task.input, &task.limits, wall_time);
        let energy_millijoules = self.energy.gpu_end(measure);
        match ran {
            Ok(run) => run_result(
                &self.outputs,
                run.outcome,
                run.fuel_used,
                run.output,
                energy_millijoules,
            ),
            Err(GpuError::WallTimeout(_)) => RunResult::Ran {
                outcome: TaskOutcome::Failed(idlegrid_types::ErrorKind::WallTimeout),
                fuel_used: 0,
                output: RunOutput::Inline(Vec::new()),
                energy_millijoules,
            },
            Err(error) => RunResult::NotRun {
                reason: error.to_string(),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use idlegrid_types::{ContentId, ErrorKind};

    use super::*;

    fn keeper(store_bytes_max: u64) -> (tempfile::TempDir, OutputKeeper) {
        let folder = tempfile::tempdir().expect("tempdir");
        let store = ContentStore::open(folder.path(), store_bytes_max).expect("opens");
        let keeper = OutputKeeper {
            store: Arc::new(store),
            keep_over_bytes: 100,
        };
        (folder, keeper)
    }

    fn completed(output: &[u8]) -> TaskOutcome {
        TaskOutcome::Completed {
            exit_code: 0,
            output: ContentId::of(output),
        }
    }

    #[test]
    fn an_output_over_the_threshold_is_kept_pinned_and_one_that_does_not_fit_is_not_run() {
        let (_folder, keeper) = keeper(1000);
        let small = vec![1u8; 100];
        assert_eq!(
            keeper.place(&completed(&small), small.clone()),
            Ok(RunOutput::Inline(small))
        );
        assert_eq!(keeper.store.len(), 0, "an inline output is not stored");

        let large = vec![2u8; 600];
        assert_eq!(
            keeper.place(&completed(&large), large.clone()),
            Ok(RunOutput::Kept { bytes: 600 })
        );
        let cid = ContentId::of(&large);
        assert_eq!(keeper.store.read(&cid), Some(large));
        assert_eq!(keeper.store.pinned_bytes(), 600);

        // It cannot be evicted for the next one, which is not run.
        let next = vec![3u8; 500];
        let reason = keeper
            .place(&completed(&next), next)
            .expect_err("no room beside the pinned output");
        assert!(
            reason.starts_with("no room to keep a 500 B output: "),
            "{reason}"
        );
        assert!(keeper.store.contains(&cid));

        // A failed task has no output to keep.
        let failed = TaskOutcome::Failed(ErrorKind::Trap);
        assert_eq!(
            keeper.place(&failed, Vec::new()),
            Ok(RunOutput::Inline(Vec::new()))
        );
    }
}
