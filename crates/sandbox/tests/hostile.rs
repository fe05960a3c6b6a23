//! Hostile modules end with the right error kind, within their limits, and
//! the sandbox keeps serving the next task.

use std::time::Duration;

use idlegrid_sandbox::{ErrorKind, Sandbox, SandboxConfig, TaskLimits, TaskReport, TaskSpec};

fn sandbox() -> Sandbox {
    Sandbox::new(SandboxConfig {
        memory_bytes_ceiling: 1 << 30,
        concurrent_tasks_max: 4,
        ..SandboxConfig::default()
    })
    .expect("sandbox")
}

fn limits() -> TaskLimits {
    TaskLimits {
        fuel: 200_000_000,
        memory_bytes: 64 << 20,
        output_bytes: 1 << 20,
        stderr_bytes: 4 << 10,
        wall_time: Duration::from_secs(20),
    }
}

fn run_wat(sandbox: &Sandbox, wat: &str, limits: TaskLimits) -> TaskReport {
    let bytes = wat::parse_str(wat).expect("valid wat");
    run_bytes(sandbox, &bytes, limits)
}

fn run_bytes(sandbox: &Sandbox, bytes: &[u8], limits: TaskLimits) -> TaskReport {
    let task = TaskSpec {
        limits,
        ..TaskSpec::default()
    };
    sandbox
        .run_module(bytes, &task)
        .expect("the host can run tasks")
}

fn failure(report: &TaskReport) -> (ErrorKind, String) {
    match &report.result {
        Err(error) => (error.kind, error.message.clone()),
        Ok(completion) => panic!(
            "expected a failure, the task exited {}",
            completion.exit_code
        ),
    }
}

/// A well-behaved module that prints "hello\n".
const HELLO: &str = r#"
(module
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 16) "hello\n")
  (func (export "_start")
    (i32.store (i32.const 0) (i32.const 16))
    (i32.store (i32.const 4) (i32.const 6))
    (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))))
"#;

/// The sandbox still runs a normal task correctly after whatever came before.
fn assert_still_serves(sandbox: &Sandbox) {
    let report = run_wat(sandbox, HELLO, limits());
    let completion = report.result.expect("hello runs");
    assert_eq!(completion.exit_code, 0);
    assert_eq!(completion.output.stdout, b"hello\n");
}

fn check(wat: &str, limits: TaskLimits, kind: ErrorKind, message_part: &str) -> TaskReport {
    let sandbox = sandbox();
    let report = run_wat(&sandbox, wat, limits);
    let (actual, message) = failure(&report);
    assert_eq!(actual, kind, "message: {message}");
    assert!(
        message.contains(message_part),
        "`{message}` should mention `{message_part}`"
    );
    assert_still_serves(&sandbox);
    report
}

#[test]
fn infinite_loop_runs_out_of_fuel_and_is_billed_all_of_it() {
    let report = check(
        r#"(module (memory (export "memory") 1) (func (export "_start") (loop (br 0))))"#,
        limits(),
        ErrorKind::OutOfFuel,
        "fuel",
    );
    assert_eq!(report.fuel_used, limits().fuel);
}

#[test]
fn infinite_loop_with_ample_fuel_hits_the_wall_clock_backstop() {
    let limits = TaskLimits {
        fuel: u64::MAX / 2,
        wall_time: Duration::from_millis(200),
        ..limits()
    };
    let report = check(
        r#"(module (memory (export "memory") 1) (func (export "_start") (loop (br 0))))"#,
        limits,
        ErrorKind::WallTimeout,
        "wall-clock",
    );
    assert!(
        report.duration < Duration::from_secs(10),
        "{:?}",
        report.duration
    );
}

#[test]
fn memory_growth_bomb_hits_the_memory_limit() {
    check(
        r#"(module (memory (export "memory") 1)
             (func (export "_start")
               (loop (drop (memory.grow (i32.const 16))) (br 0))))"#,
        limits(),
        ErrorKind::MemoryLimit,
        "limit is 64 MiB",
    );
}

#[test]
fn huge_initial_memory_hits_the_memory_limit_before_running() {
    let report = check(
        r#"(module (memory (export "memory") 60000) (func (export "_start")))"#,
        limits(),
        ErrorKind::MemoryLimit,
        "starts with",
    );
    assert_eq!(report.fuel_used, 0);
}

#[test]
fn initial_memory_above_the_task_limit_fails_before_running() {
    // 2000 pages = 125 MiB: fits the sandbox, not the task's 64 MiB.
    let report = check(
        r#"(module (memory (export "memory") 2000) (func (export "_start")))"#,
        limits(),
        ErrorKind::MemoryLimit,
        "the limit is 64 MiB",
    );
    assert_eq!(report.fuel_used, 0);
}

#[test]
fn unbounded_recursion_overflows_the_stack() {
    check(
        r#"(module (memory (export "memory") 1)
             (func $recurse (param i64) (call $recurse (i64.add (local.get 0) (i64.const 1))))
             (func (export "_start") (call $recurse (i64.const 0))))"#,
        TaskLimits {
            fuel: 10_000_000_000,
            ..limits()
        },
        ErrorKind::StackOverflow,
        "stack",
    );
}

#[test]
fn stdout_flood_hits_the_output_limit() {
    let report = check(
        r#"(module
             (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
             (memory (export "memory") 2)
             (func (export "_start")
               (i32.store (i32.const 0) (i32.const 1024))
               (i32.store (i32.const 4) (i32.const 65536))
               (loop (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8))) (br 0))))"#,
        TaskLimits {
            fuel: 10_000_000_000,
            ..limits()
        },
        ErrorKind::OutputLimit,
        "stdout",
    );
    assert!(report.fuel_used < 10_000_000_000);
}

#[test]
fn stderr_flood_is_truncated_not_fatal() {
    let sandbox = sandbox();
    let report = run_wat(
        &sandbox,
        r#"(module
             (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
             (memory (export "memory") 2)
             (func (export "_start") (local i32)
               (i32.store (i32.const 0) (i32.const 1024))
               (i32.store (i32.const 4) (i32.const 1000))
               (loop
                 (drop (call $fd_write (i32.const 2) (i32.const 0) (i32.const 1) (i32.const 8)))
                 (local.set 0 (i32.add (local.get 0) (i32.const 1)))
                 (br_if 0 (i32.lt_u (local.get 0) (i32.const 100))))))"#,
        limits(),
    );
    assert_eq!(report.result.expect("completes").exit_code, 0);
    assert!(report.stderr_truncated);
    assert_eq!(report.stderr.len(), 4 << 10);
}

#[test]
fn shared_memory_is_an_invalid_module() {
    check(
        r#"(module (memory (export "memory") 1 1 shared) (func (export "_start")))"#,
        limits(),
        ErrorKind::InvalidModule,
        "",
    );
}

#[test]
fn unknown_import_is_named_in_the_error() {
    check(
        r#"(module (import "env" "system" (func)) (memory (export "memory") 1) (func (export "_start")))"#,
        limits(),
        ErrorKind::InvalidModule,
        "imports `env.system`, which the sandbox does not provide",
    );
}

#[test]
fn missing_start_is_an_invalid_module() {
    check(
        r#"(module (memory (export "memory") 1) (func (export "main")))"#,
        limits(),
        ErrorKind::InvalidModule,
        "no `_start` function",
    );
}

#[test]
fn malformed_bytes_are_an_invalid_module() {
    let sandbox = sandbox();
    for bytes in [
        &b""[..],
        b"\0asm",
        b"not wasm at all",
        b"\0asm\x01\0\0\0\xff\xff",
    ] {
        let (kind, _) = failure(&run_bytes(&sandbox, bytes, limits()));
        assert_eq!(kind, ErrorKind::InvalidModule);
    }
    assert_still_serves(&sandbox);
}

#[test]
fn oversize_module_is_refused_before_compiling() {
    let sandbox = Sandbox::new(SandboxConfig {
        module_bytes_max: 64,
        memory_bytes_ceiling: 1 << 30,
        concurrent_tasks_max: 2,
        ..SandboxConfig::default()
    })
    .expect("sandbox");
    let bytes = wat::parse_str(HELLO).expect("wat");
    let (kind, message) = failure(&run_bytes(&sandbox, &bytes, limits()));
    assert_eq!(kind, ErrorKind::InvalidModule);
    assert!(message.contains("above the limit of 64 bytes"), "{message}");
}

#[test]
fn a_trap_is_reported_with_its_cause() {
    check(
        r#"(module (memory (export "memory") 1) (func (export "_start") unreachable))"#,
        limits(),
        ErrorKind::Trap,
        "unreachable",
    );
}

#[test]
fn proc_exit_is_a_normal_result_with_its_code() {
    let sandbox = sandbox();
    let report = run_wat(
        &sandbox,
        r#"(module
             (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
             (memory (export "memory") 1)
             (func (export "_start") (call $exit (i32.const 42))))"#,
        limits(),
    );
    assert_eq!(report.result.expect("completes").exit_code, 42);
}

#[test]
fn sleeping_returns_at_once_instead_of_blocking_the_host() {
    // poll_oneoff on a one-hour relative clock subscription.
    let sandbox = sandbox();
    let report = run_wat(
        &sandbox,
        r#"(module
             (import "wasi_snapshot_preview1" "poll_oneoff" (func $poll (param i32 i32 i32 i32) (result i32)))
             (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
             (memory (export "memory") 1)
             (func (export "_start")
               (i64.store (i32.const 0) (i64.const 77))
               (i32.store8 (i32.const 8) (i32.const 0))
               (i32.store (i32.const 16) (i32.const 1))
               (i64.store (i32.const 24) (i64.const 3600000000000))
               (call $exit
                 (i32.add
                   (i32.mul (call $poll (i32.const 0) (i32.const 64) (i32.const 1) (i32.const 128)) (i32.const 100))
                   (i32.add (i32.load (i32.const 128)) (i32.wrap_i64 (i64.load (i32.const 64))))))))"#,
        TaskLimits {
            wall_time: Duration::from_secs(30),
            ..limits()
        },
    );
    // errno 0, one event, userdata 77 echoed back.
    assert_eq!(report.result.expect("completes").exit_code, 78);
    assert!(report.duration < Duration::from_secs(30));
}

#[test]
fn output_files_beyond_the_budget_never_reach_the_disk() {
    let sandbox = sandbox();
    let output = tempfile::tempdir().expect("tempdir");
    // Opens /output/big (path at 200, preopen fd 3) and writes 64 KiB forever.
    let wat = r#"
      (module
        (import "wasi_snapshot_preview1" "path_open"
          (func $open (param i32 i32 i32 i32 i32 i64 i64 i32 i32) (result i32)))
        (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
        (memory (export "memory") 2)
        (data (i32.const 200) "big")
        (func (export "_start") (local $fd i32)
          (drop (call $open (i32.const 3) (i32.const 0) (i32.const 200) (i32.const 3)
                  (i32.const 1) (i64.const 536870911) (i64.const 536870911) (i32.const 0) (i32.const 300)))
          (local.set $fd (i32.load (i32.const 300)))
          (i32.store (i32.const 0) (i32.const 1024))
          (i32.store (i32.const 4) (i32.const 65536))
          (loop (drop (call $fd_write (local.get $fd) (i32.const 0) (i32.const 1) (i32.const 8))) (br 0))))"#;
    let task = TaskSpec {
        output_dir: Some(output.path().to_path_buf()),
        limits: TaskLimits {
            fuel: 10_000_000_000,
            ..limits()
        },
        ..TaskSpec::default()
    };
    let report = sandbox
        .run_module(&wat::parse_str(wat).expect("wat"), &task)
        .expect("runs");
    let (kind, message) = failure(&report);
    assert_eq!(kind, ErrorKind::OutputLimit, "{message}");
    let written = std::fs::metadata(output.path().join("big"))
        .expect("the file exists")
        .len();
    assert!(written <= 1 << 20, "{written} bytes reached the disk");
    assert_still_serves(&sandbox);
}

#[test]
fn many_tasks_in_a_row_do_not_leak_instance_slots() {
    let sandbox = sandbox();
    for _ in 0..50 {
        run_wat(
            &sandbox,
            r#"(module (memory (export "memory") 1) (func (export "_start") unreachable))"#,
            limits(),
        );
    }
    assert_still_serves(&sandbox);
}

#[test]
fn a_task_finds_nothing_a_previous_task_left_in_memory() {
    // One slot, so every task reuses the memory the one before dirtied:
    // below the part kept resident between tasks (zeroed in place), above
    // it (given back to the kernel), and its data segment.
    let sandbox = Sandbox::new(SandboxConfig {
        memory_bytes_ceiling: 1 << 30,
        concurrent_tasks_max: 1,
        ..SandboxConfig::default()
    })
    .expect("sandbox");
    let snoop = r#"
(module
  (memory (export "memory") 1)
  (data (i32.const 16) "hello\n")
  (func (export "_start")
    (if (i32.ne (memory.size) (i32.const 1)) (then unreachable))
    (drop (memory.grow (i32.const 39)))
    (if (i32.ne (i32.load8_u (i32.const 16)) (i32.const 104)) (then unreachable))
    (if (i32.ne (i32.load (i32.const 102400)) (i32.const 0)) (then unreachable))
    (if (i32.ne (i32.load (i32.const 2097152)) (i32.const 0)) (then unreachable))
    (if (i32.ne (i32.load (i32.const 2555900)) (i32.const 0)) (then unreachable))
    (i32.store8 (i32.const 16) (i32.const 0))
    (i32.store (i32.const 102400) (i32.const -1))
    (i32.store (i32.const 2097152) (i32.const -1))
    (i32.store (i32.const 2555900) (i32.const -1))))
"#;
    for round in 0..5 {
        let report = run_wat(&sandbox, snoop, limits());
        let completion = report
            .result
            .unwrap_or_else(|error| panic!("round {round} saw leftovers: {error:?}"));
        assert_eq!(completion.exit_code, 0);
    }
    assert_still_serves(&sandbox);
}
