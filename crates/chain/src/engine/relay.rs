//! The transaction relay: what one validator accepted, passed to the
//! others in bounded messages.

use std::time::Duration;

use commonware_cryptography::ed25519::PublicKey;
use commonware_p2p::{Receiver, Recipients, Sender};
use commonware_runtime::{Clock, Spawner};
use idlegrid_ledger::{SignedTransaction, Store};
use idlegrid_types::codec::{Bounded, decode, encode};

use super::{Channel, account_of};
use crate::node::SharedNode;

/// The most transactions one relay message carries.
pub const RELAY_TRANSACTIONS_MAX: usize = 4_096;
/// The most bytes of one relay message.
pub const RELAY_BYTES_MAX: usize = 2 << 20;

/// How often a validator with nothing to relay says it is alive.
const HEARTBEAT: Duration = Duration::from_secs(1);

/// Relays transactions this validator accepted to the others, and takes in
/// theirs; a relay message is a bounded list of signed transactions.
pub(super) fn start_relay<E, S, R, St>(
    context: E,
    interval: Duration,
    node: SharedNode<St>,
    (mut sender, mut receiver): Channel<S, R>,
) where
    E: Spawner + Clock,
    S: Sender<PublicKey = PublicKey>,
    R: Receiver<PublicKey = PublicKey>,
    St: Store + Send + 'static,
{
    let outgoing = node.clone();
    context.child("out").spawn(move |context| async move {
        // An empty message now and then tells the others this validator
        // is alive even when it has nothing to relay.
        let heartbeat = (HEARTBEAT.as_millis() / interval.as_millis().max(1)).max(1);
        let mut quiet = 0u128;
        loop {
            context.sleep(interval).await;
            let Ok(batch) = outgoing.lock().map(|mut node| node.take_outbox()) else {
                return;
            };
            let mut messages = relay_messages(batch);
            quiet += 1;
            if messages.is_empty() && quiet >= heartbeat {
                messages.extend(encode(&Vec::<SignedTransaction>::new()).ok());
            }
            if !messages.is_empty() {
                quiet = 0;
            }
            for message in messages {
                sender.send(Recipients::All, message, false);
            }
        }
    });
    context.child("in").spawn(move |_| async move {
        let signatures = crate::node::signature_cache(&node);
        while let Ok((from, message)) = receiver.recv().await {
            let Some(batch) = decode_relay(message.as_ref()) else {
                tracing::debug!(peer = %account_of(&from), "malformed relay message");
                continue;
            };
            // Signatures first, outside the node's lock and as one batch;
            // the pool then finds them checked.
            let batch: Vec<SignedTransaction> = match &signatures {
                Some(cache) => {
                    let answers = cache.verify_many(&batch);
                    batch
                        .into_iter()
                        .zip(answers)
                        .filter_map(|(transaction, answer)| answer.is_ok().then_some(transaction))
                        .collect()
                }
                None => batch,
            };
            let Ok(mut node) = node.lock() else {
                return;
            };
            node.heard_from(account_of(&from));
            for transaction in batch {
                // Refusals are expected (the same transaction from several
                // peers, or already in a block) and cost the sender nothing.
                let _ = node.relayed(transaction);
            }
        }
    });
}

/// A relay message from a peer: at most [`RELAY_TRANSACTIONS_MAX`]
/// transactions in at most [`RELAY_BYTES_MAX`] bytes, or nothing.
pub fn decode_relay(bytes: &[u8]) -> Option<Vec<SignedTransaction>> {
    decode::<Bounded<Vec<SignedTransaction>, RELAY_TRANSACTIONS_MAX>>(bytes, RELAY_BYTES_MAX)
        .ok()
        .map(Bounded::into_inner)
}

/// Splits transactions into relay messages within the relay bounds.
fn relay_messages(batch: Vec<SignedTransaction>) -> Vec<Vec<u8>> {
    let mut messages = Vec::new();
    let mut current: Vec<SignedTransaction> = Vec::new();
    let mut bytes = 16;
    for transaction in batch {
        let size = encode(&transaction).map_or(usize::MAX, |encoded| encoded.len());
        if size > RELAY_BYTES_MAX / 2 {
            continue;
        }
        if current.len() == RELAY_TRANSACTIONS_MAX || bytes + size > RELAY_BYTES_MAX {
            messages.extend(encode(&std::mem::take(&mut current)).ok());
            bytes = 16;
        }
        bytes += size;
        current.push(transaction);
    }
    if !current.is_empty() {
        messages.extend(encode(&current).ok());
    }
    messages
}
