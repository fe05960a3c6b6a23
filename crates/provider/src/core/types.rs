//! What goes into the provider's core and what comes out: its
//! configuration, the [`Input`]s the shell gives it, and the [`Command`]s
//! it gives back.

use idlegrid_net::{Request, Response, ResultBatch};
use idlegrid_types::{
    AccountId, ContentId, ErrorKind, ExecutionLimits, JobId, Keypair, Offer, SignedOffer,
    SignedVoucher, TaskInput, TaskOutcome,
};

/// Names one inbound request until it is answered.
pub type RequestId = u64;
/// Names one results batch on its way to a requestor.
pub type BatchId = u64;

/// A test-only way to make a provider lie, to test that liars are caught.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cheat {
    /// Return a wrong output (the true one with bytes appended) for every
    /// completed task after the first `honest_first` it ran, with a receipt
    /// signed over it: 0 lies from the start; more earns trust first. An
    /// output the provider keeps is lied about in the receipt alone: it
    /// names an id that is not the output's (one this provider cannot
    /// serve), while the true output stays kept under its own.
    WrongOutput { honest_first: u64 },
}

/// What the core is set up with.
#[derive(Debug, Clone)]
pub struct CoreConfig {
    /// Signs offers and receipts; vouchers must pay this account.
    pub key: Keypair,
    /// What is offered (its sequence and expiry are the core's to set).
    pub offer: Offer,
    /// How long a published offer stays valid, ms.
    pub offer_ttl_ms: u64,
    /// Tasks held at most: waiting for a job check or a module, queued and
    /// running.
    pub queue_tasks_max: usize,
    /// Bytes of task input held at most.
    pub queue_bytes_max: usize,
    /// The largest output a task of a batch it takes may write, bytes:
    /// what it can keep for the requestor to fetch (the shell's bound is
    /// half its content store; never more than
    /// [`idlegrid_net::CONTENT_BYTES_MAX`]). A batch whose limit is more
    /// is refused `output_too_large`.
    pub output_bytes_max: u64,
    pub cheat: Option<Cheat>,
}

/// Which part of content a peer asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContentPart {
    /// Its length and its groups' chaining values from this group on.
    Tree { from: u64 },
    /// A chunk from this offset.
    From(u64),
}

/// What the ledger says about a job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobCheck {
    /// Open, at a price this provider takes, with tasks that fit: batches
    /// from `requestor` for `module` run.
    Approved {
        requestor: AccountId,
        module: ContentId,
    },
    Rejected {
        code: &'static str,
        message: String,
    },
}

/// How getting a module ready ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModuleStatus {
    /// Compiled and held by the shell.
    Ready,
    /// The bytes are what the job names, and the sandbox refuses them: a
    /// deterministic failure every replica reports the same way.
    Invalid(ErrorKind),
    /// It could not be fetched or stored (not a claim about the module).
    Unavailable(String),
}

/// Where a task's output is, once it ran.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunOutput {
    /// Small enough to go back in the result: these bytes.
    Inline(Vec<u8>),
    /// Written to the content store and pinned there, under the id the
    /// outcome names (`TaskOutcome::Completed { output, .. }`): the
    /// requestor fetches it; the core releases it with
    /// [`Command::ReleaseOutputs`].
    Kept { bytes: u64 },
}

/// What running one task gave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunResult {
    Ran {
        outcome: TaskOutcome,
        fuel_used: u64,
        output: RunOutput,
        /// Advisory, for the receipt: see [`crate::energy`] for its source.
        energy_millijoules: u64,
    },
    /// The host could not run it.
    NotRun { reason: String },
}

/// What a requestor answered when asked for a job's newest voucher.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VoucherAnswer {
    /// Its newest voucher for this provider, and whether the job is over.
    Voucher {
        voucher: SignedVoucher,
        job_done: bool,
    },
    /// It owes nothing yet (the results may not be accepted yet).
    NothingOwed,
    /// It does not run the job (or is no requestor): asking again is futile.
    NotItsJob,
    /// No answer came (unreachable, the connection closed, a timeout).
    Unanswered,
}

/// How an ordered redemption ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Redemption {
    /// Included in a block: the amount is paid.
    Paid,
    /// The ledger says this voucher will never pay more (it holds this one
    /// or a newer one already, or the job is closed or gone).
    Settled,
    /// Not included; tried again later.
    Failed,
}

/// Something that happened.
#[derive(Debug)]
pub enum Input {
    /// A peer's request, answered by a [`Command::Reply`] (or
    /// [`Command::StoreVoucher`], [`Command::ServeContent`]) with its id.
    Request {
        id: RequestId,
        peer: AccountId,
        request: Request,
    },
    /// A peer subscribed to offers.
    OfferSubscriber,
    /// Time to publish the offer again.
    OfferTimer,
    /// Time to redeem every voucher that owes more than was redeemed.
    RedeemTimer,
    /// The time [`ProviderCore::wake_at`] asked for came.
    Wake,
    JobChecked {
        job: JobId,
        check: JobCheck,
    },
    ModuleReady {
        cid: ContentId,
        status: ModuleStatus,
    },
    /// A worker ran a task of a [`Command::Run`].
    TaskDone {
        job: JobId,
        index: u64,
        result: RunResult,
    },
    /// A worker skipped a task that was cancelled before it started.
    TaskSkipped {
        job: JobId,
        index: u64,
    },
    /// A [`Command::SendResults`] was answered, or could not be delivered.
    ResultsAnswered {
        batch: BatchId,
        delivered: bool,
    },
    /// A redemption of a [`Command::Redeem`] ended.
    Redeemed {
        job: JobId,
        amount: u64,
        outcome: Redemption,
    },
    /// A connection to a peer opened (a requestor that owes a voucher is
    /// asked for it again).
    Connected(AccountId),
    /// A [`Command::AskVoucher`] ended.
    VoucherAsked {
        job: JobId,
        requestor: AccountId,
        answer: VoucherAnswer,
    },
    /// The owner's load crossed the idle threshold.
    Paused(bool),
    /// Stop taking work and redeem everything owed.
    Shutdown,
}

/// A task to run, as the core hands it to a worker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Task {
    pub job: JobId,
    pub index: u64,
    pub module: ContentId,
    pub limits: ExecutionLimits,
    pub wall_time_ms: u64,
    pub input: TaskInput,
    /// Who sent it: its input files are fetched from `holders` first
    /// (providers that returned results of the job), then from it.
    pub requestor: AccountId,
    pub holders: std::sync::Arc<[AccountId]>,
}

/// What the shell should do.
#[derive(Debug)]
pub enum Command {
    Reply {
        id: RequestId,
        response: Response,
    },
    /// Answer with a part of content this node holds on disk.
    ServeContent {
        id: RequestId,
        cid: ContentId,
        part: ContentPart,
    },
    /// Read the job from the ledger; answer with [`Input::JobChecked`].
    CheckJob {
        job: JobId,
    },
    /// Get the module ready (disk, or fetched from `holders`, then `from`);
    /// answer with [`Input::ModuleReady`].
    FetchModule {
        from: AccountId,
        holders: Vec<AccountId>,
        cid: ContentId,
    },
    /// Let a compiled module go.
    DropModule(ContentId),
    /// Queue the task for a worker (its module is ready).
    Run(Task),
    /// A queued task is no longer wanted: skip it if it has not started.
    Cancel {
        job: JobId,
        index: u64,
    },
    /// Send signed results; answer with [`Input::ResultsAnswered`].
    SendResults {
        batch: BatchId,
        requestor: AccountId,
        results: ResultBatch,
    },
    PublishOffer(SignedOffer),
    /// Store the voucher on disk, then answer request `reply` (if it came
    /// with one) with `Ok`.
    StoreVoucher {
        voucher: SignedVoucher,
        reply: Option<RequestId>,
    },
    /// Ask `requestor` for its newest voucher of `job`; answer with
    /// [`Input::VoucherAsked`].
    AskVoucher {
        requestor: AccountId,
        job: JobId,
    },
    /// Delete a job's stored voucher: it owes nothing more.
    ForgetVoucher(JobId),
    /// Redeem these on the ledger, one by one; answer each with
    /// [`Input::Redeemed`].
    Redeem(Vec<SignedVoucher>),
    /// Unpin these outputs kept for `job` (one pin each, as often as an id
    /// is named): its requestor is done with them, or was silent too long.
    /// Their bytes stay in the store's cache while they last.
    ReleaseOutputs {
        job: JobId,
        outputs: Vec<ContentId>,
    },
}

/// Counts for the status line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Totals {
    pub tasks_done: u64,
    pub fuel_used: u64,
    /// Paid out on the ledger by vouchers redeemed in this run.
    pub earned: u64,
    /// Owed by vouchers held but not yet redeemed.
    pub owed: u64,
    /// Tasks held: waiting for a check or a module, queued or running.
    pub held: u64,
    pub paused: bool,
    /// Outputs returned as kept by this provider ([`RunOutput::Kept`]),
    /// and their bytes.
    pub outputs_kept: u64,
    pub outputs_kept_bytes: u64,
    /// Kept outputs it still holds pinned for their jobs' requestors.
    pub outputs_held: u64,
}
