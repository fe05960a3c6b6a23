//! Fuel and the wall clock metered in the module (`idlegrid_sandbox::meter`):
//! the same fuel as wasmtime's metering, run for run and trap for trap; the
//! backstop stops loops in `_start` and in a start function; modules cannot
//! reach the metering's parts.

use std::path::Path;
use std::time::Duration;

#[path = "common/smith.rs"]
mod smith;

use idlegrid_sandbox::meter::metered_like_wasmtime;
use idlegrid_sandbox::nan::Verdict;
use idlegrid_sandbox::{
    ErrorKind, Metering, Nans, Sandbox, SandboxConfig, TaskLimits, TaskReport, TaskSpec,
};

fn sandbox(metering: Metering, nans: Nans) -> Sandbox {
    Sandbox::new(SandboxConfig {
        metering,
        nans,
        concurrent_tasks_max: 2,
        ..SandboxConfig::default()
    })
    .expect("sandbox")
}

fn run(sandbox: &Sandbox, bytes: &[u8], args: &[&str], limits: TaskLimits) -> TaskReport {
    let task = TaskSpec {
        args: args.iter().map(|arg| (*arg).to_owned()).collect(),
        limits,
        ..TaskSpec::default()
    };
    sandbox.run_module(bytes, &task).expect("the host runs it")
}

fn limits(fuel: u64, wall_time: Duration) -> TaskLimits {
    TaskLimits {
        fuel,
        wall_time,
        ..TaskLimits::default()
    }
}

fn failure(report: &TaskReport) -> ErrorKind {
    match &report.result {
        Err(error) => error.kind,
        Ok(completion) => panic!("expected a failure, it exited {}", completion.exit_code),
    }
}

/// Control flow of every kind the metering settles at: loops, branches out
/// of blocks and to the function's own label, `br_table`, `if`/`else`,
/// calls (direct and indirect), early returns, traps mid-block; and
/// (`carried`) blocks that several branches leave with different costs
/// behind them, and `if`s without `else` whose arm costs something;
/// (`bulk`) bulk operators, which cost their length; and (`counted`)
/// loops counted to a constant, whose heads check only the fuel.
const CONTROL: &str = r#"
(module
  (memory (export "memory") 1)
  (table 2 funcref)
  (elem (i32.const 0) $double $early)
  (type $unary (func (param i32) (result i32)))
  (global $g (mut i32) (i32.const 7))
  (func $double (param i32) (result i32) (i32.mul (local.get 0) (i32.const 2)))
  (func $early (param i32) (result i32)
    (if (i32.gt_u (local.get 0) (i32.const 100)) (then (return (i32.const 100))))
    (drop (br_if 0 (i32.const -1) (i32.eqz (local.get 0))))
    (i32.add (local.get 0) (i32.const 1)))
  (func $switch (export "switch") (param i32) (result i32)
    (block $a (block $b (block $c
      (br_table $a $b $c $a (local.get 0)))
      (return (i32.const 30)))
      (return (i32.const 20)))
    (i32.const 10))
  (func (export "loops") (result i32)
    (local $i i32) (local $sum i32)
    (loop $again
      (local.set $sum (i32.add (local.get $sum)
        (call_indirect (type $unary) (local.get $i) (i32.rem_u (local.get $i) (i32.const 2)))))
      (local.set $sum (i32.add (local.get $sum) (call $switch (i32.rem_u (local.get $i) (i32.const 5)))))
      (if (i32.and (local.get $i) (i32.const 1))
        (then (global.set $g (i32.add (global.get $g) (i32.const 1))))
        (else (i32.store (i32.const 0) (local.get $sum))))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br_if $again (i32.lt_u (local.get $i) (i32.const 1000))))
    (local.get $sum))
  (func (export "carried") (result i32)
    (local $i i32) (local $acc i32)
    (loop $again
      (block $out
        (block $mid
          (br_if $mid (i32.eqz (i32.rem_u (local.get $i) (i32.const 3))))
          (local.set $acc (i32.add (local.get $acc) (i32.const 1)))
          (br_if $out (i32.eq (i32.rem_u (local.get $i) (i32.const 3)) (i32.const 1)))
          (local.set $acc (i32.add (local.get $acc) (i32.const 2)))
          (local.set $acc (i32.mul (local.get $acc) (i32.const 3)))
          (br_if $mid (i32.const 1))
          (local.set $acc (i32.const 0)))
        (if (i32.and (local.get $i) (i32.const 4))
          (then (local.set $acc (i32.xor (local.get $acc) (i32.mul (local.get $i) (i32.const 7))))))
        (local.set $acc (i32.add (local.get $acc)
          (block (result i32)
            (drop (br_if 0 (i32.const 5) (i32.and (local.get $i) (i32.const 8))))
            (i32.const 9))))
        (local.get $acc)
        (if (param i32) (result i32) (i32.and (local.get $i) (i32.const 16))
          (then (i32.add (i32.const 11))))
        (local.set $acc))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br_if $again (i32.lt_u (local.get $i) (i32.const 300))))
    (local.get $acc))
  (func (export "bulk") (result i32)
    (local $n i32)
    (local.set $n (i32.and (i32.load (i32.const 0)) (i32.const 4095)))
    (memory.fill (i32.const 0) (i32.const 7) (i32.const 100))
    (memory.fill (i32.const 0) (i32.const 9) (i32.const 5000))
    (memory.fill (i32.const 100) (i32.const 3) (i32.and (local.get $n) (i32.const 1023)))
    (memory.copy (i32.const 2000) (i32.const 0) (i32.add (local.get $n) (i32.const 24)))
    (memory.init $text (i32.const 3000) (i32.const 0) (i32.const 11))
    (memory.init $text (i32.const 3100) (i32.const 2) (i32.shr_u (local.get $n) (i32.const 29)))
    (table.copy (i32.const 0) (i32.const 0) (i32.const 2))
    (drop (table.grow (ref.null func) (i32.const 3)))
    (table.fill (i32.const 2) (ref.null func) (i32.sub (table.size) (i32.const 2)))
    (table.init $fns (i32.const 2) (i32.const 0) (i32.and (local.get $n) (i32.const 1)))
    (drop (memory.grow (i32.wrap_i64 (i64.const 1))))
    (drop (memory.grow (i32.const 0)))
    (i32.add (i32.load (i32.const 2500)) (i32.load (i32.const 3100))))
  (func (export "counted") (result i32)
    (local $i i32) (local $j i32) (local $acc i32)
    (local.set $i (i32.const 0))
    (loop $rows
      (local.set $acc (i32.add (local.get $acc) (local.get $i)))
      (local.set $i (i32.add (local.get $i) (i32.const 4)))
      (br_if $rows (i32.ne (local.get $i) (i32.const 192))))
    (local.set $j (i32.const 0))
    (block $done
      (loop $rounds
        (br_if $done (i32.eq (local.get $j) (i32.const 63)))
        (if (i32.and (local.get $j) (i32.const 1))
          (then (local.set $acc (i32.xor (local.get $acc) (i32.mul (local.get $j) (i32.const 31))))))
        (local.set $j (i32.add (local.get $j) (i32.const 1)))
        (br $rounds)))
    (local.get $acc))
  (func (export "trap_midway") (result i32)
    (local $i i32)
    (loop $again
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (drop (i32.div_u (i32.const 1) (i32.sub (i32.const 50) (local.get $i))))
      (br $again))
    (i32.const 0))
  (func (export "unreachable_midway") (result i32)
    (drop (call $double (i32.const 3)))
    (unreachable))
  (func $recurse (export "recurse") (param i32) (result i32)
    (if (result i32) (i32.eqz (local.get 0))
      (then (i32.const 0))
      (else (i32.add (i32.const 1) (call $recurse (i32.sub (local.get 0) (i32.const 1)))))))
  (data $text "hello world")
  (elem $fns func $double $early)
  (func $start (global.set $g (call $double (global.get $g))))
  (start $start))
"#;

#[test]
fn hand_written_control_flow_uses_the_fuel_wasmtime_meters() {
    let bytes = wat::parse_str(CONTROL).expect("wat");
    assert_eq!(metered_like_wasmtime(&bytes), Verdict::Same);
}

fn smith_config() -> wasm_smith::Config {
    wasm_smith::Config {
        max_instructions: 300,
        ..smith::config(true)
    }
}

#[test]
fn random_modules_use_the_fuel_wasmtime_meters_and_run_out_at_the_same_check() {
    let (mut same, mut out_of_fuel) = (0, 0);
    for seed in 0..400u64 {
        let mut bytes = vec![0u8; 4096];
        let mut state = blake3::Hasher::new();
        state.update(b"metering");
        state.update(&seed.to_le_bytes());
        state.finalize_xof().fill(&mut bytes);
        let mut unstructured = arbitrary::Unstructured::new(&bytes);
        let Ok(module) = wasm_smith::Module::new(smith_config(), &mut unstructured) else {
            continue;
        };
        match metered_like_wasmtime(&module.to_bytes()) {
            Verdict::Same => same += 1,
            Verdict::RanOutOfFuel => out_of_fuel += 1,
            Verdict::Unusable(_) => {}
            Verdict::Broken(why) => panic!("seed {seed}: {why}"),
        }
    }
    assert!(same > 100, "only {same} modules ran to the end");
    assert!(out_of_fuel > 0, "no module ran out of fuel");
}

fn example(name: &str) -> Vec<u8> {
    let path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("../../examples/{name}/{name}.wasm"));
    std::fs::read(&path).unwrap_or_else(|error| panic!("{}: {error}", path.display()))
}

/// wasmtime's metering also charges the global initializers it compiles
/// when a module is instantiated; this metering leaves instantiation free.
const INSTANTIATION_FUEL_MAX: u64 = 16;

#[test]
fn examples_use_the_fuel_wasmtime_meters_and_stop_at_their_budget() {
    let cases: [(&str, &[&str]); 4] = [
        ("pi", &["20000", "7"]),
        ("mandelbrot", &["48", "32", "0", "0", "48", "200"]),
        ("nbody", &["2000"]),
        ("hashgrind", &["3000"]),
    ];
    let theirs = sandbox(Metering::Wasmtime, Nans::Off);
    let ours = sandbox(Metering::InModule, Nans::Off);
    let ours_observed = sandbox(Metering::InModule, Nans::Observed);
    let ample = limits(50_000_000_000, Duration::from_secs(60));
    for (name, args) in cases {
        let bytes = example(name);
        let reference = run(&theirs, &bytes, args, ample);
        let stdout = &reference.result.as_ref().expect("runs").output.stdout;
        let report = run(&ours, &bytes, args, ample);
        let used = report.fuel_used;
        assert!(
            used <= reference.fuel_used && reference.fuel_used - used <= INSTANTIATION_FUEL_MAX,
            "{name}: {used} metered in the module, {} by wasmtime",
            reference.fuel_used
        );
        assert_eq!(
            &report.result.expect("runs").output.stdout,
            stdout,
            "{name}"
        );
        // The NaN rewrite's instructions are free.
        let report = run(&ours_observed, &bytes, args, ample);
        assert_eq!(report.fuel_used, used, "{name}");
        assert_eq!(
            &report.result.expect("runs").output.stdout,
            stdout,
            "{name}"
        );
        // Half the fuel: stopped, billed the whole budget, every time.
        let half = limits(used / 2, Duration::from_secs(60));
        for _ in 0..2 {
            let report = run(&ours, &bytes, args, half);
            assert_eq!(failure(&report), ErrorKind::OutOfFuel, "{name}");
            assert_eq!(report.fuel_used, half.fuel, "{name}");
        }
    }
}

/// With all the fuel there is, a task that never ends stops at its
/// wall-clock limit, soon after it.
fn stops_at_the_wall_clock(bytes: &[u8], wall_time: Duration) {
    let sandbox = sandbox(Metering::InModule, Nans::Observed);
    let report = run(&sandbox, bytes, &[], limits(u64::MAX, wall_time));
    assert_eq!(failure(&report), ErrorKind::WallTimeout);
    assert!(
        report.duration < Duration::from_secs(10),
        "{:?}",
        report.duration
    );
}

/// With less fuel than it needs, a task stops out of fuel and is billed
/// all of it.
fn stops_out_of_fuel(bytes: &[u8], fuel: u64) {
    let sandbox = sandbox(Metering::InModule, Nans::Observed);
    let report = run(&sandbox, bytes, &[], limits(fuel, Duration::from_secs(60)));
    assert_eq!(failure(&report), ErrorKind::OutOfFuel);
    assert_eq!(report.fuel_used, fuel);
}

#[test]
fn a_start_function_that_never_ends_hits_the_wall_clock_backstop() {
    let bytes = wat::parse_str(
        r#"(module (memory (export "memory") 1)
             (func $forever (loop (br 0)))
             (start $forever)
             (func (export "_start")))"#,
    )
    .expect("wat");
    stops_at_the_wall_clock(&bytes, Duration::from_millis(200));
    stops_out_of_fuel(&bytes, 1_000_000);
}

/// A loop counted to a constant checks only the fuel at its head, but the
/// endless loop around it still reads the wall clock.
#[test]
fn an_endless_loop_around_counted_loops_hits_the_wall_clock_backstop() {
    let bytes = wat::parse_str(
        r#"(module (memory (export "memory") 1)
             (func (export "_start") (local $i i32) (local $acc i32)
               (loop $forever
                 (local.set $i (i32.const 0))
                 (loop $inner
                   (local.set $acc (i32.add (local.get $acc) (local.get $i)))
                   (local.set $i (i32.add (local.get $i) (i32.const 1)))
                   (br_if $inner (i32.ne (local.get $i) (i32.const 1000))))
                 (i32.store (i32.const 0) (local.get $acc))
                 (br $forever))))"#,
    )
    .expect("wat");
    stops_at_the_wall_clock(&bytes, Duration::from_millis(200));
    // With fuel for a part of it, both meterings run out, and the task is
    // billed its whole budget.
    assert_eq!(metered_like_wasmtime(&bytes), Verdict::RanOutOfFuel);
    stops_out_of_fuel(&bytes, 1_234_567);
}

/// Functions that call others check the wall clock at their entry, so a
/// tree of calls with no loop (each level calling the next eight times,
/// 8^12 calls in all) is stopped too.
#[test]
fn a_tree_of_calls_without_loops_hits_the_wall_clock_backstop() {
    let mut wat =
        String::from(r#"(module (memory (export "memory") 1) (global $n (mut i64) (i64.const 0))"#);
    for level in 0..12 {
        let calls = format!("(call $f{})", level + 1).repeat(8);
        wat.push_str(&format!("(func $f{level} {calls})"));
    }
    wat.push_str(r#"(func $f12 (global.set $n (i64.add (global.get $n) (i64.const 1))))"#);
    wat.push_str(r#"(func (export "_start") (call $f0)))"#);
    let bytes = wat::parse_str(&wat).expect("wat");
    stops_at_the_wall_clock(&bytes, Duration::from_millis(300));
}

#[test]
fn a_start_function_runs_before_start_and_is_billed() {
    let bytes = wat::parse_str(
        r#"(module
             (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
             (memory (export "memory") 1)
             (data (i32.const 16) "xy")
             (func $first (i32.store8 (i32.const 16) (i32.const 97)))
             (start $first)
             (func (export "_start")
               (i32.store (i32.const 0) (i32.const 16))
               (i32.store (i32.const 4) (i32.const 2))
               (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))))"#,
    )
    .expect("wat");
    let ample = limits(1_000_000, Duration::from_secs(60));
    let ours = run(
        &sandbox(Metering::InModule, Nans::Observed),
        &bytes,
        &[],
        ample,
    );
    assert_eq!(ours.result.expect("runs").output.stdout, b"ay");
    // The start function: entering it and three operators; `_start`:
    // entering it and eleven operators up to and including the call.
    assert_eq!(ours.fuel_used, 4 + 12);
}

#[test]
fn a_wall_clock_limit_past_what_the_clock_counts_to_is_no_limit() {
    let bytes = wat::parse_str(
        r#"(module (memory (export "memory") 1)
             (func (export "_start") (local i32)
               (loop (br_if 0 (i32.lt_u (local.tee 0 (i32.add (local.get 0) (i32.const 1))) (i32.const 1000))))))"#,
    )
    .expect("wat");
    let sandbox = sandbox(Metering::InModule, Nans::Observed);
    let report = run(&sandbox, &bytes, &[], limits(1_000_000, Duration::MAX));
    assert_eq!(report.result.expect("runs").exit_code, 0);
}

#[test]
fn a_task_cannot_reach_the_metering() {
    let sandbox = sandbox(Metering::InModule, Nans::Observed);
    let ample = limits(1_000_000, Duration::from_secs(60));
    // Its names are kept.
    for name in [
        "idlegrid:fuel",
        "idlegrid:stopped",
        "idlegrid:interrupt",
        "idlegrid:start",
    ] {
        let bytes = wat::parse_str(format!(
            r#"(module (memory (export "memory") 1) (global (export "{name}") i32 (i32.const 0))
                 (func (export "_start")))"#
        ))
        .expect("wat");
        let report = run(&sandbox, &bytes, &[], ample);
        assert_eq!(failure(&report), ErrorKind::InvalidModule, "{name}");
    }
    // A second memory, which would be the interrupt page's index, is refused.
    let bytes = wat::parse_str(
        r#"(module (memory (export "memory") 1) (memory $floor 1)
             (func (export "_start") (i64.store $floor (i32.const 0) (i64.const -1))))"#,
    )
    .expect("wat");
    let report = run(&sandbox, &bytes, &[], ample);
    assert_eq!(failure(&report), ErrorKind::InvalidModule);
}

#[test]
fn a_bulk_operator_costs_its_length_and_stops_where_fuel_runs_out() {
    let bytes = wat::parse_str(
        r#"(module
             (memory (export "memory") 2)
             (func (export "_start")
               (memory.fill (i32.const 0) (i32.const 1) (i32.const 60000))))"#,
    )
    .expect("wat");
    // Entering `_start`, three constants, the fill, and a byte each.
    let expected = 1 + 3 + 1 + 60_000;
    for metering in [Metering::InModule, Metering::Wasmtime] {
        let report = run(
            &sandbox(metering, Nans::Observed),
            &bytes,
            &[],
            limits(1_000_000, Duration::from_secs(60)),
        );
        report.result.as_ref().expect("runs");
        assert_eq!(report.fuel_used, expected, "{metering:?}");
        let short = run(
            &sandbox(metering, Nans::Observed),
            &bytes,
            &[],
            limits(50_000, Duration::from_secs(60)),
        );
        assert_eq!(failure(&short), ErrorKind::OutOfFuel, "{metering:?}");
    }
}
