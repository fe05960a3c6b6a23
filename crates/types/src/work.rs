//! The objects that describe work and its payment: task inputs, outcomes,
//! provider receipts, requestor vouchers, and the re-execution interface a
//! validator uses to settle a dispute.

use std::fmt;

use borsh::{BorshDeserialize, BorshSerialize};

use crate::ContentId;
use crate::codec::{self, Bounded};
use crate::identity::{AccountId, Signable, Signed};

/// Most arguments a task may have.
pub const TASK_ARGS_MAX: usize = 256;
/// Longest single task argument, bytes.
pub const TASK_ARG_BYTES_MAX: usize = 4096;
/// Largest stdin a task carries inline, bytes.
pub const TASK_STDIN_BYTES_MAX: usize = 16 << 20;
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

/// What one task receives: its arguments and its stdin. Its content id (of
/// the canonical encoding) is the `input` of a receipt.
#[derive(Debug, Clone, PartialEq, Eq, Default, BorshSerialize, BorshDeserialize)]
pub struct TaskInput {
    pub args: Bounded<Vec<Bounded<String, TASK_ARG_BYTES_MAX>>, TASK_ARGS_MAX>,
    pub stdin: Bounded<Vec<u8>, TASK_STDIN_BYTES_MAX>,
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
        })
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
        4 + args + 4 + self.stdin.len()
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
}

impl Signable for Receipt {
    const DOMAIN: &'static str = "idlegrid receipt v1";
}

pub type SignedReceipt = Signed<Receipt>;

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

/// Runs a task again, exactly as a provider must have: implemented by the
/// sandbox, called by the ledger to decide a dispute. An `Err` means the host
/// could not run it (not a verdict on the task).
pub trait ReExecute {
    fn re_execute(
        &self,
        module: &[u8],
        input: &TaskInput,
        seed: [u8; 32],
        limits: &ExecutionLimits,
    ) -> Result<Execution, String>;
}

/// A provider's signed, expiring advertisement of what it offers.
#[derive(Debug, Clone, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub struct Offer {
    pub cores: u32,
    pub memory_bytes: u64,
    pub gpus: u32,
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
