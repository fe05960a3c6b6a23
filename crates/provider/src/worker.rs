//! The worker pool: one thread per offered core, each taking the next
//! queued task, running it in the sandbox, and reporting what it gave.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError, mpsc as std_mpsc};
use std::time::{Duration, Instant};

use anyhow::Context;
use idlegrid_sandbox::{PreparedModule, Sandbox, TaskSpec, outcome_of, task_limits};
use idlegrid_types::{JobId, task_seed};
use tokio::sync::mpsc;

use crate::ProviderStats;
use crate::core::{Input, RunResult, Task};

/// One task for a worker: the core's order, its compiled module, and the
/// flag a cancellation raises.
struct Work {
    task: Task,
    module: Arc<PreparedModule>,
    cancelled: Arc<AtomicBool>,
}

/// Hands tasks to the workers and cancels those not yet started.
pub(crate) struct Workers {
    queue: std_mpsc::Sender<Work>,
    /// The cancellation flag of each task queued or running.
    flags: HashMap<(JobId, u64), Arc<AtomicBool>>,
    stats: Arc<ProviderStats>,
}

impl Workers {
    /// Starts `cores` workers; each reports to `done`.
    pub(crate) fn start(
        cores: u32,
        sandbox: &Arc<Sandbox>,
        slowdown: u32,
        stats: &Arc<ProviderStats>,
        done: &mpsc::UnboundedSender<Input>,
    ) -> anyhow::Result<Self> {
        let (queue, receiver) = std_mpsc::channel::<Work>();
        let receiver = Arc::new(Mutex::new(receiver));
        for index in 0..cores {
            let worker = Worker {
                sandbox: Arc::clone(sandbox),
                queue: Arc::clone(&receiver),
                done: done.clone(),
                slowdown: slowdown.max(1),
                stats: Arc::clone(stats),
            };
            std::thread::Builder::new()
                .name(format!("provider-worker-{index}"))
                .spawn(move || worker.run())
                .context("failed to start a worker thread")?;
        }
        Ok(Self {
            queue,
            flags: HashMap::new(),
            stats: Arc::clone(stats),
        })
    }

    /// Queues `task` to run with `module`.
    pub(crate) fn run(&mut self, task: Task, module: Arc<PreparedModule>) {
        let cancelled = Arc::new(AtomicBool::new(false));
        self.flags
            .insert((task.job, task.index), Arc::clone(&cancelled));
        self.stats.queued.fetch_add(1, Ordering::Relaxed);
        // The workers live as long as this pool.
        let _ = self.queue.send(Work {
            task,
            module,
            cancelled,
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
        let spec = TaskSpec {
            args: task.input.arg_strings(),
            stdin: task.input.stdin.to_vec(),
            input_dir: None,
            output_dir: None,
            seed: task_seed(&task.job, task.index),
            limits: task_limits(&task.limits, Duration::from_millis(task.wall_time_ms)),
        };
        match self.sandbox.run(&work.module, &spec) {
            Ok(report) => {
                let stdout = match &report.result {
                    Ok(completion) => completion.output.stdout.clone(),
                    Err(_) => Vec::new(),
                };
                RunResult::Ran {
                    outcome: outcome_of(&report),
                    fuel_used: report.fuel_used,
                    stdout,
                }
            }
            Err(error) => RunResult::NotRun {
                reason: error.to_string(),
            },
        }
    }
}
