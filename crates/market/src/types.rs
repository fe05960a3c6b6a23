//! What goes into and comes out of the [`Market`](crate::Market): its
//! configuration, the jobs and results it is given, and the commands it
//! returns.

use idlegrid_types::{
    AccountId, ContentId, ExecutionLimits, GpuClass, JobId, Offer, SignedReceipt, TaskOutcome,
};

/// Milliseconds; whatever clock the caller uses, consistently.
pub type Millis = u64;

/// The adaptive policy's knobs: what a requestor trades verification
/// overhead against wrong results with. A provider's word alone is taken
/// only after `after` results of validated history; from then on its
/// results are spot-checked with odds `halving / (halving + history)`,
/// never below `floor_permille`, nor below what makes a lie a loss (see
/// [`spot_check_permille`](crate::spot_check_permille)).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Trust {
    /// Results of validated history before a provider's word alone counts.
    pub after: u32,
    /// The history at which the spot-check odds are one half.
    pub halving: u32,
    /// The lowest spot-check odds, per mille.
    pub floor_permille: u32,
}

impl Default for Trust {
    fn default() -> Self {
        Self {
            after: 10,
            halving: 10,
            floor_permille: 20,
        }
    }
}

/// How the market behaves. Every bound is here, with its unit in its name.
#[derive(Debug, Clone)]
pub struct MarketConfig {
    /// Stake a provider needs before it gets work.
    pub minimum_stake: u64,
    /// Most offers (providers) the book holds.
    pub offers_max: usize,
    /// Tasks in flight per core of a provider, at least.
    pub tasks_per_core: u32,
    /// Tasks in flight per core of a provider, at most. Between the two,
    /// a provider is sent enough to keep each core busy for `pipeline_ms`
    /// (judged by the fuel the job's tasks have used so far and the
    /// provider's benchmark), so that short tasks do not leave it idle
    /// while results and new batches cross the network.
    pub tasks_per_core_max: u32,
    /// Work per core a provider is given ahead, milliseconds.
    pub pipeline_ms: Millis,
    /// Most tasks sent to a provider in one batch.
    pub batch_tasks_max: usize,
    /// A lease lasts the task's expected run time times this, plus the
    /// base, plus the time to fetch its input files at
    /// `lease_input_bytes_per_second`.
    pub lease_factor: u64,
    pub lease_base_ms: Millis,
    pub lease_input_bytes_per_second: u64,
    /// Provider failures (crash, timeout) a task survives before it fails.
    pub attempts_max: u32,
    /// Most results collected for one task while its replicas disagree.
    pub replicas_max: u32,
    /// When the adaptive policy takes a provider's word alone.
    pub trust: Trust,
    /// Providers in the book from which, under the adaptive policy, two
    /// matching results from providers without validated history are not
    /// enough (a third must agree).
    pub vouching_providers_min: usize,
    /// Providers looked at per placement before a task waits.
    pub candidates_per_placement_max: usize,
    /// Seeds the spot checks.
    pub seed: u64,
    /// Whether a task that no provider in the book may check goes to a
    /// referee (the caller can re-execute it) rather than wait for one to
    /// come.
    pub referee_unanswerable: bool,
}

impl Default for MarketConfig {
    fn default() -> Self {
        Self {
            minimum_stake: 1,
            offers_max: 1_000_000,
            tasks_per_core: 2,
            tasks_per_core_max: 64,
            pipeline_ms: 20,
            batch_tasks_max: 64,
            lease_factor: 3,
            lease_base_ms: 2_000,
            // A slow home uplink: a provider fetching a large input is not
            // taken for a dead one.
            lease_input_bytes_per_second: 8 << 20,
            attempts_max: 5,
            replicas_max: 7,
            trust: Trust::default(),
            vouching_providers_min: 32,
            candidates_per_placement_max: 64,
            seed: 0,
            referee_unanswerable: true,
        }
    }
}

/// What shows a provider's result wrong, for a dispute.
#[expect(
    clippy::large_enum_variant,
    reason = "evidence only travels boxed inside a `Fraud` command"
)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FraudEvidence {
    /// A receipt that differs from the losing one, and the losing receipt.
    Conflicting(SignedReceipt, SignedReceipt),
    /// The losing receipt alone (nobody else answered; a re-execution
    /// showed it wrong).
    Lone(SignedReceipt),
}

/// How a job's results are verified.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    /// A quorum of this many matching results from distinct providers.
    Replicas(u8),
    /// A trusted provider's result alone, spot-checked with a probability
    /// that falls as its run of valid results grows; everyone else's
    /// replicated to two.
    Adaptive,
}

/// A job as the market sees it: tasks are numbered `0..task_count`.
#[derive(Debug, Clone)]
pub struct JobSpec {
    pub id: JobId,
    pub module: ContentId,
    pub task_count: u64,
    pub limits: ExecutionLimits,
    pub price_per_million_fuel: u64,
    pub policy: Policy,
    /// The most the job may pay in total.
    pub budget: u64,
    /// The most bytes of input files one task reads (0: none): a lease
    /// allows for fetching them.
    pub input_bytes: u64,
    /// Its tasks are GPU programs of this class: placed only with
    /// providers that offer a GPU at or below the job's price, and under
    /// [`GpuClass::Class`] every replica of a task on the same class of
    /// GPU (vendor, device, driver) as the first.
    pub gpu: Option<GpuClass>,
}

/// What a provider says a task produced.
#[derive(Debug, Clone)]
pub struct TaskResult {
    pub outcome: TaskOutcome,
    pub fuel_used: u64,
    /// The signed receipt, kept as fraud evidence if the result loses.
    pub receipt: Option<Box<SignedReceipt>>,
}

/// What the ledger says of a provider, read by the caller: the stake that
/// backs its results and the record every requestor starts from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Standing {
    /// Bonded provider stake; below [`MarketConfig::minimum_stake`] it
    /// gets no work.
    pub stake: u64,
    /// What one slash would take from it now: the cover for results
    /// accepted on its word alone.
    pub slashable: u64,
    /// Fuel requestors paid it for, through redeemed vouchers.
    pub fuel_paid: u64,
    /// Jobs it was paid from.
    pub jobs_paid: u64,
    /// Disputes whose re-execution showed one of its receipts wrong.
    pub disputes_lost: u64,
    /// The speed the chain's capacity challenges let it count on, in
    /// fuel per second (0: it declared none). An offer faster than this
    /// is placed as this fast.
    pub usable_fuel_per_second: u64,
    /// The same for its GPU offer, from the chain's GPU challenges.
    pub usable_gpu_fuel_per_second: u64,
}

impl Standing {
    /// Staked, with no record: a provider's standing on a fresh ledger.
    pub fn staked(stake: u64, slash_fraction_bps: u16) -> Self {
        Self {
            stake,
            slashable: (u128::from(stake) * u128::from(slash_fraction_bps.min(10_000)) / 10_000)
                as u64,
            ..Self::default()
        }
    }
}

/// What an unfinished job waits for now, so that a requestor can say why
/// nothing moves and what would move it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Waiting {
    /// Replicas waiting to be placed.
    pub pending: u64,
    /// Tasks holding a result that no provider now in the book may check:
    /// each ready one answered it already, or none is ready. Another
    /// provider (or the requestor's own re-execution) would settle them.
    pub second_opinion: u64,
    /// Tasks waiting for a re-execution's verdict (the requestor's, or the
    /// ledger's through a dispute).
    pub refereeing: u64,
    /// Providers that may take work now: connected, staked, offering, not
    /// caught lying.
    pub providers_ready: u64,
    /// The job's budget is spent while tasks remain.
    pub budget_spent: bool,
}

/// Something that happened, with the time of the call.
#[derive(Debug, Clone)]
pub enum Input {
    /// A (signature-checked) offer.
    Offer {
        provider: AccountId,
        offer: Offer,
    },
    /// What the ledger says of the provider: stake and track record.
    Standing {
        provider: AccountId,
        standing: Standing,
    },
    Connected(AccountId),
    Lost(AccountId),
    SubmitJob(JobSpec),
    Result {
        provider: AccountId,
        job: JobId,
        task: u64,
        result: TaskResult,
    },
    /// The provider could not run the task (crash, host error); not fraud.
    ProviderFailed {
        provider: AccountId,
        job: JobId,
        task: u64,
    },
    Budget {
        job: JobId,
        budget: u64,
    },
    /// What re-executing a task gave, after a [`Command::Referee`]: the
    /// truth its results are judged by. `output_held`: the caller has the
    /// output itself (it re-executed the task), so the task can be accepted
    /// even when no provider's result matches.
    Verdict {
        job: JobId,
        task: u64,
        outcome: TaskOutcome,
        fuel_used: u64,
        output_held: bool,
    },
    /// The task could not be re-executed nor disputed: it fails.
    RefereeFailed {
        job: JobId,
        task: u64,
        reason: String,
    },
    /// Time passed: expire leases and offers.
    Tick,
}

/// Why a job stopped placing work.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stall {
    /// Placing more would commit more than the budget.
    Budget,
}

/// How an accepted result was established.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// A quorum of providers returned it and none returned anything else.
    Quorum,
    /// Re-executing the task gave it.
    ReExecution,
}

/// Totals of a finished job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct JobSummary {
    pub tasks_accepted: u64,
    pub tasks_failed: u64,
    /// Fuel of every result received, replicas included.
    pub fuel_executed: u64,
    /// Fuel of the accepted results, once per task.
    pub fuel_useful: u64,
    pub paid: u64,
    /// Tasks whose results disagreed and were sent to a referee.
    pub tasks_refereed: u64,
    /// Accepted tasks placed again because a provider that vouched for
    /// them was caught lying.
    pub tasks_reopened: u64,
}

/// What the caller should do.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    Assign {
        provider: AccountId,
        job: JobId,
        tasks: Vec<u64>,
        lease_deadline_ms: Millis,
    },
    Cancel {
        provider: AccountId,
        job: JobId,
        task: u64,
    },
    /// Sign and send a cumulative voucher.
    Voucher {
        job: JobId,
        provider: AccountId,
        cumulative_amount: u64,
        cumulative_fuel: u64,
        sequence: u64,
    },
    /// A task's results disagree, so someone lied: re-execute it (or have
    /// the ledger do so through a dispute over `evidence`) and answer with
    /// [`Input::Verdict`]. Nothing is accepted by counting.
    Referee {
        job: JobId,
        task: u64,
        /// Two signed receipts that disagree, when the results carried them.
        evidence: Option<Box<(SignedReceipt, SignedReceipt)>>,
    },
    /// A provider's result differs from the re-execution: it lied.
    Fraud {
        job: JobId,
        task: u64,
        provider: AccountId,
        /// A dispute's evidence, when the losing receipt was signed.
        evidence: Option<Box<FraudEvidence>>,
    },
    TaskAccepted {
        job: JobId,
        task: u64,
        outcome: TaskOutcome,
        fuel_used: u64,
        decision: Decision,
        /// It was accepted before, on the word of a provider since caught
        /// lying, and checked again.
        rechecked: bool,
    },
    /// An accepted task is open again: a provider whose result it was
    /// accepted on was caught lying. It is placed again, and accepted
    /// (again) only with results no provider caught lying vouches for.
    TaskReopened {
        job: JobId,
        task: u64,
        /// What it was accepted with, on whose word, and the energy the
        /// first of them stated (a requestor's record of it, rebuilt: the
        /// market keeps nothing of a decided task in memory).
        outcome: TaskOutcome,
        backers: Vec<AccountId>,
        energy_millijoules: Option<u64>,
    },
    TaskFailed {
        job: JobId,
        task: u64,
        reason: String,
    },
    JobStalled {
        job: JobId,
        reason: Stall,
    },
    JobFinished {
        job: JobId,
        summary: JobSummary,
    },
}
