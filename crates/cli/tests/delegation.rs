//! Delegated stake across four real `idlegrid validator` processes on
//! loopback: an account delegates to a validator with `idlegrid wallet
//! delegate`, its share of the validator's epoch rewards arrives and
//! `wallet rewards --claim` pays it; then the validator signs two
//! conflicting votes, anyone reports the evidence with `wallet
//! report-fault`, and the slash reaches the validator's own stake, the
//! delegation and the part of it already unbonding, in one step.

mod common;

use std::process::Command;
use std::time::Duration;

use common::{BIN, Testnet, get, idlegrid, wait_until};
use idlegrid_chain::engine::{conflicting_notarize, private_key};
use idlegrid_node::read_key;
use idlegrid_types::AccountId;
use serde_json::Value;

const PATIENCE: Duration = Duration::from_secs(120);
const GENESIS_STAKE: u64 = 1_000_000;
const DELEGATED: u64 = 500_000;
const UNDELEGATED: u64 = 100_000;
/// The chain's default `validator_slash_fraction_bps`.
const SLASH_BPS: u64 = 500;

fn api_get(api: &str, path: &str) -> Value {
    let (status, body) = get(&format!("{api}{path}")).expect("the API answers");
    assert_eq!(status, 200, "{path}: {body}");
    body
}

fn delegation(api: &str, delegator: &str) -> Value {
    let view = api_get(api, &format!("/v1/accounts/{delegator}/delegations"));
    let list = view["delegations"].as_array().expect("delegations");
    assert_eq!(list.len(), 1, "one delegation: {view}");
    list[0].clone()
}

fn validator_entry(api: &str, validator: &str) -> Value {
    api_get(api, "/v1/validators")["validators"]
        .as_array()
        .expect("validators")
        .iter()
        .find(|entry| entry["account"] == validator)
        .cloned()
        .expect("the validator is listed")
}

fn number(value: &Value, key: &str) -> u64 {
    value[key]
        .as_u64()
        .unwrap_or_else(|| panic!("{key} in {value}"))
}

fn wallet(key: &str, api: &str, args: &[&str]) -> Value {
    let mut all = vec!["wallet", "--key", key, "--node", api, "--json"];
    all.extend_from_slice(args);
    serde_json::from_str(&idlegrid(&all)).expect("wallet json")
}

/// Runs a wallet command that must be refused (exit status 1); returns
/// what it printed.
fn wallet_refused(key: &str, api: &str, args: &[&str]) -> String {
    let mut all = vec!["wallet", "--key", key, "--node", api, "--json"];
    all.extend_from_slice(args);
    let output = Command::new(BIN).args(&all).output().expect("run idlegrid");
    assert_eq!(
        output.status.code(),
        Some(1),
        "idlegrid {all:?} was not refused"
    );
    String::from_utf8_lossy(&output.stdout).to_string() + &String::from_utf8_lossy(&output.stderr)
}

#[test]
fn a_delegators_rewards_arrive_and_its_validators_slash_reaches_it() {
    let net = Testnet::start_with(4, &["--epoch-length", "10"]);
    let api = &net.apis[0];
    let chain_id = net.status(0)["chain_id"]
        .as_str()
        .expect("chain id")
        .to_owned();
    let faucet = net.faucet_key();
    let faucet = faucet.to_str().expect("utf-8 path");
    let validator_key = net.configs[3]
        .parent()
        .expect("validator folder")
        .join("validator.key");
    let validator_keypair = read_key(&validator_key).expect("validator key");
    let validator = validator_keypair.account_id().to_string();

    // A delegator with its own key, funded by the faucet.
    let delegator_key = net.dir.path().join("delegator.key");
    let delegator_key = delegator_key.to_str().expect("utf-8 path");
    let created = wallet(delegator_key, api, &["new"]);
    let delegator = created["account"].as_str().expect("account").to_owned();
    wallet(
        faucet,
        api,
        &[
            "transfer", "--to", &delegator, "--amount", "1000000", "--wait",
        ],
    );
    wallet(
        delegator_key,
        api,
        &[
            "delegate",
            "--to",
            &validator,
            "--amount",
            &DELEGATED.to_string(),
            "--wait",
        ],
    );
    let delegated = delegation(api, &delegator);
    assert_eq!(delegated["validator"], validator.as_str());
    assert_eq!(number(&delegated, "stake"), DELEGATED);
    let listed = validator_entry(api, &validator);
    assert_eq!(number(&listed, "delegated"), DELEGATED);
    assert_eq!(number(&listed, "delegators"), 1);
    assert_eq!(number(&listed, "own_stake"), GENESIS_STAKE);

    // An epoch ends with the validator in the set: its delegator's part
    // of the reward (a third of it, by stake; no commission) arrives.
    wait_until(PATIENCE, "the delegator's first rewards", || {
        number(&delegation(api, &delegator), "rewards") > 0
    });
    let balance_before = number(
        &api_get(api, &format!("/v1/accounts/{delegator}")),
        "balance",
    );
    let claimed = wallet(delegator_key, api, &["rewards", "--claim", "--wait"]);
    let claimed = claimed["claimed"].as_array().expect("claimed").clone();
    assert_eq!(claimed.len(), 1, "one claim: {claimed:?}");
    let rewards = number(&claimed[0], "rewards");
    let fee = number(&net.status(0), "minimum_fee");
    let balance_after = number(
        &api_get(api, &format!("/v1/accounts/{delegator}")),
        "balance",
    );
    // Rewards may have grown between the view and the claim (another
    // epoch); the claim pays at least what the view showed.
    assert!(
        balance_after + fee >= balance_before + rewards,
        "claimed {rewards}: {balance_before} → {balance_after}"
    );

    // Part of the delegation starts unbonding: still slashable.
    wallet(
        delegator_key,
        api,
        &[
            "undelegate",
            "--from",
            &validator,
            "--amount",
            &UNDELEGATED.to_string(),
            "--wait",
        ],
    );
    let before = delegation(api, &delegator);
    assert_eq!(number(&before, "stake"), DELEGATED - UNDELEGATED);
    let unbonding = |view: &Value| -> u64 {
        view["unbonding"]
            .as_array()
            .expect("unbonding")
            .iter()
            .map(|entry| number(entry, "amount"))
            .sum()
    };
    assert_eq!(unbonding(&before), UNDELEGATED);

    // The validator signs two notarize votes for different blocks in one
    // round of the current epoch; the delegator reports it.
    let status = net.status(0);
    let epoch = number(&status, "epoch");
    let members: Vec<AccountId> = status["validators"]
        .as_array()
        .expect("validators")
        .iter()
        .map(|entry| {
            entry["account"]
                .as_str()
                .expect("account")
                .parse()
                .expect("a did:key")
        })
        .collect();
    let evidence = conflicting_notarize(
        &chain_id,
        &private_key(validator_keypair.seed()),
        &members,
        epoch,
        5,
    )
    .expect("evidence");
    let evidence_file = net.dir.path().join("fault.bin");
    std::fs::write(&evidence_file, &evidence).expect("write evidence");
    let evidence_file = evidence_file.to_str().expect("utf-8 path");
    let reporter_before = number(
        &api_get(api, &format!("/v1/accounts/{delegator}")),
        "balance",
    );
    wallet(
        delegator_key,
        api,
        &["report-fault", "--evidence", evidence_file, "--wait"],
    );

    // One step: the validator's own stake, the bonded delegation and the
    // unbonding part each lose the slash fraction.
    let after = delegation(api, &delegator);
    let slashed = |amount: u64| amount - amount * SLASH_BPS / 10_000;
    assert_eq!(
        number(&after, "stake"),
        slashed(DELEGATED - UNDELEGATED),
        "the bonded delegation: {after}"
    );
    assert_eq!(
        unbonding(&after),
        slashed(UNDELEGATED),
        "the unbonding part"
    );
    let listed = validator_entry(api, &validator);
    assert_eq!(number(&listed, "own_stake"), slashed(GENESIS_STAKE));
    assert_eq!(
        number(&listed, "delegated"),
        slashed(DELEGATED - UNDELEGATED)
    );
    assert_eq!(number(&listed, "delegated_unbonding"), slashed(UNDELEGATED));
    // The reporter's share: half (the default) of what the validator's
    // own stake lost, less its fee; the rest, and all the delegators lost,
    // is burned.
    let own_loss = GENESIS_STAKE * SLASH_BPS / 10_000;
    let reporter_after = number(
        &api_get(api, &format!("/v1/accounts/{delegator}")),
        "balance",
    );
    assert_eq!(reporter_after + fee, reporter_before + own_loss / 2);

    // A proven fault tombstones the validator: the next epoch's set goes
    // on without it, and it takes no more delegations.
    assert_eq!(listed["jailed_since"], epoch);
    wait_until(PATIENCE, "the next epoch's set, without it", || {
        let set = net.status(0)["validators"].clone();
        let set = set.as_array().expect("validators");
        set.len() == 3
            && set
                .iter()
                .all(|entry| entry["account"] != validator.as_str())
    });
    let said = wallet_refused(
        delegator_key,
        api,
        &["delegate", "--to", &validator, "--amount", "1000"],
    );
    assert!(said.contains("validator_jailed"), "{said}");

    // The same fault is punished once.
    let said = wallet_refused(
        delegator_key,
        api,
        &["report-fault", "--evidence", evidence_file],
    );
    assert!(said.contains("fault_already_reported"), "{said}");
    // Evidence whose votes do not verify is refused too.
    let mut forged = evidence.clone();
    let last = forged.len() - 1;
    forged[last] ^= 1;
    std::fs::write(net.dir.path().join("forged.bin"), &forged).expect("write");
    let forged_path = net.dir.path().join("forged.bin");
    let said = wallet_refused(
        delegator_key,
        api,
        &[
            "report-fault",
            "--evidence",
            forged_path.to_str().expect("utf-8 path"),
        ],
    );
    assert!(said.contains("fault_not_proven"), "{said}");
}
