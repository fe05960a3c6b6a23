//! Results providers return: each counted only if it was asked for, not
//! answered before, and its receipt checks; what each gave of its output
//! (the bytes, or word that it keeps them), and which of those an accepted
//! task's output comes from.

use idlegrid_market::{Input as MarketInput, TaskResult};
use idlegrid_net::{Response, ResultBatch, TaskReturn};
use idlegrid_types::{AccountId, ContentId, SignedReceipt, TaskOutcome};

use super::{AcceptedOutput, MODULE_HOLDERS_KEPT, RequestorCore};

/// What a provider gave of a completed task's output: its bytes, or word
/// that it keeps them (their length), to be fetched by id once accepted.
#[derive(Debug)]
pub(super) enum Given {
    Bytes(Vec<u8>),
    Kept(u64),
}

/// One provider's result for an undecided task: who, what, the output when
/// it completed, and the energy its receipt states.
pub(super) type PendingResult = (AccountId, TaskOutcome, Option<Given>, u64);

/// The accepted output of a task from its agreeing results: bytes one of
/// them sent, else the re-execution's, else the providers keeping it.
pub(super) fn accepted_output(
    cid: ContentId,
    results: Vec<PendingResult>,
    outcome: TaskOutcome,
    referee_output: Option<Vec<u8>>,
) -> Option<AcceptedOutput> {
    let mut holders = Vec::new();
    let mut kept_bytes = 0;
    for (provider, result, given, _) in results {
        if result != outcome {
            continue;
        }
        match given {
            Some(Given::Bytes(bytes)) => return Some(AcceptedOutput::Bytes(bytes)),
            Some(Given::Kept(bytes)) => {
                kept_bytes = bytes;
                holders.push(provider);
            }
            None => {}
        }
    }
    if let Some(bytes) = referee_output {
        return Some(AcceptedOutput::Bytes(bytes));
    }
    (!holders.is_empty()).then_some(AcceptedOutput::Kept {
        cid,
        bytes: kept_bytes,
        holders,
    })
}

impl RequestorCore {
    pub(super) fn results(&mut self, provider: AccountId, batch: ResultBatch) -> Response {
        if batch.job != self.job {
            return Response::refused("unknown_job", format!("this requestor runs {}", self.job));
        }
        for result in batch.results.into_inner() {
            let task = result.index();
            match result {
                TaskReturn::NotRun { reason, .. } => {
                    tracing::info!(%provider, task, reason = &*reason, "task not run");
                    self.queued.push(MarketInput::ProviderFailed {
                        provider,
                        job: self.job,
                        task,
                    });
                }
                TaskReturn::Ran { receipt, stdout } => {
                    let given = Given::Bytes(stdout.into_inner());
                    self.ran(provider, task, receipt, given);
                }
                TaskReturn::Kept { receipt, bytes } => {
                    self.ran(provider, task, receipt, Given::Kept(bytes));
                }
            }
        }
        Response::Ok
    }

    /// A provider's result for `task`: counted if it was asked for, not
    /// answered before, and checks.
    fn ran(&mut self, provider: AccountId, task: u64, receipt: SignedReceipt, given: Given) {
        let asked = self
            .holders
            .get(&task)
            .is_some_and(|holders| holders.contains(&provider));
        let answered = self
            .pending
            .get(&task)
            .is_some_and(|results| results.iter().any(|(from, ..)| *from == provider));
        if !asked || answered {
            // Not sent to it, decided already, or sent again: it counts
            // for nothing.
            tracing::debug!(%provider, task, "a result nobody waits for");
            return;
        }
        if let Err(reason) = self.check_receipt(provider, &receipt, &given) {
            tracing::warn!(%provider, task, reason, "unusable result");
            self.queued.push(MarketInput::ProviderFailed {
                provider,
                job: self.job,
                task,
            });
            return;
        }
        let outcome = receipt.body.outcome;
        let fuel_used = receipt.body.fuel_used;
        let energy = receipt.body.energy_millijoules;
        self.fuel_executed = self.fuel_executed.saturating_add(fuel_used);
        self.energy_executed_millijoules = self.energy_executed_millijoules.saturating_add(energy);
        self.providers.entry(provider).or_default().results += 1;
        // It ran the job's module, so it holds it.
        if !self.module_holders.contains(&provider)
            && self.module_holders.len() < MODULE_HOLDERS_KEPT
        {
            self.module_holders.push(provider);
        }
        let given = matches!(outcome, TaskOutcome::Completed { .. }).then_some(given);
        self.pending
            .entry(task)
            .or_default()
            .push((provider, outcome, given, energy));
        self.queued.push(MarketInput::Result {
            provider,
            job: self.job,
            task,
            result: TaskResult {
                outcome,
                fuel_used,
                receipt: Some(Box::new(receipt)),
            },
        });
    }

    /// Made from the job file when asked for: a job of many tasks keeps
    /// none of their ids.
    fn input_cid(&self, task: u64) -> Option<ContentId> {
        self.job_file.task(task).map(|input| input.content_id())
    }

    /// A receipt counts only if its provider signed it for this job's task,
    /// module and input, and the output it names is the one sent (or, for
    /// an output kept, one the task could have given: fetching it checks
    /// its bytes).
    fn check_receipt(
        &mut self,
        provider: AccountId,
        receipt: &SignedReceipt,
        given: &Given,
    ) -> Result<(), &'static str> {
        if receipt.signer != provider || receipt.verify_cached(&self.signatures).is_err() {
            return Err("the receipt is not signed by the provider that sent it");
        }
        let body = &receipt.body;
        if body.job != self.job {
            return Err("the receipt names another job");
        }
        if body.module != self.job_file.module_cid {
            return Err("the receipt names another module");
        }
        if self.input_cid(body.task_index) != Some(body.input) {
            return Err("the receipt names another input");
        }
        match (body.outcome, given) {
            (TaskOutcome::Completed { output, .. }, Given::Bytes(stdout))
                if ContentId::of(stdout) != output =>
            {
                Err("the output sent is not the one the receipt names")
            }
            (TaskOutcome::Failed(_), Given::Kept(_)) => Err("a failed task's output kept"),
            (_, Given::Kept(bytes)) if *bytes > self.job_file.limits.output_bytes => {
                Err("an output kept that is larger than the job's bound")
            }
            _ => Ok(()),
        }
    }
}
