//! The requestor's side of paying in full: a provider asking for the
//! voucher it is owed, and the end-of-job round that tries each paid
//! provider until it takes its last voucher.

mod common;

use std::collections::BTreeMap;

use common::*;
use idlegrid_net::{Request, Response};
use idlegrid_requestor::Verification;
use idlegrid_requestor::core::{Command, Input, RequestorCore};
use idlegrid_types::{AccountId, JobId, Keypair};

/// Runs a job of `tasks` on `providers` (each answering what it is sent,
/// rightly) until every task is decided; gives the core.
fn paid_job(tasks: u64, providers: &[Keypair]) -> RequestorCore {
    let mut core = requestor(tasks, Verification::Replicas(1));
    let mut placed = Vec::new();
    for provider in providers {
        placed.extend(sent_tasks(&join(&mut core, provider.account_id())));
    }
    let mut id = 100;
    while !core.done() {
        assert!(!placed.is_empty(), "the job stopped with tasks undecided");
        for (account, tasks) in std::mem::take(&mut placed) {
            let provider = providers
                .iter()
                .find(|provider| provider.account_id() == account)
                .expect("placed with a provider that joined");
            let returns = tasks
                .into_iter()
                .map(|task| (receipt(task, b"out"), b"out".to_vec()))
                .collect();
            id += 1;
            core.input(NOW, results(id, provider, returns));
        }
        placed = sent_tasks(&core.step(NOW));
    }
    core
}

fn ask_voucher(core: &mut RequestorCore, provider: AccountId, job: JobId) -> Response {
    let commands = core.input(
        NOW,
        Input::Request {
            id: 9,
            peer: provider,
            request: Request::NewestVoucher { job },
        },
    );
    match &commands[..] {
        [Command::Reply { id: 9, response }] => response.clone(),
        other => panic!("not one reply: {other:?}"),
    }
}

fn refusal(response: &Response) -> &str {
    match response {
        Response::Refused { code, .. } => code,
        other => panic!("not a refusal: {other:?}"),
    }
}

#[test]
fn a_provider_asking_for_its_voucher_gets_the_newest_owed_and_whether_the_job_is_over() {
    let provider = key(10);
    let mut core = requestor(2, Verification::Replicas(1));
    join(&mut core, provider.account_id());
    let asked = ask_voucher(&mut core, provider.account_id(), job());
    assert_eq!(refusal(&asked), "no_voucher");
    let other_job = JobId::derive(&key(1).account_id(), 7);
    let asked = ask_voucher(&mut core, provider.account_id(), other_job);
    assert_eq!(refusal(&asked), "unknown_job");

    core.input(
        NOW,
        results(1, &provider, vec![(receipt(0, b"zero"), b"zero".to_vec())]),
    );
    core.step(NOW);
    match ask_voucher(&mut core, provider.account_id(), job()) {
        Response::Voucher { voucher, job_done } => {
            assert!(voucher.verify().is_ok());
            assert_eq!(voucher.signer, key(1).account_id());
            assert_eq!(voucher.body.provider, provider.account_id());
            assert_eq!(voucher.body.cumulative_amount, PRICE);
            assert!(!job_done);
        }
        other => panic!("no voucher: {other:?}"),
    }
    core.input(
        NOW,
        results(2, &provider, vec![(receipt(1, b"one"), b"one".to_vec())]),
    );
    core.step(NOW);
    assert!(core.done());
    match ask_voucher(&mut core, provider.account_id(), job()) {
        Response::Voucher { voucher, job_done } => {
            assert_eq!(voucher.body.cumulative_amount, 2 * PRICE);
            assert!(job_done, "the provider redeems at once");
        }
        other => panic!("no voucher: {other:?}"),
    }
    // A peer owed nothing hears that nothing will come.
    let asked = ask_voucher(&mut core, key(11).account_id(), job());
    assert_eq!(refusal(&asked), "nothing_owed");
}

fn farewells(commands: &[Command]) -> Vec<(AccountId, u64)> {
    commands
        .iter()
        .filter_map(|command| match command {
            Command::Farewell { provider, voucher } => {
                Some((*provider, voucher.body.cumulative_amount))
            }
            _ => None,
        })
        .collect()
}

#[test]
fn the_end_of_job_round_tries_each_paid_provider_until_it_takes_its_last_voucher() {
    let (first, second) = (key(10), key(11));
    let mut core = paid_job(4, &[first.clone(), second.clone()]);
    let owed: BTreeMap<AccountId, u64> = core
        .providers()
        .iter()
        .map(|(provider, record)| (*provider, record.paid))
        .collect();
    assert_eq!(owed.len(), 2, "both were paid: {owed:?}");
    assert_eq!(core.farewells_owed(), 2);
    let mut sent = farewells(&core.farewell(NOW));
    sent.sort();
    assert_eq!(sent, owed.clone().into_iter().collect::<Vec<_>>());
    // One try at a time per provider.
    assert!(farewells(&core.farewell(NOW + 10_000_000)).is_empty());

    let answered = |provider: &Keypair, delivered| Input::FarewellAnswered {
        provider: provider.account_id(),
        delivered,
    };
    core.input(NOW, answered(&first, true));
    assert_eq!(core.farewells_owed(), 1);
    // The second is unreachable: tried again after 200 ms, then 400 ms…
    let mut now = NOW;
    let mut pauses = Vec::new();
    for _ in 0..6 {
        core.input(now, answered(&second, false));
        let mut at = now + 1;
        while farewells(&core.farewell(at)).is_empty() {
            at += 100_000;
        }
        pauses.push((at - now) / 100_000 * 100_000);
        now = at;
    }
    assert_eq!(
        pauses,
        [200_000, 400_000, 800_000, 1_600_000, 2_000_000, 2_000_000]
    );
    // …and at once when it connects again.
    core.input(now, answered(&second, false));
    assert!(farewells(&core.farewell(now + 1)).is_empty());
    core.input(now + 1, Input::Connected(second.account_id()));
    let again = farewells(&core.farewell(now + 1));
    assert_eq!(
        again,
        vec![(second.account_id(), owed[&second.account_id()])]
    );
    core.input(now + 2, answered(&second, true));
    assert_eq!(core.farewells_owed(), 0);
    assert!(farewells(&core.farewell(now + 10_000_000)).is_empty());
}
