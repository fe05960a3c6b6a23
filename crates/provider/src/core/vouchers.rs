//! Vouchers on the provider's side: checking the ones requestors send,
//! asking for the ones it is owed, and redeeming them on the ledger.

use idlegrid_net::Response;
use idlegrid_types::{AccountId, JobId, SignedVoucher};

use super::{Command, ProviderCore, Redemption, VOUCHERS_HELD_MAX, VoucherAnswer};

impl ProviderCore {
    /// Checks a voucher from `peer`; gives it when it is newer than the one
    /// held (to store, then acknowledge), `None` when it adds nothing.
    pub(super) fn voucher(
        &mut self,
        peer: AccountId,
        voucher: SignedVoucher,
    ) -> Result<Option<SignedVoucher>, Response> {
        if voucher.signer != peer || voucher.verify().is_err() {
            return Err(Response::refused(
                "bad_voucher",
                "the voucher is not signed by the requestor that sent it",
            ));
        }
        if voucher.body.provider != self.account {
            return Err(Response::refused(
                "bad_voucher",
                "the voucher pays someone else",
            ));
        }
        let job = voucher.body.job;
        match self.vouchers.get(&job) {
            Some(held) => {
                let newer = voucher.body.sequence > held.body.sequence
                    && voucher.body.cumulative_amount >= held.body.cumulative_amount;
                if !newer {
                    return Ok(None);
                }
            }
            None if self.vouchers.len() >= VOUCHERS_HELD_MAX => {
                return Err(Response::refused(
                    "busy",
                    "the provider holds as many unredeemed vouchers as it keeps",
                ));
            }
            None => {}
        }
        self.vouchers.insert(job, voucher.clone());
        self.asks.vouched(&job);
        Ok(Some(voucher))
    }

    /// Asks every requestor whose voucher is due for it.
    pub(super) fn ask_vouchers(&mut self, now_ms: u64, commands: &mut Vec<Command>) {
        for (requestor, job) in self.asks.due(now_ms) {
            commands.push(Command::AskVoucher { requestor, job });
        }
    }

    /// A requestor's answer to an ask: a newer voucher is stored like one
    /// it pushed (and redeemed at once when the job is over); otherwise
    /// the provider asks again later, unless the requestor cannot help.
    pub(super) fn voucher_asked(
        &mut self,
        now_ms: u64,
        job: JobId,
        requestor: AccountId,
        answer: VoucherAnswer,
        commands: &mut Vec<Command>,
    ) {
        let again = match answer {
            VoucherAnswer::Voucher { voucher, job_done } => {
                if voucher.body.job != job {
                    false
                } else {
                    match self.voucher(requestor, voucher) {
                        Ok(Some(voucher)) => {
                            commands.push(Command::StoreVoucher {
                                voucher,
                                reply: None,
                            });
                        }
                        Ok(None) => {}
                        // A requestor that answers with someone else's
                        // voucher is not asked again.
                        Err(_) => {
                            self.asks.vouched(&job);
                            return;
                        }
                    }
                    if job_done {
                        self.asks.vouched(&job);
                        self.redeem(Some(job), commands);
                        return;
                    }
                    true
                }
            }
            VoucherAnswer::NothingOwed | VoucherAnswer::Unanswered => true,
            VoucherAnswer::NotItsJob => false,
        };
        self.asks.answered(now_ms, &job, again);
    }

    /// Orders redemption of one job's voucher, or of every voucher that
    /// owes more than was redeemed, skipping those already on their way.
    pub(super) fn redeem(&mut self, job: Option<JobId>, commands: &mut Vec<Command>) {
        let candidates: Vec<&SignedVoucher> = match job {
            Some(job) => self.vouchers.get(&job).into_iter().collect(),
            None => self.vouchers.values().collect(),
        };
        let mut order = Vec::new();
        for voucher in candidates {
            let job = voucher.body.job;
            let amount = voucher.body.cumulative_amount;
            let covered = self
                .redeemed
                .get(&job)
                .copied()
                .max(self.redeeming.get(&job).copied())
                .unwrap_or(0);
            if amount > covered {
                order.push(voucher.clone());
            }
        }
        for voucher in &order {
            self.redeeming
                .insert(voucher.body.job, voucher.body.cumulative_amount);
        }
        if !order.is_empty() {
            commands.push(Command::Redeem(order));
        }
    }

    pub(super) fn redeemed(
        &mut self,
        job: JobId,
        amount: u64,
        outcome: Redemption,
        commands: &mut Vec<Command>,
    ) {
        if self.redeeming.get(&job) == Some(&amount) {
            self.redeeming.remove(&job);
        }
        let before = self.redeemed.get(&job).copied().unwrap_or(0);
        match outcome {
            Redemption::Paid if amount > before => {
                self.earned = self.earned.saturating_add(amount - before);
                self.redeemed.insert(job, amount);
            }
            Redemption::Settled if amount > before => {
                // An earlier run redeemed it (or a newer one), or the job
                // is past paying: it owes nothing more up to `amount`.
                self.redeemed.insert(job, amount);
            }
            Redemption::Paid | Redemption::Settled | Redemption::Failed => {}
        }
        if outcome == Redemption::Settled
            && self
                .vouchers
                .get(&job)
                .is_some_and(|held| held.body.cumulative_amount <= amount)
        {
            self.vouchers.remove(&job);
            commands.push(Command::ForgetVoucher(job));
        }
    }

    /// What the held vouchers owe beyond what was redeemed.
    pub(super) fn owed(&self) -> u64 {
        self.vouchers
            .values()
            .map(|voucher| {
                voucher
                    .body
                    .cumulative_amount
                    .saturating_sub(self.redeemed.get(&voucher.body.job).copied().unwrap_or(0))
            })
            .sum()
    }
}
