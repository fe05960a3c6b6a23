//! Results that lost: the providers that sent them disputed on the
//! ledger with their receipts (at most a few times each), and tasks whose
//! results disagree sent to a referee (this requestor's re-execution, or
//! the ledger's for a task above `--referee-fuel`).

use idlegrid_ledger::{Dispute, Evidence};
use idlegrid_market::{FraudEvidence, Input as MarketInput};
use idlegrid_types::codec::Bounded;
use idlegrid_types::{AccountId, SignedReceipt};

use super::{Command, DISPUTES_PER_PROVIDER_MAX, RequestorCore};

impl RequestorCore {
    pub(super) fn fraud(
        &mut self,
        task: u64,
        provider: AccountId,
        evidence: Option<Box<FraudEvidence>>,
        commands: &mut Vec<Command>,
    ) {
        tracing::warn!(%provider, task, "a provider's result lost to the accepted one");
        if self
            .settled_by_ledger
            .get(&task)
            .is_some_and(|wrong| wrong.contains(&provider))
        {
            // The ledger's own verdict slashed it for this task already.
            return;
        }
        let disputed = self.disputes_against.entry(provider).or_default();
        let Some(evidence) = evidence else {
            return;
        };
        if *disputed >= DISPUTES_PER_PROVIDER_MAX {
            return;
        }
        let evidence = match *evidence {
            FraudEvidence::Conflicting(first, second) => Evidence::Conflicting(first, second),
            // Nobody else answered: our own re-execution showed it wrong.
            FraudEvidence::Lone(losing) => Evidence::Claimed(losing),
        };
        let Some(dispute) = self.dispute(task, evidence) else {
            return;
        };
        *self.disputes_against.entry(provider).or_default() += 1;
        self.disputes_filed += 1;
        commands.push(Command::Dispute {
            task,
            provider,
            dispute,
        });
    }

    pub(super) fn has_files(&self, task: u64) -> bool {
        self.job_file
            .task(task)
            .is_some_and(|input| !input.files.is_empty())
    }

    /// A dispute of `task` with this evidence (an accused receipt second).
    pub(super) fn dispute(&self, task: u64, evidence: Evidence) -> Option<Box<Dispute>> {
        let input = self.job_file.task(task)?;
        if !input.files.is_empty() {
            // A dispute carries no input files, so validators could not
            // re-execute it: only this requestor settles such a task.
            return None;
        }
        // A job file's module and inputs are within a dispute's bounds, so
        // both always fit.
        let (Ok(module), Ok(input)) = (
            Bounded::new(self.job_file.module.clone()),
            Bounded::new(input.encode()),
        ) else {
            return None;
        };
        Some(Box::new(Dispute {
            evidence,
            module,
            input,
        }))
    }

    /// A task whose results disagree (or that nobody else may check):
    /// re-executed here when its fuel limit is within the requestor's;
    /// otherwise settled by the ledger when two signed receipts differ;
    /// otherwise failed, saying why.
    pub(super) fn referee(
        &mut self,
        task: u64,
        evidence: Option<Box<(SignedReceipt, SignedReceipt)>>,
        commands: &mut Vec<Command>,
    ) {
        let fuel = self.job_file.limits.fuel;
        if fuel <= self.referee_fuel {
            self.re_executed += 1;
            commands.push(Command::ReExecute { task });
            return;
        }
        let conflicting = evidence.map(|evidence| {
            let (first, second) = *evidence;
            Evidence::Conflicting(first, second)
        });
        if let Some(dispute) = conflicting.and_then(|evidence| self.dispute(task, evidence)) {
            self.disputes_filed += 1;
            commands.push(Command::AskLedger { task, dispute });
            return;
        }
        let reason = format!(
            "nobody else may check its result (the ledger cannot: {}) and its fuel limit \
             ({fuel}) is over this requestor's re-execution limit ({}); raise \
             --referee-fuel to check it here",
            if self.has_files(task) {
                "it reads input files, which a dispute does not carry"
            } else {
                "the providers' receipts do not conflict"
            },
            self.referee_fuel
        );
        self.queued.push(MarketInput::RefereeFailed {
            job: self.job,
            task,
            reason,
        });
    }
}
