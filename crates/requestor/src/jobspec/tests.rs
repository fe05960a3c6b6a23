//! Job files as a requestor writes them: every field, every mistake.

use super::*;

mod lines;

const HEAD: &str = "module = \"m.wasm\"\nprice_per_million_fuel = 10\nbudget = 1000\n";
const MODULE: &[u8] = b"\0asm\x01\0\0\0";

/// A folder holding a module `m.wasm`, where job files are parsed as
/// `job.toml`.
struct Folder {
    dir: tempfile::TempDir,
}

impl Folder {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("m.wasm"), MODULE).unwrap();
        Self { dir }
    }

    fn job_path(&self) -> PathBuf {
        self.dir.path().join("job.toml")
    }

    fn write(&self, name: &str, bytes: &[u8]) {
        std::fs::write(self.dir.path().join(name), bytes).unwrap();
    }

    fn parse(&self, text: &str) -> Result<JobFile, JobFileError> {
        JobFile::parse(text, &self.job_path())
    }
}

/// Parses `text` and asserts it fails at `line:column` with `message`.
fn check_error(text: &str, (line, column): (usize, usize), message: &str) {
    let folder = Folder::new();
    let error = folder.parse(text).unwrap_err();
    assert_eq!(error.location(), Some((line, column)), "{error}");
    let shown = error.to_string();
    let expected = format!("{}:{line}:{column}: ", folder.job_path().display());
    assert!(shown.starts_with(&expected), "{shown}");
    let problem = error.problem().unwrap().to_string();
    assert!(problem.contains(message), "{problem:?} lacks {message:?}");
}

fn args(input: &TaskInput) -> Vec<String> {
    input.arg_strings()
}

#[test]
fn a_range_expands_its_templates_once_per_index() {
    let folder = Folder::new();
    let text = format!(
        "{HEAD}[tasks]\nstart = 98\nend = 102\nargs = [\"200000\", \"{{index}}\", \"n{{index}}.{{index}}\"]\nstdin = \"shared\"\n"
    );
    let job = folder.parse(&text).unwrap();
    assert_eq!(job.task_count(), 4);
    assert_eq!(args(&job.task(0).unwrap()), ["200000", "98", "n98.98"]);
    assert_eq!(args(&job.task(3).unwrap()), ["200000", "101", "n101.101"]);
    assert!(job.tasks().all(|task| *task.stdin == b"shared"));
    assert_eq!(job.module, MODULE);
    assert_eq!(job.module_cid, ContentId::of(MODULE));
    assert_eq!(job.module_path, folder.dir.path().join("m.wasm"));
    assert_eq!(job.path, folder.job_path());
}

#[test]
fn braces_that_are_not_placeholders_are_literal() {
    let folder = Folder::new();
    let text = format!(
        "{HEAD}[tasks]\nend = 1\nargs = ['{{\"a\": {{index}}}}', \"{{}}\", \"{{index\", \"}}{{ x }}\"]\n"
    );
    let job = folder.parse(&text).unwrap();
    assert_eq!(
        args(&job.task(0).unwrap()),
        ["{\"a\": 0}", "{}", "{index", "}{ x }"]
    );
}

#[test]
fn omitted_fields_take_their_defaults() {
    let folder = Folder::new();
    let job = folder.parse(&format!("{HEAD}[tasks]\nend = 2\n")).unwrap();
    assert_eq!(
        job.limits,
        ExecutionLimits {
            fuel: FUEL_DEFAULT,
            memory_bytes: MEMORY_BYTES_DEFAULT,
            output_bytes: OUTPUT_BYTES_DEFAULT,
        }
    );
    assert_eq!(job.wall_time_secs, 60);
    assert_eq!(job.deadline_blocks, 600);
    assert_eq!(job.verification, Verification::Adaptive);
    assert_eq!(job.price_per_million_fuel, 10);
    assert_eq!(job.budget, 1000);
    assert_eq!(job.task_count(), 2);
    assert!(
        job.tasks()
            .all(|task| task.args.is_empty() && task.stdin.is_empty())
    );
}

#[test]
fn every_field_is_read() {
    let folder = Folder::new();
    let text = "module = \"m.wasm\"\nprice_per_million_fuel = 3\nbudget = 5_000_000\n\
                deadline_blocks = 10\n[limits]\nfuel = 1_000_000\nmemory_mib = 64\n\
                output_bytes = 65536\nwall_time_secs = 3600\n[verification]\n\
                policy = \"replicas\"\nreplicas = 7\n[tasks]\nend = 1\n";
    let job = folder.parse(text).unwrap();
    assert_eq!(
        job.limits,
        ExecutionLimits {
            fuel: 1_000_000,
            memory_bytes: 64 << 20,
            output_bytes: 65536,
        }
    );
    assert_eq!(job.wall_time_secs, 3600);
    assert_eq!(job.deadline_blocks, 10);
    assert_eq!(job.verification, Verification::Replicas(7));
    assert_eq!(job.price_per_million_fuel, 3);
    assert_eq!(job.budget, 5_000_000);
}

#[test]
fn the_spec_cid_is_stable_and_covers_every_field() {
    let folder = Folder::new();
    let base = format!("{HEAD}[tasks]\nend = 3\nargs = [\"{{index}}\"]\n");
    let spec = |text: &str| folder.parse(text).unwrap().spec_cid();
    let first = spec(&base);
    folder.write("job.toml", base.as_bytes());
    assert_eq!(JobFile::load(&folder.job_path()).unwrap().spec_cid(), first);
    assert_eq!(spec(&base), first);

    let variants = [
        base.replace("price_per_million_fuel = 10", "price_per_million_fuel = 11"),
        base.replace("budget = 1000", "budget = 1001"),
        format!("deadline_blocks = 601\n{base}"),
        format!("{base}[limits]\nfuel = 7\n"),
        format!("{base}[limits]\nmemory_mib = 1\n"),
        format!("{base}[limits]\noutput_bytes = 1\n"),
        format!("{base}[limits]\nwall_time_secs = 61\n"),
        format!("{base}[verification]\npolicy = \"replicas\"\nreplicas = 2\n"),
        base.replace("end = 3", "end = 4"),
        base.replace("\"{index}\"", "\"x{index}\""),
        format!("{base}stdin = \"x\"\n"),
    ];
    for variant in &variants {
        assert_ne!(spec(variant), first, "{variant}");
    }
    folder.write("m.wasm", b"another module");
    assert_ne!(spec(&base), first);
}

#[test]
fn explicit_tasks_take_inline_stdin_or_a_stdin_file() {
    let folder = Folder::new();
    folder.write("input.txt", b"from a file\n");
    let text = format!(
        "{HEAD}[[task]]\nargs = [\"1000\", \"{{index}}\"]\nstdin = \"inline\"\n\n\
         [[task]]\nstdin_file = \"input.txt\"\n\n[[task]]\n"
    );
    let job = folder.parse(&text).unwrap();
    assert_eq!(job.task_count(), 3);
    // Explicit arguments are literal.
    assert_eq!(args(&job.task(0).unwrap()), ["1000", "{index}"]);
    assert_eq!(*job.task(0).unwrap().stdin, b"inline");
    assert!(job.task(1).unwrap().args.is_empty());
    assert_eq!(*job.task(1).unwrap().stdin, b"from a file\n");
    assert_eq!(job.task(2).unwrap(), TaskInput::default());
}

#[test]
fn toml_mistakes_point_at_their_place() {
    check_error(
        &format!("{HEAD}[tasks\nend = 1\n"),
        (4, 7),
        "unclosed table, expected `]`",
    );
    check_error(
        &format!("{HEAD}[tasks]\nstart = 1\n"),
        (4, 1),
        "`[tasks]` needs `end` (a range of indices), `manifest`",
    );
    check_error(
        &format!("{HEAD}colour = 1\n[tasks]\nend = 1\n"),
        (4, 1),
        "unknown field `colour`",
    );
    check_error(
        &format!("{HEAD}[tasks]\nend = 1\n  stdn = \"x\"\n"),
        (6, 3),
        "unknown field `stdn`",
    );
    check_error(
        "module = \"m.wasm\"\nprice_per_million_fuel = \"ten\"\nbudget = 1\n[tasks]\nend = 1\n",
        (2, 26),
        "invalid type",
    );
    check_error(
        &format!("{HEAD}[tasks]\nend = -3\n"),
        (5, 7),
        "invalid value: integer `-3`, expected u64",
    );
    check_error(
        "price_per_million_fuel = 1\nbudget = 1\n[tasks]\nend = 1\n",
        (1, 1),
        "give exactly one",
    );
    check_error(
        &format!("{HEAD}[verification]\npolicy = \"bogus\"\n[tasks]\nend = 1\n"),
        (5, 10),
        "unknown variant `bogus`, expected `adaptive` or `replicas`",
    );
}

#[test]
fn out_of_range_numbers_point_at_the_value() {
    let tasks = "[tasks]\nend = 1\n";
    check_error(
        &format!("module = \"m.wasm\"\nprice_per_million_fuel = 0\nbudget = 1\n{tasks}"),
        (2, 26),
        "`price_per_million_fuel` must be at least 1",
    );
    check_error(
        &format!("module = \"m.wasm\"\nprice_per_million_fuel = 1\nbudget = 0\n{tasks}"),
        (3, 10),
        "`budget` must be at least 1",
    );
    check_error(
        &format!("{HEAD}deadline_blocks = 9\n{tasks}"),
        (4, 19),
        "`deadline_blocks` is 9, outside the allowed 10..=1000000",
    );
    check_error(
        &format!("{HEAD}[limits]\nfuel = 0\n{tasks}"),
        (5, 8),
        "`fuel` is 0, outside the allowed 1..=10000000000000",
    );
    check_error(
        &format!("{HEAD}[limits]\nmemory_mib = 4097\n{tasks}"),
        (5, 14),
        "`memory_mib` is 4097, outside the allowed 1..=4096",
    );
    check_error(
        &format!("{HEAD}[limits]\noutput_bytes = 2147483649\n{tasks}"),
        (5, 16),
        "`output_bytes` is 2147483649, outside the allowed 0..=2147483648",
    );
    check_error(
        &format!("{HEAD}[limits]\nwall_time_secs = 3601\n{tasks}"),
        (5, 18),
        "`wall_time_secs` is 3601, outside the allowed 1..=3600",
    );
    check_error(
        &format!("{HEAD}[verification]\npolicy = \"replicas\"\nreplicas = 8\n{tasks}"),
        (6, 12),
        "`replicas` is 8, outside the allowed 1..=7",
    );
}

#[test]
fn replicas_and_policy_must_agree() {
    let tasks = "[tasks]\nend = 1\n";
    check_error(
        &format!("{HEAD}[verification]\nreplicas = 2\n{tasks}"),
        (5, 12),
        "`replicas` is only allowed with `policy = \"replicas\"`",
    );
    check_error(
        &format!("{HEAD}[verification]\npolicy = \"adaptive\"\nreplicas = 2\n{tasks}"),
        (6, 12),
        "`replicas` is only allowed with `policy = \"replicas\"`",
    );
    check_error(
        &format!("{HEAD}[verification]\npolicy = \"replicas\"\n{tasks}"),
        (5, 10),
        "`policy = \"replicas\"` needs `replicas`",
    );
}

#[test]
fn the_adaptive_policy_s_knobs_are_the_requestor_s_and_not_the_spec_s() {
    let folder = Folder::new();
    let tasks = "[tasks]\nend = 1\n";
    let plain = folder.parse(&format!("{HEAD}{tasks}")).unwrap();
    assert_eq!(plain.trust, Trust::default());
    let tuned = folder
        .parse(&format!(
            "{HEAD}[verification]\ntrust_after = 3\ncheck_halving = 5\ncheck_floor_permille = 40\n{tasks}"
        ))
        .unwrap();
    assert_eq!(
        tuned.trust,
        Trust {
            after: 3,
            halving: 5,
            floor_permille: 40
        }
    );
    // How a requestor checks is its own business: the job's terms on the
    // ledger are the same.
    assert_eq!(tuned.spec_cid(), plain.spec_cid());

    check_error(
        &format!("{HEAD}[verification]\ncheck_floor_permille = 1001\n{tasks}"),
        (5, 24),
        "`check_floor_permille` is 1001, outside the allowed 0..=1000",
    );
    check_error(
        &format!(
            "{HEAD}[verification]\npolicy = \"replicas\"\nreplicas = 2\ntrust_after = 1\n{tasks}"
        ),
        (7, 15),
        "`trust_after` tunes the adaptive policy",
    );
}

#[test]
fn a_job_has_exactly_one_task_form() {
    check_error(
        &format!("{HEAD}[tasks]\nend = 3\n\n[[task]]\nargs = [\"a\"]\n"),
        (7, 1),
        "either a `[tasks]` table or `[[task]]` entries, not both",
    );
    check_error(
        &format!("{HEAD}[[task]]\nargs = [\"a\"]\n\n[tasks]\nend = 3\n"),
        (7, 1),
        "either a `[tasks]` table or `[[task]]` entries, not both",
    );
    check_error(HEAD, (1, 1), "the job has no tasks");
    check_error(
        &format!("{HEAD}task = []\n"),
        (4, 8),
        "the job has no tasks",
    );
}

#[test]
fn a_range_must_hold_between_one_and_tasks_max_tasks() {
    check_error(
        &format!("{HEAD}[tasks]\nstart = 5\nend = 5\n"),
        (6, 7),
        "the range is empty: `end` (5) must be above `start` (5)",
    );
    check_error(
        &format!("{HEAD}[tasks]\nstart = 10\nend = 100_000_011\n"),
        (6, 7),
        "100000001 tasks, above the limit of 100000000",
    );
}

#[test]
fn argument_mistakes_point_at_the_argument() {
    check_error(
        &format!("{HEAD}[tasks]\nend = 2\nargs = [\"1\", \"{{seed}}\"]\n"),
        (6, 14),
        "unknown placeholder `{seed}` in an argument; the only one is `{index}`",
    );
    let long = "x".repeat(TASK_ARG_BYTES_MAX - 1);
    check_error(
        &format!("{HEAD}[tasks]\nstart = 9\nend = 11\nargs = [\"{long}{{index}}\"]\n"),
        (7, 9),
        "argument of task 1 is 4097 bytes, above the limit of 4096",
    );
    let many = vec!["\"a\""; TASK_ARGS_MAX + 1].join(", ");
    check_error(
        &format!("{HEAD}[[task]]\nargs = [{many}]\n"),
        (5, 8),
        "257 arguments, above the limit of 256",
    );
}

#[test]
fn stdin_mistakes_point_at_their_place() {
    check_error(
        &format!("{HEAD}[[task]]\nstdin = \"a\"\nstdin_file = \"input.txt\"\n"),
        (6, 14),
        "`stdin` and `stdin_file` are both set; give one",
    );
    check_error(
        &format!("{HEAD}[[task]]\n\n[[task]]\nstdin_file = \"absent.txt\"\n"),
        (7, 14),
        "failed to read stdin file",
    );
    let big = "x".repeat(TASK_STDIN_INLINE_BYTES_MAX + 1);
    check_error(
        &format!("{HEAD}[tasks]\nend = 1\nstdin = \"{big}\"\n"),
        (6, 9),
        "stdin is above the limit of 1048576 bytes",
    );
}

#[test]
fn a_stdin_file_above_the_limit_is_refused() {
    let folder = Folder::new();
    folder.write("big.txt", &vec![b'x'; TASK_STDIN_INLINE_BYTES_MAX + 1]);
    let error = folder
        .parse(&format!("{HEAD}[[task]]\nstdin_file = \"big.txt\"\n"))
        .unwrap_err();
    assert_eq!(error.location(), Some((5, 14)));
    assert!(
        error.to_string().contains("stdin is above the limit"),
        "{error}"
    );
}

#[test]
fn explicit_task_inputs_are_bounded_in_total() {
    let folder = Folder::new();
    let stdin = vec![b'x'; TASK_STDIN_INLINE_BYTES_MAX];
    folder.write("input.txt", &stdin);
    let error = folder
        .parse(&format!(
            "{HEAD}{}",
            "[[task]]\nstdin_file = \"input.txt\"\n".repeat(300)
        ))
        .unwrap_err();
    // The 256th entry, two lines each after the head's three.
    assert_eq!(error.location(), Some((4 + 2 * 255, 1)));
    // 256 tasks of 1 MiB plus their length prefixes pass 256 MiB at task 255.
    assert!(
        error
            .to_string()
            .ends_with("the task inputs add up to more than 268435456 bytes (at task 255)"),
        "{error}"
    );
}

#[test]
fn the_module_must_exist_and_fit() {
    check_error(
        "price_per_million_fuel = 1\nbudget = 1\nmodule = \"absent.wasm\"\n[tasks]\nend = 1\n",
        (3, 10),
        "failed to read module",
    );
    let folder = Folder::new();
    folder.write("big.wasm", &vec![0; MODULE_BYTES_MAX + 1]);
    let error = folder
        .parse("module = \"big.wasm\"\nprice_per_million_fuel = 1\nbudget = 1\n[tasks]\nend = 1\n")
        .unwrap_err();
    assert_eq!(error.location(), Some((1, 10)));
    assert!(
        error
            .to_string()
            .contains("is above the limit of 8388608 bytes"),
        "{error}"
    );
}

#[test]
fn a_missing_job_file_is_named() {
    let folder = Folder::new();
    let error = JobFile::load(&folder.dir.path().join("nope.toml")).unwrap_err();
    assert_eq!(error.location(), None);
    let shown = error.to_string();
    assert!(shown.starts_with("failed to read job file "), "{shown}");
    assert!(shown.contains("nope.toml"), "{shown}");
}

#[test]
fn line_column_counts_characters_from_one() {
    let text = "ab\nπé=1\n";
    assert_eq!(line_column(text, 0), (1, 1));
    assert_eq!(line_column(text, 2), (1, 3));
    assert_eq!(line_column(text, 3), (2, 1));
    // `=` is after two two-byte characters.
    assert_eq!(line_column(text, 7), (2, 3));
    assert_eq!(line_column(text, 100), (3, 1));
}

#[test]
fn the_pi_example_loads() {
    let path = Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../examples/pi/job.toml"
    ));
    let job = JobFile::load(path).unwrap();
    assert_eq!(job.task_count(), 1000);
    assert_eq!(args(&job.task(0).unwrap()), ["20000", "0"]);
    assert_eq!(args(&job.task(999).unwrap()), ["20000", "999"]);
    assert_eq!(job.verification, Verification::Adaptive);
    assert_eq!(job.price_per_million_fuel, 10);
    // Three replicas of every task at the fuel cap fit the budget.
    let worst_cost = 1000 * 3 * job.limits.fuel * job.price_per_million_fuel / 1_000_000;
    assert!(job.budget >= worst_cost, "{} < {worst_cost}", job.budget);
    assert!(!job.module.is_empty());
}

#[test]
fn files_shared_by_every_task_and_each_task_s_own_are_named_by_content_id() {
    let folder = Folder::new();
    folder.write("weights.bin", &[7; 100_000]);
    for index in 0..3u8 {
        folder.write(&format!("frame-{index}.bin"), &[index; 10]);
    }
    let text = format!(
        "{HEAD}[files]\n\"weights.bin\" = \"weights.bin\"\n\
         [tasks]\nend = 3\nfiles = {{ \"frame.bin\" = \"frame-{{index}}.bin\" }}\n"
    );
    let job = folder.parse(&text).unwrap();
    let weights = ContentId::of(&[7; 100_000]);
    for (index, task) in job.tasks().enumerate() {
        let names: Vec<&str> = task.files.iter().map(|file| file.name.as_str()).collect();
        assert_eq!(names, ["frame.bin", "weights.bin"], "in byte order");
        assert_eq!(task.files[0].cid, ContentId::of(&[index as u8; 10]));
        assert_eq!(task.files[0].bytes, 10);
        assert_eq!((task.files[1].cid, task.files[1].bytes), (weights, 100_000));
        task.check_files().unwrap();
    }
    // Each distinct file once, with the tree it is served by.
    assert_eq!(job.files.len(), 4);
    let held = job.input_file(&weights).unwrap();
    assert_eq!(held.path, folder.dir.path().join("weights.bin"));
    assert_eq!(held.tree.cid(), weights);
    // The files are part of each task's input, so of the job's spec.
    let other = folder
        .parse(&text.replace(
            "\"weights.bin\" = \"weights.bin\"",
            "\"w.bin\" = \"weights.bin\"",
        ))
        .unwrap();
    assert_ne!(job.spec_cid(), other.spec_cid());
}

#[test]
fn explicit_tasks_name_their_own_files() {
    let folder = Folder::new();
    folder.write("a.txt", b"alpha");
    let text =
        format!("{HEAD}[[task]]\nfiles = {{ \"in.txt\" = \"a.txt\" }}\n[[task]]\nargs = [\"x\"]\n");
    let job = folder.parse(&text).unwrap();
    assert_eq!(job.task(0).unwrap().files.len(), 1);
    assert_eq!(job.task(0).unwrap().files[0].cid, ContentId::of(b"alpha"));
    assert!(job.task(1).unwrap().files.is_empty());
}

#[test]
fn input_file_mistakes_point_at_their_place() {
    let folder = Folder::new();
    folder.write("a.bin", &[1; 64]);
    check_error(
        &format!("{HEAD}[files]\n\"../up\" = \"a.bin\"\n[tasks]\nend = 1\n"),
        (5, 11),
        "may not stand in a file name",
    );
    check_error(
        &format!("{HEAD}[files]\n\"x\" = \"missing.bin\"\n[tasks]\nend = 1\n"),
        (5, 7),
        "failed to read input file",
    );
    check_error(
        &format!("{HEAD}[tasks]\nend = 2\nfiles = {{ \"f\" = \"missing-{{index}}.bin\" }}\n"),
        (6, 17),
        "missing-0.bin",
    );
    check_error(
        &format!("{HEAD}[tasks]\nend = 1\nfiles = {{ \"f\" = \"{{nope}}\" }}\n"),
        (6, 17),
        "unknown placeholder",
    );
}

#[test]
fn a_file_of_every_task_and_of_one_task_by_the_same_name_is_refused() {
    let folder = Folder::new();
    folder.write("a.bin", &[1; 64]);
    folder.write("b.bin", &[2; 64]);
    let error = folder
        .parse(&format!(
            "{HEAD}[files]\n\"x\" = \"a.bin\"\n[[task]]\nfiles = {{ \"x\" = \"b.bin\" }}\n"
        ))
        .unwrap_err();
    assert!(
        error.to_string().contains("`x` is a file of every task"),
        "{error}"
    );
}

#[test]
fn the_input_budgets_bound_a_task_and_the_job() {
    let folder = Folder::new();
    folder.write("big.bin", &[1; 5000]);
    for index in 0..4u8 {
        folder.write(&format!("own-{index}.bin"), &[index; 1000]);
    }
    let files = "[files]\n\"big.bin\" = \"big.bin\"\n";
    let tasks = "[tasks]\nend = 4\nfiles = { \"own.bin\" = \"own-{index}.bin\" }\n";
    let job = folder
        .parse(&format!(
            "{HEAD}[limits]\ntask_input_bytes = 6000\njob_input_bytes = 9000\n{files}{tasks}"
        ))
        .unwrap();
    assert_eq!(job.task_count(), 4);
    let error = folder
        .parse(&format!(
            "{HEAD}[limits]\ntask_input_bytes = 5999\n{files}{tasks}"
        ))
        .unwrap_err();
    assert!(
        error
            .to_string()
            .contains("task 0's input is 6000 bytes, above `task_input_bytes` (5999)"),
        "{error}"
    );
    let error = folder
        .parse(&format!(
            "{HEAD}[limits]\njob_input_bytes = 8999\n{files}{tasks}"
        ))
        .unwrap_err();
    assert!(
        error
            .to_string()
            .contains("more than `job_input_bytes` (8999) at task 3"),
        "{error}"
    );
}

#[test]
fn inputs_by_url_are_read_only_when_loading_to_submit_and_outputs_go_to_s3() {
    let folder = Folder::new();
    check_error(
        &format!("{HEAD}[files]\n\"w\" = \"s3://bucket/weights.bin\"\n[tasks]\nend = 1\n"),
        (5, 7),
        "inputs by URL are read by `idlegrid submit`",
    );
    check_error(
        &format!("{HEAD}[output]\nurl = \"https://example.com/out\"\n[tasks]\nend = 1\n"),
        (5, 7),
        "outputs are written to s3://BUCKET/PREFIX",
    );
    let job = folder
        .parse(&format!(
            "{HEAD}[storage]\nendpoint = \"http://127.0.0.1:9\"\nregion = \"eu-west-1\"\n\
             [output]\nurl = \"s3://results/run\"\n[tasks]\nend = 1\n"
        ))
        .unwrap();
    assert_eq!(job.output_url.as_deref(), Some("s3://results/run"));
    assert_eq!(job.storage.endpoint.as_deref(), Some("http://127.0.0.1:9"));
    assert_eq!(job.storage.region.as_deref(), Some("eu-west-1"));
    assert!(job.downloads.dir().is_none(), "nothing downloaded");
}

/// Counts the bytes each thread holds, so a test can see what a load keeps.
mod counting {
    use std::alloc::{GlobalAlloc, Layout, System};
    use std::cell::Cell;

    thread_local! {
        static HELD: Cell<isize> = const { Cell::new(0) };
    }

    struct Counting;

    fn add(bytes: isize) {
        // Allocations after the thread's locals are gone are not counted.
        let _ = HELD.try_with(|held| held.set(held.get() + bytes));
    }

    fn signed(bytes: usize) -> isize {
        isize::try_from(bytes).unwrap_or(isize::MAX)
    }

    #[expect(
        unsafe_code,
        reason = "a global allocator is unsafe to implement; this one only counts, \
                  and the system's allocator does the work"
    )]
    unsafe impl GlobalAlloc for Counting {
        unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
            // SAFETY: the caller's promises about `layout` pass through.
            let pointer = unsafe { System.alloc(layout) };
            if !pointer.is_null() {
                add(signed(layout.size()));
            }
            pointer
        }

        unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
            // SAFETY: as for `alloc`.
            let pointer = unsafe { System.alloc_zeroed(layout) };
            if !pointer.is_null() {
                add(signed(layout.size()));
            }
            pointer
        }

        unsafe fn dealloc(&self, pointer: *mut u8, layout: Layout) {
            // SAFETY: `pointer` came from this allocator, so from the system's.
            unsafe { System.dealloc(pointer, layout) };
            add(-signed(layout.size()));
        }

        unsafe fn realloc(&self, pointer: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
            // SAFETY: as for `dealloc`, with the caller's promises about
            // `new_size`.
            let moved = unsafe { System.realloc(pointer, layout, new_size) };
            if !moved.is_null() {
                add(signed(new_size) - signed(layout.size()));
            }
            moved
        }
    }

    #[global_allocator]
    static COUNTING: Counting = Counting;

    /// Bytes allocated and not freed by this thread so far.
    pub(super) fn held() -> isize {
        HELD.with(Cell::get)
    }
}

#[test]
fn a_range_of_ten_million_tasks_holds_nothing_per_task() {
    let folder = Folder::new();
    let text = format!("{HEAD}[tasks]\nend = 10_000_000\nargs = [\"--seed\", \"n{{index}}\"]\n");
    let before = counting::held();
    let job = folder.parse(&text).unwrap();
    let held = counting::held() - before;
    assert_eq!(job.task_count(), 10_000_000);
    assert_eq!(args(&job.task(0).unwrap()), ["--seed", "n0"]);
    assert_eq!(args(&job.task(9_999_999).unwrap()), ["--seed", "n9999999"]);
    assert_eq!(job.task(10_000_000), None);
    assert!(job.task_failure().is_none(), "past the end is no failure");
    // One byte a task would be 10 MB.
    assert!(held < 64 << 10, "the job holds {held} bytes");
}

#[test]
fn the_spec_streamed_at_load_is_the_whole_encoding_s_id() {
    let folder = Folder::new();
    folder.write("weights.bin", &[7; 1000]);
    for index in 0..3u8 {
        folder.write(&format!("frame-{index}.bin"), &[index; 10]);
    }
    folder.write("tasks.txt", b"frame-2.bin\nframe-0.bin\n");
    let jobs = [
        format!("{HEAD}[tasks]\nend = 3\nargs = [\"{{index}}\"]\n"),
        format!(
            "{HEAD}[files]\n\"weights.bin\" = \"weights.bin\"\n[tasks]\nstart = 0\nend = 3\n\
             args = [\"a\", \"{{index}}-{{index}}\"]\nstdin = \"shared\"\n\
             files = {{ \"frame\" = \"frame-{{index}}.bin\", \"b\" = \"frame-1.bin\" }}\n"
        ),
        format!(
            "{HEAD}[tasks]\nmanifest = \"tasks.txt\"\nargs = [\"{{line}}\", \"{{index}}\"]\n\
             files = {{ \"in\" = \"{{line}}\" }}\n"
        ),
        format!(
            "{HEAD}[[task]]\nargs = [\"x\"]\nstdin = \"y\"\n[[task]]\nfiles = {{ \"f\" = \"weights.bin\" }}\n"
        ),
    ];
    for text in &jobs {
        let job = folder.parse(text).unwrap();
        let task_cids: Vec<ContentId> = job.tasks().map(|task| task.content_id()).collect();
        assert_eq!(task_cids.len() as u64, job.task_count());
        let whole = (
            job.module_cid,
            task_cids,
            job.limits,
            job.price_per_million_fuel,
            job.verification.canonical(),
            job.budget,
            job.deadline_blocks,
            job.wall_time_secs,
        );
        let expected = ContentId::of(&codec::encode(&whole).unwrap());
        assert_eq!(job.spec_cid(), expected, "{text}");
        for index in 0..job.task_count() {
            assert_eq!(job.tasks().nth(index as usize), job.task(index), "{text}");
        }
    }
}

#[test]
fn the_spec_of_a_known_job_does_not_change() {
    let folder = Folder::new();
    let job = folder
        .parse(&format!(
            "{HEAD}[tasks]\nstart = 3\nend = 6\nargs = [\"{{index}}\", \"x\"]\nstdin = \"in\"\n"
        ))
        .unwrap();
    // BLAKE3 of the spec's Borsh encoding, worked out apart from this
    // code: a job's spec on the ledger must never change with it.
    assert_eq!(
        job.spec_cid().to_string(),
        "b3:483a3f550e38d9c25545c2bd4627ecff934b6ade41ac3f16d940d9e5dbb565ab"
    );
}

#[test]
fn task_files_are_each_task_s_and_the_most_any_reads_is_known() {
    let folder = Folder::new();
    folder.write("shared.bin", &[1; 100]);
    for index in 0..3u8 {
        folder.write(
            &format!("own-{index}.bin"),
            &vec![index; 10 * usize::from(index)],
        );
    }
    let job = folder
        .parse(&format!(
            "{HEAD}[files]\n\"z\" = \"shared.bin\"\n[tasks]\nend = 3\n\
             files = {{ \"own\" = \"own-{{index}}.bin\", \"a\" = \"shared.bin\" }}\n"
        ))
        .unwrap();
    assert_eq!(job.input_bytes_max(), 100 + 100 + 20);
    let task = job.task(2).unwrap();
    let files: Vec<(&str, u64)> = task
        .files
        .iter()
        .map(|file| (file.name.as_str(), file.bytes))
        .collect();
    assert_eq!(files, [("a", 100), ("own", 20), ("z", 100)]);
    task.check_files().unwrap();
}

/// [`check_error`] in `folder`.
fn check_error_in(folder: &Folder, text: &str, (line, column): (usize, usize), message: &str) {
    let error = folder.parse(text).unwrap_err();
    assert_eq!(error.location(), Some((line, column)), "{error}");
    let problem = error.problem().unwrap().to_string();
    assert!(problem.contains(message), "{problem:?} lacks {message:?}");
}

#[test]
fn generated_inputs_are_bounded_in_total() {
    let folder = Folder::new();
    let text = format!("{HEAD}[tasks]\nend = 10\nstdin = \"{}\"\n", "x".repeat(100));
    // Each task encodes to 112 bytes: the argument list's length, the
    // stdin's and its 100 bytes, the file list's length.
    let error = JobFile::parse_bounded(&text, &folder.job_path(), None, 500).unwrap_err();
    assert_eq!(error.location(), Some((4, 1)));
    assert!(
        error
            .to_string()
            .contains("more than 500 bytes (at task 4): each is made and hashed"),
        "{error}"
    );
    assert!(JobFile::parse_bounded(&text, &folder.job_path(), None, 1120).is_ok());
}
