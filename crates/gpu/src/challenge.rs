//! The GPU capacity challenge, solved on a GPU: batches of the BLAKE3
//! proof of work that `idlegrid_types::capacity` defines, run as an
//! exact-class program with the metering every GPU task gets, so a
//! provider's answer costs the same fuel on every device and a
//! benchmark of the same kernel measures its speed in the units the chain
//! times challenges in.
//!
//! Each invocation tries [`GPU_CHALLENGE_ATTEMPTS_PER_INVOCATION`] nonces
//! in one loop and reports its first hit and its number of hits; the host
//! recovers the rest of an invocation's hits by scoring its nonces again,
//! which is cheap because hits are rare, and checks every hit the GPU
//! reports, so a faulty device gives an error instead of a wrong answer.

use std::time::{Duration, Instant};

use idlegrid_types::capacity::{
    GPU_CHALLENGE_ATTEMPTS_PER_INVOCATION, GPU_CHALLENGE_FUEL_PER_INVOCATION,
    GPU_CHALLENGE_SOLUTIONS, gpu_challenge_score,
};
use idlegrid_types::gpu::{GpuBinding, GpuClass, GpuDispatch, GpuProgram};
use idlegrid_types::{Bounded, ExecutionLimits, TaskInput, TaskOutcome};

use crate::{Executor, GpuError, Program, WORKGROUPS_PER_DIMENSION_MAX};

/// The challenge kernel: see its own comments for the bindings.
pub const CHALLENGE_WGSL: &str = include_str!("challenge.wgsl");

/// Invocations in one workgroup of the challenge kernel.
pub const WORKGROUP_INVOCATIONS: u32 = 64;

/// The entry point of [`CHALLENGE_WGSL`].
const ENTRY_POINT: &str = "main";
/// What an invocation reports as its first hit when it has none.
const NO_HIT: u32 = u32::MAX;
/// Output words per invocation: its first hit, its number of hits.
const WORDS_PER_INVOCATION: u64 = 2;
/// How long [`solve`] aims to make one batch run at the speed it is given:
/// short enough that the deadline is checked often and little work runs
/// past the last solution, long enough that a batch's fixed cost (a
/// dispatch, reading its hits back) is small beside its work.
const BATCHES_PER_SECOND: u64 = 10;
/// The seed of [`benchmark_run`]: any fixed value, since every seed and
/// target costs the same fuel.
const BENCHMARK_SEED: [u8; 32] = *b"idlegrid gpu challenge benchmark";

/// What a search found.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Found {
    /// The nonces scoring below the target, in the order they were tried
    /// (nonce order, unless a batch wrapped past `u64::MAX`).
    pub nonces: Vec<u64>,
    /// Nonces tried.
    pub attempts: u64,
    /// The metered fuel of the batches run.
    pub fuel_used: u64,
}

/// One batch of the challenge as a GPU program: `workgroups` workgroups of
/// [`WORKGROUP_INVOCATIONS`] invocations, each trying
/// [`GPU_CHALLENGE_ATTEMPTS_PER_INVOCATION`] nonces from `base` upward (the
/// invocation with index `g` from `base + g * attempts`, wrapping past
/// `u64::MAX`). It fails to compile past
/// [`WORKGROUPS_PER_DIMENSION_MAX`] workgroups, as any program does.
pub fn batch_program(seed: &[u8; 32], target: u64, base: u64, workgroups: u32) -> GpuProgram {
    let mut params = seed.to_vec();
    for value in [target, base] {
        // Low word first, each word little-endian: the value's own bytes.
        params.extend(value.to_le_bytes());
    }
    let output_bytes =
        u64::from(workgroups) * u64::from(WORKGROUP_INVOCATIONS) * WORDS_PER_INVOCATION * 4;
    GpuProgram {
        wgsl: Bounded::new(CHALLENGE_WGSL.to_owned()).expect("the kernel is far below the bound"),
        class: GpuClass::Exact,
        fuel_per_invocation: fuel_per_invocation(),
        bindings: Bounded::new(vec![
            GpuBinding::Shared(Bounded::new(params).expect("48 bytes")),
            GpuBinding::Output(output_bytes),
        ])
        .expect("two bindings"),
        dispatches: Bounded::new(vec![GpuDispatch {
            entry_point: Bounded::new(ENTRY_POINT.to_owned()).expect("a short name"),
            workgroups: [workgroups, 1, 1],
        }])
        .expect("one dispatch"),
    }
}

/// The program's fuel per invocation: exactly what each invocation uses,
/// so the meter (which stops an invocation only once it is past this)
/// never stops the loop over the attempts, and a kernel that looped more
/// would fail instead of being counted.
fn fuel_per_invocation() -> u32 {
    u32::try_from(GPU_CHALLENGE_FUEL_PER_INVOCATION).unwrap_or(u32::MAX)
}

/// Runs one batch (see [`batch_program`]) on `executor` and gives every
/// nonce in it that scores below `target`. Every hit the GPU reports is
/// checked on the host; a disagreement is a [`GpuError::Device`].
pub fn search(
    executor: &dyn Executor,
    seed: &[u8; 32],
    target: u64,
    base: u64,
    workgroups: u32,
    timeout: Duration,
) -> Result<Found, GpuError> {
    if !(1..=WORKGROUPS_PER_DIMENSION_MAX).contains(&workgroups) {
        return Err(GpuError::Dispatch(format!(
            "a challenge batch of {workgroups} workgroups; it takes 1 to \
             {WORKGROUPS_PER_DIMENSION_MAX}"
        )));
    }
    let program = Program::compile(batch_program(seed, target, base, workgroups))?;
    let invocations = u64::from(workgroups) * u64::from(WORKGROUP_INVOCATIONS);
    let attempts_per_invocation = u64::from(GPU_CHALLENGE_ATTEMPTS_PER_INVOCATION);
    // Exactly the fuel the batch takes: a kernel that used more would
    // fail instead of being counted.
    let limits = ExecutionLimits {
        fuel: invocations * GPU_CHALLENGE_FUEL_PER_INVOCATION,
        memory_bytes: u64::MAX,
        output_bytes: u64::MAX,
    };
    let run = program.run(executor, &TaskInput::default(), &limits, timeout)?;
    if let TaskOutcome::Failed(kind) = run.outcome {
        return Err(GpuError::Device(format!(
            "the challenge kernel failed `{kind}` after {} fuel",
            run.fuel_used
        )));
    }
    let mut nonces = Vec::new();
    for (invocation, words) in (0u64..).zip(run.output.chunks_exact(8)) {
        let [first, count] = [&words[..4], &words[4..]]
            .map(|word| u32::from_le_bytes(word.try_into().expect("four bytes")));
        if count == 0 && first == NO_HIT {
            continue;
        }
        let start = base.wrapping_add(invocation * attempts_per_invocation);
        let nonce = |attempt: u64| start.wrapping_add(attempt);
        if count == 1 && first < GPU_CHALLENGE_ATTEMPTS_PER_INVOCATION {
            let hit = nonce(u64::from(first));
            if gpu_challenge_score(seed, hit) < target {
                nonces.push(hit);
                continue;
            }
        }
        // Several hits (only the first is reported), or a report to check
        // against every nonce of the invocation.
        let hits: Vec<u64> = (0..attempts_per_invocation)
            .map(nonce)
            .filter(|hit| gpu_challenge_score(seed, *hit) < target)
            .collect();
        let first_found = hits.first().map(|hit| hit.wrapping_sub(start));
        if hits.len() != count as usize || first_found != Some(u64::from(first)) {
            return Err(GpuError::Device(format!(
                "invocation {invocation} reported {count} hits, the first at {first}; the host \
                 finds {} (first at {first_found:?})",
                hits.len()
            )));
        }
        nonces.extend(hits);
    }
    Ok(Found {
        nonces,
        attempts: invocations * attempts_per_invocation,
        fuel_used: run.fuel_used,
    })
}

/// Workgroups of a batch that runs for about a tenth of a second on a
/// device of `fuel_per_second`: at least one, at most
/// [`WORKGROUPS_PER_DIMENSION_MAX`].
pub fn batch_workgroups(fuel_per_second: u64) -> u32 {
    let invocations = fuel_per_second / BATCHES_PER_SECOND / GPU_CHALLENGE_FUEL_PER_INVOCATION;
    let workgroups = invocations.div_ceil(u64::from(WORKGROUP_INVOCATIONS));
    u32::try_from(workgroups)
        .unwrap_or(u32::MAX)
        .clamp(1, WORKGROUPS_PER_DIMENSION_MAX)
}

/// Answers the challenge `(seed, target)`: the first
/// [`GPU_CHALLENGE_SOLUTIONS`] nonces from zero upward that score below
/// `target`, searched in batches sized by [`batch_workgroups`] for a
/// device of `fuel_per_second`. Past `timeout` in all it stops with
/// [`GpuError::WallTimeout`] (as it must for a target of zero, which no
/// nonce meets).
pub fn solve(
    executor: &dyn Executor,
    seed: &[u8; 32],
    target: u64,
    fuel_per_second: u64,
    timeout: Duration,
) -> Result<Found, GpuError> {
    let deadline = Instant::now().checked_add(timeout);
    let workgroups = batch_workgroups(fuel_per_second);
    let wanted = GPU_CHALLENGE_SOLUTIONS as usize;
    let mut found = Found::default();
    let mut base = 0u64;
    loop {
        let left = match deadline {
            Some(deadline) => deadline.saturating_duration_since(Instant::now()),
            None => timeout,
        };
        if left.is_zero() {
            return Err(GpuError::WallTimeout(timeout));
        }
        let batch = match search(executor, seed, target, base, workgroups, left) {
            Ok(batch) => batch,
            // The batch's limit is what was left of the solve's.
            Err(GpuError::WallTimeout(_)) => return Err(GpuError::WallTimeout(timeout)),
            Err(error) => return Err(error),
        };
        found.nonces.extend(batch.nonces);
        found.attempts += batch.attempts;
        found.fuel_used += batch.fuel_used;
        if found.nonces.len() >= wanted {
            found.nonces.truncate(wanted);
            return Ok(found);
        }
        base = base.checked_add(batch.attempts).ok_or_else(|| {
            GpuError::Dispatch(format!(
                "every nonce was tried and only {} score below {target}",
                found.nonces.len()
            ))
        })?;
    }
}

/// Runs one batch of `workgroups` workgroups over a fixed seed and gives
/// its metered fuel: timed by the caller, it scores a device in fuel per
/// second of the challenge kernel, the units the chain times challenges
/// in.
pub fn benchmark_run(
    executor: &dyn Executor,
    workgroups: u32,
    timeout: Duration,
) -> Result<u64, GpuError> {
    // One hit in 2^32 attempts: a few in a large batch, so the path that
    // reports and checks them runs, while the host's share of the work
    // stays as small as in a real challenge (whose hits are rarer still).
    let target = 1 << 32;
    search(executor, &BENCHMARK_SEED, target, 0, workgroups, timeout).map(|found| found.fuel_used)
}
