//! Capacity challenges across real processes on loopback: one validator on
//! a chain that challenges every provider each epoch, an honest provider
//! and one that offers twice the speed it has. Both run their challenges
//! as `idlegrid provide` does on its own; within the first epoch they are
//! challenged in, the liar's answer comes too late for the speed it
//! offers, and the speed the market may count on for it drops to about
//! what it has, while the honest one keeps most or all of its own.
//!
//! The two share this machine, and a pair's challenges run at the same
//! time: each has between half and all of what the benchmark measured
//! alone, so the honest one offers half of it, and the liar twice all of
//! it (two to four times what it has). The second test does the same with
//! GPU offers and GPU challenges.

mod common;

use std::time::Duration;

use common::network::{MEASURE, Network, STAKE};
use common::{get, poll_until};
use serde_json::Value;

/// Blocks per epoch: long enough (about a minute of idle blocks) for the
/// liar's late answer (awaited four times its deadline's time) and both
/// reveals to fit in one.
const EPOCH_BLOCKS: &str = "300";
/// Passes of each challenge: about 11 s of random reads here alone, so
/// that the deadline's 2 s round trip allowance cannot hide a lie of twice
/// one's speed.
const PASSES: &str = "60";
const PATIENCE: Duration = Duration::from_secs(240);

/// `account`'s `capacity` or `gpu_capacity` record, as the API shows it.
fn record(api: &str, account: &str, which: &str) -> Value {
    record_now(api, account, which).unwrap_or_else(|error| panic!("the API answers: {error}"))
}

/// As [`record`], or the error while the API cannot answer in time: two
/// cores busy with a challenge's passes can hold a request past the
/// client's timeout, and a poll asks again.
fn record_now(api: &str, account: &str, which: &str) -> Result<Value, String> {
    let (status, body) = get(&format!("{api}/v1/accounts/{account}"))?;
    assert_eq!(status, 200, "{body}");
    Ok(body["provider_record"][which].clone())
}

fn capacity(api: &str, account: &str) -> Value {
    record(api, account, "capacity")
}

fn gpu_capacity(api: &str, account: &str) -> Value {
    record(api, account, "gpu_capacity")
}

/// Challenges of a record answered and checked (missed ones aside).
fn settled(record: &Value) -> u64 {
    ["challenges_passed", "challenges_late", "challenges_wrong"]
        .iter()
        .map(|key| number(record, key))
        .sum()
}

/// `account`'s `which` record in `GET /v1/providers`.
fn listed(api: &str, account: &str, which: &str) -> Value {
    let (status, listed) = get(&format!("{api}/v1/providers")).expect("the API answers");
    assert_eq!(status, 200, "{listed}");
    listed["providers"]
        .as_array()
        .expect("providers")
        .iter()
        .find(|entry| entry["account"] == account)
        .map(|entry| entry["record"][which].clone())
        .unwrap_or_else(|| panic!("{account} is not listed: {listed}"))
}

/// `account`'s `which` record in a gateway's `/v1/network`, which its
/// dashboard draws.
fn shown(gateway: &str, account: &str, which: &str) -> Value {
    let (status, view) = get(&format!("{gateway}/v1/network")).expect("the gateway answers");
    assert_eq!(status, 200, "{view}");
    view["providers"]
        .as_array()
        .expect("providers")
        .iter()
        .find(|provider| provider["account"] == account)
        .map(|provider| provider[which].clone())
        .unwrap_or_else(|| panic!("{account} is not in the network view: {view}"))
}

/// Waits for `condition`, or fails with what the processes logged.
fn wait(network: &Network, what: &str, condition: impl FnMut() -> bool) {
    assert!(
        poll_until(PATIENCE, condition),
        "timed out waiting for {what}\n{}",
        network.logs()
    );
}

fn number(value: &Value, key: &str) -> u64 {
    value[key]
        .as_u64()
        .unwrap_or_else(|| panic!("{key} in {value}"))
}

/// Waits until the honest provider's and the liar's `which` records
/// (`capacity` or `gpu_capacity`) hold what each offers, then until the
/// liar's first challenge is answered, and checks that it came back late,
/// proving about the speed the liar has rather than twice it. Gives the
/// liar's record.
fn liar_caught(
    network: &Network,
    which: &str,
    (honest, offered): (&str, u64),
    (liar, claimed): (&str, u64),
) -> Value {
    let api = network.api();
    wait(
        network,
        &format!("both providers' declared {which}"),
        || {
            let declared = |account| {
                record_now(api, account, which)
                    .map(|record| number(&record, "declared_fuel_per_second"))
            };
            declared(honest) == Ok(offered) && declared(liar) == Ok(claimed)
        },
    );
    wait(
        network,
        &format!("the liar's first {which} challenge answered"),
        || record_now(api, liar, which).is_ok_and(|record| settled(&record) > 0),
    );
    let lied = record(api, liar, which);
    assert_eq!(
        number(&lied, "challenges_late"),
        1,
        "{lied}\n{}",
        network.logs()
    );
    assert_eq!(number(&lied, "challenges_missed"), 0, "{lied}");
    assert_eq!(number(&lied, "challenges_wrong"), 0, "{lied}");
    let usable = number(&lied, "usable_fuel_per_second");
    assert_eq!(Some(usable), lied["proven_fuel_per_second"].as_u64());
    // Down from twice its speed (or more) to about its speed.
    assert!(
        usable * 10 < claimed * 7,
        "the liar offers {claimed} and may still count on {usable}"
    );
    lied
}

#[test]
fn a_provider_offering_twice_its_speed_is_caught_by_its_first_challenge() {
    let mut network = Network::start_with(&[
        "--epoch-length",
        EPOCH_BLOCKS,
        "--challenge-share-bps",
        "10000",
        "--challenge-passes",
        PASSES,
    ]);
    let api = network.api().to_owned();
    let stake = STAKE.to_string();
    // The honest provider measures the machine, then offers what it has
    // for sure beside the liar: half.
    let honest = network.provider(None, &["--stake", &stake, MEASURE]);
    let alone = number(
        &network.providers[honest].ready,
        "benchmark_fuel_per_second",
    );
    let measured = alone / 2;
    network.providers[honest].stop();
    network.providers[honest].args.retain(|arg| arg != MEASURE);
    network.providers[honest].args.extend([
        "--benchmark-fuel-per-second".to_owned(),
        measured.to_string(),
    ]);
    network.launch(honest);
    let claimed = (alone * 2).to_string();
    let bootstrap = network.providers[honest].addresses[0].clone();
    let liar = network.provider(
        Some(&bootstrap),
        &["--stake", &stake, "--benchmark-fuel-per-second", &claimed],
    );
    let honest_account = network.providers[honest].account.clone();
    let liar_account = network.providers[liar].account.clone();

    let lied = liar_caught(
        &network,
        "capacity",
        (&honest_account, measured),
        (&liar_account, alone * 2),
    );

    // Its partner's answer was right: never slashed, and what it proved
    // is most of what it offers (all of it when its answer was in time).
    wait(&network, "the honest provider's challenge settled", || {
        settled(&capacity(&api, &honest_account)) > 0
    });
    let kept = capacity(&api, &honest_account);
    eprintln!("offered alone {alone}\nliar:   {lied}\nhonest: {kept}");
    assert_eq!(number(&kept, "challenges_wrong"), 0, "{kept}");
    assert!(
        number(&kept, "usable_fuel_per_second") * 2 > measured,
        "the honest provider offers {measured}: {kept}"
    );

    // The providers list shows what each claims and what it proved, and
    // so does a gateway's network view.
    let listed = listed(&api, &liar_account, "capacity");
    assert_eq!(
        number(&listed, "declared_fuel_per_second"),
        alone * 2,
        "{listed}"
    );
    assert!(
        number(&listed, "proven_fuel_per_second") < alone * 2,
        "{listed}"
    );
    let (_, gateway) = network.gateway();
    let shown = shown(&gateway, &liar_account, "capacity");
    assert_eq!(
        number(&shown, "declared_fuel_per_second"),
        alone * 2,
        "{shown}"
    );
    assert!(
        number(&shown, "usable_fuel_per_second") < alone * 2,
        "{shown}"
    );
}

/// The same for GPUs: two providers offering the machine's Vulkan adapter
/// (lavapipe here, which computes on the CPU, so the two share it as they
/// share the cores), an honest one offering half of what the GPU
/// benchmark measured alone and a liar twice all of it. Each solves its
/// GPU challenge on its GPU as `idlegrid provide` does on its own.
#[test]
fn a_provider_offering_twice_its_gpu_speed_is_caught_by_its_first_gpu_challenge() {
    let mut network = Network::start_with(&[
        "--epoch-length",
        EPOCH_BLOCKS,
        "--challenge-share-bps",
        "10000",
        // The CPU challenges are the fill alone: this test is the GPU's.
        "--challenge-passes",
        "0",
        "--gpu-challenge-ms",
        "4000",
    ]);
    let api = network.api().to_owned();
    let stake = STAKE.to_string();
    let honest = network.provider(None, &["--stake", &stake, "--gpu", "llvmpipe"]);
    let alone = number(&network.providers[honest].ready["gpu"], "fuel_per_second");
    let measured = alone / 2;
    network.providers[honest].stop();
    network.providers[honest].args.extend([
        "--gpu-benchmark-fuel-per-second".to_owned(),
        measured.to_string(),
    ]);
    network.launch(honest);
    let claimed = (alone * 2).to_string();
    let bootstrap = network.providers[honest].addresses[0].clone();
    let liar = network.provider(
        Some(&bootstrap),
        &[
            "--stake",
            &stake,
            "--gpu",
            "llvmpipe",
            "--gpu-benchmark-fuel-per-second",
            &claimed,
        ],
    );
    let honest_account = network.providers[honest].account.clone();
    let liar_account = network.providers[liar].account.clone();

    let lied = liar_caught(
        &network,
        "gpu_capacity",
        (&honest_account, measured),
        (&liar_account, alone * 2),
    );
    let usable = number(&lied, "usable_fuel_per_second");

    wait(
        &network,
        "the honest provider's GPU challenge answered",
        || settled(&gpu_capacity(&api, &honest_account)) > 0,
    );
    let kept = gpu_capacity(&api, &honest_account);
    eprintln!("GPU alone {alone}\nliar:   {lied}\nhonest: {kept}");
    // Its CPU challenge, issued in the same block and answered while the
    // GPU's ran, was in time too: neither waits for the other.
    wait(
        &network,
        "the honest provider's CPU challenge settled",
        || settled(&capacity(&api, &honest_account)) > 0,
    );
    let cpu = capacity(&api, &honest_account);
    assert_eq!(number(&cpu, "challenges_passed"), 1, "{cpu}");
    assert_eq!(number(&kept, "challenges_wrong"), 0, "{kept}");
    assert!(
        number(&kept, "usable_fuel_per_second") * 2 > measured,
        "the honest provider offers {measured}: {kept}"
    );

    // The providers list and a gateway's network view show both figures.
    let listed = listed(&api, &liar_account, "gpu_capacity");
    assert_eq!(
        listed["proven_fuel_per_second"].as_u64(),
        Some(usable),
        "{listed}"
    );
    let (_, gateway) = network.gateway();
    let shown = shown(&gateway, &liar_account, "gpu_capacity");
    assert_eq!(
        number(&shown, "declared_fuel_per_second"),
        alone * 2,
        "{shown}"
    );
    assert_eq!(number(&shown, "usable_fuel_per_second"), usable, "{shown}");
}
