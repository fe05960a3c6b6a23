//! Four real `idlegrid validator` processes on loopback. One is killed
//! with SIGKILL in the middle of a stream of transfers and started again
//! over its data directory: it resumes from its store, catches up from
//! its peers, every accepted transfer is finalized exactly once, and all
//! four end on the same blocks and state roots. With short epochs, a
//! validator that unstakes leaves the set and follows, and one that was
//! not in genesis joins: it stakes, is elected, catches up and votes.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::{Testnet, get, idlegrid, poll_until, transfer, try_submit, wait_until};
use idlegrid_node::read_key;
use idlegrid_types::{AccountId, Keypair};
use serde_json::Value;

const TRANSFERS: u64 = 240;
const KILLED: usize = 3;
/// How far ahead of the finalized nonce the stream runs (the pool takes
/// up to 64).
const WINDOW: u64 = 40;
const CATCH_UP: Duration = Duration::from_secs(120);

fn account(api: &str, id: &AccountId) -> Value {
    let (status, body) = get(&format!("{api}/v1/accounts/{id}")).expect("the API answers");
    assert_eq!(status, 200, "account: {body}");
    body
}

fn nonce(api: &str, id: &AccountId) -> u64 {
    account(api, id)["nonce"].as_u64().expect("nonce")
}

#[test]
fn a_validator_killed_mid_stream_restarts_catches_up_and_agrees() {
    let mut net = Testnet::start(4);
    let faucet = read_key(&net.faucet_key()).expect("faucet key");
    let chain_id = net.status(0)["chain_id"]
        .as_str()
        .expect("chain id")
        .to_owned();
    let recipients: Vec<AccountId> = (1..=4u8)
        .map(|seed| Keypair::from_seed([seed; 32]).account_id())
        .collect();
    let mut expected: BTreeMap<AccountId, u64> = BTreeMap::new();
    let mut accepted: Vec<String> = Vec::new();
    let mut height_at_kill = 0;
    for nonce_now in 0..TRANSFERS {
        if nonce_now == TRANSFERS / 3 {
            height_at_kill = net.height(KILLED);
            net.kill(KILLED);
        }
        if nonce_now == 2 * TRANSFERS / 3 {
            net.launch(KILLED);
            net.wait_ready(KILLED);
            // It answers from its store before consensus starts: nothing
            // it had finalized is lost.
            assert!(
                net.height(KILLED) >= height_at_kill,
                "the restarted validator lost blocks\n{}",
                net.logs()
            );
            // It catches up from its peers before clients use it again.
            let target = nonce(&net.apis[0], &faucet.account_id());
            wait_until(CATCH_UP, "the restarted validator to catch up", || {
                nonce(&net.apis[KILLED], &faucet.account_id()) >= target
            });
        }
        // A client submits to a validator that is up; the one that gets
        // killed takes part again once it is back.
        let up: Vec<usize> = if nonce_now >= 2 * TRANSFERS / 3 {
            vec![0, 1, 2, 3]
        } else {
            vec![0, 1, 2]
        };
        let first = up[(nonce_now as usize) % up.len()];
        // Stay within the pool's window of nonces ahead, as that validator
        // sees it (on a loaded machine one may finalize later than others).
        wait_until(CATCH_UP, "the stream's window", || {
            nonce(&net.apis[first], &faucet.account_id()) + WINDOW > nonce_now
        });
        let to = recipients[(nonce_now % 4) as usize];
        let amount = nonce_now + 1;
        let bytes = transfer(&faucet, &chain_id, nonce_now, to, amount);
        let (status, body) = try_submit(&net.apis[first], &bytes).expect("the API answers");
        assert_eq!(status, 200, "transfer {nonce_now} refused: {body}");
        accepted.push(body["hash"].as_str().expect("hash").to_owned());
        *expected.entry(to).or_default() += amount;
    }
    // Every validator, the restarted one included, applies all of them.
    for api in &net.apis {
        wait_until(CATCH_UP, "every transfer finalized everywhere", || {
            nonce(api, &faucet.account_id()) == TRANSFERS
        });
    }
    // Exactly once: each recipient holds exactly what was sent to it, and
    // each transfer sits at the same place in the same block everywhere.
    for api in &net.apis {
        for (to, amount) in &expected {
            assert_eq!(account(api, to)["balance"].as_u64(), Some(*amount));
        }
    }
    for hash in &accepted {
        let places: Vec<(Value, Value)> = net
            .apis
            .iter()
            .map(|api| {
                let (_, body) = get(&format!("{api}/v1/transactions/{hash}")).expect("answers");
                assert_eq!(body["status"], "included", "{hash} at {api}: {body}");
                (body["height"].clone(), body["index"].clone())
            })
            .collect();
        assert!(places.iter().all(|place| *place == places[0]), "{places:?}");
    }
    // The same block, and so the same state root below it, at a height
    // all four have reached.
    let common = (0..4).map(|index| net.height(index)).min().unwrap_or(0);
    let blocks: Vec<(Value, Value)> = net
        .apis
        .iter()
        .map(|api| {
            let (status, body) = get(&format!("{api}/v1/blocks/{common}")).expect("answers");
            assert_eq!(status, 200, "block {common} at {api}: {body}");
            (body["digest"].clone(), body["parent_state_root"].clone())
        })
        .collect();
    assert!(
        blocks.iter().all(|block| *block == blocks[0]),
        "validators disagree at height {common}: {blocks:?}"
    );
}

/// Every validator holds the same block, on the same state, at `height`.
fn assert_same_block(net: &Testnet, height: u64) {
    let blocks: Vec<(Value, Value)> = net
        .apis
        .iter()
        .map(|api| {
            let (status, body) = get(&format!("{api}/v1/blocks/{height}")).expect("answers");
            assert_eq!(status, 200, "block {height} at {api}: {body}");
            (body["digest"].clone(), body["parent_state_root"].clone())
        })
        .collect();
    assert!(
        blocks.iter().all(|block| *block == blocks[0]),
        "validators disagree at height {height}: {blocks:?}\n{}",
        net.logs()
    );
}

/// The current epoch's validators, as validator `index` reports them.
fn validators(net: &Testnet, index: usize) -> Vec<String> {
    net.status(index)["validators"]
        .as_array()
        .expect("validators")
        .iter()
        .map(|entry| entry["account"].as_str().expect("account").to_owned())
        .collect()
}

#[test]
fn a_validator_that_unstakes_leaves_the_next_epochs_set_and_keeps_following() {
    let net = Testnet::start_with(4, &["--epoch-length", "10"]);
    let leaver = net.configs[3]
        .parent()
        .expect("validator folder")
        .join("validator.key");
    let leaver_account = read_key(&leaver).expect("key").account_id().to_string();
    assert!(validators(&net, 0).contains(&leaver_account));
    // Its own wallet, through another validator's API.
    idlegrid(&[
        "wallet",
        "--key",
        leaver.to_str().expect("utf-8 path"),
        "--node",
        &net.apis[0],
        "unstake",
        "--role",
        "validator",
        "--amount",
        "1000000",
        "--wait",
        "--json",
    ]);
    // From the next epoch every validator runs with the other three.
    for index in 0..4 {
        wait_until(CATCH_UP, "the next epoch's set", || {
            let set = validators(&net, index);
            set.len() == 3 && !set.contains(&leaver_account)
        });
    }
    // Two more epochs go by; the leaver follows them.
    let target = (0..4).map(|index| net.height(index)).max().unwrap_or(0) + 20;
    for index in 0..4 {
        wait_until(CATCH_UP, "two more epochs everywhere", || {
            net.height(index) >= target
        });
    }
    assert_same_block(&net, target);
}

/// [`wait_until`] for [`CATCH_UP`], failing with the validators' logs.
fn wait_for(net: &Testnet, what: &str, condition: impl FnMut() -> bool) {
    assert!(
        poll_until(CATCH_UP, condition),
        "timed out waiting for {what}\n{}",
        net.logs()
    );
}

#[test]
fn a_new_validator_stakes_is_elected_catches_up_and_votes() {
    let mut net = Testnet::start_with(4, &["--epoch-length", "10"]);
    // The chain is a few epochs old when the newcomer arrives: it starts
    // from genesis and no validator tracks it until it is elected.
    for index in 0..4 {
        wait_for(&net, "a few epochs", || net.height(index) >= 30);
    }
    let joined = net.join();
    let newcomer = net.configs.len() - 1;
    let text = |key: &str| joined[key].as_str().expect("string").to_owned();
    let (account, key) = (text("account"), text("key"));
    assert_eq!(text("api"), net.apis[newcomer]);
    assert!(!validators(&net, 0).contains(&account));
    // As much stake as a genesis validator has (all five are in the set).
    let stake = net.status(0)["validators"]
        .as_array()
        .expect("validators")
        .iter()
        .filter_map(|entry| entry["stake"].as_u64())
        .max()
        .expect("a genesis validator");
    idlegrid(&[
        "wallet",
        "--key",
        net.faucet_key().to_str().expect("utf-8 path"),
        "--node",
        &net.apis[0],
        "transfer",
        "--to",
        &account,
        "--amount",
        &(stake + 1_000).to_string(),
        "--wait",
        "--json",
    ]);
    net.launch(newcomer);
    net.wait_ready(newcomer);
    // It runs outside every set for an epoch before it stakes.
    let launched = net.height(0);
    wait_for(&net, "an epoch with the newcomer outside the set", || {
        net.height(0) >= launched + 10
    });
    idlegrid(&[
        "wallet",
        "--key",
        &key,
        "--node",
        &net.apis[0],
        "stake",
        "--role",
        "validator",
        "--amount",
        &stake.to_string(),
        "--wait",
        "--json",
    ]);
    // From the next epoch every validator, the newcomer too once it has
    // caught up that far, runs with five.
    for index in 0..=newcomer {
        wait_for(&net, "the next epoch's set, with the newcomer", || {
            let set = validators(&net, index);
            set.len() == 5 && set.contains(&account)
        });
    }
    let ahead = (0..newcomer)
        .map(|index| net.height(index))
        .max()
        .unwrap_or(0);
    wait_for(&net, "the newcomer to catch up", || {
        net.height(newcomer) >= ahead
    });
    // Two more epochs go by with five validators; all agree on them.
    let target = (0..=newcomer)
        .map(|index| net.height(index))
        .max()
        .unwrap_or(0)
        + 20;
    for index in 0..=newcomer {
        wait_for(&net, "two more epochs everywhere", || {
            net.height(index) >= target
        });
    }
    assert_same_block(&net, target);
    // It votes: with a genesis validator stopped, the other four of five
    // are a quorum only with the newcomer.
    net.kill(3);
    let up = [0, 1, 2, newcomer];
    let target = up.iter().map(|index| net.height(*index)).max().unwrap_or(0) + 10;
    for index in up {
        wait_for(&net, "blocks without a genesis validator", || {
            net.height(index) >= target
        });
    }
}
