//! `idlegrid-bench market`: how fast the scheduler places and verifies
//! tasks, and whether that holds as the offer book grows.

use std::hint::black_box;
use std::time::Instant;

use anyhow::bail;
use idlegrid_market::{
    Command, Input, JobSpec, Market, MarketConfig, Policy, Standing, TaskResult,
};
use idlegrid_types::{ContentId, ExecutionLimits, JobId, Keypair, Offer, TaskOutcome};

use crate::Measurement;

#[derive(Debug, clap::Args)]
pub struct Options {
    #[command(flatten)]
    pub common: crate::Common,
}

fn offer(index: usize) -> Offer {
    Offer {
        cores: 1 + (index % 8) as u32,
        memory_bytes: 8 << 30,
        gpu: None,
        // A spread of speeds, so ranking has work to do.
        benchmark_fuel_per_second: 200_000_000 + (index as u64 % 97) * 50_000_000,
        price_floor_per_million_fuel: 1 + (index as u64 % 5),
        concurrency: 16,
        idle_only: false,
        operator: None,
        sequence: 1,
        expires_at_ms: u64::MAX,
    }
}

/// A market with `providers` staked, connected providers.
fn market(providers: usize) -> (Market, Vec<idlegrid_types::AccountId>) {
    let mut market = Market::new(MarketConfig::default());
    let mut ids = Vec::with_capacity(providers);
    for index in 0..providers {
        let mut seed = [0u8; 32];
        seed[..8].copy_from_slice(&(index as u64).to_le_bytes());
        let provider = Keypair::from_seed(seed).account_id();
        market.handle(
            0,
            Input::Offer {
                provider,
                offer: offer(index),
            },
        );
        market.handle(
            0,
            Input::Standing {
                provider,
                standing: Standing::staked(1, 5_000),
            },
        );
        market.handle(0, Input::Connected(provider));
        ids.push(provider);
    }
    (market, ids)
}

fn job(tasks: u64) -> JobSpec {
    JobSpec {
        id: JobId::from_bytes([7; 32]),
        module: ContentId::of(b"bench"),
        task_count: tasks,
        limits: ExecutionLimits {
            fuel: 1_000_000_000,
            memory_bytes: 64 << 20,
            output_bytes: 1 << 20,
        },
        price_per_million_fuel: 10,
        policy: Policy::Replicas(2),
        budget: u64::MAX,
        input_bytes: 0,
        gpu: None,
    }
}

fn outcome(task: u64) -> TaskOutcome {
    TaskOutcome::Completed {
        exit_code: 0,
        output: ContentId::from_bytes([(task % 251) as u8; 32]),
    }
}

/// Runs a whole job through the market, every provider answering at once;
/// returns replicas placed per second.
fn placements_per_second(providers: usize, tasks: u64) -> anyhow::Result<f64> {
    let (mut market, _) = market(providers);
    let job_id = job(tasks).id;
    let started = Instant::now();
    let mut queue: Vec<(idlegrid_types::AccountId, u64)> = Vec::new();
    let mut placed = 0u64;
    let mut finished = false;
    let absorb =
        |commands: Vec<Command>, queue: &mut Vec<_>, placed: &mut u64, finished: &mut bool| {
            for command in commands {
                match command {
                    Command::Assign {
                        provider, tasks, ..
                    } => {
                        *placed += tasks.len() as u64;
                        queue.extend(tasks.into_iter().map(|task| (provider, task)));
                    }
                    Command::JobFinished { .. } => *finished = true,
                    _ => {}
                }
            }
        };
    let commands = market.handle(1, Input::SubmitJob(job(tasks)));
    absorb(commands, &mut queue, &mut placed, &mut finished);
    while let Some((provider, task)) = queue.pop() {
        let result = TaskResult {
            outcome: outcome(task),
            fuel_used: 500_000_000,
            receipt: None,
        };
        let commands = market.handle(
            2,
            Input::Result {
                provider,
                job: job_id,
                task,
                result,
            },
        );
        absorb(commands, &mut queue, &mut placed, &mut finished);
    }
    if !finished {
        bail!("the benchmark job did not finish");
    }
    Ok(placed as f64 / started.elapsed().as_secs_f64())
}

/// The same replicas handed out round-robin with no ranking, windows,
/// leases or verification.
fn plain_loop_per_second(providers: usize, tasks: u64) -> f64 {
    let started = Instant::now();
    let mut assignments: Vec<(usize, u64)> = Vec::with_capacity(tasks as usize * 2);
    for task in 0..tasks {
        for replica in 0..2 {
            assignments.push((black_box((task as usize * 2 + replica) % providers), task));
        }
    }
    black_box(&assignments);
    assignments.len() as f64 / started.elapsed().as_secs_f64()
}

pub fn run(options: &Options) -> anyhow::Result<Vec<Measurement>> {
    let (books, tasks): (&[usize], u64) = if options.common.quick {
        (&[100, 1_000], 2_000)
    } else {
        (&[1_000, 10_000, 100_000], 100_000)
    };
    let mut rows = Vec::new();
    for &providers in books {
        let rate = placements_per_second(providers, tasks)?;
        let baseline = plain_loop_per_second(providers, tasks);
        rows.push(Measurement::new(
            format!("market.placements.{providers}_providers"),
            rate,
            "1/s",
            baseline,
            "round-robin loop, no scheduling",
        ));
    }
    Ok(rows)
}
