//! The compute network end to end, in real processes on loopback: one
//! validator, `idlegrid provide` processes and `idlegrid submit`. Jobs run,
//! results are checked against local execution, providers are paid what
//! their vouchers say, and the escrow's books close.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::{BIN, Testnet, free_ports, get, idlegrid, poll_until, wait_until};
use idlegrid_sandbox::{Sandbox, SandboxConfig, TaskSpec, task_limits};
use idlegrid_types::{ExecutionLimits, JobId, task_seed};
use serde_json::Value;

const PI: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/pi/pi.wasm");
/// Each account's balance from the faucet.
const FUNDS: u64 = 10_000_000;
/// Provider stake, where a provider stakes.
const STAKE: u64 = 5_000;

/// A provider process; killed on drop.
struct Provider {
    child: Option<Child>,
    key: PathBuf,
    account: String,
    /// Where it listens: TCP first, then QUIC.
    addresses: Vec<String>,
    log: PathBuf,
    /// Its own flags (listen, bootstrap, stake…).
    args: Vec<String>,
    starts: usize,
}

impl Drop for Provider {
    fn drop(&mut self) {
        self.kill();
    }
}

impl Provider {
    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A validator, funded accounts, providers, and perhaps a gateway.
struct Network {
    testnet: Testnet,
    providers: Vec<Provider>,
    gateway: Option<Child>,
}

impl Drop for Network {
    fn drop(&mut self) {
        if let Some(mut gateway) = self.gateway.take() {
            let _ = gateway.kill();
            let _ = gateway.wait();
        }
    }
}

impl Network {
    fn start() -> Self {
        Self {
            // Without emission, a provider's balance moves only by what it
            // redeems (epoch rewards would add to it).
            testnet: Testnet::start_with(1, &["--emission-per-epoch", "0"]),
            providers: Vec::new(),
            gateway: None,
        }
    }

    /// A network with `count` staked providers, all joined through the
    /// first; gives the first's TCP address.
    fn with_staked_providers(count: usize) -> (Self, String) {
        let mut network = Self::start();
        let stake = STAKE.to_string();
        let first = network.provider(None, &["--stake", &stake]);
        let bootstrap = network.providers[first].addresses[0].clone();
        for _ in 1..count {
            network.provider(Some(&bootstrap), &["--stake", &stake]);
        }
        (network, bootstrap)
    }

    /// Starts `idlegrid gateway`; gives its overlay address and its API.
    fn gateway(&mut self) -> (String, String) {
        let ports = free_ports(2);
        let out = self.dir().join("gateway.out");
        let log = self.dir().join("gateway.log");
        let mut child = Command::new(BIN)
            .args(["gateway", "--node", self.api(), "--no-mdns", "--json"])
            .arg("--key")
            .arg(self.dir().join("gateway.key"))
            .args(["--listen", &format!("/ip4/127.0.0.1/tcp/{ports}")])
            .args(["--api-listen", &format!("127.0.0.1:{}", ports + 1)])
            .env("IDLEGRID_LOG", "info")
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&out).expect("out file"))
            .stderr(std::fs::File::create(&log).expect("log file"))
            .spawn()
            .expect("spawn gateway");
        let started = start_line(&mut child, &out, &log, "the gateway");
        self.gateway = Some(child);
        let address = started["addresses"][0]
            .as_str()
            .expect("an address")
            .to_owned();
        let api = started["api"].as_str().expect("an api").to_owned();
        (address, api)
    }

    fn api(&self) -> &str {
        &self.testnet.apis[0]
    }

    fn dir(&self) -> &Path {
        self.testnet.dir.path()
    }

    /// A new key file holding `FUNDS` from the faucet; its account.
    fn funded_key(&self, name: &str) -> (PathBuf, String) {
        let key = self.dir().join(format!("{name}.key"));
        let key_text = key.to_str().expect("utf-8 path");
        idlegrid(&["wallet", "--key", key_text, "new"]);
        let account = idlegrid(&["wallet", "--key", key_text, "address"])
            .trim()
            .to_owned();
        let faucet = self.testnet.faucet_key();
        let amount = FUNDS.to_string();
        idlegrid(&[
            "wallet",
            "--node",
            self.api(),
            "--key",
            faucet.to_str().expect("utf-8 path"),
            "transfer",
            "--to",
            &account,
            "--amount",
            &amount,
            "--wait",
        ]);
        (key, account)
    }

    /// Funds a new provider's key and starts it with `args`.
    fn add_provider(&mut self, args: Vec<String>) -> usize {
        let index = self.providers.len();
        let (key, account) = self.funded_key(&format!("provider-{index}"));
        self.providers.push(Provider {
            child: None,
            key,
            account,
            addresses: Vec::new(),
            log: PathBuf::new(),
            args,
            starts: 0,
        });
        self.launch(index);
        index
    }

    /// Starts a funded provider that joins through `bootstrap`, with
    /// `flags` added; waits for its start line.
    fn provider(&mut self, bootstrap: Option<&str>, flags: &[&str]) -> usize {
        let port = free_ports(1);
        let mut args: Vec<String> = ["--listen", &format!("/ip4/127.0.0.1/tcp/{port}")]
            .into_iter()
            .chain(["--listen", &format!("/ip4/127.0.0.1/udp/{port}/quic-v1")])
            .map(str::to_owned)
            .collect();
        if let Some(bootstrap) = bootstrap {
            args.extend(["--bootstrap".to_owned(), bootstrap.to_owned()]);
        }
        args.extend(flags.iter().map(|flag| (*flag).to_owned()));
        let index = self.add_provider(args);
        let peer =
            idlegrid_net::peer_id_of(&self.providers[index].account.parse().expect("account"));
        self.providers[index].addresses = vec![
            format!("/ip4/127.0.0.1/tcp/{port}/p2p/{peer}"),
            format!("/ip4/127.0.0.1/udp/{port}/quic-v1/p2p/{peer}"),
        ];
        index
    }

    /// Starts a funded provider that listens only through the gateway at
    /// `relay`, as one behind NAT would.
    fn provider_behind(&mut self, relay: &str, flags: &[&str]) -> usize {
        let mut args = vec!["--relay".to_owned(), relay.to_owned()];
        args.extend(flags.iter().map(|flag| (*flag).to_owned()));
        let index = self.add_provider(args);
        let out = self.dir().join(format!("provider-{index}.1.out"));
        let text = std::fs::read_to_string(out).expect("start line");
        let started: Value =
            serde_json::from_str(text.lines().next().expect("a line")).expect("json");
        let addresses = started["addresses"].as_array().expect("addresses");
        assert!(!addresses.is_empty(), "{started}");
        for address in addresses {
            let address = address.as_str().expect("an address");
            assert!(
                address.contains("/p2p-circuit/"),
                "listens directly at {address}"
            );
        }
        index
    }

    /// Starts provider `index` (again, over its data directory); waits for
    /// its start line.
    fn launch(&mut self, index: usize) {
        let dir = self.dir().to_owned();
        let api = self.api().to_owned();
        let provider = &mut self.providers[index];
        provider.starts += 1;
        let data = dir.join(format!("provider-{index}"));
        let out = dir.join(format!("provider-{index}.{}.out", provider.starts));
        provider.log = dir.join(format!("provider-{index}.{}.log", provider.starts));
        let mut child = Command::new(BIN)
            .args([
                "provide",
                "--node",
                &api,
                "--no-mdns",
                "--json",
                "--cores",
                "1",
            ])
            .args([
                "--redeem-interval-secs",
                "3600",
                "--offer-interval-secs",
                "2",
            ])
            .args(["--benchmark-fuel-per-second", "50000000"])
            .arg("--key")
            .arg(&provider.key)
            .arg("--data-dir")
            .arg(&data)
            .args(&provider.args)
            .env("IDLEGRID_LOG", "info")
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&out).expect("out file"))
            .stderr(std::fs::File::create(&provider.log).expect("log file"))
            .spawn()
            .expect("spawn provider");
        let started = start_line(
            &mut child,
            &out,
            &provider.log,
            &format!("provider {index}"),
        );
        assert_eq!(started["account"], provider.account.as_str());
        provider.child = Some(child);
    }

    fn account(&self, account: &str) -> Value {
        let (status, body) =
            get(&format!("{}/v1/accounts/{account}", self.api())).expect("account answers");
        assert_eq!(status, 200, "{body}");
        body
    }

    fn logs(&self) -> String {
        let mut all = self.testnet.logs();
        for provider in &self.providers {
            let text = std::fs::read_to_string(&provider.log).unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(20).collect();
            all.push_str(&format!("--- {}\n", provider.log.display()));
            for line in tail.into_iter().rev() {
                all.push_str(line);
                all.push('\n');
            }
        }
        all
    }
}

/// Waits for the first line `child` writes to `out`, a JSON object; fails
/// with its log if it exits first.
fn start_line(child: &mut Child, out: &Path, log: &Path, what: &str) -> Value {
    let mut started = Value::Null;
    wait_until(
        Duration::from_secs(120),
        &format!("the start line of {what}"),
        || {
            if let Ok(Some(status)) = child.try_wait() {
                panic!(
                    "{what} exited ({status}):\n{}",
                    std::fs::read_to_string(log).unwrap_or_default()
                );
            }
            let text = std::fs::read_to_string(out).unwrap_or_default();
            match text.lines().next().map(serde_json::from_str::<Value>) {
                Some(Ok(value)) => {
                    started = value;
                    true
                }
                _ => false,
            }
        },
    );
    started
}

/// Writes a job file of `tasks` pi tasks.
fn pi_job(dir: &Path, tasks: u64, policy: &str, deadline_blocks: u64) -> PathBuf {
    let path = dir.join(format!("job-{tasks}.toml"));
    let text = format!(
        "module = {PI:?}\nprice_per_million_fuel = 10\nbudget = {budget}\ndeadline_blocks = {deadline_blocks}\n\
         [limits]\nfuel = 1000000\noutput_bytes = 4096\n\
         [verification]\n{policy}\n\
         [tasks]\nstart = 0\nend = {tasks}\nargs = [\"2000\", \"{{index}}\"]\n",
        budget = tasks * 8 * 10,
    );
    std::fs::write(&path, text).expect("write job file");
    path
}

/// Runs `idlegrid submit` and returns its process (stdout: one JSON report).
fn submit(network: &Network, job: &Path, out: &Path, bootstrap: &str) -> Child {
    submit_through(network, network.api(), job, out, bootstrap)
}

/// [`submit`] with the ledger's API at `api`.
fn submit_through(network: &Network, api: &str, job: &Path, out: &Path, bootstrap: &str) -> Child {
    submit_with(network, api, job, out, bootstrap, &[])
}

/// [`submit_through`] with more flags.
fn submit_with(
    network: &Network,
    api: &str,
    job: &Path,
    out: &Path,
    bootstrap: &str,
    flags: &[&str],
) -> Child {
    let key = network.dir().join("requestor.key");
    if !key.exists() {
        network.funded_key("requestor");
    }
    Command::new(BIN)
        .args(["submit", "--node", api, "--no-mdns", "--json", "--close"])
        .arg("--key")
        .arg(&key)
        .arg("--out")
        .arg(out)
        .args(["--listen", "/ip4/127.0.0.1/tcp/0", "--bootstrap", bootstrap])
        .args(flags)
        .arg(job)
        .env("IDLEGRID_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(out.with_extension("log")).expect("log file"))
        .spawn()
        .expect("spawn submit")
}

/// Waits for `submit` to exit (at most ten minutes: a job that never ends
/// fails the test with its logs rather than hanging it).
fn finish(network: &Network, mut child: Child, out: &Path) -> Value {
    let exited = poll_until(Duration::from_secs(600), || {
        child.try_wait().expect("submit is waitable").is_some()
    });
    if !exited {
        let _ = child.kill();
        let _ = child.wait();
        panic!(
            "submit did not finish in ten minutes\n{}\n{}",
            std::fs::read_to_string(out.with_extension("log")).unwrap_or_default(),
            network.logs()
        );
    }
    let output = child.wait_with_output().expect("submit runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "submit failed ({}): {stdout}\nfailed tasks: {}\n{}\n{}",
        output.status,
        failed_tasks(out),
        std::fs::read_to_string(out.with_extension("log")).unwrap_or_default(),
        network.logs()
    );
    let report: Value = serde_json::from_str(stdout.trim()).expect("one JSON report");
    eprintln!("submit: {report}");
    report
}

/// The records of the tasks `results.json` under `out` says failed.
fn failed_tasks(out: &Path) -> String {
    let Ok(text) = std::fs::read_to_string(out.join("results.json")) else {
        return "(no results.json)".to_owned();
    };
    let results: Value = serde_json::from_str(&text).unwrap_or_default();
    let failed: Vec<&Value> = results["tasks"]
        .as_array()
        .map(|tasks| {
            tasks
                .iter()
                .filter(|task| task["status"] == "failed")
                .collect()
        })
        .unwrap_or_default();
    serde_json::to_string(&failed).unwrap_or_default()
}

/// Every task's output, as the sandbox gives it locally.
fn expected_outputs(job: &str, tasks: u64) -> Vec<Vec<u8>> {
    let job: JobId = job.parse().expect("job id");
    let sandbox = Sandbox::new(SandboxConfig::default()).expect("sandbox");
    let module = std::fs::read(PI).expect("pi module");
    let (module, _) = sandbox.prepare(&module).expect("pi prepares");
    let limits = ExecutionLimits {
        fuel: 1_000_000,
        memory_bytes: 256 << 20,
        output_bytes: 4096,
    };
    (0..tasks)
        .map(|index| {
            let spec = TaskSpec {
                args: vec!["2000".to_owned(), index.to_string()],
                seed: task_seed(&job, index),
                limits: task_limits(&limits, Duration::from_secs(60)),
                ..TaskSpec::default()
            };
            let report = sandbox.run(&module, &spec).expect("pi runs");
            report.result.expect("pi completes").output.stdout
        })
        .collect()
}

/// Every task is accepted once and its file holds what local execution gives.
fn check_results(out: &Path, report: &Value, tasks: u64) -> Value {
    let results: Value = serde_json::from_str(
        &std::fs::read_to_string(out.join("results.json")).expect("results.json"),
    )
    .expect("json");
    assert_eq!(results["accepted"], tasks, "{report}");
    assert_eq!(results["failed"], 0);
    let records = results["tasks"].as_array().expect("tasks");
    assert_eq!(records.len() as u64, tasks);
    let expected = expected_outputs(results["job"].as_str().expect("job"), tasks);
    for (index, record) in records.iter().enumerate() {
        assert_eq!(record["index"], index as u64);
        assert_eq!(record["status"], "accepted");
        let file = out.join(record["file"].as_str().expect("file"));
        let bytes = std::fs::read(&file).expect("task output file");
        assert_eq!(bytes, expected[index], "task {index}");
        assert_eq!(
            record["output"],
            idlegrid_types::ContentId::of(&bytes).to_string()
        );
    }
    results
}

/// Each provider's (balance, nonce) now.
fn books(network: &Network) -> BTreeMap<String, (u64, u64)> {
    network
        .providers
        .iter()
        .map(|provider| {
            let account = network.account(&provider.account);
            let number = |key: &str| account[key].as_u64().expect("a number");
            (
                provider.account.clone(),
                (number("balance"), number("nonce")),
            )
        })
        .collect()
}

/// Providers' balances rose by exactly what they redeemed (less the fee of
/// each transaction they sent since `before`), the ledger's job says the
/// same, and redeemed + refund = escrow.
fn check_books(network: &Network, results: &Value, before: &BTreeMap<String, (u64, u64)>) {
    let job = results["job"].as_str().expect("job");
    let (status, on_chain) = get(&format!("{}/v1/jobs/{job}", network.api())).expect("job answers");
    assert_eq!(status, 200);
    assert_eq!(on_chain["status"], "closed");
    let redeemed = on_chain["redeemed_total"].as_u64().expect("redeemed");
    assert_eq!(results["redeemed"], redeemed);
    let escrow = results["escrow"].as_u64().expect("escrow");
    assert_eq!(
        redeemed + results["refund"].as_u64().expect("refund"),
        escrow,
        "{results}"
    );
    let after = books(network);
    let minimum_fee = network.testnet.status(0)["minimum_fee"]
        .as_u64()
        .expect("minimum fee");
    let mut rises = 0;
    for (account, (balance_before, nonce_before)) in before {
        let (balance, nonce) = after[account];
        let paid = results["providers"][account]["paid"].as_u64().unwrap_or(0);
        // Every transaction since (its redemptions) paid the minimum fee.
        let transactions = nonce - nonce_before;
        assert_eq!(
            balance,
            balance_before + paid - transactions * minimum_fee,
            "{account}: {results}"
        );
        assert!(
            transactions <= 2,
            "{account} sent {transactions} transactions"
        );
        rises += paid;
    }
    assert_eq!(
        rises, redeemed,
        "every voucher was redeemed once: {results}"
    );
}

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
    assert!(
        results["providers"].get(unstaked).is_none(),
        "an unstaked provider got work: {results}"
    );
    for provider in &network.providers[..3] {
        let paid = results["providers"][&provider.account]["paid"]
            .as_u64()
            .unwrap_or(0);
        assert!(paid > 0, "{} was not paid: {results}", provider.account);
    }
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

/// Starts a staked provider that returns wrong outputs after its first
/// `honest_first` tasks; its account.
fn liar(network: &mut Network, bootstrap: Option<&str>, honest_first: u64) -> String {
    let stake = STAKE.to_string();
    let honest_first = honest_first.to_string();
    let index = network.provider(
        bootstrap,
        &[
            "--stake",
            &stake,
            "--cheat",
            "wrong-output",
            "--cheat-after",
            &honest_first,
        ],
    );
    network.providers[index].account.clone()
}

/// A network whose first provider, the one everybody bootstraps from, is a
/// liar (see [`liar`]) followed by `honest` staked providers: the requestor
/// finds the liar first, so it gets work however fast the others are.
/// Gives the network, the liar's account and the bootstrap address.
fn liar_first(honest: usize, honest_first: u64) -> (Network, String, String) {
    let mut network = Network::start();
    let liar = liar(&mut network, None, honest_first);
    let bootstrap = network.providers[0].addresses[0].clone();
    let stake = STAKE.to_string();
    for _ in 0..honest {
        network.provider(Some(&bootstrap), &["--stake", &stake]);
    }
    (network, liar, bootstrap)
}

/// Every liar lost stake to a slash; every honest provider kept all of it.
fn check_stakes<'a>(
    network: &Network,
    liars: impl IntoIterator<Item = &'a str>,
    honest: impl IntoIterator<Item = &'a str>,
) {
    let bonded = |account: &str| {
        network.account(account)["provider_stake"]["bonded"]
            .as_u64()
            .expect("stake")
    };
    for liar in liars {
        let left = bonded(liar);
        assert!(left < STAKE, "liar {liar} kept its stake of {left}");
    }
    for provider in honest {
        assert_eq!(bonded(provider), STAKE, "honest {provider} lost stake");
    }
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
    let mut flags = Vec::new();
    for provider in &network.providers[1..] {
        flags.extend(["--bootstrap", provider.addresses[0].as_str()]);
    }
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
