//! The `idlegrid-sim` binary end to end: report, CSV and chart.

use std::process::Command;

fn sim() -> Command {
    Command::new(env!("CARGO_BIN_EXE_idlegrid-sim"))
}

#[test]
fn a_run_writes_its_report_csv_and_chart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let csv = dir.path().join("run.csv");
    let png = dir.path().join("run.png");
    let output = sim()
        .args([
            "--devices",
            "200",
            "--tasks",
            "2000",
            "--seed",
            "4",
            "--json",
        ])
        .arg("--csv")
        .arg(&csv)
        .arg("--plot")
        .arg(&png)
        .output()
        .expect("run idlegrid-sim");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report: serde_json::Value =
        serde_json::from_slice(&output.stdout).expect("one JSON object");
    assert_eq!(report["finished"], true);
    assert_eq!(report["tasks"], 2000);
    assert_eq!(
        report["tasks_accepted"].as_u64().map(|n| n <= 2000),
        Some(true)
    );
    assert!(
        report["overhead"]
            .as_f64()
            .is_some_and(|overhead| overhead >= 1.0)
    );
    assert_eq!(report["policy"], "adaptive");
    assert_eq!(report["trust"]["after"], 10);
    assert_eq!(report["violations"].as_array().map(Vec::len), Some(0));

    let text = std::fs::read_to_string(&csv).expect("csv");
    let mut lines = text.lines();
    let header = lines.next().expect("header");
    assert!(header.starts_with("time_s,tasks_accepted,tasks_failed,fuel_executed"));
    let rows: Vec<&str> = lines.collect();
    assert!(rows.len() > 3);
    let columns = header.split(',').count();
    assert!(rows.iter().all(|row| row.split(',').count() == columns));

    let chart = std::fs::read(&png).expect("png");
    assert!(chart.starts_with(b"\x89PNG\r\n\x1a\n"));
}

#[test]
fn bad_arguments_are_refused_with_a_reason() {
    for args in [
        &["--policy", "replicas=0"][..],
        &["--policy", "majority"],
        &["--cheaters", "1.5"],
        &["--cheat-with", "lying"],
        &["--latency-ms", "90-10"],
        &["--devices", "0"],
    ] {
        let output = sim().args(args).output().expect("run idlegrid-sim");
        assert_eq!(output.status.code(), Some(2), "{args:?}");
        assert!(!output.stderr.is_empty(), "{args:?}");
    }
}
