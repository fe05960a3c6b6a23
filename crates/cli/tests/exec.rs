//! `idlegrid exec` end to end, as separate processes: output, `--json`, exit
//! statuses, and the same output cid and fuel from two processes.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn example(name: &str) -> PathBuf {
    repo().join(format!("examples/{name}/{name}.wasm"))
}

fn test_module(name: &str) -> PathBuf {
    repo().join(format!("crates/sandbox/tests/modules/{name}.wasm"))
}

fn idlegrid(args: &[&str], cache: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_idlegrid"))
        .args(args)
        .env("XDG_CACHE_HOME", cache)
        .env_remove("IDLEGRID_LOG")
        .output()
        .expect("idlegrid runs")
}

fn json(output: &Output) -> Value {
    let stdout = String::from_utf8_lossy(&output.stdout);
    serde_json::from_str(stdout.trim()).unwrap_or_else(|error| {
        panic!(
            "not JSON ({error}): {stdout}\nstderr: {}",
            String::from_utf8_lossy(&output.stderr)
        )
    })
}

fn path(path: &Path) -> &str {
    path.to_str().expect("utf-8 path")
}

#[test]
fn prints_the_task_stdout_and_a_summary() {
    let cache = tempfile::tempdir().expect("tempdir");
    let output = idlegrid(
        &["exec", path(&example("pi")), "--", "100000", "7"],
        cache.path(),
    );
    assert!(output.status.success(), "{output:?}");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.starts_with("samples=100000 inside="), "{stdout}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("idlegrid: exit 0 · fuel "), "{stderr}");
    assert!(stderr.contains("output b3:"), "{stderr}");
}

#[test]
fn each_example_gives_the_same_cid_and_fuel_in_two_processes() {
    let input = tempfile::NamedTempFile::new().expect("tempfile");
    std::fs::write(input.path(), "one two two\nthree three three\n").expect("write");
    let cases: [(&str, Vec<&str>); 5] = [
        ("pi", vec!["--", "200000"]),
        (
            "mandelbrot",
            vec!["--", "128", "128", "1", "0", "64", "200"],
        ),
        ("hashgrind", vec!["--", "5000"]),
        ("nbody", vec!["--", "5000"]),
        ("wordcount", vec!["--input", path(input.path())]),
    ];
    // The second process loads the module from the cache the first one wrote;
    // the third compiles it again without the cache.
    let cache = tempfile::tempdir().expect("tempdir");
    for (name, extra) in cases {
        let module = example(name);
        let mut args = vec!["exec", "--json", "--seed", "11", path(&module)];
        args.extend(extra);
        let reports: Vec<Value> = [
            idlegrid(&args, cache.path()),
            idlegrid(&args, cache.path()),
            idlegrid(
                &[&["exec", "--no-cache"], &args[1..]].concat(),
                cache.path(),
            ),
        ]
        .iter()
        .map(json)
        .collect();
        for report in &reports {
            assert_eq!(report["status"], "ok", "{name}: {report}");
            assert_eq!(report["exit_code"], 0, "{name}: {report}");
            assert_eq!(report["error"], Value::Null, "{name}: {report}");
            assert!(report["fuel_used"].as_u64().expect("fuel") > 0);
            assert!(report["duration_ms"].as_f64().is_some());
            assert!(report["output_bytes"].as_u64().expect("bytes") > 0);
        }
        for report in &reports[1..] {
            assert_eq!(report["output_cid"], reports[0]["output_cid"], "{name}");
            assert_eq!(report["fuel_used"], reports[0]["fuel_used"], "{name}");
        }
    }
}

#[test]
fn json_reports_failures_with_their_kind_and_exit_status() {
    let cache = tempfile::tempdir().expect("tempdir");
    let output = idlegrid(
        &[
            "exec",
            "--json",
            "--fuel",
            "1000",
            path(&example("nbody")),
            "--",
            "100000",
        ],
        cache.path(),
    );
    assert_eq!(output.status.code(), Some(3));
    let report = json(&output);
    assert_eq!(report["status"], "error");
    assert_eq!(report["error"]["kind"], "out_of_fuel");
    assert_eq!(report["fuel_used"], 1000);
    assert_eq!(report["output_cid"], Value::Null);
}

#[test]
fn a_task_exit_code_is_reported_and_mapped() {
    let cache = tempfile::tempdir().expect("tempdir");
    let output = idlegrid(
        &["exec", "--json", path(&test_module("exit")), "--", "9"],
        cache.path(),
    );
    assert_eq!(output.status.code(), Some(1));
    let report = json(&output);
    assert_eq!(report["status"], "ok");
    assert_eq!(report["exit_code"], 9);
    assert_eq!(report["stderr"], "bye\n");
}

#[test]
fn an_invalid_module_says_what_is_wrong() {
    let cache = tempfile::tempdir().expect("tempdir");
    let bogus = tempfile::NamedTempFile::new().expect("tempfile");
    std::fs::write(bogus.path(), b"MZ this is not wasm").expect("write");
    let output = idlegrid(&["exec", path(bogus.path())], cache.path());
    assert_eq!(output.status.code(), Some(4));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("invalid_module"), "{stderr}");
}

#[test]
fn a_missing_module_is_a_host_error_with_the_path() {
    let cache = tempfile::tempdir().expect("tempdir");
    let output = idlegrid(&["exec", "/nonexistent/x.wasm"], cache.path());
    assert_eq!(output.status.code(), Some(5));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("failed to read module /nonexistent/x.wasm"),
        "{stderr}"
    );
}

#[test]
fn output_dir_and_input_dir_reach_the_task() {
    let cache = tempfile::tempdir().expect("tempdir");
    let work = tempfile::tempdir().expect("tempdir");
    let out = work.path().join("out");
    let output = idlegrid(
        &[
            "exec",
            "--json",
            "--output-dir",
            path(&out),
            path(&test_module("writer")),
            "--",
            "/output",
        ],
        cache.path(),
    );
    assert!(output.status.success(), "{output:?}");
    assert_eq!(
        std::fs::read(out.join("sub/b.bin")).expect("written"),
        (0..=255u8).collect::<Vec<u8>>()
    );
    let report = json(&output);
    assert_eq!(report["output_bytes"], 6 + 256 + "wrote 2 files\n".len());

    let input = work.path().join("in");
    std::fs::create_dir(&input).expect("mkdir");
    std::fs::write(input.join("data.txt"), b"abc").expect("write");
    let output = idlegrid(
        &[
            "exec",
            "--input-dir",
            path(&input),
            path(&test_module("escape")),
            "--",
            "/input/data.txt",
        ],
        cache.path(),
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("read_arg=ok 3"), "{stdout}");
    assert!(!stdout.contains("OPENED"), "{stdout}");
}

#[test]
fn help_shows_an_example() {
    let cache = tempfile::tempdir().expect("tempdir");
    let output = idlegrid(&["exec", "--help"], cache.path());
    assert!(output.status.success());
    assert!(String::from_utf8_lossy(&output.stdout).contains("idlegrid exec examples/pi/pi.wasm"));
}

#[test]
fn a_gpu_task_of_a_job_file_gives_the_same_bytes_and_fuel_on_the_gpu_and_the_cpu_path() {
    let cache = tempfile::tempdir().expect("tempdir");
    let job = repo().join("examples/mandelbrot-gpu/job.toml");
    let job = path(&job);
    let on_gpu = idlegrid(&["exec", job, "--index", "0"], cache.path());
    assert!(on_gpu.status.success(), "{on_gpu:?}");
    let on_cpu = idlegrid(&["exec", job, "--index", "0", "--cpu"], cache.path());
    assert!(on_cpu.status.success(), "{on_cpu:?}");
    // The band's counts: 256 × 16 of them.
    assert_eq!(on_gpu.stdout.len(), 256 * 16 * 4);
    assert!(on_gpu.stdout == on_cpu.stdout, "the CPU path differs");
    let gpu = json(&idlegrid(
        &["exec", job, "--index", "0", "--json"],
        cache.path(),
    ));
    let cpu = json(&idlegrid(
        &["exec", job, "--index", "0", "--cpu", "--json"],
        cache.path(),
    ));
    assert_eq!(gpu["status"], "ok", "{gpu}");
    assert_eq!(gpu["output_cid"], cpu["output_cid"]);
    assert_eq!(gpu["fuel_used"], cpu["fuel_used"]);
    assert_eq!(cpu["executor"], "the CPU path");
    // A task the job does not have is the host's error, not the task's.
    let missing = idlegrid(&["exec", job, "--index", "16"], cache.path());
    assert_eq!(missing.status.code(), Some(5), "{missing:?}");
    assert!(String::from_utf8_lossy(&missing.stderr).contains("no task 16"));
}

#[test]
fn the_mlp_job_s_tasks_give_the_bytes_of_its_wasi_build_on_the_gpu_and_the_cpu_path() {
    let cache = tempfile::tempdir().expect("tempdir");
    let folder = repo().join("examples/mlp-gpu");
    let job = folder.join("job.toml");
    let job = path(&job);
    let on_gpu = idlegrid(&["exec", job, "--index", "2"], cache.path());
    assert!(on_gpu.status.success(), "{on_gpu:?}");
    let on_cpu = idlegrid(&["exec", job, "--index", "2", "--cpu"], cache.path());
    assert!(on_cpu.status.success(), "{on_cpu:?}");
    assert!(on_gpu.stdout == on_cpu.stdout, "the CPU path differs");
    // The WASI build reads params, the model and the batch from stdin.
    let mut stdin: Vec<u8> = [256u32, 1_594_323_000, 39]
        .iter()
        .flat_map(|word| word.to_le_bytes())
        .collect();
    stdin.extend(std::fs::read(folder.join("model.bin")).expect("model"));
    stdin.extend(std::fs::read(folder.join("inputs-2.bin")).expect("inputs"));
    let input = cache.path().join("mlp-input.bin");
    std::fs::write(&input, stdin).expect("write the input");
    let wasi = idlegrid(
        &[
            "exec",
            path(&folder.join("mlp-gpu.wasm")),
            "--input",
            path(&input),
        ],
        cache.path(),
    );
    assert!(wasi.status.success(), "{wasi:?}");
    assert!(on_gpu.stdout == wasi.stdout, "the WASI build differs");
    // 256 inputs × (10 logits + the class).
    assert_eq!(on_gpu.stdout.len(), 256 * 11 * 4);
}

#[test]
fn a_job_task_s_input_files_are_shown_at_input_as_on_a_provider() {
    let folder = tempfile::tempdir().expect("tempdir");
    let shared: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
    let own: Vec<u8> = (0..4096u32).map(|i| (i * 7 % 256) as u8).collect();
    std::fs::write(folder.path().join("shared.bin"), &shared).expect("write");
    std::fs::write(folder.path().join("own.bin"), &own).expect("write");
    let module = repo().join("crates/cli/tests/modules/filesum.wasm");
    let job = folder.path().join("job.toml");
    std::fs::write(
        &job,
        format!(
            "module = {:?}\nprice_per_million_fuel = 1\nbudget = 1000\n\
             [files]\n\"shared.bin\" = \"shared.bin\"\n\
             [[task]]\nfiles = {{ \"own.bin\" = \"own.bin\" }}\n",
            path(&module)
        ),
    )
    .expect("job file");
    let output = idlegrid(&["exec", path(&job), "--index", "0"], folder.path());
    assert!(output.status.success(), "{output:?}");
    // What filesum prints: FNV-1a over 64-bit words of its own file, and of
    // the 64 KiB window of the shared file that hash places.
    let fnv = |bytes: &[u8]| {
        bytes
            .chunks_exact(8)
            .fold(14_695_981_039_346_656_037u64, |hash, word| {
                (hash ^ u64::from_le_bytes(word.try_into().expect("8 bytes")))
                    .wrapping_mul(1_099_511_628_211)
            })
    };
    let own_hash = fnv(&own);
    let at = (own_hash % (shared.len() as u64 - 65_536)) as usize;
    let expected = format!(
        "own={own_hash:016x} shared={:016x} at={at} size={}\n",
        fnv(&shared[at..at + 65_536]),
        shared.len()
    );
    assert_eq!(String::from_utf8_lossy(&output.stdout), expected);
}
