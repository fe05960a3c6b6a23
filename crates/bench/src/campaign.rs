//! `idlegrid-bench campaign`: seeded fault campaigns on the deterministic
//! runtime (`idlegrid_chain::campaign`), many more seeds than `cargo test`
//! runs. Every run must lose no transfer, apply none twice, and leave every
//! validator with the same state root at every height; the first run that
//! does not stops the suite with its seed and plan.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use idlegrid_chain::campaign;

use crate::Measurement;

#[derive(Debug, clap::Args)]
pub struct Options {
    #[command(flatten)]
    pub common: crate::Common,
    /// Seeds to run (two with --quick).
    #[arg(long, default_value_t = 20)]
    seeds: u64,
    /// The first seed; the others follow it.
    #[arg(long, default_value_t = 1)]
    first: u64,
}

pub fn run(options: &Options) -> anyhow::Result<Vec<Measurement>> {
    let seeds = if options.common.quick {
        2
    } else {
        options.seeds.max(1)
    };
    let (mut transfers, mut resent, mut faults) = (0u64, 0u64, 0u64);
    let mut kinds: BTreeMap<&'static str, u64> = BTreeMap::new();
    let mut simulated = Duration::ZERO;
    let started = Instant::now();
    for seed in options.first..options.first + seeds {
        let report = campaign::run(seed)?;
        eprintln!(
            "campaign: seed {seed}: {} validators, {} transfers, {} faults {:?}, height {}",
            report.plan.validators,
            report.transfers,
            report.faults.values().sum::<u64>(),
            report.faults,
            report.height
        );
        transfers += report.transfers;
        resent += report.resent;
        faults += report.faults.values().sum::<u64>();
        for (kind, count) in report.faults {
            *kinds.entry(kind).or_default() += count;
        }
        simulated += report.simulated;
    }
    let wall = started.elapsed();
    eprintln!("campaign: {seeds} seeds, faults by kind {kinds:?}, {resent} resends");
    let sent = transfers as f64;
    // A run that lost or doubled a transfer fails above: what reaches
    // here lost none and doubled none, over every transfer sent.
    Ok(vec![
        Measurement::new("campaign.transfers_lost", 0.0, "tx", sent, "transfers sent"),
        Measurement::new(
            "campaign.transfers_applied_twice",
            0.0,
            "tx",
            sent,
            "transfers sent",
        ),
        Measurement::new(
            "campaign.faults_injected",
            faults as f64,
            "fault",
            seeds as f64,
            "seeds run",
        ),
        Measurement::new(
            "campaign.simulated_seconds",
            simulated.as_secs_f64(),
            "s",
            wall.as_secs_f64(),
            "wall-clock seconds",
        ),
    ])
}
