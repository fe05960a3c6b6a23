//! What a provider keeps on disk besides content (an
//! [`idlegrid_net::ContentStore`]): the newest voucher of each job, so that
//! a crash loses no earnings.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::mpsc as std_mpsc;

use anyhow::Context;
use idlegrid_net::{Reply, Response};
use idlegrid_types::{AccountId, JobId, SignedVoucher, codec};
use tracing::warn;

use crate::core::VOUCHERS_HELD_MAX;

/// Largest stored voucher file, bytes.
const VOUCHER_FILE_BYTES_MAX: usize = 4096;

/// Writes a file atomically (a temporary file, then a rename).
pub(crate) fn store_file(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let temporary = path.with_extension("partial");
    std::fs::write(&temporary, bytes)?;
    std::fs::rename(&temporary, path)
}

fn voucher_path(data_dir: &Path, job: &JobId) -> PathBuf {
    data_dir.join("vouchers").join(hex::encode(job.as_bytes()))
}

fn store_voucher(data_dir: &Path, voucher: &SignedVoucher) -> std::io::Result<()> {
    let path = voucher_path(data_dir, &voucher.body.job);
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let bytes = codec::encode(voucher).map_err(|error| std::io::Error::other(error.to_string()))?;
    store_file(&path, &bytes)
}

/// The vouchers stored by an earlier run; damaged or foreign files are skipped.
pub(crate) fn load_vouchers(data_dir: &Path, me: &AccountId) -> Vec<SignedVoucher> {
    let mut vouchers = Vec::new();
    let Ok(entries) = std::fs::read_dir(data_dir.join("vouchers")) else {
        return vouchers;
    };
    for entry in entries.flatten().take(VOUCHERS_HELD_MAX) {
        let Ok(bytes) = std::fs::read(entry.path()) else {
            continue;
        };
        match codec::decode::<SignedVoucher>(&bytes, VOUCHER_FILE_BYTES_MAX) {
            Ok(voucher) if voucher.verify().is_ok() && voucher.body.provider == *me => {
                vouchers.push(voucher);
            }
            _ => {
                warn!(path = %entry.path().display(), "skipping a voucher file that does not check")
            }
        }
    }
    vouchers
}

enum VoucherOrder {
    /// Store, then answer the request that brought it (none when the
    /// provider asked for it).
    Store(SignedVoucher, Option<Reply>),
    Forget(JobId),
}

/// Stores vouchers on their own thread, so that the provider's loop never
/// waits for the disk, and answers each voucher's request once it is
/// stored. Orders are carried out in the order given (a forgotten job's
/// file is never removed after a newer voucher was stored); vouchers that
/// piled up meanwhile are stored newest only.
pub(crate) struct VoucherWriter {
    orders: std_mpsc::Sender<VoucherOrder>,
}

impl VoucherWriter {
    pub(crate) fn start(data_dir: PathBuf) -> anyhow::Result<Self> {
        let (orders, queue) = std_mpsc::channel::<VoucherOrder>();
        std::thread::Builder::new()
            .name("provider-vouchers".to_owned())
            .spawn(move || {
                while let Ok(first) = queue.recv() {
                    let mut newest: HashMap<JobId, SignedVoucher> = HashMap::new();
                    let mut replies = Vec::new();
                    for order in std::iter::once(first).chain(queue.try_iter()) {
                        match order {
                            VoucherOrder::Store(voucher, reply) => {
                                replies.extend(reply);
                                let held = newest.get(&voucher.body.job);
                                if held
                                    .is_none_or(|held| voucher.body.sequence > held.body.sequence)
                                {
                                    newest.insert(voucher.body.job, voucher);
                                }
                            }
                            VoucherOrder::Forget(job) => {
                                newest.remove(&job);
                                let _ = std::fs::remove_file(voucher_path(&data_dir, &job));
                            }
                        }
                    }
                    for voucher in newest.values() {
                        if let Err(error) = store_voucher(&data_dir, voucher) {
                            // Still held in memory; only a crash before
                            // redeeming loses it.
                            warn!(%error, "failed to store a voucher");
                        }
                    }
                    for reply in replies {
                        reply.send(Response::Ok);
                    }
                }
            })
            .context("failed to start the voucher thread")?;
        Ok(Self { orders })
    }

    pub(crate) fn store(&self, voucher: SignedVoucher, reply: Option<Reply>) {
        // The thread lives as long as the provider.
        let _ = self.orders.send(VoucherOrder::Store(voucher, reply));
    }

    pub(crate) fn forget(&self, job: JobId) {
        let _ = self.orders.send(VoucherOrder::Forget(job));
    }
}
