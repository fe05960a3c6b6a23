//! The C probe modules and the examples, run in the sandbox: fixed clocks,
//! seeded random, empty environment, canonical NaNs, no way out, output
//! directories, the compile cache, and repeatable results.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use idlegrid_sandbox::{
    Completion, ModuleOrigin, Sandbox, SandboxConfig, TaskLimits, TaskReport, TaskSpec,
    seed_from_u64,
};

fn module(name: &str) -> Vec<u8> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("tests/modules/{name}.wasm"));
    std::fs::read(&path).unwrap_or_else(|error| panic!("{}: {error}", path.display()))
}

fn example(name: &str) -> Vec<u8> {
    let path = examples_dir().join(format!("{name}/{name}.wasm"));
    std::fs::read(&path).unwrap_or_else(|error| panic!("{}: {error}", path.display()))
}

fn examples_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples")
}

fn sandbox() -> Sandbox {
    Sandbox::new(SandboxConfig {
        memory_bytes_ceiling: 1 << 30,
        concurrent_tasks_max: 4,
        ..SandboxConfig::default()
    })
    .expect("sandbox")
}

fn task(args: &[&str]) -> TaskSpec {
    TaskSpec {
        args: args.iter().map(|arg| (*arg).to_owned()).collect(),
        limits: TaskLimits {
            wall_time: Duration::from_secs(60),
            ..TaskLimits::default()
        },
        ..TaskSpec::default()
    }
}

fn completed(report: TaskReport) -> Completion {
    match report.result {
        Ok(completion) => completion,
        Err(error) => panic!(
            "task failed: {error}; stderr: {}",
            String::from_utf8_lossy(&report.stderr)
        ),
    }
}

/// `key=value` lines of a probe's stdout.
fn lines(stdout: &[u8]) -> BTreeMap<String, String> {
    String::from_utf8_lossy(stdout)
        .lines()
        .filter_map(|line| line.split_once('='))
        .map(|(key, value)| (key.to_owned(), value.to_owned()))
        .collect()
}

#[test]
fn probe_sees_fixed_clocks_seeded_random_no_environment_and_canonical_nans() {
    let sandbox = sandbox();
    let probe = module("probe");
    let mut spec = task(&["first", "second arg"]);
    spec.stdin = b"twelve bytes".to_vec();
    spec.seed = seed_from_u64(7);
    let first = completed(sandbox.run_module(&probe, &spec).expect("runs"));
    let seen = lines(&first.output.stdout);

    assert_eq!(seen["realtime"], "1704067200.000000000");
    assert_eq!(seen["monotonic"], "0.000000000");
    assert_eq!(seen["env_count"], "0");
    assert_eq!(seen["argc"], "3");
    assert_eq!(seen["arg0"], "task");
    assert_eq!(seen["arg1"], "first");
    assert_eq!(seen["arg2"], "second arg");
    assert_eq!(seen["nan_div_bits"], "7ff8000000000000");
    assert_eq!(seen["nan_sqrt_bits"], "7ff8000000000000");
    assert_eq!(seen["nan_f32_bits"], "7fc00000");
    assert_eq!(seen["stdin_bytes"], "12");
    assert_eq!(seen["random"].len(), 32, "16 random bytes in hex");

    // Same seed: same stream. Another seed: another stream.
    let again = completed(sandbox.run_module(&probe, &spec).expect("runs"));
    assert_eq!(again.output_cid, first.output_cid);
    spec.seed = seed_from_u64(8);
    let other = completed(sandbox.run_module(&probe, &spec).expect("runs"));
    assert_ne!(lines(&other.output.stdout)["random"], seen["random"]);
}

#[test]
fn escape_attempts_are_denied_but_the_input_directory_is_readable() {
    let sandbox = sandbox();
    let input = tempfile::tempdir().expect("tempdir");
    std::fs::write(input.path().join("data.txt"), b"0123456789").expect("write input");
    let output = tempfile::tempdir().expect("tempdir");
    let mut spec = task(&["/input/data.txt", "/input/new.txt"]);
    spec.input_dir = Some(input.path().to_path_buf());
    spec.output_dir = Some(output.path().to_path_buf());
    let completion = completed(sandbox.run_module(&module("escape"), &spec).expect("runs"));
    let text = String::from_utf8_lossy(&completion.output.stdout).into_owned();

    assert!(!text.contains("OPENED"), "something escaped:\n{text}");
    let seen = lines(&completion.output.stdout);
    assert_eq!(seen["read_arg"], "ok 10", "{text}");
    assert_eq!(seen["write_arg"], "denied", "{text}");
    for (key, value) in &seen {
        if key.starts_with("sock_") {
            assert_ne!(value, "0", "{key} succeeded:\n{text}");
        }
    }
    assert!(!input.path().join("new.txt").exists());
    assert!(!Path::new("/tmp/idlegrid-escape").exists());
}

#[test]
fn output_directory_files_are_part_of_the_output() {
    let sandbox = sandbox();
    let writer = module("writer");
    let mut cids = Vec::new();
    for _ in 0..2 {
        let output = tempfile::tempdir().expect("tempdir");
        let mut spec = task(&["/output"]);
        spec.output_dir = Some(output.path().to_path_buf());
        let completion = completed(sandbox.run_module(&writer, &spec).expect("runs"));
        let files = completion.output.files.clone().expect("files collected");
        let paths: Vec<&str> = files.iter().map(|file| file.path.as_str()).collect();
        assert_eq!(paths, ["a.txt", "sub/b.bin"]);
        assert_eq!(files[0].bytes, b"alpha\n");
        assert_eq!(files[1].bytes, (0..=255u8).collect::<Vec<u8>>());
        assert_eq!(
            std::fs::read(output.path().join("a.txt")).expect("on disk"),
            b"alpha\n"
        );
        cids.push(completion.output_cid);
    }
    assert_eq!(cids[0], cids[1]);
}

#[test]
fn a_non_empty_output_directory_is_a_host_error_not_a_task_failure() {
    let sandbox = sandbox();
    let output = tempfile::tempdir().expect("tempdir");
    std::fs::write(output.path().join("left-over"), b"x").expect("write");
    let mut spec = task(&["/output"]);
    spec.output_dir = Some(output.path().to_path_buf());
    let error = sandbox
        .run_module(&module("writer"), &spec)
        .expect_err("refused");
    assert!(error.to_string().contains("must be empty"), "{error}");
}

#[test]
fn exit_codes_and_stderr_come_back() {
    let sandbox = sandbox();
    let report = sandbox
        .run_module(&module("exit"), &task(&["3"]))
        .expect("runs");
    assert_eq!(report.stderr, b"bye\n");
    let completion = completed(report);
    assert_eq!(completion.exit_code, 3);
    assert_eq!(completion.output.stdout, b"exiting 3\n");
}

/// (example, args, stdin, expected stdout prefix)
const EXAMPLE_TASKS: &[(&str, &[&str], &[u8], &str)] = &[
    ("pi", &["100000", "7"], b"", "samples=100000 "),
    ("hashgrind", &["1000"], b"", ""),
    ("nbody", &["1000"], b"", "-0.169075164\n"),
    (
        "mandelbrot",
        &["64", "64", "0", "0", "16", "100"],
        b"",
        "P6\n",
    ),
    (
        "wordcount",
        &[],
        b"the quick brown fox\njumps over the lazy dog\nThe end\n",
        "lines=3 words=11 bytes=",
    ),
];

#[test]
fn examples_give_the_same_output_and_fuel_every_time() {
    let sandbox = sandbox();
    for (name, args, stdin, expected) in EXAMPLE_TASKS {
        let (prepared, _) = sandbox.prepare(&example(name)).expect("example compiles");
        let mut spec = task(args);
        spec.stdin = stdin.to_vec();
        let first = sandbox.run(&prepared, &spec).expect("runs");
        let second = sandbox.run(&prepared, &spec).expect("runs");
        assert_eq!(first.fuel_used, second.fuel_used, "{name}");
        assert!(first.fuel_used > 0, "{name}");
        let (first, second) = (completed(first), completed(second));
        assert_eq!(first.exit_code, 0, "{name}");
        assert_eq!(first.output_cid, second.output_cid, "{name}");
        assert!(
            first.output.stdout.starts_with(expected.as_bytes()),
            "{name}: {:?}",
            String::from_utf8_lossy(&first.output.stdout[..first.output.stdout.len().min(80)])
        );
    }
}

#[test]
fn a_fresh_sandbox_loads_compiled_modules_from_the_disk_cache() {
    let cache = tempfile::tempdir().expect("tempdir");
    let config = SandboxConfig {
        cache_dir: Some(cache.path().to_path_buf()),
        memory_bytes_ceiling: 1 << 30,
        concurrent_tasks_max: 2,
        ..SandboxConfig::default()
    };
    let bytes = example("pi");
    let spec = task(&["1000", "1"]);

    let cold = Sandbox::new(config.clone()).expect("sandbox");
    let (prepared, origin) = cold.prepare(&bytes).expect("compiles");
    assert_eq!(origin, ModuleOrigin::Compiled);
    let expected = completed(cold.run(&prepared, &spec).expect("runs"));
    assert_eq!(
        cold.prepare(&bytes).expect("cached").1,
        ModuleOrigin::Memory
    );

    let warm = Sandbox::new(config.clone()).expect("sandbox");
    let (prepared, origin) = warm.prepare(&bytes).expect("loads");
    assert_eq!(origin, ModuleOrigin::DiskCache);
    assert_eq!(
        completed(warm.run(&prepared, &spec).expect("runs")),
        expected
    );

    // A damaged cache entry is detected, removed and recompiled.
    for entry in std::fs::read_dir(cache.path()).expect("cache dir") {
        let path = entry.expect("entry").path();
        let mut artifact = std::fs::read(&path).expect("read");
        let middle = artifact.len() / 2;
        artifact[middle] ^= 0xff;
        std::fs::write(&path, artifact).expect("damage");
    }
    let damaged = Sandbox::new(config).expect("sandbox");
    let (prepared, origin) = damaged.prepare(&bytes).expect("recompiles");
    assert_eq!(origin, ModuleOrigin::Compiled);
    assert_eq!(
        completed(damaged.run(&prepared, &spec).expect("runs")),
        expected
    );
}

/// Writes `files` (path, bytes) under `root` in the given order, each
/// dated `age` ago.
fn fill(root: &Path, files: &[(&str, &[u8])], age: Duration) {
    let when = std::time::SystemTime::now() - age;
    for (path, bytes) in files {
        let path = root.join(path);
        std::fs::create_dir_all(path.parent().expect("a parent")).expect("mkdir");
        std::fs::write(&path, bytes).expect("write");
        let file = std::fs::File::options()
            .write(true)
            .open(&path)
            .expect("open");
        file.set_modified(when).expect("date the file");
    }
}

/// The names in `dir`, in the order the host's file system lists them.
fn host_order(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .expect("read_dir")
        .map(|entry| {
            entry
                .expect("entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .collect()
}

#[test]
fn identical_input_files_look_the_same_to_a_task_on_any_host() {
    // More entries than one `fd_readdir` buffer of wasi-libc's holds, so
    // the listing is read in several calls.
    let files: Vec<(String, Vec<u8>)> = (0..300)
        .map(|index| {
            (
                format!("f{index:03}.txt"),
                format!("file {index}\n").into_bytes(),
            )
        })
        .chain([("sub/inner.bin".to_owned(), vec![7u8; 3000])])
        .collect();
    let files: Vec<(&str, &[u8])> = files
        .iter()
        .map(|(path, bytes)| (path.as_str(), bytes.as_slice()))
        .collect();
    // One copy on tmpfs where there is one (it lists newest first), written
    // in order and dated an hour ago; the other in the temporary directory,
    // written in reverse and dated now, as two providers' copies would be.
    let shm = Path::new("/dev/shm");
    let first = if shm.is_dir() {
        tempfile::tempdir_in(shm).expect("tempdir")
    } else {
        tempfile::tempdir().expect("tempdir")
    };
    fill(first.path(), &files, Duration::from_secs(3600));
    let second = tempfile::tempdir().expect("tempdir");
    let reversed: Vec<_> = files.iter().rev().copied().collect();
    fill(second.path(), &reversed, Duration::ZERO);
    eprintln!(
        "host orders: {:?} / {:?}",
        &host_order(first.path())[..5],
        &host_order(second.path())[..5]
    );

    let sandbox = sandbox();
    let lister = module("lister");
    let listing = |dir: &Path| {
        let mut spec = task(&["/input"]);
        spec.input_dir = Some(dir.to_path_buf());
        let report = sandbox.run_module(&lister, &spec).expect("runs");
        let fuel = report.fuel_used;
        (completed(report), fuel)
    };
    let ((a, a_fuel), (b, b_fuel)) = (listing(first.path()), listing(second.path()));
    let text = String::from_utf8_lossy(&a.output.stdout).into_owned();
    assert_eq!(
        text,
        String::from_utf8_lossy(&b.output.stdout),
        "the same files looked different"
    );
    assert_eq!(a_fuel, b_fuel);
    // What the task saw: names in byte order, the fixed clock, numbered
    // inodes, no device, one link, directories of size 0, the bytes.
    let entries: Vec<&str> = text
        .lines()
        .filter_map(|line| line.strip_prefix("entry /input/"))
        .filter_map(|rest| rest.split(' ').next())
        .filter(|path| !path.contains('/'))
        .collect();
    let mut sorted = entries.clone();
    sorted.sort();
    assert_eq!(entries, sorted, "{text}");
    assert_eq!(entries.len(), 301, "{text}");
    let clock = format!(
        "mtime={}.000000000",
        idlegrid_sandbox::FIXED_WALL_CLOCK_SECS
    );
    for line in text.lines().filter(|line| line.contains(" type=")) {
        assert!(line.contains(&clock), "{line}");
        assert!(line.contains(" dev=0 nlink=1 "), "{line}");
        if line.contains(" type=d ") {
            assert!(line.contains(" size=0 "), "{line}");
        }
    }
    assert!(
        text.contains("/input/sub/inner.bin type=f size=3000 "),
        "{text}"
    );
    // A file's inode is the same whether listed or stated.
    let inode_of = |key: &str, path: &str| -> String {
        let line = text
            .lines()
            .find(|line| line.starts_with(&format!("{key}{path} ")))
            .unwrap_or_else(|| panic!("no {key}{path} in {text}"));
        let field = if key == "entry " { "d_ino=" } else { "ino=" };
        line.split(' ')
            .find_map(|part| part.strip_prefix(field))
            .expect("an inode")
            .to_owned()
    };
    assert_eq!(
        inode_of("entry ", "/input/f207.txt"),
        inode_of("", "/input/f207.txt")
    );
}
