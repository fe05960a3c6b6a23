//! The market driven through its inputs: placement, windows, leases,
//! payment and budget, checked by scenarios and by properties over random
//! event sequences (verification's scenarios are in `verification.rs`).

#[expect(dead_code, reason = "verification.rs uses the rest")]
mod harness;

use std::collections::{BTreeMap, BTreeSet};

use idlegrid_market::{
    Command, Decision, Input, Market, MarketConfig, Policy, Stall, TaskResult, Trust,
    spot_check_permille,
};
use idlegrid_types::{AccountId, JobId, Offer, TaskOutcome};
use proptest::prelude::*;

use harness::*;

#[test]
fn replicated_job_completes_pays_each_matching_replica_and_respects_windows() {
    let offers: Vec<_> = (1..=4)
        .map(|seed| (seed, offer(2, 1_000_000_000, 10), 100))
        .collect();
    let mut harness = Harness::new(MarketConfig::default(), &offers);
    harness.send(Input::SubmitJob(job(50, Policy::Replicas(2), u64::MAX)));
    for provider in &harness.providers {
        assert!(harness.market.in_flight(provider) <= 4);
    }
    while harness.finished().is_none() {
        harness.answer_all(&honest);
    }
    let summary = harness.finished().expect("finished");
    assert_eq!(summary.tasks_accepted, 50);
    assert_eq!(summary.fuel_useful, 50 * FUEL / 2);
    assert_eq!(summary.fuel_executed, 2 * summary.fuel_useful);
    let accepted = harness.accepted();
    assert!(
        accepted
            .iter()
            .all(|(task, outcome)| *outcome == truth(*task))
    );
    let vouchers = harness.vouchers();
    let paid: u64 = vouchers.values().map(|(amount, ..)| amount).sum();
    assert_eq!(paid, summary.paid);
    assert_eq!(paid, 100 * (FUEL / 2) * PRICE / 1_000_000);
}

#[test]
fn a_finished_job_keeps_only_its_totals() {
    let offers: Vec<_> = (1..=3)
        .map(|seed| (seed, offer(2, 1_000_000_000, 10), 100))
        .collect();
    let mut harness = Harness::new(MarketConfig::default(), &offers);
    harness.send(Input::SubmitJob(job(6, Policy::Replicas(2), u64::MAX)));
    while harness.finished().is_none() {
        harness.answer_all(&honest);
    }
    let summary = harness.finished().expect("finished");
    let id = JobId::from_bytes([1; 32]);
    assert_eq!(harness.market.summary(&id), Some(summary));
    assert_eq!(harness.market.committed(&id), Some(summary.paid));
    // A straggler's result and a resubmission change nothing.
    let late = harness.send(Input::Result {
        provider: account(1),
        job: id,
        task: 0,
        result: result(truth(0)),
    });
    assert!(late.is_empty());
    let again = harness.send(Input::SubmitJob(job(6, Policy::Replicas(2), u64::MAX)));
    assert!(again.is_empty());
    assert_eq!(harness.market.summary(&id), Some(summary));
}

#[test]
fn a_job_of_a_hundred_million_tasks_opens_its_tasks_only_as_they_are_placed() {
    // Expanding every task up front would take gigabytes and minutes; a
    // task is opened when placed and forgotten but for a bit once decided.
    let offers: Vec<_> = (1..=2)
        .map(|seed| (seed, offer(2, 1_000_000_000, 10), 100))
        .collect();
    let mut harness = Harness::new(MarketConfig::default(), &offers);
    let tasks = 100_000_000;
    harness.send(Input::SubmitJob(job(tasks, Policy::Replicas(1), u64::MAX)));
    let id = JobId::from_bytes([1; 32]);
    for _ in 0..50 {
        harness.answer_all(&honest);
    }
    let summary = harness.market.summary(&id).expect("running");
    assert!(summary.tasks_accepted >= 50, "{summary:?}");
    let in_flight = harness.market.in_flight_total();
    let waiting = harness.market.waiting(&id).expect("running");
    assert_eq!(
        waiting.pending + in_flight + summary.tasks_accepted,
        tasks,
        "every task is placed, waiting or decided, once"
    );
    let accepted = harness.accepted();
    assert_eq!(accepted.len() as u64, summary.tasks_accepted);
    assert!(
        accepted
            .iter()
            .all(|(task, outcome)| *outcome == truth(*task))
    );
    // Tasks go out in order, none twice.
    assert_eq!(
        accepted.keys().copied().collect::<Vec<_>>(),
        (0..summary.tasks_accepted).collect::<Vec<_>>()
    );
}

#[test]
fn providers_without_stake_or_above_the_price_get_nothing() {
    let offers = [
        (1, offer(4, 1_000_000_000, 10), 0),
        (2, offer(4, 1_000_000_000, PRICE + 1), 100),
        (3, offer(1, 1_000_000_000, PRICE), 100),
    ];
    let mut harness = Harness::new(MarketConfig::default(), &offers);
    harness.send(Input::SubmitJob(job(10, Policy::Replicas(1), u64::MAX)));
    while harness.finished().is_none() {
        harness.answer_all(&honest);
    }
    assert_eq!(harness.assigned_to(account(1)), 0);
    assert_eq!(harness.assigned_to(account(2)), 0);
    assert_eq!(harness.assigned_to(account(3)), 10);
}

#[test]
fn providers_offering_less_memory_than_the_tasks_may_use_get_nothing() {
    let mut small = offer(4, 1_000_000_000, 10);
    small.memory_bytes = (1 << 26) - 1;
    let offers = [(1, small, 100), (2, offer(1, 1_000_000_000, 10), 100)];
    let mut harness = Harness::new(MarketConfig::default(), &offers);
    // The job's tasks may use 64 MiB.
    harness.send(Input::SubmitJob(job(10, Policy::Replicas(1), u64::MAX)));
    while harness.finished().is_none() {
        harness.answer_all(&honest);
    }
    assert_eq!(harness.assigned_to(account(1)), 0);
    assert_eq!(harness.assigned_to(account(2)), 10);
}

/// An offer with a GPU of `vendor`'s class, at `gpu_floor` per million fuel.
fn gpu_offer(vendor: u32, gpu_floor: u64) -> Offer {
    let mut offer = offer(2, 1_000_000_000, 1);
    offer.gpu = Some(idlegrid_types::GpuOffer {
        name: idlegrid_types::Bounded::new(format!("gpu {vendor}")).expect("short"),
        vendor,
        device: 7,
        driver: idlegrid_types::Bounded::new("driver 1".to_owned()).expect("short"),
        fuel_per_second: 1_000_000_000,
        price_floor_per_million_fuel: gpu_floor,
    });
    offer
}

/// Each task's providers, from every assignment made.
fn placed(harness: &Harness) -> BTreeMap<u64, BTreeSet<AccountId>> {
    let mut placed: BTreeMap<u64, BTreeSet<_>> = BTreeMap::new();
    for command in &harness.log {
        if let Command::Assign {
            provider, tasks, ..
        } = command
        {
            for task in tasks {
                placed.entry(*task).or_default().insert(*provider);
            }
        }
    }
    placed
}

#[test]
fn gpu_tasks_go_only_to_gpu_offers_within_the_gpu_price() {
    let offers = [
        // The cheapest and fastest, without a GPU.
        (1, offer(8, 4_000_000_000, 1), 100),
        (2, gpu_offer(1, 10), 100),
        // A GPU above the job's price.
        (3, gpu_offer(1, PRICE + 1), 100),
    ];
    let mut harness = Harness::new(MarketConfig::default(), &offers);
    let mut spec = job(20, Policy::Replicas(1), u64::MAX);
    spec.gpu = Some(idlegrid_types::GpuClass::Exact);
    harness.send(Input::SubmitJob(spec));
    while harness.finished().is_none() {
        harness.answer_all(&honest);
    }
    assert_eq!(harness.assigned_to(account(1)), 0);
    assert_eq!(harness.assigned_to(account(2)), 20);
    assert_eq!(harness.assigned_to(account(3)), 0);
    assert_eq!(harness.accepted().len(), 20);
}

#[test]
fn a_gpu_task_s_lease_follows_the_gpu_speed_the_chain_proved() {
    // The lease a GPU task gets on a provider whose GPU the chain proved
    // `usable` fast (0: never challenged).
    let lease = |usable: u64| {
        let mut harness = Harness::new(MarketConfig::default(), &[(1, gpu_offer(1, 1), 100)]);
        let mut standing = standing(100);
        standing.usable_gpu_fuel_per_second = usable;
        harness.send(Input::Standing {
            provider: account(1),
            standing,
        });
        let mut spec = job(1, Policy::Replicas(1), u64::MAX);
        spec.gpu = Some(idlegrid_types::GpuClass::Exact);
        harness.send(Input::SubmitJob(spec));
        harness
            .log
            .iter()
            .find_map(|command| match command {
                Command::Assign {
                    lease_deadline_ms, ..
                } => Some(*lease_deadline_ms),
                _ => None,
            })
            .expect("the task is placed")
    };
    let factor = MarketConfig::default().lease_factor;
    // The offer says 1e9 fuel/s: a millisecond a task. Proven at 1e6, a
    // task of `FUEL` takes a second, and its lease allows for that.
    let offered = lease(0);
    let proven = lease(1_000_000);
    assert_eq!(proven - offered, (FUEL * 1_000 / 1_000_000 - 1) * factor);
    // A proof above the offer changes nothing: the offer is the most.
    assert_eq!(lease(1_000_000_000_000), offered);
}

#[test]
fn a_class_task_s_replicas_all_run_on_one_class_of_gpu() {
    let offers = [
        (1, gpu_offer(1, 1), 100),
        (2, gpu_offer(2, 1), 100),
        (3, gpu_offer(1, 1), 100),
        (4, gpu_offer(2, 1), 100),
    ];
    let class_of = |provider: &AccountId| {
        if [account(1), account(3)].contains(provider) {
            1
        } else {
            2
        }
    };
    for (class, mixed) in [
        (idlegrid_types::GpuClass::Class, false),
        (idlegrid_types::GpuClass::Exact, true),
    ] {
        let mut harness = Harness::new(MarketConfig::default(), &offers);
        let mut spec = job(40, Policy::Replicas(2), u64::MAX);
        spec.gpu = Some(class);
        harness.send(Input::SubmitJob(spec));
        while harness.finished().is_none() {
            harness.answer_all(&honest);
        }
        assert_eq!(harness.accepted().len(), 40);
        let placed = placed(&harness);
        let spans_classes = |providers: &BTreeSet<_>| {
            providers
                .iter()
                .map(class_of)
                .collect::<BTreeSet<_>>()
                .len()
                > 1
        };
        // Exact tasks go to any GPU; class tasks never cross classes.
        assert_eq!(
            placed.values().any(spans_classes),
            mixed,
            "{class:?}: {placed:?}"
        );
        assert!(placed.values().all(|providers| providers.len() == 2));
    }
}

#[test]
fn fast_providers_get_more_work_than_slow_ones() {
    let offers = [
        (1, offer(2, 4_000_000_000, 10), 100),
        (2, offer(2, 250_000_000, 10), 100),
    ];
    let mut harness = Harness::new(MarketConfig::default(), &offers);
    harness.send(Input::SubmitJob(job(200, Policy::Replicas(1), u64::MAX)));
    // The fast provider answers every round; the slow one every fourth.
    let mut round = 0u64;
    while harness.finished().is_none() {
        round += 1;
        let slow = account(2);
        let this_round = round;
        harness.answer_all(&move |provider, task| {
            (provider != slow || this_round.is_multiple_of(4)).then(|| truth(task))
        });
    }
    assert!(harness.assigned_to(account(1)) > 3 * harness.assigned_to(account(2)));
}

#[test]
fn short_tasks_widen_a_providers_window_and_a_batch_of_results_pays_once() {
    // One core, a deep queue offered, a billion fuel a second.
    let deep = Offer {
        concurrency: 1_000,
        ..offer(1, 1_000_000_000, 10)
    };
    let provider = account(1);
    let id = JobId::from_bytes([1; 32]);
    let mut market = Market::new(MarketConfig::default());
    market.handle(
        0,
        Input::Offer {
            provider,
            offer: deep,
        },
    );
    market.handle(
        0,
        Input::Standing {
            provider,
            standing: standing(100),
        },
    );
    market.handle(0, Input::Connected(provider));
    let assigned = |commands: &[Command]| -> Vec<(u64, u64)> {
        commands
            .iter()
            .flat_map(|command| match command {
                Command::Assign {
                    tasks,
                    lease_deadline_ms,
                    ..
                } => tasks
                    .iter()
                    .map(|task| (*task, *lease_deadline_ms))
                    .collect(),
                _ => Vec::new(),
            })
            .collect()
    };
    // Nothing is known of the tasks yet: the least window.
    let first = assigned(&market.handle(
        0,
        Input::SubmitJob(job(1_000, Policy::Replicas(1), u64::MAX)),
    ));
    assert_eq!(first.len(), 2);
    // Each assigned task answered, having used `fuel_used`.
    let answer_using = |tasks: &[(u64, u64)], fuel_used: u64| -> Vec<Input> {
        tasks
            .iter()
            .map(|(task, _)| Input::Result {
                provider,
                job: id,
                task: *task,
                result: TaskResult {
                    outcome: truth(*task),
                    fuel_used,
                    receipt: None,
                },
            })
            .collect()
    };
    let answer = |tasks: &[(u64, u64)]| answer_using(tasks, 1_000);
    // Tasks of a microsecond: it is given twenty milliseconds of them,
    // up to the most per core.
    let commands = market.handle_all(1, answer(&first));
    let second = assigned(&commands);
    let most = MarketConfig::default().tasks_per_core_max as usize;
    assert_eq!(second.len(), most);
    assert_eq!(market.in_flight(&provider) as usize, most);
    // The lease covers the queue in front of the last task: a millisecond
    // a task (a million fuel at most), three times over, plus the base.
    let config = MarketConfig::default();
    let lease = second[most - 1].1 - 1;
    assert!(
        lease >= config.lease_base_ms + config.lease_factor * most as u64,
        "lease of {lease} ms"
    );
    let vouchers = |commands: &[Command]| {
        commands
            .iter()
            .filter(|command| matches!(command, Command::Voucher { .. }))
            .count()
    };
    assert_eq!(vouchers(&commands), 1, "one voucher for two results");
    // Sixty-four results at once: one voucher, and the window refilled.
    let commands = market.handle_all(2, answer(&second));
    assert_eq!(vouchers(&commands), 1);
    assert_eq!(assigned(&commands).len(), most);
    // Tasks that turn out long shrink it back: nothing more is placed
    // until it holds fewer than two.
    let third = assigned(&commands);
    let long = answer_using(&third, FUEL);
    let commands = market.handle_all(3, long);
    assert!(market.window(&provider) < most as u32);
    assert!(assigned(&commands).len() <= market.window(&provider) as usize);
}

#[test]
fn a_crashed_provider_loses_its_leases_and_nothing_is_lost() {
    let offers = [
        (1, offer(2, 1_000_000_000, 10), 100),
        (2, offer(2, 1_000_000_000, 10), 100),
    ];
    let mut harness = Harness::new(MarketConfig::default(), &offers);
    harness.send(Input::SubmitJob(job(20, Policy::Replicas(1), u64::MAX)));
    let crashed = account(1);
    let mut rounds = 0;
    while harness.finished().is_none() {
        rounds += 1;
        assert!(rounds < 1_000, "the job never finished");
        harness.answer_all(&move |provider, task| (provider != crashed).then(|| truth(task)));
        harness.now += 60_000;
        harness.send(Input::Tick);
    }
    assert_eq!(harness.finished().expect("finished").tasks_accepted, 20);
    assert!(
        harness
            .accepted()
            .iter()
            .all(|(task, outcome)| *outcome == truth(*task))
    );
    assert!(
        !harness.vouchers().contains_key(&crashed),
        "silent work is never paid"
    );
}

#[test]
fn a_lost_provider_is_reissued_at_once() {
    let offers = [
        (1, offer(4, 1_000_000_000, 10), 100),
        (2, offer(4, 1_000_000_000, 10), 100),
    ];
    let mut harness = Harness::new(MarketConfig::default(), &offers);
    harness.send(Input::SubmitJob(job(6, Policy::Replicas(1), u64::MAX)));
    let gone = account(1);
    assert!(harness.market.in_flight(&gone) > 0);
    harness.send(Input::Lost(gone));
    harness
        .outstanding
        .retain(|(provider, _)| *provider != gone);
    while harness.finished().is_none() {
        harness.answer_all(&honest);
    }
    assert_eq!(harness.finished().expect("finished").tasks_accepted, 6);
}

#[test]
fn the_budget_is_never_exceeded_and_the_job_says_it_stalled() {
    let offers: Vec<_> = (1..=4)
        .map(|seed| (seed, offer(4, 1_000_000_000, 10), 100))
        .collect();
    let mut harness = Harness::new(MarketConfig::default(), &offers);
    let budget = 10 * COST;
    harness.send(Input::SubmitJob(job(100, Policy::Replicas(1), budget)));
    for _ in 0..50 {
        harness.answer_all(&honest);
        assert!(
            harness
                .market
                .committed(&JobId::from_bytes([1; 32]))
                .expect("job")
                <= budget
        );
    }
    assert!(harness.log.contains(&Command::JobStalled {
        job: JobId::from_bytes([1; 32]),
        reason: Stall::Budget
    }));
    let paid: u64 = harness.vouchers().values().map(|(amount, ..)| amount).sum();
    assert!(paid <= budget);
    assert!(harness.finished().is_none());
}

/// One random step of the world around the market.
#[derive(Debug, Clone)]
enum Step {
    Answer { pick: usize, lie: bool },
    Fail { pick: usize },
    Lose { provider: u8 },
    Reconnect { provider: u8 },
    Tick { advance_ms: u64 },
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        6 => (any::<usize>(), prop::bool::weighted(0.2)).prop_map(|(pick, lie)| Step::Answer { pick, lie }),
        1 => any::<usize>().prop_map(|pick| Step::Fail { pick }),
        1 => (1u8..=6).prop_map(|provider| Step::Lose { provider }),
        1 => (1u8..=6).prop_map(|provider| Step::Reconnect { provider }),
        1 => (0u64..20_000).prop_map(|advance_ms| Step::Tick { advance_ms }),
    ]
}

fn policy() -> impl Strategy<Value = Policy> {
    prop_oneof![(1u8..=3).prop_map(Policy::Replicas), Just(Policy::Adaptive)]
}

proptest! {
    /// A lie checked with the spot-check odds loses more in expectation
    /// than it gains, however much history the liar built first.
    #[test]
    fn spot_check_odds_make_every_lie_a_loss(
        history in 0u32..1_000_000,
        value in 1u64..1_000_000_000,
        slashable in 1u64..1_000_000_000_000,
        floor in 0u32..1_000,
        halving in 0u32..1_000,
    ) {
        let trust = Trust { after: 0, halving, floor_permille: floor };
        let permille = spot_check_permille(history, value, slashable, &trust);
        prop_assert!(permille >= floor.min(1_000) && permille <= 1_000);
        // Expected gain of one lie: (1 − q)·value − q·slashable < 0.
        let gain = u128::from(1_000 - permille) * u128::from(value);
        let loss = u128::from(permille) * u128::from(slashable);
        prop_assert!(gain < loss, "q = {permille}‰: gain {gain} ≥ loss {loss}");
    }
}

/// Notes an answer the market will count: one given before its task was
/// decided again, and the first of its generation (a provider holding a
/// stale copy of an assignment it already answered is not heard twice).
fn record(
    harness: &Harness,
    answers: &mut BTreeMap<(AccountId, u64), TaskOutcome>,
    generations: &mut BTreeMap<(AccountId, u64), u32>,
    provider: AccountId,
    task: u64,
    outcome: TaskOutcome,
) {
    if !harness.counts(provider, task) {
        return;
    }
    let generation = harness.decisions_made.get(&task).copied().unwrap_or(0);
    if generations.insert((provider, task), generation) != Some(generation) {
        answers.insert((provider, task), outcome);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn random_event_sequences_keep_the_market_honest(
        providers in prop::collection::vec((1u32..=3, 0u64..3, prop::bool::weighted(0.85)), 6),
        tasks in 1u64..30,
        policy in policy(),
        budget_tasks in prop_oneof![Just(u64::MAX / COST), 1u64..60],
        steps in prop::collection::vec(step(), 0..300),
        seed in any::<u64>(),
    ) {
        let offers: Vec<(u8, Offer, u64)> = providers
            .iter()
            .enumerate()
            .map(|(index, (cores, speed, staked))| {
                let seed = u8::try_from(index + 1).expect("few providers");
                (seed, offer(*cores, (speed + 1) * 500_000_000, 10), u64::from(*staked) * 100)
            })
            .collect();
        let unstaked: Vec<AccountId> = offers
            .iter()
            .filter(|(_, _, stake)| *stake == 0)
            .map(|(seed, ..)| account(*seed))
            .collect();
        let trust = Trust { after: 3, ..Trust::default() };
        let config = MarketConfig { seed, trust, ..MarketConfig::default() };
        let mut harness = Harness::new(config, &offers);
        let budget = budget_tasks.saturating_mul(COST);
        let job_id = JobId::from_bytes([1; 32]);
        harness.send(Input::SubmitJob(job(tasks, policy, budget)));
        let mut answers: BTreeMap<(AccountId, u64), TaskOutcome> = BTreeMap::new();
        // How many times its task had been decided when each answer came.
        let mut generations: BTreeMap<(AccountId, u64), u32> = BTreeMap::new();

        let run = |harness: &mut Harness, step: &Step, answers: &mut BTreeMap<(AccountId, u64), TaskOutcome>, generations: &mut BTreeMap<(AccountId, u64), u32>| {
            match step {
                Step::Answer { pick, lie: lying } => {
                    if harness.outstanding.is_empty() {
                        return;
                    }
                    let (provider, task) = harness.outstanding.swap_remove(pick % harness.outstanding.len());
                    let outcome = if *lying { lie(task) } else { truth(task) };
                    // Results after the decision are ignored, and not paid.
                    record(harness, answers, generations, provider, task, outcome);
                    harness.send(Input::Result { provider, job: job_id, task, result: result(outcome) });
                }
                Step::Fail { pick } => {
                    if harness.outstanding.is_empty() {
                        return;
                    }
                    let (provider, task) = harness.outstanding.swap_remove(pick % harness.outstanding.len());
                    harness.send(Input::ProviderFailed { provider, job: job_id, task });
                }
                Step::Lose { provider } => {
                    let provider = account(*provider);
                    harness.outstanding.retain(|(holder, _)| *holder != provider);
                    harness.send(Input::Lost(provider));
                }
                Step::Reconnect { provider } => {
                    harness.send(Input::Connected(account(*provider)));
                }
                Step::Tick { advance_ms } => {
                    harness.now += advance_ms;
                    harness.send(Input::Tick);
                }
            }
        };
        for step in &steps {
            run(&mut harness, step, &mut answers, &mut generations);
            prop_assert!(harness.market.committed(&job_id).expect("job") <= budget);
        }
        for provider in &unstaked {
            prop_assert_eq!(harness.assigned_to(*provider), 0, "a provider without stake got work");
        }
        // Drain: everyone stakes, reconnects and answers honestly until the job ends.
        for provider in 1..=6u8 {
            harness.send(Input::Standing { provider: account(provider), standing: standing(100) });
            harness.send(Input::Connected(account(provider)));
        }
        for _ in 0..2_000 {
            if harness.finished().is_some() || harness.log.iter().any(|c| matches!(c, Command::JobStalled { .. })) && harness.outstanding.is_empty() {
                break;
            }
            while let Some((provider, task)) = harness.outstanding.pop() {
                record(&harness, &mut answers, &mut generations, provider, task, truth(task));
                harness.send(Input::Result { provider, job: job_id, task, result: result(truth(task)) });
            }
            harness.now += 1_000_000;
            harness.send(Input::Tick);
        }
        prop_assert!(harness.market.committed(&job_id).expect("job") <= budget);

        // Each task ends at most once, accepted or failed.
        let accepted = harness.accepted();
        let failed: BTreeSet<u64> = harness.log.iter().filter_map(|c| match c {
            Command::TaskFailed { task, .. } => Some(*task),
            _ => None,
        }).collect();
        prop_assert!(accepted.keys().all(|task| !failed.contains(task)));
        let stalled = harness.log.iter().any(|c| matches!(c, Command::JobStalled { .. }));
        if let Some(summary) = harness.finished() {
            prop_assert_eq!(summary.tasks_accepted + summary.tasks_failed, tasks);
            prop_assert_eq!(accepted.len() as u64 + failed.len() as u64, tasks);
        } else if !stalled {
            // A task may only wait when every provider has already answered
            // it (replicas of a task need distinct providers).
            for task in (0..tasks).filter(|task| !harness.decided.contains(task)) {
                let tried = answers.keys().filter(|(_, t)| *t == task).count();
                prop_assert_eq!(tried, 6, "task {} waits with untried providers", task);
            }
        }
        // Payment: exactly the accepted work, once per matching provider.
        // An answer is paid by the decision that follows it, if that accepts
        // the same outcome (a task reopened after a backer was caught may be
        // decided again; what an earlier acceptance paid stays paid).
        let mut acceptances: Vec<(u64, u32, TaskOutcome)> = Vec::new();
        let mut decided_times: BTreeMap<u64, u32> = BTreeMap::new();
        for command in &harness.log {
            match command {
                Command::TaskAccepted { task, outcome, .. } => {
                    let count = decided_times.entry(*task).or_default();
                    *count += 1;
                    acceptances.push((*task, *count, *outcome));
                }
                Command::TaskFailed { task, .. } => *decided_times.entry(*task).or_default() += 1,
                _ => {}
            }
        }
        let mut expected: BTreeMap<AccountId, u64> = BTreeMap::new();
        for ((provider, task), outcome) in &answers {
            let generation = generations[&(*provider, *task)];
            if acceptances.contains(&(*task, generation + 1, *outcome)) {
                *expected.entry(*provider).or_default() += (FUEL / 2) * PRICE / 1_000_000;
            }
        }
        // A provider caught lying is paid for nothing it answered after.
        let vouchers = harness.vouchers();
        let caught = harness.frauds();
        for (provider, (amount, fuel, _)) in &vouchers {
            let owed = expected.get(provider).copied().unwrap_or(0);
            if caught.contains(provider) {
                prop_assert!(*amount <= owed);
            } else {
                prop_assert_eq!(*amount, owed);
            }
            prop_assert_eq!(u128::from(*fuel) * u128::from(PRICE), u128::from(*amount) * 1_000_000);
        }
        for (provider, amount) in &expected {
            if !caught.contains(provider) {
                prop_assert_eq!(vouchers.get(provider).map(|v| v.0), Some(*amount));
            }
        }
        let paid: u64 = vouchers.values().map(|v| v.0).sum();
        prop_assert!(paid <= budget);
        // A quorum: under replicas(n), each outcome accepted on providers'
        // word came from n of them; one decided by re-execution is the truth.
        for (task, (outcome, decision)) in harness.decisions() {
            match decision {
                Decision::ReExecution => prop_assert_eq!(outcome, truth(task)),
                Decision::Quorum => {
                    if let Policy::Replicas(n) = policy {
                        let agreeing = answers.iter().filter(|((_, t), o)| *t == task && **o == outcome).count();
                        prop_assert!(agreeing >= usize::from(n), "task {} accepted with {} votes", task, agreeing);
                    }
                }
            }
        }
        // No provider that only ever told the truth is reported.
        for provider in harness.frauds() {
            prop_assert!(
                answers.iter().any(|((p, task), outcome)| *p == provider && *outcome != truth(*task)),
                "an honest provider was reported"
            );
        }
    }
}

#[test]
fn a_lease_allows_for_fetching_the_task_s_input_files() {
    let offers = [(1, offer(1, 1_000_000_000, 10), 100)];
    let mut harness = Harness::new(MarketConfig::default(), &offers);
    let mut spec = job(1, Policy::Replicas(1), u64::MAX);
    // 32 s at the default 8 MiB/s, far past the run-time lease.
    spec.input_bytes = 256 << 20;
    harness.send(Input::SubmitJob(spec));
    let provider = account(1);
    assert_eq!(harness.market.in_flight(&provider), 1);
    harness.now += 30_000;
    harness.send(Input::Tick);
    assert_eq!(
        harness.market.in_flight(&provider),
        1,
        "still fetching its input, not taken for dead"
    );
    harness.now += 10_000;
    harness.send(Input::Tick);
    assert_eq!(
        harness.market.in_flight(&provider),
        0,
        "past the allowance, the lease expires"
    );
}
