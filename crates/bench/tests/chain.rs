//! `idlegrid-bench chain` on a machine faster than its transfers were
//! sized for: a 16-core machine ran out of pre-signed transfers, the
//! bench returned its error and removed the validators' directories while
//! they still ran, and a validator panicked pruning a consensus journal
//! whose file was gone. Capping the transfers takes the same path on any
//! machine.

use std::process::Command;

#[test]
fn a_chain_bench_that_runs_out_of_transfers_stops_its_validators_before_their_files_go() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let output = Command::new(env!("CARGO_BIN_EXE_idlegrid-bench"))
        .args(["chain", "--quick", "--transfers-max", "2000", "--dir"])
        .arg(dir.path())
        .output()
        .expect("the bench runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!stderr.contains("panicked"), "a thread panicked:\n{stderr}");
    assert!(
        !output.status.success(),
        "2,000 transfers, one per sender, cannot last the warm-up:\n{stderr}"
    );
    assert!(
        stderr.contains("used up the 2000 pre-signed transfers before half the window"),
        "the bench says why it stopped:\n{stderr}"
    );
    let left: Vec<_> = std::fs::read_dir(dir.path())
        .expect("the directory is readable")
        .collect();
    assert!(
        left.is_empty(),
        "every testnet's files were removed: {left:?}"
    );
}
