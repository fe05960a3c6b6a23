//! The requestor's memory over a job of millions of tasks, in real
//! processes: `idlegrid devnet` (a validator, three providers and a
//! gateway in one process) and `idlegrid submit` running a job of trivial
//! tasks (`examples/pi` drawing one sample), its outputs packed into one
//! file; the requestor's peak resident memory (its own report) against the
//! same for a job of a thousand tasks. The `idlegrid` binary is the one
//! built beside this one (`cargo build [--release] -p idlegrid`).

use std::io::{BufRead, BufReader};
use std::net::{Ipv4Addr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use anyhow::{Context, bail};
use serde_json::Value;

use crate::Measurement;

const PI_WASM: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/pi/pi.wasm");
/// Tasks of the measured job.
const TASKS_FULL: u64 = 10_000_000;
const TASKS_QUICK: u64 = 20_000;
/// Tasks of the baseline job.
const BASELINE_TASKS: u64 = 1_000;
/// How long the devnet gets to say it is ready.
const DEVNET_WAIT: Duration = Duration::from_secs(180);

/// What one `idlegrid submit` reported.
struct Run {
    peak_rss_bytes: u64,
    run_ms: u64,
}

pub fn run(quick: bool) -> anyhow::Result<Vec<Measurement>> {
    let tasks = if quick { TASKS_QUICK } else { TASKS_FULL };
    let binary = std::env::current_exe()
        .context("no path to this program")?
        .with_file_name("idlegrid");
    if !binary.exists() {
        bail!(
            "{} is missing: build it beside idlegrid-bench (`cargo build -p idlegrid`, with \
             --release for a release bench)",
            binary.display()
        );
    }
    let dir = tempfile::tempdir().context("no temporary folder")?;
    let devnet = Devnet::start(&binary, dir.path())?;
    let baseline = devnet.submit(&binary, dir.path(), BASELINE_TASKS)?;
    let measured = devnet.submit(&binary, dir.path(), tasks)?;
    eprintln!(
        "data: {tasks} trivial tasks decided in {:.1} s ({:.0} tasks/s)",
        measured.run_ms as f64 / 1e3,
        tasks as f64 / (measured.run_ms.max(1) as f64 / 1e3)
    );
    let mib = |bytes: u64| bytes as f64 / f64::from(1 << 20);
    Ok(vec![Measurement::new(
        format!("data.requestor_peak_rss_{tasks}_tasks_mib"),
        mib(measured.peak_rss_bytes),
        "MiB",
        mib(baseline.peak_rss_bytes),
        "the requestor's peak over a job of 1000 such tasks",
    )])
}

/// `idlegrid devnet` in a child process, stopped when dropped.
struct Devnet {
    child: Child,
    api: String,
    gateway: String,
    key: PathBuf,
}

impl Devnet {
    fn start(binary: &Path, dir: &Path) -> anyhow::Result<Self> {
        let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .and_then(|listener| listener.local_addr())
            .context("no free port")?
            .port();
        let mut child = Command::new(binary)
            .arg("devnet")
            .arg("--dir")
            .arg(dir.join("devnet"))
            .args(["--port", &port.to_string(), "--json"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(dir.join("devnet.log"))?)
            .spawn()
            .with_context(|| format!("failed to start {} devnet", binary.display()))?;
        let stdout = child.stdout.take().context("no devnet output")?;
        let (lines, events) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { return };
                if lines.send(line).is_err() {
                    return;
                }
            }
        });
        let mut devnet = Devnet {
            child,
            api: String::new(),
            gateway: String::new(),
            key: PathBuf::new(),
        };
        loop {
            let line = events.recv_timeout(DEVNET_WAIT).with_context(|| {
                format!(
                    "the devnet did not get ready (see {})",
                    dir.join("devnet.log").display()
                )
            })?;
            let Ok(event) = serde_json::from_str::<Value>(&line) else {
                continue;
            };
            match event["event"].as_str() {
                Some("ready") => {
                    let text = |key: &str| event[key].as_str().unwrap_or_default().to_owned();
                    devnet.api = text("dashboard");
                    devnet.key = PathBuf::from(text("requestor_key"));
                    devnet.gateway = event["gateway_addresses"][0]
                        .as_str()
                        .context("the devnet names no gateway address")?
                        .to_owned();
                    return Ok(devnet);
                }
                Some("error") => bail!("the devnet failed: {}", event["error"]),
                _ => {}
            }
        }
    }

    /// Runs a job of `tasks` trivial tasks to its end.
    fn submit(&self, binary: &Path, dir: &Path, tasks: u64) -> anyhow::Result<Run> {
        let job = dir.join(format!("job-{tasks}.toml"));
        std::fs::write(
            &job,
            format!(
                "module = {PI_WASM:?}\nprice_per_million_fuel = 1\nbudget = {budget}\n\
                 deadline_blocks = 1000000\n\
                 [limits]\nfuel = 100000\noutput_bytes = 256\n\
                 [verification]\npolicy = \"replicas\"\nreplicas = 1\n\
                 [output]\npacked = true\n\
                 [tasks]\nend = {tasks}\nargs = [\"1\", \"{{index}}\"]\n",
                budget = tasks * 2,
            ),
        )?;
        let out = dir.join(format!("out-{tasks}"));
        let output = Command::new(binary)
            .arg("submit")
            .arg(&job)
            .args(["--node", &self.api, "--bootstrap", &self.gateway])
            .arg("--key")
            .arg(&self.key)
            .arg("--out")
            .arg(&out)
            .args(["--no-mdns", "--json"])
            .stdin(Stdio::null())
            .stderr(std::fs::File::create(
                dir.join(format!("submit-{tasks}.log")),
            )?)
            .output()
            .context("failed to run idlegrid submit")?;
        let stdout = String::from_utf8_lossy(&output.stdout);
        let report: Value = stdout
            .lines()
            .rev()
            .find_map(|line| serde_json::from_str(line).ok())
            .filter(|_| output.status.success())
            .with_context(|| {
                format!(
                    "idlegrid submit of {tasks} tasks failed ({}): {stdout}",
                    output.status
                )
            })?;
        if report["accepted"].as_u64() != Some(tasks) {
            bail!("the job of {tasks} tasks did not complete: {report}");
        }
        Ok(Run {
            peak_rss_bytes: report["peak_rss_bytes"]
                .as_u64()
                .context("the report has no peak_rss_bytes")?,
            run_ms: report["run_ms"].as_u64().unwrap_or(0),
        })
    }
}

impl Drop for Devnet {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
