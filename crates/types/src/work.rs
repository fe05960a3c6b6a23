//! The objects that describe work and its payment: task inputs, outcomes,
//! provider receipts, requestor vouchers, and the re-execution interface a
//! validator uses to settle a dispute.

use std::fmt;

use borsh::{BorshDeserialize, BorshSerialize};

use crate::ContentId;
use crate::codec::{self, Bounded};
use crate::gpu::GpuOffer;
use crate::identity::{
    AccountId, BadSignature, Keypair, Signable, Signature, SignatureCache, Signed, verify_raw,
};

/// Most arguments a task may have.
pub const TASK_ARGS_MAX: usize = 256;
/// Longest single task argument, bytes.
pub const TASK_ARG_BYTES_MAX: usize = 4096;
/// Largest stdin a task carries inline, bytes.
pub const TASK_STDIN_BYTES_MAX: usize = 16 << 20;
/// Most files a task may be shown at `/input`.
pub const TASK_FILES_MAX: usize = 256;
/// Longest name of an input file, bytes.
pub const TASK_FILE_NAME_BYTES_MAX: usize = 255;
/// Largest encoded [`TaskInput`].
pub const TASK_INPUT_ENCODED_MAX: usize = TASK_STDIN_BYTES_MAX + (2 << 20);

/// Names a job on the ledger: the BLAKE3 of its requestor and the nonce of the
/// transaction that opened it, so it is unique and known before inclusion.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, BorshSerialize, BorshDeserialize)]
pub struct JobId([u8; 32]);

impl JobId {
    pub fn derive(requestor: &AccountId, nonce: u64) -> Self {
        let mut hasher = blake3::Hasher::new_derive_key("idlegrid job id v1");
        hasher.update(requestor.as_bytes());
        hasher.update(&nonce.to_le_bytes());
        Self(*hasher.finalize().as_bytes())
    }

    pub const fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    pub const fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl fmt::Display for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "job:{}", hex::encode(self.0))
    }
}

impl fmt::Debug for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "JobId({})", &hex::encode(self.0)[..12])
    }
}

impl std::str::FromStr for JobId {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let digits = text
            .strip_prefix("job:")
            .ok_or_else(|| "a job id starts with `job:`".to_owned())?;
        let mut bytes = [0u8; 32];
        hex::decode_to_slice(digits, &mut bytes)
            .map_err(|_| "a job id is `job:` and 64 hex digits".to_owned())?;
        Ok(Self(bytes))
    }
}

/// The seed of a task's `random_get` stream: every replica of task `index`
/// of `job` gets the same one.
pub fn task_seed(job: &JobId, task_index: u64) -> [u8; 32] {
    let mut hasher = blake3::Hasher::new_derive_key("idlegrid task seed v1");
    hasher.update(job.as_bytes());
    hasher.update(&task_index.to_le_bytes());
    *hasher.finalize().as_bytes()
}

/// A file a task reads at `/input/NAME`: named by content id, so the
/// input's own id commits to its bytes, and fetched by id from any peer
/// that holds it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, BorshSerialize, BorshDeserialize)]
pub struct InputFile {
    /// A plain file name (see [`InputFile::check_name`]).
    pub name: Bounded<String, TASK_FILE_NAME_BYTES_MAX>,
    pub cid: ContentId,
    /// Its length in bytes, so a provider knows what it takes on before
    /// fetching it.
    pub bytes: u64,
}

impl InputFile {
    /// Whether `name` can stand in a directory as one entry on every host:
    /// not empty, not `.` or `..`, no `/`, `\\` or NUL.
    pub fn check_name(name: &str) -> Result<(), String> {
        if name.is_empty() || name == "." || name == ".." {
            return Err(format!("`{name}` is not a file name"));
        }
        if name.len() > TASK_FILE_NAME_BYTES_MAX {
            return Err(format!(
                "a file name is at most {TASK_FILE_NAME_BYTES_MAX} bytes"
            ));
        }
        if let Some(bad) = name.chars().find(|c| matches!(c, '/' | '\\' | '\0')) {
            return Err(format!(
                "`{}` may not stand in a file name",
                bad.escape_default()
            ));
        }
        Ok(())
    }
}

/// What one task receives: its arguments, its stdin, and the files it sees
/// at `/input`. Its content id (of the canonical encoding) is the `input`
/// of a receipt.
#[derive(Debug, Clone, PartialEq, Eq, Default, BorshSerialize, BorshDeserialize)]
pub struct TaskInput {
    pub args: Bounded<Vec<Bounded<String, TASK_ARG_BYTES_MAX>>, TASK_ARGS_MAX>,
    pub stdin: Bounded<Vec<u8>, TASK_STDIN_BYTES_MAX>,
    /// In byte order of their names, no name twice.
    pub files: Bounded<Vec<InputFile>, TASK_FILES_MAX>,
}

impl TaskInput {
    pub fn new(args: Vec<String>, stdin: Vec<u8>) -> Result<Self, codec::LengthExceeded> {
        let args = args
            .into_iter()
            .map(Bounded::new)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            args: Bounded::new(args)?,
            stdin: Bounded::new(stdin)?,
            files: Bounded::default(),
        })
    }

    /// The same input with `files` at `/input` (sorted by name here).
    pub fn with_files(mut self, mut files: Vec<InputFile>) -> Result<Self, codec::LengthExceeded> {
        files.sort_by(|a, b| a.name.as_bytes().cmp(b.name.as_bytes()));
        self.files = Bounded::new(files)?;
        Ok(self)
    }

    /// Whether its files are well formed: plain names, in byte order, none
    /// twice. A provider refuses a task whose files are not.
    pub fn check_files(&self) -> Result<(), String> {
        for file in self.files.iter() {
            InputFile::check_name(&file.name)?;
        }
        match self
            .files
            .windows(2)
            .find(|pair| pair[0].name.as_bytes() >= pair[1].name.as_bytes())
        {
            Some(pair) => Err(format!(
                "input files `{}` and `{}` are out of order or the same",
                &*pair[0].name, &*pair[1].name
            )),
            None => Ok(()),
        }
    }

    /// The bytes of its files added up.
    pub fn file_bytes(&self) -> u64 {
        self.files
            .iter()
            .fold(0u64, |sum, file| sum.saturating_add(file.bytes))
    }

    pub fn encode(&self) -> Vec<u8> {
        codec::encode(self).expect("task inputs encode")
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, codec::DecodeError> {
        codec::decode(bytes, TASK_INPUT_ENCODED_MAX)
    }

    pub fn content_id(&self) -> ContentId {
        ContentId::of(&self.encode())
    }

    /// Its encoded size in bytes, without encoding it.
    pub fn encoded_len(&self) -> usize {
        let args: usize = self.args.iter().map(|arg| 4 + arg.len()).sum();
        let files: usize = self
            .files
            .iter()
            .map(|file| 4 + file.name.len() + 32 + 8)
            .sum();
        4 + args + 4 + self.stdin.len() + 4 + files
    }

    pub fn arg_strings(&self) -> Vec<String> {
        self.args.iter().map(|arg| (**arg).clone()).collect()
    }
}

/// Why a task did not complete. The names (`as_str`) are idlegrid's wire and
/// JSON vocabulary.
///
/// Every kind except [`ErrorKind::WallTimeout`] is deterministic: replicas of
/// the same task fail the same way after the same fuel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, BorshSerialize, BorshDeserialize)]
#[borsh(use_discriminant = true)]
#[repr(u8)]
pub enum ErrorKind {
    /// The bytes are not a module the sandbox accepts (malformed, a feature
    /// the deterministic profile forbids, an import it does not provide, no
    /// `_start`, too large).
    InvalidModule = 0,
    /// The task used all the fuel it was given.
    OutOfFuel = 1,
    /// The task asked for more linear memory (or table space) than allowed.
    MemoryLimit = 2,
    /// The task wrote more output (stdout or output files) than allowed.
    OutputLimit = 3,
    /// The task exhausted the wasm call stack.
    StackOverflow = 4,
    /// The task trapped (unreachable, out-of-bounds access, division by
    /// zero, …) or the sandbox refused something it did.
    Trap = 5,
    /// The host's wall-clock backstop stopped the task. Not deterministic;
    /// it protects the host and is not evidence about the module.
    WallTimeout = 6,
}

impl ErrorKind {
    pub const ALL: [ErrorKind; 7] = [
        ErrorKind::InvalidModule,
        ErrorKind::OutOfFuel,
        ErrorKind::MemoryLimit,
        ErrorKind::OutputLimit,
        ErrorKind::StackOverflow,
        ErrorKind::Trap,
        ErrorKind::WallTimeout,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            ErrorKind::InvalidModule => "invalid_module",
            ErrorKind::OutOfFuel => "out_of_fuel",
            ErrorKind::MemoryLimit => "memory_limit",
            ErrorKind::OutputLimit => "output_limit",
            ErrorKind::StackOverflow => "stack_overflow",
            ErrorKind::Trap => "trap",
            ErrorKind::WallTimeout => "wall_timeout",
        }
    }

    /// Whether every honest replica of the task reaches the same failure.
    pub const fn is_deterministic(self) -> bool {
        !matches!(self, ErrorKind::WallTimeout)
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How a task ended, as replicas compare it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, BorshSerialize, BorshDeserialize)]
pub enum TaskOutcome {
    /// Ran to its end with this exit code and output.
    Completed { exit_code: i32, output: ContentId },
    /// Stopped by a limit or a trap.
    Failed(ErrorKind),
}

/// A provider's signed statement of what one task produced.
#[derive(Debug, Clone, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub struct Receipt {
    pub job: JobId,
    pub task_index: u64,
    pub module: ContentId,
    pub input: ContentId,
    pub outcome: TaskOutcome,
    pub fuel_used: u64,
    /// Energy the task drew on the provider's machine, in millijoules, as
    /// the provider measured or modeled it (0: unknown). Advisory: honest
    /// replicas differ in it, so it is never compared between replicas and
    /// never used for payment or verification; only `outcome` and
    /// `fuel_used` are.
    pub energy_millijoules: u64,
}

/// Receipts one signature covers at most (a batch of results).
pub const RECEIPT_BATCH_MAX: usize = 1 << RECEIPT_PROOF_STEPS_MAX;
/// Steps in a receipt's path to its batch's root at most.
pub const RECEIPT_PROOF_STEPS_MAX: usize = 16;
/// The domain a batch's root is signed under.
const RECEIPT_BATCH_DOMAIN: &str = "idlegrid receipt batch v1";

/// One step up from a receipt towards the root its signature covers: the
/// sibling's hash, and on which side it stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub struct ProofStep {
    pub sibling: [u8; 32],
    pub sibling_on_left: bool,
}

/// A provider's signed receipt. A provider signs the results it returns
/// together once: the signature covers the root of a Merkle tree over the
/// batch's receipts, and `proof` leads from this receipt to that root. So
/// each receipt still stands alone as evidence (a dispute carries just
/// it), while a batch of hundreds costs one signature to make and one to
/// check. A receipt signed alone has an empty proof.
#[derive(Debug, Clone, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub struct SignedReceipt {
    pub body: Receipt,
    pub signer: AccountId,
    pub proof: Bounded<Vec<ProofStep>, RECEIPT_PROOF_STEPS_MAX>,
    /// Over the batch's root, under its own domain.
    pub signature: Signature,
}

impl SignedReceipt {
    /// Signs receipts as one batch (at most [`RECEIPT_BATCH_MAX`]; more are
    /// signed in several), in order.
    pub fn sign_batch(key: &Keypair, receipts: Vec<Receipt>) -> Vec<SignedReceipt> {
        let mut signed = Vec::with_capacity(receipts.len());
        let mut receipts = receipts.into_iter().peekable();
        while receipts.peek().is_some() {
            let batch: Vec<Receipt> = receipts.by_ref().take(RECEIPT_BATCH_MAX).collect();
            let levels = merkle_levels(batch.iter().map(receipt_leaf).collect());
            let root = levels.last().and_then(|level| level.first()).copied();
            let signature = key.sign_raw(RECEIPT_BATCH_DOMAIN, &root.unwrap_or_default());
            for (index, body) in batch.into_iter().enumerate() {
                let proof = merkle_proof(&levels, index);
                signed.push(SignedReceipt {
                    body,
                    signer: key.account_id(),
                    proof: Bounded::new(proof).expect("a batch is at most 2^16 receipts"),
                    signature,
                });
            }
        }
        signed
    }

    /// Signs one receipt alone.
    pub fn sign(key: &Keypair, receipt: Receipt) -> SignedReceipt {
        Self::sign_batch(key, vec![receipt])
            .pop()
            .expect("one receipt signed")
    }

    /// The root of the batch this receipt claims to belong to.
    pub fn root(&self) -> [u8; 32] {
        self.proof
            .iter()
            .fold(receipt_leaf(&self.body), |hash, step| {
                if step.sibling_on_left {
                    merkle_node(&step.sibling, &hash)
                } else {
                    merkle_node(&hash, &step.sibling)
                }
            })
    }

    pub fn verify(&self) -> Result<&Receipt, BadSignature> {
        self.verify_with(verify_raw)
    }

    /// [`Self::verify`], checking each batch's signature once: the other
    /// receipts of a batch already checked cost only their hashes.
    pub fn verify_cached(&self, cache: &SignatureCache) -> Result<&Receipt, BadSignature> {
        self.verify_with(|signer, domain, message, signature| {
            cache.verify_raw(signer, domain, message, signature)
        })
    }

    fn verify_with(
        &self,
        check: impl FnOnce(&AccountId, &str, &[u8], &Signature) -> Result<(), BadSignature>,
    ) -> Result<&Receipt, BadSignature> {
        check(
            &self.signer,
            RECEIPT_BATCH_DOMAIN,
            &self.root(),
            &self.signature,
        )?;
        Ok(&self.body)
    }
}

fn receipt_leaf(receipt: &Receipt) -> [u8; 32] {
    let mut hasher = blake3::Hasher::new_derive_key("idlegrid receipt leaf v1");
    hasher.update(&codec::encode(receipt).expect("receipts encode"));
    *hasher.finalize().as_bytes()
}

fn merkle_node(left: &[u8; 32], right: &[u8; 32]) -> [u8; 32] {
    let mut hasher = blake3::Hasher::new_derive_key("idlegrid receipt node v1");
    hasher.update(left);
    hasher.update(right);
    *hasher.finalize().as_bytes()
}

/// Every level of the tree over `leaves`, leaves first, root last. A node
/// without a sibling moves up unchanged.
fn merkle_levels(leaves: Vec<[u8; 32]>) -> Vec<Vec<[u8; 32]>> {
    let mut levels = vec![leaves];
    while levels.last().is_some_and(|level| level.len() > 1) {
        let below = levels.last().expect("a level");
        let above = below
            .chunks(2)
            .map(|pair| match pair {
                [left, right] => merkle_node(left, right),
                [alone] => *alone,
                _ => unreachable!("chunks of two"),
            })
            .collect();
        levels.push(above);
    }
    levels
}

/// The path from leaf `index` up to the root of `levels`.
fn merkle_proof(levels: &[Vec<[u8; 32]>], mut index: usize) -> Vec<ProofStep> {
    let mut proof = Vec::new();
    for level in &levels[..levels.len().saturating_sub(1)] {
        let sibling = index ^ 1;
        if let Some(hash) = level.get(sibling) {
            proof.push(ProofStep {
                sibling: *hash,
                sibling_on_left: sibling < index,
            });
        }
        index /= 2;
    }
    proof
}

/// A requestor's signed promise to pay `provider` a cumulative amount from a
/// job's escrow. A newer voucher (higher sequence) supersedes older ones.
#[derive(Debug, Clone, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub struct Voucher {
    pub job: JobId,
    pub provider: AccountId,
    pub cumulative_amount: u64,
    /// Fuel the cumulative amount pays for (used for epoch rewards).
    pub cumulative_fuel: u64,
    pub sequence: u64,
}

impl Signable for Voucher {
    const DOMAIN: &'static str = "idlegrid voucher v1";
}

pub type SignedVoucher = Signed<Voucher>;

/// The limits a job's tasks run under; a dispute re-executes with the same.
#[derive(Debug, Clone, Copy, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub struct ExecutionLimits {
    pub fuel: u64,
    pub memory_bytes: u64,
    pub output_bytes: u64,
}

/// What a re-execution found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Execution {
    pub outcome: TaskOutcome,
    pub fuel_used: u64,
}

/// What the ledger asks its host to judge: a task run again, exactly as a
/// provider must have (implemented by the sandbox), and evidence that a
/// validator signed two conflicting consensus votes (implemented where the
/// consensus protocol's types are). An `Err` means the host could not
/// decide (not a verdict).
pub trait ReExecute {
    fn re_execute(
        &self,
        module: &[u8],
        input: &TaskInput,
        seed: [u8; 32],
        limits: &ExecutionLimits,
    ) -> Result<Execution, String>;

    /// Checks consensus-fault evidence for chain `chain_id`, reading each
    /// epoch's validators through `validators_of`; returns who signed both
    /// votes, and where. A host that does not know the consensus protocol
    /// decides nothing.
    fn check_fault(
        &self,
        chain_id: &str,
        evidence: &[u8],
        validators_of: &dyn Fn(u64) -> Option<Vec<AccountId>>,
    ) -> Result<ConsensusFault, String> {
        let _ = (chain_id, evidence, validators_of);
        Err("this node does not judge consensus faults".to_owned())
    }

    /// Runs the capacity challenge of `passes` passes from `seed` and
    /// gives its output's id (implemented by the sandbox), to decide
    /// between answers that disagree.
    fn run_challenge(&self, seed: [u8; 32], passes: u32) -> Result<ContentId, String> {
        let _ = (seed, passes);
        Err("this node does not run capacity challenges".to_owned())
    }
}

/// A validator proven to have signed two conflicting votes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConsensusFault {
    pub validator: AccountId,
    pub epoch: u64,
    pub view: u64,
}

/// A provider's signed, expiring advertisement of what it offers.
#[derive(Debug, Clone, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub struct Offer {
    pub cores: u32,
    pub memory_bytes: u64,
    /// The GPU it runs GPU tasks on, if it offers one.
    pub gpu: Option<GpuOffer>,
    /// Fuel per second on the reference workload.
    pub benchmark_fuel_per_second: u64,
    /// The lowest job price it accepts, per million fuel.
    pub price_floor_per_million_fuel: u64,
    /// Tasks it runs at once.
    pub concurrency: u32,
    /// Pauses new work while its owner is busy.
    pub idle_only: bool,
    /// The operator running this provider, when it says (replicas of one
    /// task never go to one operator).
    pub operator: Option<AccountId>,
    /// Higher supersedes lower.
    pub sequence: u64,
    /// Milliseconds since the Unix epoch after which the offer is void.
    pub expires_at_ms: u64,
}

impl Signable for Offer {
    const DOMAIN: &'static str = "idlegrid offer v1";
}

pub type SignedOffer = Signed<Offer>;

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn receipt(task_index: u64) -> Receipt {
        Receipt {
            job: JobId::from_bytes([7; 32]),
            task_index,
            module: ContentId::of(b"module"),
            input: ContentId::of(&task_index.to_le_bytes()),
            outcome: TaskOutcome::Completed {
                exit_code: 0,
                output: ContentId::of(b"out"),
            },
            fuel_used: 1_000 + task_index,
            energy_millijoules: 50 + task_index,
        }
    }

    proptest! {
        #[test]
        fn every_receipt_of_a_batch_verifies_alone_and_no_altered_one_does(
            count in 1usize..300,
            pick in any::<prop::sample::Index>(),
            flip in any::<prop::sample::Index>(),
        ) {
            let key = Keypair::from_seed([3; 32]);
            let signed = SignedReceipt::sign_batch(&key, (0..count as u64).map(receipt).collect());
            prop_assert_eq!(signed.len(), count);
            // One signature for the batch.
            prop_assert!(signed.iter().all(|one| one.signature == signed[0].signature));
            for one in &signed {
                prop_assert!(one.verify().is_ok());
                // Alone, through the encoding a dispute carries it in.
                let decoded: SignedReceipt =
                    codec::decode(&codec::encode(one).expect("encodes"), 4096).expect("decodes");
                prop_assert!(decoded.verify().is_ok());
            }
            let mut altered = signed[pick.index(count)].clone();
            altered.body.fuel_used += 1;
            prop_assert!(altered.verify().is_err());
            // The energy figure is signed too: advisory, but the provider's word.
            let mut altered = signed[pick.index(count)].clone();
            altered.body.energy_millijoules += 1;
            prop_assert!(altered.verify().is_err());
            // Another receipt's place in the tree does not fit this one.
            if count > 1 {
                let mut moved = signed[pick.index(count)].clone();
                let other = &signed[(pick.index(count) + 1) % count];
                moved.proof = other.proof.clone();
                prop_assert!(moved.verify().is_err());
                let mut flipped = signed[pick.index(count)].clone();
                if !flipped.proof.is_empty() {
                    let mut steps = flipped.proof.to_vec();
                    let at = flip.index(steps.len());
                    steps[at].sibling_on_left = !steps[at].sibling_on_left;
                    flipped.proof = Bounded::new(steps).expect("same length");
                    prop_assert!(flipped.verify().is_err());
                }
            }
            // Someone else's key over the same root does not pass either.
            let mut forged = signed[pick.index(count)].clone();
            forged.signer = Keypair::from_seed([4; 32]).account_id();
            prop_assert!(forged.verify().is_err());
        }
    }

    #[test]
    fn a_cache_checks_a_batch_signature_once_and_still_refuses_forgeries() {
        let key = Keypair::from_seed([3; 32]);
        let cache = SignatureCache::default();
        let signed = SignedReceipt::sign_batch(&key, (0..64).map(receipt).collect());
        for one in &signed {
            assert!(one.verify_cached(&cache).is_ok());
        }
        let mut altered = signed[5].clone();
        altered.body.task_index = 6;
        assert!(altered.verify_cached(&cache).is_err());
        assert!(SignedReceipt::sign(&key, receipt(1)).proof.is_empty());
    }
}
