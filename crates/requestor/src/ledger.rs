//! What a requestor asks of the ledger, through a validator's API: open
//! the job's escrow, file disputes, and close the job for its refund. The
//! API client blocks, so each of these runs off the requestor's loop.

use std::sync::mpsc as std_mpsc;
use std::time::Duration;

use anyhow::Context;
use idlegrid_api::client::ApiClient;
use idlegrid_ledger::{Dispute, OpenJob, TxKind};
use idlegrid_types::{AccountId, JobId, Keypair};
use tracing::info;

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
    let terms = OpenJob {
        module: job.module_cid,
        spec: job.spec_cid(),
        escrow: job.budget,
        price_per_million_fuel: job.price_per_million_fuel,
        deadline_height,
        limits: job.limits,
    };
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
    let before = client
        .account(&key.account_id())
        .context("failed to read the balance")?
        .balance;
    let sent = client
        .send(key, TxKind::CloseJob { job: *job }, None)
        .context("failed to close the job")?;
    client
        .wait_included(&sent.hash, TRANSACTION_WAIT)
        .context("the ledger did not close the job")?;
    let after = client
        .account(&key.account_id())
        .context("failed to read the balance")?
        .balance;
    let state = client
        .job(job)?
        .with_context(|| format!("the ledger no longer knows {job}"))?;
    Ok((
        state.redeemed_total,
        (after + sent.fee).saturating_sub(before),
    ))
}

/// Files disputes on the ledger, one at a time, on its own thread, and
/// reports each filed (included or not) to `done`.
pub(crate) struct Disputer {
    orders: std_mpsc::Sender<(u64, AccountId, Box<Dispute>)>,
}

impl Disputer {
    pub(crate) fn start<T: From<DisputeRecord> + Send + 'static>(
        client: ApiClient,
        key: Keypair,
        done: tokio::sync::mpsc::UnboundedSender<T>,
    ) -> anyhow::Result<Self> {
        let (orders, queue) = std_mpsc::channel::<(u64, AccountId, Box<Dispute>)>();
        std::thread::Builder::new()
            .name("requestor-disputes".to_owned())
            .spawn(move || {
                while let Ok((task, provider, dispute)) = queue.recv() {
                    let sent = client.send(&key, TxKind::Dispute(dispute), None);
                    let (transaction, status) = match sent {
                        Ok(sent) => {
                            let status = match client.wait_included(&sent.hash, TRANSACTION_WAIT) {
                                Ok(_) => "included".to_owned(),
                                Err(error) => error.to_string(),
                            };
                            (Some(sent.hash), status)
                        }
                        Err(error) => (None, error.to_string()),
                    };
                    info!(task, %provider, %status, "dispute filed");
                    let record = DisputeRecord {
                        task,
                        provider: provider.to_string(),
                        transaction,
                        status,
                    };
                    if done.send(record.into()).is_err() {
                        return;
                    }
                }
            })
            .context("failed to start the dispute thread")?;
        Ok(Self { orders })
    }

    pub(crate) fn file(&self, task: u64, provider: AccountId, dispute: Box<Dispute>) {
        // The thread lives as long as the requestor; a dispute it could not
        // take is reported by the count of records falling short.
        let _ = self.orders.send((task, provider, dispute));
    }
}
