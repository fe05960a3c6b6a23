//! The command line as a user meets it, in real processes: help with
//! examples everywhere, shell completions, `status`, `jobs` and the wallet
//! against a one-validator chain (and a gateway), JSON that parses with
//! the documented fields, and errors that say what to do.

mod common;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use common::{BIN, Testnet, free_ports, idlegrid, wait_until};
use idlegrid_ledger::{OpenJob, Transaction, TxKind};
use idlegrid_types::{ContentId, ExecutionLimits, JobId};
use serde_json::Value;

/// What the test job escrows.
const ESCROW: u64 = 5_000;
/// How far the test job's deadline is: long enough to look at the job and
/// be refused a cancel before it passes, short enough to wait for.
const DEADLINE_BLOCKS: u64 = 40;

/// Runs `idlegrid` with `args`, whatever its exit status.
fn run(args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .env_remove("IDLEGRID_NODE")
        .output()
        .expect("run idlegrid")
}

/// `output`'s stdout as one JSON object.
fn json(output: &Output) -> Value {
    let stdout = String::from_utf8_lossy(&output.stdout);
    serde_json::from_str(stdout.trim()).unwrap_or_else(|error| {
        panic!(
            "not one JSON object ({error}): {stdout}\nstderr: {}",
            String::from_utf8_lossy(&output.stderr)
        )
    })
}

/// Runs `idlegrid` with `args`, expecting success and one JSON object.
fn run_json(args: &[&str]) -> Value {
    serde_json::from_str(idlegrid(args).trim()).expect("one JSON object")
}

/// Asserts `value` has every key in `keys`.
fn assert_fields(value: &Value, keys: &[&str], what: &str) {
    for key in keys {
        assert!(value.get(key).is_some(), "{what} has no `{key}`: {value}");
    }
}

fn path(path: &Path) -> &str {
    path.to_str().expect("utf-8 path")
}

/// The subcommands a `--help` lists under "Commands:" (`help` aside).
fn subcommands(help: &str) -> Vec<String> {
    help.lines()
        .skip_while(|line| line.trim() != "Commands:")
        .skip(1)
        .take_while(|line| !line.trim().is_empty())
        // Names start at two spaces; wrapped descriptions are indented more.
        .filter(|line| line.starts_with("  ") && !line.starts_with("   "))
        .filter_map(|line| line.split_whitespace().next())
        .filter(|name| *name != "help")
        .map(str::to_owned)
        .collect()
}

#[test]
fn every_command_and_subcommand_has_examples_in_its_help() {
    let mut seen = BTreeSet::new();
    let mut pending = vec![Vec::<String>::new()];
    while let Some(command) = pending.pop() {
        let mut args: Vec<&str> = command.iter().map(String::as_str).collect();
        args.push("--help");
        let help = idlegrid(&args);
        let examples = help
            .split_once("Examples:\n")
            .map(|(_, examples)| examples)
            .unwrap_or_else(|| panic!("`idlegrid {}` has no examples:\n{help}", command.join(" ")));
        assert!(
            examples
                .lines()
                .any(|line| line.trim_start().starts_with("idlegrid ")),
            "`idlegrid {}`'s examples run nothing:\n{help}",
            command.join(" ")
        );
        for name in subcommands(&help) {
            let mut sub = command.clone();
            sub.push(name);
            pending.push(sub);
        }
        seen.insert(command.join(" "));
    }
    let expected = [
        "",
        "devnet",
        "exec",
        "provide",
        "gateway",
        "submit",
        "status",
        "jobs",
        "jobs list",
        "jobs show",
        "jobs cancel",
        "validator",
        "testnet",
        "testnet init",
        "testnet join",
        "wallet",
        "wallet new",
        "wallet address",
        "wallet balance",
        "wallet transfer",
        "wallet stake",
        "wallet unstake",
        "wallet delegate",
        "wallet undelegate",
        "wallet rewards",
        "wallet commission",
        "wallet report-fault",
        "blob",
        "blob put",
        "blob get",
        "blob ls",
        "blob gc",
        "completions",
    ];
    let expected: BTreeSet<String> = expected.iter().map(|name| (*name).to_owned()).collect();
    assert_eq!(seen, expected);
}

#[test]
fn testnet_join_writes_a_validator_on_the_next_ports_and_never_overwrites() {
    let dir = tempfile::tempdir().expect("tempdir");
    let tn = dir.path().join("tn");
    // Nothing there yet: an error that says how to make a testnet.
    let output = run(&["testnet", "join", "--dir", path(&tn), "--json"]);
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    let message = json(&output)["error"]["message"]
        .as_str()
        .map(str::to_owned)
        .unwrap_or_default();
    assert!(message.contains("testnet init"), "{message}");

    let base = free_ports(8);
    let (p2p, api) = (base.to_string(), (base + 4).to_string());
    run_json(&[
        "testnet",
        "init",
        "--validators",
        "2",
        "--dir",
        path(&tn),
        "--p2p-port",
        &p2p,
        "--api-port",
        &api,
        "--json",
    ]);
    let genesis = std::fs::read_to_string(tn.join("genesis.toml")).expect("genesis");
    let first = |file: &str| std::fs::read(tn.join("validator-0").join(file)).expect("file");
    let (first_config, first_key) = (first("config.toml"), first("validator.key"));
    for (index, offset) in [(2u16, 2u16), (3, 3)] {
        let joined = run_json(&["testnet", "join", "--dir", path(&tn), "--json"]);
        assert_fields(
            &joined,
            &["config", "account", "api", "key"],
            "testnet join",
        );
        let folder = tn.join(format!("validator-{index}"));
        assert_eq!(joined["config"], path(&folder.join("config.toml")));
        assert_eq!(joined["key"], path(&folder.join("validator.key")));
        assert_eq!(
            joined["api"],
            format!("http://127.0.0.1:{}", base + 4 + offset)
        );
        let account = joined["account"].as_str().expect("account");
        assert!(account.starts_with("did:key:"), "{joined}");
        // Not in genesis; the genesis is the testnet's own, untouched.
        assert!(!genesis.contains(account));
        assert_eq!(
            std::fs::read_to_string(tn.join("genesis.toml")).expect("genesis"),
            genesis
        );
        let key = std::fs::read_to_string(folder.join("validator.key")).expect("key");
        assert!(key.contains(account), "{key}");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(folder.join("validator.key"))
                .expect("key file")
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let config =
            idlegrid_node::ValidatorConfig::load(&folder.join("config.toml")).expect("config");
        assert_eq!(config.genesis, folder.join("../genesis.toml"));
        assert_eq!(config.p2p_listen.port(), base + offset);
        // Every validator already there is a peer, at its p2p address.
        let ports: Vec<u16> = config
            .peers
            .iter()
            .map(|peer| peer.address.port())
            .collect();
        assert_eq!(
            ports,
            (0..index).map(|other| base + other).collect::<Vec<_>>()
        );
    }
    assert_eq!(first("config.toml"), first_config);
    assert_eq!(first("validator.key"), first_key);
    // The human form says what to run next.
    let text = idlegrid(&["testnet", "join", "--dir", path(&tn)]);
    assert!(
        text.contains("idlegrid validator --config") && text.contains("stake --role validator"),
        "{text}"
    );
}

#[test]
fn completions_name_every_command() {
    let bash = idlegrid(&["completions", "bash"]);
    assert!(bash.contains("complete -F _idlegrid"), "{bash}");
    for command in [
        "devnet",
        "submit",
        "status",
        "jobs",
        "cancel",
        "wallet",
        "completions",
    ] {
        assert!(bash.contains(command), "bash completion lacks {command}");
    }
    for shell in ["zsh", "fish", "elvish", "powershell"] {
        let script = idlegrid(&["completions", shell]);
        assert!(script.contains("jobs"), "{shell} completion lacks jobs");
    }
    assert_eq!(run(&["completions", "tcsh"]).status.code(), Some(2));
}

#[test]
fn errors_say_what_was_tried_and_what_to_do() {
    let dir = tempfile::tempdir().expect("tempdir");

    // A malformed job file: exit 3, naming the file, line and column, before
    // anything else (no key, no node) is looked at.
    let job = dir.path().join("job.toml");
    std::fs::write(&job, "module = \"pi.wasm\"\nbudget = \"lots\"\n").expect("write job");
    for extra in [None, Some("--json")] {
        let mut args = vec!["submit", path(&job), "--node", "http://127.0.0.1:1"];
        args.extend(extra);
        let output = run(&args);
        assert_eq!(output.status.code(), Some(3), "{output:?}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        let place = format!("{}:2:10", job.display());
        assert!(stderr.contains(&place), "no {place} in: {stderr}");
        if extra.is_some() {
            let message = json(&output)["error"]["message"]
                .as_str()
                .map(str::to_owned);
            assert!(message.is_some_and(|message| message.contains(&place)));
        }
    }

    // No node there: the URL tried, and the ways to name one or start one.
    let output = run(&["status", "--node", "http://127.0.0.1:1", "--json"]);
    assert_eq!(output.status.code(), Some(3), "{output:?}");
    let error = &json(&output)["error"];
    assert_eq!(error["code"], "unreachable", "{error}");
    assert!(
        error["message"]
            .as_str()
            .is_some_and(|message| message.contains("http://127.0.0.1:1")),
        "{error}"
    );
    let hint = error["hint"].as_str().unwrap_or_default();
    for advice in ["--node", "IDLEGRID_NODE", "idlegrid devnet"] {
        assert!(hint.contains(advice), "the hint lacks {advice}: {hint}");
    }
    let stderr =
        String::from_utf8_lossy(&run(&["jobs", "list", "--node", "http://127.0.0.1:1"]).stderr)
            .into_owned();
    assert!(
        stderr.contains("http://127.0.0.1:1") && stderr.contains("idlegrid devnet"),
        "{stderr}"
    );

    // No key file: how to make one.
    let missing = dir.path().join("nobody.key");
    let job_id = JobId::from_bytes([7; 32]).to_string();
    let output = run(&["jobs", "cancel", &job_id, "--key", path(&missing), "--json"]);
    assert_eq!(output.status.code(), Some(3), "{output:?}");
    let error = &json(&output)["error"];
    assert_eq!(error["code"], "key_file", "{error}");
    assert!(
        error["hint"]
            .as_str()
            .is_some_and(|hint| hint.contains("idlegrid wallet") && hint.contains(" new")),
        "{error}"
    );
}

/// A gateway process; killed on drop.
struct Gateway(Child);

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `idlegrid gateway` in front of `node`; gives it, its start line
/// and its API.
fn start_gateway(dir: &Path, node: &str) -> (Gateway, Value, String) {
    let ports = free_ports(2);
    let out = dir.join("gateway.out");
    let child = Command::new(BIN)
        .args(["gateway", "--node", node, "--no-mdns", "--json"])
        .args(["--key", path(&dir.join("gateway.key"))])
        .args(["--listen", &format!("/ip4/127.0.0.1/tcp/{ports}")])
        .args(["--api-listen", &format!("127.0.0.1:{}", ports + 1)])
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out).expect("out file"))
        .stderr(std::fs::File::create(dir.join("gateway.log")).expect("log file"))
        .spawn()
        .expect("spawn gateway");
    let mut gateway = Gateway(child);
    let mut started = Value::Null;
    wait_until(Duration::from_secs(60), "the gateway's start line", || {
        if let Ok(Some(status)) = gateway.0.try_wait() {
            panic!(
                "the gateway exited ({status}): {}",
                std::fs::read_to_string(dir.join("gateway.log")).unwrap_or_default()
            );
        }
        let text = std::fs::read_to_string(&out).unwrap_or_default();
        match text.lines().next().map(serde_json::from_str::<Value>) {
            Some(Ok(value)) => {
                started = value;
                true
            }
            _ => false,
        }
    });
    let api = started["api"]
        .as_str()
        .expect("the gateway's api")
        .to_owned();
    (gateway, started, api)
}

/// Opens a job of `key`'s on the ledger at `api`; gives its id and deadline.
fn open_job(net: &Testnet, key: &Path) -> (String, u64) {
    let api = &net.apis[0];
    let key = idlegrid_node::read_key(key).expect("key");
    let account = run_json(&[
        "wallet",
        "balance",
        &key.account_id().to_string(),
        "--node",
        api,
        "--json",
    ]);
    let nonce = account["next_nonce"].as_u64().expect("next_nonce");
    let status = net.status(0);
    let deadline = status["height"].as_u64().expect("height") + DEADLINE_BLOCKS;
    let terms = OpenJob {
        module: ContentId::of(b"a module nobody runs"),
        spec: ContentId::of(b"a job nobody runs"),
        escrow: ESCROW,
        price_per_million_fuel: 10,
        deadline_height: deadline,
        limits: ExecutionLimits {
            fuel: 1_000_000,
            memory_bytes: 64 << 20,
            output_bytes: 4096,
        },
        agent: None,
    };
    let chain_id = status["chain_id"].as_str().expect("chain_id");
    let body = Transaction::new(chain_id, nonce, 1, TxKind::OpenJob(terms)).expect("body");
    let (code, answer) = common::submit(api, &common::encode(&key.sign(body)));
    assert_eq!(code, 200, "{answer}");
    let id = JobId::derive(&key.account_id(), nonce).to_string();
    wait_until(Duration::from_secs(30), "the job on the ledger", || {
        run(&["jobs", "show", &id, "--node", api]).status.success()
    });
    (id, deadline)
}

#[test]
fn status_jobs_and_the_wallet_speak_json_against_a_running_chain() {
    let net = Testnet::start(1);
    let api = net.apis[0].as_str();
    let dir = net.dir.path();

    // The wallet: a new key, funded, staked as a provider.
    let key = dir.join("requestor.key");
    let key_text = path(&key);
    let created = run_json(&["wallet", "--key", key_text, "new", "--json"]);
    assert_fields(&created, &["account", "key"], "wallet new");
    let account = created["account"].as_str().expect("account").to_owned();
    let shown = run_json(&["wallet", "--key", key_text, "address", "--json"]);
    assert_eq!(shown["account"], account.as_str());
    let sent = run_json(&[
        "wallet",
        "--key",
        path(&net.faucet_key()),
        "--node",
        api,
        "transfer",
        "--to",
        &account,
        "--amount",
        "100000",
        "--wait",
        "--json",
    ]);
    assert_fields(
        &sent,
        &["hash", "nonce", "fee", "height"],
        "wallet transfer",
    );
    assert_eq!(sent["status"], "included", "{sent}");
    let staked = run_json(&[
        "wallet", "--key", key_text, "--node", api, "stake", "--amount", "1000", "--wait", "--json",
    ]);
    assert_eq!(staked["status"], "included", "{staked}");
    let unstaking = run_json(&[
        "wallet", "--key", key_text, "--node", api, "unstake", "--amount", "400", "--json",
    ]);
    assert_fields(&unstaking, &["hash", "nonce", "fee"], "wallet unstake");
    assert_eq!(unstaking["status"], "pending", "{unstaking}");
    wait_until(Duration::from_secs(30), "the unstake", || {
        let balance = run_json(&[
            "wallet", "--key", key_text, "--node", api, "balance", "--json",
        ]);
        balance["provider_stake"]["bonded"] == 600
    });
    let balance = run_json(&[
        "wallet", "--key", key_text, "--node", api, "balance", "--json",
    ]);
    assert_fields(
        &balance,
        &[
            "account",
            "balance",
            "nonce",
            "next_nonce",
            "provider_stake",
            "validator_stake",
        ],
        "wallet balance",
    );
    assert_eq!(
        balance["provider_stake"]["unbonding"][0]["amount"], 400,
        "{balance}"
    );

    // A job, opened by a transaction.
    let (job, deadline) = open_job(&net, &key);

    let status = run_json(&["status", "--node", api, "--json"]);
    assert_fields(
        &status,
        &[
            "node",
            "chain_id",
            "validator",
            "height",
            "finalized_height",
            "epoch",
            "state_root",
            "minimum_fee",
            "mempool",
            "validators",
            "peers",
            "providers",
            "open_jobs",
            "open_jobs_truncated",
            "gateway",
        ],
        "status",
    );
    assert_eq!(status["node"], api);
    assert_eq!(status["chain_id"], "idlegrid-testnet");
    assert_eq!(
        status["validators"].as_array().map(Vec::len),
        Some(1),
        "{status}"
    );
    assert_eq!(
        status["providers"][0]["account"],
        account.as_str(),
        "{status}"
    );
    assert_eq!(status["providers"][0]["stake"], 600, "{status}");
    assert_eq!(status["open_jobs"], 1, "{status}");
    assert_eq!(status["gateway"], Value::Null);
    let human = idlegrid(&["status", "--node", api]);
    assert!(human.contains("open jobs   1"), "{human}");

    let listed = run_json(&["jobs", "list", "--node", api, "--json"]);
    assert_eq!(listed["jobs"].as_array().map(Vec::len), Some(1), "{listed}");
    assert_eq!(listed["jobs"][0]["job"], job.as_str());
    let closed = run_json(&[
        "jobs", "list", "--status", "closed", "--node", api, "--json",
    ]);
    assert_eq!(closed["jobs"], serde_json::json!([]));
    assert!(idlegrid(&["jobs", "list", "--node", api]).contains(&job));

    let shown = run_json(&["jobs", "show", &job, "--node", api, "--json"]);
    assert_fields(
        &shown,
        &[
            "job",
            "requestor",
            "module",
            "spec",
            "escrow",
            "price_per_million_fuel",
            "deadline_height",
            "limits",
            "status",
            "redeemed_total",
            "height",
            "blocks_to_deadline",
            "closable",
        ],
        "jobs show",
    );
    assert_eq!(shown["requestor"], account.as_str());
    assert_eq!(
        (shown["status"].as_str(), shown["closable"].as_bool()),
        (Some("open"), Some(false))
    );
    assert_eq!(shown["escrow"], ESCROW);
    assert_eq!(shown["deadline_height"], deadline);
    let human = idlegrid(&["jobs", "show", &job, "--node", api]);
    assert!(human.contains("blocks to its deadline"), "{human}");

    // Only the requestor may close it.
    let stranger = dir.join("stranger.key");
    idlegrid(&["wallet", "--key", path(&stranger), "new"]);
    let output = run(&[
        "jobs",
        "cancel",
        &job,
        "--key",
        path(&stranger),
        "--node",
        api,
    ]);
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("not_requestor") && stderr.contains(&account),
        "{stderr}"
    );

    // Before the deadline: refused, with the height from which it can be.
    let output = run(&[
        "jobs", "cancel", &job, "--key", key_text, "--node", api, "--json",
    ]);
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    let refused = json(&output);
    assert_eq!(
        refused["error"]["code"], "deadline_not_reached",
        "{refused}"
    );
    assert_eq!(refused["closable_at_height"], deadline + 1, "{refused}");
    assert!(refused["height"].as_u64() < Some(deadline), "{refused}");
    assert!(refused["blocks_left"].as_u64() > Some(0), "{refused}");
    assert!(
        refused["seconds_left_estimate"].as_f64().is_some(),
        "{refused}"
    );

    // Status through a gateway: the ledger as the validator says, and the gateway itself.
    let (_gateway, started, gateway_api) = start_gateway(dir, api);
    let through = run_json(&["status", "--node", &gateway_api, "--json"]);
    assert_eq!(through["chain_id"], "idlegrid-testnet");
    assert_eq!(through["open_jobs"], 1, "{through}");
    assert_eq!(
        through["gateway"]["account"], started["account"],
        "{through}"
    );
    assert_eq!(through["gateway"]["node"], api, "{through}");
    assert!(through["gateway"]["providers"].is_array(), "{through}");

    // --wait: it waits for the deadline, closes the job and reports the refund.
    let closed = run_json(&[
        "jobs", "cancel", &job, "--key", key_text, "--node", api, "--wait", "--json",
    ]);
    assert_fields(
        &closed,
        &["job", "hash", "height", "fee", "refund", "redeemed_total"],
        "jobs cancel",
    );
    assert_eq!(closed["status"], "closed", "{closed}");
    assert_eq!(closed["refund"], ESCROW, "{closed}");
    assert_eq!(closed["redeemed_total"], 0, "{closed}");
    assert!(closed["height"].as_u64() > Some(deadline), "{closed}");
    let shown = run_json(&["jobs", "show", &job, "--node", api, "--json"]);
    assert_eq!(
        (shown["status"].as_str(), shown["escrow"].as_u64()),
        (Some("closed"), Some(0))
    );
    let again = run(&["jobs", "cancel", &job, "--key", key_text, "--node", api]);
    assert_eq!(again.status.code(), Some(1), "{again:?}");
}
