//! `idlegrid-sim`: simulate a network of devices running jobs through the
//! real market state machine, and report what verification costs and
//! catches.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::Parser;
use idlegrid_market::{Policy, Trust};
use idlegrid_sim::sweep::{self, SweepPoint};
use idlegrid_sim::{Report, SimConfig, Simulation, Strategy, plot};
use idlegrid_types::ChallengeRules;
use indicatif::{ProgressBar, ProgressStyle};

#[derive(Debug, Parser)]
#[command(name = "idlegrid-sim", version, about)]
struct Cli {
    /// Seed of everything random in the run; the same seed replays it.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    #[arg(long, default_value_t = 1_000)]
    devices: u32,
    /// Tasks per job.
    #[arg(long, default_value_t = 10_000)]
    tasks: u64,
    /// Jobs run one after another; trust earned carries over.
    #[arg(long, default_value_t = 1)]
    jobs: u32,
    /// `adaptive`, or `replicas=N`.
    #[arg(long, default_value = "adaptive", value_parser = parse_policy)]
    policy: Policy,
    /// Adaptive policy: results of validated history before a device's
    /// word alone is taken.
    #[arg(long, default_value_t = Trust::default().after)]
    trust_after: u32,
    /// Adaptive policy: the history at which a trusted device's results
    /// are spot-checked half the time (odds H / (H + history)).
    #[arg(long, default_value_t = Trust::default().halving)]
    check_halving: u32,
    /// Adaptive policy: the lowest spot-check odds, per mille.
    #[arg(long, default_value_t = Trust::default().floor_permille)]
    check_floor_permille: u32,
    /// Share of devices that cheat.
    #[arg(long, default_value_t = 0.05)]
    cheaters: f64,
    /// Cheating strategies dealt in turn, comma-separated: always_wrong,
    /// random_wrong, constant_output, colluding.
    #[arg(long, value_delimiter = ',', default_value = "always_wrong,random_wrong,constant_output,colluding", value_parser = parse_strategy)]
    cheat_with: Vec<Strategy>,
    /// Mean fuel of one task.
    #[arg(long, default_value_t = 2_000_000_000)]
    task_fuel: u64,
    /// Each device's bonded stake; a slash takes half. Results accepted on
    /// one device's word alone never add up to more than that half.
    #[arg(long, default_value_t = 10_000_000)]
    stake: u64,
    /// Median device speed, fuel per second.
    #[arg(long, default_value_t = 1_000_000_000)]
    speed: u64,
    /// Share of devices slowed down by --slow-factor.
    #[arg(long, default_value_t = 0.0)]
    slow: f64,
    #[arg(long, default_value_t = 10)]
    slow_factor: u64,
    /// One-way latency range in milliseconds, `LOW-HIGH`.
    #[arg(long, default_value = "10-150", value_parser = parse_range)]
    latency_ms: (u64, u64),
    /// Mean seconds a device stays online (0: no churn).
    #[arg(long, default_value_t = 1_800.0)]
    session_secs: f64,
    /// Mean seconds a device stays away.
    #[arg(long, default_value_t = 600.0)]
    offline_secs: f64,
    /// Share of departures that are silent crashes.
    #[arg(long, default_value_t = 0.5)]
    crash: f64,
    /// Share of tasks a device fails to run (host errors, not fraud).
    #[arg(long, default_value_t = 0.001)]
    failures: f64,
    /// The requestor re-executes disagreeing tasks of at most this much fuel
    /// itself; larger ones go to the ledger as disputes (0: always). Default:
    /// every task.
    #[arg(long)]
    referee_fuel: Option<u64>,
    /// Stop after this much simulated time.
    #[arg(long, default_value_t = 86_400.0)]
    time_limit_secs: f64,
    /// Capacity challenges: an epoch every this many seconds (0: none).
    #[arg(long, default_value_t = 0.0)]
    challenge_epoch_secs: f64,
    /// Share of devices each epoch challenges.
    #[arg(long, default_value_t = 1.0)]
    challenge_share: f64,
    /// Fuel of one challenge.
    #[arg(long, default_value_t = ChallengeRules::default().fuel)]
    challenge_fuel: u64,
    /// A challenge's deadline as a multiple of the time the offered speed
    /// needs (plus the round-trip allowance).
    #[arg(long, default_value_t = 1.25)]
    challenge_slack: f64,
    /// Share of devices that offer --claim-factor times the speed they have.
    #[arg(long, default_value_t = 0.0)]
    capacity_liars: f64,
    #[arg(long, default_value_t = 2.0)]
    claim_factor: f64,
    /// How much slower than its benchmark a device may compute a
    /// challenge (each time a speed in (1 − noise, 1] of it).
    #[arg(long, default_value_t = 0.1)]
    speed_noise: f64,
    /// Where to write the per-second CSV (default idlegrid-sim-seed<SEED>.csv).
    #[arg(long)]
    csv: Option<PathBuf>,
    /// Also write a PNG chart of progress and overhead here.
    #[arg(long)]
    plot: Option<PathBuf>,
    /// Print the report as one JSON object instead of a table (with
    /// --sweep, one object per setting, one per line).
    #[arg(long)]
    json: bool,
    /// Run the adaptive policy over a grid of its knobs (--trust-after
    /// 0,3,10 × --check-halving 2,5,10,20,40, and the setting given) instead
    /// of once: each setting's overhead and wrong results accepted, the
    /// frontier marked, as a table, in the CSV and, with --plot, as a chart.
    #[arg(long)]
    sweep: bool,
    /// With --sweep: seeds each setting runs on (from --seed on).
    #[arg(long, default_value_t = 3)]
    seeds: u32,
}

fn parse_policy(text: &str) -> Result<Policy, String> {
    if text == "adaptive" {
        return Ok(Policy::Adaptive);
    }
    text.strip_prefix("replicas=")
        .and_then(|count| count.parse::<u8>().ok())
        .filter(|count| *count >= 1)
        .map(Policy::Replicas)
        .ok_or_else(|| format!("`{text}` is not a policy: use `adaptive` or `replicas=N` (N ≥ 1)"))
}

fn parse_strategy(text: &str) -> Result<Strategy, String> {
    Strategy::parse(text)
        .filter(|strategy| *strategy != Strategy::Honest)
        .ok_or_else(|| {
            format!("`{text}` is not a cheating strategy: always_wrong, random_wrong, constant_output or colluding")
        })
}

fn parse_range(text: &str) -> Result<(u64, u64), String> {
    let (low, high) = text
        .split_once('-')
        .ok_or_else(|| format!("`{text}` is not a range: use LOW-HIGH"))?;
    let low: u64 = low
        .trim()
        .parse()
        .map_err(|_| format!("bad number `{low}`"))?;
    let high: u64 = high
        .trim()
        .parse()
        .map_err(|_| format!("bad number `{high}`"))?;
    if low > high {
        return Err(format!("range {low}-{high} is backwards"));
    }
    Ok((low, high))
}

fn fraction(name: &str, value: f64) -> anyhow::Result<f64> {
    if !(0.0..=1.0).contains(&value) {
        bail!("--{name} must be between 0 and 1, not {value}");
    }
    Ok(value)
}

fn millis(name: &str, seconds: f64) -> anyhow::Result<u64> {
    if !(seconds >= 0.0 && seconds.is_finite()) {
        bail!("--{name} must be a non-negative number of seconds");
    }
    Ok((seconds * 1_000.0) as u64)
}

fn config(cli: &Cli) -> anyhow::Result<SimConfig> {
    if cli.devices == 0 || cli.tasks == 0 || cli.jobs == 0 {
        bail!("--devices, --tasks and --jobs must be at least 1");
    }
    if cli.task_fuel == 0 || cli.speed == 0 {
        bail!("--task-fuel and --speed must be at least 1");
    }
    Ok(SimConfig {
        seed: cli.seed,
        devices: cli.devices,
        tasks: cli.tasks,
        jobs: cli.jobs,
        policy: cli.policy,
        trust: Trust {
            after: cli.trust_after,
            halving: cli.check_halving,
            floor_permille: cli.check_floor_permille.min(1_000),
        },
        cheater_fraction: fraction("cheaters", cli.cheaters)?,
        cheat_with: cli.cheat_with.clone(),
        task_fuel: cli.task_fuel,
        median_speed: cli.speed,
        slow_fraction: fraction("slow", cli.slow)?,
        slow_factor: cli.slow_factor.max(1),
        latency_ms: cli.latency_ms,
        session_mean_ms: millis("session-secs", cli.session_secs)?,
        offline_mean_ms: millis("offline-secs", cli.offline_secs)?.max(1),
        crash_fraction: fraction("crash", cli.crash)?,
        failure_fraction: fraction("failures", cli.failures)?,
        time_limit_ms: millis("time-limit-secs", cli.time_limit_secs)?,
        referee_fuel_max: cli.referee_fuel.unwrap_or(u64::MAX),
        stake: cli.stake,
        challenge_epoch_ms: millis("challenge-epoch-secs", cli.challenge_epoch_secs)?,
        challenge_share_bps: (fraction("challenge-share", cli.challenge_share)? * 10_000.0) as u32,
        challenge_fuel: cli.challenge_fuel.max(1),
        challenge_slack_bps: {
            if !(1.0..=100.0).contains(&cli.challenge_slack) {
                bail!("--challenge-slack must be between 1 and 100");
            }
            (cli.challenge_slack * 10_000.0) as u32
        },
        capacity_liar_fraction: fraction("capacity-liars", cli.capacity_liars)?,
        claim_factor: {
            if !(1.0..=1_000.0).contains(&cli.claim_factor) {
                bail!("--claim-factor must be between 1 and 1000");
            }
            cli.claim_factor
        },
        speed_noise: fraction("speed-noise", cli.speed_noise)?,
        ..SimConfig::default()
    })
}

/// The policy as `--policy` takes it.
fn policy_flag(policy: Policy) -> String {
    match policy {
        Policy::Adaptive => "adaptive".to_owned(),
        Policy::Replicas(count) => format!("replicas={count}"),
    }
}

/// The policy with the adaptive knobs, for people.
fn policy_name(config: &SimConfig) -> String {
    let trust = config.trust;
    match config.policy {
        Policy::Adaptive => format!(
            "adaptive {}/{}/{}‰",
            trust.after, trust.halving, trust.floor_permille
        ),
        Policy::Replicas(_) => policy_flag(config.policy),
    }
}

fn print_table(config: &SimConfig, report: &Report) {
    let row = |name: &str, value: String| println!("{name:<24} {value}");
    println!(
        "idlegrid-sim · seed {} · {} devices ({} cheating) · {} job(s) × {} tasks · policy {}{}",
        config.seed,
        config.devices,
        report.cheaters,
        config.jobs,
        config.tasks,
        policy_name(config),
        if config.policy == Policy::Adaptive {
            " (trust after / check halving / floor)"
        } else {
            ""
        }
    );
    row(
        "finished",
        if report.finished {
            "yes".to_owned()
        } else {
            format!("no ({} of {} jobs)", report.jobs_finished, config.jobs)
        },
    );
    row(
        "tasks",
        format!(
            "{} accepted, {} failed, of {}",
            report.tasks_accepted, report.tasks_failed, report.tasks
        ),
    );
    row(
        "makespan",
        format!("{:.1} s simulated", report.makespan_ms as f64 / 1_000.0),
    );
    row(
        "verification overhead",
        format!(
            "{:.3}× (fuel executed {} and re-executed {} ÷ useful {})",
            report.overhead, report.fuel_executed, report.fuel_refereed, report.fuel_useful
        ),
    );
    if config.jobs > 1 {
        row(
            "  in the last job",
            format!("{:.3}×", report.last_job_overhead),
        );
    }
    row(
        "fuel burned by devices",
        format!(
            "{:.3}× useful (with cancelled and crashed work)",
            report.fuel_burned as f64 / report.fuel_useful.max(1) as f64
        ),
    );
    row(
        "wrong results accepted",
        format!(
            "{} at the end ({} before the rechecks)",
            report.wrong_accepted, report.wrong_accepted_before_rechecks
        ),
    );
    row(
        "verification",
        format!(
            "{} tasks refereed (re-executed: {:.3}× useful fuel), {} rechecked after a liar was caught",
            report.tasks_refereed,
            report.fuel_refereed as f64 / report.fuel_useful.max(1) as f64,
            report.tasks_reopened
        ),
    );
    row(
        "cheaters detected",
        format!(
            "{} of {} that sent a wrong result ({} cheaters, {} ran tasks)",
            report.cheaters_detected, report.cheaters_lied, report.cheaters, report.cheaters_active
        ),
    );
    for stats in &report.strategies {
        row(
            &format!("  {}", stats.strategy),
            format!(
                "{} devices ({} active, {} lied), {} detected, {} tasks run, {} wrong sent, {} wrong accepted",
                stats.devices,
                stats.active,
                stats.lied,
                stats.detected,
                stats.tasks_completed,
                stats.wrong_results_sent,
                stats.wrong_accepted
            ),
        );
    }
    row(
        "honest accused",
        format!("{} (disputes they would win)", report.honest_accused),
    );
    let capacity = &report.capacity;
    if capacity.epochs > 0 {
        row(
            "capacity challenges",
            format!(
                "{} in {} epochs: {} on time, {} late, {} missed (offline)",
                capacity.challenges,
                capacity.epochs,
                capacity.on_time,
                capacity.late,
                capacity.missed
            ),
        );
        row(
            "  capacity liars",
            format!(
                "{} caught of {} challenged ({} liars), {:.1} s to catch on average, proven speed within {:.1}% of real",
                capacity.liars_caught,
                capacity.liars_challenged,
                capacity.liars,
                capacity.mean_ms_to_catch as f64 / 1_000.0,
                capacity.proven_error_max * 100.0
            ),
        );
        row("  honest judged late", capacity.honest_late.to_string());
    }
    row(
        "cost",
        format!(
            "{} paid of {} budgeted (price {} per million fuel)",
            report.paid, report.budget, config.price_per_million_fuel
        ),
    );
    row(
        "churn",
        format!(
            "{} departures ({} crashes), {} tasks lost with them",
            report.departures, report.crashes, report.tasks_lost_to_churn
        ),
    );
    row(
        "simulation",
        format!(
            "{} events, {} assignments, {:.1} s wall",
            report.events,
            report.assignments,
            report.wall_ms as f64 / 1_000.0
        ),
    );
    if !report.violations.is_empty() {
        row("VIOLATIONS", report.violations.join("; "));
    }
}

fn write_csv(path: &PathBuf, simulation: &Simulation) -> anyhow::Result<()> {
    let file = File::create(path).with_context(|| format!("creating {}", path.display()))?;
    let mut out = BufWriter::new(file);
    writeln!(
        out,
        "time_s,tasks_accepted,tasks_failed,fuel_executed,fuel_useful,overhead,devices_online,tasks_in_flight,wrong_accepted,cheaters_detected,paid"
    )?;
    for sample in simulation.samples() {
        writeln!(
            out,
            "{:.3},{},{},{},{},{:.6},{},{},{},{},{}",
            sample.time_ms as f64 / 1_000.0,
            sample.tasks_accepted,
            sample.tasks_failed,
            sample.fuel_executed,
            sample.fuel_useful,
            sample.overhead(),
            sample.devices_online,
            sample.tasks_in_flight,
            sample.wrong_accepted,
            sample.cheaters_detected,
            sample.paid
        )?;
    }
    out.flush()
        .with_context(|| format!("writing {}", path.display()))
}

fn run(cli: &Cli) -> anyhow::Result<bool> {
    let config = config(cli)?;
    let mut simulation = Simulation::new(config.clone());
    // Drawn on stderr, and only when it is a terminal.
    let total = config.tasks * u64::from(config.jobs);
    let progress = ProgressBar::new(total).with_style(
        ProgressStyle::with_template(
            "{elapsed_precise} [{bar:40}] {pos}/{len} tasks decided · {msg}",
        )?
        .progress_chars("=> "),
    );
    let report = simulation.run_observed(&mut |sample| {
        progress.set_position(sample.tasks_accepted + sample.tasks_failed);
        progress.set_message(format!(
            "{:.1} s simulated · {} online",
            sample.time_ms as f64 / 1_000.0,
            sample.devices_online
        ));
    });
    progress.finish_and_clear();
    let csv = cli
        .csv
        .clone()
        .unwrap_or_else(|| PathBuf::from(format!("idlegrid-sim-seed{}.csv", config.seed)));
    write_csv(&csv, &simulation)?;
    if let Some(path) = &cli.plot {
        let title = format!(
            "idlegrid-sim: {} devices, {} tasks, {} cheating, {}",
            config.devices,
            report.tasks,
            report.cheaters,
            policy_name(&config)
        );
        plot::write_png(path, simulation.samples(), report.tasks, &title)
            .with_context(|| format!("writing the chart {}", path.display()))?;
    }
    if cli.json {
        let mut value = serde_json::to_value(&report)?;
        if let Some(object) = value.as_object_mut() {
            object.insert("config".to_owned(), serde_json::to_value(&config)?);
            object.insert("policy".to_owned(), policy_flag(config.policy).into());
            let trust = config.trust;
            let trust = serde_json::json!({
                "after": trust.after,
                "halving": trust.halving,
                "floor_permille": trust.floor_permille,
            });
            object.insert("trust".to_owned(), trust);
            object.insert("csv".to_owned(), csv.display().to_string().into());
        }
        println!("{value}");
    } else {
        print_table(&config, &report);
        println!("{:<24} {}", "csv", csv.display());
        if let Some(path) = &cli.plot {
            println!("{:<24} {}", "chart", path.display());
        }
    }
    Ok(report.violations.is_empty())
}

fn run_sweep(cli: &Cli) -> anyhow::Result<bool> {
    let config = config(cli)?;
    if config.policy != Policy::Adaptive {
        bail!("--sweep varies the adaptive policy's knobs: leave --policy at adaptive");
    }
    let mut grid = sweep::grid();
    if !grid.contains(&config.trust) {
        grid.push(config.trust);
    }
    let threads = std::thread::available_parallelism().map_or(1, usize::from);
    let progress = ProgressBar::new((grid.len() as u64) * u64::from(cli.seeds.max(1))).with_style(
        ProgressStyle::with_template("{elapsed_precise} [{bar:40}] {pos}/{len} runs")?,
    );
    let points = sweep::sweep(&config, &grid, cli.seeds, threads, &|done, _| {
        progress.set_position(done as u64);
    });
    progress.finish_and_clear();
    let csv = cli
        .csv
        .clone()
        .unwrap_or_else(|| PathBuf::from(format!("idlegrid-sim-sweep-seed{}.csv", config.seed)));
    write_sweep_csv(&csv, &points)?;
    if let Some(path) = &cli.plot {
        let title = format!(
            "idlegrid-sim sweep: {} devices, {} job(s) × {} tasks, {:.0}% cheating, {} seed(s)",
            config.devices,
            config.jobs,
            config.tasks,
            config.cheater_fraction * 100.0,
            cli.seeds.max(1)
        );
        plot::write_frontier_png(path, &points, config.trust, &title)
            .with_context(|| format!("writing the chart {}", path.display()))?;
    }
    let mut ordered: Vec<&SweepPoint> = points.iter().collect();
    ordered.sort_by(|a, b| a.overhead.total_cmp(&b.overhead));
    if cli.json {
        for point in ordered {
            println!("{}", serde_json::to_string(point)?);
        }
    } else {
        println!(
            "idlegrid-sim sweep · seeds {}..{} · {} devices · {} job(s) × {} tasks",
            config.seed,
            config.seed + u64::from(cli.seeds.max(1)) - 1,
            config.devices,
            config.jobs,
            config.tasks
        );
        println!(
            "{:<16} {:>9} {:>10} {:>12} {:>10} {:>8}  ",
            "after/halving/‰", "overhead", "last job", "wrong (mean)", "wrong max", "honest"
        );
        for point in ordered {
            let mut notes = Vec::new();
            if point.frontier {
                notes.push("frontier");
            }
            if point.trust() == config.trust {
                notes.push("in use");
            }
            if point.unfinished > 0 {
                notes.push("UNFINISHED runs");
            }
            println!(
                "{:<16} {:>8.3}× {:>9.3}× {:>12.1} {:>10} {:>8}  {}",
                point.label(),
                point.overhead,
                point.last_job_overhead,
                point.wrong_accepted,
                point.wrong_accepted_max,
                point.honest_accused,
                notes.join(", ")
            );
        }
        println!("{:<24} {}", "csv", csv.display());
        if let Some(path) = &cli.plot {
            println!("{:<24} {}", "chart", path.display());
        }
    }
    Ok(points.iter().all(|point| point.honest_accused == 0))
}

fn write_sweep_csv(path: &PathBuf, points: &[SweepPoint]) -> anyhow::Result<()> {
    let file = File::create(path).with_context(|| format!("creating {}", path.display()))?;
    let mut out = BufWriter::new(file);
    writeln!(
        out,
        "trust_after,check_halving,check_floor_permille,seeds,overhead,last_job_overhead,wrong_accepted_mean,wrong_accepted_max,honest_accused,unfinished,frontier"
    )?;
    for point in points {
        writeln!(
            out,
            "{},{},{},{},{:.6},{:.6},{:.3},{},{},{},{}",
            point.after,
            point.halving,
            point.floor_permille,
            point.seeds,
            point.overhead,
            point.last_job_overhead,
            point.wrong_accepted,
            point.wrong_accepted_max,
            point.honest_accused,
            point.unfinished,
            point.frontier
        )?;
    }
    out.flush()
        .with_context(|| format!("writing {}", path.display()))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let outcome = if cli.sweep {
        run_sweep(&cli)
    } else {
        run(&cli)
    };
    match outcome {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => {
            let why = if cli.sweep {
                "an honest device was accused (see the honest column)"
            } else {
                "the run broke an invariant (see VIOLATIONS)"
            };
            eprintln!("idlegrid-sim: {why}");
            ExitCode::from(1)
        }
        Err(error) => {
            eprintln!("idlegrid-sim: {error:#}");
            ExitCode::from(2)
        }
    }
}
