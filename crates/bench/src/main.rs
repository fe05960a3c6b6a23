//! Measure idlegrid against baselines taken in the same run.
//!
//! Every figure is printed with the baseline it is compared to and the ratio
//! between them; `--json` prints one object per line with the keys `metric`,
//! `value`, `unit`, `baseline` and `ratio`.

mod campaign;
mod chain;
mod data;
mod data_jobs;
mod e2e;
mod gpu;
mod ledger;
mod market;
mod native;
mod overlay;
mod sandbox;

use clap::{Parser, Subcommand};
use serde::Serialize;

#[derive(Debug, Parser)]
#[command(name = "idlegrid-bench", version)]
struct Cli {
    #[command(subcommand)]
    suite: Suite,
}

#[derive(Debug, Subcommand)]
enum Suite {
    /// The sandbox: example kernels in wasm (fuel on and off) against the same
    /// C built natively; instantiation; compile versus cache load.
    Sandbox(sandbox::Options),
    /// The ledger: transfers per second against signature checks alone,
    /// batch against single verification, redb commits against memory,
    /// disk growth with the state tree pruned against without.
    Ledger(ledger::Options),
    /// The market: tasks placed and verified per second as the offer book
    /// grows, against a plain loop handing out the same tasks.
    Market(market::Options),
    /// The chain: transfers finalized per second and finality latency on one
    /// and on four validators in this process, against the ledger alone.
    Chain(chain::Options),
    /// Fault campaigns: seeded runs of 4–7 validators on the deterministic
    /// runtime through crashes, partitions, lossy links and validator-set
    /// changes; transfers lost and applied twice against transfers sent.
    Campaign(campaign::Options),
    /// End to end: a job's tasks placed, run, verified and paid for on
    /// in-process providers, a validator and loopback, against the same
    /// tasks run directly in the sandbox.
    E2e(e2e::Options),
    /// The compute overlay under a connection flood: connections refused
    /// per second against a listener that only accepts and closes, memory
    /// during the flood against before it, time to heal against a quiet
    /// join.
    Overlay(overlay::Options),
    /// GPU kernels: an exact, metered kernel against the same work as a WASI
    /// task in the sandbox on one core, and against the plain kernel.
    Gpu(gpu::Options),
    /// Content by id: a blob to three peers at once over the overlay, each
    /// 64 KiB checked as it arrives, against a plain TCP copy; a checked
    /// read from the content store against reading the file.
    Data(data::Options),
}

/// Flags every suite takes.
#[derive(Debug, clap::Args)]
pub struct Common {
    /// Print one JSON object per line.
    #[arg(long)]
    pub json: bool,
    /// The suite's smallest sizes and one repetition: checks that the
    /// benchmark runs.
    #[arg(long)]
    pub quick: bool,
}

/// One measured figure and what it is compared to.
#[derive(Debug, Clone, Serialize)]
pub struct Measurement {
    pub metric: String,
    pub value: f64,
    pub unit: &'static str,
    pub baseline: f64,
    pub ratio: f64,
    /// What the baseline is, for the table (not part of the JSON keys).
    #[serde(skip)]
    pub baseline_name: String,
}

impl Measurement {
    pub fn new(
        metric: impl Into<String>,
        value: f64,
        unit: &'static str,
        baseline: f64,
        baseline_name: impl Into<String>,
    ) -> Self {
        Self {
            metric: metric.into(),
            value,
            unit,
            baseline,
            ratio: if baseline > 0.0 {
                value / baseline
            } else {
                f64::NAN
            },
            baseline_name: baseline_name.into(),
        }
    }
}

fn print_table(rows: &[Measurement]) {
    let width = rows
        .iter()
        .map(|row| row.metric.len())
        .max()
        .unwrap_or(6)
        .max(6);
    println!(
        "{:<width$}  {:>12} {:<5} {:>12}  {:>7}  baseline",
        "metric", "value", "unit", "baseline", "ratio"
    );
    for row in rows {
        println!(
            "{:<width$}  {:>12.3} {:<5} {:>12.3}  {:>7.3}  {}",
            row.metric, row.value, row.unit, row.baseline, row.ratio, row.baseline_name
        );
    }
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let (rows, json) = match cli.suite {
        Suite::Sandbox(options) => (sandbox::run(&options)?, options.common.json),
        Suite::Ledger(options) => (ledger::run(&options)?, options.common.json),
        Suite::Market(options) => (market::run(&options)?, options.common.json),
        Suite::Chain(options) => (chain::run(&options)?, options.common.json),
        Suite::Campaign(options) => (campaign::run(&options)?, options.common.json),
        Suite::E2e(options) => (e2e::run(&options)?, options.common.json),
        Suite::Gpu(options) => (gpu::run(&options)?, options.common.json),
        Suite::Overlay(options) => (overlay::run(&options)?, options.common.json),
        Suite::Data(options) => (data::run(&options)?, options.common.json),
    };
    if json {
        for row in &rows {
            println!("{}", serde_json::to_string(row)?);
        }
    } else {
        print_table(&rows);
    }
    Ok(())
}
