//! Consensus faults as the ledger judges them: evidence that a validator
//! signed two conflicting simplex votes in one round (two notarizes for
//! different proposals, two finalizes for different proposals, or a
//! nullify and a finalize), checked against the validator set the ledger
//! recorded for that round's epoch.
//!
//! Evidence travels in a `ReportFault` transaction as one tag byte and the
//! activity in commonware's own encoding; [`fault_evidence`] makes it from
//! what simplex reports, [`check_fault`] decides it for the ledger, and
//! [`FaultJudge`] gives the ledger both kinds of judgement (tasks and
//! faults) through its one `ReExecute`.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use commonware_actor::Feedback;
use commonware_codec::{DecodeExt, Encode};
use commonware_consensus::simplex::types::{
    Activity, Attributable, ConflictingFinalize, ConflictingNotarize, Notarize, NullifyFinalize,
    Proposal,
};
use commonware_consensus::types::{Epoch, Round, View};
use commonware_consensus::{Epochable, Reporter, Viewable};
use commonware_cryptography::blake3::Digest;
use commonware_cryptography::ed25519::{PrivateKey, PublicKey};
use commonware_parallel::Sequential;
use commonware_utils::ordered::Set;
use idlegrid_ledger::{Store, Transaction, TxKind};
use idlegrid_types::codec::Bounded;
use idlegrid_types::{
    AccountId, ConsensusFault, ContentId, Execution, ExecutionLimits, Keypair, ReExecute, TaskInput,
};

use super::{Scheme, account_of, public_key};
use crate::node::SharedNode;

const CONFLICTING_NOTARIZE: u8 = 0;
const CONFLICTING_FINALIZE: u8 = 1;
const NULLIFY_FINALIZE: u8 = 2;

/// The consensus namespace of a chain: what every vote signs under.
pub fn namespace(chain_id: &str) -> Vec<u8> {
    format!("idlegrid-chain:{chain_id}").into_bytes()
}

/// The evidence bytes of a fault simplex reported; `None` for every
/// activity that is not a fault.
pub fn fault_evidence(activity: &Activity<Scheme, Digest>) -> Option<Vec<u8>> {
    let (tag, body) = match activity {
        Activity::ConflictingNotarize(fault) => (CONFLICTING_NOTARIZE, fault.encode()),
        Activity::ConflictingFinalize(fault) => (CONFLICTING_FINALIZE, fault.encode()),
        Activity::NullifyFinalize(fault) => (NULLIFY_FINALIZE, fault.encode()),
        _ => return None,
    };
    Some([&[tag][..], &body[..]].concat())
}

/// Decides fault evidence for chain `chain_id`: both votes must verify
/// under the validator set of their epoch (read through `validators_of`).
pub fn check_fault(
    chain_id: &str,
    evidence: &[u8],
    validators_of: &dyn Fn(u64) -> Option<Vec<AccountId>>,
) -> Result<ConsensusFault, String> {
    let (&tag, body) = evidence
        .split_first()
        .ok_or_else(|| "the evidence is empty".to_owned())?;
    let body = Bytes::copy_from_slice(body);
    let malformed = |error: commonware_codec::Error| format!("malformed evidence: {error}");
    let namespace = namespace(chain_id);
    // Valid signatures verify whatever the coefficients; fresh ones from
    // the OS keep forged ones from cancelling out in the batch.
    let mut rng = rand_core::UnwrapErr(getrandom_04::SysRng);
    match tag {
        CONFLICTING_NOTARIZE => {
            let fault = ConflictingNotarize::<Scheme, Digest>::decode(body).map_err(malformed)?;
            judge(&fault, validators_of, &namespace, |scheme| {
                fault.verify(&mut rng, scheme, &Sequential)
            })
        }
        CONFLICTING_FINALIZE => {
            let fault = ConflictingFinalize::<Scheme, Digest>::decode(body).map_err(malformed)?;
            judge(&fault, validators_of, &namespace, |scheme| {
                fault.verify(&mut rng, scheme, &Sequential)
            })
        }
        NULLIFY_FINALIZE => {
            let fault = NullifyFinalize::<Scheme, Digest>::decode(body).map_err(malformed)?;
            judge(&fault, validators_of, &namespace, |scheme| {
                fault.verify(&mut rng, scheme, &Sequential)
            })
        }
        other => Err(format!("unknown evidence kind {other}")),
    }
}

/// A validator set as a consensus participant set (ordered by key).
fn participants(validators: &[AccountId]) -> Result<Set<PublicKey>, String> {
    let keys = validators
        .iter()
        .map(public_key)
        .collect::<Result<Vec<PublicKey>, _>>()
        .map_err(|error| error.to_string())?;
    Set::try_from(keys).map_err(|_| "a validator is listed twice".to_owned())
}

fn judge(
    fault: &(impl Attributable + Epochable + Viewable),
    validators_of: &dyn Fn(u64) -> Option<Vec<AccountId>>,
    namespace: &[u8],
    verify: impl FnOnce(&Scheme) -> bool,
) -> Result<ConsensusFault, String> {
    let epoch = fault.epoch().get();
    let accounts = validators_of(epoch)
        .ok_or_else(|| format!("the ledger has no validators for epoch {epoch}"))?;
    let participants = participants(&accounts)?;
    let signer = participants
        .get(fault.signer().get() as usize)
        .ok_or_else(|| format!("the signer is not one of epoch {epoch}'s validators"))?;
    let validator = account_of(signer);
    if !verify(&Scheme::verifier(namespace, participants.clone())) {
        return Err("a vote's signature does not verify".to_owned());
    }
    Ok(ConsensusFault {
        validator,
        epoch,
        view: fault.view().get(),
    })
}

/// What a validator's ledger judges with: tasks re-executed by `tasks`,
/// consensus faults by [`check_fault`].
#[derive(Debug)]
pub struct FaultJudge<E> {
    pub tasks: E,
}

impl<E: ReExecute> ReExecute for FaultJudge<E> {
    fn re_execute(
        &self,
        module: &[u8],
        input: &TaskInput,
        seed: [u8; 32],
        limits: &ExecutionLimits,
    ) -> Result<Execution, String> {
        self.tasks.re_execute(module, input, seed, limits)
    }

    fn run_challenge(&self, seed: [u8; 32], passes: u32) -> Result<ContentId, String> {
        self.tasks.run_challenge(seed, passes)
    }

    fn check_fault(
        &self,
        chain_id: &str,
        evidence: &[u8],
        validators_of: &dyn Fn(u64) -> Option<Vec<AccountId>>,
    ) -> Result<ConsensusFault, String> {
        check_fault(chain_id, evidence, validators_of)
    }
}

/// Two notarize votes signed by `key` for different payloads in one round
/// of `epoch` (whose validators are `validators`), as evidence: what an
/// equivocating validator sends. For fault drills and tests.
pub fn conflicting_notarize(
    chain_id: &str,
    key: &PrivateKey,
    validators: &[AccountId],
    epoch: u64,
    view: u64,
) -> Result<Vec<u8>, String> {
    let scheme = Scheme::signer(&namespace(chain_id), participants(validators)?, key.clone())
        .ok_or_else(|| "the key is not one of the validators".to_owned())?;
    let round = Round::new(Epoch::new(epoch), View::new(view));
    let parent = View::new(view.saturating_sub(1));
    let vote = |payload: u8| {
        Notarize::sign(&scheme, Proposal::new(round, parent, Digest([payload; 32])))
            .ok_or_else(|| "the scheme cannot sign".to_owned())
    };
    let fault = ConflictingNotarize::new(vote(1)?, vote(2)?);
    fault_evidence(&Activity::ConflictingNotarize(fault)).ok_or_else(|| "not a fault".to_owned())
}

/// Faults reported once per node: at most this many remembered.
const REPORTED_REMEMBERED_MAX: usize = 1_024;

/// Simplex's reporter with two things in front: each fault simplex proves
/// (two conflicting votes it received from one validator) goes into this
/// validator's pool as a `ReportFault` transaction signed by its own
/// account, once; and who signed each finalization is noted in the node's
/// [`crate::Uptime`]. Everything is passed on to `inner`.
pub struct FaultReporter<R, S: Store> {
    inner: R,
    node: SharedNode<S>,
    key: Keypair,
    reported: Arc<Mutex<BTreeSet<Vec<u8>>>>,
}

impl<R, S: Store> std::fmt::Debug for FaultReporter<R, S> {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("FaultReporter")
            .field("account", &self.key.account_id())
            .finish_non_exhaustive()
    }
}

impl<R: Clone, S: Store> Clone for FaultReporter<R, S> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            node: Arc::clone(&self.node),
            key: self.key.clone(),
            reported: Arc::clone(&self.reported),
        }
    }
}

impl<R, S: Store> FaultReporter<R, S> {
    pub fn new(inner: R, node: SharedNode<S>, key: Keypair) -> Self {
        Self {
            inner,
            node,
            key,
            reported: Arc::default(),
        }
    }

    fn submit(&self, evidence: Vec<u8>) {
        {
            let Ok(mut reported) = self.reported.lock() else {
                return;
            };
            if reported.len() >= REPORTED_REMEMBERED_MAX || !reported.insert(evidence.clone()) {
                return;
            }
        }
        let Ok(mut node) = self.node.lock() else {
            return;
        };
        let me = self.key.account_id();
        let ledger = node.ledger();
        let (chain_id, fee) = (ledger.chain_id().to_owned(), ledger.params().minimum_fee);
        let nonce = match ledger.account(&me) {
            Ok(account) => node.mempool.next_nonce(&me, account.nonce),
            Err(error) => {
                tracing::warn!(%error, "cannot report a consensus fault: the ledger is unreadable");
                return;
            }
        };
        let Ok(evidence) = Bounded::new(evidence) else {
            return;
        };
        let kind = TxKind::ReportFault { evidence };
        let Ok(body) = Transaction::new(&chain_id, nonce, fee, kind) else {
            return;
        };
        match node.submit(self.key.sign(body)) {
            Ok(hash) => tracing::warn!(%hash, "a validator signed conflicting votes; reported it"),
            Err(refused) => {
                tracing::info!(reason = %refused, "a consensus fault was not reported (already, or by someone else)")
            }
        }
    }
}

impl<R, S> Reporter for FaultReporter<R, S>
where
    R: Reporter<Activity = Activity<Scheme, Digest>>,
    S: Store + Send + 'static,
{
    type Activity = Activity<Scheme, Digest>;

    fn report(&mut self, activity: Self::Activity) -> Feedback {
        if let Some(evidence) = fault_evidence(&activity) {
            self.submit(evidence);
        }
        if let Activity::Finalization(finalization) = &activity
            && let Ok(mut node) = self.node.lock()
        {
            let signers = finalization
                .certificate
                .signers
                .iter()
                .map(|signer| signer.get());
            node.uptime
                .record(finalization.proposal.round.epoch().get(), signers);
        }
        self.inner.report(activity)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use idlegrid_ledger::{Event, Genesis, Ledger, MemoryStore, NoReExecution, Params};

    use super::*;
    use crate::engine::private_key;
    use crate::{Chain, Mempool, MempoolConfig, shared};

    const CHAIN: &str = "idlegrid-faults";

    fn keys() -> Vec<Keypair> {
        (1..=4u8)
            .map(|seed| Keypair::from_seed([seed; 32]))
            .collect()
    }

    fn members() -> Vec<AccountId> {
        keys().iter().map(Keypair::account_id).collect()
    }

    fn node() -> SharedNode<MemoryStore> {
        let genesis = Genesis {
            chain_id: CHAIN.to_owned(),
            params: Params::default(),
            balances: keys()
                .iter()
                .map(|key| (key.account_id(), 10_000))
                .collect(),
            validators: keys()
                .iter()
                .map(|key| (key.account_id(), 100_000))
                .collect(),
        };
        let ledger = Ledger::init(MemoryStore::default(), &genesis).expect("genesis");
        shared(
            Chain::new(ledger).expect("chain"),
            Mempool::new(MempoolConfig::default()),
            Box::new(FaultJudge {
                tasks: NoReExecution,
            }),
        )
    }

    fn of_epoch(epoch: u64) -> Option<Vec<AccountId>> {
        (epoch == 0).then(members)
    }

    fn evidence_against(index: usize, view: u64) -> Vec<u8> {
        conflicting_notarize(
            CHAIN,
            &private_key(keys()[index].seed()),
            &members(),
            0,
            view,
        )
        .expect("evidence")
    }

    #[test]
    fn conflicting_votes_prove_a_fault_by_their_signer() {
        let evidence = evidence_against(2, 7);
        let fault = check_fault(CHAIN, &evidence, &of_epoch).expect("proven");
        assert_eq!(fault.validator, keys()[2].account_id());
        assert_eq!((fault.epoch, fault.view), (0, 7));
    }

    #[test]
    fn evidence_that_does_not_hold_is_refused_with_a_reason() {
        let evidence = evidence_against(1, 3);
        let refused =
            |bytes: &[u8], chain: &str| check_fault(chain, bytes, &of_epoch).expect_err("refused");
        // Signed for another chain.
        assert!(refused(&evidence, "another-chain").contains("does not verify"));
        // A flipped bit in the last signature.
        let mut forged = evidence.clone();
        *forged.last_mut().expect("bytes") ^= 1;
        assert!(refused(&forged, CHAIN).contains("does not verify"));
        // An epoch the ledger has no set for.
        let none = |_: u64| None;
        assert!(
            check_fault(CHAIN, &evidence, &none)
                .expect_err("no set")
                .contains("no validators")
        );
        // Garbage, an empty report, an unknown kind, a truncated one.
        assert!(refused(&[], CHAIN).contains("empty"));
        assert!(refused(&[9, 1, 2], CHAIN).contains("unknown evidence kind"));
        assert!(refused(&evidence[..evidence.len() / 2], CHAIN).contains("malformed"));
        // A signer index past the set: a set of two cannot hold index 1's
        // signature as anyone's.
        let small = |_: u64| Some(members()[..1].to_vec());
        assert!(check_fault(CHAIN, &evidence, &small).is_err());
    }

    #[derive(Clone, Default)]
    struct Counted(Arc<AtomicUsize>);

    impl Reporter for Counted {
        type Activity = Activity<Scheme, Digest>;

        fn report(&mut self, _: Self::Activity) -> Feedback {
            self.0.fetch_add(1, Ordering::SeqCst);
            Feedback::Ok
        }
    }

    #[test]
    fn a_validator_reports_a_fault_simplex_proves_once_and_the_ledger_slashes_it() {
        let node = node();
        let inner = Counted::default();
        let mut reporter = FaultReporter::new(inner.clone(), Arc::clone(&node), keys()[0].clone());
        let evidence = evidence_against(3, 5);
        let activity = || {
            let body = Bytes::copy_from_slice(&evidence[1..]);
            Activity::ConflictingNotarize(
                ConflictingNotarize::<Scheme, Digest>::decode(body).expect("decodes"),
            )
        };
        reporter.report(activity());
        reporter.report(activity());
        assert_eq!(inner.0.load(Ordering::SeqCst), 2, "everything is passed on");
        let mut node = node.lock().expect("node");
        assert_eq!(node.mempool.len(), 1, "reported once");
        let built = {
            let node = &mut *node;
            node.mempool
                .propose(node.chain.ledger(), 0, 100, 1 << 20, node.executor.as_ref())
                .expect("a block")
        };
        let events: Vec<&Event> = built
            .outcome
            .transactions
            .iter()
            .flat_map(|result| result.outcome.as_ref().expect("applies"))
            .collect();
        assert!(events.iter().any(|event| matches!(
            event,
            Event::ValidatorSlashed { validator, own: 5_000, .. } if *validator == keys()[3].account_id()
        )));
    }
}
