//! Capacity challenges' rules: which providers an epoch challenges, the
//! deadline the speed a provider offers earns it, and what an answer's
//! timing proves. Pure functions, so every party that judges a challenge
//! (the simulator today) judges it alike.

use crate::{AccountId, ContentId};

/// Blocks of 64 bytes the capacity challenge fills and reads back.
pub const CHALLENGE_BLOCKS: u32 = 1 << 20;
/// Memory the challenge's blocks take (64 MiB).
pub const CHALLENGE_MEMORY_BYTES: u64 = CHALLENGE_BLOCKS as u64 * 64;
/// Fuel of a challenge with no passes: the fill, and reading its input and
/// writing its answer. Fixed by the module's text (`idlegrid-sandbox`'s
/// challenge, whose test checks these figures against the sandbox).
pub const CHALLENGE_FUEL_BASE: u64 = 174_063_704;
/// Fuel of each pass over the blocks.
pub const CHALLENGE_FUEL_PER_PASS: u64 = 193_986_570;
/// Most passes a challenge may ask for.
pub const CHALLENGE_PASSES_MAX: u32 = 1_000;

/// What a provider commits to before it may show its answer (so that a
/// partner with the same seed cannot copy it): the output's id bound to
/// the provider.
pub fn answer_commitment(output: &ContentId, provider: &AccountId) -> [u8; 32] {
    let mut hasher = blake3::Hasher::new();
    hasher.update(b"idlegrid challenge answer v1");
    hasher.update(output.as_bytes());
    hasher.update(provider.as_bytes());
    *hasher.finalize().as_bytes()
}

/// The exact fuel the challenge of `passes` passes takes.
pub fn challenge_fuel(passes: u32) -> u64 {
    CHALLENGE_FUEL_BASE.saturating_add(CHALLENGE_FUEL_PER_PASS.saturating_mul(u64::from(passes)))
}

/// How challenges are set and judged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChallengeRules {
    /// Fuel of one challenge.
    pub fuel: u64,
    /// The deadline's slack over the time the offered speed needs, in
    /// basis points of that time (12,500: 1.25×).
    pub slack_bps: u32,
    /// Added to every deadline for the way there and back.
    pub round_trip_ms: u64,
    /// Share of providers challenged each epoch, in basis points.
    pub share_bps: u32,
}

impl Default for ChallengeRules {
    fn default() -> Self {
        Self {
            // 20 s at 1e9 fuel/s, 5 s on a device four times as fast: long
            // enough next to the round trip that offering twice one's
            // speed is late even there (5 s × (1 − 1.25 / 2) > 1 s).
            fuel: 20_000_000_000,
            slack_bps: 12_500,
            round_trip_ms: 1_000,
            share_bps: 10_000,
        }
    }
}

/// What a challenge's answer showed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChallengeVerdict {
    /// In time for the offered speed: the offer stands.
    OnTime,
    /// Too late for the offered speed: the speed the answer proves, which
    /// the market uses from now on instead of the offered one.
    Late { proven_fuel_per_second: u64 },
    /// No answer: counts against the provider's availability.
    Missed,
}

impl ChallengeRules {
    /// Milliseconds a provider offering `fuel_per_second` has to answer.
    pub fn deadline_ms(&self, fuel_per_second: u64) -> u64 {
        let needed = u128::from(self.fuel) * 1_000 * u128::from(self.slack_bps)
            / 10_000
            / u128::from(fuel_per_second.max(1));
        u64::try_from(needed)
            .unwrap_or(u64::MAX)
            .saturating_add(self.round_trip_ms)
    }

    /// Judges an answer that came `answered_after_ms` after the challenge
    /// (`None`: never) from a provider offering `fuel_per_second`. A late
    /// answer proves the fuel over its time less the round-trip allowance.
    pub fn judge(&self, fuel_per_second: u64, answered_after_ms: Option<u64>) -> ChallengeVerdict {
        let Some(after_ms) = answered_after_ms else {
            return ChallengeVerdict::Missed;
        };
        if after_ms <= self.deadline_ms(fuel_per_second) {
            return ChallengeVerdict::OnTime;
        }
        let computing_ms = after_ms.saturating_sub(self.round_trip_ms).max(1);
        let proven = u128::from(self.fuel) * 1_000 / u128::from(computing_ms);
        ChallengeVerdict::Late {
            proven_fuel_per_second: u64::try_from(proven)
                .unwrap_or(u64::MAX)
                .min(fuel_per_second),
        }
    }

    /// Whether `provider` is challenged in the epoch whose randomness is
    /// `randomness`: its share of providers, drawn by hashing the two, so
    /// nobody knows before the randomness is out and everybody agrees
    /// after.
    pub fn challenged(&self, randomness: &[u8; 32], provider: &AccountId) -> bool {
        let mut hasher = blake3::Hasher::new();
        hasher.update(b"idlegrid challenge v1");
        hasher.update(randomness);
        hasher.update(provider.as_bytes());
        let draw = u64::from_le_bytes(
            hasher.finalize().as_bytes()[..8]
                .try_into()
                .expect("eight bytes"),
        );
        u128::from(draw) * 10_000 < u128::from(self.share_bps) << 64
    }
}

/// Solutions a GPU challenge asks for. The search is a proof of work, so
/// its cost varies: the attempts needed for this many solutions vary by
/// one part in sixteen (one standard deviation), well inside the slack.
pub const GPU_CHALLENGE_SOLUTIONS: u32 = 256;
/// Nonces one invocation of the GPU challenge kernel tries.
pub const GPU_CHALLENGE_ATTEMPTS_PER_INVOCATION: u32 = 256;
/// Metered fuel of one invocation of the GPU challenge kernel: one for
/// the invocation and one per loop iteration, each iteration one attempt
/// (`idlegrid-gpu`'s challenge, whose test checks it on a GPU and on the
/// CPU path).
pub const GPU_CHALLENGE_FUEL_PER_INVOCATION: u64 = GPU_CHALLENGE_ATTEMPTS_PER_INVOCATION as u64 + 1;

/// What a nonce scores in a GPU challenge of `seed`: the first eight
/// bytes (little-endian) of BLAKE3 over the seed and the nonce's eight
/// little-endian bytes. A nonce solves a challenge of `target` when its
/// score is below the target.
pub fn gpu_challenge_score(seed: &[u8; 32], nonce: u64) -> u64 {
    let mut message = [0u8; 40];
    message[..32].copy_from_slice(seed);
    message[32..].copy_from_slice(&nonce.to_le_bytes());
    let hash = blake3::hash(&message);
    u64::from_le_bytes(hash.as_bytes()[..8].try_into().expect("eight bytes"))
}

/// The target that makes [`GPU_CHALLENGE_SOLUTIONS`] solutions cost
/// `fuel` on average: each attempt succeeds with probability
/// `target / 2^64`.
pub fn gpu_challenge_target(fuel: u64) -> u64 {
    let attempts = u128::from(fuel.max(1)) * u128::from(GPU_CHALLENGE_ATTEMPTS_PER_INVOCATION)
        / u128::from(GPU_CHALLENGE_FUEL_PER_INVOCATION);
    let target = (u128::from(GPU_CHALLENGE_SOLUTIONS) << 64) / attempts.max(1);
    u64::try_from(target).unwrap_or(u64::MAX).max(1)
}

/// The fuel [`GPU_CHALLENGE_SOLUTIONS`] solutions of `target` cost on
/// average.
pub fn gpu_challenge_fuel(target: u64) -> u64 {
    let attempts = (u128::from(GPU_CHALLENGE_SOLUTIONS) << 64) / u128::from(target.max(1));
    let fuel = attempts * u128::from(GPU_CHALLENGE_FUEL_PER_INVOCATION)
        / u128::from(GPU_CHALLENGE_ATTEMPTS_PER_INVOCATION);
    u64::try_from(fuel).unwrap_or(u64::MAX)
}

/// Whether `nonces` answer a GPU challenge: exactly
/// [`GPU_CHALLENGE_SOLUTIONS`] of them, all different, each scoring
/// below `target`. Checking costs one small hash a nonce.
pub fn gpu_answer_is_right(seed: &[u8; 32], target: u64, nonces: &[u64]) -> bool {
    if nonces.len() != GPU_CHALLENGE_SOLUTIONS as usize {
        return false;
    }
    let mut sorted = nonces.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    sorted.len() == nonces.len()
        && nonces
            .iter()
            .all(|nonce| gpu_challenge_score(seed, *nonce) < target)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_deadline_is_the_offered_time_with_slack_and_a_round_trip() {
        let rules = ChallengeRules::default();
        // 2e10 fuel at 1e9 fuel/s: 20 s, ×1.25, + 1 s.
        assert_eq!(rules.deadline_ms(1_000_000_000), 26_000);
        assert_eq!(rules.deadline_ms(0), rules.deadline_ms(1));
    }

    #[test]
    fn an_answer_in_time_keeps_the_offer_and_a_late_one_proves_its_speed() {
        let rules = ChallengeRules::default();
        let offered = 2_000_000_000;
        assert_eq!(
            rules.judge(offered, Some(rules.deadline_ms(offered))),
            ChallengeVerdict::OnTime
        );
        // Half the offered speed: 20 s of computing plus the round trip.
        assert_eq!(
            rules.judge(offered, Some(20_000 + rules.round_trip_ms)),
            ChallengeVerdict::Late {
                proven_fuel_per_second: 1_000_000_000
            }
        );
        assert_eq!(rules.judge(offered, None), ChallengeVerdict::Missed);
    }

    #[test]
    fn an_epoch_challenges_about_its_share_and_everyone_draws_alike() {
        let rules = ChallengeRules {
            share_bps: 2_500,
            ..ChallengeRules::default()
        };
        let randomness = [7u8; 32];
        let providers: Vec<AccountId> = (0..4_000u32)
            .map(|index| {
                let mut bytes = [0u8; 32];
                bytes[..4].copy_from_slice(&index.to_le_bytes());
                AccountId::from_bytes(bytes)
            })
            .collect();
        let drawn = providers
            .iter()
            .filter(|provider| rules.challenged(&randomness, provider))
            .count();
        assert!((800..1_200).contains(&drawn), "{drawn} of 4,000 at 25%");
        let all = ChallengeRules::default();
        assert!(providers.iter().all(|p| all.challenged(&randomness, p)));
        let other = [8u8; 32];
        assert_ne!(
            providers
                .iter()
                .map(|p| rules.challenged(&randomness, p))
                .collect::<Vec<_>>(),
            providers
                .iter()
                .map(|p| rules.challenged(&other, p))
                .collect::<Vec<_>>()
        );
    }

    #[test]
    fn a_gpu_challenge_s_target_and_fuel_are_inverse() {
        for fuel in [1_000_000, 3_000_000_000, 10_000_000_000_000] {
            let back = gpu_challenge_fuel(gpu_challenge_target(fuel));
            assert!(
                back.abs_diff(fuel) * 1_000_000 <= fuel,
                "{fuel} gave {back}"
            );
        }
        assert_eq!(gpu_challenge_target(0), gpu_challenge_target(1));
    }

    #[test]
    fn a_gpu_answer_is_right_only_with_enough_distinct_solutions() {
        let seed = [7; 32];
        // One attempt in 16 succeeds.
        let target = u64::MAX / 16;
        let solutions: Vec<u64> = (0..)
            .filter(|nonce| gpu_challenge_score(&seed, *nonce) < target)
            .take(GPU_CHALLENGE_SOLUTIONS as usize)
            .collect();
        assert!(gpu_answer_is_right(&seed, target, &solutions));
        assert!(!gpu_answer_is_right(&[8; 32], target, &solutions));
        assert!(!gpu_answer_is_right(&seed, target, &solutions[1..]));
        let mut repeated = solutions.clone();
        repeated[1] = repeated[0];
        assert!(!gpu_answer_is_right(&seed, target, &repeated));
        let failing = (0..)
            .find(|nonce| gpu_challenge_score(&seed, *nonce) >= target)
            .expect("most fail");
        let mut wrong = solutions;
        wrong[5] = failing;
        assert!(!gpu_answer_is_right(&seed, target, &wrong));
    }
}
