//! GPU tasks end to end, in real processes on loopback: providers that
//! offer a GPU (Mesa's lavapipe here, whatever Vulkan adapter is present
//! elsewhere) run the Mandelbrot example's job file; the results are
//! checked against the same arithmetic in Rust, the providers are paid,
//! and a provider that lies about a GPU result is slashed by a dispute the
//! validator decides on its CPU.

mod common;

use std::path::{Path, PathBuf};

use common::network::{
    Network, STAKE, books, check_books, check_no_work, check_paid, check_stakes, dial_providers,
    finish, submit_with,
};
use serde_json::Value;

const EXAMPLE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/mandelbrot-gpu");
/// The example's image: 256 × 256 in bands of 16 rows, at most 256
/// iterations a pixel.
const SIDE: u32 = 256;
const BAND_ROWS: u32 = 16;
const ITERATIONS: u32 = 256;
const TASKS: u64 = (SIDE / BAND_ROWS) as u64;

/// Flags of a staked provider offering the machine's first Vulkan adapter
/// (at a fixed score, so no benchmark runs).
fn gpu_flags(stake: &str) -> Vec<&str> {
    vec![
        "--stake",
        stake,
        "--gpu-benchmark-fuel-per-second",
        "1000000000",
    ]
}

/// Starts a provider with `flags` and checks that it offers a GPU.
fn gpu_provider(network: &mut Network, bootstrap: Option<&str>, flags: &[&str]) -> usize {
    let index = network.provider(bootstrap, flags);
    let out = network.dir().join(format!("provider-{index}.1.out"));
    let text = std::fs::read_to_string(out).expect("start line");
    let started: Value = serde_json::from_str(text.lines().next().expect("a line")).expect("json");
    assert!(
        started["gpu"]["name"].is_string(),
        "provider {index} offers no GPU (install Mesa's lavapipe: \
         apt-get install mesa-vulkan-drivers): {started}"
    );
    index
}

/// The example's job file and kernel copied into `dir`, with a deadline
/// short enough for `--close` to return the escrow soon after the job, and
/// at most `iterations` a pixel.
fn job(dir: &Path, iterations: u32) -> PathBuf {
    let text = std::fs::read_to_string(format!("{EXAMPLE}/job.toml")).expect("the example job");
    let text = text.replace("deadline_blocks = 600", "deadline_blocks = 30");
    assert!(text.contains("deadline_blocks = 30"), "{text}");
    let args = format!("args = [\"{SIDE}\", \"{BAND_ROWS}\", \"{ITERATIONS}\"");
    assert!(text.contains(&args), "{text}");
    let text = text.replace(
        &args,
        &format!("args = [\"{SIDE}\", \"{BAND_ROWS}\", \"{iterations}\""),
    );
    let kernel = "mandelbrot-gpu.wgsl";
    std::fs::copy(format!("{EXAMPLE}/{kernel}"), dir.join(kernel)).expect("copy the kernel");
    let path = dir.join("mandelbrot-gpu.toml");
    std::fs::write(&path, text).expect("write the job");
    path
}

/// Band `band`'s escape counts, as the kernel computes them, in Rust
/// (which never fuses or reorders float operations).
fn band(band: u32, iterations: u32) -> Vec<u8> {
    let step = 3.0f32 / SIDE as f32;
    let mut counts = Vec::new();
    for y in 0..BAND_ROWS {
        for x in 0..SIDE {
            let x0 = x as f32 * step - 2.25;
            let y0 = (band * BAND_ROWS + y) as f32 * step - 1.5;
            let (mut zx, mut zy, mut i) = (0.0f32, 0.0f32, 0u32);
            while i < iterations {
                let (x2, y2) = (zx * zx, zy * zy);
                if x2 + y2 > 4.0 {
                    break;
                }
                let xt = x2 - y2 + x0;
                zy = 2.0 * zx * zy + y0;
                zx = xt;
                i += 1;
            }
            counts.extend(i.to_le_bytes());
        }
    }
    counts
}

/// Every band is accepted once and holds what the Rust reference gives.
fn check_bands(out: &Path, report: &Value, iterations: u32) -> Value {
    let results: Value = serde_json::from_str(
        &std::fs::read_to_string(out.join("results.json")).expect("results.json"),
    )
    .expect("json");
    assert_eq!(results["accepted"], TASKS, "{report}");
    let records = results["tasks"].as_array().expect("tasks");
    for (index, record) in records.iter().enumerate() {
        assert_eq!(record["status"], "accepted", "{record}");
        let file = out.join(record["file"].as_str().expect("file"));
        let bytes = std::fs::read(&file).expect("band file");
        assert!(
            bytes == band(index as u32, iterations),
            "band {index} differs"
        );
    }
    results
}

#[test]
fn a_gpu_job_runs_on_gpu_providers_only_is_verified_and_paid() {
    let mut network = Network::start();
    let stake = STAKE.to_string();
    let first = gpu_provider(&mut network, None, &gpu_flags(&stake));
    let bootstrap = network.providers[first].addresses[0].clone();
    gpu_provider(&mut network, Some(&bootstrap), &gpu_flags(&stake));
    // Staked, and without a GPU: no GPU task goes to it.
    let cpu_only = network.provider(Some(&bootstrap), &["--stake", &stake]);
    let before = books(&network);

    let out = network.dir().join("results");
    let api = network.api().to_owned();
    let flags = dial_providers(&network, 1);
    let job = job(network.dir(), ITERATIONS);
    let child = submit_with(&network, &api, &job, &out, &bootstrap, &flags);
    let report = finish(&network, child, &out);
    let results = check_bands(&out, &report, ITERATIONS);

    let cpu_only = &network.providers[cpu_only].account;
    check_no_work(&results, cpu_only, "a provider without a GPU");
    check_paid(&results, &network.providers[..2]);
    // Each band states the energy its provider figured; the job's is their sum.
    let energies: Vec<u64> = (results["tasks"].as_array().expect("tasks").iter())
        .map(|task| {
            task["energy_millijoules"]
                .as_u64()
                .expect("an energy figure")
        })
        .collect();
    assert!(energies.iter().all(|&energy| energy > 0), "{results}");
    assert_eq!(results["energy_millijoules"], energies.iter().sum::<u64>());
    check_books(&network, &results, &before);
}

#[test]
fn a_provider_lying_about_gpu_results_is_slashed_by_a_dispute_decided_on_the_cpu() {
    let mut network = Network::start();
    let stake = STAKE.to_string();
    // The liar first, the one everybody bootstraps from, so it gets work.
    let mut flags = gpu_flags(&stake);
    flags.extend(["--cheat", "wrong-output", "--cheat-after", "0"]);
    let liar_index = gpu_provider(&mut network, None, &flags);
    let liar_account = network.providers[liar_index].account.clone();
    let bootstrap = network.providers[liar_index].addresses[0].clone();
    let honest = gpu_provider(&mut network, Some(&bootstrap), &gpu_flags(&stake));
    let honest_account = network.providers[honest].account.clone();

    let out = network.dir().join("results");
    let api = network.api().to_owned();
    let dial = network.providers[honest].addresses[0].clone();
    // The requestor re-executes nothing: the validator settles every
    // disagreement, on its CPU.
    // Fewer iterations: the validator re-executes each disputed band on
    // the CPU path, which a debug build runs slowly.
    let iterations = 32;
    let job = job(network.dir(), iterations);
    let child = submit_with(
        &network,
        &api,
        &job,
        &out,
        &bootstrap,
        &["--bootstrap", &dial, "--referee-fuel", "0"],
    );
    let report = finish(&network, child, &out);
    let results = check_bands(&out, &report, iterations);
    let disputes = results["disputes"].as_array().expect("disputes");
    assert!(
        disputes
            .iter()
            .any(|dispute| dispute["settlement"] == true && dispute["status"] == "included"),
        "the ledger settled nothing: {results}"
    );
    for dispute in disputes {
        assert_eq!(
            dispute["wrong"],
            serde_json::json!([liar_account]),
            "{results}"
        );
    }
    check_stakes(&network, [liar_account.as_str()], [honest_account.as_str()]);
}
