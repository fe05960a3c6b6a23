//! The end-of-job round: each paid provider is given its newest voucher
//! again and told the job is over, and tried again (200 ms doubling to
//! 2 s, and at once when it connects again) until it has taken both.

use std::collections::{BTreeMap, HashMap};

use idlegrid_types::{AccountId, Keypair, SignedVoucher, Voucher};

use super::{Command, FAREWELL_RETRY_MAX_US, FAREWELL_RETRY_MIN_US};

/// One paid provider's part of the round.
#[derive(Debug)]
struct Farewell {
    /// Its newest voucher, signed once.
    voucher: SignedVoucher,
    /// It took the voucher and the job's end.
    acknowledged: bool,
    in_flight: bool,
    tries: u32,
    next_try_us: u64,
}

/// Every paid provider's part of the round.
#[derive(Debug)]
pub(super) struct Farewells(BTreeMap<AccountId, Farewell>);

impl Farewells {
    /// The round for the vouchers `owed`, each due now.
    pub(super) fn begin(key: &Keypair, owed: &HashMap<AccountId, Voucher>, now_us: u64) -> Self {
        Self(
            owed.iter()
                .map(|(provider, voucher)| {
                    let farewell = Farewell {
                        voucher: key.sign(voucher.clone()),
                        acknowledged: false,
                        in_flight: false,
                        tries: 0,
                        next_try_us: now_us,
                    };
                    (*provider, farewell)
                })
                .collect(),
        )
    }

    /// What to send now: each provider not yet done whose try is due.
    pub(super) fn due(&mut self, now_us: u64) -> Vec<Command> {
        let mut commands = Vec::new();
        for (provider, farewell) in &mut self.0 {
            if !farewell.acknowledged && !farewell.in_flight && farewell.next_try_us <= now_us {
                farewell.in_flight = true;
                farewell.tries += 1;
                commands.push(Command::Farewell {
                    provider: *provider,
                    voucher: farewell.voucher.clone(),
                });
            }
        }
        commands
    }

    /// A provider owed its farewell connected again: it is tried at once.
    pub(super) fn reconnected(&mut self, provider: AccountId, now_us: u64) {
        if let Some(farewell) = self.0.get_mut(&provider)
            && !farewell.acknowledged
            && !farewell.in_flight
        {
            farewell.next_try_us = farewell.next_try_us.min(now_us);
        }
    }

    /// The try in flight to `provider` ended: it took both, or it is tried
    /// again after a doubling pause.
    pub(super) fn answered(&mut self, provider: AccountId, delivered: bool, now_us: u64) {
        let Some(farewell) = self.0.get_mut(&provider) else {
            return;
        };
        farewell.in_flight = false;
        if delivered {
            farewell.acknowledged = true;
        } else {
            let pause = FAREWELL_RETRY_MIN_US
                .saturating_mul(1 << farewell.tries.saturating_sub(1).min(16))
                .min(FAREWELL_RETRY_MAX_US);
            farewell.next_try_us = now_us.saturating_add(pause);
        }
    }

    /// Providers that have not yet taken their last voucher and the end.
    pub(super) fn owed(&self) -> usize {
        self.0
            .values()
            .filter(|farewell| !farewell.acknowledged)
            .count()
    }
}
