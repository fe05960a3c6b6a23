//! `idlegrid devnet` as a newcomer meets it: one command brings up a
//! network, the demo job renders its image (every tile the same as a local
//! `idlegrid exec` of it), the dashboard shows it all in a real browser
//! (headless Chromium), Ctrl-C leaves nothing unredeemed, and a second run
//! resumes the chain.

mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use common::{BIN, free_ports, get};
use serde_json::Value;

const WIDTH: u32 = 960;
const HEIGHT: u32 = 640;
const TILE: u32 = 64;
const ITERATIONS: u32 = 1500;

/// A devnet process and its `--json` event lines.
struct Devnet {
    child: Child,
    lines: mpsc::Receiver<Value>,
}

impl Devnet {
    fn start(dir: &Path, port: u16, extra: &[&str]) -> Self {
        let log = std::fs::File::create(dir.with_extension("log")).expect("a log file");
        let mut child = Command::new(BIN)
            .args(["devnet", "--json", "--port", &port.to_string(), "--dir"])
            .arg(dir)
            .args(extra)
            .env("IDLEGRID_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .expect("start the devnet");
        let stdout = child.stdout.take().expect("stdout");
        let (sender, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let event = serde_json::from_str(&line)
                    .unwrap_or_else(|error| panic!("not JSON ({error}): {line}"));
                if sender.send(event).is_err() {
                    return;
                }
            }
        });
        Self { child, lines }
    }

    /// The next event, which must be `kind`.
    fn expect(&self, kind: &str, timeout: Duration, log: &Path) -> Value {
        let event = self.lines.recv_timeout(timeout).unwrap_or_else(|_| {
            panic!("no `{kind}` event in {timeout:?}; the log:\n{}", tail(log))
        });
        assert_eq!(event["event"], kind, "{event}\nthe log:\n{}", tail(log));
        event
    }

    fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([signal, &self.child.id().to_string()])
            .status()
            .expect("kill");
        assert!(status.success());
    }
}

impl Drop for Devnet {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn tail(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

fn example(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../examples")
        .join(name)
}

/// Where files a CI run keeps (the dashboard's screenshot) go.
fn artifacts() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target"));
    let dir = target.join("artifacts");
    std::fs::create_dir_all(&dir).expect("the artifacts folder");
    dir
}

fn decode_png(path: &Path) -> (u32, u32, Vec<u8>) {
    let decoder = png::Decoder::new(BufReader::new(
        std::fs::File::open(path).unwrap_or_else(|error| panic!("{}: {error}", path.display())),
    ));
    let mut reader = decoder.read_info().expect("a PNG");
    let mut pixels = vec![0; reader.output_buffer_size()];
    let frame = reader.next_frame(&mut pixels).expect("a frame");
    assert_eq!(frame.color_type, png::ColorType::Rgb);
    pixels.truncate(frame.buffer_size());
    (frame.width, frame.height, pixels)
}

/// The image put together from `idlegrid exec` of every tile, here.
/// What a local `idlegrid exec` of demo tile (x, y) prints: a binary PPM.
fn local_tile(cache: &Path, x: u32, y: u32) -> Vec<u8> {
    let output = Command::new(BIN)
        .arg("exec")
        .arg(example("mandelbrot/mandelbrot.wasm"))
        .arg("--cache-dir")
        .arg(cache)
        .arg("--")
        .args([WIDTH, HEIGHT, x, y, TILE, ITERATIONS].map(|n| n.to_string()))
        .output()
        .expect("run idlegrid exec");
    assert!(output.status.success(), "exec of tile {x},{y} failed");
    output.stdout
}

fn image_from_local_execs() -> Vec<u8> {
    let cache = tempfile::tempdir().expect("a cache folder");
    let width = WIDTH as usize;
    let mut pixels = vec![0u8; width * HEIGHT as usize * 3];
    for y in 0..HEIGHT / TILE {
        for x in 0..WIDTH / TILE {
            let output = local_tile(cache.path(), x, y);
            let header = format!("P6\n{TILE} {TILE}\n255\n");
            assert!(output.starts_with(header.as_bytes()));
            let rgb = &output[header.len()..];
            let tile = TILE as usize;
            for row in 0..tile {
                let to = ((y as usize * tile + row) * width + x as usize * tile) * 3;
                pixels[to..to + tile * 3]
                    .copy_from_slice(&rgb[row * tile * 3..(row + 1) * tile * 3]);
            }
        }
    }
    pixels
}

/// `idlegrid blob`: the module uploaded over HTTP comes from the gateway
/// over the overlay (checked against its id as it streams) into a local
/// store; `ls` lists it, `put` adds a file, `gc` empties the store, and
/// content nobody holds is an error that says so.
fn blobs_uploaded_over_http_come_over_the_overlay_checked(
    dashboard: &str,
    gateway: &str,
    root: &Path,
) {
    let store = root.join("blob-store");
    let blob = |args: &[&str]| {
        Command::new(BIN)
            .arg("blob")
            .args(args)
            .arg("--dir")
            .arg(&store)
            .output()
            .expect("run idlegrid blob")
    };
    let module = std::fs::read(example("mandelbrot/mandelbrot.wasm")).expect("the module");
    let cid = idlegrid_types::ContentId::of(&module).to_string();
    let fetched = root.join("fetched.wasm");
    let fetched_text = fetched.to_str().expect("a path");
    let overlay = [
        "--from",
        gateway,
        "--node",
        dashboard,
        "--no-mdns",
        "--listen",
        "/ip4/127.0.0.1/tcp/0",
    ];
    let output = blob(
        &[
            &["get", cid.as_str(), "-o", fetched_text, "--json"][..],
            &overlay[..],
        ]
        .concat(),
    );
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        std::fs::read(&fetched).expect("written") == module,
        "other bytes than the module"
    );

    let other = root.join("other.bin");
    std::fs::write(&other, b"some input").expect("write");
    let output = blob(&["put", other.to_str().expect("a path")]);
    assert!(output.status.success());
    assert_eq!(
        String::from_utf8_lossy(&output.stdout).trim(),
        idlegrid_types::ContentId::of(b"some input").to_string()
    );
    let listed = json_of(&blob(&["ls", "--json"]).stdout);
    let blobs = listed["blobs"].as_array().expect("blobs");
    assert_eq!(blobs.len(), 2, "{listed}");
    assert!(
        blobs
            .iter()
            .any(|entry| entry["cid"] == cid.as_str() && entry["bytes"] == module.len())
    );

    let missing = idlegrid_types::ContentId::of(b"nobody holds this").to_string();
    let output = blob(&[&["get", missing.as_str(), "--json"][..], &overlay[..]].concat());
    assert_eq!(output.status.code(), Some(3));
    let error = json_of(&output.stdout);
    assert!(
        error["error"]["message"]
            .as_str()
            .is_some_and(|message| message.contains("holds no")),
        "{error}"
    );

    let collected = json_of(&blob(&["gc", "--json"]).stdout);
    assert_eq!(collected["deleted"], 2, "{collected}");
    let listed = json_of(&blob(&["ls", "--json"]).stdout);
    assert_eq!(
        listed["blobs"].as_array().map(Vec::len),
        Some(0),
        "{listed}"
    );
}

/// A request with a body, any status an answer; the body as bytes.
fn send(method: &str, url: &str, content_type: &str, body: &[u8]) -> (u16, Vec<u8>) {
    let agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(30)))
        .build()
        .new_agent();
    let response = match method {
        "put" => agent
            .put(url)
            .header("content-type", content_type)
            .send(body),
        "post" => agent
            .post(url)
            .header("content-type", content_type)
            .send(body),
        "get" => agent.get(url).call(),
        other => panic!("no method {other}"),
    }
    .unwrap_or_else(|error| panic!("{method} {url}: {error}"));
    let status = response.status().as_u16();
    let bytes = response
        .into_body()
        .with_config()
        .limit(64 << 20)
        .read_to_vec()
        .expect("the body");
    (status, bytes)
}

fn json_of(bytes: &[u8]) -> Value {
    serde_json::from_slice(bytes)
        .unwrap_or_else(|error| panic!("not JSON ({error}): {}", String::from_utf8_lossy(bytes)))
}

/// A job over HTTP, as a client without the CLI runs one: upload the
/// module, submit the job, sign its `OpenJob` with the requestor's key
/// (the gateway holds none of its funds), follow it, and fetch every
/// output by content id. Each is what a local exec prints; the ledger
/// shows the job as the requestor's, run by the gateway's agent. Gives
/// (the job's id, what it paid).
fn an_http_job_runs_on_the_clients_signature(
    dashboard: &str,
    requestor_key: &Path,
) -> (String, u64) {
    let key = idlegrid_node::read_key(requestor_key).expect("the requestor's key");
    let module = std::fs::read(example("mandelbrot/mandelbrot.wasm")).expect("the module");
    let (status, body) = send(
        "put",
        &format!("{dashboard}/v1/blobs"),
        "application/octet-stream",
        &module,
    );
    assert_eq!(status, 201, "{}", String::from_utf8_lossy(&body));
    let cid = json_of(&body)["cid"].as_str().expect("a cid").to_owned();
    assert_eq!(cid, idlegrid_types::ContentId::of(&module).to_string());

    let tiles = [(3u32, 4u32), (7, 5), (14, 9)];
    let tasks: Vec<Value> = tiles
        .iter()
        .map(|(x, y)| {
            let args = [WIDTH, HEIGHT, *x, *y, TILE, ITERATIONS].map(|n| n.to_string());
            serde_json::json!({ "args": args })
        })
        .collect();
    let request = serde_json::json!({
        "requestor": key.account_id().to_string(),
        "job": {
            "module": cid,
            "price_per_million_fuel": 1,
            "budget": 100_000,
            "limits": { "fuel": 2_000_000_000u64, "output_bytes": TILE * TILE * 3 + 64 },
            "verification": { "policy": "replicas", "replicas": 2 },
            "task": tasks,
        },
    });
    let (status, body) = send(
        "post",
        &format!("{dashboard}/v1/jobs"),
        "application/json",
        request.to_string().as_bytes(),
    );
    assert_eq!(status, 201, "{}", String::from_utf8_lossy(&body));
    let created = json_of(&body);
    let job = created["job"].as_str().expect("a job id").to_owned();
    assert_eq!(created["terms"]["escrow"], 100_000, "{created}");
    assert_eq!(created["terms"]["module"], cid.as_str(), "{created}");
    let agent = created["agent"].as_str().expect("an agent").to_owned();
    assert_ne!(agent, key.account_id().to_string());
    let transaction = hex::decode(created["transaction"].as_str().expect("hex")).expect("hex");

    // A signature by anyone else does nothing.
    let stranger = idlegrid_types::Keypair::from_seed([9; 32]);
    let signature_url = format!("{dashboard}/v1/jobs/{job}/signature");
    let forged = stranger.sign_raw("idlegrid transaction v1", &transaction);
    let (status, body) = send(
        "post",
        &signature_url,
        "application/json",
        serde_json::json!({ "signature": hex::encode(forged.as_bytes()) })
            .to_string()
            .as_bytes(),
    );
    assert_eq!(
        (status, json_of(&body)["error"]["code"].clone()),
        (400, Value::from("bad_signature"))
    );
    let signature = key.sign_raw("idlegrid transaction v1", &transaction);
    let body = serde_json::json!({ "signature": hex::encode(signature.as_bytes()) }).to_string();
    let (status, answer) = send("post", &signature_url, "application/json", body.as_bytes());
    assert_eq!(status, 202, "{}", String::from_utf8_lossy(&answer));
    let (status, _) = send("post", &signature_url, "application/json", body.as_bytes());
    assert_eq!(status, 409, "a second signature");

    let mut progress = Value::Null;
    common::wait_until(Duration::from_secs(180), "the HTTP job to finish", || {
        progress = get(&format!("{dashboard}/v1/jobs/{job}/progress"))
            .expect("progress")
            .1;
        assert_ne!(progress["status"], "failed", "{progress}");
        progress["status"] == "finished"
    });
    assert_eq!(progress["accepted"], 3, "{progress}");
    let (status, results) = get(&format!("{dashboard}/v1/jobs/{job}/results")).expect("results");
    assert_eq!(status, 200, "{results}");
    assert_eq!(results["complete"], true, "{results}");
    let results = results["results"].as_array().expect("results").clone();
    assert_eq!(results.len(), 3);
    let cache = tempfile::tempdir().expect("a cache folder");
    for result in &results {
        assert_eq!(result["status"], "accepted", "{result}");
        assert_eq!(result["verified"], "quorum", "{result}");
        let index = result["index"].as_u64().expect("an index") as usize;
        let output = result["output"].as_str().expect("an output");
        let (status, bytes) = send("get", &format!("{dashboard}/v1/blobs/{output}"), "", &[]);
        assert_eq!(status, 200);
        assert_eq!(idlegrid_types::ContentId::of(&bytes).to_string(), output);
        let (x, y) = tiles[index];
        assert!(
            bytes == local_tile(cache.path(), x, y),
            "tile {x},{y} differs from a local exec"
        );
    }
    let (_, ledger) = get(&format!("{dashboard}/v1/jobs/{job}")).expect("the ledger's job");
    assert_eq!(
        ledger["requestor"],
        key.account_id().to_string().as_str(),
        "{ledger}"
    );
    assert_eq!(ledger["agent"], agent.as_str(), "{ledger}");
    (job, progress["paid"].as_u64().expect("paid"))
}

/// Headless Chromium's DOM of the dashboard, once its scripts have run.
fn dashboard_dom(url: &str, screenshot: Option<&Path>) -> String {
    let mut command = Command::new("chromium");
    command.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--no-first-run",
        "--disable-background-networking",
        "--window-size=1280,900",
        "--virtual-time-budget=8000",
    ]);
    if let Some(path) = screenshot {
        let mut shot = Command::new("chromium");
        shot.args(command.get_args());
        shot.arg(format!("--screenshot={}", path.display()))
            .arg(url);
        let output = shot
            .output()
            .expect("run chromium (apt-get install chromium)");
        assert!(
            output.status.success() && path.exists(),
            "chromium took no screenshot: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let output = command
        .arg("--dump-dom")
        .arg(url)
        .output()
        .expect("run chromium (apt-get install chromium)");
    assert!(
        output.status.success(),
        "chromium failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).expect("utf-8")
}

/// The value of `attribute` on the first element whose opening tag
/// contains `marker`.
fn attribute(dom: &str, marker: &str, attribute: &str) -> Option<String> {
    let at = dom.find(marker)?;
    let start = dom[..at].rfind('<')?;
    let end = at + dom[at..].find('>')?;
    let tag = &dom[start..end];
    let key = format!("{attribute}=\"");
    let from = tag.find(&key)? + key.len();
    let to = from + tag[from..].find('"')?;
    Some(tag[from..to].to_owned())
}

/// The height the dashboard's header shows.
fn shown_height(dom: &str) -> u64 {
    let text = dom
        .split("id=\"height\"")
        .nth(1)
        .and_then(|rest| rest.split('>').nth(1))
        .and_then(|text| text.split('<').next())
        .unwrap_or_default()
        .replace(',', "");
    text.trim()
        .parse()
        .unwrap_or_else(|_| panic!("no height on the dashboard: {text:?}"))
}

/// A request's status and content type (the body is not read: an event
/// stream never ends).
fn status_of(method: &str, url: &str) -> (u16, String) {
    let agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(30)))
        .build()
        .new_agent();
    let response = match method {
        "get" => agent.get(url).call(),
        "post" => agent
            .post(url)
            .header("content-type", "application/json")
            .send(&b"{\"transaction\":\"00\"}"[..]),
        "put" => agent
            .put(url)
            .header("content-type", "application/octet-stream")
            .send(&b"a blob"[..]),
        other => panic!("the document lists method {other}"),
    }
    .unwrap_or_else(|error| panic!("{method} {url}: {error}"));
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    (response.status().as_u16(), content_type)
}

/// The gateway's OpenAPI document is valid 3.1, and every path it lists
/// answers (path parameters filled with things that exist) with a status
/// the document gives for it.
fn every_documented_path_answers(dashboard: &str, account: &str, job: &str) {
    let (status, document) = get(&format!("{dashboard}/v1/openapi.json")).expect("the document");
    assert_eq!(status, 200, "{document}");
    let spec = oas3::from_json(document.to_string()).expect("an OpenAPI 3.1 document");
    let version = spec.validate_version().expect("a supported version");
    assert_eq!((version.major, version.minor), (3, 1));

    // A transaction that exists: the newest in a recent block.
    let (_, status) = get(&format!("{dashboard}/v1/status")).expect("the status");
    let tip = status["height"].as_u64().expect("a height");
    let hash = (1..=tip)
        .rev()
        .take(5_000)
        .find_map(|height| {
            let (_, block) = get(&format!("{dashboard}/v1/blocks/{height}")).ok()?;
            block["transactions"][0]["hash"].as_str().map(str::to_owned)
        })
        .expect("a transaction in a recent block");

    let paths = document["paths"].as_object().expect("paths");
    for required in [
        "/v1/network",
        "/v1/local/jobs",
        "/v1/events",
        "/v1/status",
        "/v1/jobs",
        "/v1/jobs/{job}/results",
        "/v1/blobs",
    ] {
        assert!(paths.contains_key(required), "{required} is not documented");
    }
    for (path, item) in paths {
        let url = path
            .replace("{account}", account)
            .replace("{job}", job)
            .replace("{hash}", &hash)
            .replace("{height}", "1")
            .replace("{index}", "0")
            .replace(
                "{cid}",
                &idlegrid_types::ContentId::of(b"a blob").to_string(),
            );
        for (method, operation) in item.as_object().expect("a path item") {
            let (status, content_type) = status_of(method, &format!("{dashboard}{url}"));
            let documented = operation["responses"]
                .as_object()
                .expect("responses")
                .contains_key(&status.to_string());
            assert!(
                documented && status != 404 && status < 500,
                "{method} {url} answered {status} ({content_type}), not a documented success"
            );
        }
    }
}

/// The value of the sample `series` (name and labels, as rendered).
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

/// The gateway's Prometheus metrics show the demo: tasks per provider,
/// the round-trip histogram, peers and the height.
fn the_metrics_count_the_demo(dashboard: &str, slow_tasks: u64) {
    let text = ureq::get(&format!("{dashboard}/metrics"))
        .call()
        .expect("the metrics")
        .into_body()
        .read_to_string()
        .expect("text");
    let value =
        |series: &str| sample(&text, series).unwrap_or_else(|| panic!("no {series} in:\n{text}"));
    assert_eq!(
        value("idlegrid_provider_tasks{provider=\"provider-2 (slow, 4x)\"}"),
        slow_tasks as f64
    );
    assert!(value("idlegrid_provider_fuel{provider=\"provider-0\"}") > 0.0);
    assert_eq!(
        value("idlegrid_job_tasks_accepted{job=\"mandelbrot (demo)\"}"),
        150.0
    );
    assert_eq!(value("idlegrid_task_round_trip_seconds_count"), 150.0);
    assert!(value("idlegrid_overlay_peers") >= 3.0, "{text}");
    assert!(value("idlegrid_ledger_height") > 0.0);
}

#[test]
fn the_devnet_renders_the_demo_shows_it_on_the_dashboard_stops_cleanly_and_resumes() {
    let root = tempfile::tempdir().expect("a folder");
    let dir = root.path().join("state");
    let log = dir.with_extension("log");
    let port = free_ports(1);
    let dashboard = format!("http://127.0.0.1:{port}");

    let devnet = Devnet::start(&dir, port, &["--demo"]);
    let ready = devnet.expect("ready", Duration::from_secs(180), &log);
    assert_eq!(ready["resumed"], false);
    assert_eq!(ready["dashboard"], dashboard.as_str());
    let providers = ready["providers"].as_array().expect("providers").clone();
    assert_eq!(providers.len(), 3, "{ready}");
    let slow = providers[2]["account"]
        .as_str()
        .expect("an account")
        .to_owned();
    assert!(
        providers[2]["label"]
            .as_str()
            .expect("a label")
            .contains("slow")
    );
    let fastest = providers[..2]
        .iter()
        .map(|provider| {
            provider["benchmark_fuel_per_second"]
                .as_u64()
                .expect("a score")
        })
        .min()
        .expect("two");
    assert!(
        providers[2]["benchmark_fuel_per_second"]
            .as_u64()
            .expect("a score")
            < fastest,
        "the slow provider does not offer a lower score: {ready}"
    );

    // While the demo runs (once its escrow is open): the dashboard in a
    // real browser shows the providers, the job and blocks.
    common::wait_until(Duration::from_secs(120), "the demo job to open", || {
        get(&format!("{dashboard}/v1/local/jobs"))
            .is_ok_and(|(_, body)| body["jobs"][0]["job"].is_string())
    });
    let dom = dashboard_dom(&dashboard, None);
    let first_height = shown_height(&dom);
    for provider in &providers {
        let account = provider["account"].as_str().expect("an account");
        assert!(
            dom.contains(&format!("data-account=\"{account}\"")),
            "provider {account} is not on the dashboard"
        );
    }
    let total = attribute(&dom, "data-total=", "data-total");
    assert_eq!(
        total.as_deref(),
        Some("150"),
        "no demo job on the dashboard"
    );
    assert!(
        attribute(&dom, "class=\"block\"", "data-height").is_some(),
        "no blocks on the dashboard"
    );
    // The validator, with its stake and commission from /v1/validators.
    assert_eq!(
        attribute(&dom, "class=\"in-set\"", "data-commission").as_deref(),
        Some("0"),
        "no validator in the set on the dashboard"
    );

    let done = devnet.expect("demo_done", Duration::from_secs(600), &log);
    assert_eq!(done["accepted"], 150, "{done}");
    let image = PathBuf::from(done["image"].as_str().expect("the image's path"));
    assert_eq!(image, dir.join("demo/mandelbrot.png"));

    // The image is the one every tile's local exec makes.
    let (width, height, pixels) = decode_png(&image);
    assert_eq!((width, height), (WIDTH, HEIGHT));
    assert!(
        pixels == image_from_local_execs(),
        "the devnet's image differs from local execs of its tiles"
    );

    // Placement is visible: the slow provider ran fewer tiles than the fast
    // ones did on average. (Not fewer than each: tiles take about a
    // millisecond, so on a loaded machine round trips weigh as much as
    // speed, and one fast provider can trail it.)
    let (status, network) = get(&format!("{dashboard}/v1/network")).expect("the network view");
    assert_eq!(status, 200, "{network}");
    let listed = network["providers"].as_array().expect("providers");
    let tasks_of = |account: &str| {
        listed
            .iter()
            .find(|provider| provider["account"] == account)
            .and_then(|provider| provider["tasks_done"].as_u64())
            .unwrap_or_else(|| panic!("{account} is not in {network}"))
    };
    let slow_tasks = tasks_of(&slow);
    let fast_tasks: u64 = providers[..2]
        .iter()
        .map(|provider| tasks_of(provider["account"].as_str().expect("an account")))
        .sum();
    assert!(
        slow_tasks * 2 < fast_tasks,
        "slow ran {slow_tasks}, the fast ones {fast_tasks} together: {network}"
    );

    // The first provider offers the machine's GPU (lavapipe here), and the
    // dashboard's network view says which.
    let gpu = providers[0]["gpu"].as_str().unwrap_or_else(|| {
        panic!("provider-0 offers no GPU (is mesa-vulkan-drivers installed?): {ready}")
    });
    let first = providers[0]["account"].as_str().expect("an account");
    let listed_gpu = listed
        .iter()
        .find(|provider| provider["account"] == first)
        .map(|provider| provider["gpu"]["name"].clone());
    assert_eq!(listed_gpu, Some(Value::from(gpu)), "{network}");
    assert!(providers[1]["gpu"].is_null(), "{ready}");

    // Once it is done: every tile drawn, the job shown done; a screenshot
    // for the CI run's artifacts.
    let screenshot = artifacts().join("dashboard.png");
    let _ = std::fs::remove_file(&screenshot);
    let dom = dashboard_dom(&dashboard, Some(&screenshot));
    assert_eq!(
        attribute(&dom, "data-total=", "data-state").as_deref(),
        Some("done")
    );
    assert_eq!(
        attribute(&dom, "data-total=", "data-accepted").as_deref(),
        Some("150")
    );
    assert_eq!(
        attribute(&dom, "data-tiles-drawn=", "data-tiles-drawn").as_deref(),
        Some("150"),
        "not every tile was drawn"
    );
    let shown = shown_height(&dom);
    assert!(
        shown > first_height,
        "no new blocks on the dashboard: height {first_height}, then {shown}"
    );

    the_metrics_count_the_demo(&dashboard, slow_tasks);
    let requestor_key = PathBuf::from(ready["requestor_key"].as_str().expect("a key file"));
    let (http_job, http_paid) =
        an_http_job_runs_on_the_clients_signature(&dashboard, &requestor_key);
    let gateway_address = ready["gateway_addresses"][0]
        .as_str()
        .expect("the gateway's address")
        .to_owned();
    blobs_uploaded_over_http_come_over_the_overlay_checked(
        &dashboard,
        &gateway_address,
        root.path(),
    );
    every_documented_path_answers(&dashboard, &slow, &http_job);

    // Ctrl-C: the providers redeem what they are owed before the devnet ends.
    devnet.signal("-INT");
    let stopped = devnet.expect("stopped", Duration::from_secs(120), &log);
    let earned: u64 = stopped["providers"]
        .as_array()
        .expect("providers")
        .iter()
        .map(|provider| {
            assert_eq!(provider["unredeemed"], 0, "{stopped}");
            provider["earned"].as_u64().expect("earned")
        })
        .sum();
    assert_eq!(
        earned,
        done["paid"].as_u64().expect("paid") + http_paid,
        "{stopped} vs {done} and {http_paid} for the HTTP job"
    );
    drop(devnet);

    // A second run resumes the chain, and has nothing left to redeem.
    let again = Devnet::start(&dir, port, &[]);
    let ready = again.expect("ready", Duration::from_secs(180), &log);
    assert_eq!(ready["resumed"], true, "{ready}");
    assert!(
        ready["height"].as_u64().expect("a height") >= shown,
        "{ready}"
    );
    let (status, body) = get(&format!("{dashboard}/v1/jobs")).expect("the jobs");
    assert_eq!(status, 200, "{body}");
    again.signal("-TERM");
    let stopped = again.expect("stopped", Duration::from_secs(120), &log);
    for provider in stopped["providers"].as_array().expect("providers") {
        assert_eq!(provider["unredeemed"], 0, "{stopped}");
    }
}

#[test]
fn reset_refuses_a_folder_that_is_not_a_devnet() {
    let root = tempfile::tempdir().expect("a folder");
    std::fs::write(root.path().join("precious.txt"), "keep me").expect("write");
    let output = Command::new(BIN)
        .args(["devnet", "--reset", "--json", "--port", "1", "--dir"])
        .arg(root.path())
        .output()
        .expect("run the devnet");
    assert_eq!(output.status.code(), Some(3));
    let line: Value = serde_json::from_slice(&output.stdout).expect("one JSON line on stdout");
    assert!(
        line["error"]
            .as_str()
            .expect("an error")
            .contains("not a devnet"),
        "{line}"
    );
    assert!(root.path().join("precious.txt").exists());
}
