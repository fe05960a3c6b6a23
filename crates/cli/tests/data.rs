//! Input files by content id, in real processes on loopback: tasks that
//! read a large file they all share and a file of their own get both from
//! the requestor (or from providers that hold them), each provider
//! fetching the shared file once, every byte checked against its id; a
//! provider killed in the middle of a transfer resumes it. Outputs too
//! large for a result stay on the providers that made them and reach the
//! requestor by id. A job of many tasks runs in the requestor's memory of
//! a small one. Providers announce what they hold: content named by id
//! alone comes from them.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::network::{Network, PI, check_paid, finish, pi_outputs, submit, submit_unclosed};
use common::poll_until;
use serde_json::Value;

const FILESUM: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/modules/filesum.wasm");
const EXPAND: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/modules/expand.wasm");
/// The file every task reads.
const SHARED_BYTES: usize = 256 << 20;
/// The file each task reads whole.
const OWN_BYTES: usize = 4 << 20;
const TASKS: u64 = 200;
const WINDOW: usize = 64 << 10;

/// Bytes that differ in every 64 KiB, from `seed`.
fn write_file(path: &Path, len: usize, seed: u64) {
    let mut block = vec![0u8; 1 << 20];
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    for word in block.chunks_mut(8) {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        word.copy_from_slice(&state.to_le_bytes()[..word.len()]);
    }
    let mut file = std::io::BufWriter::new(std::fs::File::create(path).expect("create"));
    for (index, group) in (0..len).step_by(WINDOW).enumerate() {
        let at = group % block.len();
        let mut piece = block[at..at + WINDOW.min(len - group)].to_vec();
        piece[..8].copy_from_slice(&seed.to_le_bytes());
        piece[8..16].copy_from_slice(&(index as u64).to_le_bytes());
        file.write_all(&piece).expect("write");
    }
    file.flush().expect("flush");
}

/// FNV-1a over little-endian 64-bit words, as `filesum` computes it.
fn fnv(mut hash: u64, bytes: &[u8]) -> u64 {
    for word in bytes.chunks_exact(8) {
        hash ^= u64::from_le_bytes(word.try_into().expect("8 bytes"));
        hash = hash.wrapping_mul(1_099_511_628_211);
    }
    hash
}

const FNV_START: u64 = 14_695_981_039_346_656_037;

/// What `filesum` prints for one task: the same arithmetic, in Rust.
fn expected(own: &[u8], shared: &[u8]) -> String {
    let own_hash = fnv(FNV_START, own);
    let span = (shared.len() - WINDOW) as u64;
    let at = (own_hash % span) as usize;
    let shared_hash = fnv(FNV_START, &shared[at..at + WINDOW]);
    format!(
        "own={own_hash:016x} shared={shared_hash:016x} at={at} size={}\n",
        shared.len()
    )
}

/// Writes the shared file (seeded `seed`), `tasks` own files of
/// `own_bytes`, and a job file of `tasks` filesum tasks reading them, one
/// provider each, with `fuel` and `deadline_blocks`: the data folder and
/// the job file.
fn filesum_job(
    network: &Network,
    seed: u64,
    tasks: u64,
    own_bytes: usize,
    fuel: u64,
    deadline_blocks: u64,
) -> (PathBuf, PathBuf) {
    let data = network.dir().join("data");
    std::fs::create_dir_all(&data).expect("data dir");
    write_file(&data.join("shared.bin"), SHARED_BYTES, seed);
    for index in 0..tasks {
        write_file(
            &data.join(format!("own-{index}.bin")),
            own_bytes,
            seed * 100 + index,
        );
    }
    let job = data.join("job.toml");
    // Five placements of every task at the most they may cost.
    let budget = (tasks * 10 * fuel.div_ceil(1_000_000) * 5).max(100_000);
    std::fs::write(
        &job,
        format!(
            "module = {FILESUM:?}\nprice_per_million_fuel = 10\nbudget = {budget}\n\
             deadline_blocks = {deadline_blocks}\n\
             [limits]\nfuel = {fuel}\noutput_bytes = 4096\n\
             [verification]\npolicy = \"replicas\"\nreplicas = 1\n\
             [files]\n\"shared.bin\" = \"shared.bin\"\n\
             [tasks]\nend = {tasks}\nfiles = {{ \"own.bin\" = \"own-{{index}}.bin\" }}\n"
        ),
    )
    .expect("job file");
    (data, job)
}

/// `results.json` under `out`, once every one of `tasks` is accepted with
/// the output filesum gives for its files under `data`.
fn check_outputs(out: &Path, data: &Path, tasks: u64, report: &Value) -> Value {
    let results: Value = serde_json::from_str(
        &std::fs::read_to_string(out.join("results.json")).expect("results.json"),
    )
    .expect("json");
    assert_eq!(results["accepted"], tasks, "{report}");
    assert_eq!(results["failed"], 0, "{report}");
    let shared = std::fs::read(data.join("shared.bin")).expect("shared");
    for record in results["tasks"].as_array().expect("tasks") {
        let index = record["index"].as_u64().expect("index");
        let own = std::fs::read(data.join(format!("own-{index}.bin"))).expect("own");
        let output =
            std::fs::read_to_string(out.join(record["file"].as_str().expect("file"))).expect("out");
        assert_eq!(output, expected(&own, &shared), "task {index}");
    }
    results
}

#[test]
fn tasks_reading_a_large_shared_file_fetch_it_once_per_provider_and_compute_right() {
    let (mut network, bootstrap) = Network::with_staked_providers(3);
    let (data, job) = filesum_job(&network, 1, TASKS, OWN_BYTES, 200_000_000, 400);
    let out = network.dir().join("results");
    let child = submit(&network, &job, &out, &bootstrap);
    let report = finish(&network, child, &out);
    let results = check_outputs(&out, &data, TASKS, &report);
    check_paid(&results, &network.providers);

    // Each provider that worked fetched the shared file once: its counters
    // hold the shared file, the module and its tasks' own files, never the
    // shared file twice.
    let mut working = 0;
    for provider in &mut network.providers {
        let summary = provider.stop();
        eprintln!("provider: {summary}");
        let tasks = summary["tasks_done"].as_u64().expect("tasks_done");
        let fetched = summary["fetched_bytes"].as_u64().expect("fetched_bytes");
        if tasks == 0 {
            continue;
        }
        working += 1;
        let shared = SHARED_BYTES as u64;
        let own = OWN_BYTES as u64 * tasks;
        assert!(
            fetched >= shared + own && fetched < 2 * shared + own,
            "{summary}: the shared file not fetched exactly once"
        );
    }
    assert!(working >= 2, "the work was spread: {results}");
}

#[test]
fn a_provider_killed_mid_transfer_resumes_the_file_where_it_stopped() {
    let (mut network, bootstrap) = Network::with_staked_providers(1);
    let own_bytes = 64 << 10;
    let (data, job) = filesum_job(&network, 2, 2, own_bytes, 20_000_000, 150);
    let shared = std::fs::read(data.join("shared.bin")).expect("shared");
    let shared_id = idlegrid_types::ContentId::of(&shared).to_string();
    let out = network.dir().join("results");
    let child = submit(&network, &job, &out, &bootstrap);

    // Once a good part of the shared file is on the provider's disk, the
    // provider is killed (no chance to tidy up) and started again.
    let partial = network
        .dir()
        .join("provider-0/content/partial")
        .join(shared_id.trim_start_matches("b3:"));
    let on_disk = || std::fs::metadata(&partial).map_or(0, |metadata| metadata.len());
    if !poll_until(Duration::from_secs(120), || on_disk() >= 64 << 20) {
        panic!(
            "the shared file never reached 64 MiB on the provider ({} bytes)\n{}",
            on_disk(),
            network.logs()
        );
    }
    network.providers[0].kill();
    let kept = on_disk();
    assert!(
        kept < SHARED_BYTES as u64,
        "killed before the file was whole"
    );
    network.launch(0);

    let report = finish(&network, child, &out);
    check_outputs(&out, &data, 2, &report);
    fetched_from_whoever_announces_it(&network, &shared_id, &shared);
    // The second run fetched what the first had not: the rest of the
    // shared file (from the last whole group kept), the module and the
    // tasks' own files.
    let summary = network.providers[0].stop();
    eprintln!("kept {kept} bytes; then {summary}");
    let fetched = summary["fetched_bytes"].as_u64().expect("fetched_bytes");
    let resumed_at = kept / WINDOW as u64 * WINDOW as u64;
    let module = std::fs::metadata(FILESUM).expect("module").len();
    assert!(
        fetched <= SHARED_BYTES as u64 - resumed_at + 2 * own_bytes as u64 + module,
        "fetched {fetched} bytes after the restart, the shared file not resumed at {resumed_at}"
    );
}

/// `idlegrid blob get` of content named by id alone, with the requestor
/// gone: the network's providers announce what their stores hold, and the
/// content comes from one that does (provider 0), checked as it streams.
fn fetched_from_whoever_announces_it(network: &Network, cid: &str, content: &[u8]) {
    let store = network.dir().join("blob-store");
    let got = network.dir().join("got.bin");
    let output = std::process::Command::new(common::BIN)
        .args([
            "blob",
            "get",
            cid,
            "--json",
            "--no-mdns",
            "--node",
            network.api(),
        ])
        .args(["--listen", "/ip4/127.0.0.1/tcp/0", "--bootstrap"])
        .arg(&network.providers[0].addresses[0])
        .arg("--dir")
        .arg(&store)
        .arg("-o")
        .arg(&got)
        .output()
        .expect("run idlegrid blob get");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report: Value = serde_json::from_str(&stdout).expect("json");
    assert_eq!(
        report["holders"],
        serde_json::json!([network.providers[0].account]),
        "{report}"
    );
    assert!(
        std::fs::read(&got).expect("written") == content,
        "other bytes"
    );
}

/// Writes a job file of `tasks` pi tasks of one sample each (next to no
/// work: what is measured is the job's bookkeeping), their outputs packed
/// into one file.
fn trivial_job(dir: &Path, tasks: u64) -> PathBuf {
    let path = dir.join(format!("trivial-{tasks}.toml"));
    std::fs::write(
        &path,
        format!(
            "module = {PI:?}\nprice_per_million_fuel = 1\nbudget = {budget}\n\
             deadline_blocks = 600\n\
             [limits]\nfuel = 100000\noutput_bytes = 256\n\
             [verification]\npolicy = \"replicas\"\nreplicas = 1\n\
             [output]\npacked = true\n\
             [tasks]\nend = {tasks}\nargs = [\"1\", \"{{index}}\"]\n",
            budget = tasks * 2,
        ),
    )
    .expect("job file");
    path
}

/// Runs `tasks` trivial tasks: the report, and `results.json` once every
/// record is checked against the packed outputs (a sample of them against
/// local execution).
fn run_trivial(network: &Network, bootstrap: &str, tasks: u64) -> (Value, Value) {
    let job = trivial_job(network.dir(), tasks);
    let out = network.dir().join(format!("results-{tasks}"));
    let child = submit_unclosed(network, &job, &out, bootstrap);
    let report = finish(network, child, &out);
    let results: Value = serde_json::from_str(
        &std::fs::read_to_string(out.join("results.json")).expect("results.json"),
    )
    .expect("json");
    assert_eq!(results["accepted"], tasks, "{report}");
    let packed = std::fs::read(out.join("outputs.bin")).expect("outputs.bin");
    assert!(!out.join("tasks").exists(), "no file per task");
    let records = results["tasks"].as_array().expect("tasks");
    assert_eq!(records.len() as u64, tasks);
    let mut end = 0;
    for (index, record) in records.iter().enumerate() {
        assert_eq!(record["index"], index as u64, "by task index");
        assert_eq!(record["file"], "outputs.bin");
        let offset = record["offset"].as_u64().expect("offset") as usize;
        let length = record["length"].as_u64().expect("length") as usize;
        let output = &packed[offset..offset + length];
        assert_eq!(
            record["output"],
            idlegrid_types::ContentId::of(output).to_string(),
            "task {index}"
        );
        end = end.max(offset + length);
    }
    assert_eq!(end, packed.len(), "nothing else in outputs.bin");
    let sample: Vec<u64> = (0..tasks).step_by((tasks / 25).max(1) as usize).collect();
    let job = results["job"].as_str().expect("job");
    for (index, expected) in sample.iter().zip(pi_outputs(job, 1, sample.clone())) {
        let record = &records[*index as usize];
        let offset = record["offset"].as_u64().expect("offset") as usize;
        assert_eq!(&packed[offset..offset + expected.len()], &expected[..]);
    }
    (report, results)
}

#[test]
fn a_job_of_many_tasks_runs_in_the_requestor_memory_of_a_small_one() {
    const SMALL: u64 = 2_000;
    const LARGE: u64 = 100_000;
    let (network, bootstrap) = Network::with_staked_providers(2);
    let (small, _) = run_trivial(&network, &bootstrap, SMALL);
    let (large, _) = run_trivial(&network, &bootstrap, LARGE);
    let peak = |report: &Value| report["peak_rss_bytes"].as_u64().expect("peak_rss_bytes");
    let (small_peak, large_peak) = (peak(&small), peak(&large));
    eprintln!(
        "peak RSS: {SMALL} tasks {} MiB, {LARGE} tasks {} MiB; {LARGE} tasks took {} ms",
        small_peak >> 20,
        large_peak >> 20,
        large["run_ms"]
    );
    // Holding each task (its input, its market record, its result record,
    // its receipt for audits) took hundreds of bytes a task: 50 times the
    // tasks would have added tens of MiB. Now nothing grows with the job
    // but a bit a task.
    assert!(
        large_peak < small_peak + (16 << 20),
        "{LARGE} tasks took {} MiB, {SMALL} tasks {} MiB",
        large_peak >> 20,
        small_peak >> 20
    );
}

/// What `expand SEED BYTES` writes: a xorshift64 stream seeded by `seed`.
fn expanded(seed: u64, bytes: usize) -> Vec<u8> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(bytes + 8);
    while out.len() < bytes {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        out.extend_from_slice(&state.to_le_bytes());
    }
    out.truncate(bytes);
    out
}

/// A job file of `tasks` expand tasks, each writing `bytes` seeded by its
/// index, on `replicas` providers each.
fn expand_job(dir: &Path, tasks: u64, bytes: usize, replicas: u64, packed: bool) -> PathBuf {
    let path = dir.join(format!("expand-{tasks}-{bytes}.toml"));
    std::fs::write(
        &path,
        format!(
            "module = {EXPAND:?}\nprice_per_million_fuel = 1\nbudget = 1000000\n\
             deadline_blocks = 400\n\
             [limits]\nfuel = 100000000000\noutput_bytes = {bytes}\n\
             [verification]\npolicy = \"replicas\"\nreplicas = {replicas}\n\
             [output]\npacked = {packed}\n\
             [tasks]\nend = {tasks}\nargs = [\"{{index}}\", \"{bytes}\"]\n",
        ),
    )
    .expect("job file");
    path
}

/// Every task's output under `out` (a file each, or `outputs.bin`) is the
/// expected stream, and its record names its id: `results.json`.
fn check_expanded(out: &Path, tasks: u64, bytes: usize, report: &Value) -> Value {
    let results: Value = serde_json::from_str(
        &std::fs::read_to_string(out.join("results.json")).expect("results.json"),
    )
    .expect("json");
    assert_eq!(results["accepted"], tasks, "{report}");
    let records = results["tasks"].as_array().expect("tasks");
    assert_eq!(records.len() as u64, tasks);
    for record in records {
        let index = record["index"].as_u64().expect("index");
        assert!(record["error"].is_null(), "task {index}: {record}");
        let file = std::fs::read(out.join(record["file"].as_str().expect("file"))).expect("file");
        let output = match record["offset"].as_u64() {
            Some(offset) => {
                let length = record["length"].as_u64().expect("length");
                file[offset as usize..(offset + length) as usize].to_vec()
            }
            None => file,
        };
        let expected = expanded(index, bytes);
        assert!(
            output == expected,
            "task {index}: the output is not what it wrote"
        );
        assert_eq!(
            record["output"],
            idlegrid_types::ContentId::of(&expected).to_string(),
            "task {index}"
        );
    }
    results
}

#[test]
fn outputs_too_large_for_a_result_stay_with_their_providers_and_are_fetched_once() {
    const TASKS: u64 = 8;
    // Three times what a result may carry inline.
    const BYTES: usize = 3 << 20;
    let (mut network, bootstrap) = Network::with_staked_providers(3);
    let job = expand_job(network.dir(), TASKS, BYTES, 2, false);
    let out = network.dir().join("results");
    let child = submit(&network, &job, &out, &bootstrap);
    let report = finish(&network, child, &out);
    let results = check_expanded(&out, TASKS, BYTES, &report);
    check_paid(&results, &network.providers);
    // Each accepted output came over once, whatever its replicas: the
    // providers compared ids and kept the bytes.
    assert_eq!(report["outputs_fetched"], TASKS, "{report}");
    assert_eq!(
        report["outputs_fetched_bytes"],
        TASKS * BYTES as u64,
        "{report}"
    );
    assert_eq!(report["outputs_made_here"], 0, "{report}");
    let mut kept = 0;
    for provider in &mut network.providers {
        let summary = provider.stop();
        eprintln!("provider: {summary}");
        let tasks = summary["tasks_done"].as_u64().expect("tasks_done");
        // Every task it ran kept its output (none fits a result).
        assert_eq!(summary["outputs_kept"], tasks, "{summary}");
        kept += tasks;
    }
    assert!(kept >= 2 * TASKS, "two replicas of each task: {kept}");
    // One network at a time.
    drop(network);

    // Packed, the fetched outputs go into the one file.
    let (network, bootstrap) = Network::with_staked_providers(1);
    let job = expand_job(network.dir(), 3, BYTES, 1, true);
    let out = network.dir().join("packed");
    let child = submit_unclosed(&network, &job, &out, &bootstrap);
    let report = finish(&network, child, &out);
    check_expanded(&out, 3, BYTES, &report);
    assert_eq!(report["outputs_fetched"], 3, "{report}");
}

#[test]
fn an_output_whose_provider_dies_while_it_is_fetched_is_made_again_by_the_requestor() {
    let (mut network, bootstrap) = Network::with_staked_providers(1);
    // Large enough to be caught on its way.
    const BYTES: usize = 256 << 20;
    let job = expand_job(network.dir(), 1, BYTES, 1, false);
    let out = network.dir().join("results");
    let child = submit_unclosed(&network, &job, &out, &bootstrap);
    // Once part of the output is at the requestor, its only holder dies.
    let partial = out.join("tasks/000000.partial");
    let on_disk = || std::fs::metadata(&partial).map_or(0, |metadata| metadata.len());
    if !poll_until(Duration::from_secs(240), || on_disk() >= 16 << 20) {
        panic!(
            "the output never reached 16 MiB at the requestor ({} bytes)\n{}",
            on_disk(),
            network.logs()
        );
    }
    network.providers[0].kill();
    let report = finish(&network, child, &out);
    check_expanded(&out, 1, BYTES, &report);
    assert_eq!(report["outputs_made_here"], 1, "{report}");
    assert_eq!(report["outputs_fetched"], 0, "{report}");
    assert!(!partial.exists(), "the partial fetch is gone");
}
