//! The requestor's decisions without a network: placement, which results
//! count, payment and disputes, driven through `RequestorCore`.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use idlegrid_market::{MarketConfig, Standing, Trust};
use idlegrid_net::{Request, Response, ResultBatch, TaskReturn};
use idlegrid_requestor::core::{
    AcceptedOutput, Command, DISPUTES_PER_PROVIDER_MAX, Input, REFEREE_FUEL_DEFAULT, ReExecution,
    RequestorCore,
};
use idlegrid_requestor::{TaskRecord, Verification};
use idlegrid_types::codec::Bounded;
use idlegrid_types::{AccountId, ContentId, JobId, Receipt, TaskOutcome};
use proptest::prelude::*;

mod common;

use common::*;

#[test]
fn tasks_are_placed_once_a_provider_offers_is_staked_and_connected() {
    let mut core = requestor(3, Verification::Replicas(1));
    let provider = key(10).account_id();
    let commands = join(&mut core, provider);
    // One core: a window of two tasks until their cost is known.
    let placed = sent_tasks(&commands);
    assert_eq!(placed, vec![(provider, vec![0, 1])]);
    let (_, batch) = &batches(&commands)[0];
    assert_eq!(batch.job, job());
    assert_eq!(batch.module, ContentId::of(MODULE));
    assert_eq!(batch.price_per_million_fuel, PRICE);
    assert_eq!(batch.tasks[1].input, input(1));
    assert_eq!(core.first_placed_us(), Some(NOW));
}

#[test]
fn an_output_providers_keep_is_accepted_by_its_id_and_fetched_from_those_that_agree() {
    let mut core = requestor(1, Verification::Replicas(2));
    let (first, second) = (key(10), key(11));
    join(&mut core, first.account_id());
    join(&mut core, second.account_id());
    // Within the job's output bound (1 KiB); what size a provider keeps
    // from is its own choice.
    let output = vec![7u8; 1000];
    let length = output.len() as u64;
    core.input(
        NOW,
        kept_results(1, &first, vec![(receipt(0, &output), length)]),
    );
    assert!(accepted(&core.step(NOW)).is_empty(), "one of two replicas");
    core.input(
        NOW,
        kept_results(2, &second, vec![(receipt(0, &output), length)]),
    );
    let commands = core.step(NOW);
    let [
        (
            0,
            Some((
                file,
                AcceptedOutput::Kept {
                    cid,
                    bytes,
                    holders,
                },
            )),
        ),
    ] = &accepted_outputs(&commands)[..]
    else {
        panic!("not accepted as kept: {commands:?}");
    };
    assert_eq!(file, "tasks/000000.out");
    assert_eq!((*cid, *bytes), (ContentId::of(&output), length));
    assert_eq!(holders, &vec![first.account_id(), second.account_id()]);
    let record = &records(&commands)[&0];
    assert_eq!(record.output, Some(ContentId::of(&output).to_string()));
    // Both replicas are paid: they compared ids, not bytes.
    assert_eq!(vouchers(&commands).len(), 2);
}

#[test]
fn an_output_sent_is_preferred_to_one_kept_and_a_kept_output_over_the_bound_counts_for_nothing() {
    let mut core = requestor(2, Verification::Replicas(2));
    let (first, second) = (key(10), key(11));
    join(&mut core, first.account_id());
    join(&mut core, second.account_id());
    core.input(NOW, kept_results(1, &first, vec![(receipt(0, b"zero"), 4)]));
    core.input(
        NOW,
        results(2, &second, vec![(receipt(0, b"zero"), b"zero".to_vec())]),
    );
    assert_eq!(
        accepted(&core.step(NOW)),
        vec![(0, Some(("tasks/000000.out".to_owned(), b"zero".to_vec())))]
    );

    // The job bounds outputs at 1 KiB: a provider claiming to keep more
    // gave no usable result, and the task is placed again.
    let bound = 1024;
    core.input(
        NOW,
        kept_results(3, &first, vec![(receipt(1, b"one"), bound + 1)]),
    );
    let commands = core.step(NOW);
    assert!(accepted(&commands).is_empty());
    core.input(
        NOW,
        results(4, &second, vec![(receipt(1, b"one"), b"one".to_vec())]),
    );
    assert!(
        accepted(&core.step(NOW)).is_empty(),
        "the oversized claim is not one of the two replicas"
    );
}

#[test]
fn an_accepted_result_is_written_and_paid_for_with_one_voucher_at_a_time() {
    let mut core = requestor(2, Verification::Replicas(1));
    let provider = key(10);
    join(&mut core, provider.account_id());
    let answer = results(1, &provider, vec![(receipt(0, b"zero"), b"zero".to_vec())]);
    let replies = core.input(NOW + 400, answer);
    assert!(matches!(
        &replies[..],
        [Command::Reply {
            id: 1,
            response: Response::Ok
        }]
    ));
    let commands = core.step(NOW + 400);
    assert_eq!(
        accepted(&commands),
        vec![(0, Some(("tasks/000000.out".to_owned(), b"zero".to_vec())))]
    );
    assert_eq!(core.round_trips_us(), &[400]);
    assert_eq!(vouchers(&commands), vec![(provider.account_id(), PRICE, 1)]);
    let record = &records(&commands)[&0];
    assert_eq!(record.status, "accepted");
    assert_eq!(record.providers, vec![provider.account_id()]);
    // The energy its receipt stated, advisory.
    assert_eq!(record.energy_millijoules, Some(40));

    // The next voucher waits until the first is answered.
    core.input(
        NOW,
        results(2, &provider, vec![(receipt(1, b"one"), b"one".to_vec())]),
    );
    let commands = core.step(NOW);
    assert_eq!(accepted(&commands).len(), 1);
    assert!(vouchers(&commands).is_empty(), "one voucher at a time");
    core.input(NOW, Input::VoucherAnswered(provider.account_id()));
    let commands = core.step(NOW);
    assert_eq!(
        vouchers(&commands),
        vec![(provider.account_id(), 2 * PRICE, 2)]
    );
    assert!(core.done());
    assert_eq!(core.summary().tasks_accepted, 2);
    assert_eq!(core.paid(), 2 * PRICE);
}

/// A requestor of `tasks` tasks with this budget, placing with one provider.
fn budgeted(tasks: u64, budget: u64) -> (RequestorCore, Vec<Command>) {
    let mut core = RequestorCore::new(
        key(1),
        job(),
        job_file_with_budget(tasks, Verification::Replicas(1), budget),
        MarketConfig::default(),
        REFEREE_FUEL_DEFAULT,
    );
    assert!(sent_tasks(&core.start(NOW)).is_empty());
    let commands = join(&mut core, key(10).account_id());
    (core, commands)
}

#[test]
fn a_budget_that_stops_placement_lets_placed_tasks_finish_and_what_they_leave_places_more() {
    // 200 reserves two placements at the fuel limit (100 each); the third
    // waits. Each result costs 10, so what the first two leave places more,
    // one at a time, until every task is done within the budget.
    let (mut core, commands) = budgeted(6, 200);
    let provider = key(10);
    assert_eq!(
        sent_tasks(&commands),
        vec![(provider.account_id(), vec![0, 1])]
    );
    assert!(!core.done(), "stopped with two tasks in flight");
    let mut next = 0;
    let mut request = 1;
    while !core.done() {
        assert!(next < 6, "placed more tasks than the job has");
        core.input(
            NOW,
            results(
                request,
                &provider,
                vec![(receipt(next, b"out"), b"out".to_vec())],
            ),
        );
        request += 1;
        next += 1;
        core.step(NOW);
        core.input(NOW, Input::VoucherAnswered(provider.account_id()));
        core.step(NOW);
    }
    assert!(!core.stalled());
    assert_eq!(core.summary().tasks_accepted, 6);
    assert_eq!(core.paid(), 60);
}

#[test]
fn a_budget_below_one_placement_ends_the_job_at_once_as_stalled() {
    let (core, commands) = budgeted(3, 99);
    assert!(sent_tasks(&commands).is_empty());
    assert!(core.done() && core.stalled());
    assert_eq!(core.summary().tasks_accepted, 0);
}

#[test]
fn a_provider_that_returned_results_is_named_to_the_others_as_a_holder_of_the_module() {
    let mut core = requestor(6, Verification::Replicas(1));
    let first = key(10);
    let commands = join(&mut core, first.account_id());
    let (_, batch) = &batches(&commands)[0];
    assert!(batch.module_holders.is_empty(), "nobody holds it yet");
    core.input(
        NOW,
        results(1, &first, vec![(receipt(0, b"zero"), b"zero".to_vec())]),
    );
    core.step(NOW);
    let second = key(11).account_id();
    let commands = join(&mut core, second);
    let to_second: Vec<_> = batches(&commands)
        .into_iter()
        .filter(|(provider, _)| *provider == second)
        .collect();
    assert!(!to_second.is_empty(), "{commands:?}");
    for (_, batch) in &to_second {
        assert_eq!(&batch.module_holders[..], &[first.account_id()]);
    }
    // A provider is never named to itself.
    let again = core.step(NOW);
    for (provider, batch) in batches(&again) {
        assert!(!batch.module_holders.contains(&provider));
    }
}

#[test]
fn a_result_whose_receipt_does_not_check_never_counts() {
    let provider = key(10);
    let stranger = key(11);
    let mut bad: Vec<(&str, Input)> = Vec::new();
    // Signed by the stranger, sent by the provider.
    let mut by_stranger = results(1, &stranger, vec![(receipt(0, b"x"), b"x".to_vec())]);
    if let Input::Request { peer, .. } = &mut by_stranger {
        *peer = provider.account_id();
    }
    bad.push(("sent by another than its signer", by_stranger));
    let mut other_module = receipt(0, b"x");
    other_module.module = ContentId::of(b"another module");
    bad.push((
        "another module",
        results(1, &provider, vec![(other_module, b"x".to_vec())]),
    ));
    let mut other_input = receipt(0, b"x");
    other_input.input = input(7).content_id();
    bad.push((
        "another input",
        results(1, &provider, vec![(other_input, b"x".to_vec())]),
    ));
    let mut other_job = receipt(0, b"x");
    other_job.job = JobId::derive(&key(1).account_id(), 99);
    bad.push((
        "another job",
        results(1, &provider, vec![(other_job, b"x".to_vec())]),
    ));
    bad.push((
        "an output that is not the one named",
        results(1, &provider, vec![(receipt(0, b"x"), b"y".to_vec())]),
    ));
    for (why, answer) in bad {
        let mut core = requestor(1, Verification::Replicas(1));
        join(&mut core, provider.account_id());
        core.input(NOW, answer);
        let commands = core.step(NOW);
        assert!(accepted(&commands).is_empty(), "{why}: accepted");
        assert_eq!(core.paid(), 0, "{why}: paid");
        assert_eq!(core.fuel_executed(), 0, "{why}: counted");
    }
}

#[test]
fn results_for_another_job_are_refused_and_the_module_is_served() {
    let mut core = requestor(1, Verification::Replicas(1));
    let provider = key(10);
    let other = Input::Request {
        id: 5,
        peer: provider.account_id(),
        request: Request::Results(ResultBatch {
            job: JobId::derive(&key(1).account_id(), 99),
            results: Bounded::default(),
        }),
    };
    let commands = core.input(NOW, other);
    assert!(matches!(
        &commands[..],
        [Command::Reply { id: 5, response: Response::Refused { code, .. } }] if &**code == "unknown_job"
    ));
    let module = Input::Request {
        id: 6,
        peer: provider.account_id(),
        request: Request::Content {
            cid: ContentId::of(MODULE),
            offset: 0,
        },
    };
    let commands = core.input(NOW, module);
    assert!(matches!(
        &commands[..],
        [Command::Reply { id: 6, response: Response::Content { total_bytes, bytes } }]
            if *total_bytes == MODULE.len() as u64 && &bytes[..] == MODULE
    ));
}

#[test]
fn a_provider_s_stake_is_read_once_per_refresh() {
    let mut core = requestor(1, Verification::Replicas(1));
    let provider = key(10).account_id();
    let reads = |commands: Vec<Command>| {
        commands
            .iter()
            .filter(|command| matches!(command, Command::ReadStanding(_)))
            .count()
    };
    let offer = || Input::Offer {
        provider,
        offer: offer(),
    };
    assert_eq!(reads(core.input(NOW, offer())), 1);
    assert_eq!(reads(core.input(NOW + 1_000_000, offer())), 0);
    assert_eq!(
        reads(core.input(NOW + idlegrid_requestor::core::STAKE_REFRESH_US, offer())),
        1
    );
}

/// Whether a lone, well-staked provider's first result is accepted on its
/// word under the job file's `trust`.
fn first_word_taken(trust: Trust) -> bool {
    let mut file = (*job_file(1, Verification::Adaptive)).clone();
    file.trust = trust;
    let mut core = RequestorCore::new(
        key(1),
        job(),
        Arc::new(file),
        MarketConfig::default(),
        REFEREE_FUEL_DEFAULT,
    );
    core.start(NOW);
    let provider = key(10);
    let id = provider.account_id();
    offers_with(&mut core, id, Standing::staked(1 << 40, 5_000));
    core.input(NOW, Input::Connected(id));
    assert_eq!(sent_tasks(&core.step(NOW)), vec![(id, vec![0])]);
    let answer = results(1, &provider, vec![(receipt(0, b"zero"), b"zero".to_vec())]);
    core.input(NOW, answer);
    !accepted(&core.step(NOW)).is_empty()
}

#[test]
fn the_job_file_s_trust_knobs_decide_when_a_lone_word_counts() {
    // By default a provider with no history is checked first.
    assert!(!first_word_taken(Trust::default()));
    // A requestor that asks for no history and no spot checks takes it
    // (its stake covers the value many times over).
    let trusting = Trust {
        after: 0,
        halving: 0,
        floor_permille: 0,
    };
    assert!(first_word_taken(trusting));
}

#[test]
fn a_peer_connected_before_its_offer_is_asked_for_it_and_then_placed_with() {
    let mut core = requestor(3, Verification::Replicas(1));
    let provider = key(10).account_id();
    let asked = |commands: &[Command]| {
        commands
            .iter()
            .filter(|command| matches!(command, Command::AskOffer(p) if *p == provider))
            .count()
    };
    // Connected first (the peer it bootstrapped from): asked, nothing placed.
    let commands = core.input(NOW, Input::Connected(provider));
    assert_eq!(asked(&commands), 1);
    assert!(sent_tasks(&core.step(NOW)).is_empty());
    // The answer is taken as an offer: stake read, then work placed.
    offers_with(&mut core, provider, Standing::staked(1_000, 5_000));
    assert_eq!(sent_tasks(&core.step(NOW)), vec![(provider, vec![0, 1])]);
    // A provider whose offer is known is not asked again when it reconnects.
    core.input(NOW, Input::Disconnected(provider));
    assert_eq!(asked(&core.input(NOW, Input::Connected(provider))), 0);
}

#[test]
fn the_loser_of_a_disagreement_is_disputed_a_bounded_number_of_times() {
    let tasks = 5;
    let mut core = requestor(tasks, Verification::Replicas(2));
    let providers = [key(10), key(11), key(12)];
    let mut assigned: BTreeMap<AccountId, Vec<u64>> = BTreeMap::new();
    for provider in &providers {
        for (to, tasks) in sent_tasks(&join(&mut core, provider.account_id())) {
            assigned.entry(to).or_default().extend(tasks);
        }
    }
    // key(12) lies about everything; the others tell the truth.
    let mut disputes: HashMap<AccountId, usize> = HashMap::new();
    let mut decided = BTreeMap::new();
    let mut id = 0;
    for _ in 0..4 {
        let work = std::mem::take(&mut assigned);
        for (provider, tasks) in work {
            let signer = providers
                .iter()
                .find(|key| key.account_id() == provider)
                .expect("one of them");
            let returns = tasks
                .iter()
                .map(|task| {
                    let stdout = if provider == key(12).account_id() {
                        b"lie".to_vec()
                    } else {
                        task.to_le_bytes().to_vec()
                    };
                    (receipt(*task, &stdout), stdout)
                })
                .collect();
            id += 1;
            core.input(NOW, results(id, signer, returns));
        }
        let mut commands = core.step(NOW);
        // The requestor re-executes what disagrees; its sandbox says the truth.
        let mut referred = 0;
        while let Some(task) = commands.iter().find_map(|command| match command {
            Command::ReExecute { task } => Some(*task),
            _ => None,
        }) {
            commands
                .retain(|command| !matches!(command, Command::ReExecute { task: t } if *t == task));
            core.input(NOW, re_executed(task));
            commands.extend(core.step(NOW));
            referred += 1;
            assert!(referred < 100);
        }
        for command in &commands {
            if let Command::Dispute {
                provider, dispute, ..
            } = command
            {
                *disputes.entry(*provider).or_default() += 1;
                assert_eq!(&dispute.module[..], MODULE);
            }
        }
        for (to, tasks) in sent_tasks(&commands) {
            assigned.entry(to).or_default().extend(tasks);
        }
        keep_records(&commands, &mut decided);
    }
    assert!(core.done(), "every task decided");
    assert_eq!(core.summary().tasks_accepted, tasks);
    assert_eq!(disputes.len(), 1, "only the liar: {disputes:?}");
    assert_eq!(
        disputes[&key(12).account_id()],
        DISPUTES_PER_PROVIDER_MAX.min(tasks as usize)
    );
    assert_eq!(core.disputes_filed(), DISPUTES_PER_PROVIDER_MAX);
    assert_eq!(decided.len() as u64, tasks);
    for record in decided.values() {
        assert!(!record.providers.contains(&key(12).account_id()));
    }
}

/// What re-executing a task gives: the truth the honest providers return.
fn re_executed(task: u64) -> Input {
    let stdout = task.to_le_bytes().to_vec();
    Input::ReExecuted {
        task,
        result: Ok(ReExecution {
            outcome: TaskOutcome::Completed {
                exit_code: 0,
                output: ContentId::of(&stdout),
            },
            fuel_used: FUEL,
            stdout,
        }),
    }
}

#[test]
fn agreeing_liars_lose_to_the_requestor_s_re_execution_whose_output_is_written() {
    // Two of three providers return the same lie for the one task: a vote
    // would accept it.
    let mut core = requestor(1, Verification::Replicas(3));
    let providers = [key(10), key(11), key(12)];
    for provider in &providers {
        join(&mut core, provider.account_id());
    }
    for (id, provider) in providers.iter().enumerate() {
        let stdout = if id < 2 {
            b"lie".to_vec()
        } else {
            0u64.to_le_bytes().to_vec()
        };
        // Each provider states the energy it measured.
        let receipt = Receipt {
            energy_millijoules: 1_000 * (id as u64 + 1),
            ..receipt(0, &stdout)
        };
        core.input(NOW, results(id as u64, provider, vec![(receipt, stdout)]));
    }
    let commands = core.step(NOW);
    assert!(
        accepted(&commands).is_empty(),
        "nothing accepted by counting"
    );
    assert_eq!(core.energy_executed_millijoules(), 6_000);
    assert!(
        commands
            .iter()
            .any(|command| matches!(command, Command::ReExecute { task: 0 }))
    );
    core.input(NOW, re_executed(0));
    let commands = core.step(NOW);
    assert_eq!(
        accepted(&commands),
        vec![(
            0,
            Some(("tasks/000000.out".to_owned(), 0u64.to_le_bytes().to_vec()))
        )]
    );
    let disputed: Vec<AccountId> = commands
        .iter()
        .filter_map(|command| match command {
            Command::Dispute { provider, .. } => Some(*provider),
            _ => None,
        })
        .collect();
    assert_eq!(disputed, vec![key(10).account_id(), key(11).account_id()]);
    let record = &records(&commands)[&0];
    assert_eq!(record.verified, "re-execution");
    assert_eq!(record.providers, vec![key(12).account_id()]);
    // The accepted result's energy is the honest provider's.
    assert_eq!(record.energy_millijoules, Some(3_000));
    assert_eq!(
        vouchers(&commands),
        vec![(key(12).account_id(), PRICE, 1)],
        "only the honest provider is paid"
    );
}

/// Two providers that disagree on the one task, with no local referee.
fn disagreement_over_the_referee_limit() -> RequestorCore {
    let mut core = requestor_refereeing(1, Verification::Replicas(2), 0);
    for (id, provider) in [key(10), key(11)].iter().enumerate() {
        join(&mut core, provider.account_id());
        let stdout = if id == 0 {
            0u64.to_le_bytes().to_vec()
        } else {
            b"lie".to_vec()
        };
        core.input(
            NOW,
            results(id as u64, provider, vec![(receipt(0, &stdout), stdout)]),
        );
    }
    core
}

#[test]
fn a_disagreement_over_the_referee_limit_is_settled_by_the_ledger() {
    let mut core = disagreement_over_the_referee_limit();
    let commands = core.step(NOW);
    assert!(
        !commands
            .iter()
            .any(|command| matches!(command, Command::ReExecute { .. }))
    );
    let signers: Vec<Vec<AccountId>> = commands
        .iter()
        .filter_map(|command| match command {
            Command::AskLedger { task: 0, dispute } => Some(
                dispute
                    .evidence
                    .receipts()
                    .iter()
                    .map(|receipt| receipt.signer)
                    .collect(),
            ),
            _ => None,
        })
        .collect();
    assert_eq!(
        signers,
        vec![vec![key(10).account_id(), key(11).account_id()]],
        "one two-receipt dispute: {commands:?}"
    );
    assert!(accepted(&commands).is_empty());
    // The ledger's re-execution agrees with the first provider and slashed
    // the second.
    let truth = 0u64.to_le_bytes();
    core.input(
        NOW,
        Input::LedgerVerdict {
            task: 0,
            result: Ok((
                TaskOutcome::Completed {
                    exit_code: 0,
                    output: ContentId::of(&truth),
                },
                FUEL,
                vec![key(11).account_id()],
            )),
        },
    );
    let commands = core.step(NOW);
    assert_eq!(
        accepted(&commands),
        vec![(0, Some(("tasks/000000.out".to_owned(), truth.to_vec())))]
    );
    assert!(
        !commands
            .iter()
            .any(|command| matches!(command, Command::Dispute { .. })),
        "the ledger slashed the liar already: {commands:?}"
    );
    assert_eq!(vouchers(&commands), vec![(key(10).account_id(), PRICE, 1)]);
    assert_eq!(records(&commands)[&0].verified, "re-execution");
}

#[test]
fn a_disagreement_the_ledger_cannot_settle_fails_the_task_saying_why() {
    let mut core = disagreement_over_the_referee_limit();
    core.step(NOW);
    core.input(
        NOW,
        Input::LedgerVerdict {
            task: 0,
            result: Err("re-execution failed: out of memory".to_owned()),
        },
    );
    let commands = core.step(NOW);
    assert!(core.done(), "{commands:?}");
    let record = &records(&commands)[&0];
    assert_eq!(record.status, "failed");
    assert!(
        record
            .error
            .as_deref()
            .is_some_and(|error| error.contains("ledger") && error.contains("out of memory")),
        "{record:?}"
    );
}

#[test]
fn a_result_nobody_else_may_check_waits_for_another_provider_over_the_referee_limit() {
    // One provider, two replicas wanted: nobody can give the second yet,
    // and the task is too large to check here.
    let mut core = requestor_refereeing(1, Verification::Replicas(2), 0);
    join(&mut core, key(10).account_id());
    let stdout = 0u64.to_le_bytes().to_vec();
    core.input(
        NOW,
        results(0, &key(10), vec![(receipt(0, &stdout), stdout)]),
    );
    for _ in 0..3 {
        let commands = core.step(NOW);
        assert!(
            !commands.iter().any(|command| matches!(
                command,
                Command::ReExecute { .. } | Command::AskLedger { .. }
            )),
            "{commands:?}"
        );
        assert!(records(&commands).is_empty(), "{commands:?}");
    }
    assert!(!core.done(), "the task waits rather than fails");
    // A second provider comes: it is asked for the second opinion.
    let commands = join(&mut core, key(11).account_id());
    assert_eq!(sent_tasks(&commands), vec![(key(11).account_id(), vec![0])]);
}

/// One thing a provider does.
#[derive(Debug, Clone)]
enum Act {
    /// Answers some of what it was sent, truthfully.
    Answer {
        provider: usize,
        count: usize,
    },
    /// Sends one of its earlier results batches again.
    Replay {
        provider: usize,
        pick: usize,
    },
    /// Answers a task it was never sent.
    Unasked {
        provider: usize,
        task: u64,
    },
    /// Its voucher request ended.
    VoucherAnswered {
        provider: usize,
    },
    Tick,
}

fn act() -> impl Strategy<Value = Act> {
    prop_oneof![
        4 => (0..3usize, 1..6usize).prop_map(|(provider, count)| Act::Answer { provider, count }),
        2 => (0..3usize, any::<usize>()).prop_map(|(provider, pick)| Act::Replay { provider, pick }),
        1 => (0..3usize, 0..12u64).prop_map(|(provider, task)| Act::Unasked { provider, task }),
        2 => (0..3usize).prop_map(|provider| Act::VoucherAnswered { provider }),
        1 => Just(Act::Tick),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// However providers replay, duplicate or volunteer results, each is
    /// paid exactly once per task its result was accepted for: the newest
    /// voucher it holds is the price of those tasks, and vouchers only go up.
    #[test]
    fn a_requestor_never_pays_twice_for_one_task(
        replicas in 1..3u8,
        acts in proptest::collection::vec(act(), 1..120),
    ) {
        let tasks = 12;
        let mut core = requestor(tasks, Verification::Replicas(replicas));
        let keys = [key(10), key(11), key(12)];
        let mut assigned: Vec<Vec<u64>> = vec![Vec::new(); 3];
        let mut sent: Vec<Vec<Input>> = (0..3).map(|_| Vec::new()).collect();
        let mut newest: HashMap<AccountId, (u64, u64)> = HashMap::new();
        let mut decided_records = BTreeMap::new();
        let mut commands = Vec::new();
        for provider in &keys {
            commands.extend(join(&mut core, provider.account_id()));
        }
        let mut id = 0;
        for act in acts {
            let decided = std::mem::take(&mut commands);
            keep_records(&decided, &mut decided_records);
            for (to, tasks) in sent_tasks(&decided) {
                let slot = keys.iter().position(|key| key.account_id() == to).expect("known");
                assigned[slot].extend(tasks);
            }
            for (provider, amount, sequence) in vouchers(&decided) {
                if let Some((held_amount, held_sequence)) = newest.get(&provider) {
                    prop_assert!(sequence > *held_sequence && amount >= *held_amount);
                }
                newest.insert(provider, (amount, sequence));
            }
            id += 1;
            let input = match act {
                Act::Answer { provider, count } => {
                    let take = count.min(assigned[provider].len());
                    if take == 0 { continue; }
                    let returns = assigned[provider]
                        .drain(..take)
                        .map(|task| {
                            let stdout = task.to_le_bytes().to_vec();
                            (receipt(task, &stdout), stdout)
                        })
                        .collect();
                    let answer = results(id, &keys[provider], returns);
                    let again = results(id, &keys[provider], match &answer {
                        Input::Request { request: Request::Results(batch), .. } => batch
                            .results
                            .iter()
                            .filter_map(|result| match result {
                                TaskReturn::Ran { receipt, stdout } => Some((receipt.body.clone(), stdout.to_vec())),
                                TaskReturn::Kept { .. } | TaskReturn::NotRun { .. } => None,
                            })
                            .collect(),
                        _ => Vec::new(),
                    });
                    sent[provider].push(again);
                    answer
                }
                Act::Replay { provider, pick } => {
                    if sent[provider].is_empty() { continue; }
                    let earlier = &sent[provider][pick % sent[provider].len()];
                    match earlier {
                        Input::Request { peer, request, .. } => Input::Request {
                            id,
                            peer: *peer,
                            request: request.clone(),
                        },
                        _ => continue,
                    }
                }
                Act::Unasked { provider, task } => {
                    let stdout = task.to_le_bytes().to_vec();
                    results(id, &keys[provider], vec![(receipt(task, &stdout), stdout)])
                }
                Act::VoucherAnswered { provider } => Input::VoucherAnswered(keys[provider].account_id()),
                Act::Tick => Input::Tick,
            };
            commands = core.input(NOW, input);
            commands.extend(core.step(NOW));
        }
        for (provider, amount, sequence) in vouchers(&commands) {
            newest.insert(provider, (amount, sequence));
        }
        keep_records(&commands, &mut decided_records);
        // What each provider is owed, from the records of accepted tasks.
        let mut earned: HashMap<AccountId, u64> = HashMap::new();
        for record in decided_records.values() {
            for provider in &record.providers {
                *earned.entry(*provider).or_default() += PRICE;
            }
            prop_assert!(record.providers.len() <= usize::from(replicas) + 1);
        }
        for (provider, record) in core.providers() {
            prop_assert_eq!(record.paid, earned.get(provider).copied().unwrap_or(0));
        }
        for (provider, voucher) in core.owed_vouchers() {
            prop_assert_eq!(voucher.body.cumulative_amount, earned.get(&provider).copied().unwrap_or(0));
            prop_assert!(voucher.verify().is_ok());
        }
    }
}

/// The records of the tasks decided by `commands`, by task.
fn records(commands: &[Command]) -> BTreeMap<u64, TaskRecord> {
    let mut records = BTreeMap::new();
    keep_records(commands, &mut records);
    records
}

/// Keeps the records `commands` give (a task decided anew replaces its
/// record; a task reopened has none until then).
fn keep_records(commands: &[Command], records: &mut BTreeMap<u64, TaskRecord>) {
    for command in commands {
        match command {
            Command::Accepted { task, record, .. } | Command::TaskFailed { task, record } => {
                records.insert(*task, (**record).clone());
            }
            Command::Reopened { task } => {
                records.remove(task);
            }
            _ => {}
        }
    }
}
