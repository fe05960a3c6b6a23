//! Transactions submitted through the API, taken into the pool in batches:
//! concurrent submissions queue up, and one blocking task at a time drains
//! the queue through [`idlegrid_chain::submit_batch`] (one batch signature
//! check and one lock of the node per batch), answering each submitter.
//! Under load consensus then waits for the node's lock once per batch
//! rather than once per transaction; alone, a submission is its own batch.

use std::sync::{Arc, Mutex};

use idlegrid_chain::{Refused, SUBMIT_BATCH_MAX, SharedNode, submit_batch};
use idlegrid_ledger::{SignedTransaction, Store};
use idlegrid_types::ContentId;
use tokio::sync::oneshot;

/// Submissions waiting for the drain: beyond this, new ones are refused as
/// `unavailable` (the client may retry) rather than held.
pub const SUBMISSIONS_WAITING_MAX: usize = 16 * SUBMIT_BATCH_MAX;

type Answer = oneshot::Sender<Result<ContentId, Refused>>;

/// The queue of submissions in front of a node.
#[derive(Debug)]
pub struct Submissions<S: Store> {
    node: SharedNode<S>,
    waiting: Mutex<Waiting>,
}

#[derive(Debug, Default)]
struct Waiting {
    queue: Vec<(SignedTransaction, Answer)>,
    /// A drain is running (it runs until it finds the queue empty).
    draining: bool,
}

impl<S: Store + Send + 'static> Submissions<S> {
    pub fn new(node: SharedNode<S>) -> Arc<Self> {
        Arc::new(Self {
            node,
            waiting: Mutex::new(Waiting::default()),
        })
    }

    /// Takes `transaction` into the pool as [`idlegrid_chain::Node::submit`]
    /// does, batched with whatever else is waiting.
    pub async fn submit(
        self: &Arc<Self>,
        transaction: SignedTransaction,
    ) -> Result<ContentId, Refused> {
        let (answer, answered) = oneshot::channel();
        let start = {
            let mut waiting = self.waiting.lock().map_err(|_| poisoned())?;
            if waiting.queue.len() >= SUBMISSIONS_WAITING_MAX {
                return Err(Refused::Unavailable(format!(
                    "{SUBMISSIONS_WAITING_MAX} submissions are already waiting; try again shortly"
                )));
            }
            waiting.queue.push((transaction, answer));
            !std::mem::replace(&mut waiting.draining, true)
        };
        if start {
            let this = Arc::clone(self);
            tokio::task::spawn_blocking(move || this.drain());
        }
        answered.await.map_err(|_| {
            Refused::Unavailable("the node stopped before taking the transaction".to_owned())
        })?
    }

    /// Submits what waits, a batch at a time, until nothing does.
    fn drain(&self) {
        loop {
            let batch: Vec<(SignedTransaction, Answer)> = {
                let Ok(mut waiting) = self.waiting.lock() else {
                    return;
                };
                if waiting.queue.is_empty() {
                    waiting.draining = false;
                    return;
                }
                let take = waiting.queue.len().min(SUBMIT_BATCH_MAX);
                waiting.queue.drain(..take).collect()
            };
            let (transactions, answers): (Vec<_>, Vec<_>) = batch.into_iter().unzip();
            for (answer, result) in answers
                .into_iter()
                .zip(submit_batch(&self.node, transactions))
            {
                // The submitter may have gone (its request was dropped).
                let _ = answer.send(result);
            }
        }
    }
}

fn poisoned() -> Refused {
    Refused::Unavailable("the submission queue is poisoned by an earlier failure".to_owned())
}
