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
}
