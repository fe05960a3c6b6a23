//! Signed transactions, what applying one produces, and why one is refused.

use borsh::{BorshDeserialize, BorshSerialize};
use idlegrid_types::capacity::GPU_CHALLENGE_SOLUTIONS;
use idlegrid_types::codec::{self, Bounded, DecodeError};
use idlegrid_types::{
    AccountId, ContentId, ExecutionLimits, JobId, Signable, Signed, SignedReceipt, SignedVoucher,
    TaskOutcome,
};

/// Longest chain id.
pub const CHAIN_ID_BYTES_MAX: usize = 64;
/// Largest module a dispute may carry.
pub const DISPUTE_MODULE_BYTES_MAX: usize = 8 << 20;
/// Largest encoded task input a dispute may carry.
pub const DISPUTE_INPUT_BYTES_MAX: usize = 8 << 20;
/// Largest consensus-fault evidence (two signed votes and their framing).
pub const FAULT_EVIDENCE_BYTES_MAX: usize = 4096;
/// Largest encoded signed transaction.
pub const TRANSACTION_BYTES_MAX: usize = DISPUTE_MODULE_BYTES_MAX + DISPUTE_INPUT_BYTES_MAX + 4096;

/// Which kind of stake.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, BorshSerialize, BorshDeserialize,
)]
pub enum StakeRole {
    /// Backs a provider's receipts; slashed for a wrong one.
    Provider,
    /// Makes an account a validator (from the next epoch).
    Validator,
}

impl StakeRole {
    pub(crate) fn tag(self) -> u8 {
        match self {
            StakeRole::Provider => b'p',
            StakeRole::Validator => b'v',
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            StakeRole::Provider => "provider",
            StakeRole::Validator => "validator",
        }
    }
}

/// A job's terms, fixed when it opens.
#[derive(Debug, Clone, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub struct OpenJob {
    /// The module every task runs.
    pub module: ContentId,
    /// The job description (task list, policy) the requestor publishes.
    pub spec: ContentId,
    pub escrow: u64,
    /// Paid per million fuel of accepted work.
    pub price_per_million_fuel: u64,
    /// After this height the job takes no more redemptions and can be closed.
    pub deadline_height: u64,
    pub limits: ExecutionLimits,
    /// An account that runs the job for the requestor (a gateway's key for
    /// this job): it places the tasks, signs the vouchers and may close the
    /// job. Its vouchers are paid from this job's escrow only, so it can
    /// never pay more than the requestor put in, and the refund goes to the
    /// requestor.
    pub agent: Option<AccountId>,
}

/// Evidence that a provider signed a wrong receipt.
#[expect(
    clippy::large_enum_variant,
    reason = "evidence only travels inside a boxed `Dispute`"
)]
#[derive(Debug, Clone, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub enum Evidence {
    /// Two receipts for the same task that disagree: at least one is wrong.
    Conflicting(SignedReceipt, SignedReceipt),
    /// One receipt the reporter claims is wrong.
    Claimed(SignedReceipt),
}

impl Evidence {
    pub fn receipts(&self) -> Vec<&SignedReceipt> {
        match self {
            Evidence::Conflicting(first, second) => vec![first, second],
            Evidence::Claimed(receipt) => vec![receipt],
        }
    }
}

/// A fraud proof: the evidence plus the module and input to re-execute.
#[derive(Debug, Clone, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub struct Dispute {
    pub evidence: Evidence,
    pub module: Bounded<Vec<u8>, DISPUTE_MODULE_BYTES_MAX>,
    /// The canonical encoding of the task's `TaskInput`.
    pub input: Bounded<Vec<u8>, DISPUTE_INPUT_BYTES_MAX>,
}

/// What a transaction does.
#[derive(Debug, Clone, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub enum TxKind {
    Transfer {
        to: AccountId,
        amount: u64,
    },
    Stake {
        role: StakeRole,
        amount: u64,
    },
    /// Starts unbonding; the amount returns to the balance after the
    /// unbonding period, and stays slashable until then.
    Unstake {
        role: StakeRole,
        amount: u64,
    },
    OpenJob(OpenJob),
    TopUpJob {
        job: JobId,
        amount: u64,
    },
    /// A provider claims what a requestor's voucher owes it.
    Redeem {
        voucher: SignedVoucher,
    },
    /// After the deadline the requestor takes back what was not redeemed.
    CloseJob {
        job: JobId,
    },
    Dispute(Box<Dispute>),
    /// Bonds part of the balance to a validator's pool, for a share of its
    /// rewards (less its commission) and of its slashes.
    Delegate {
        validator: AccountId,
        amount: u64,
    },
    /// Starts unbonding `amount` of a delegation (all of it when more is
    /// asked than it is worth); it returns to the balance after the
    /// unbonding period and stays slashable until then.
    Undelegate {
        validator: AccountId,
        amount: u64,
    },
    /// Pays the rewards a delegation has earned to the balance.
    ClaimRewards {
        validator: AccountId,
    },
    /// A validator sets the commission it takes from its delegators'
    /// rewards (at most once per epoch, by a bounded step).
    SetCommission {
        commission_bps: u16,
    },
    /// Evidence that a validator signed two conflicting consensus votes
    /// (in the consensus protocol's own encoding): slashes the validator
    /// and everything delegated to it, and pays the reporter a share of
    /// the validator's own loss.
    ReportFault {
        evidence: Bounded<Vec<u8>, FAULT_EVIDENCE_BYTES_MAX>,
    },
    /// A staked provider states its speed (fuel per second on the
    /// capacity challenge), which challenges then check.
    DeclareCapacity {
        fuel_per_second: u64,
    },
    /// A challenged provider commits to its answer:
    /// `answer_commitment(output, provider)`. The block's time is when it
    /// answered.
    AnswerChallenge {
        epoch: u64,
        commitment: [u8; 32],
    },
    /// A challenged provider shows the output it committed to.
    RevealChallenge {
        epoch: u64,
        output: ContentId,
    },
    /// A staked provider states the speed of the GPU it offers (fuel per
    /// second on the GPU challenge kernel), which GPU challenges check.
    DeclareGpuCapacity {
        fuel_per_second: u64,
    },
    /// A provider's answer to its GPU challenge: the nonces it found,
    /// checked in the block that takes them (one small hash each).
    AnswerGpuChallenge {
        epoch: u64,
        nonces: Bounded<Vec<u64>, { GPU_CHALLENGE_SOLUTIONS as usize }>,
    },
}

impl TxKind {
    pub fn name(&self) -> &'static str {
        match self {
            TxKind::Transfer { .. } => "transfer",
            TxKind::Stake { .. } => "stake",
            TxKind::Unstake { .. } => "unstake",
            TxKind::OpenJob(_) => "open_job",
            TxKind::TopUpJob { .. } => "top_up_job",
            TxKind::Redeem { .. } => "redeem",
            TxKind::CloseJob { .. } => "close_job",
            TxKind::Dispute(_) => "dispute",
            TxKind::Delegate { .. } => "delegate",
            TxKind::Undelegate { .. } => "undelegate",
            TxKind::ClaimRewards { .. } => "claim_rewards",
            TxKind::SetCommission { .. } => "set_commission",
            TxKind::ReportFault { .. } => "report_fault",
            TxKind::DeclareCapacity { .. } => "declare_capacity",
            TxKind::AnswerChallenge { .. } => "answer_challenge",
            TxKind::RevealChallenge { .. } => "reveal_challenge",
            TxKind::DeclareGpuCapacity { .. } => "declare_gpu_capacity",
            TxKind::AnswerGpuChallenge { .. } => "answer_gpu_challenge",
        }
    }
}

/// A transaction body: signed by its sender (the `Signed::signer`).
#[derive(Debug, Clone, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub struct Transaction {
    pub chain_id: Bounded<String, CHAIN_ID_BYTES_MAX>,
    /// Must equal the sender's next nonce (accounts start at 0).
    pub nonce: u64,
    pub fee: u64,
    pub kind: TxKind,
}

impl Transaction {
    /// A transaction body; fails only for a chain id above
    /// [`CHAIN_ID_BYTES_MAX`].
    pub fn new(
        chain_id: &str,
        nonce: u64,
        fee: u64,
        kind: TxKind,
    ) -> Result<Self, codec::LengthExceeded> {
        Ok(Self {
            chain_id: Bounded::new(chain_id.to_owned())?,
            nonce,
            fee,
            kind,
        })
    }
}

impl Signable for Transaction {
    const DOMAIN: &'static str = "idlegrid transaction v1";
}

pub type SignedTransaction = Signed<Transaction>;

/// Decodes a signed transaction from untrusted bytes.
pub fn decode_transaction(bytes: &[u8]) -> Result<SignedTransaction, DecodeError> {
    codec::decode(bytes, TRANSACTION_BYTES_MAX)
}

/// The id of a transaction: the content id of its encoding.
pub fn transaction_hash(transaction: &SignedTransaction) -> ContentId {
    ContentId::of(&codec::encode(transaction).expect("transactions encode"))
}

/// Something that happened when a block applied.
#[derive(Debug, Clone, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub enum Event {
    Transferred {
        from: AccountId,
        to: AccountId,
        amount: u64,
    },
    FeePaid {
        payer: AccountId,
        amount: u64,
    },
    Staked {
        account: AccountId,
        role: StakeRole,
        amount: u64,
    },
    UnbondingStarted {
        account: AccountId,
        role: StakeRole,
        amount: u64,
        release_height: u64,
    },
    Unbonded {
        account: AccountId,
        role: StakeRole,
        amount: u64,
    },
    JobOpened {
        job: JobId,
        requestor: AccountId,
        escrow: u64,
    },
    JobToppedUp {
        job: JobId,
        amount: u64,
    },
    Redeemed {
        job: JobId,
        provider: AccountId,
        amount: u64,
        fuel: u64,
    },
    JobClosed {
        job: JobId,
        refund: u64,
    },
    Slashed {
        provider: AccountId,
        amount: u64,
        burned: u64,
        to_reporter: u64,
    },
    DisputeRejected {
        reporter: AccountId,
        deposit_burned: u64,
    },
    /// What a dispute's re-execution of a task gave: every receipt that
    /// differs from it was slashed (its `Slashed` events follow).
    Verdict {
        job: JobId,
        task: u64,
        outcome: TaskOutcome,
        fuel_used: u64,
    },
    ProviderRewarded {
        provider: AccountId,
        amount: u64,
    },
    ValidatorRewarded {
        validator: AccountId,
        amount: u64,
    },
    Delegated {
        delegator: AccountId,
        validator: AccountId,
        amount: u64,
        shares: u128,
    },
    UndelegationStarted {
        delegator: AccountId,
        validator: AccountId,
        amount: u64,
        release_height: u64,
    },
    Undelegated {
        delegator: AccountId,
        validator: AccountId,
        amount: u64,
    },
    RewardsClaimed {
        delegator: AccountId,
        validator: AccountId,
        amount: u64,
    },
    CommissionSet {
        validator: AccountId,
        commission_bps: u16,
    },
    /// A validator proven to have signed conflicting votes lost part of
    /// its own stake (`own`) and of what is delegated to it (`delegated`).
    ValidatorSlashed {
        validator: AccountId,
        epoch: u64,
        view: u64,
        own: u64,
        delegated: u64,
        burned: u64,
        to_reporter: u64,
    },
    /// A validator's delegators' part of its epoch reward, paid into its
    /// pool (the validator's commission on it is in its
    /// `ValidatorRewarded`).
    DelegatorsRewarded {
        validator: AccountId,
        amount: u64,
        commission: u64,
    },
    CapacityDeclared {
        provider: AccountId,
        fuel_per_second: u64,
    },
    /// A provider's share of the epoch's emission for the speed it proved
    /// available.
    AvailabilityRewarded {
        provider: AccountId,
        amount: u64,
    },
    ChallengeIssued {
        provider: AccountId,
        epoch: u64,
        deadline_ms: u64,
    },
    ChallengeAnswered {
        provider: AccountId,
        epoch: u64,
        after_ms: u64,
    },
    ChallengeRevealed {
        provider: AccountId,
        epoch: u64,
    },
    /// A challenge checked (or closed unanswered), and the speed its
    /// provider has proven since.
    ChallengeSettled {
        provider: AccountId,
        epoch: u64,
        result: crate::capacity::ChallengeResult,
        proven_fuel_per_second: u64,
    },
    GpuCapacityDeclared {
        provider: AccountId,
        fuel_per_second: u64,
    },
    GpuChallengeIssued {
        provider: AccountId,
        epoch: u64,
        target: u64,
        deadline_ms: u64,
    },
    /// A GPU challenge answered (checked at once) or closed unanswered,
    /// and the GPU speed its provider has proven since.
    GpuChallengeSettled {
        provider: AccountId,
        epoch: u64,
        result: crate::capacity::ChallengeResult,
        after_ms: Option<u64>,
        proven_fuel_per_second: u64,
    },
}

/// Why a transaction was refused. Messages read naturally after
/// "the transaction was rejected: ".
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    #[error("the signature does not verify")]
    BadSignature,
    #[error("it is for chain `{found}`, this is `{expected}`")]
    WrongChain { expected: String, found: String },
    #[error("its nonce is {found}; the account's next nonce is {expected}")]
    StaleNonce { expected: u64, found: u64 },
    #[error("its fee {found} is below the minimum of {minimum}")]
    FeeTooLow { minimum: u64, found: u64 },
    #[error("the balance is {available}, it needs {needed}")]
    InsufficientBalance { needed: u64, available: u64 },
    #[error("the amount must be above zero")]
    ZeroAmount,
    #[error("it unstakes {requested} but only {bonded} is staked as {role}")]
    InsufficientStake {
        role: &'static str,
        bonded: u64,
        requested: u64,
    },
    #[error("the account already has {limit} unbondings in progress")]
    TooManyUnbondings { limit: usize },
    #[error("there is no job {0}")]
    UnknownJob(JobId),
    #[error("the job's deadline {deadline} is not after the current height {height}")]
    DeadlineInPast { deadline: u64, height: u64 },
    #[error("the job's deadline {deadline} is more than {limit} blocks away")]
    DeadlineTooFar { deadline: u64, limit: u64 },
    #[error("the job's price must be above zero")]
    ZeroPrice,
    #[error("the job's fuel limit {fuel} is above the dispute limit {limit}")]
    FuelLimitTooHigh { fuel: u64, limit: u64 },
    #[error("job {job} expired at height {deadline}")]
    JobExpired { job: JobId, deadline: u64 },
    #[error("job {0} is closed")]
    JobClosed(JobId),
    #[error("only the job's requestor may do this (or, to close it, its agent)")]
    NotRequestor,
    #[error("job {job} can be closed after height {deadline}")]
    DeadlineNotReached { job: JobId, deadline: u64 },
    #[error("the voucher's signature does not verify")]
    VoucherBadSignature,
    #[error("the voucher is signed by neither the job's requestor nor its agent")]
    VoucherNotFromRequestor,
    #[error("the voucher is for another provider")]
    VoucherForAnotherProvider,
    #[error("the voucher's sequence {sequence} is not newer than the last redeemed ({last})")]
    VoucherNotNewer { last: u64, sequence: u64 },
    #[error(
        "the voucher's cumulative amount {cumulative} is below what was already redeemed ({redeemed})"
    )]
    VoucherBelowRedeemed { redeemed: u64, cumulative: u64 },
    #[error(
        "the voucher's cumulative fuel {cumulative} is below what was already redeemed ({redeemed})"
    )]
    VoucherFuelBelowRedeemed { redeemed: u64, cumulative: u64 },
    #[error(
        "the voucher claims {fuel} fuel but its {amount} pays for less at {price_per_million_fuel} per million"
    )]
    VoucherFuelExceedsPayment {
        fuel: u64,
        amount: u64,
        price_per_million_fuel: u64,
    },
    #[error("the voucher would pay {owed} but the escrow holds {escrow}")]
    VoucherExceedsEscrow { owed: u64, escrow: u64 },
    #[error("a receipt's signature does not verify")]
    ReceiptBadSignature,
    #[error("the receipts are not for the same job, task, module and input")]
    ReceiptsNotComparable,
    #[error("the two receipts agree; there is nothing to dispute")]
    ReceiptsAgree,
    #[error("the receipt is for module {receipt}, the job runs {job}")]
    ReceiptWrongModule { receipt: ContentId, job: ContentId },
    #[error("the module bytes have id {found}, the receipt names {expected}")]
    ModuleMismatch {
        expected: ContentId,
        found: ContentId,
    },
    #[error("the input bytes have id {found}, the receipt names {expected}")]
    InputMismatch {
        expected: ContentId,
        found: ContentId,
    },
    #[error("the input bytes are not a task input: {0}")]
    InputMalformed(String),
    #[error("the re-execution could not decide: {0}")]
    ReExecutionFailed(String),
    #[error("this task's receipt by {0} was already settled by a dispute")]
    AlreadyDisputed(AccountId),
    #[error("{0} has no validator stake to delegate to")]
    NotAValidator(AccountId),
    #[error("{0} signed conflicting votes and validates no more")]
    ValidatorJailed(AccountId),
    #[error("the pool of {0} lost all its delegated stake to slashing; it takes no more")]
    PoolWipedOut(AccountId),
    #[error("the pool of {0} cannot take that much more")]
    PoolFull(AccountId),
    #[error("there is no delegation to {0}")]
    NoDelegation(AccountId),
    #[error("there are no rewards to claim from {0}")]
    NoRewards(AccountId),
    #[error("the commission {requested} bps is above the maximum of {maximum}")]
    CommissionTooHigh { requested: u16, maximum: u16 },
    #[error("the commission may move by at most {maximum} bps at once, not from {from} to {to}")]
    CommissionStepTooLarge { from: u16, to: u16, maximum: u16 },
    #[error("the commission was already changed in epoch {epoch}")]
    CommissionChangedThisEpoch { epoch: u64 },
    #[error("the fault evidence does not hold: {0}")]
    FaultNotProven(String),
    #[error("a fault in epoch {epoch} is answerable until height {until}")]
    FaultTooOld { epoch: u64, until: u64 },
    #[error("{validator}'s fault in epoch {epoch}, view {view} was already reported")]
    FaultAlreadyReported {
        validator: AccountId,
        epoch: u64,
        view: u64,
    },
    #[error("{0} has no provider stake")]
    NotAProvider(AccountId),
    #[error("a declared speed must be 1 to {maximum} fuel per second, not {found}")]
    CapacityOutOfRange { found: u64, maximum: u64 },
    #[error("the sender has no capacity challenge in epoch {epoch}")]
    NoChallenge { epoch: u64 },
    #[error("the challenge of epoch {epoch} was already answered")]
    ChallengeAlreadyAnswered { epoch: u64 },
    #[error("the challenge of epoch {epoch} has no answer to reveal")]
    ChallengeNotAnswered { epoch: u64 },
    #[error("the challenge of epoch {epoch} was already revealed")]
    ChallengeAlreadyRevealed { epoch: u64 },
    #[error("the output does not match the answer committed to in epoch {epoch}")]
    RevealMismatch { epoch: u64 },
    #[error("the partner of epoch {epoch}'s challenge may still answer until {until_ms} ms")]
    RevealTooEarly { epoch: u64, until_ms: u64 },
    #[error("the partner of epoch {epoch}'s challenge has revealed the answer")]
    ChallengeAnswerExposed { epoch: u64 },
    #[error("epoch {epoch}'s answers may be revealed only in a block after the later of them")]
    RevealWithAnswer { epoch: u64 },
}

impl Rejection {
    /// A short snake_case name, for JSON and metrics.
    pub fn code(&self) -> &'static str {
        match self {
            Rejection::BadSignature => "bad_signature",
            Rejection::WrongChain { .. } => "wrong_chain",
            Rejection::StaleNonce { .. } => "stale_nonce",
            Rejection::FeeTooLow { .. } => "fee_too_low",
            Rejection::InsufficientBalance { .. } => "insufficient_balance",
            Rejection::ZeroAmount => "zero_amount",
            Rejection::InsufficientStake { .. } => "insufficient_stake",
            Rejection::TooManyUnbondings { .. } => "too_many_unbondings",
            Rejection::UnknownJob(_) => "unknown_job",
            Rejection::DeadlineInPast { .. } => "deadline_in_past",
            Rejection::DeadlineTooFar { .. } => "deadline_too_far",
            Rejection::ZeroPrice => "zero_price",
            Rejection::FuelLimitTooHigh { .. } => "fuel_limit_too_high",
            Rejection::JobExpired { .. } => "job_expired",
            Rejection::JobClosed(_) => "job_closed",
            Rejection::NotRequestor => "not_requestor",
            Rejection::DeadlineNotReached { .. } => "deadline_not_reached",
            Rejection::VoucherBadSignature => "voucher_bad_signature",
            Rejection::VoucherNotFromRequestor => "voucher_not_from_requestor",
            Rejection::VoucherForAnotherProvider => "voucher_for_another_provider",
            Rejection::VoucherNotNewer { .. } => "voucher_not_newer",
            Rejection::VoucherBelowRedeemed { .. } => "voucher_below_redeemed",
            Rejection::VoucherFuelBelowRedeemed { .. } => "voucher_fuel_below_redeemed",
            Rejection::VoucherFuelExceedsPayment { .. } => "voucher_fuel_exceeds_payment",
            Rejection::VoucherExceedsEscrow { .. } => "voucher_exceeds_escrow",
            Rejection::ReceiptBadSignature => "receipt_bad_signature",
            Rejection::ReceiptsNotComparable => "receipts_not_comparable",
            Rejection::ReceiptsAgree => "receipts_agree",
            Rejection::ReceiptWrongModule { .. } => "receipt_wrong_module",
            Rejection::ModuleMismatch { .. } => "module_mismatch",
            Rejection::InputMismatch { .. } => "input_mismatch",
            Rejection::InputMalformed(_) => "input_malformed",
            Rejection::ReExecutionFailed(_) => "re_execution_failed",
            Rejection::AlreadyDisputed(_) => "already_disputed",
            Rejection::NotAValidator(_) => "not_a_validator",
            Rejection::ValidatorJailed(_) => "validator_jailed",
            Rejection::PoolWipedOut(_) => "pool_wiped_out",
            Rejection::PoolFull(_) => "pool_full",
            Rejection::NoDelegation(_) => "no_delegation",
            Rejection::NoRewards(_) => "no_rewards",
            Rejection::CommissionTooHigh { .. } => "commission_too_high",
            Rejection::CommissionStepTooLarge { .. } => "commission_step_too_large",
            Rejection::CommissionChangedThisEpoch { .. } => "commission_changed_this_epoch",
            Rejection::FaultNotProven(_) => "fault_not_proven",
            Rejection::FaultTooOld { .. } => "fault_too_old",
            Rejection::FaultAlreadyReported { .. } => "fault_already_reported",
            Rejection::NotAProvider(_) => "not_a_provider",
            Rejection::CapacityOutOfRange { .. } => "capacity_out_of_range",
            Rejection::NoChallenge { .. } => "no_challenge",
            Rejection::ChallengeAlreadyAnswered { .. } => "challenge_already_answered",
            Rejection::ChallengeNotAnswered { .. } => "challenge_not_answered",
            Rejection::ChallengeAlreadyRevealed { .. } => "challenge_already_revealed",
            Rejection::RevealMismatch { .. } => "reveal_mismatch",
            Rejection::RevealTooEarly { .. } => "reveal_too_early",
            Rejection::ChallengeAnswerExposed { .. } => "challenge_answer_exposed",
            Rejection::RevealWithAnswer { .. } => "reveal_with_answer",
        }
    }
}
