//! What goes into the requestor's core and what comes out of it.

use idlegrid_ledger::Dispute;
use idlegrid_market::{JobSummary, Standing};
use idlegrid_net::{Request, Response, TaskBatch};
use idlegrid_types::{AccountId, ContentId, Offer, SignedVoucher, TaskOutcome};

use super::RequestId;
use crate::report::TaskRecord;

/// Where an accepted task's output comes from: bytes at hand (a provider
/// sent them, or the requestor re-executed the task), or the providers
/// that keep it, to fetch it from by id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AcceptedOutput {
    Bytes(Vec<u8>),
    Kept {
        cid: ContentId,
        bytes: u64,
        /// Those whose results were accepted and who said they keep it.
        holders: Vec<AccountId>,
    },
}

/// What re-executing a task gave the requestor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReExecution {
    pub outcome: TaskOutcome,
    pub fuel_used: u64,
    pub stdout: Vec<u8>,
}

/// Something that happened.
#[derive(Debug)]
pub enum Input {
    /// A provider's offer, its signature checked by the overlay.
    Offer {
        provider: AccountId,
        offer: Offer,
    },
    Connected(AccountId),
    Disconnected(AccountId),
    /// A peer's request, answered by a [`Command::Reply`] with its id.
    Request {
        id: RequestId,
        peer: AccountId,
        request: Request,
    },
    /// What the ledger says of a provider (after [`Command::ReadStanding`]).
    Standing {
        provider: AccountId,
        standing: Standing,
    },
    /// A batch of [`Command::SendTasks`] was refused or not delivered;
    /// `lost` when the provider could not be reached at all.
    AssignFailed {
        provider: AccountId,
        tasks: Vec<u64>,
        lost: bool,
    },
    /// A [`Command::SendVoucher`] ended (answered or not).
    VoucherAnswered(AccountId),
    /// A [`Command::Farewell`] ended: both messages were taken, or not.
    FarewellAnswered {
        provider: AccountId,
        delivered: bool,
    },
    /// A [`Command::ReExecute`] ended: what the task gave, or why the host
    /// could not run it.
    ReExecuted {
        task: u64,
        result: Result<ReExecution, String>,
    },
    /// A [`Command::AskLedger`] ended: what the ledger's re-execution gave
    /// (outcome, fuel, and the signers it found wrong, slashed already), or
    /// why the ledger did not settle it.
    LedgerVerdict {
        task: u64,
        result: Result<(TaskOutcome, u64, Vec<AccountId>), String>,
    },
    /// Time passed: leases and offers expire.
    Tick,
}

/// What the shell should do.
#[derive(Debug)]
pub enum Command {
    Reply {
        id: RequestId,
        response: Response,
    },
    /// Read the provider's stake and record; answer with [`Input::Standing`].
    ReadStanding(AccountId),
    /// Ask the peer for its newest offer; answer one that is its own with
    /// [`Input::Offer`] (a peer that is no provider refuses).
    AskOffer(AccountId),
    /// Send a batch of tasks; answer a refusal or failure with
    /// [`Input::AssignFailed`].
    SendTasks {
        provider: AccountId,
        batch: TaskBatch,
    },
    /// Tell the provider these tasks are no longer wanted.
    Cancel {
        provider: AccountId,
        tasks: Vec<u64>,
    },
    /// Send the newest voucher owed; answer with [`Input::VoucherAnswered`].
    SendVoucher {
        provider: AccountId,
        voucher: SignedVoucher,
    },
    /// The end-of-job round (see [`super::RequestorCore::farewell`]):
    /// send the provider its newest voucher and then, once it took it,
    /// `JobDone`; answer with [`Input::FarewellAnswered`].
    Farewell {
        provider: AccountId,
        voucher: SignedVoucher,
    },
    /// Run the task in this requestor's own sandbox: its results disagree.
    /// Answer with [`Input::ReExecuted`].
    ReExecute {
        task: u64,
    },
    /// The task's results disagree and it is too large to re-execute
    /// here: file this two-receipt dispute, whose re-execution on the
    /// ledger decides it. Answer with [`Input::LedgerVerdict`].
    AskLedger {
        task: u64,
        dispute: Box<Dispute>,
    },
    /// File a dispute on the ledger against a provider's receipt.
    Dispute {
        task: u64,
        provider: AccountId,
        dispute: Box<Dispute>,
    },
    /// An accepted task is open again (a provider that vouched for it was
    /// caught lying): it no longer counts as accepted until it is again.
    Reopened {
        task: u64,
    },
    /// A task is accepted: write its output (when it completed) to `file`
    /// under the results folder. A task accepted again with the output it
    /// had before it was reopened comes without one (`record.file` set):
    /// the output written then stands.
    Accepted {
        task: u64,
        output: Option<(String, AcceptedOutput)>,
        /// From its first assignment to its acceptance, when it was accepted.
        round_trip_us: Option<u64>,
        /// Its line in `results.json`.
        record: Box<TaskRecord>,
    },
    /// No provider could give the task a result the market accepts (for
    /// example, every one refused it): decided as failed.
    TaskFailed {
        task: u64,
        /// Its line in `results.json`.
        record: Box<TaskRecord>,
    },
    /// Placing more would pass the budget.
    Stalled,
    /// Every task is decided.
    Finished(JobSummary),
}
