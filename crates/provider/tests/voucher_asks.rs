//! A provider whose delivered results are followed by no voucher (one
//! pushed to it may have been lost with a relayed circuit) asks the
//! requestor for it: after a pause, again with backoff, at once when it
//! reconnects, a bounded number of times; and redeems it at once when the
//! requestor says the job is over.

#[expect(dead_code, reason = "the core's other tests use the rest")]
mod common;

use idlegrid_provider::core::{
    Command, Input, ProviderCore, VOUCHER_ASK_AFTER_MS, VOUCHER_ASK_BACKOFF_MAX_MS,
    VOUCHER_ASK_PACE_MS, VOUCHER_ASKS_MAX, VoucherAnswer,
};
use idlegrid_types::{AccountId, JobId};

use common::{
    NOW, batch, completed, job, key, ready_core, redeemed, requestor, sent_results, tasks, voucher,
    voucher_request,
};

/// Task `index` of job 1 runs and its result reaches the requestor at `now`.
fn deliver(core: &mut ProviderCore, now: u64, index: u64) {
    core.handle(now, tasks(100 + index, batch(job(1), [index])));
    let commands = core.handle(
        now,
        Input::TaskDone {
            job: job(1),
            index,
            result: completed(b"x"),
        },
    );
    let (batch, _) = sent_results(&commands)[0].clone();
    core.handle(
        now,
        Input::ResultsAnswered {
            batch,
            delivered: true,
        },
    );
}

fn asks(commands: &[Command]) -> Vec<(AccountId, JobId)> {
    commands
        .iter()
        .filter_map(|command| match command {
            Command::AskVoucher { requestor, job } => Some((*requestor, *job)),
            _ => None,
        })
        .collect()
}

fn answered(job: JobId, answer: VoucherAnswer) -> Input {
    Input::VoucherAsked {
        job,
        requestor: requestor(),
        answer,
    }
}

#[test]
fn results_no_voucher_follows_are_asked_for_again_with_backoff_and_on_reconnecting() {
    let mut core = ready_core(100);
    deliver(&mut core, NOW, 0);
    assert_eq!(core.wake_at(), Some(NOW + VOUCHER_ASK_AFTER_MS));
    let early = core.handle(NOW + VOUCHER_ASK_AFTER_MS - 1, Input::Wake);
    assert!(asks(&early).is_empty(), "a voucher may still be on its way");
    // More results meanwhile do not put the ask off.
    deliver(&mut core, NOW + 10, 1);
    let asked_at = NOW + VOUCHER_ASK_AFTER_MS;
    let commands = core.handle(asked_at, Input::Wake);
    assert_eq!(asks(&commands), vec![(requestor(), job(1))]);
    // One ask at a time.
    assert_eq!(core.wake_at(), None);
    assert!(asks(&core.handle(asked_at + 60_000, Input::Wake)).is_empty());

    // Nothing owed yet (the results may not be accepted yet): asked again
    // after twice the pause.
    let answered_at = asked_at + 20;
    core.handle(answered_at, answered(job(1), VoucherAnswer::NothingOwed));
    assert_eq!(core.wake_at(), Some(answered_at + 2 * VOUCHER_ASK_AFTER_MS));
    // A reconnection to the requestor asks at once, paced.
    let reconnected = asked_at + VOUCHER_ASK_PACE_MS;
    let commands = core.handle(reconnected, Input::Connected(requestor()));
    assert_eq!(asks(&commands), vec![(requestor(), job(1))]);
    // A connection to anyone else asks nothing.
    core.handle(reconnected, answered(job(1), VoucherAnswer::Unanswered));
    let commands = core.handle(reconnected + 1, Input::Connected(key(9).account_id()));
    assert!(asks(&commands).is_empty());

    // The answer brings the voucher: kept like one pushed (there is no
    // request to acknowledge), redeemed when the job is done, and nothing
    // more is asked.
    let commands = core.handle(reconnected + 2, Input::Connected(requestor()));
    assert!(asks(&commands).is_empty(), "paced: {commands:?}");
    let commands = core.handle(
        reconnected + VOUCHER_ASK_PACE_MS,
        Input::Connected(requestor()),
    );
    assert_eq!(asks(&commands).len(), 1);
    let answer = VoucherAnswer::Voucher {
        voucher: voucher(job(1), 20, 1),
        job_done: false,
    };
    let commands = core.handle(
        reconnected + VOUCHER_ASK_PACE_MS + 5,
        answered(job(1), answer),
    );
    assert!(
        matches!(&commands[..], [Command::StoreVoucher { reply: None, .. }]),
        "{commands:?}"
    );
    assert_eq!(core.totals().owed, 20);
    assert_eq!(core.wake_at(), None);
}

#[test]
fn a_voucher_pushed_after_the_results_leaves_nothing_to_ask() {
    let mut core = ready_core(100);
    deliver(&mut core, NOW, 0);
    core.handle(NOW + 1, voucher_request(7, voucher(job(1), 10, 1)));
    assert_eq!(core.wake_at(), None);
    let commands = core.handle(NOW + VOUCHER_ASK_AFTER_MS, Input::Wake);
    assert!(asks(&commands).is_empty());
    // Results after it start a new wait.
    deliver(&mut core, NOW + 2, 1);
    assert_eq!(core.wake_at(), Some(NOW + 2 + VOUCHER_ASK_AFTER_MS));
}

#[test]
fn a_voucher_asked_for_once_the_job_is_over_is_redeemed_at_once() {
    let mut core = ready_core(100);
    deliver(&mut core, NOW, 0);
    let asked_at = NOW + VOUCHER_ASK_AFTER_MS;
    assert_eq!(asks(&core.handle(asked_at, Input::Wake)).len(), 1);
    let answer = VoucherAnswer::Voucher {
        voucher: voucher(job(1), 10, 1),
        job_done: true,
    };
    let commands = core.handle(asked_at + 5, answered(job(1), answer));
    assert!(matches!(
        &commands[0],
        Command::StoreVoucher { reply: None, .. }
    ));
    assert_eq!(redeemed(&commands), vec![(job(1), 10)]);
    assert_eq!(core.wake_at(), None);
}

#[test]
fn asking_ends_after_its_bound_or_when_the_requestor_cannot_help() {
    let mut core = ready_core(100);
    deliver(&mut core, NOW, 0);
    let mut now = NOW;
    let mut asked = 0;
    let mut longest_pause = 0;
    while let Some(at) = core.wake_at() {
        longest_pause = longest_pause.max(at - now);
        now = at;
        assert_eq!(asks(&core.handle(now, Input::Wake)).len(), 1);
        asked += 1;
        core.handle(now, answered(job(1), VoucherAnswer::Unanswered));
    }
    assert_eq!(asked, VOUCHER_ASKS_MAX);
    assert_eq!(longest_pause, VOUCHER_ASK_BACKOFF_MAX_MS);

    // A requestor that does not run the job is not asked again.
    let mut core = ready_core(100);
    deliver(&mut core, NOW, 0);
    core.handle(NOW + VOUCHER_ASK_AFTER_MS, Input::Wake);
    core.handle(
        NOW + VOUCHER_ASK_AFTER_MS,
        answered(job(1), VoucherAnswer::NotItsJob),
    );
    assert_eq!(core.wake_at(), None);
    // Nor is one that answers with a voucher it did not sign for this
    // provider; the voucher is not kept.
    deliver(&mut core, NOW, 1);
    core.handle(NOW + VOUCHER_ASK_AFTER_MS, Input::Wake);
    let forged = key(9).sign(idlegrid_types::Voucher {
        job: job(1),
        provider: key(1).account_id(),
        cumulative_amount: 99,
        cumulative_fuel: 99,
        sequence: 1,
    });
    let answer = VoucherAnswer::Voucher {
        voucher: forged,
        job_done: true,
    };
    let commands = core.handle(NOW + VOUCHER_ASK_AFTER_MS, answered(job(1), answer));
    assert!(commands.is_empty(), "{commands:?}");
    assert_eq!(core.totals().owed, 0);
    assert_eq!(core.wake_at(), None);
}
