//! The wallet and the HTTP API against one real validator process: a key
//! is made, funded, staked and found in a block; bad transactions and
//! random bytes get JSON errors and the node carries on.

mod common;

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use common::{BIN, Testnet, get, idlegrid, post, submit, transfer, wait_until};
use idlegrid_market::SplitMix64;
use idlegrid_types::Keypair;
use serde_json::Value;

/// Longest wait for a transaction to land in a block.
const INCLUDED_TIMEOUT: Duration = Duration::from_secs(30);

fn parse(text: &str) -> Value {
    serde_json::from_str(text.trim()).unwrap_or_else(|_| panic!("not one JSON object: {text}"))
}

/// Runs `idlegrid` with `args`, whatever its exit status.
fn run(args: &[&str]) -> Output {
    Command::new(BIN).args(args).output().expect("run idlegrid")
}

fn path(path: &Path) -> &str {
    path.to_str().expect("utf-8 path")
}

/// Asserts an error answer: its status and `{"error":{"code","message"}}`.
fn assert_error(answer: &(u16, Value), status: u16, codes: &[&str], what: &str) {
    let (found, body) = answer;
    let code = body["error"]["code"].as_str().unwrap_or_default();
    assert!(
        *found == status && codes.contains(&code),
        "{what}: expected {status} {codes:?}, got {found} {body}"
    );
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|message| !message.is_empty()),
        "{what}: no message in {body}"
    );
}

fn wait_included(api: &str, hash: &str) -> Value {
    let url = format!("{api}/v1/transactions/{hash}");
    let mut last = Value::Null;
    wait_until(INCLUDED_TIMEOUT, "a transaction's block", || {
        last = get(&url).map(|(_, body)| body).unwrap_or(Value::Null);
        last["status"] == "included"
    });
    last
}

#[test]
fn a_new_wallet_is_funded_stakes_and_finds_its_transfer_in_a_block() {
    let net = Testnet::start(1);
    let api = net.apis[0].as_str();
    let faucet = idlegrid_node::read_key(&net.faucet_key()).expect("faucet key");
    let dir = tempfile::tempdir().expect("tempdir");
    let key = dir.path().join("me/wallet.key");
    let key = path(&key);

    let created = parse(&idlegrid(&["wallet", "new", "--key", key, "--json"]));
    let account = created["account"].as_str().expect("account").to_owned();
    assert!(account.starts_with("did:key:z6Mk"), "{created}");
    let shown = parse(&idlegrid(&["wallet", "address", "--key", key, "--json"]));
    assert_eq!(shown["account"], account.as_str());
    let again = run(&["wallet", "new", "--key", key]);
    assert!(!again.status.success(), "a second `new` overwrote the key");
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("already exists"),
        "{again:?}"
    );
    assert_eq!(
        idlegrid(&["wallet", "address", "--key", key]).trim(),
        account
    );

    let sent = parse(&idlegrid(&[
        "wallet",
        "transfer",
        "--key",
        path(&net.faucet_key()),
        "--node",
        api,
        "--to",
        &account,
        "--amount",
        "5000",
        "--wait",
        "--json",
    ]));
    assert_eq!(sent["status"], "included", "{sent}");
    assert_eq!(sent["nonce"], 0, "{sent}");
    let height = sent["height"].as_u64().expect("height");
    let hash = sent["hash"].as_str().expect("hash").to_owned();

    let balance = parse(&idlegrid(&[
        "wallet", "balance", "--key", key, "--node", api, "--json",
    ]));
    assert_eq!(balance["balance"], 5000, "{balance}");
    assert_eq!(balance["next_nonce"], 0, "{balance}");
    let human = idlegrid(&["wallet", "balance", &account, "--node", api]);
    assert!(human.contains("5000"), "{human}");

    let staked = parse(&idlegrid(&[
        "wallet", "stake", "--key", key, "--node", api, "--amount", "1000", "--role", "provider",
        "--wait", "--json",
    ]));
    assert_eq!(staked["status"], "included", "{staked}");
    let (status, shown) = get(&format!("{api}/v1/accounts/{account}")).expect("account");
    assert_eq!(status, 200, "{shown}");
    assert_eq!(shown["provider_stake"]["bonded"], 1000, "{shown}");
    assert_eq!(shown["validator_stake"]["bonded"], 0, "{shown}");
    assert_eq!(shown["balance"], 5000 - 1000 - 1, "{shown}");
    assert_eq!(shown["nonce"], 1, "{shown}");
    let (_, providers) = get(&format!("{api}/v1/providers")).expect("providers");
    assert!(
        providers["providers"]
            .as_array()
            .expect("a list")
            .iter()
            .any(|entry| entry["account"] == account.as_str() && entry["stake"] == 1000),
        "{providers}"
    );

    let (status, found) = get(&format!("{api}/v1/transactions/{hash}")).expect("tx status");
    assert_eq!(status, 200, "{found}");
    assert_eq!(found["status"], "included", "{found}");
    assert_eq!(found["height"], height, "{found}");
    assert!(found.get("rejected").is_none(), "{found}");

    let url = format!("{api}/v1/blocks/{height}");
    let mut block = Value::Null;
    wait_until(Duration::from_secs(10), "the block by height", || {
        block = get(&url).map(|(_, body)| body).unwrap_or(Value::Null);
        block["height"] == height
    });
    let index = found["index"].as_u64().expect("index") as usize;
    let listed = &block["transactions"][index];
    assert_eq!(listed["hash"], hash.as_str(), "{block}");
    assert_eq!(listed["kind"], "transfer", "{block}");
    assert_eq!(
        listed["signer"],
        faucet.account_id().to_string().as_str(),
        "{block}"
    );
    assert_eq!(listed["nonce"], 0, "{block}");
    assert_eq!(block["parent_state_root"].as_str().map(str::len), Some(64));

    let status = net.status(0);
    assert!(
        status["finalized_height"].as_u64() >= status["height"].as_u64(),
        "{status}"
    );
    assert_eq!(
        status["validators"].as_array().map(Vec::len),
        Some(1),
        "{status}"
    );

    let unreachable = run(&[
        "wallet",
        "balance",
        &account,
        "--node",
        "http://127.0.0.1:1",
    ]);
    assert_eq!(unreachable.status.code(), Some(3), "{unreachable:?}");
    let stderr = String::from_utf8_lossy(&unreachable.stderr);
    assert!(
        stderr.lines().count() == 1 && stderr.contains("http://127.0.0.1:1"),
        "{stderr}"
    );
}

/// `count` seeded random bytes (the market's generator, so a failure
/// replays).
fn random_bytes(random: &mut SplitMix64, count: usize) -> Vec<u8> {
    (0..count).map(|_| random.next_u64() as u8).collect()
}

#[test]
fn bad_transactions_and_random_bytes_get_json_errors_and_the_node_carries_on() {
    let net = Testnet::start(1);
    let api = net.apis[0].as_str();
    let faucet = idlegrid_node::read_key(&net.faucet_key()).expect("faucet key");
    let chain_id = net.status(0)["chain_id"]
        .as_str()
        .expect("chain id")
        .to_owned();
    let receiver = Keypair::from_seed([7; 32]).account_id();

    let mut bad_signature = transfer(&faucet, &chain_id, 0, receiver, 10);
    let last = bad_signature.len() - 1;
    bad_signature[last] ^= 0x01;
    assert_error(
        &submit(api, &bad_signature),
        422,
        &["bad_signature"],
        "a flipped signature byte",
    );
    assert_error(
        &submit(
            api,
            &transfer(&faucet, &chain_id, 0, receiver, 10_u64.pow(13)),
        ),
        422,
        &["insufficient_balance"],
        "an overdraft",
    );
    assert_error(
        &submit(api, &transfer(&faucet, "another-chain", 0, receiver, 10)),
        422,
        &["wrong_chain"],
        "another chain's transaction",
    );

    let valid = transfer(&faucet, &chain_id, 0, receiver, 10);
    let (status, answer) = submit(api, &valid);
    assert_eq!(status, 200, "{answer}");
    let hash = answer["hash"].as_str().expect("hash").to_owned();
    assert_error(
        &submit(api, &valid),
        422,
        &["duplicate", "stale_nonce"],
        "the same transaction again",
    );
    let included = wait_included(api, &hash);
    assert!(included.get("rejected").is_none(), "{included}");
    assert_error(
        &submit(api, &valid),
        422,
        &["stale_nonce"],
        "an included transaction replayed",
    );
    assert_error(
        &submit(api, &transfer(&faucet, &chain_id, 0, receiver, 11)),
        422,
        &["stale_nonce"],
        "another transaction on a used nonce",
    );

    // The wallet reports a rejection as `error: <code>: <message>`.
    let overdraft = run(&[
        "wallet",
        "transfer",
        "--key",
        path(&net.faucet_key()),
        "--node",
        api,
        "--to",
        &receiver.to_string(),
        "--amount",
        "10000000000000",
    ]);
    assert_eq!(overdraft.status.code(), Some(1), "{overdraft:?}");
    let stderr = String::from_utf8_lossy(&overdraft.stderr);
    assert!(
        stderr.starts_with("error: insufficient_balance: "),
        "{stderr}"
    );

    let mut random = SplitMix64::new(0x1d1e_671d);
    let transactions = format!("{api}/v1/transactions");
    for size in [0, 1, 2, 17, 255, 4096, 65_536] {
        let junk = random_bytes(&mut random, size);
        assert_error(
            &post(&transactions, "application/json", &junk).expect("answers"),
            400,
            &["malformed_json"],
            &format!("{size} random bytes as JSON"),
        );
        assert_error(
            &post(&transactions, "application/octet-stream", &junk).expect("answers"),
            415,
            &["unsupported_media_type"],
            &format!("{size} random bytes as octet-stream"),
        );
        assert_error(
            &submit(api, &junk),
            400,
            &["malformed_transaction"],
            &format!("{size} random bytes as a transaction"),
        );
    }
    assert_error(
        &post(
            &transactions,
            "application/json",
            br#"{"transaction":"not hex"}"#,
        )
        .expect("answers"),
        400,
        &["malformed_transaction"],
        "a transaction that is not hex",
    );
    let routes = [
        ("/v1/transactions/", "malformed_hash"),
        ("/v1/accounts/", "malformed_account"),
        ("/v1/blocks/", "malformed_height"),
        ("/v1/jobs/", "malformed_job_id"),
    ];
    for (route, code) in routes {
        assert_error(
            &get(&format!("{api}{route}x")).expect("answers"),
            400,
            &[code],
            route,
        );
        for size in [1, 8, 64, 200] {
            // `~` first: a random segment that happens to be a small
            // number would name a real block.
            let segment: String = std::iter::once("~".to_owned())
                .chain(
                    random_bytes(&mut random, size)
                        .iter()
                        .map(|byte| format!("%{byte:02X}")),
                )
                .collect();
            let url = format!("{api}{route}{segment}");
            // Rarely valid UTF-8; when it is, it is no id of the route.
            assert_error(
                &get(&url).expect("answers"),
                400,
                &[code, "malformed_path"],
                &url,
            );
            assert_error(
                &get(&format!("{api}/v1/{segment}/{segment}")).expect("answers"),
                404,
                &["not_found"],
                "a random path",
            );
        }
    }
    assert_error(
        &post(&format!("{api}/v1/status"), "application/json", b"{}").expect("answers"),
        405,
        &["method_not_allowed"],
        "POST /v1/status",
    );

    // The node still answers and still takes a valid transfer.
    let status = net.status(0);
    assert_eq!(status["chain_id"], chain_id.as_str(), "{status}");
    let (code, answer) = submit(api, &transfer(&faucet, &chain_id, 1, receiver, 5));
    assert_eq!(code, 200, "{answer}");
    let included = wait_included(api, answer["hash"].as_str().expect("hash"));
    assert!(included.get("rejected").is_none(), "{included}");
    let (_, account) = get(&format!("{api}/v1/accounts/{receiver}")).expect("account");
    assert_eq!(account["balance"], 15, "{account}");
}
