//! Scenarios run through the simulator, which drives the real market:
//! churn and crashes lose no work, work flows to fast devices, every kind of
//! cheater is caught without a wrong result being accepted, and a seed
//! replays its run.

use idlegrid_market::Policy;
use idlegrid_sim::{Report, SimConfig, Simulation, Strategy};
use proptest::prelude::{
    Just, ProptestConfig, any, prop, prop_assert, prop_assert_eq, prop_oneof, proptest,
};
use proptest::strategy::Strategy as Generate;

/// A small network: no churn, no cheaters, one-second tasks.
fn base(seed: u64, devices: u32, tasks: u64) -> SimConfig {
    SimConfig {
        seed,
        devices,
        tasks,
        cheater_fraction: 0.0,
        session_mean_ms: 0,
        failure_fraction: 0.0,
        task_fuel: 1_000_000_000,
        ..SimConfig::default()
    }
}

fn run(config: SimConfig) -> (Report, Simulation) {
    let mut simulation = Simulation::new(config);
    let report = simulation.run();
    assert!(report.violations.is_empty(), "{:?}", report.violations);
    (report, simulation)
}

#[test]
fn the_same_seed_replays_the_same_run() {
    let config = SimConfig {
        devices: 150,
        tasks: 1_500,
        session_mean_ms: 20_000,
        offline_mean_ms: 5_000,
        ..base(7, 0, 0)
    };
    let config = SimConfig {
        cheater_fraction: 0.1,
        ..config
    };
    let (mut first, first_run) = run(config.clone());
    let (mut second, second_run) = run(config.clone());
    first.wall_ms = 0;
    second.wall_ms = 0;
    assert_eq!(first, second);
    assert_eq!(first_run.samples(), second_run.samples());
    let (mut other, _) = run(SimConfig { seed: 8, ..config });
    other.wall_ms = 0;
    assert_ne!(first, other);
}

#[test]
fn devices_crashing_mid_job_lose_no_work() {
    let config = SimConfig {
        session_mean_ms: 20_000,
        offline_mean_ms: 4_000,
        crash_fraction: 1.0,
        crash_detect_ms: 3_000,
        ..base(3, 80, 3_000)
    };
    let (report, _) = run(config);
    assert!(report.finished);
    assert!(report.crashes > 20, "only {} crashes", report.crashes);
    assert!(report.tasks_lost_to_churn > 20);
    // Every task lost in a crash was reissued and finished elsewhere.
    assert_eq!(report.tasks_accepted, 3_000);
    assert_eq!(report.tasks_failed, 0);
    assert_eq!(report.wrong_accepted, 0);
    assert!(report.paid <= report.budget);
}

#[test]
fn work_flows_from_slow_devices_to_fast_ones() {
    let config = SimConfig {
        slow_fraction: 0.5,
        slow_factor: 10,
        ..base(5, 100, 6_000)
    };
    let (report, simulation) = run(config);
    assert!(report.finished);
    let devices = simulation.devices();
    // Per core, so that core counts do not decide it.
    let per_core = |slowed: bool| {
        let (tasks, cores) = devices
            .iter()
            .filter(|device| device.slowed == slowed)
            .fold((0u64, 0u64), |(tasks, cores), device| {
                (
                    tasks + device.tasks_completed,
                    cores + u64::from(device.cores),
                )
            });
        tasks as f64 / cores.max(1) as f64
    };
    let (fast, slow) = (per_core(false), per_core(true));
    assert!(
        fast > 4.0 * slow,
        "fast {fast:.2} vs slow {slow:.2} tasks per core"
    );
}

/// 300 devices, 3% of them cheating with one strategy, 100 tasks each.
fn cheaters(strategy: Strategy, policy: Policy) -> (Report, Simulation) {
    let config = SimConfig {
        cheater_fraction: 0.03,
        cheat_with: vec![strategy],
        policy,
        ..base(11, 300, 30_000)
    };
    let (report, simulation) = run(config);
    assert!(report.finished);
    assert_eq!(report.tasks_accepted + report.tasks_failed, 30_000);
    assert_eq!(report.cheaters, 9);
    assert_eq!(report.cheaters_active, 9);
    assert_eq!(report.cheaters_lied, 9);
    assert_eq!(report.honest_accused, 0);
    (report, simulation)
}

fn assert_caught(strategy: Strategy, policy: Policy) {
    let (report, _) = cheaters(strategy, policy);
    // At the end: a lie accepted before its teller was caught is checked
    // again once it is.
    assert_eq!(report.wrong_accepted, 0, "{report:#?}");
    // Evidence was emitted against every cheater.
    assert_eq!(report.cheaters_detected, 9, "{report:#?}");
}

#[test]
fn always_wrong_cheaters_are_caught_and_never_accepted() {
    assert_caught(Strategy::AlwaysWrong, Policy::Adaptive);
}

#[test]
fn constant_output_cheaters_are_caught_and_never_accepted() {
    assert_caught(Strategy::ConstantOutput, Policy::Adaptive);
}

#[test]
fn colluding_pairs_are_caught_and_never_accepted() {
    assert_caught(Strategy::Colluding, Policy::Adaptive);
}

#[test]
fn random_cheaters_are_caught_and_never_accepted_with_two_replicas() {
    assert_caught(Strategy::RandomWrong, Policy::Replicas(2));
}

#[test]
fn adaptive_lets_only_unchecked_lies_of_trusted_random_cheaters_through() {
    // A cheater that is honest nine times in ten can earn trust, and a lie
    // it then sends unchecked is accepted; every lie that is compared is
    // caught. So a cheater escapes detection only if no lie of its was
    // ever checked.
    let (report, simulation) = cheaters(Strategy::RandomWrong, Policy::Adaptive);
    let liars: Vec<_> = simulation
        .devices()
        .into_iter()
        .filter(|device| device.strategy == Strategy::RandomWrong)
        .collect();
    let accepted: u64 = liars.iter().map(|device| device.wrong_accepted).sum();
    assert_eq!(accepted, report.wrong_accepted);
    for device in &liars {
        assert!(device.wrong_sent > 0);
        assert!(
            device.detected || device.wrong_accepted == device.wrong_sent,
            "{device:?}"
        );
    }
    assert!(report.cheaters_detected >= 7, "{report:#?}");
}

#[test]
fn a_majority_of_liars_telling_the_same_lie_never_gets_it_accepted() {
    // Two thirds of the devices return one constant output: tasks given to
    // two of them are accepted on their matching lie, until one of them
    // meets an honest device on a task; re-execution catches it there, and
    // every task it vouched for is checked again.
    let config = SimConfig {
        cheater_fraction: 0.66,
        cheat_with: vec![Strategy::ConstantOutput],
        policy: Policy::Replicas(2),
        ..base(13, 60, 3_000)
    };
    let (report, _) = run(config);
    assert!(report.finished, "{report:#?}");
    assert_eq!(report.tasks_accepted, 3_000);
    assert_eq!(report.wrong_accepted, 0, "{report:#?}");
    assert!(report.wrong_accepted_before_rechecks > 0, "{report:#?}");
    assert!(report.tasks_reopened > 0);
    assert_eq!(report.honest_accused, 0);
}

fn strategies() -> impl Generate<Value = Vec<Strategy>> {
    prop::sample::subsequence(Strategy::CHEATING.to_vec(), 1..=4)
}

fn policies() -> impl Generate<Value = Policy> {
    prop_oneof![Just(Policy::Adaptive), (1u8..=3).prop_map(Policy::Replicas)]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(8))]

    /// Whatever cheaters there are and however many, with churn and host
    /// failures: no device that only told the truth is ever reported, and
    /// the run keeps every invariant.
    #[test]
    fn no_honest_device_is_ever_accused(
        seed in any::<u64>(),
        cheat_with in strategies(),
        cheater_fraction in 0.0f64..0.7,
        policy in policies(),
    ) {
        let config = SimConfig {
            cheater_fraction,
            cheat_with,
            policy,
            session_mean_ms: 30_000,
            offline_mean_ms: 10_000,
            failure_fraction: 0.01,
            ..base(seed, 60, 600)
        };
        let mut simulation = Simulation::new(config);
        let report = simulation.run();
        prop_assert!(report.violations.is_empty(), "{:?}", report.violations);
        prop_assert_eq!(report.honest_accused, 0);
        for device in simulation.devices() {
            if device.strategy == Strategy::Honest {
                prop_assert!(!device.detected);
            }
        }
    }
}

/// 100,000 devices, 5% of them offering twice the speed they have, a
/// challenge epoch every minute for everyone: every liar is caught at its
/// first challenge and its offer brought down to about its real speed,
/// and no honest device, computing up to 10% slower than its benchmark,
/// is ever judged late.
#[test]
fn capacity_challenges_catch_every_liar_and_never_an_honest_device() {
    let config = SimConfig {
        devices: 100_000,
        tasks: 1_000,
        // Tasks that outlast the run, so it runs to its time limit.
        task_fuel: 2_000_000_000_000,
        challenge_epoch_ms: 60_000,
        capacity_liar_fraction: 0.05,
        claim_factor: 2.0,
        speed_noise: 0.1,
        time_limit_ms: 200_000,
        ..base(11, 0, 0)
    };
    let (report, simulation) = run(config);
    let capacity = &report.capacity;
    assert_eq!(capacity.epochs, 3, "{capacity:?}");
    assert!(capacity.liars > 4_000, "{capacity:?}");
    assert_eq!(capacity.liars_challenged, capacity.liars, "{capacity:?}");
    assert_eq!(capacity.liars_caught, capacity.liars, "{capacity:?}");
    assert_eq!(capacity.honest_late, 0, "{capacity:?}");
    assert_eq!(capacity.missed, 0, "no churn: {capacity:?}");
    // Every device is challenged each epoch; the first two epochs' answers
    // are all in (the third's are on their way when the run stops).
    assert_eq!(capacity.challenges, 3 * 100_000, "{capacity:?}");
    assert!(
        capacity.on_time + capacity.late >= 2 * 100_000,
        "{capacity:?}"
    );
    // A liar is caught by its first challenge's answer (the slowest,
    // at a quarter of the median speed, answer 2e10 fuel in under 90 s),
    // and the proof is close to its real speed.
    assert!(capacity.mean_ms_to_catch < 90_000, "{capacity:?}");
    assert!(capacity.proven_error_max < 0.35, "{capacity:?}");
    for device in simulation.devices() {
        if device.capacity_liar {
            // Corrected below its claim, to about its real speed (the
            // round-trip allowance lets it seem a little faster).
            let proven = device.proven.expect("every liar is proven");
            assert!(proven < device.claimed, "{device:?}");
            assert!(proven as f64 <= device.speed as f64 * 1.35, "{device:?}");
        } else {
            assert_eq!(device.proven, None, "{device:?}");
        }
    }
}

#[test]
fn without_liars_a_run_with_challenges_replays_and_penalizes_nobody() {
    let config = SimConfig {
        devices: 300,
        tasks: 300,
        challenge_epoch_ms: 5_000,
        challenge_share_bps: 5_000,
        session_mean_ms: 20_000,
        offline_mean_ms: 5_000,
        ..base(5, 0, 0)
    };
    let (mut first, _) = run(config.clone());
    let (mut second, _) = run(config);
    first.wall_ms = 0;
    second.wall_ms = 0;
    assert_eq!(first, second);
    let capacity = &first.capacity;
    assert!(capacity.challenges > 0, "{capacity:?}");
    assert_eq!(capacity.late, 0, "{capacity:?}");
    assert_eq!(capacity.liars, 0);
}
