//! A compute network in real processes on loopback for the end-to-end
//! tests: one validator, `idlegrid provide` processes (and a gateway), and
//! `idlegrid submit`, with the checks every job's books must pass.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use idlegrid_sandbox::{Sandbox, SandboxConfig, TaskSpec, task_limits};
use idlegrid_types::{ExecutionLimits, JobId, task_seed};
use serde_json::Value;

use super::{BIN, Testnet, free_ports, get, idlegrid, poll_until, wait_until};

/// Each account's balance from the faucet.
pub const FUNDS: u64 = 10_000_000;
/// Provider stake, where a provider stakes.
pub const STAKE: u64 = 5_000;

/// A provider process; killed on drop.
pub struct Provider {
    pub child: Option<Child>,
    pub key: PathBuf,
    pub account: String,
    /// Where it listens: TCP first, then QUIC.
    pub addresses: Vec<String>,
    pub log: PathBuf,
    /// Its stdout this start: the start line, and its summary when it stops.
    pub out: PathBuf,
    /// Its own flags (listen, bootstrap, stake…).
    pub args: Vec<String>,
    pub starts: usize,
    /// Its start line, this start.
    pub ready: Value,
}

impl Drop for Provider {
    fn drop(&mut self) {
        self.kill();
    }
}

impl Provider {
    /// Stops it as Ctrl-C would (it redeems what it is owed) and gives its
    /// summary line.
    pub fn stop(&mut self) -> Value {
        let mut child = self.child.take().expect("running");
        let status = Command::new("kill")
            .args(["-INT", &child.id().to_string()])
            .status()
            .expect("kill");
        assert!(status.success());
        let exited = poll_until(Duration::from_secs(60), || {
            child.try_wait().expect("waitable").is_some()
        });
        if !exited {
            let _ = child.kill();
            panic!("the provider did not stop in a minute");
        }
        let text = std::fs::read_to_string(&self.out).expect("stdout");
        serde_json::from_str(text.lines().last().expect("a summary line"))
            .unwrap_or_else(|error| panic!("summary {text}: {error}"))
    }

    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A validator, funded accounts, providers, and perhaps a gateway.
pub struct Network {
    pub testnet: Testnet,
    pub providers: Vec<Provider>,
    pub gateway: Option<Child>,
    /// The gateway's arguments (its key and ports stay across restarts).
    gateway_args: Vec<String>,
    gateway_starts: usize,
}

impl Drop for Network {
    fn drop(&mut self) {
        if let Some(mut gateway) = self.gateway.take() {
            let _ = gateway.kill();
            let _ = gateway.wait();
        }
    }
}

/// In a provider's flags: it runs its benchmark rather than take the fixed
/// score every other test provider offers (the flag itself is not passed).
pub const MEASURE: &str = "(measure the benchmark)";

impl Network {
    pub fn start() -> Self {
        Self::start_with(&[])
    }

    /// A one-validator network whose `testnet init` also gets `flags`.
    pub fn start_with(flags: &[&str]) -> Self {
        let mut init = vec!["--emission-per-epoch", "0"];
        init.extend_from_slice(flags);
        Self {
            // Without emission, a provider's balance moves only by what it
            // redeems (epoch rewards would add to it).
            testnet: Testnet::start_with(1, &init),
            providers: Vec::new(),
            gateway: None,
            gateway_args: Vec::new(),
            gateway_starts: 0,
        }
    }

    /// A network with `count` staked providers, all joined through the
    /// first; gives the first's TCP address.
    pub fn with_staked_providers(count: usize) -> (Self, String) {
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
    pub fn gateway(&mut self) -> (String, String) {
        self.gateway_with(&[])
    }

    /// [`Network::gateway`] with `flags` added.
    pub fn gateway_with(&mut self, flags: &[&str]) -> (String, String) {
        let ports = free_ports(2);
        let key = self.dir().join("gateway.key");
        self.gateway_args = [
            "gateway",
            "--node",
            self.api(),
            "--no-mdns",
            "--json",
            "--key",
        ]
        .into_iter()
        .map(str::to_owned)
        .chain([key.to_str().expect("utf-8 path").to_owned()])
        .chain([
            "--listen".to_owned(),
            format!("/ip4/127.0.0.1/tcp/{ports}"),
            "--api-listen".to_owned(),
            format!("127.0.0.1:{}", ports + 1),
        ])
        .chain(flags.iter().map(|flag| (*flag).to_owned()))
        .collect();
        let started = self.launch_gateway();
        let address = started["addresses"][0]
            .as_str()
            .expect("an address")
            .to_owned();
        let api = started["api"].as_str().expect("an api").to_owned();
        (address, api)
    }

    /// Stops the gateway (as a crash would) and starts it again with the
    /// same key, addresses and flags; waits for its start line. Every
    /// reservation and circuit through it is gone.
    pub fn restart_gateway(&mut self) {
        if let Some(mut gateway) = self.gateway.take() {
            let _ = gateway.kill();
            let _ = gateway.wait();
        }
        self.launch_gateway();
    }

    fn launch_gateway(&mut self) -> Value {
        self.gateway_starts += 1;
        let name = match self.gateway_starts {
            1 => "gateway".to_owned(),
            starts => format!("gateway.{starts}"),
        };
        let out = self.dir().join(format!("{name}.out"));
        let log = self.dir().join(format!("{name}.log"));
        let mut child = Command::new(BIN)
            .args(&self.gateway_args)
            .env("IDLEGRID_LOG", "info")
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&out).expect("out file"))
            .stderr(std::fs::File::create(&log).expect("log file"))
            .spawn()
            .expect("spawn gateway");
        let started = start_line(&mut child, &out, &log, "the gateway");
        self.gateway = Some(child);
        started
    }

    pub fn api(&self) -> &str {
        &self.testnet.apis[0]
    }

    pub fn dir(&self) -> &Path {
        self.testnet.dir.path()
    }

    /// A new key file holding `FUNDS` from the faucet; its account.
    pub fn funded_key(&self, name: &str) -> (PathBuf, String) {
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
    pub fn add_provider(&mut self, args: Vec<String>) -> usize {
        let index = self.providers.len();
        let (key, account) = self.funded_key(&format!("provider-{index}"));
        self.providers.push(Provider {
            child: None,
            key,
            account,
            addresses: Vec::new(),
            log: PathBuf::new(),
            out: PathBuf::new(),
            args,
            starts: 0,
            ready: Value::Null,
        });
        self.launch(index);
        index
    }

    /// Starts a funded provider that joins through `bootstrap`, with
    /// `flags` added; waits for its start line.
    pub fn provider(&mut self, bootstrap: Option<&str>, flags: &[&str]) -> usize {
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
    pub fn provider_behind(&mut self, relay: &str, flags: &[&str]) -> usize {
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
    pub fn launch(&mut self, index: usize) {
        let dir = self.dir().to_owned();
        let api = self.api().to_owned();
        let provider = &mut self.providers[index];
        provider.starts += 1;
        let data = dir.join(format!("provider-{index}"));
        let out = dir.join(format!("provider-{index}.{}.out", provider.starts));
        provider.log = dir.join(format!("provider-{index}.{}.log", provider.starts));
        provider.out = out.clone();
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
            // A fixed score (no benchmark run) unless the test gives one or
            // wants this provider to measure itself.
            .args(
                (!provider
                    .args
                    .iter()
                    .any(|arg| arg == MEASURE || arg == "--benchmark-fuel-per-second"))
                .then_some(["--benchmark-fuel-per-second", "50000000"])
                .into_iter()
                .flatten(),
            )
            // No GPU unless the test asks for one (any `--gpu…` flag).
            .args((!provider.args.iter().any(|arg| arg.starts_with("--gpu"))).then_some("--no-gpu"))
            .arg("--key")
            .arg(&provider.key)
            .arg("--data-dir")
            .arg(&data)
            .args(provider.args.iter().filter(|arg| *arg != MEASURE))
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
        provider.ready = started;
    }

    pub fn account(&self, account: &str) -> Value {
        let (status, body) =
            get(&format!("{}/v1/accounts/{account}", self.api())).expect("account answers");
        assert_eq!(status, 200, "{body}");
        body
    }

    pub fn logs(&self) -> String {
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
pub fn start_line(child: &mut Child, out: &Path, log: &Path, what: &str) -> Value {
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

/// Runs `idlegrid submit` and returns its process (stdout: one JSON report).
pub fn submit(network: &Network, job: &Path, out: &Path, bootstrap: &str) -> Child {
    submit_through(network, network.api(), job, out, bootstrap)
}

/// [`submit`] with the ledger's API at `api`.
pub fn submit_through(
    network: &Network,
    api: &str,
    job: &Path,
    out: &Path,
    bootstrap: &str,
) -> Child {
    submit_with(network, api, job, out, bootstrap, &[])
}

/// [`submit_through`] with more flags.
pub fn submit_with(
    network: &Network,
    api: &str,
    job: &Path,
    out: &Path,
    bootstrap: &str,
    flags: &[&str],
) -> Child {
    let overlay = ["--listen", "/ip4/127.0.0.1/tcp/0", "--bootstrap", bootstrap];
    submit_command(
        network,
        api,
        job,
        out,
        &overlay,
        &[flags, &["--close"]].concat(),
    )
}

/// [`submit`] without closing the job at its deadline: `submit` exits once
/// every task is decided and paid for.
pub fn submit_unclosed(network: &Network, job: &Path, out: &Path, bootstrap: &str) -> Child {
    let overlay = ["--listen", "/ip4/127.0.0.1/tcp/0", "--bootstrap", bootstrap];
    submit_command(network, network.api(), job, out, &overlay, &[])
}

/// [`submit_through`] from a requestor that, like the provider behind
/// `relay`, listens nowhere but through it: every exchange with a relayed
/// provider then crosses the relay.
pub fn submit_behind(network: &Network, api: &str, job: &Path, out: &Path, relay: &str) -> Child {
    let overlay = ["--relay", relay, "--bootstrap", relay];
    submit_command(network, api, job, out, &overlay, &["--close"])
}

fn submit_command(
    network: &Network,
    api: &str,
    job: &Path,
    out: &Path,
    overlay: &[&str],
    flags: &[&str],
) -> Child {
    let key = network.dir().join("requestor.key");
    if !key.exists() {
        network.funded_key("requestor");
    }
    Command::new(BIN)
        .args(["submit", "--node", api, "--no-mdns", "--json"])
        .arg("--key")
        .arg(&key)
        .arg("--out")
        .arg(out)
        .args(overlay)
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
pub fn finish(network: &Network, mut child: Child, out: &Path) -> Value {
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
pub fn failed_tasks(out: &Path) -> String {
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

/// Each provider's (balance, nonce) now.
pub fn books(network: &Network) -> BTreeMap<String, (u64, u64)> {
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
pub fn check_books(network: &Network, results: &Value, before: &BTreeMap<String, (u64, u64)>) {
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

/// Starts a staked provider that returns wrong outputs after its first
/// `honest_first` tasks; its account.
pub fn liar(network: &mut Network, bootstrap: Option<&str>, honest_first: u64) -> String {
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
pub fn liar_first(honest: usize, honest_first: u64) -> (Network, String, String) {
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
pub fn check_stakes<'a>(
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

/// `--bootstrap` flags dialing every provider from `first` on, so the
/// requestor finds them all itself.
pub fn dial_providers(network: &Network, first: usize) -> Vec<&str> {
    network.providers[first..]
        .iter()
        .flat_map(|provider| ["--bootstrap", provider.addresses[0].as_str()])
        .collect()
}

/// Each of `providers` was paid something for the job in `results`.
pub fn check_paid(results: &Value, providers: &[Provider]) {
    for provider in providers {
        let paid = results["providers"][&provider.account]["paid"]
            .as_u64()
            .unwrap_or(0);
        assert!(paid > 0, "{} was not paid: {results}", provider.account);
    }
}

/// `account` got no work in the job in `results`; `why` says why it should
/// not have.
pub fn check_no_work(results: &Value, account: &str, why: &str) {
    assert!(
        results["providers"].get(account).is_none(),
        "{why} got work: {results}"
    );
}

pub const PI: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/pi/pi.wasm");

/// Writes a job file of `tasks` pi tasks.
pub fn pi_job(dir: &Path, tasks: u64, policy: &str, deadline_blocks: u64) -> PathBuf {
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

/// Every task's output, as the sandbox gives it locally.
pub fn expected_outputs(job: &str, tasks: u64) -> Vec<Vec<u8>> {
    pi_outputs(job, 2000, 0..tasks)
}

/// The outputs of pi tasks of `samples` at `indexes`, as the sandbox gives
/// them locally.
pub fn pi_outputs(job: &str, samples: u64, indexes: impl IntoIterator<Item = u64>) -> Vec<Vec<u8>> {
    let job: JobId = job.parse().expect("job id");
    let sandbox = Sandbox::new(SandboxConfig::default()).expect("sandbox");
    let module = std::fs::read(PI).expect("pi module");
    let (module, _) = sandbox.prepare(&module).expect("pi prepares");
    let limits = ExecutionLimits {
        fuel: 1_000_000,
        memory_bytes: 256 << 20,
        output_bytes: 4096,
    };
    indexes
        .into_iter()
        .map(|index| {
            let spec = TaskSpec {
                args: vec![samples.to_string(), index.to_string()],
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
pub fn check_results(out: &Path, report: &Value, tasks: u64) -> Value {
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
