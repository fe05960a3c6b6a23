//! What the requestor core's tests share: a job file, keys, offers, receipts
//! and readers of the commands the core gives.

#![allow(dead_code)]

use std::sync::Arc;

use idlegrid_market::{MarketConfig, Standing};
use idlegrid_net::{Request, ResultBatch, TaskBatch, TaskReturn};
use idlegrid_requestor::core::{
    AcceptedOutput, Command, Input, REFEREE_FUEL_DEFAULT, RequestorCore,
};
use idlegrid_requestor::{JobFile, Verification};
use idlegrid_types::codec::Bounded;
use idlegrid_types::{
    AccountId, ContentId, JobId, Keypair, Offer, Receipt, SignedReceipt, TaskInput, TaskOutcome,
};

/// The core's clock, microseconds.
pub const NOW: u64 = 1_000_000_000;
/// Fuel each task reports, and the price: each accepted result earns 10.
pub const FUEL: u64 = 1_000_000;
pub const PRICE: u64 = 10;
pub const MODULE: &[u8] = b"\0asm module bytes";

pub fn key(seed: u8) -> Keypair {
    Keypair::from_seed([seed; 32])
}

pub fn input(index: u64) -> TaskInput {
    TaskInput::new(vec![index.to_string()], Vec::new()).expect("small")
}

pub fn job_file(tasks: u64, verification: Verification) -> Arc<JobFile> {
    job_file_with_budget(tasks, verification, 1_000_000)
}

/// A job whose budget is `budget`: each placement reserves 100 (its fuel
/// limit at the price), and each accepted result costs 10. Task `i` is
/// [`input`]`(i)`.
pub fn job_file_with_budget(tasks: u64, verification: Verification, budget: u64) -> Arc<JobFile> {
    let folder = tempfile::tempdir().expect("a folder");
    std::fs::write(folder.path().join("m.wasm"), MODULE).expect("write the module");
    let verification = match verification {
        Verification::Adaptive => String::new(),
        Verification::Replicas(replicas) => {
            format!("[verification]\npolicy = \"replicas\"\nreplicas = {replicas}\n")
        }
    };
    let text = format!(
        "module = \"m.wasm\"\nprice_per_million_fuel = {PRICE}\nbudget = {budget}\n\
         deadline_blocks = 100\n\
         [limits]\nfuel = {}\nmemory_mib = 1\noutput_bytes = 1024\nwall_time_secs = 10\n\
         {verification}[tasks]\nend = {tasks}\nargs = [\"{{index}}\"]\n",
        10 * FUEL
    );
    let job_file = JobFile::parse(&text, &folder.path().join("job.toml")).expect("a job file");
    Arc::new(job_file)
}

pub fn job() -> JobId {
    JobId::derive(&key(1).account_id(), 0)
}

pub fn requestor(tasks: u64, verification: Verification) -> RequestorCore {
    requestor_refereeing(tasks, verification, REFEREE_FUEL_DEFAULT)
}

pub fn requestor_refereeing(
    tasks: u64,
    verification: Verification,
    referee_fuel: u64,
) -> RequestorCore {
    let mut core = RequestorCore::new(
        key(1),
        job(),
        job_file(tasks, verification),
        MarketConfig::default(),
        referee_fuel,
    );
    let commands = core.start(NOW);
    assert!(sent_tasks(&commands).is_empty(), "nobody to place with yet");
    core
}

pub fn offer() -> Offer {
    Offer {
        cores: 1,
        memory_bytes: 1 << 30,
        gpu: None,
        benchmark_fuel_per_second: 1_000_000_000,
        price_floor_per_million_fuel: 1,
        concurrency: 4,
        idle_only: false,
        operator: None,
        sequence: 1,
        expires_at_ms: NOW / 1000 + 1_000_000,
    }
}

/// A provider offers (its stake is then read) and is found `standing`;
/// gives what the core answered.
pub fn offers_with(
    core: &mut RequestorCore,
    provider: AccountId,
    standing: Standing,
) -> Vec<Command> {
    let mut commands = core.input(
        NOW,
        Input::Offer {
            provider,
            offer: offer(),
        },
    );
    assert!(
        commands
            .iter()
            .any(|command| matches!(command, Command::ReadStanding(p) if *p == provider))
    );
    commands.extend(core.input(NOW, Input::Standing { provider, standing }));
    commands
}

/// A provider offers, is staked and connects; gives what the step decided.
pub fn join(core: &mut RequestorCore, provider: AccountId) -> Vec<Command> {
    let mut commands = offers_with(core, provider, Standing::staked(1_000, 5_000));
    commands.extend(core.input(NOW, Input::Connected(provider)));
    commands.extend(core.step(NOW));
    commands
}

pub fn sent_tasks(commands: &[Command]) -> Vec<(AccountId, Vec<u64>)> {
    commands
        .iter()
        .filter_map(|command| match command {
            Command::SendTasks { provider, batch } => Some((
                *provider,
                batch.tasks.iter().map(|task| task.index).collect(),
            )),
            _ => None,
        })
        .collect()
}

pub fn batches(commands: &[Command]) -> Vec<(AccountId, TaskBatch)> {
    commands
        .iter()
        .filter_map(|command| match command {
            Command::SendTasks { provider, batch } => Some((*provider, batch.clone())),
            _ => None,
        })
        .collect()
}

pub fn receipt(task: u64, stdout: &[u8]) -> Receipt {
    Receipt {
        job: job(),
        task_index: task,
        module: ContentId::of(MODULE),
        input: input(task).content_id(),
        outcome: TaskOutcome::Completed {
            exit_code: 0,
            output: ContentId::of(stdout),
        },
        fuel_used: FUEL,
        energy_millijoules: 40 + task,
    }
}

/// A provider's results request carrying `returns`.
pub fn results(id: u64, provider: &Keypair, returns: Vec<(Receipt, Vec<u8>)>) -> Input {
    let (receipts, outputs): (Vec<_>, Vec<_>) = returns.into_iter().unzip();
    let signed = SignedReceipt::sign_batch(provider, receipts);
    let results = signed
        .into_iter()
        .zip(outputs)
        .map(|(receipt, stdout)| TaskReturn::Ran {
            receipt,
            stdout: Bounded::new(stdout).expect("small"),
        })
        .collect();
    results_request(id, provider, results)
}

/// A provider's results request carrying `results`.
fn results_request(id: u64, provider: &Keypair, results: Vec<TaskReturn>) -> Input {
    Input::Request {
        id,
        peer: provider.account_id(),
        request: Request::Results(ResultBatch {
            job: job(),
            results: Bounded::new(results).expect("within a batch"),
        }),
    }
}

/// An accepted task's output file: where, and what.
type Output = Option<(String, Vec<u8>)>;

/// Tasks accepted, with the bytes of their outputs (an output providers
/// keep shows as `b"kept"`; [`accepted_outputs`] says more).
pub fn accepted(commands: &[Command]) -> Vec<(u64, Output)> {
    accepted_outputs(commands)
        .into_iter()
        .map(|(task, output)| {
            let output = output.map(|(file, output)| match output {
                AcceptedOutput::Bytes(bytes) => (file, bytes),
                AcceptedOutput::Kept { .. } => (file, b"kept".to_vec()),
            });
            (task, output)
        })
        .collect()
}

/// Tasks accepted, with where their outputs come from.
pub fn accepted_outputs(commands: &[Command]) -> Vec<(u64, Option<(String, AcceptedOutput)>)> {
    commands
        .iter()
        .filter_map(|command| match command {
            Command::Accepted { task, output, .. } => Some((*task, output.clone())),
            _ => None,
        })
        .collect()
}

/// A provider's results request saying it keeps each output of `returns`
/// (receipts naming them, and their lengths).
pub fn kept_results(id: u64, provider: &Keypair, returns: Vec<(Receipt, u64)>) -> Input {
    let (receipts, lengths): (Vec<_>, Vec<_>) = returns.into_iter().unzip();
    let signed = SignedReceipt::sign_batch(provider, receipts);
    let results = signed
        .into_iter()
        .zip(lengths)
        .map(|(receipt, bytes)| TaskReturn::Kept { receipt, bytes })
        .collect();
    results_request(id, provider, results)
}

pub fn vouchers(commands: &[Command]) -> Vec<(AccountId, u64, u64)> {
    commands
        .iter()
        .filter_map(|command| match command {
            Command::SendVoucher { provider, voucher } => Some((
                *provider,
                voucher.body.cumulative_amount,
                voucher.body.sequence,
            )),
            _ => None,
        })
        .collect()
}
