//! The ledger's epochs and validator sets as commonware sees them:
//! [`LedgerEpocher`], [`EpochSchemes`] and [`validator_set`].

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use commonware_consensus::types::{Epoch, EpochInfo, Epocher, Height};
use commonware_cryptography::certificate;
use commonware_cryptography::ed25519::{PrivateKey, PublicKey};
use commonware_utils::ordered::Set;
use idlegrid_ledger::Store;

use super::{EngineError, Scheme, public_key};
use crate::node::SharedNode;

/// The ledger's epochs for commonware: epoch 0 is genesis through height
/// `length`; epoch `e` is `e × length + 1 ..= (e + 1) × length`, so an
/// engine epoch ends where the ledger pays rewards and takes the next set.
#[derive(Debug, Clone, Copy)]
pub struct LedgerEpocher {
    length: u64,
}

impl LedgerEpocher {
    pub fn new(length: u64) -> Self {
        Self {
            length: length.max(1),
        }
    }

    pub(super) fn bounds(&self, epoch: u64) -> Option<(u64, u64)> {
        let last = epoch.checked_add(1)?.checked_mul(self.length)?;
        let first = if epoch == 0 {
            0
        } else {
            epoch.checked_mul(self.length)?.checked_add(1)?
        };
        Some((first, last))
    }
}

impl Epocher for LedgerEpocher {
    fn containing(&self, height: Height) -> Option<EpochInfo> {
        let epoch = height.get().saturating_sub(1) / self.length;
        let (first, last) = self.bounds(epoch)?;
        Some(EpochInfo::new(
            Epoch::new(epoch),
            height,
            Height::new(first),
            Height::new(last),
        ))
    }

    fn first(&self, epoch: Epoch) -> Option<Height> {
        self.bounds(epoch.get())
            .map(|(first, _)| Height::new(first))
    }

    fn last(&self, epoch: Epoch) -> Option<Height> {
        self.bounds(epoch.get()).map(|(_, last)| Height::new(last))
    }
}

/// Schemes built so far, by epoch, with whether this node signs in it.
type BuiltSchemes = Arc<Mutex<BTreeMap<u64, (Arc<Scheme>, bool)>>>;

/// Each epoch's certificate scheme, built from the validator set the
/// ledger recorded for it (none for an epoch the ledger has not reached).
pub struct EpochSchemes<S: Store> {
    node: SharedNode<S>,
    namespace: Arc<[u8]>,
    signer: PrivateKey,
    built: BuiltSchemes,
}

impl<S: Store> Clone for EpochSchemes<S> {
    fn clone(&self) -> Self {
        Self {
            node: Arc::clone(&self.node),
            namespace: Arc::clone(&self.namespace),
            signer: self.signer.clone(),
            built: Arc::clone(&self.built),
        }
    }
}

impl<S: Store> std::fmt::Debug for EpochSchemes<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EpochSchemes").finish_non_exhaustive()
    }
}

impl<S: Store> EpochSchemes<S> {
    pub(super) fn new(node: SharedNode<S>, namespace: &[u8], signer: PrivateKey) -> Self {
        Self {
            node,
            namespace: namespace.into(),
            signer,
            built: Arc::default(),
        }
    }

    /// The validators of `epoch`, once the ledger knows them.
    fn participants(&self, epoch: u64) -> Option<Set<PublicKey>> {
        let set = self
            .node
            .lock()
            .ok()?
            .ledger()
            .validator_set(epoch)
            .ok()??;
        let keys: Vec<PublicKey> = set
            .iter()
            .filter_map(|(account, _)| public_key(account).ok())
            .collect();
        Set::try_from(keys).ok()
    }

    /// The scheme of `epoch`, and whether this node signs in it.
    pub(super) fn get(&self, epoch: u64) -> Option<(Arc<Scheme>, bool)> {
        if let Some(found) = self.built.lock().ok()?.get(&epoch) {
            return Some(found.clone());
        }
        let participants = self.participants(epoch)?;
        let built = match Scheme::signer(&self.namespace, participants.clone(), self.signer.clone())
        {
            Some(scheme) => (Arc::new(scheme), true),
            None => (
                Arc::new(Scheme::verifier(&self.namespace, participants)),
                false,
            ),
        };
        self.built.lock().ok()?.insert(epoch, built.clone());
        Some(built)
    }
}

impl<S: Store + Send + 'static> certificate::Provider for EpochSchemes<S> {
    type Scope = Epoch;
    type Scheme = Scheme;

    fn scoped(&self, epoch: Epoch) -> Option<certificate::Scoped<Scheme>> {
        let (scheme, signs) = self.get(epoch.get())?;
        Some(if signs {
            certificate::Scoped::scheme(scheme)
        } else {
            certificate::Scoped::verifier(scheme)
        })
    }
}

/// The validator set of the epoch the next block belongs to (the
/// ledger's record, taken from validator stake at the end of the epoch
/// before), in key order.
pub fn validator_set<S: Store>(node: &SharedNode<S>) -> Result<Set<PublicKey>, EngineError> {
    let node = node.lock().map_err(|_| EngineError::Poisoned)?;
    let ledger = node.ledger();
    let epoch = ledger.epoch_of(ledger.height() + 1);
    let validators = ledger
        .validator_set(epoch)
        .map_err(|error| EngineError::Ledger(error.to_string()))?
        .unwrap_or_default();
    if validators.is_empty() {
        return Err(EngineError::NoValidators);
    }
    let keys = validators
        .iter()
        .map(|(account, _)| public_key(account))
        .collect::<Result<Vec<_>, _>>()?;
    Set::try_from(keys).map_err(|_| EngineError::DuplicateValidator)
}

/// The epoch of `height`.
pub(super) fn epocher_epoch(epocher: &LedgerEpocher, height: u64) -> u64 {
    epocher
        .containing(Height::new(height))
        .map_or(0, |info| info.epoch().get())
}
