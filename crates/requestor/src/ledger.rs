//! What a requestor asks of the ledger, through a validator's API: open
//! the job's escrow, file disputes, and close the job for its refund. The
//! API client blocks, so each of these runs off the requestor's loop.

use std::sync::mpsc as std_mpsc;
use std::time::Duration;

use anyhow::Context;
use idlegrid_api::client::{ApiClient, Verdict};
use idlegrid_ledger::{Dispute, TxKind};
use idlegrid_types::{AccountId, JobId, Keypair};
use tracing::info;

use crate::core::Input;
use crate::jobspec::JobFile;
use crate::report::DisputeRecord;

/// How long a transaction of the requestor's waits for its block.
pub(crate) const TRANSACTION_WAIT: Duration = Duration::from_secs(60);

/// Submits `OpenJob` and waits for it: (job id, height, deadline height).
pub(crate) fn open_job(
    client: &ApiClient,
    key: &Keypair,
    job: &JobFile,
) -> anyhow::Result<(JobId, u64, u64)> {
    let height = client
        .height()
        .context("failed to read the chain's height")?;
    let deadline_height = height + job.deadline_blocks;
    let terms = job.open_job_terms(deadline_height, None);
    let sent = client
        .send(key, TxKind::OpenJob(terms), None)
        .context("failed to open the job")?;
    let included = client
        .wait_included(&sent.hash, TRANSACTION_WAIT)
        .context("the ledger did not open the job")?;
    Ok((
        JobId::derive(&key.account_id(), sent.nonce),
        included,
        deadline_height,
    ))
}

/// Waits for the deadline, closes the job: (redeemed by providers, refund).
pub(crate) fn close_job(
    client: &ApiClient,
    key: &Keypair,
    job: &JobId,
    deadline_height: u64,
) -> anyhow::Result<(u64, u64)> {
    info!(%job, deadline_height, "waiting for the deadline to close the job");
    loop {
        let height = client
            .height()
            .context("failed to read the chain's height")?;
        if height > deadline_height {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    // Nothing is redeemed past the deadline, so what is left in escrow now
    // is the refund, which goes to the requestor whoever closes (the
    // requestor, or the agent running the job for it).
    let left = client
        .job(job)?
        .with_context(|| format!("the ledger no longer knows {job}"))?;
    let sent = client
        .send(key, TxKind::CloseJob { job: *job }, None)
        .context("failed to close the job")?;
    client
        .wait_included(&sent.hash, TRANSACTION_WAIT)
        .context("the ledger did not close the job")?;
    Ok((left.redeemed_total, left.escrow))
}

/// What the [`Disputer`] is asked to file.
enum Order {
    /// A dispute against `provider`'s receipt, the second in the evidence.
    Accuse { provider: AccountId },
    /// A dispute whose re-execution decides a task too large to re-execute
    /// here; its verdict goes back to the core.
    Settle,
}

/// Files disputes on the ledger, one at a time, on its own thread: reports
/// each filed (included or not, and who the ledger found wrong) to `done`,
/// and a settlement's verdict as an [`Input::LedgerVerdict`] after it.
pub(crate) struct Disputer {
    orders: std_mpsc::Sender<(u64, Order, Box<Dispute>)>,
}

impl Disputer {
    pub(crate) fn start<T: From<DisputeRecord> + From<Input> + Send + 'static>(
        client: ApiClient,
        key: Keypair,
        done: tokio::sync::mpsc::UnboundedSender<T>,
    ) -> anyhow::Result<Self> {
        let (orders, queue) = std_mpsc::channel::<(u64, Order, Box<Dispute>)>();
        std::thread::Builder::new()
            .name("requestor-disputes".to_owned())
            .spawn(move || {
                while let Ok((task, order, dispute)) = queue.recv() {
                    let (transaction, verdict) = file(&client, &key, dispute);
                    let (status, wrong) = match (&verdict, &order) {
                        (Err(error), _) => (error.clone(), Vec::new()),
                        (Ok(verdict), Order::Accuse { provider })
                            if !verdict.wrong.contains(provider) =>
                        {
                            // Our own re-execution and the ledger's differ:
                            // the receipt stands, and the deposit is lost.
                            tracing::error!(
                                task,
                                %provider,
                                "the ledger found a receipt right that this requestor's \
                                 re-execution found wrong"
                            );
                            (
                                "rejected: the ledger's re-execution found the receipt right"
                                    .to_owned(),
                                Vec::new(),
                            )
                        }
                        (Ok(verdict), _) => ("included".to_owned(), verdict.wrong.clone()),
                    };
                    let provider = match &order {
                        Order::Accuse { provider } => Some(provider.to_string()),
                        Order::Settle => None,
                    };
                    info!(task, ?provider, %status, "dispute filed");
                    let record = DisputeRecord {
                        task,
                        provider,
                        settlement: matches!(order, Order::Settle),
                        wrong: wrong.iter().map(ToString::to_string).collect(),
                        transaction,
                        status,
                    };
                    if done.send(record.into()).is_err() {
                        return;
                    }
                    if let Order::Settle = order {
                        let result = verdict
                            .map(|verdict| (verdict.outcome, verdict.fuel_used, verdict.wrong));
                        if done
                            .send(Input::LedgerVerdict { task, result }.into())
                            .is_err()
                        {
                            return;
                        }
                    }
                }
            })
            .context("failed to start the dispute thread")?;
        Ok(Self { orders })
    }

    /// Disputes `provider`'s receipt for `task`.
    pub(crate) fn accuse(&self, task: u64, provider: AccountId, dispute: Box<Dispute>) {
        // The thread lives as long as the requestor; a dispute it could not
        // take is reported by the count of records falling short.
        let _ = self
            .orders
            .send((task, Order::Accuse { provider }, dispute));
    }

    /// Asks the ledger to settle `task` by re-execution.
    pub(crate) fn settle(&self, task: u64, dispute: Box<Dispute>) {
        let _ = self.orders.send((task, Order::Settle, dispute));
    }
}

/// Sends a dispute and waits for its block and verdict: the transaction's
/// hash (once sent) and the verdict, or why there is none.
fn file(
    client: &ApiClient,
    key: &Keypair,
    dispute: Box<Dispute>,
) -> (Option<String>, Result<Verdict, String>) {
    let sent = match client.send(key, TxKind::Dispute(dispute), None) {
        Ok(sent) => sent,
        Err(error) => return (None, Err(error.to_string())),
    };
    let verdict = client
        .wait_included(&sent.hash, TRANSACTION_WAIT)
        .and_then(|_| client.verdict(&sent.hash))
        .map_err(|error| error.to_string())
        .and_then(|verdict| {
            verdict.ok_or_else(|| "the ledger reported no verdict for it".to_owned())
        });
    (Some(sent.hash), verdict)
}
