//! Who signed the recent finalizations, as this validator saw their
//! certificates: each validator's uptime for the API and the dashboard.
//!
//! A finalization certificate carries the signatures of at least a quorum
//! of the epoch's validators (those that reached the leader first), so a
//! validator that is up may still be missing from some; the share over a
//! window is what it says. This is a local view, not ledger state.

use std::collections::VecDeque;

use idlegrid_types::AccountId;

/// How many of the latest finalizations count.
pub const UPTIME_WINDOW: usize = 1_000;

#[derive(Debug, Default)]
pub struct Uptime {
    /// The latest finalizations: their epoch and the indices (in the
    /// epoch's validator set, ordered by account) of who signed each.
    recent: VecDeque<(u64, Vec<u32>)>,
}

impl Uptime {
    /// Notes one finalization of `epoch` signed by the validators at
    /// `signers` in that epoch's set.
    pub fn record(&mut self, epoch: u64, signers: impl IntoIterator<Item = u32>) {
        if self.recent.len() == UPTIME_WINDOW {
            self.recent.pop_front();
        }
        let mut signers: Vec<u32> = signers.into_iter().collect();
        signers.sort_unstable();
        self.recent.push_back((epoch, signers));
    }

    /// How many of the recent finalizations `account` signed, of those it
    /// was a validator for; `set_of(epoch)` gives an epoch's validators.
    pub fn of(
        &self,
        account: &AccountId,
        mut set_of: impl FnMut(u64) -> Option<Vec<AccountId>>,
    ) -> (u64, u64) {
        let mut index_in: Option<(u64, Option<u32>)> = None;
        let (mut signed, mut expected) = (0, 0);
        for (epoch, signers) in &self.recent {
            let index = match index_in {
                Some((known, index)) if known == *epoch => index,
                _ => {
                    let index = set_of(*epoch).and_then(|mut set| {
                        set.sort();
                        set.iter()
                            .position(|member| member == account)
                            .and_then(|position| u32::try_from(position).ok())
                    });
                    index_in = Some((*epoch, index));
                    index
                }
            };
            if let Some(index) = index {
                expected += 1;
                signed += u64::from(signers.binary_search(&index).is_ok());
            }
        }
        (signed, expected)
    }
}

#[cfg(test)]
mod tests {
    use commonware_utils::ordered::Set;
    use idlegrid_types::Keypair;

    use super::*;
    use crate::engine::{account_of, public_key};

    fn accounts(count: u8) -> Vec<AccountId> {
        (1..=count)
            .map(|seed| Keypair::from_seed([seed; 32]).account_id())
            .collect()
    }

    #[test]
    fn the_consensus_set_orders_validators_as_accounts_sort() {
        let accounts = accounts(12);
        let keys = accounts
            .iter()
            .map(|account| public_key(account).expect("a key"));
        let set = Set::try_from(keys.collect::<Vec<_>>()).expect("a set");
        let mut sorted = accounts.clone();
        sorted.sort();
        let ordered: Vec<AccountId> = set.iter().map(account_of).collect();
        assert_eq!(ordered, sorted);
    }

    #[test]
    fn uptime_counts_the_finalizations_a_validator_signed_while_in_the_set() {
        let all = accounts(4);
        let mut sorted = all.clone();
        sorted.sort();
        let mut uptime = Uptime::default();
        // Epoch 0: all four; epoch 1: the first three (in account order).
        for view in 0..10u32 {
            let signers: Vec<u32> = (0..4)
                .filter(|index| view % 2 == 0 || *index != 3)
                .collect();
            uptime.record(0, signers);
        }
        for _ in 0..5 {
            uptime.record(1, [0, 1, 2]);
        }
        let set_of = |epoch: u64| match epoch {
            0 => Some(all.clone()),
            1 => Some(sorted[..3].to_vec()),
            _ => None,
        };
        assert_eq!(uptime.of(&sorted[0], set_of), (15, 15));
        assert_eq!(
            uptime.of(&sorted[3], set_of),
            (5, 10),
            "out of the set in epoch 1"
        );
        // The window keeps the latest only.
        for _ in 0..UPTIME_WINDOW {
            uptime.record(1, [0, 1]);
        }
        assert_eq!(uptime.of(&sorted[2], set_of), (0, UPTIME_WINDOW as u64));
    }
}
