//! `idlegrid jobs`: the ledger's jobs: list them, show one, and close one
//! (take back its unspent escrow) as soon as the ledger allows.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::{Args, Subcommand, ValueEnum};
use idlegrid_api::client::ApiClient;
use idlegrid_api::{JOBS_LIMIT_DEFAULT, JOBS_LIMIT_MAX};
use idlegrid_ledger::TxKind;
use idlegrid_node::read_key;
use idlegrid_types::JobId;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::failure::Failure;
use crate::resolve;

/// How long `cancel` waits for its `CloseJob` to be included.
const CLOSE_WAIT_TIMEOUT: Duration = Duration::from_secs(60);
/// How often `cancel --wait` asks for the height.
const HEIGHT_POLL_INTERVAL: Duration = Duration::from_millis(250);
/// How long `cancel` watches the chain to estimate its block rate.
const BLOCK_RATE_WINDOW: Duration = Duration::from_secs(2);
/// Enough blocks for that estimate (it stops watching at this many).
const BLOCK_RATE_BLOCKS: u64 = 5;
/// How often that estimate asks for the height.
const BLOCK_RATE_POLL_INTERVAL: Duration = Duration::from_millis(50);
/// `--limit`'s bounds, the API's.
const LIST_LIMIT_MAX: u64 = JOBS_LIMIT_MAX as u64;

/// The ledger's jobs: list them, show one, close one.
///
/// A job holds its requestor's escrow until its deadline height: providers
/// redeem the vouchers they were given until then. After the deadline the
/// requestor closes the job and the unredeemed rest comes back. There is no
/// earlier way out, so `jobs cancel` closes the job as soon as the ledger
/// allows (with --wait, it waits for that height).
///
/// Exit status: 0 done; 1 the node or the ledger refused (no such job, not
/// the requestor, deadline not reached); 2 usage error; 3 could not finish
/// (node unreachable, unusable key file, a wait timed out).
#[derive(Debug, Args)]
#[command(after_help = "Examples:
  idlegrid jobs list --status open
  JOB=$(idlegrid jobs list --limit 1 --json | jq -r '.jobs[0].job')
  idlegrid jobs show \"$JOB\"
  idlegrid jobs cancel \"$JOB\" --wait")]
pub struct JobsArgs {
    #[command(subcommand)]
    command: JobsCommand,
    /// A validator's or gateway's HTTP API [default: $IDLEGRID_NODE, else
    /// http://127.0.0.1:7700].
    #[arg(long, value_name = "URL", global = true)]
    node: Option<String>,
    /// Print one JSON object on stdout.
    #[arg(long, global = true)]
    json: bool,
}

#[derive(Debug, Subcommand)]
enum JobsCommand {
    /// List jobs, the most recently opened first.
    ///
    /// JSON: {"jobs": [JOB]}, each JOB as `jobs show` prints it without
    /// "height", "blocks_to_deadline" and "closable".
    #[command(after_help = "Examples:
  idlegrid jobs list
  idlegrid jobs list --status open --limit 5
  idlegrid jobs list --status closed --json")]
    List(ListArgs),
    /// Show a job: its terms, its state, and what was redeemed of its escrow.
    ///
    /// JSON: {"job", "requestor", "module", "spec", "escrow" (what is left),
    /// "price_per_million_fuel", "deadline_height", "limits": {"fuel",
    /// "memory_bytes", "output_bytes"}, "status": "open"|"closed",
    /// "redeemed_total", "height" (the chain's now), "blocks_to_deadline",
    /// "closable" (open, and its requestor can close it now)}.
    #[command(after_help = "Examples:
  JOB=$(idlegrid jobs list --limit 1 --json | jq -r '.jobs[0].job')
  idlegrid jobs show \"$JOB\"
  idlegrid jobs show \"$JOB\" --node http://127.0.0.1:8080 --json")]
    Show(ShowArgs),
    /// Close a job and take back its unredeemed escrow, as soon as the
    /// ledger allows: after its deadline height (until then providers may
    /// still redeem the vouchers they hold).
    ///
    /// Past the deadline it closes the job now and reports the refund.
    /// Before it, it says from which height (and roughly when) the job can
    /// be closed and exits 1, or with --wait waits for that height and then
    /// closes. Only the job's requestor can close it.
    ///
    /// JSON: {"job", "status": "closed", "hash", "height" (of the block
    /// that closed it), "fee", "refund", "redeemed_total"}. Refused before
    /// the deadline: {"error": {"code": "deadline_not_reached", "message",
    /// "hint"}, "job", "height", "deadline_height", "closable_at_height",
    /// "blocks_left", "seconds_left_estimate" (null when the chain made no
    /// block to measure)}.
    #[command(after_help = "Examples:
  JOB=$(idlegrid submit examples/pi/job.toml --json | jq -r .job)
  idlegrid jobs cancel \"$JOB\"
  idlegrid jobs cancel \"$JOB\" --key /tmp/me.key --wait --json")]
    Cancel(CancelArgs),
}

#[derive(Debug, Args)]
struct ListArgs {
    /// Only jobs in this state.
    #[arg(long, value_enum)]
    status: Option<JobStatus>,
    /// At most this many jobs (1 to 500).
    #[arg(
        long,
        value_name = "N",
        default_value_t = JOBS_LIMIT_DEFAULT as u64,
        value_parser = clap::value_parser!(u64).range(1..=LIST_LIMIT_MAX),
    )]
    limit: u64,
}

#[derive(Debug, Args)]
struct ShowArgs {
    /// The job (`job:` and 64 hex digits).
    job: JobId,
}

#[derive(Debug, Args)]
struct CancelArgs {
    /// The job (`job:` and 64 hex digits).
    job: JobId,
    /// The requestor's key file [default: $IDLEGRID_HOME/wallet.key].
    #[arg(long, value_name = "FILE")]
    key: Option<PathBuf>,
    /// Before the deadline, wait for it and then close the job.
    #[arg(long)]
    wait: bool,
}

/// Whether a job still takes redemptions (the API's words).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Deserialize)]
#[serde(rename_all = "snake_case")]
enum JobStatus {
    Open,
    Closed,
}

impl JobStatus {
    fn as_str(self) -> &'static str {
        match self {
            JobStatus::Open => "open",
            JobStatus::Closed => "closed",
        }
    }
}

/// `/v1/jobs/{job}`, the fields this command reads.
#[derive(Debug, Deserialize)]
struct JobView {
    job: String,
    requestor: String,
    module: String,
    spec: String,
    escrow: u64,
    price_per_million_fuel: u64,
    deadline_height: u64,
    limits: LimitsView,
    status: JobStatus,
    redeemed_total: u64,
}

#[derive(Debug, Deserialize)]
struct LimitsView {
    fuel: u64,
    memory_bytes: u64,
    output_bytes: u64,
}

impl JobView {
    fn parse(client: &ApiClient, path: &str, value: &Value) -> Result<Self, Failure> {
        serde_json::from_value(value.clone()).map_err(|error| {
            Failure::failed(
                "bad_answer",
                format!(
                    "the node at {}{path} answered a job that is not one: {error}",
                    client.base()
                ),
            )
        })
    }

    /// Blocks until the chain's height reaches the deadline: from then on
    /// no voucher can be redeemed and the next block may close the job.
    fn blocks_to_deadline(&self, height: u64) -> u64 {
        self.deadline_height.saturating_sub(height)
    }

    /// The first height whose block may hold the job's `CloseJob`.
    fn closable_at_height(&self) -> u64 {
        self.deadline_height.saturating_add(1)
    }
}

pub fn run(args: JobsArgs) -> ExitCode {
    let client = ApiClient::new(&resolve::node_url(args.node.as_deref()));
    let json = args.json;
    let done = match args.command {
        JobsCommand::List(list) => list_jobs(&client, &list, json),
        JobsCommand::Show(show) => show_job(&client, &show.job, json),
        JobsCommand::Cancel(cancel) => cancel_job(&client, &cancel, json),
    };
    match done {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => failure.report(json),
    }
}

fn list_jobs(client: &ApiClient, args: &ListArgs, json: bool) -> Result<(), Failure> {
    let mut path = format!("/v1/jobs?limit={}", args.limit);
    if let Some(status) = args.status {
        path.push_str("&status=");
        path.push_str(status.as_str());
    }
    let answer = client.get(&path)?;
    if json {
        println!("{answer}");
        return Ok(());
    }
    let entries = answer["jobs"].as_array().cloned().unwrap_or_default();
    let jobs = entries
        .iter()
        .map(|entry| JobView::parse(client, &path, entry))
        .collect::<Result<Vec<_>, _>>()?;
    if jobs.is_empty() {
        match args.status {
            Some(status) => println!("no {} jobs", status.as_str()),
            None => println!("no jobs"),
        }
        return Ok(());
    }
    let width = jobs.iter().map(|job| job.job.len()).max().unwrap_or(3);
    println!(
        "{:<width$}  {:<6}  {:>12}  {:>12}  {:>10}",
        "JOB", "STATUS", "ESCROW LEFT", "REDEEMED", "DEADLINE"
    );
    for job in &jobs {
        println!(
            "{:<width$}  {:<6}  {:>12}  {:>12}  {:>10}",
            job.job,
            job.status.as_str(),
            job.escrow,
            job.redeemed_total,
            job.deadline_height
        );
    }
    Ok(())
}

fn show_job(client: &ApiClient, id: &JobId, json: bool) -> Result<(), Failure> {
    let path = format!("/v1/jobs/{id}");
    let mut answer = client.get(&path)?;
    let job = JobView::parse(client, &path, &answer)?;
    let height = client.height()?;
    let blocks_to_deadline = job.blocks_to_deadline(height);
    let closable = job.status == JobStatus::Open && blocks_to_deadline == 0;
    if json {
        answer["height"] = height.into();
        answer["blocks_to_deadline"] = blocks_to_deadline.into();
        answer["closable"] = closable.into();
        println!("{answer}");
        return Ok(());
    }
    println!("job        {}", job.job);
    let state = match job.status {
        JobStatus::Closed => "closed".to_owned(),
        JobStatus::Open if closable => format!(
            "open, past its deadline (height {}, now {height}): its requestor can close it now \
             (idlegrid jobs cancel {id})",
            job.deadline_height
        ),
        JobStatus::Open => format!(
            "open, {blocks_to_deadline} blocks to its deadline (height {}, now {height}); \
             closable from height {}",
            job.deadline_height,
            job.closable_at_height()
        ),
    };
    println!("state      {state}");
    println!("requestor  {}", job.requestor);
    println!("module     {}", job.module);
    println!("spec       {}", job.spec);
    println!("price      {} per million fuel", job.price_per_million_fuel);
    match job.status {
        JobStatus::Open => println!(
            "escrow     {} left of {}; {} redeemed by providers",
            job.escrow,
            job.redeemed_total.saturating_add(job.escrow),
            job.redeemed_total
        ),
        JobStatus::Closed => println!(
            "escrow     {} redeemed by providers; the rest went back to the requestor at close",
            job.redeemed_total
        ),
    }
    println!(
        "limits     fuel {}, memory {} MiB, output {} bytes",
        job.limits.fuel,
        job.limits.memory_bytes >> 20,
        job.limits.output_bytes
    );
    Ok(())
}

fn cancel_job(client: &ApiClient, args: &CancelArgs, json: bool) -> Result<(), Failure> {
    let key_path = resolve::key_path(args.key.as_deref())
        .map_err(|error| Failure::failed("key_file", format!("{error:#}")))?;
    let key = read_key(&key_path).map_err(|error| Failure::key(&error))?;
    let id = args.job;
    let path = format!("/v1/jobs/{id}");
    let job = JobView::parse(client, &path, &client.get(&path)?)?;
    let account = key.account_id().to_string();
    if job.requestor != account {
        return Err(Failure::refused(
            "not_requestor",
            format!(
                "only the job's requestor, {}, can close it; the key {} is {account}",
                job.requestor,
                key_path.display()
            ),
        )
        .with_hint("name the requestor's key file with --key"));
    }
    if job.status == JobStatus::Closed {
        return Err(Failure::refused(
            "job_closed",
            format!(
                "{id} is already closed: its unredeemed escrow went back to the requestor then"
            ),
        ));
    }
    let mut height = client.height()?;
    if height < job.deadline_height {
        let blocks_left = job.blocks_to_deadline(height);
        let interval = block_interval(client)?;
        let estimate = interval.map(|interval| interval.as_secs_f64() * blocks_left as f64);
        let when = match estimate {
            Some(seconds) => format!("in about {}", rough_duration(seconds)),
            None => "when the chain moves again (it made no block just now)".to_owned(),
        };
        if !args.wait {
            return Err(Failure::refused(
                "deadline_not_reached",
                format!(
                    "{id} can be closed from height {} ({when}; the chain is at {height}): \
                     until its deadline providers may still redeem their vouchers",
                    job.closable_at_height()
                ),
            )
            .with_hint(format!(
                "`idlegrid jobs cancel {id} --wait` waits and then closes it"
            ))
            .with_detail("job", id.to_string())
            .with_detail("height", height)
            .with_detail("deadline_height", job.deadline_height)
            .with_detail("closable_at_height", job.closable_at_height())
            .with_detail("blocks_left", blocks_left)
            .with_detail("seconds_left_estimate", estimate));
        }
        if !json {
            eprintln!(
                "waiting for the deadline, height {}, to close {id} ({when})",
                job.deadline_height
            );
        }
        while height < job.deadline_height {
            std::thread::sleep(HEIGHT_POLL_INTERVAL);
            height = client.height()?;
        }
    }
    // From the deadline on no voucher can be redeemed, so what is left in
    // escrow now is the refund.
    let job = JobView::parse(client, &path, &client.get(&path)?)?;
    let refund = job.escrow;
    let sent = client.send(&key, TxKind::CloseJob { job: id }, None)?;
    let closed_at = client.wait_included(&sent.hash, CLOSE_WAIT_TIMEOUT)?;
    if json {
        println!(
            "{}",
            json!({
                "job": id.to_string(),
                "status": "closed",
                "hash": sent.hash,
                "height": closed_at,
                "fee": sent.fee,
                "refund": refund,
                "redeemed_total": job.redeemed_total,
            })
        );
    } else {
        println!(
            "closed {id} at height {closed_at}: refunded {refund} to {account} \
             ({} was redeemed by providers; fee {})",
            job.redeemed_total, sent.fee
        );
    }
    Ok(())
}

/// The chain's recent time per block, watched for up to
/// [`BLOCK_RATE_WINDOW`]; `None` when it made no block meanwhile.
fn block_interval(client: &ApiClient) -> Result<Option<Duration>, Failure> {
    let start = Instant::now();
    let first = client.height()?;
    loop {
        std::thread::sleep(BLOCK_RATE_POLL_INTERVAL);
        let blocks = client.height()?.saturating_sub(first);
        let elapsed = start.elapsed();
        if blocks >= BLOCK_RATE_BLOCKS || elapsed >= BLOCK_RATE_WINDOW {
            return Ok(u32::try_from(blocks)
                .ok()
                .filter(|blocks| *blocks > 0)
                .map(|blocks| elapsed / blocks));
        }
    }
}

/// `seconds` in the largest unit that keeps it readable.
fn rough_duration(seconds: f64) -> String {
    let seconds = seconds.max(1.0);
    if seconds < 90.0 {
        format!("{seconds:.0} s")
    } else if seconds < 90.0 * 60.0 {
        format!("{:.0} min", seconds / 60.0)
    } else if seconds < 48.0 * 3600.0 {
        format!("{:.1} h", seconds / 3600.0)
    } else {
        format!("{:.1} days", seconds / 86_400.0)
    }
}
