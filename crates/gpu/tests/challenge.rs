//! The GPU capacity challenge: batches on lavapipe and on the CPU path
//! find exactly the nonces a host scan with `gpu_challenge_score` finds,
//! cost exactly their invocations times the chain's fuel per invocation,
//! and a solve gives an answer the chain accepts, or a clear error.

use std::time::Duration;

use idlegrid_gpu::challenge::{
    WORKGROUP_INVOCATIONS, batch_program, batch_workgroups, benchmark_run, search, solve,
};
use idlegrid_gpu::{Cpu, Executor, Gpu, GpuError, Program};
use idlegrid_types::capacity::{
    GPU_CHALLENGE_ATTEMPTS_PER_INVOCATION, GPU_CHALLENGE_FUEL_PER_INVOCATION,
    GPU_CHALLENGE_SOLUTIONS, gpu_answer_is_right, gpu_challenge_score, gpu_challenge_target,
};

const TIMEOUT: Duration = Duration::from_secs(120);
const SEED: [u8; 32] = *b"a seed the challenge tests share";

fn gpu() -> Gpu {
    Gpu::open(None).unwrap_or_else(|error| panic!("{error}"))
}

fn attempts(workgroups: u32) -> u64 {
    u64::from(workgroups)
        * u64::from(WORKGROUP_INVOCATIONS)
        * u64::from(GPU_CHALLENGE_ATTEMPTS_PER_INVOCATION)
}

/// The nonces from `base` (wrapping past `u64::MAX`) that a batch of
/// `workgroups` tries and that score below `target`, in the order it
/// tries them.
fn host_scan(seed: &[u8; 32], target: u64, base: u64, workgroups: u32) -> Vec<u64> {
    (0..attempts(workgroups))
        .map(|offset| base.wrapping_add(offset))
        .filter(|nonce| gpu_challenge_score(seed, *nonce) < target)
        .collect()
}

/// Runs one batch on `executor`, asserts it finds what the host scan
/// finds at the fuel the chain counts, and gives its nonces and fuel.
fn check_batch(
    executor: &dyn Executor,
    target: u64,
    base: u64,
    workgroups: u32,
) -> (Vec<u64>, u64) {
    let found = search(executor, &SEED, target, base, workgroups, TIMEOUT)
        .unwrap_or_else(|error| panic!("target {target:#x}, base {base:#x}: {error}"));
    assert_eq!(
        found.nonces,
        host_scan(&SEED, target, base, workgroups),
        "target {target:#x}, base {base:#x}"
    );
    assert_eq!(found.attempts, attempts(workgroups));
    let invocations = u64::from(workgroups) * u64::from(WORKGROUP_INVOCATIONS);
    assert_eq!(
        found.fuel_used,
        invocations * GPU_CHALLENGE_FUEL_PER_INVOCATION
    );
    (found.nonces, found.fuel_used)
}

#[test]
fn a_batch_on_lavapipe_finds_every_hit_a_host_scan_finds_and_no_other() {
    let gpu = gpu();
    let workgroups = 4;
    let per_batch = attempts(workgroups);
    for target in [u64::MAX / 64, u64::MAX / 4, 1 << 50] {
        for batch in 0..3 {
            check_batch(&gpu, target, batch * per_batch, workgroups);
        }
    }
    // About 64 hits an invocation: every one of them but the first is
    // recovered by the host's rescan.
    let (many, _) = check_batch(&gpu, u64::MAX / 4, 0, 1);
    assert!(
        many.len() > 30 * WORKGROUP_INVOCATIONS as usize,
        "{}",
        many.len()
    );
}

#[test]
fn nonces_carry_into_the_high_word_and_wrap_past_the_last_nonce() {
    let gpu = gpu();
    // The first invocation's range crosses 2^32 (a carry between two of
    // its attempts), the later ones start past it (a carry into their
    // start); the second batch wraps past `u64::MAX` to zero.
    for base in [(1 << 32) - 100, u64::MAX - 1_000] {
        let (nonces, _) = check_batch(&gpu, u64::MAX / 16, base, 2);
        let high_words: Vec<u64> = nonces.iter().map(|nonce| nonce >> 32).collect();
        assert!(high_words.contains(&(base >> 32)), "{base:#x}");
        assert!(
            high_words.contains(&(((base >> 32) + 1) & 0xFFFF_FFFF)),
            "{base:#x}"
        );
    }
}

#[test]
fn the_cpu_path_finds_the_same_nonces_at_the_same_fuel_as_lavapipe() {
    let gpu = gpu();
    let (target, base) = (u64::MAX / 8, (1 << 32) - 3_000);
    let on_gpu = check_batch(&gpu, target, base, 1);
    let on_cpu = check_batch(&Cpu, target, base, 1);
    assert_eq!(on_cpu, on_gpu);
}

#[test]
fn a_batch_costs_its_invocations_times_the_chain_s_fuel_per_invocation() {
    let gpu = gpu();
    for workgroups in [1, 3, 64] {
        let fuel = benchmark_run(&gpu, workgroups, TIMEOUT).expect("runs");
        assert_eq!(
            fuel,
            u64::from(workgroups)
                * u64::from(WORKGROUP_INVOCATIONS)
                * GPU_CHALLENGE_FUEL_PER_INVOCATION,
            "{workgroups} workgroups"
        );
    }
    // No hit at all or a hit at every nonce: the fuel does not depend on
    // the hits. (`check_batch` checks the fuel on the CPU path too.)
    check_batch(&gpu, 0, 0, 2);
    check_batch(&gpu, u64::MAX, 0, 2);
}

#[test]
fn a_nonce_hits_only_a_target_above_its_score() {
    let gpu = gpu();
    let nonce = 1_000;
    let score = gpu_challenge_score(&SEED, nonce);
    let (low, high) = (score & 0xFFFF_FFFF, score >> 32);
    // Equal to the target, equal in the high word with the low word
    // below or above, and one above: strictly below is a hit.
    for (target, hit) in [
        (score, false),
        (score + 1, true),
        (high << 32, false),
        ((high << 32) | 0xFFFF_FFFF, low < 0xFFFF_FFFF),
        ((high + 1) << 32, true),
    ] {
        let (nonces, _) = check_batch(&gpu, target, 0, 1);
        assert_eq!(nonces.contains(&nonce), hit, "target {target:#x}");
    }
}

#[test]
fn a_solve_gives_the_first_solutions_and_the_chain_accepts_them() {
    let gpu = gpu();
    let target = gpu_challenge_target(1_000_000);
    let found = solve(&gpu, &SEED, target, 20_000_000, TIMEOUT).expect("solves");
    assert!(gpu_answer_is_right(&SEED, target, &found.nonces));
    let first: Vec<u64> = (0..)
        .filter(|nonce| gpu_challenge_score(&SEED, *nonce) < target)
        .take(GPU_CHALLENGE_SOLUTIONS as usize)
        .collect();
    assert_eq!(found.nonces, first);
    // Whole batches, the last one reaching the last solution.
    let per_batch = attempts(batch_workgroups(20_000_000));
    assert_eq!(found.attempts % per_batch, 0);
    assert!(found.attempts > *first.last().expect("solutions"));
    assert!(found.attempts - per_batch <= *first.last().expect("solutions"));
    assert_eq!(
        found.fuel_used,
        found.attempts / u64::from(GPU_CHALLENGE_ATTEMPTS_PER_INVOCATION)
            * GPU_CHALLENGE_FUEL_PER_INVOCATION
    );
}

#[test]
fn a_solve_that_cannot_finish_in_time_fails_with_the_wall_timeout() {
    let gpu = gpu();
    let timeout = Duration::from_millis(300);
    // No nonce scores below zero: batches run until the time is up.
    match solve(&gpu, &SEED, 0, 10_000_000, timeout) {
        Err(GpuError::WallTimeout(limit)) => assert_eq!(limit, timeout),
        other => panic!("expected a wall timeout, got {other:?}"),
    }
    match solve(&gpu, &SEED, u64::MAX, 10_000_000, Duration::ZERO) {
        Err(GpuError::WallTimeout(limit)) => assert_eq!(limit, Duration::ZERO),
        other => panic!("expected a wall timeout, got {other:?}"),
    }
}

#[test]
fn batches_out_of_bounds_are_errors_and_batch_sizes_follow_the_speed() {
    let gpu = gpu();
    for workgroups in [0, 65_536, u32::MAX] {
        assert!(matches!(
            search(&gpu, &SEED, u64::MAX, 0, workgroups, TIMEOUT),
            Err(GpuError::Dispatch(_))
        ));
        assert!(matches!(
            benchmark_run(&Cpu, workgroups, TIMEOUT),
            Err(GpuError::Dispatch(_))
        ));
    }
    assert!(Program::compile(batch_program(&SEED, 1, 0, 65_535)).is_ok());
    assert!(Program::compile(batch_program(&SEED, 1, 0, 65_536)).is_err());
    // A tenth of a second's invocations, in whole workgroups.
    let invocations_per_second = u64::from(WORKGROUP_INVOCATIONS) * 40;
    assert_eq!(
        batch_workgroups(invocations_per_second * GPU_CHALLENGE_FUEL_PER_INVOCATION),
        4
    );
    assert_eq!(batch_workgroups(0), 1);
    assert_eq!(batch_workgroups(u64::MAX), 65_535);
}
