//! What the provider core's tests share: a core set up with a job and its
//! module, and the requests, results and vouchers that drive it.

use idlegrid_net::{AssignedTask, Request, Response, TaskBatch, TaskReturn};
use idlegrid_provider::core::{
    Command, CoreConfig, Input, JobCheck, ModuleStatus, ProviderCore, RunOutput, RunResult,
};
use idlegrid_types::codec::Bounded;
use idlegrid_types::{
    AccountId, ContentId, ExecutionLimits, JobId, Keypair, Offer, SignedVoucher, TaskInput,
    TaskOutcome, Voucher,
};

pub const NOW: u64 = 1_000_000;
pub const FLOOR: u64 = 5;
/// The largest output the tests' provider keeps, bytes.
pub const OUTPUT_BYTES_MAX: u64 = 64 << 20;

pub fn key(seed: u8) -> Keypair {
    Keypair::from_seed([seed; 32])
}

pub fn config(queue_tasks_max: usize) -> CoreConfig {
    CoreConfig {
        key: key(1),
        offer: Offer {
            cores: 2,
            memory_bytes: 1 << 30,
            gpu: None,
            benchmark_fuel_per_second: 1_000_000,
            price_floor_per_million_fuel: FLOOR,
            concurrency: 8,
            idle_only: false,
            operator: None,
            sequence: 0,
            expires_at_ms: 0,
        },
        offer_ttl_ms: 60_000,
        queue_tasks_max,
        queue_bytes_max: 1 << 20,
        output_bytes_max: OUTPUT_BYTES_MAX,
        cheat: None,
    }
}

pub fn provider() -> AccountId {
    key(1).account_id()
}

pub fn requestor_key() -> Keypair {
    key(2)
}

pub fn requestor() -> AccountId {
    requestor_key().account_id()
}

pub fn job(n: u8) -> JobId {
    JobId::derive(&requestor(), u64::from(n))
}

pub fn module() -> ContentId {
    ContentId::of(b"module")
}

pub fn input(index: u64) -> TaskInput {
    TaskInput::new(vec![index.to_string()], Vec::new()).expect("small")
}

pub fn batch(job: JobId, indexes: impl IntoIterator<Item = u64>) -> TaskBatch {
    TaskBatch {
        job,
        module: module(),
        module_holders: Bounded::new(Vec::new()).expect("none"),
        limits: ExecutionLimits {
            fuel: 1_000_000,
            memory_bytes: 1 << 20,
            output_bytes: 1 << 10,
        },
        wall_time_ms: 10_000,
        price_per_million_fuel: 10,
        tasks: Bounded::new(
            indexes
                .into_iter()
                .map(|index| AssignedTask {
                    index,
                    input: input(index),
                })
                .collect(),
        )
        .expect("within a batch"),
    }
}

pub fn approved() -> JobCheck {
    JobCheck::Approved {
        requestor: requestor(),
        module: module(),
    }
}

pub fn tasks(id: u64, batch: TaskBatch) -> Input {
    Input::Request {
        id,
        peer: requestor(),
        request: Request::Tasks(batch),
    }
}

pub fn replies(commands: &[Command]) -> Vec<(u64, Response)> {
    commands
        .iter()
        .filter_map(|command| match command {
            Command::Reply { id, response } => Some((*id, response.clone())),
            _ => None,
        })
        .collect()
}

pub fn refusal_code(response: &Response) -> Option<String> {
    match response {
        Response::Refused { code, .. } => Some(code.to_string()),
        _ => None,
    }
}

pub fn runs(commands: &[Command]) -> Vec<(JobId, u64)> {
    commands
        .iter()
        .filter_map(|command| match command {
            Command::Run(task) => Some((task.job, task.index)),
            _ => None,
        })
        .collect()
}

/// A core with job 1 checked and its module ready.
pub fn ready_core(queue_tasks_max: usize) -> ProviderCore {
    ready_core_with(config(queue_tasks_max))
}

/// [`ready_core`] with `config`.
pub fn ready_core_with(config: CoreConfig) -> ProviderCore {
    let mut core = ProviderCore::new(config, Vec::new());
    core.handle(
        NOW,
        Input::JobChecked {
            job: job(1),
            check: approved(),
        },
    );
    core.handle(NOW, tasks(1, batch(job(1), [])));
    core.handle(
        NOW,
        Input::ModuleReady {
            cid: module(),
            status: ModuleStatus::Ready,
        },
    );
    core
}

pub fn completed(stdout: &[u8]) -> RunResult {
    RunResult::Ran {
        outcome: TaskOutcome::Completed {
            exit_code: 0,
            output: ContentId::of(stdout),
        },
        fuel_used: 100,
        output: RunOutput::Inline(stdout.to_vec()),
        energy_millijoules: 250,
    }
}

/// A completed task whose output (`output`, `bytes` long) the worker kept.
pub fn kept(output: ContentId, bytes: u64) -> RunResult {
    RunResult::Ran {
        outcome: TaskOutcome::Completed {
            exit_code: 0,
            output,
        },
        fuel_used: 100,
        output: RunOutput::Kept { bytes },
        energy_millijoules: 250,
    }
}

/// The outputs each [`Command::ReleaseOutputs`] lets go, in order.
pub fn released(commands: &[Command]) -> Vec<(JobId, Vec<ContentId>)> {
    commands
        .iter()
        .filter_map(|command| match command {
            Command::ReleaseOutputs { job, outputs } => Some((*job, outputs.clone())),
            _ => None,
        })
        .collect()
}

pub fn sent_results(commands: &[Command]) -> Vec<(u64, Vec<TaskReturn>)> {
    commands
        .iter()
        .filter_map(|command| match command {
            Command::SendResults { batch, results, .. } => Some((*batch, results.results.to_vec())),
            _ => None,
        })
        .collect()
}

pub fn voucher(job: JobId, amount: u64, sequence: u64) -> SignedVoucher {
    requestor_key().sign(Voucher {
        job,
        provider: provider(),
        cumulative_amount: amount,
        cumulative_fuel: amount,
        sequence,
    })
}

pub fn voucher_request(id: u64, voucher: SignedVoucher) -> Input {
    Input::Request {
        id,
        peer: requestor(),
        request: Request::Voucher(voucher),
    }
}

pub fn redeemed(commands: &[Command]) -> Vec<(JobId, u64)> {
    commands
        .iter()
        .filter_map(|command| match command {
            Command::Redeem(vouchers) => Some(vouchers),
            _ => None,
        })
        .flatten()
        .map(|voucher| (voucher.body.job, voucher.body.cumulative_amount))
        .collect()
}
