//! The compute network end to end, in real processes on loopback: one
//! validator, `idlegrid provide` processes and `idlegrid submit`. Jobs run,
//! results are checked against local execution, providers are paid what
//! their vouchers say, and the escrow's books close.

mod common;

use std::path::Path;
use std::time::Duration;

use common::network::{
    Network, STAKE, books, check_books, check_no_work, check_paid, check_results, check_stakes,
    dial_providers, finish, liar, liar_first, pi_job, submit, submit_behind, submit_through,
    submit_with,
};
use common::{get, poll_until};
use serde_json::Value;

#[test]
fn a_job_runs_on_three_staked_providers_is_verified_and_the_books_close() {
    let mut network = Network::start();
    let stake = STAKE.to_string();
    let first = network.provider(None, &["--stake", &stake]);
    let tcp = network.providers[first].addresses[0].clone();
    let quic = network.providers[first].addresses[1].clone();
    network.provider(Some(&tcp), &["--stake", &stake]);
    // One joins over QUIC.
    network.provider(Some(&quic), &["--stake", &stake]);
    // No stake, no work.
    let unstaked = network.provider(Some(&tcp), &[]);
    let before = books(&network);

    let tasks = 10_000;
    let out = network.dir().join("results");
    let job = pi_job(network.dir(), tasks, "policy = \"adaptive\"", 400);
    let child = submit(&network, &job, &out, &network.providers[1].addresses[0]);
    let report = finish(&network, child, &out);
    let results = check_results(&out, &report, tasks);

    let unstaked = &network.providers[unstaked].account;
    check_no_work(&results, unstaked, "an unstaked provider");
    check_paid(&results, &network.providers[..3]);
    check_books(&network, &results, &before);
}

/// How many task files `out` holds.
/// Waits (at most four minutes) for `count` accepted results under `out`,
/// failing with the requestor's and the network's logs.
fn wait_for_results(network: &Network, out: &Path, count: usize) {
    if !poll_until(Duration::from_secs(240), || accepted_files(out) >= count) {
        panic!(
            "{} of {count} results after four minutes\n{}\n{}",
            accepted_files(out),
            std::fs::read_to_string(out.with_extension("log")).unwrap_or_default(),
            network.logs()
        );
    }
}

fn accepted_files(out: &Path) -> usize {
    std::fs::read_dir(out.join("tasks")).map_or(0, |entries| entries.count())
}

#[test]
fn a_provider_killed_mid_job_loses_nothing_and_nobody_is_paid_twice() {
    let (mut network, bootstrap) = Network::with_staked_providers(3);
    let before = books(&network);

    let tasks = 3_000;
    let out = network.dir().join("results");
    let job = pi_job(network.dir(), tasks, "policy = \"adaptive\"", 300);
    let child = submit(&network, &job, &out, &bootstrap);
    wait_for_results(&network, &out, 1_000);
    network.providers[1].kill();
    // It comes back over its stored vouchers while the job goes on.
    wait_for_results(&network, &out, 2_000);
    network.launch(1);
    let report = finish(&network, child, &out);
    let results = check_results(&out, &report, tasks);
    check_books(&network, &results, &before);
}

#[test]
fn a_provider_returning_wrong_outputs_is_caught_by_re_execution_disputed_and_slashed() {
    let (network, cheater, bootstrap) = liar_first(3, 0);
    let tasks = 1_200;
    let out = network.dir().join("results");
    let job = pi_job(network.dir(), tasks, "policy = \"adaptive\"", 200);
    let child = submit(&network, &job, &out, &bootstrap);
    let report = finish(&network, child, &out);
    // No wrong output was accepted: every file is what local execution gives.
    let results = check_results(&out, &report, tasks);

    assert_eq!(
        results["providers"][&cheater]["paid"].as_u64().unwrap_or(0),
        0,
        "{results}"
    );
    let disputes = results["disputes"].as_array().expect("disputes");
    assert!(!disputes.is_empty(), "no dispute was filed: {results}");
    for dispute in disputes {
        assert_eq!(dispute["provider"], cheater.as_str(), "{results}");
        assert_eq!(dispute["status"], "included", "{results}");
    }
    let honest = network.providers[1..].iter().map(|p| p.account.as_str());
    check_stakes(&network, [cheater.as_str()], honest);
}

/// One honest provider and `liars` that return the same wrong output for
/// every task (so their lies agree): every result is still right, every
/// liar is disputed and slashed, and the honest provider never is.
fn liars_agreeing_lose_to_re_execution(count: usize) {
    // A liar first, the one everybody bootstraps from, so liars get work
    // however fast the honest provider is.
    let (mut network, first, bootstrap) = liar_first(0, 0);
    let mut liars = vec![first];
    for _ in 1..count {
        liars.push(liar(&mut network, Some(&bootstrap), 0));
    }
    let stake = STAKE.to_string();
    let index = network.provider(Some(&bootstrap), &["--stake", &stake]);
    let honest = network.providers[index].account.clone();
    let tasks = 300;
    let out = network.dir().join("results");
    let job = pi_job(network.dir(), tasks, "policy = \"adaptive\"", 200);
    // The requestor dials every provider itself.
    let flags = dial_providers(&network, 1);
    let api = network.api().to_owned();
    let child = submit_with(&network, &api, &job, &out, &bootstrap, &flags);
    let report = finish(&network, child, &out);
    // Every file is what local execution gives, however many agreed on a lie.
    let results = check_results(&out, &report, tasks);
    let disputes = results["disputes"].as_array().expect("disputes");
    for dispute in disputes {
        assert_ne!(dispute["provider"], honest.as_str(), "{results}");
        assert_eq!(dispute["status"], "included", "{results}");
    }
    // A liar that answered anything was caught (one that joined after the
    // job's work was handed out has nothing to answer for).
    let answered: Vec<&str> = liars
        .iter()
        .map(String::as_str)
        .filter(|liar| results["providers"][*liar]["results"].as_u64().unwrap_or(0) > 0)
        .collect();
    assert!(!answered.is_empty(), "no liar got work: {results}");
    for liar in &answered {
        assert!(
            disputes.iter().any(|dispute| dispute["provider"] == *liar),
            "{liar} was never disputed: {results}"
        );
    }
    check_stakes(&network, answered, [honest.as_str()]);
}

#[test]
fn a_requestor_that_re_executes_nothing_lets_the_ledger_settle_disagreements() {
    let (network, liar, bootstrap) = liar_first(2, 0);
    let tasks = 300;
    let out = network.dir().join("results");
    let job = pi_job(network.dir(), tasks, "policy = \"adaptive\"", 200);
    let api = network.api().to_owned();
    let child = submit_with(
        &network,
        &api,
        &job,
        &out,
        &bootstrap,
        &["--referee-fuel", "0"],
    );
    let report = finish(&network, child, &out);
    let results = check_results(&out, &report, tasks);
    let disputes = results["disputes"].as_array().expect("disputes");
    let settlements: Vec<&Value> = disputes
        .iter()
        .filter(|dispute| dispute["settlement"] == true)
        .collect();
    assert!(
        !settlements.is_empty(),
        "the ledger settled nothing: {results}"
    );
    for dispute in disputes {
        assert_eq!(dispute["status"], "included", "{results}");
        assert_eq!(dispute["wrong"], serde_json::json!([liar]), "{results}");
    }
    let honest = network.providers[1..].iter().map(|p| p.account.as_str());
    check_stakes(&network, [liar.as_str()], honest);
}

#[test]
fn a_provider_honest_until_trusted_then_lying_leaves_no_wrong_result() {
    // Honest long enough to be trusted (its results then accepted on its
    // word alone, bar spot checks), lying on every task after.
    let (network, liar, bootstrap) = liar_first(2, 40);
    let tasks = 600;
    let out = network.dir().join("results");
    let job = pi_job(network.dir(), tasks, "policy = \"adaptive\"", 200);
    let child = submit(&network, &job, &out, &bootstrap);
    let report = finish(&network, child, &out);
    // Every file and every record in results.json is the true output:
    // whatever was accepted on the liar's word was checked again.
    let results = check_results(&out, &report, tasks);
    assert!(
        report["tasks_rechecked"].as_u64().unwrap_or(0) > 0,
        "nothing accepted on the liar's word was checked again: {report}"
    );
    let disputes = results["disputes"].as_array().expect("disputes");
    assert!(!disputes.is_empty(), "the liar was never caught: {results}");
    for dispute in disputes {
        assert_eq!(dispute["provider"], liar.as_str(), "{results}");
    }
    let honest = network.providers[1..].iter().map(|p| p.account.as_str());
    check_stakes(&network, [liar.as_str()], honest);
}

#[test]
fn a_job_no_provider_can_check_says_what_it_waits_for_until_one_comes() {
    let (mut network, bootstrap) = Network::with_staked_providers(1);
    let tasks = 20;
    let out = network.dir().join("results");
    let job = pi_job(network.dir(), tasks, "policy = \"adaptive\"", 200);
    let api = network.api().to_owned();
    // Re-executing nothing itself, the requestor needs a second provider
    // to check the only one's results.
    let child = submit_with(
        &network,
        &api,
        &job,
        &out,
        &bootstrap,
        &["--referee-fuel", "0"],
    );
    let log = out.with_extension("log");
    let waiting = || {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        text.lines()
            .rev()
            .filter_map(|line| serde_json::from_str::<Value>(line).ok())
            .find_map(|line| line["progress"]["waiting"].as_str().map(str::to_owned))
    };
    let said = poll_until(Duration::from_secs(120), || {
        waiting().is_some_and(|reason| reason.contains("second opinion"))
    });
    assert!(
        said,
        "submit never said what it waits for: {:?}\n{}",
        waiting(),
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    let reason = waiting().expect("a reason");
    assert!(reason.contains("another staked provider"), "{reason}");
    assert!(reason.contains("--referee-fuel"), "{reason}");
    // What it asked for settles the job.
    let stake = STAKE.to_string();
    network.provider(Some(&bootstrap), &["--stake", &stake]);
    let report = finish(&network, child, &out);
    check_results(&out, &report, tasks);
}

#[test]
fn two_liars_agreeing_lose_to_re_execution() {
    liars_agreeing_lose_to_re_execution(2);
}

#[test]
fn three_liars_agreeing_lose_to_re_execution() {
    liars_agreeing_lose_to_re_execution(3);
}

#[test]
fn a_provider_behind_a_gateway_is_reached_through_its_relay() {
    let mut network = Network::start();
    let (gateway, gateway_api) = network.gateway();
    // Its ledger answers through the gateway as through the validator.
    let (status, through) = get(&format!("{gateway_api}/v1/status")).expect("the gateway answers");
    assert_eq!(status, 200);
    assert_eq!(through["chain_id"], network.testnet.status(0)["chain_id"]);
    // A provider that listens nowhere itself: reachable only through the relay.
    let stake = STAKE.to_string();
    network.provider_behind(&gateway, &["--stake", &stake]);
    let before = books(&network);

    let tasks = 100;
    let out = network.dir().join("results");
    let job = pi_job(
        network.dir(),
        tasks,
        "policy = \"replicas\"\nreplicas = 1",
        300,
    );
    let child = submit_through(&network, &gateway_api, &job, &out, &gateway);
    let report = finish(&network, child, &out);
    let results = check_results(&out, &report, tasks);
    let provider = &network.providers[0].account;
    assert_eq!(
        results["providers"][provider]["results"], tasks,
        "{results}"
    );
    check_books(&network, &results, &before);
}

#[test]
fn a_relayed_provider_is_paid_in_full_though_its_circuits_end_and_its_gateway_restarts() {
    let mut network = Network::start();
    // Circuits of two seconds and 64 KiB: the job outlasts several.
    let (gateway, gateway_api) = network.gateway_with(&[
        "--relay-circuit-secs",
        "2",
        "--relay-circuit-bytes",
        "65536",
    ]);
    let stake = STAKE.to_string();
    network.provider(Some(&gateway), &["--stake", &stake]);
    let relayed = network.provider_behind(&gateway, &["--stake", &stake]);
    let before = books(&network);

    let tasks = 4_000;
    let out = network.dir().join("results");
    let job = pi_job(
        network.dir(),
        tasks,
        "policy = \"replicas\"\nreplicas = 1",
        300,
    );
    // The requestor listens only through the gateway too, so nothing
    // between it and the relayed provider goes around the relay.
    let child = submit_behind(&network, &gateway_api, &job, &out, &gateway);
    // Mid-job the gateway restarts: every reservation and circuit through
    // it ends, and both must reserve again to reach each other.
    wait_for_results(&network, &out, 1_000);
    network.restart_gateway();
    let report = finish(&network, child, &out);
    let results = check_results(&out, &report, tasks);
    let relayed = &network.providers[relayed].account;
    assert!(
        results["providers"][relayed]["results"]
            .as_u64()
            .unwrap_or(0)
            > 0,
        "the relayed provider got no work: {results}"
    );
    // Each is paid what results.json says it earned: nothing a provider
    // was owed went back to the requestor at the close.
    check_paid(&results, &network.providers);
    check_books(&network, &results, &before);
}
