//! What the end-to-end tests share: a testnet of real `idlegrid validator`
//! processes on loopback, and a small JSON client for their APIs.

#![allow(dead_code)]

pub mod network;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use idlegrid_ledger::{SignedTransaction, Transaction, TxKind};
use idlegrid_types::{AccountId, Keypair, codec};
use serde_json::{Value, json};

pub const BIN: &str = env!("CARGO_BIN_EXE_idlegrid");

/// Runs `idlegrid` with `args`, expecting success; returns stdout.
pub fn idlegrid(args: &[&str]) -> String {
    let output = Command::new(BIN).args(args).output().expect("run idlegrid");
    assert!(
        output.status.success(),
        "idlegrid {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).expect("utf-8")
}

/// `count` consecutive free ports on loopback (see
/// [`idlegrid_node::testnet::free_ports`]).
pub fn free_ports(count: usize) -> u16 {
    idlegrid_node::testnet::free_ports(count).expect("free ports")
}

/// Polls `condition` until it holds or `timeout` passes.
pub fn wait_until(timeout: Duration, what: &str, condition: impl FnMut() -> bool) {
    assert!(
        poll_until(timeout, condition),
        "timed out waiting for {what}"
    );
}

/// Polls `condition` until it holds (true) or `timeout` passes (false).
pub fn poll_until(timeout: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while !condition() {
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    true
}

pub fn get(url: &str) -> Result<(u16, Value), String> {
    let response = ureq::get(url)
        .config()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(10)))
        .build()
        .call();
    answer(response)
}

/// A response's status and JSON body (any status is an answer).
fn answer(
    response: Result<ureq::http::Response<ureq::Body>, ureq::Error>,
) -> Result<(u16, Value), String> {
    let response = response.map_err(|error| error.to_string())?;
    let status = response.status().as_u16();
    let body: Value = response
        .into_body()
        .read_json()
        .map_err(|error| error.to_string())?;
    Ok((status, body))
}

/// POSTs raw bytes with a content type; returns the status and JSON body.
pub fn post(url: &str, content_type: &str, body: &[u8]) -> Result<(u16, Value), String> {
    let response = ureq::post(url)
        .config()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(10)))
        .build()
        .header("content-type", content_type)
        .send(body);
    answer(response)
}

/// POSTs a hex-encoded transaction the way a client does.
pub fn submit(api: &str, bytes: &[u8]) -> (u16, Value) {
    try_submit(api, bytes).expect("the API answers")
}

/// [`submit`], for a validator that may be down.
pub fn try_submit(api: &str, bytes: &[u8]) -> Result<(u16, Value), String> {
    let body = json!({ "transaction": hex::encode(bytes) }).to_string();
    post(
        &format!("{api}/v1/transactions"),
        "application/json",
        body.as_bytes(),
    )
}

pub fn encode(transaction: &SignedTransaction) -> Vec<u8> {
    codec::encode(transaction).expect("encode")
}

/// A signed transfer (fee 1), encoded.
pub fn transfer(key: &Keypair, chain_id: &str, nonce: u64, to: AccountId, amount: u64) -> Vec<u8> {
    let body = Transaction::new(chain_id, nonce, 1, TxKind::Transfer { to, amount }).expect("body");
    encode(&key.sign(body))
}

/// One testnet at a time per test binary: a 2-core machine running two
/// networks of validators under load starves a restarting one.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// A testnet of real validator processes; all are killed on drop.
pub struct Testnet {
    _turn: std::sync::MutexGuard<'static, ()>,
    pub dir: tempfile::TempDir,
    pub configs: Vec<PathBuf>,
    pub apis: Vec<String>,
    children: Vec<Option<Child>>,
    /// How many times each validator was started (its log file suffix).
    starts: Vec<usize>,
}

impl Testnet {
    /// Writes a testnet of `validators` with free ports and starts them all.
    pub fn start(validators: usize) -> Self {
        Self::start_with(validators, &[])
    }

    /// [`Testnet::start`] with more `testnet init` flags.
    pub fn start_with(validators: usize, flags: &[&str]) -> Self {
        let turn = ONE_AT_A_TIME
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let dir = tempfile::tempdir().expect("tempdir");
        // Room for one validator that joins later (`testnet join` takes
        // the next ports of the init's scheme).
        let slots = validators + 1;
        let base = free_ports(slots * 2);
        let validators_text = validators.to_string();
        let p2p_port = base.to_string();
        let api_port = (base + slots as u16).to_string();
        let mut args = vec![
            "testnet",
            "init",
            "--validators",
            &validators_text,
            "--dir",
            dir.path().to_str().expect("utf-8 path"),
            "--p2p-port",
            &p2p_port,
            "--api-port",
            &api_port,
            "--json",
        ];
        args.extend_from_slice(flags);
        let out = idlegrid(&args);
        let written: Value = serde_json::from_str(&out).expect("testnet json");
        let strings = |key: &str| -> Vec<String> {
            written[key]
                .as_array()
                .expect("array")
                .iter()
                .map(|value| value.as_str().expect("string").to_owned())
                .collect()
        };
        let configs = strings("configs").into_iter().map(PathBuf::from).collect();
        let apis = strings("apis");
        let mut net = Self {
            _turn: turn,
            dir,
            configs,
            apis,
            children: (0..validators).map(|_| None).collect(),
            starts: vec![0; validators],
        };
        for index in 0..validators {
            net.launch(index);
        }
        for index in 0..validators {
            net.wait_ready(index);
        }
        net
    }

    /// `idlegrid testnet join`: writes one more validator (not in
    /// genesis) and makes it the last index, not started. Returns what
    /// the command printed ({"config", "account", "api", "key"}).
    pub fn join(&mut self) -> Value {
        let out = idlegrid(&[
            "testnet",
            "join",
            "--dir",
            self.dir.path().to_str().expect("utf-8 path"),
            "--json",
        ]);
        let joined: Value = serde_json::from_str(&out).expect("join json");
        let text = |key: &str| joined[key].as_str().expect("string").to_owned();
        self.configs.push(PathBuf::from(text("config")));
        self.apis.push(text("api"));
        self.children.push(None);
        self.starts.push(0);
        joined
    }

    pub fn faucet_key(&self) -> PathBuf {
        self.dir.path().join("faucet.key")
    }

    pub fn log(&self, index: usize) -> PathBuf {
        self.dir
            .path()
            .join(format!("validator-{index}.{}.log", self.starts[index]))
    }

    /// Starts validator `index` (again) over its data directory.
    pub fn launch(&mut self, index: usize) {
        self.starts[index] += 1;
        let log = std::fs::File::create(self.log(index)).expect("log file");
        let child = Command::new(BIN)
            .args(["validator", "--config"])
            .arg(&self.configs[index])
            .env("IDLEGRID_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("spawn validator");
        self.children[index] = Some(child);
    }

    /// Waits until validator `index` answers its status endpoint; fails
    /// at once, with its log, if it exited.
    pub fn wait_ready(&mut self, index: usize) {
        self.wait_ready_within(index, Duration::from_secs(120));
    }

    /// [`Testnet::wait_ready`] for at most `timeout`.
    pub fn wait_ready_within(&mut self, index: usize, timeout: Duration) {
        let url = format!("{}/v1/status", self.apis[index]);
        let deadline = Instant::now() + timeout;
        loop {
            if get(&url).is_ok_and(|(status, _)| status == 200) {
                return;
            }
            let exited = self.children[index]
                .as_mut()
                .and_then(|child| child.try_wait().ok().flatten());
            assert!(
                exited.is_none() && Instant::now() < deadline,
                "validator {index} is not answering ({exited:?})\n{}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// How validator `index` exited, once it has (reaped then; `None`
    /// while it runs or when it was not started).
    pub fn exited(&mut self, index: usize) -> Option<std::process::ExitStatus> {
        let child = self.children[index].as_mut()?;
        let status = child.try_wait().ok().flatten()?;
        self.children[index] = None;
        Some(status)
    }

    /// Every log file of every start of every validator.
    pub fn log_files(&self) -> Vec<PathBuf> {
        (0..self.configs.len())
            .flat_map(|index| {
                (1..=self.starts[index]).map(move |start| {
                    self.dir
                        .path()
                        .join(format!("validator-{index}.{start}.log"))
                })
            })
            .collect()
    }

    /// Kills validator `index` with SIGKILL (no chance to clean up).
    pub fn kill(&mut self, index: usize) {
        if let Some(mut child) = self.children[index].take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn status(&self, index: usize) -> Value {
        let (code, body) = get(&format!("{}/v1/status", self.apis[index])).expect("status answers");
        assert_eq!(code, 200, "status: {body}");
        body
    }

    pub fn height(&self, index: usize) -> u64 {
        self.status(index)["height"].as_u64().expect("height")
    }

    pub fn logs(&self) -> String {
        let mut all = String::new();
        for index in 0..self.configs.len() {
            for start in 1..=self.starts[index] {
                let path = self
                    .dir
                    .path()
                    .join(format!("validator-{index}.{start}.log"));
                let text = std::fs::read_to_string(&path).unwrap_or_default();
                let tail: Vec<&str> = text.lines().rev().take(30).collect();
                all.push_str(&format!("--- {}\n", path.display()));
                for line in tail.into_iter().rev() {
                    all.push_str(line);
                    all.push('\n');
                }
            }
        }
        all
    }
}

impl Drop for Testnet {
    fn drop(&mut self) {
        for index in 0..self.children.len() {
            self.kill(index);
        }
    }
}

/// The data directory of a config (for tests that look at files).
pub fn data_dir(config: &Path) -> PathBuf {
    config.parent().expect("config folder").join("data")
}
