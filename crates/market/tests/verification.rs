//! The market's verification driven through its inputs: disagreements
//! settled by re-execution, audits after a catch, trust from history and
//! the ledger's record, stake cover and spot checks.

#[expect(dead_code, reason = "the properties in market.rs use the rest")]
mod harness;

use std::collections::BTreeSet;

use idlegrid_market::{Command, Decision, Input, MarketConfig, Policy, Standing, Trust};
use idlegrid_types::JobId;

use harness::*;

#[test]
fn a_disagreement_is_decided_by_re_execution_and_only_the_liar_is_reported() {
    let offers: Vec<_> = (1..=5)
        .map(|seed| (seed, offer(1, 1_000_000_000, 10), 100))
        .collect();
    let mut harness = Harness::new(MarketConfig::default(), &offers);
    harness.send(Input::SubmitJob(job(10, Policy::Replicas(2), u64::MAX)));
    let cheater = account(1);
    while harness.finished().is_none() {
        harness.answer_all(&move |provider, task| {
            Some(if provider == cheater {
                lie(task)
            } else {
                truth(task)
            })
        });
    }
    assert!(
        harness
            .accepted()
            .iter()
            .all(|(task, outcome)| *outcome == truth(*task))
    );
    assert!(harness.referees() >= 1);
    assert_eq!(harness.frauds(), BTreeSet::from([cheater]));
    assert!(
        !harness.vouchers().contains_key(&cheater),
        "rejected work is never paid"
    );
}

#[test]
fn liars_agreeing_with_each_other_are_never_believed_over_the_re_execution() {
    // Three of four providers tell the same lie: a vote would accept it.
    let offers: Vec<_> = (1..=4)
        .map(|seed| (seed, offer(1, 1_000_000_000, 10), 100))
        .collect();
    let mut harness = Harness::new(MarketConfig::default(), &offers);
    harness.send(Input::SubmitJob(job(12, Policy::Replicas(3), u64::MAX)));
    let colluders = [account(1), account(2), account(3)];
    while harness.finished().is_none() {
        harness.answer_all(&move |provider, task| {
            Some(if colluders.contains(&provider) {
                lie(task)
            } else {
                truth(task)
            })
        });
    }
    assert!(
        harness
            .accepted()
            .iter()
            .all(|(task, outcome)| *outcome == truth(*task))
    );
    assert_eq!(harness.frauds(), BTreeSet::from(colluders));
    assert!(!harness.frauds().contains(&account(4)));
}

#[test]
fn tasks_accepted_on_a_liar_s_word_are_checked_again_once_it_is_caught() {
    // Two colluders and one honest provider, two replicas a task: tasks
    // given to the pair are accepted on their matching lie until one of
    // them meets the honest provider on a task and is caught.
    let offers: Vec<_> = (1..=3)
        .map(|seed| (seed, offer(1, 1_000_000_000, 10), 100))
        .collect();
    let mut harness = Harness::new(MarketConfig::default(), &offers);
    harness.send(Input::SubmitJob(job(30, Policy::Replicas(2), u64::MAX)));
    let colluders = [account(1), account(2)];
    let mut steps = 0;
    while harness.finished().is_none() {
        harness.answer_all(&move |provider, task| {
            Some(if colluders.contains(&provider) {
                lie(task)
            } else {
                truth(task)
            })
        });
        steps += 1;
        assert!(steps < 1_000, "the job never finished");
    }
    let reopened = harness
        .log
        .iter()
        .filter(|command| matches!(command, Command::TaskReopened { .. }))
        .count();
    assert!(reopened > 0, "no lie was ever accepted to be rechecked");
    assert!(
        harness
            .accepted()
            .iter()
            .all(|(task, outcome)| *outcome == truth(*task)),
        "a wrong result stands at the end"
    );
    let summary = harness.finished().expect("finished");
    assert_eq!(summary.tasks_accepted, 30);
    assert_eq!(summary.tasks_reopened, reopened as u64);
    assert_eq!(harness.frauds(), BTreeSet::from(colluders));
}

#[test]
fn a_verdict_whose_output_is_not_held_waits_for_a_provider_to_match_it() {
    let offers: Vec<_> = (1..=3)
        .map(|seed| (seed, offer(1, 1_000_000_000, 10), 100))
        .collect();
    let mut harness = Harness::new(MarketConfig::default(), &offers);
    harness.referee = Some(false);
    harness.send(Input::SubmitJob(job(1, Policy::Replicas(2), u64::MAX)));
    // The first two answer with two different lies.
    let mut answered = 0;
    while harness.finished().is_none() {
        harness.answer_all(&move |provider, task| {
            Some(match provider {
                p if p == account(1) => lie(task),
                p if p == account(2) => lie(task + 7),
                _ => truth(task),
            })
        });
        answered += 1;
        assert!(answered < 100, "the job never finished");
    }
    let decisions = harness.decisions();
    assert_eq!(decisions[&0], (truth(0), Decision::ReExecution));
    assert_eq!(harness.frauds(), BTreeSet::from([account(1), account(2)]));
    assert_eq!(
        harness.vouchers().keys().copied().collect::<Vec<_>>(),
        vec![account(3)]
    );
}

/// Two fresh providers that return the same lie (a colluding pair, or lazy
/// ones returning one constant) are the first two asked.
fn fresh_pair_lies(vouching_providers_min: usize) -> Harness {
    let offers: Vec<_> = (1..=5)
        .map(|seed| (seed, offer(1, 1_000_000_000, 10), 100))
        .collect();
    let config = MarketConfig {
        vouching_providers_min,
        ..MarketConfig::default()
    };
    let mut harness = Harness::new(config, &offers);
    harness.send(Input::SubmitJob(job(1, Policy::Adaptive, u64::MAX)));
    let pair = [account(1), account(2)];
    while harness.finished().is_none() {
        harness.answer_all(&move |provider, task| {
            Some(if pair.contains(&provider) {
                lie(task)
            } else {
                truth(task)
            })
        });
    }
    assert_eq!(harness.assigned_to(account(1)), 1);
    assert_eq!(harness.assigned_to(account(2)), 1);
    harness
}

#[test]
fn fresh_providers_cannot_vouch_for_each_other_under_adaptive() {
    // Without vouching the pair's matching lie would carry the task...
    let unguarded = fresh_pair_lies(usize::MAX);
    assert_eq!(unguarded.accepted().get(&0), Some(&lie(0)));
    // ...with it, a third opinion is asked, the disagreement goes to a
    // referee, and the pair is reported.
    let guarded = fresh_pair_lies(5);
    assert_eq!(guarded.accepted().get(&0), Some(&truth(0)));
    assert_eq!(guarded.frauds(), BTreeSet::from([account(1), account(2)]));
}

#[test]
fn adaptive_trusts_providers_after_a_run_of_valid_results() {
    let offers: Vec<_> = (1..=3)
        .map(|seed| (seed, offer(2, 1_000_000_000, 10), 100))
        .collect();
    let config = MarketConfig {
        trust: Trust {
            after: 5,
            ..Trust::default()
        },
        ..MarketConfig::default()
    };
    let mut harness = Harness::new(config, &offers);
    harness.send(Input::SubmitJob(job(400, Policy::Adaptive, u64::MAX)));
    while harness.finished().is_none() {
        harness.answer_all(&honest);
    }
    let summary = harness.finished().expect("finished");
    assert_eq!(summary.tasks_accepted, 400);
    // Untrusted results are replicated; trusted ones mostly are not.
    let overhead = summary.fuel_executed as f64 / summary.fuel_useful as f64;
    assert!(overhead > 1.0 && overhead < 1.5, "overhead {overhead}");
}

/// Overhead (fuel executed over fuel useful) of a 300-task adaptive job
/// answered honestly by three providers the ledger describes by `ledger`.
fn honest_overhead(ledger: Standing) -> f64 {
    let offers: Vec<_> = (1..=3)
        .map(|seed| (seed, offer(2, 1_000_000_000, 10), 100))
        .collect();
    let mut harness = Harness::new(MarketConfig::default(), &offers);
    for seed in 1..=3 {
        harness.send(Input::Standing {
            provider: account(seed),
            standing: ledger,
        });
    }
    harness.send(Input::SubmitJob(job(300, Policy::Adaptive, u64::MAX)));
    while harness.finished().is_none() {
        harness.answer_all(&honest);
    }
    let summary = harness.finished().expect("finished");
    assert_eq!(summary.tasks_accepted, 300);
    summary.fuel_executed as f64 / summary.fuel_useful as f64
}

/// Paid for 1,000 tasks' fuel across five jobs, and staked to cover 1,000
/// results.
fn with_record() -> Standing {
    Standing {
        fuel_paid: 1_000 * FUEL,
        jobs_paid: 5,
        ..standing(1_000)
    }
}

#[test]
fn a_record_on_the_ledger_earns_trust_from_the_first_result() {
    let fresh = honest_overhead(standing(1_000));
    let known = honest_overhead(with_record());
    // Only spot checks are replicated for providers with history.
    assert!(known < 1.1, "overhead {known} with a record");
    assert!(
        known < fresh,
        "a record saved nothing: {known} against {fresh}"
    );
}

#[test]
fn a_record_with_a_lost_dispute_carries_no_trust() {
    let known = honest_overhead(with_record());
    let disputed = honest_overhead(Standing {
        disputes_lost: 1,
        ..with_record()
    });
    assert!(disputed > known + 0.05, "{disputed} against {known}");
}

#[test]
fn results_accepted_on_one_word_never_exceed_what_its_stake_covers() {
    let covered = honest_overhead(with_record());
    // A slash covering five results' value: the rest must be replicated.
    let thin = honest_overhead(Standing {
        slashable: 5 * COST / 2,
        ..with_record()
    });
    assert!(covered < 1.1, "overhead {covered}");
    // 300 tasks, at most 3 × 5 of them on one word.
    assert!(thin >= 2.0 - 15.0 / 300.0, "overhead {thin}");
}

#[test]
fn a_lone_provider_s_results_are_said_to_wait_for_a_second_opinion() {
    let offers = [(1, offer(2, 1_000_000_000, 10), 100)];
    let config = MarketConfig {
        referee_unanswerable: false,
        ..MarketConfig::default()
    };
    let mut harness = Harness::new(config, &offers);
    let id = JobId::from_bytes([1; 32]);
    harness.send(Input::SubmitJob(job(6, Policy::Adaptive, u64::MAX)));
    let before = harness.market.waiting(&id).expect("running");
    assert_eq!((before.second_opinion, before.providers_ready), (0, 1));
    for _ in 0..10 {
        harness.answer_all(&honest);
    }
    let waiting = harness.market.waiting(&id).expect("running");
    assert_eq!(waiting.second_opinion, 6, "{waiting:?}");
    assert_eq!(waiting.refereeing, 0);
    // Once a second provider is ready, nothing waits on it any more.
    harness.send(Input::Offer {
        provider: account(2),
        offer: offer(2, 1_000_000_000, 10),
    });
    harness.send(Input::Standing {
        provider: account(2),
        standing: standing(100),
    });
    harness.send(Input::Connected(account(2)));
    let waiting = harness.market.waiting(&id).expect("running");
    assert_eq!(waiting.second_opinion, 0, "{waiting:?}");
    while harness.finished().is_none() {
        harness.answer_all(&honest);
    }
    assert!(harness.market.waiting(&id).is_none());
}

#[test]
fn adaptive_never_accepts_an_untrusted_liar() {
    let offers: Vec<_> = (1..=3)
        .map(|seed| (seed, offer(2, 1_000_000_000, 10), 100))
        .collect();
    let mut harness = Harness::new(MarketConfig::default(), &offers);
    harness.send(Input::SubmitJob(job(100, Policy::Adaptive, u64::MAX)));
    let liar = account(1);
    while harness.finished().is_none() {
        harness.answer_all(&move |provider, task| {
            Some(if provider == liar {
                lie(task)
            } else {
                truth(task)
            })
        });
    }
    assert!(
        harness
            .accepted()
            .iter()
            .all(|(task, outcome)| *outcome == truth(*task))
    );
    assert!(harness.frauds().contains(&liar));
}
