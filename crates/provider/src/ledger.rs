//! What a provider asks of the ledger, through a validator's API: its
//! stake, the jobs it is sent work for, and the redemption of vouchers.
//! The API client blocks, so each of these runs off the provider's loop.

use std::sync::mpsc as std_mpsc;
use std::time::Duration;

use anyhow::Context;
use idlegrid_api::client::{ApiClient, ApiError};
use idlegrid_ledger::{StakeRole, TxKind};
use idlegrid_types::{AccountId, ContentId, JobId, Keypair, SignedVoucher};
use tokio::sync::mpsc;
use tracing::{info, warn};

use crate::core::{Input, JobCheck, Redemption};

/// How long a transaction of the provider's waits for its block.
const TRANSACTION_WAIT: Duration = Duration::from_secs(30);

/// Bonds provider stake up to `wanted`; gives the bonded stake.
pub(crate) async fn ensure_stake(
    client: &ApiClient,
    key: &Keypair,
    wanted: Option<u64>,
) -> anyhow::Result<u64> {
    let client = client.clone();
    let key = key.clone();
    tokio::task::spawn_blocking(move || -> anyhow::Result<u64> {
        let account = client
            .account(&key.account_id())
            .context("failed to read this provider's account")?;
        let Some(wanted) = wanted.filter(|wanted| *wanted > account.provider_stake) else {
            return Ok(account.provider_stake);
        };
        let amount = wanted - account.provider_stake;
        let sent = client
            .send(
                &key,
                TxKind::Stake {
                    role: StakeRole::Provider,
                    amount,
                },
                None,
            )
            .context("failed to stake")?;
        client
            .wait_included(&sent.hash, TRANSACTION_WAIT)
            .context("the stake did not apply")?;
        Ok(wanted)
    })
    .await
    .context("the stake thread failed")?
}

/// Reads the job from the ledger: it must be open, at a price this
/// provider takes, with tasks that fit the memory it offers; then batches
/// from its requestor for its module run.
pub(crate) fn check_job(
    client: &ApiClient,
    job: &JobId,
    price_floor: u64,
    memory: u64,
) -> JobCheck {
    match client.job(job) {
        Ok(Some(state)) => {
            // Batches come from whoever runs the job: its agent (a
            // gateway running it for the requestor) or the requestor.
            let (Ok(requestor), Ok(module)) = (
                state.runner().parse::<AccountId>(),
                state.module.parse::<ContentId>(),
            ) else {
                return JobCheck::Rejected {
                    code: "unknown_job",
                    message: "the ledger's answer about the job does not parse".to_owned(),
                };
            };
            if !state.open {
                JobCheck::Rejected {
                    code: "job_closed",
                    message: format!("{job} is closed"),
                }
            } else if state.price_per_million_fuel < price_floor {
                JobCheck::Rejected {
                    code: "price_too_low",
                    message: format!(
                        "{job} pays {} per million fuel",
                        state.price_per_million_fuel
                    ),
                }
            } else if state.memory_bytes > memory {
                JobCheck::Rejected {
                    code: "memory_too_large",
                    message: format!(
                        "{job}'s tasks may use {} MiB; this provider offers {} MiB",
                        state.memory_bytes >> 20,
                        memory >> 20
                    ),
                }
            } else {
                JobCheck::Approved { requestor, module }
            }
        }
        Ok(None) => JobCheck::Rejected {
            code: "unknown_job",
            message: format!("the ledger has no {job}"),
        },
        Err(error) => JobCheck::Rejected {
            code: "ledger_unreachable",
            message: format!("could not check the job: {error}"),
        },
    }
}

/// The ledger's answer says a voucher will never pay more: it holds this
/// voucher or a newer one already, or the job is closed or gone.
fn settled(error: &ApiError) -> bool {
    matches!(
        error.code(),
        "voucher_not_newer"
            | "voucher_below_redeemed"
            | "voucher_fuel_below_redeemed"
            | "job_closed"
            | "job_expired"
            | "unknown_job"
    )
}

/// One transaction at a time from this process (the redeemer's, the
/// capacity challenges'): each takes its account's next nonce from the
/// node, so two sent at once would take the same one and one would be
/// refused, and resent only after a while (long enough to make an honest
/// challenge answer late).
static SENDING: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Sends `kind` from `key`'s account, in turn with this process's other
/// transactions.
pub(crate) fn send(
    client: &ApiClient,
    key: &Keypair,
    kind: TxKind,
) -> Result<idlegrid_api::client::Sent, ApiError> {
    let _turn = SENDING
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    client.send(key, kind, None)
}

/// Redeems vouchers on the ledger, one transaction at a time, on its own
/// thread, and tells the loop how each ended.
pub(crate) struct Redeemer {
    orders: std_mpsc::Sender<Vec<SignedVoucher>>,
}

impl Redeemer {
    pub(crate) fn start(
        client: ApiClient,
        key: Keypair,
        done: mpsc::UnboundedSender<Input>,
    ) -> anyhow::Result<Self> {
        let (orders, queue) = std_mpsc::channel::<Vec<SignedVoucher>>();
        std::thread::Builder::new()
            .name("provider-redeemer".to_owned())
            .spawn(move || {
                while let Ok(vouchers) = queue.recv() {
                    for voucher in vouchers {
                        let job = voucher.body.job;
                        let amount = voucher.body.cumulative_amount;
                        let result = send(&client, &key, TxKind::Redeem { voucher })
                            .and_then(|sent| client.wait_included(&sent.hash, TRANSACTION_WAIT));
                        let outcome = match result {
                            Ok(height) => {
                                info!(%job, amount, height, "voucher redeemed");
                                Redemption::Paid
                            }
                            Err(error) if settled(&error) => {
                                info!(%job, amount, code = error.code(), "voucher already settled");
                                Redemption::Settled
                            }
                            Err(error) => {
                                warn!(%job, %error, "redeeming a voucher failed");
                                Redemption::Failed
                            }
                        };
                        let report = Input::Redeemed {
                            job,
                            amount,
                            outcome,
                        };
                        if done.send(report).is_err() {
                            return;
                        }
                    }
                }
            })
            .context("failed to start the redeemer thread")?;
        Ok(Self { orders })
    }

    pub(crate) fn order(&self, vouchers: Vec<SignedVoucher>) {
        // The thread lives as long as the provider.
        let _ = self.orders.send(vouchers);
    }
}
