//! The capacity challenge: a fixed WASI module that fills 64 MiB from its
//! seed and then reads it back in an order only the filled memory decides,
//! so the answer takes that much memory (or many times the work) and its
//! fuel is known in advance. Providers are timed on it; validators run it
//! again only where two answers disagree. `docs/challenges.md` has the
//! protocol.
//!
//! The module is built here from text, so its bytes (and so its fuel per
//! pass) do not depend on any compiler. Its seed comes from the task's
//! `random_get` stream (the task seed), its pass count from stdin (four
//! bytes, little-endian), and it writes its 64-byte final state to stdout.

use std::sync::OnceLock;
use std::time::Duration;

use idlegrid_types::ContentId;
use idlegrid_types::capacity::{
    CHALLENGE_BLOCKS, CHALLENGE_MEMORY_BYTES, CHALLENGE_PASSES_MAX, challenge_fuel,
};

use crate::{Sandbox, TaskLimits, TaskSpec};

/// The odd multiplier of the mixing function (from the golden ratio).
const MIX_MULTIPLIER: u64 = 0x9e37_79b9_7f4a_7c15;
/// Bits each lane turns by after absorbing its neighbour.
const MIX_ROTATION: u32 = 23;
/// Where the 64-byte blocks start in linear memory.
const BLOCKS_AT: u32 = 65_536;

/// One step of the mixing function over the eight lanes in locals: two
/// rounds in which each lane absorbs the one before it, turns and is
/// multiplied.
fn mix_text() -> String {
    let lanes = ["a", "b", "c", "d", "e", "f", "g", "h"];
    let mut text = String::new();
    for _round in 0..2 {
        for index in 0..lanes.len() {
            let lane = lanes[index];
            let before = lanes[(index + lanes.len() - 1) % lanes.len()];
            text.push_str(&format!(
                "(local.set ${lane} (i64.mul (i64.rotl (i64.xor (local.get ${lane}) \
                 (local.get ${before})) (i64.const {MIX_ROTATION})) \
                 (i64.const {})))\n",
                MIX_MULTIPLIER as i64
            ));
        }
    }
    text
}

fn module_text() -> String {
    let lanes = ["a", "b", "c", "d", "e", "f", "g", "h"];
    let mix = mix_text();
    let pages = (u64::from(BLOCKS_AT) + CHALLENGE_MEMORY_BYTES) / 65_536;
    let mask = CHALLENGE_BLOCKS - 1;
    let mut load_state = String::new();
    let mut store_state = String::new();
    let mut store_block = String::new();
    let mut absorb_block = String::new();
    for (index, lane) in lanes.iter().enumerate() {
        let offset = index * 8;
        load_state.push_str(&format!(
            "(local.set ${lane} (i64.load offset={offset} (i32.const 0)))\n"
        ));
        store_state.push_str(&format!(
            "(i64.store offset={offset} (i32.const 0) (local.get ${lane}))\n"
        ));
        store_block.push_str(&format!(
            "(i64.store offset={offset} (local.get $at) (local.get ${lane}))\n"
        ));
        absorb_block.push_str(&format!(
            "(local.set ${lane} (i64.xor (local.get ${lane}) \
             (i64.load offset={offset} (local.get $at))))\n"
        ));
    }
    format!(
        r#"(module
  (import "wasi_snapshot_preview1" "random_get" (func $random_get (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_read" (func $fd_read (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") {pages} {pages})
  (func (export "_start")
    (local $a i64) (local $b i64) (local $c i64) (local $d i64)
    (local $e i64) (local $f i64) (local $g i64) (local $h i64)
    (local $i i32) (local $at i32) (local $passes i32)
    ;; The seed: 64 bytes of the task's random stream.
    (drop (call $random_get (i32.const 0) (i32.const 64)))
    ;; The pass count: four bytes of stdin (none: no passes).
    (i32.store (i32.const 96) (i32.const 128))
    (i32.store (i32.const 100) (i32.const 4))
    (drop (call $fd_read (i32.const 0) (i32.const 96) (i32.const 1) (i32.const 112)))
    (local.set $passes
      (select (i32.load (i32.const 128)) (i32.const 0)
        (i32.ge_u (i32.load (i32.const 112)) (i32.const 4))))
    {load_state}
    ;; Fill: each block is the state, then the state moves on.
    (local.set $i (i32.const 0))
    (loop $fill
      (local.set $at (i32.add (i32.const {BLOCKS_AT}) (i32.shl (local.get $i) (i32.const 6))))
      {store_block}
      {mix}
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br_if $fill (i32.lt_u (local.get $i) (i32.const {CHALLENGE_BLOCKS}))))
    ;; Passes: the state picks the block it absorbs next.
    (block $done
      (loop $pass
        (br_if $done (i32.eqz (local.get $passes)))
        (local.set $i (i32.const 0))
        (loop $read
          (local.set $at
            (i32.add (i32.const {BLOCKS_AT})
              (i32.shl (i32.and (i32.wrap_i64 (local.get $a)) (i32.const {mask})) (i32.const 6))))
          {absorb_block}
          {mix}
          (local.set $i (i32.add (local.get $i) (i32.const 1)))
          (br_if $read (i32.lt_u (local.get $i) (i32.const {CHALLENGE_BLOCKS}))))
        (local.set $passes (i32.sub (local.get $passes) (i32.const 1)))
        (br $pass)))
    {store_state}
    (i32.store (i32.const 64) (i32.const 0))
    (i32.store (i32.const 68) (i32.const 64))
    (drop (call $fd_write (i32.const 1) (i32.const 64) (i32.const 1) (i32.const 80)))))
"#
    )
}

/// The challenge module's bytes.
pub fn challenge_module() -> &'static [u8] {
    static MODULE: OnceLock<Vec<u8>> = OnceLock::new();
    MODULE.get_or_init(|| wat::parse_str(module_text()).expect("the challenge module is valid"))
}

/// The challenge module's content id.
pub fn challenge_module_cid() -> ContentId {
    ContentId::of(challenge_module())
}

/// A challenge's answer: the BLAKE3 of the module's 64-byte output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChallengeAnswer {
    pub output: ContentId,
    pub fuel_used: u64,
    pub duration: Duration,
}

/// The task that runs a challenge of `passes` passes from `seed`.
pub fn challenge_task(seed: [u8; 32], passes: u32, wall_time: Duration) -> TaskSpec {
    TaskSpec {
        args: Vec::new(),
        stdin: passes.to_le_bytes().to_vec(),
        input_dir: None,
        output_dir: None,
        seed,
        limits: TaskLimits {
            fuel: challenge_fuel(passes),
            memory_bytes: CHALLENGE_MEMORY_BYTES + (1 << 20),
            output_bytes: 64,
            stderr_bytes: 0,
            wall_time,
        },
    }
}

impl Sandbox {
    /// Runs the capacity challenge of `passes` passes from `seed`: its
    /// answer, the fuel it took (always [`challenge_fuel`] of `passes`) and
    /// how long it ran here.
    pub fn run_challenge(
        &self,
        seed: [u8; 32],
        passes: u32,
        wall_time: Duration,
    ) -> Result<ChallengeAnswer, String> {
        if passes > CHALLENGE_PASSES_MAX {
            return Err(format!(
                "{passes} passes is above the most a challenge has ({CHALLENGE_PASSES_MAX})"
            ));
        }
        let (module, _) = self
            .prepare(challenge_module())
            .map_err(|error| format!("the challenge module did not prepare: {error}"))?;
        let report = self
            .run(&module, &challenge_task(seed, passes, wall_time))
            .map_err(|error| error.to_string())?;
        let completion = report
            .result
            .map_err(|error| format!("the challenge failed: {error}"))?;
        if completion.exit_code != 0 || completion.output.stdout.len() != 64 {
            return Err(format!(
                "the challenge exited {} with {} bytes of output",
                completion.exit_code,
                completion.output.stdout.len()
            ));
        }
        Ok(ChallengeAnswer {
            output: ContentId::of(&completion.output.stdout),
            fuel_used: report.fuel_used,
            duration: report.duration,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::SandboxConfig;

    #[test]
    fn the_challenge_takes_exactly_its_known_fuel_and_answers_alike() {
        let sandbox = Sandbox::new(SandboxConfig::default()).expect("sandbox");
        let wall = Duration::from_secs(120);
        let mut seen = Vec::new();
        for passes in [0, 1, 2] {
            let answer = sandbox.run_challenge([7; 32], passes, wall).expect("runs");
            assert_eq!(answer.fuel_used, challenge_fuel(passes), "{passes} passes");
            let again = sandbox.run_challenge([7; 32], passes, wall).expect("runs");
            assert_eq!(again.output, answer.output);
            seen.push(answer.output);
        }
        let other_seed = sandbox.run_challenge([8; 32], 1, wall).expect("runs");
        assert_ne!(other_seed.output, seen[1]);
        seen.dedup();
        assert_eq!(seen.len(), 3, "each pass changes the answer");
    }

    #[test]
    fn too_little_fuel_or_too_many_passes_is_no_answer() {
        let sandbox = Sandbox::new(SandboxConfig::default()).expect("sandbox");
        // Fuel is checked at loop heads, so a budget short by less than one
        // trip around the loop may still finish; a block's worth short may
        // not.
        let mut task = challenge_task([1; 32], 1, Duration::from_secs(60));
        task.limits.fuel -= 1_000;
        let (module, _) = sandbox.prepare(challenge_module()).expect("prepares");
        let report = sandbox.run(&module, &task).expect("runs");
        assert!(report.result.is_err(), "short of fuel, it must not finish");
        assert!(
            sandbox
                .run_challenge([1; 32], CHALLENGE_PASSES_MAX + 1, Duration::from_secs(1))
                .is_err()
        );
    }
}
