//! The provider's decisions without a network: what it takes, runs, signs,
//! keeps and redeems, driven through `ProviderCore::handle`.

mod common;

use std::collections::HashMap;

use idlegrid_net::{CONTENT_BYTES_MAX, Request, Response, TaskBatch, TaskReturn};
use idlegrid_provider::Cheat;
use idlegrid_provider::core::{
    Command, Input, JobCheck, KEPT_OUTPUTS_HOLD_MS, KEPT_OUTPUTS_JOBS_MAX,
    KEPT_OUTPUTS_PER_JOB_MAX, ModuleStatus, ProviderCore, RESULTS_ATTEMPTS_MAX,
    RESULTS_IN_FLIGHT_MAX, Redemption, RunResult,
};
use idlegrid_types::codec::Bounded;
use idlegrid_types::{
    ContentId, ErrorKind, ExecutionLimits, JobId, Offer, SignedVoucher, TaskOutcome, Voucher,
};
use proptest::prelude::*;

use common::*;

#[test]
fn a_batch_for_an_unchecked_job_waits_for_the_ledger_then_its_module_then_runs() {
    let mut core = ProviderCore::new(config(100), Vec::new());
    let commands = core.handle(NOW, tasks(7, batch(job(1), [0, 1])));
    assert!(replies(&commands).is_empty(), "answered before the check");
    assert!(matches!(commands[..], [Command::CheckJob { job: checked }] if checked == job(1)));
    // A second batch of the same job does not ask the ledger again.
    let commands = core.handle(NOW, tasks(8, batch(job(1), [2])));
    assert!(commands.is_empty(), "{commands:?}");

    let commands = core.handle(
        NOW,
        Input::JobChecked {
            job: job(1),
            check: approved(),
        },
    );
    assert_eq!(
        replies(&commands),
        vec![(7, Response::Ok), (8, Response::Ok)]
    );
    let fetches: Vec<_> = commands
        .iter()
        .filter(|command| matches!(command, Command::FetchModule { .. }))
        .collect();
    assert_eq!(fetches.len(), 1, "one fetch for the module: {commands:?}");
    assert!(
        runs(&commands).is_empty(),
        "nothing runs without the module"
    );

    let commands = core.handle(
        NOW,
        Input::ModuleReady {
            cid: module(),
            status: ModuleStatus::Ready,
        },
    );
    assert_eq!(runs(&commands), vec![(job(1), 0), (job(1), 1), (job(1), 2)]);
    assert_eq!(core.totals().held, 3);
}

#[test]
fn batches_the_provider_should_not_take_are_refused_with_a_reason() {
    let mut core = ready_core(4);
    let cheap = TaskBatch {
        price_per_million_fuel: FLOOR - 1,
        ..batch(job(1), [0])
    };
    let commands = core.handle(NOW, tasks(1, cheap));
    assert_eq!(
        refusal_code(&replies(&commands)[0].1).as_deref(),
        Some("price_too_low")
    );

    let commands = core.handle(NOW, tasks(2, batch(job(1), 0..5)));
    assert_eq!(
        refusal_code(&replies(&commands)[0].1).as_deref(),
        Some("busy")
    );
    assert_eq!(core.totals().held, 0, "a refused batch holds nothing");

    let stranger = Input::Request {
        id: 3,
        peer: key(9).account_id(),
        request: Request::Tasks(batch(job(1), [0])),
    };
    let commands = core.handle(NOW, stranger);
    assert_eq!(
        refusal_code(&replies(&commands)[0].1).as_deref(),
        Some("not_the_requestor")
    );
    let other_module = TaskBatch {
        module: ContentId::of(b"another"),
        ..batch(job(1), [0])
    };
    let commands = core.handle(NOW, tasks(4, other_module));
    assert_eq!(
        refusal_code(&replies(&commands)[0].1).as_deref(),
        Some("wrong_module")
    );

    core.handle(
        NOW,
        Input::JobChecked {
            job: job(2),
            check: JobCheck::Rejected {
                code: "job_closed",
                message: "closed".to_owned(),
            },
        },
    );
    let commands = core.handle(NOW, tasks(5, batch(job(2), [0])));
    assert_eq!(
        refusal_code(&replies(&commands)[0].1).as_deref(),
        Some("job_closed")
    );

    core.handle(NOW, Input::Paused(true));
    let commands = core.handle(NOW, tasks(6, batch(job(1), [0])));
    assert_eq!(
        refusal_code(&replies(&commands)[0].1).as_deref(),
        Some("paused")
    );
    assert_eq!(core.totals().held, 0);
}

#[test]
fn a_job_the_ledger_could_not_confirm_is_checked_again_by_its_next_batch() {
    let mut core = ProviderCore::new(config(100), Vec::new());
    core.handle(NOW, tasks(1, batch(job(1), [0])));
    let commands = core.handle(
        NOW,
        Input::JobChecked {
            job: job(1),
            check: JobCheck::Rejected {
                code: "unknown_job",
                message: "the ledger has no such job".to_owned(),
            },
        },
    );
    assert_eq!(
        refusal_code(&replies(&commands)[0].1).as_deref(),
        Some("unknown_job")
    );
    let commands = core.handle(NOW, tasks(2, batch(job(1), [0])));
    assert!(
        matches!(commands[..], [Command::CheckJob { job: checked }] if checked == job(1)),
        "asked again: {commands:?}"
    );
}

#[test]
fn results_go_back_signed_for_the_task_module_and_input_that_ran() {
    let mut core = ready_core(100);
    core.handle(NOW, tasks(1, batch(job(1), [0, 1])));
    let commands = core.handle(
        NOW,
        Input::TaskDone {
            job: job(1),
            index: 1,
            result: completed(b"hello"),
        },
    );
    let sent = sent_results(&commands);
    assert_eq!(sent.len(), 1);
    let TaskReturn::Ran { receipt, stdout } = &sent[0].1[0] else {
        panic!("expected a receipt: {sent:?}");
    };
    assert_eq!(receipt.signer, provider());
    assert!(receipt.verify().is_ok());
    assert_eq!(receipt.body.job, job(1));
    assert_eq!(receipt.body.task_index, 1);
    assert_eq!(receipt.body.module, module());
    assert_eq!(receipt.body.input, input(1).content_id());
    assert_eq!(receipt.body.fuel_used, 100);
    // The worker's energy figure is signed into the receipt as it came.
    assert_eq!(receipt.body.energy_millijoules, 250);
    assert_eq!(&stdout[..], b"hello");
    assert_eq!(core.totals().tasks_done, 1);
    assert_eq!(core.totals().held, 1);
}

#[test]
fn a_module_the_sandbox_refuses_is_every_task_s_result_and_an_unfetchable_one_is_not_run() {
    let mut core = ProviderCore::new(config(100), Vec::new());
    core.handle(
        NOW,
        Input::JobChecked {
            job: job(1),
            check: approved(),
        },
    );
    core.handle(NOW, tasks(1, batch(job(1), [0])));
    let commands = core.handle(
        NOW,
        Input::ModuleReady {
            cid: module(),
            status: ModuleStatus::Invalid(ErrorKind::InvalidModule),
        },
    );
    assert!(runs(&commands).is_empty());
    let sent = sent_results(&commands);
    let TaskReturn::Ran { receipt, .. } = &sent[0].1[0] else {
        panic!("expected a receipt: {sent:?}");
    };
    assert_eq!(
        receipt.body.outcome,
        TaskOutcome::Failed(ErrorKind::InvalidModule)
    );
    assert_eq!(receipt.body.fuel_used, 0);
    assert_eq!(receipt.body.energy_millijoules, 0);

    let mut core = ProviderCore::new(config(100), Vec::new());
    core.handle(
        NOW,
        Input::JobChecked {
            job: job(1),
            check: approved(),
        },
    );
    core.handle(NOW, tasks(1, batch(job(1), [0])));
    let commands = core.handle(
        NOW,
        Input::ModuleReady {
            cid: module(),
            status: ModuleStatus::Unavailable("unreachable".to_owned()),
        },
    );
    let sent = sent_results(&commands);
    assert!(matches!(sent[0].1[0], TaskReturn::NotRun { index: 0, .. }));
    assert_eq!(core.totals().held, 0);
    // The next batch that needs it fetches it again.
    let commands = core.handle(NOW, tasks(2, batch(job(1), [1])));
    assert!(
        commands
            .iter()
            .any(|command| matches!(command, Command::FetchModule { .. }))
    );
}

#[test]
fn a_cancelled_task_is_skipped_and_its_place_freed() {
    let mut core = ready_core(2);
    core.handle(NOW, tasks(1, batch(job(1), [0, 1])));
    let cancel = Input::Request {
        id: 2,
        peer: requestor(),
        request: Request::Cancel {
            job: job(1),
            tasks: Bounded::new(vec![1]).expect("one"),
        },
    };
    let commands = core.handle(NOW, cancel);
    assert!(
        commands
            .iter()
            .any(|command| matches!(command, Command::Cancel { index: 1, .. }))
    );
    core.handle(
        NOW,
        Input::TaskSkipped {
            job: job(1),
            index: 1,
        },
    );
    assert_eq!(core.totals().held, 1);
    let commands = core.handle(NOW, tasks(3, batch(job(1), [2])));
    assert_eq!(replies(&commands), vec![(3, Response::Ok)]);
    // A result for the skipped task is nobody's: nothing is signed.
    let commands = core.handle(
        NOW,
        Input::TaskDone {
            job: job(1),
            index: 1,
            result: completed(b"late"),
        },
    );
    assert!(sent_results(&commands).is_empty());
}

#[test]
fn results_wait_for_the_requestor_and_are_retried_then_given_up() {
    let mut core = ready_core(1000);
    core.handle(NOW, tasks(1, batch(job(1), 0..10)));
    let mut batches = Vec::new();
    for index in 0..10 {
        let commands = core.handle(
            NOW,
            Input::TaskDone {
                job: job(1),
                index,
                result: completed(b"x"),
            },
        );
        batches.extend(sent_results(&commands));
    }
    assert_eq!(
        batches.len(),
        RESULTS_IN_FLIGHT_MAX,
        "no more in flight than the limit"
    );
    // The first batch is lost every time it is sent: it is sent again
    // (with what waited) until its attempts run out.
    let mut lost = batches[0].0;
    let lost_task = batches[0].1[0].index();
    let mut attempts = 1;
    loop {
        let commands = core.handle(
            NOW,
            Input::ResultsAnswered {
                batch: lost,
                delivered: false,
            },
        );
        let resent = sent_results(&commands);
        match resent
            .iter()
            .find(|(_, results)| results.iter().any(|result| result.index() == lost_task))
        {
            Some((batch, _)) => {
                lost = *batch;
                attempts += 1;
            }
            None => break,
        }
    }
    assert_eq!(attempts, RESULTS_ATTEMPTS_MAX);
}

#[test]
fn vouchers_are_stored_before_they_are_acknowledged_and_forged_ones_refused() {
    let mut core = ProviderCore::new(config(10), Vec::new());
    let commands = core.handle(NOW, voucher_request(1, voucher(job(1), 50, 1)));
    assert!(
        matches!(
            &commands[..],
            [Command::StoreVoucher { reply: Some(1), .. }]
        ),
        "stored, and acknowledged only once stored: {commands:?}"
    );
    assert_eq!(core.totals().owed, 50);
    // An older one adds nothing: acknowledged at once.
    let commands = core.handle(NOW, voucher_request(2, voucher(job(1), 40, 0)));
    assert_eq!(replies(&commands), vec![(2, Response::Ok)]);
    assert_eq!(core.totals().owed, 50);

    let from_someone_else = Input::Request {
        id: 3,
        peer: key(9).account_id(),
        request: Request::Voucher(voucher(job(1), 90, 5)),
    };
    let commands = core.handle(NOW, from_someone_else);
    assert_eq!(
        refusal_code(&replies(&commands)[0].1).as_deref(),
        Some("bad_voucher")
    );
    let for_someone_else = requestor_key().sign(Voucher {
        job: job(1),
        provider: key(9).account_id(),
        cumulative_amount: 90,
        cumulative_fuel: 90,
        sequence: 5,
    });
    let commands = core.handle(NOW, voucher_request(4, for_someone_else));
    assert_eq!(
        refusal_code(&replies(&commands)[0].1).as_deref(),
        Some("bad_voucher")
    );
    let mut forged = voucher(job(1), 90, 5);
    forged.body.cumulative_amount = 900;
    let commands = core.handle(NOW, voucher_request(5, forged));
    assert_eq!(
        refusal_code(&replies(&commands)[0].1).as_deref(),
        Some("bad_voucher")
    );
    assert_eq!(core.totals().owed, 50);
}

#[test]
fn vouchers_are_redeemed_once_each_and_failed_redemptions_tried_again() {
    let mut core = ProviderCore::new(config(10), vec![voucher(job(1), 30, 1)]);
    core.handle(NOW, voucher_request(1, voucher(job(2), 70, 1)));
    assert_eq!(core.totals().owed, 100);
    let mut ordered = redeemed(&core.handle(NOW, Input::RedeemTimer));
    ordered.sort_by_key(|(_, amount)| *amount);
    assert_eq!(ordered, vec![(job(1), 30), (job(2), 70)]);
    // Already on their way: not ordered twice.
    assert!(redeemed(&core.handle(NOW, Input::RedeemTimer)).is_empty());

    core.handle(
        NOW,
        Input::Redeemed {
            job: job(1),
            amount: 30,
            outcome: Redemption::Paid,
        },
    );
    core.handle(
        NOW,
        Input::Redeemed {
            job: job(2),
            amount: 70,
            outcome: Redemption::Failed,
        },
    );
    assert_eq!(core.totals().earned, 30);
    assert_eq!(core.totals().owed, 70);
    assert_eq!(
        redeemed(&core.handle(NOW, Input::RedeemTimer)),
        vec![(job(2), 70)]
    );
    // A job the requestor says is done is redeemed at once.
    core.handle(NOW, voucher_request(2, voucher(job(1), 45, 2)));
    let commands = core.handle(
        NOW,
        Input::Request {
            id: 3,
            peer: requestor(),
            request: Request::JobDone { job: job(1) },
        },
    );
    assert_eq!(replies(&commands), vec![(3, Response::Ok)]);
    assert_eq!(redeemed(&commands), vec![(job(1), 45)]);
}

#[test]
fn shutting_down_refuses_work_and_redeems_everything_owed() {
    let mut core = ready_core(10);
    core.handle(NOW, voucher_request(1, voucher(job(1), 30, 1)));
    let commands = core.handle(NOW, Input::Shutdown);
    assert_eq!(redeemed(&commands), vec![(job(1), 30)]);
    assert_eq!(core.redeeming(), 1);
    assert!(core.totals().paused);
    let commands = core.handle(NOW, tasks(2, batch(job(1), [0])));
    assert_eq!(
        refusal_code(&replies(&commands)[0].1).as_deref(),
        Some("paused")
    );
    // The owner's load falling does not undo a shutdown.
    core.handle(NOW, Input::Paused(false));
    assert!(core.totals().paused);
}

/// Task `index` of job 1 is taken and runs, its output of `bytes` kept
/// under `output`: what the core says.
fn run_kept(core: &mut ProviderCore, now: u64, index: u64, output: ContentId) -> Vec<Command> {
    core.handle(now, tasks(100 + index, batch(job(1), [index])));
    core.handle(
        now,
        Input::TaskDone {
            job: job(1),
            index,
            result: kept(output, 40 << 20),
        },
    )
}

fn job_done(peer: idlegrid_types::AccountId, job: JobId) -> Input {
    Input::Request {
        id: 90,
        peer,
        request: Request::JobDone { job },
    }
}

#[test]
fn an_output_the_worker_kept_goes_back_as_kept_with_a_receipt_naming_its_id() {
    let mut core = ready_core(100);
    let output = ContentId::of(b"forty mebibytes");
    let commands = run_kept(&mut core, NOW, 3, output);
    assert!(released(&commands).is_empty(), "held for the requestor");
    let sent = sent_results(&commands);
    let [TaskReturn::Kept { receipt, bytes }] = &sent[0].1[..] else {
        panic!("expected a kept output: {sent:?}");
    };
    assert_eq!(*bytes, 40 << 20);
    assert_eq!(receipt.signer, provider());
    assert!(receipt.verify().is_ok());
    assert_eq!(receipt.body.task_index, 3);
    assert_eq!(receipt.body.input, input(3).content_id());
    assert_eq!(
        receipt.body.outcome,
        TaskOutcome::Completed {
            exit_code: 0,
            output,
        }
    );
    let totals = core.totals();
    assert_eq!(
        (
            totals.outputs_kept,
            totals.outputs_kept_bytes,
            totals.outputs_held
        ),
        (1, 40 << 20, 1)
    );
}

#[test]
fn job_done_from_the_job_s_requestor_releases_its_kept_outputs() {
    let mut core = ready_core(100);
    core.handle(
        NOW,
        Input::JobChecked {
            job: job(2),
            check: approved(),
        },
    );
    let (a, b, c) = (
        ContentId::of(b"a"),
        ContentId::of(b"b"),
        ContentId::of(b"c"),
    );
    run_kept(&mut core, NOW, 0, a);
    // Two tasks that gave the same output hold it twice.
    run_kept(&mut core, NOW, 1, a);
    run_kept(&mut core, NOW, 2, b);
    core.handle(NOW, tasks(5, batch(job(2), [0])));
    core.handle(
        NOW,
        Input::TaskDone {
            job: job(2),
            index: 0,
            result: kept(c, 1 << 20),
        },
    );
    assert_eq!(core.totals().outputs_held, 4);

    // No one else ends the hold.
    let commands = core.handle(NOW, job_done(key(9).account_id(), job(1)));
    assert!(released(&commands).is_empty(), "{commands:?}");
    let commands = core.handle(NOW, job_done(requestor(), job(1)));
    assert_eq!(replies(&commands), vec![(90, Response::Ok)]);
    assert_eq!(released(&commands), vec![(job(1), vec![a, a, b])]);
    assert_eq!(core.totals().outputs_held, 1, "job 2's is still held");
    let commands = core.handle(NOW, job_done(requestor(), job(1)));
    assert!(released(&commands).is_empty(), "released once");
}

#[test]
fn kept_outputs_are_released_after_the_hold_time_without_word_of_their_job() {
    let mut core = ready_core(100);
    let output = ContentId::of(b"kept");
    let commands = run_kept(&mut core, NOW, 0, output);
    let (batch, _) = sent_results(&commands)[0].clone();
    // Word of the job: its results delivered, then a voucher for them.
    let delivered = NOW + 1_000;
    core.handle(
        delivered,
        Input::ResultsAnswered {
            batch,
            delivered: true,
        },
    );
    let last_word = NOW + 2_000;
    core.handle(last_word, voucher_request(7, voucher(job(1), 10, 1)));
    assert_eq!(core.wake_at(), Some(last_word + KEPT_OUTPUTS_HOLD_MS));

    let commands = core.handle(last_word + KEPT_OUTPUTS_HOLD_MS - 1, Input::Wake);
    assert!(released(&commands).is_empty(), "released early");
    let commands = core.handle(last_word + KEPT_OUTPUTS_HOLD_MS, Input::Wake);
    assert_eq!(released(&commands), vec![(job(1), vec![output])]);
    assert_eq!(core.totals().outputs_held, 0);
    assert_eq!(core.wake_at(), None);
}

#[test]
fn a_kept_output_no_task_or_no_bound_can_take_is_released_at_once() {
    // A worker's report of a task the core did not hand out.
    let mut core = ready_core(100);
    let stray = ContentId::of(b"stray");
    let commands = core.handle(
        NOW,
        Input::TaskDone {
            job: job(1),
            index: 7,
            result: kept(stray, 1 << 20),
        },
    );
    assert!(sent_results(&commands).is_empty());
    assert_eq!(released(&commands), vec![(job(1), vec![stray])]);

    // More jobs than the provider holds outputs of: returned as kept, and
    // let go at once.
    let mut core = ready_core(100);
    for n in 0..=KEPT_OUTPUTS_JOBS_MAX as u8 {
        core.handle(
            NOW,
            Input::JobChecked {
                job: job(n + 2),
                check: approved(),
            },
        );
        core.handle(NOW, tasks(u64::from(n), batch(job(n + 2), [0])));
        let output = ContentId::of(&[n]);
        let commands = core.handle(
            NOW,
            Input::TaskDone {
                job: job(n + 2),
                index: 0,
                result: kept(output, 1 << 20),
            },
        );
        if usize::from(n) < KEPT_OUTPUTS_JOBS_MAX {
            assert!(released(&commands).is_empty());
        } else {
            assert_eq!(released(&commands), vec![(job(n + 2), vec![output])]);
        }
    }
    assert_eq!(core.totals().outputs_held, KEPT_OUTPUTS_JOBS_MAX as u64);

    // More outputs of one job than it holds.
    let mut core = ready_core(usize::MAX);
    let output = ContentId::of(b"same");
    let mut let_go = Vec::new();
    for first in (0..=KEPT_OUTPUTS_PER_JOB_MAX as u64).step_by(256) {
        let indexes = first..(first + 256).min(KEPT_OUTPUTS_PER_JOB_MAX as u64 + 1);
        core.handle(NOW, tasks(first, batch(job(1), indexes.clone())));
        for index in indexes {
            let_go.extend(released(&core.handle(
                NOW,
                Input::TaskDone {
                    job: job(1),
                    index,
                    result: kept(output, 1 << 20),
                },
            )));
        }
    }
    assert_eq!(let_go, vec![(job(1), vec![output])]);
    assert_eq!(core.totals().outputs_held, KEPT_OUTPUTS_PER_JOB_MAX as u64);
}

#[test]
fn a_liar_claims_a_kept_output_under_an_id_it_cannot_serve_and_still_releases_its_own() {
    let mut config = config(100);
    config.cheat = Some(Cheat::WrongOutput { honest_first: 0 });
    let mut core = ready_core_with(config);
    let output = ContentId::of(b"true output");
    let commands = run_kept(&mut core, NOW, 0, output);
    let sent = sent_results(&commands);
    let [TaskReturn::Kept { receipt, .. }] = &sent[0].1[..] else {
        panic!("expected a kept output: {sent:?}");
    };
    assert!(receipt.verify().is_ok());
    let TaskOutcome::Completed {
        output: claimed, ..
    } = receipt.body.outcome
    else {
        panic!("expected a completed task: {receipt:?}");
    };
    assert_ne!(claimed, output, "the receipt lies");
    let commands = core.handle(NOW, job_done(requestor(), job(1)));
    assert_eq!(released(&commands), vec![(job(1), vec![output])]);
}

#[test]
fn a_batch_whose_outputs_the_provider_could_not_keep_is_refused() {
    let mut core = ready_core(100);
    let asking = |output_bytes| TaskBatch {
        limits: ExecutionLimits {
            output_bytes,
            ..batch(job(1), [0]).limits
        },
        ..batch(job(1), [0])
    };
    let commands = core.handle(NOW, tasks(1, asking(OUTPUT_BYTES_MAX + 1)));
    let [(1, Response::Refused { code, message })] = &replies(&commands)[..] else {
        panic!("expected a refusal: {commands:?}");
    };
    assert_eq!(&**code, "output_too_large");
    assert!(
        message.contains(&(OUTPUT_BYTES_MAX + 1).to_string())
            && message.contains(&OUTPUT_BYTES_MAX.to_string()),
        "{message:?}"
    );
    assert_eq!(core.totals().held, 0, "a refused batch holds nothing");
    let commands = core.handle(NOW, tasks(2, asking(OUTPUT_BYTES_MAX)));
    assert_eq!(replies(&commands), vec![(2, Response::Ok)]);

    // Nothing larger than the overlay can fetch, whatever the store holds.
    let mut unbounded = config(100);
    unbounded.output_bytes_max = u64::MAX;
    let mut core = ProviderCore::new(unbounded, Vec::new());
    let commands = core.handle(NOW, tasks(3, asking(CONTENT_BYTES_MAX + 1)));
    let [(3, Response::Refused { code, message })] = &replies(&commands)[..] else {
        panic!("expected a refusal: {commands:?}");
    };
    assert_eq!(&**code, "output_too_large");
    assert!(
        message.contains(&CONTENT_BYTES_MAX.to_string()),
        "{message:?}"
    );
}

fn offer_of(commands: &[Command]) -> Option<Offer> {
    commands.iter().find_map(|command| match command {
        Command::PublishOffer(offer) => Some(offer.body.clone()),
        _ => None,
    })
}

#[test]
fn offers_are_paced_for_new_subscribers_and_expire_at_once_when_paused() {
    let mut core = ProviderCore::new(config(10), Vec::new());
    let first = offer_of(&core.handle(NOW, Input::OfferTimer)).expect("published");
    assert_eq!(first.expires_at_ms, NOW + 60_000);
    assert!(offer_of(&core.handle(NOW + 10, Input::OfferSubscriber)).is_none());
    assert_eq!(core.wake_at(), Some(NOW + 1_000));
    assert!(offer_of(&core.handle(NOW + 500, Input::Wake)).is_none());
    let again = offer_of(&core.handle(NOW + 1_000, Input::Wake)).expect("published");
    assert!(again.sequence > first.sequence);
    assert_eq!(core.wake_at(), None);

    let paused = offer_of(&core.handle(NOW + 2_000, Input::Paused(true))).expect("published");
    assert_eq!(paused.expires_at_ms, NOW + 2_000);
    assert!(paused.sequence > again.sequence);
}

#[test]
fn a_requestor_asking_for_the_offer_gets_the_newest_one_signed() {
    let mut core = ProviderCore::new(config(10), Vec::new());
    let ask = |core: &mut ProviderCore, now| {
        let commands = core.handle(
            now,
            Input::Request {
                id: 3,
                peer: requestor(),
                request: Request::Offer,
            },
        );
        match &replies(&commands)[..] {
            [(3, response)] => response.clone(),
            other => panic!("one reply expected: {other:?}"),
        }
    };
    assert_eq!(
        refusal_code(&ask(&mut core, NOW)).as_deref(),
        Some("no_offer")
    );
    core.handle(NOW, Input::OfferTimer);
    let newest = offer_of(&core.handle(NOW + 5_000, Input::OfferTimer)).expect("published");
    match ask(&mut core, NOW + 6_000) {
        Response::Offer(offer) => {
            assert_eq!(offer.body, newest);
            assert!(offer.verify().is_ok());
        }
        other => panic!("an offer expected: {other:?}"),
    }
}

#[test]
fn compiled_modules_held_are_bounded() {
    let mut core = ProviderCore::new(config(10_000), Vec::new());
    let mut dropped = 0;
    for n in 0..(idlegrid_provider::core::MODULES_HELD_MAX as u64 + 5) {
        let module = ContentId::of(&n.to_le_bytes());
        let job = JobId::derive(&requestor(), n + 100);
        core.handle(
            NOW,
            Input::JobChecked {
                job,
                check: JobCheck::Approved {
                    requestor: requestor(),
                    module,
                },
            },
        );
        core.handle(
            NOW,
            tasks(
                n,
                TaskBatch {
                    module,
                    ..batch(job, [0])
                },
            ),
        );
        let commands = core.handle(
            NOW,
            Input::ModuleReady {
                cid: module,
                status: ModuleStatus::Ready,
            },
        );
        dropped += commands
            .iter()
            .filter(|command| matches!(command, Command::DropModule(_)))
            .count();
    }
    assert_eq!(dropped, 5);
}

/// One step of a random provider's life.
#[derive(Debug, Clone)]
enum Step {
    Batch {
        job: u8,
        first: u64,
        count: u64,
    },
    /// A worker reports a task: not run, run with its output inline, or
    /// run with its output kept (pinned).
    Done {
        pick: usize,
        ran: u8,
    },
    Skip {
        pick: usize,
    },
    Cancel {
        job: u8,
        index: u64,
    },
    Answer {
        pick: usize,
        delivered: bool,
    },
    /// A worker reports a task the core never handed out.
    Stray {
        job: u8,
        index: u64,
        kept: bool,
    },
    /// The requestor (or a stranger) says a job is done.
    JobDone {
        job: u8,
        stranger: bool,
    },
    /// Time passes, up to past a kept output's hold.
    Wait {
        ms: u64,
    },
    Voucher {
        job: u8,
        amount: u64,
        sequence: u64,
    },
    RedeemTimer,
    Redeemed {
        pick: usize,
        outcome: u8,
    },
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        (0..3u8, 0..20u64, 1..6u64).prop_map(|(job, first, count)| Step::Batch {
            job,
            first,
            count
        }),
        (any::<usize>(), 0..3u8).prop_map(|(pick, ran)| Step::Done { pick, ran }),
        any::<usize>().prop_map(|pick| Step::Skip { pick }),
        (0..3u8, 0..25u64).prop_map(|(job, index)| Step::Cancel { job, index }),
        (any::<usize>(), any::<bool>())
            .prop_map(|(pick, delivered)| Step::Answer { pick, delivered }),
        (0..3u8, 0..25u64, any::<bool>()).prop_map(|(job, index, kept)| Step::Stray {
            job,
            index,
            kept
        }),
        (0..3u8, any::<bool>()).prop_map(|(job, stranger)| Step::JobDone { job, stranger }),
        (0..2 * KEPT_OUTPUTS_HOLD_MS / 3).prop_map(|ms| Step::Wait { ms }),
        (0..3u8, 0..1_000u64, 0..20u64).prop_map(|(job, amount, sequence)| Step::Voucher {
            job,
            amount,
            sequence
        }),
        Just(Step::RedeemTimer),
        (any::<usize>(), 0..3u8).prop_map(|(pick, outcome)| Step::Redeemed { pick, outcome }),
    ]
}

/// What the shell would hold, played from the core's commands.
#[derive(Default)]
struct World {
    /// Tasks handed to the workers, not yet reported.
    running: Vec<(JobId, u64)>,
    /// Tasks that ran (reported `Ran`), not yet seen signed: how many
    /// times each (a requestor may send a finished task again).
    ran: HashMap<(JobId, u64), usize>,
    /// Batches in flight.
    sending: Vec<u64>,
    /// What is on disk.
    disk: HashMap<JobId, SignedVoucher>,
    /// Pins on kept outputs in the content store: taken by workers, let go
    /// by the core.
    pins: HashMap<ContentId, u64>,
    redeeming: Vec<(JobId, u64)>,
    next_request: u64,
}

impl World {
    fn play(&mut self, commands: Vec<Command>) -> Result<(), TestCaseError> {
        for command in commands {
            match command {
                Command::Run(task) => self.running.push((task.job, task.index)),
                Command::SendResults { batch, results, .. } => {
                    for result in results.results.iter() {
                        if let TaskReturn::Ran { receipt, .. } | TaskReturn::Kept { receipt, .. } =
                            result
                        {
                            let key = (receipt.body.job, receipt.body.task_index);
                            let unsigned = self.ran.get_mut(&key).filter(|count| **count > 0);
                            prop_assert!(
                                unsigned.is_some(),
                                "signed {key:?}, which no worker ran (or signed it twice)"
                            );
                            if let Some(count) = unsigned {
                                *count -= 1;
                            }
                            prop_assert!(receipt.verify().is_ok());
                        }
                    }
                    self.sending.push(batch);
                }
                Command::StoreVoucher { voucher, .. } => {
                    self.disk.insert(voucher.body.job, voucher);
                }
                Command::ForgetVoucher(job) => {
                    self.disk.remove(&job);
                }
                Command::ReleaseOutputs { outputs, .. } => {
                    for output in outputs {
                        let pins = self.pins.get_mut(&output).filter(|pins| **pins > 0);
                        prop_assert!(pins.is_some(), "released {output}, which is not pinned");
                        if let Some(pins) = pins {
                            *pins -= 1;
                        }
                    }
                }
                Command::Redeem(vouchers) => {
                    for voucher in vouchers {
                        self.redeeming
                            .push((voucher.body.job, voucher.body.cumulative_amount));
                    }
                }
                _ => {}
            }
        }
        Ok(())
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Whatever arrives in whatever order: a receipt is signed only for a
    /// task handed to a worker that reported it ran, once (a batch that is
    /// sent again after a failed delivery re-signs the same results, so a
    /// test of it re-adds them); the vouchers held are exactly those on
    /// disk, so a restarted provider holds every one; every kept output the
    /// core does not hold for a requestor is released, and none twice; what
    /// is held stays within its bounds.
    #[test]
    fn receipts_are_signed_only_for_work_that_ran_and_every_voucher_survives_a_restart(
        steps in proptest::collection::vec(step(), 1..200),
    ) {
        let mut core = ProviderCore::new(config(12), Vec::new());
        let mut world = World::default();
        let mut now = NOW;
        for n in 0..3 {
            core.handle(now, Input::JobChecked { job: job(n), check: approved() });
        }
        world.play(core.handle(now, tasks(0, batch(job(0), []))))?;
        world.play(core.handle(now, Input::ModuleReady { cid: module(), status: ModuleStatus::Ready }))?;
        // Results in flight, by batch: to re-add what is signed again.
        let mut in_batches: HashMap<u64, Vec<(JobId, u64)>> = HashMap::new();
        for step in steps {
            world.next_request += 1;
            let id = world.next_request;
            let commands = match step {
                Step::Batch { job: n, first, count } => {
                    core.handle(now, tasks(id, batch(job(n), first..first + count)))
                }
                Step::Done { pick, ran } => {
                    if world.running.is_empty() { continue; }
                    let (job, index) = world.running.remove(pick % world.running.len());
                    let result = match ran {
                        0 => RunResult::NotRun { reason: "host".to_owned() },
                        1 => {
                            *world.ran.entry((job, index)).or_default() += 1;
                            completed(&index.to_le_bytes())
                        }
                        _ => {
                            *world.ran.entry((job, index)).or_default() += 1;
                            // Tasks of one index give the same output.
                            let output = ContentId::of(&index.to_le_bytes());
                            *world.pins.entry(output).or_default() += 1;
                            kept(output, 1 << 20)
                        }
                    };
                    core.handle(now, Input::TaskDone { job, index, result })
                }
                Step::Skip { pick } => {
                    if world.running.is_empty() { continue; }
                    let (job, index) = world.running.remove(pick % world.running.len());
                    core.handle(now, Input::TaskSkipped { job, index })
                }
                Step::Cancel { job: n, index } => core.handle(now, Input::Request {
                    id,
                    peer: requestor(),
                    request: Request::Cancel { job: job(n), tasks: Bounded::new(vec![index]).expect("one") },
                }),
                Step::Answer { pick, delivered } => {
                    if world.sending.is_empty() { continue; }
                    let batch = world.sending.remove(pick % world.sending.len());
                    if !delivered {
                        for key in in_batches.remove(&batch).unwrap_or_default() {
                            *world.ran.entry(key).or_default() += 1;
                        }
                    }
                    core.handle(now, Input::ResultsAnswered { batch, delivered })
                }
                Step::Stray { job: n, index, kept: keeps } => {
                    let key = (job(n), index);
                    if world.running.contains(&key) { continue; }
                    let result = if keeps {
                        let output = ContentId::of(b"stray");
                        *world.pins.entry(output).or_default() += 1;
                        kept(output, 1 << 20)
                    } else {
                        completed(b"stray")
                    };
                    core.handle(now, Input::TaskDone { job: key.0, index, result })
                }
                Step::JobDone { job: n, stranger } => {
                    let peer = if stranger { key(9).account_id() } else { requestor() };
                    core.handle(now, Input::Request { id, peer, request: Request::JobDone { job: job(n) } })
                }
                Step::Wait { ms } => {
                    now += ms;
                    core.handle(now, Input::Wake)
                }
                Step::Voucher { job: n, amount, sequence } => {
                    core.handle(now, voucher_request(id, voucher(job(n), amount, sequence)))
                }
                Step::RedeemTimer => core.handle(now, Input::RedeemTimer),
                Step::Redeemed { pick, outcome } => {
                    if world.redeeming.is_empty() { continue; }
                    let (job, amount) = world.redeeming.remove(pick % world.redeeming.len());
                    let outcome = [Redemption::Paid, Redemption::Settled, Redemption::Failed][usize::from(outcome)];
                    core.handle(now, Input::Redeemed { job, amount, outcome })
                }
            };
            for command in &commands {
                if let Command::SendResults { batch, results, .. } = command {
                    let keys = results.results.iter().filter_map(|result| match result {
                        TaskReturn::Ran { receipt, .. } | TaskReturn::Kept { receipt, .. } => Some((receipt.body.job, receipt.body.task_index)),
                        TaskReturn::NotRun { .. } => None,
                    });
                    in_batches.insert(*batch, keys.collect());
                }
            }
            world.play(commands)?;
            let totals = core.totals();
            prop_assert!(totals.held <= 12, "held {} of 12", totals.held);
            prop_assert!(totals.held as usize >= world.running.len());
            let held: HashMap<JobId, SignedVoucher> = core
                .vouchers()
                .map(|voucher| (voucher.body.job, voucher.clone()))
                .collect();
            prop_assert_eq!(&held, &world.disk, "held and stored vouchers differ");
            let pinned: u64 = world.pins.values().sum();
            prop_assert_eq!(pinned, totals.outputs_held, "kept outputs leaked or lost");
        }
        // Past every hold, every kept output is released.
        world.play(core.handle(now + KEPT_OUTPUTS_HOLD_MS, Input::Wake))?;
        prop_assert_eq!(world.pins.values().sum::<u64>(), 0);
        let restarted = ProviderCore::new(config(12), world.disk.values().cloned().collect());
        let mut before: Vec<_> = core.vouchers().cloned().map(|voucher| voucher.body).collect();
        let mut after: Vec<_> = restarted.vouchers().cloned().map(|voucher| voucher.body).collect();
        before.sort_by_key(|body| body.job);
        after.sort_by_key(|body| body.job);
        prop_assert_eq!(before, after);
    }
}
