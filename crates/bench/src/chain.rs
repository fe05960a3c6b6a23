//! `idlegrid-bench chain`: transfers finalized per second, and how long a
//! transfer takes to be final, on real validators (consensus, p2p on
//! loopback, redb) running in this process.
//!
//! Goals: at least 20,000 transfers a second with one validator; with four
//! on a two-core machine, at least 5,000 a second with finality within
//! 300 ms at the median. They are not asserted: the figures are what was
//! measured.
//!
//! Each configuration is a fresh testnet (its own directory and ports),
//! stopped (consensus finishing its writes) before its directory goes.
//! Transfers are signed before each configuration starts, sized from the
//! ledger's apply rate and the fastest configuration so far, then fed through
//! `submit_batch` (the API's path: up to [`SUBMIT_BATCH`] at a time, their
//! signatures checked as one batch, then one lock of the node) so that at
//! most [`IN_FLIGHT_MAX`] are submitted and not
//! yet final, spread round-robin over the validators (each sender always
//! uses the same one). A transfer's latency runs from just before its
//! submission (waiting for the node's lock included) to the moment the
//! validator it was submitted to reports the block holding it; throughput
//! counts the transfers so reported within the timed window. At the end,
//! every validator must have finalized every submitted transfer exactly
//! once and, with four, all must agree on the state root at a common
//! height.

use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, sync_channel};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail, ensure};
use idlegrid_chain::{FinalizedBlock, SUBSCRIBER_BACKLOG};
use idlegrid_ledger::{RedbStore, SignedTransaction, Transaction, TxKind};
use idlegrid_node::testnet::{self, TestnetPlan};
use idlegrid_node::{Validator, start_validator};
use idlegrid_types::{AccountId, ContentId, Keypair};

use crate::Measurement;
use crate::ledger::{CHAIN, Senders, apply_transfer_blocks, per_second};

#[derive(Debug, clap::Args)]
pub struct Options {
    #[command(flatten)]
    pub common: crate::Common,
    /// Where the validators keep their ledgers and consensus journals (a
    /// temporary directory inside it per configuration, removed at the
    /// end). Consensus creates and deletes a journal file per view, so a
    /// file system slow to create files shows in the figures; the default
    /// is the system's temporary directory.
    #[arg(long, value_name = "DIR")]
    dir: Option<PathBuf>,
    /// Blocks a stopped validator has to catch up when it restarts (100
    /// with --quick).
    #[arg(long, value_name = "N", default_value_t = 10_000)]
    catch_up_blocks: u64,
    /// Sign at most this many transfers for each configuration (rounded
    /// up to a whole number per sender): shows what the bench does when a
    /// chain takes them faster than they were sized for.
    #[arg(long, value_name = "N")]
    transfers_max: Option<usize>,
}

/// Funded accounts that send the transfers: the pool holds only
/// [`NONCES_AHEAD_MAX`] nonces ahead of each, so a sustained load needs many.
const SENDERS: usize = 2_000;
/// Nonces one sender may have submitted and not yet final (the pool takes
/// 64 past the account's next nonce).
const NONCES_AHEAD_MAX: usize = 60;
/// Transfers submitted and not yet final, across all senders: the
/// backlog the bench keeps (the pool holds 50,000). It is a trade: blocks
/// grow with it, and fewer, larger blocks cost consensus less per
/// transfer, but a transfer waits behind the whole backlog, so the
/// latency under this load is about the backlog over the throughput.
/// 2,000 fills blocks of a few hundred to a thousand transfers at the
/// rates measured here.
const IN_FLIGHT_MAX: usize = 2_000;
/// Transfers submitted together, as the API batches concurrent
/// submissions (`idlegrid_chain::submit_batch`).
const SUBMIT_BATCH: usize = idlegrid_chain::SUBMIT_BATCH_MAX;
/// Transfers in each block of the ledger baseline.
const BASELINE_BLOCK: usize = 1_000;
/// How long the validators may take to finalize their first blocks.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(60);
/// How long the validators may take to finalize what was submitted, once
/// submission stops.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(120);
/// Finalized blocks seen at every validator before anything is measured.
const STARTUP_BLOCKS: u64 = 2;
/// Finalized-block notices in flight from the subscriptions to the bench.
const EVENTS_MAX: usize = SUBSCRIBER_BACKLOG;

/// How long each phase of one configuration lasts.
#[derive(Debug, Clone, Copy)]
struct Phases {
    /// Blocks of the ledger baseline.
    baseline_blocks: usize,
    /// Watching the chain with no transactions.
    idle: Duration,
    /// Load before the timed window.
    warm_up: Duration,
    /// The timed window.
    window: Duration,
}

const FULL: Phases = Phases {
    baseline_blocks: 20,
    idle: Duration::from_secs(3),
    warm_up: Duration::from_secs(2),
    window: Duration::from_secs(10),
};

const QUICK: Phases = Phases {
    baseline_blocks: 2,
    // An idle leader waits up to 200 ms for a transaction: a few blocks.
    idle: Duration::from_secs(2),
    warm_up: Duration::from_millis(500),
    window: Duration::from_secs(2),
};

pub fn run(options: &Options) -> anyhow::Result<Vec<Measurement>> {
    let phases = if options.common.quick { QUICK } else { FULL };

    // The ledger alone, with as many funded accounts as the chain has
    // senders: what consensus, the network and redb are added to.
    let (blocks, applying) = apply_transfer_blocks(
        &mut Senders::new(SENDERS),
        BASELINE_BLOCK,
        phases.baseline_blocks,
    )?;
    let apply_rate = per_second(blocks.len() * BASELINE_BLOCK, applying);
    drop(blocks);

    // Twice what the ledger alone applies, or half again the fastest
    // rate a configuration has reached, for the load's whole length:
    // more than a chain can take, since each validator checks every
    // transfer when admitting it and executes it again in a block. Should
    // a chain still take them all (a machine with many cores), the timed
    // window closes when they run out and the rate is over what it lasted.
    let loaded = (phases.warm_up + phases.window).as_secs_f64();
    let keys = sender_keys();
    let mut transfers = vec![Vec::new(); SENDERS];
    let mut fastest: f64 = 0.0;

    let mut rows = Vec::new();
    for validators in [1, 4] {
        let budget = (2.0 * apply_rate).max(1.5 * fastest) * loaded;
        let mut nonces = (budget / SENDERS as f64).ceil() as usize;
        if let Some(max) = options.transfers_max {
            nonces = nonces.min(max.div_ceil(SENDERS));
        }
        sign_transfers(&keys, &mut transfers, nonces);
        let mut network = Network::start(validators, &keys, options.dir.as_deref())?;
        let idle_interval = network.idle_block_interval(phases.idle)?;
        let load = network.load(&transfers, phases)?;
        network.check_agreement()?;
        network.stop()?;
        fastest = fastest.max(load.transfers_per_second);

        let name = if validators == 1 {
            "chain.1_validator".to_owned()
        } else {
            format!("chain.{validators}_validators")
        };
        let idle_ms = idle_interval.as_secs_f64() * 1e3;
        let idle_name = "median block interval, idle chain (same validators)";
        rows.push(Measurement::new(
            format!("{name}.transfers_per_second"),
            load.transfers_per_second,
            "tx/s",
            apply_rate,
            "ledger apply rate (no consensus)",
        ));
        rows.push(Measurement::new(
            format!("{name}.finality_p50"),
            load.latency_p50.as_secs_f64() * 1e3,
            "ms",
            idle_ms,
            idle_name,
        ));
        rows.push(Measurement::new(
            format!("{name}.finality_p99"),
            load.latency_p99.as_secs_f64() * 1e3,
            "ms",
            idle_ms,
            idle_name,
        ));
    }
    let blocks = if options.common.quick {
        100
    } else {
        options.catch_up_blocks.max(1)
    };
    rows.push(catch_up(options.dir.as_deref(), blocks)?);
    Ok(rows)
}

/// Four validators making empty blocks as fast as consensus allows (no
/// idle wait); one is stopped while the others finalize `blocks` more,
/// then started again over its files: the time it takes to reach the
/// height the chain had when it restarted, against the time the chain
/// took to make those blocks.
fn catch_up(dir: Option<&Path>, blocks: u64) -> anyhow::Result<Measurement> {
    const VALIDATORS: usize = 4;
    let directory = match dir {
        Some(dir) => tempfile::tempdir_in(dir)
            .with_context(|| format!("failed to make a directory in {}", dir.display()))?,
        None => tempfile::tempdir()?,
    };
    let base = testnet::free_ports(2 * VALIDATORS)?;
    let plan = TestnetPlan {
        validators: VALIDATORS,
        chain_id: CHAIN.to_owned(),
        p2p_port: base,
        api_port: base + VALIDATORS as u16,
        idle_block_wait_ms: Some(0),
        ..TestnetPlan::default()
    };
    let testnet = testnet::init(directory.path(), &plan)?;
    let mut validators = testnet
        .configs
        .iter()
        .enumerate()
        .map(|(index, config)| {
            start_validator(config).with_context(|| format!("starting validator {index}"))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let height = |validator: &Validator| {
        validator
            .node
            .lock()
            .map_or(0, |node| node.ledger().height())
    };
    let wait = |what: &str, deadline: Duration, done: &dyn Fn() -> bool| {
        let until = Instant::now() + deadline;
        while !done() {
            ensure!(Instant::now() < until, "{what} within {deadline:?}");
            std::thread::sleep(Duration::from_millis(2));
        }
        Ok(())
    };
    wait(
        "the validators finalized their first blocks",
        STARTUP_TIMEOUT,
        &|| {
            validators
                .iter()
                .all(|validator| height(validator) >= STARTUP_BLOCKS)
        },
    )?;
    let behind = validators.pop().context("four validators")?;
    let from = height(&behind);
    behind
        .stop()
        .context("stopping the validator that falls behind")?;
    let making = Instant::now();
    // As slow as an idle chain (a block each 200 ms) and a minute more.
    let patience = STARTUP_TIMEOUT + Duration::from_millis(200) * blocks as u32;
    wait(
        "the other three finalized the blocks to catch up",
        patience,
        &|| height(&validators[0]) >= from + blocks,
    )?;
    let made = making.elapsed();
    let target = height(&validators[0]);
    let catching = Instant::now();
    let behind = start_validator(&testnet.configs[VALIDATORS - 1])
        .context("restarting the validator that fell behind")?;
    wait("the restarted validator caught up", patience, &|| {
        height(&behind) >= target
    })?;
    let caught_up = catching.elapsed();
    validators.push(behind);
    for validator in validators {
        validator.stop()?;
    }
    Ok(Measurement::new(
        format!("chain.catch_up_{blocks}_blocks"),
        caught_up.as_secs_f64(),
        "s",
        made.as_secs_f64(),
        "the chain making those blocks (three of four validators, no idle wait)",
    ))
}

/// The senders' keys, from distinct seeds.
fn sender_keys() -> Vec<Keypair> {
    (0..SENDERS as u64)
        .map(|index| {
            let mut seed = [0u8; 32];
            seed[..8].copy_from_slice(&index.to_le_bytes());
            Keypair::from_seed(seed)
        })
        .collect()
}

/// Signs more transfers until each sender has `nonces` (nonce 0 first,
/// each to the next sender), on every core, before anything is timed.
fn sign_transfers(keys: &[Keypair], transfers: &mut [Vec<SignedTransaction>], nonces: usize) {
    let sign_more = |index: usize, queue: &mut Vec<SignedTransaction>| {
        let to = keys[(index + 1) % keys.len()].account_id();
        for nonce in queue.len() as u64..nonces.max(1) as u64 {
            let body = Transaction::new(CHAIN, nonce, 1, TxKind::Transfer { to, amount: 1 })
                .expect("the chain id is short");
            queue.push(keys[index].sign(body));
        }
    };
    let threads = std::thread::available_parallelism().map_or(1, usize::from);
    let chunk = transfers.len().div_ceil(threads).max(1);
    std::thread::scope(|scope| {
        for (part, queues) in transfers.chunks_mut(chunk).enumerate() {
            scope.spawn(move || {
                for (offset, queue) in queues.iter_mut().enumerate() {
                    sign_more(part * chunk + offset, queue);
                }
            });
        }
    });
}

/// What a subscription thread passes on.
enum Event {
    /// Validator `node` reported `block` at `at`.
    Finalized {
        node: usize,
        at: Instant,
        block: FinalizedBlock,
    },
    /// Validator `node` dropped the subscription (it fell behind).
    Closed { node: usize },
}

/// A testnet of validators in this process, and their finalized blocks.
struct Network {
    validators: Vec<Validator>,
    events: Receiver<Event>,
    /// Finalized blocks seen from each validator.
    blocks_seen: Vec<u64>,
    /// The state root the first validator to finalize each height reported.
    roots: HashMap<u64, [u8; 32]>,
    /// The testnet's files, removed when the network is dropped.
    _directory: tempfile::TempDir,
}

impl Network {
    /// Writes a testnet funding every sender, starts its validators and
    /// waits until each has finalized a few blocks.
    fn start(validators: usize, keys: &[Keypair], dir: Option<&Path>) -> anyhow::Result<Self> {
        let directory = match dir {
            Some(dir) => tempfile::tempdir_in(dir)
                .with_context(|| format!("failed to make a directory in {}", dir.display()))?,
            None => tempfile::tempdir()?,
        };
        let base = testnet::free_ports(2 * validators)?;
        let plan = TestnetPlan {
            validators,
            chain_id: CHAIN.to_owned(),
            p2p_port: base,
            api_port: base + validators as u16,
            accounts: keys
                .iter()
                .map(|key| (key.account_id(), 1 << 40))
                .collect::<Vec<(AccountId, u64)>>(),
            ..TestnetPlan::default()
        };
        let testnet = testnet::init(directory.path(), &plan)?;
        let (sender, events) = sync_channel(EVENTS_MAX);
        let mut started = Vec::new();
        for (index, config) in testnet.configs.iter().enumerate() {
            let validator = start_validator(config)
                .with_context(|| format!("starting validator {index} of {validators}"))?;
            let subscription = lock(&validator)?.subscribe();
            forward(index, subscription, sender.clone())?;
            started.push(validator);
        }
        let mut network = Self {
            validators: started,
            events,
            blocks_seen: vec![0; validators],
            roots: HashMap::new(),
            _directory: directory,
        };
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        while network
            .blocks_seen
            .iter()
            .any(|seen| *seen < STARTUP_BLOCKS)
        {
            let Some(event) = network.next_event(deadline)? else {
                bail!(
                    "{validators} validator(s) finalized {:?} blocks in {STARTUP_TIMEOUT:?}",
                    network.blocks_seen
                );
            };
            ensure!(
                network.block_transactions(&event).is_empty(),
                "a block holds transactions nobody submitted"
            );
        }
        Ok(network)
    }

    /// The next event before `deadline` (`None` past it), counting blocks;
    /// a dropped subscription, or validators reporting different state
    /// roots at one height, is an error.
    fn next_event(&mut self, deadline: Instant) -> anyhow::Result<Option<Event>> {
        let wait = deadline.saturating_duration_since(Instant::now());
        match self.events.recv_timeout(wait) {
            Ok(Event::Closed { node }) => {
                bail!("validator {node} dropped the bench's subscription to finalized blocks")
            }
            Ok(Event::Finalized { node, at, block }) => {
                self.blocks_seen[node] += 1;
                let first = *self.roots.entry(block.height).or_insert(block.state_root);
                ensure!(
                    first == block.state_root,
                    "validator {node} finalized height {} with a state root another validator did not",
                    block.height
                );
                Ok(Some(Event::Finalized { node, at, block }))
            }
            Err(RecvTimeoutError::Timeout) => Ok(None),
            Err(RecvTimeoutError::Disconnected) => bail!("every subscription ended"),
        }
    }

    fn block_transactions<'a>(&self, event: &'a Event) -> &'a [ContentId] {
        match event {
            Event::Finalized { block, .. } => &block.transactions,
            Event::Closed { .. } => &[],
        }
    }

    /// The median time between blocks validator 0 finalizes while nobody
    /// submits anything: over `watch`, or longer (up to the startup
    /// timeout) until it has seen two blocks, since a slow or busy machine
    /// (a debug build under CI) can take a view change or two to finalize.
    fn idle_block_interval(&mut self, watch: Duration) -> anyhow::Result<Duration> {
        let started = Instant::now();
        let (watch_end, give_up) = (started + watch, started + STARTUP_TIMEOUT);
        let mut previous = None;
        let mut intervals = Vec::new();
        loop {
            let deadline = if intervals.is_empty() {
                give_up
            } else {
                watch_end
            };
            let Some(event) = self.next_event(deadline)? else {
                break;
            };
            ensure!(
                self.block_transactions(&event).is_empty(),
                "a block holds transactions nobody submitted"
            );
            if let Event::Finalized { node: 0, at, .. } = event {
                if let Some(previous) = previous {
                    intervals.push(at - previous);
                }
                previous = Some(at);
            }
        }
        ensure!(
            !intervals.is_empty(),
            "validator 0 of the idle chain finalized fewer than two blocks in \
             {STARTUP_TIMEOUT:?} (blocks seen per validator since start: {:?})",
            self.blocks_seen
        );
        intervals.sort();
        Ok(intervals[intervals.len() / 2])
    }

    /// Feeds the transfers for the warm-up and the timed window, then waits
    /// until every validator has finalized all of them.
    fn load(
        &mut self,
        transfers: &[Vec<SignedTransaction>],
        phases: Phases,
    ) -> anyhow::Result<LoadOutcome> {
        let mut load = Load::new(transfers, self.validators.len());
        let started = Instant::now();
        let window_start = started + phases.warm_up;
        let mut window_end = window_start + phases.window;
        while Instant::now() < window_end {
            // Take in every block reported so far, then top the pool up.
            while let Some(event) = self.next_event(Instant::now())? {
                load.record(event, window_start..window_end)?;
            }
            let submitted = load.top_up(&self.validators)?;
            if load.exhausted {
                // A machine faster than the transfers were sized for: the
                // window closes now, and the rate is over what it lasted.
                let now = Instant::now();
                ensure!(
                    now >= window_start + phases.window / 2,
                    "the validators used up the {} pre-signed transfers before half the window",
                    transfers.iter().map(Vec::len).sum::<usize>()
                );
                eprintln!(
                    "chain: the pre-signed transfers ran out {:.1} s into the {:?} window; it closes there",
                    (now - window_start).as_secs_f64(),
                    phases.window
                );
                window_end = now;
                break;
            }
            if submitted == 0 {
                let wait = (Instant::now() + Duration::from_millis(2)).min(window_end);
                if let Some(event) = self.next_event(wait)? {
                    load.record(event, window_start..window_end)?;
                }
            }
        }
        let drain_deadline = Instant::now() + DRAIN_TIMEOUT;
        while !load.all_final() {
            let Some(event) = self.next_event(drain_deadline)? else {
                bail!(
                    "{} of {} submitted transfers were not final at every validator {DRAIN_TIMEOUT:?} after submission stopped",
                    load.flights.len(),
                    load.submitted
                );
            };
            load.record(event, window_start..window_end)?;
        }
        // Exactly once: each validator reported each transfer once (a
        // second report, or one of something never submitted, fails
        // `record`), and as many as were submitted.
        for (node, finalized) in load.finalized_at.iter().enumerate() {
            ensure!(
                *finalized == load.submitted,
                "validator {node} finalized {finalized} of {} submitted transfers",
                load.submitted
            );
        }
        let mut latencies = load.latencies;
        ensure!(
            !latencies.is_empty(),
            "no transfer was final within the {:?} window",
            phases.window
        );
        latencies.sort();
        Ok(LoadOutcome {
            transfers_per_second: per_second(latencies.len(), window_end - window_start),
            latency_p50: percentile(&latencies, 0.50),
            latency_p99: percentile(&latencies, 0.99),
        })
    }

    /// Every validator holds the same state root at the highest height all
    /// of them have finalized.
    fn check_agreement(&self) -> anyhow::Result<()> {
        let mut heights = Vec::new();
        for validator in &self.validators {
            heights.push(lock(validator)?.ledger().height());
        }
        let common = heights.iter().copied().min().unwrap_or(0);
        let mut roots = Vec::new();
        for (index, validator) in self.validators.iter().enumerate() {
            let root = lock(validator)?.ledger().state_root_at(common)?;
            roots.push(root.with_context(|| {
                format!("validator {index} keeps no state root for height {common}")
            })?);
        }
        ensure!(
            roots.iter().all(|root| *root == roots[0]),
            "the validators disagree on the state root at height {common} (heights {heights:?})"
        );
        Ok(())
    }

    /// Stops every validator: consensus finishes its writes and ends,
    /// so later configurations run alone and the directory can go.
    fn stop(&mut self) -> anyhow::Result<()> {
        let mut first_error = None;
        for (index, validator) in self.validators.drain(..).enumerate() {
            if let Err(error) = validator.stop() {
                first_error.get_or_insert(error.context(format!("stopping validator {index}")));
            }
        }
        first_error.map_or(Ok(()), Err)
    }
}

impl Drop for Network {
    /// A configuration that failed still stops its validators before its
    /// directory is removed under them.
    fn drop(&mut self) {
        if let Err(error) = self.stop() {
            eprintln!("{error:#}");
        }
    }
}

fn lock(
    validator: &Validator,
) -> anyhow::Result<std::sync::MutexGuard<'_, idlegrid_chain::Node<RedbStore>>> {
    validator
        .node
        .lock()
        .map_err(|_| anyhow::anyhow!("a validator's node state is poisoned"))
}

/// Passes validator `node`'s finalized blocks on, stamped with the moment
/// they arrived, from a thread of its own so the subscription never falls
/// behind.
fn forward(
    node: usize,
    subscription: Receiver<FinalizedBlock>,
    events: SyncSender<Event>,
) -> anyhow::Result<()> {
    std::thread::Builder::new()
        .name(format!("bench-finalized-{node}"))
        .spawn(move || {
            for block in subscription {
                let at = Instant::now();
                if events.send(Event::Finalized { node, at, block }).is_err() {
                    return;
                }
            }
            let _ = events.send(Event::Closed { node });
        })?;
    Ok(())
}

/// One submitted transfer not yet final at every validator.
#[derive(Debug)]
struct Flight {
    sender: usize,
    /// The validator it was submitted to.
    node: usize,
    submitted: Instant,
    /// Validators that reported it final (one bit each).
    seen: u32,
}

/// The load generator's bookkeeping.
struct Load {
    /// Each sender's transfers, not yet submitted, in nonce order.
    queues: Vec<std::vec::IntoIter<SignedTransaction>>,
    /// Per sender: submitted and not yet final where submitted.
    outstanding: Vec<usize>,
    /// Per sender: whether it waits in its validator's ready queue.
    queued: Vec<bool>,
    /// Per validator: senders that may submit their next transfer.
    ready: Vec<VecDeque<usize>>,
    flights: HashMap<ContentId, Flight>,
    /// Submitted and not yet final where submitted.
    in_flight: usize,
    submitted: usize,
    /// Per validator: transfers it reported final.
    finalized_at: Vec<usize>,
    /// Submission to finality, for transfers final within the window.
    latencies: Vec<Duration>,
    /// A sender ran out of pre-signed transfers.
    exhausted: bool,
    /// A [`Flight::seen`] with every validator's bit.
    all_seen: u32,
}

/// What one configuration measured.
#[derive(Debug)]
struct LoadOutcome {
    transfers_per_second: f64,
    latency_p50: Duration,
    latency_p99: Duration,
}

impl Load {
    fn new(transfers: &[Vec<SignedTransaction>], validators: usize) -> Self {
        let mut ready = vec![VecDeque::new(); validators];
        for sender in 0..transfers.len() {
            ready[sender % validators].push_back(sender);
        }
        Self {
            queues: transfers
                .iter()
                .map(|queue| queue.clone().into_iter())
                .collect(),
            outstanding: vec![0; transfers.len()],
            queued: vec![true; transfers.len()],
            ready,
            flights: HashMap::new(),
            in_flight: 0,
            submitted: 0,
            finalized_at: vec![0; validators],
            latencies: Vec::new(),
            exhausted: false,
            all_seen: (1u32 << validators) - 1,
        }
    }

    /// Submits to each validator in turn, up to a batch each, while fewer
    /// than [`IN_FLIGHT_MAX`] are in flight; how many it submitted.
    fn top_up(&mut self, validators: &[Validator]) -> anyhow::Result<usize> {
        let mut total = 0;
        for (node, validator) in validators.iter().enumerate() {
            let room = IN_FLIGHT_MAX.saturating_sub(self.in_flight);
            // Who sent each transfer, and the transfers.
            let (mut senders, mut batch) = (Vec::new(), Vec::new());
            while batch.len() < room.min(SUBMIT_BATCH) {
                let Some(sender) = self.ready[node].pop_front() else {
                    break;
                };
                let Some(transfer) = self.queues[sender].next() else {
                    self.exhausted = true;
                    self.queued[sender] = false;
                    continue;
                };
                senders.push(sender);
                batch.push(transfer);
                self.outstanding[sender] += 1;
                if self.outstanding[sender] < NONCES_AHEAD_MAX {
                    self.ready[node].push_back(sender);
                } else {
                    self.queued[sender] = false;
                }
            }
            if batch.is_empty() {
                continue;
            }
            let submitted = Instant::now();
            let mut hashes = Vec::with_capacity(batch.len());
            // As the API takes concurrent submissions: signatures checked
            // as one batch outside the node's lock, then one lock.
            let results = idlegrid_chain::submit_batch(&validator.node, batch);
            for (sender, result) in senders.into_iter().zip(results) {
                let hash = result.map_err(|refused| {
                    anyhow::anyhow!(
                        "validator {node} refused a transfer ({}): {refused}",
                        refused.code()
                    )
                })?;
                hashes.push((sender, hash));
            }
            total += hashes.len();
            self.in_flight += hashes.len();
            self.submitted += hashes.len();
            for (sender, hash) in hashes {
                let flight = Flight {
                    sender,
                    node,
                    submitted,
                    seen: 0,
                };
                ensure!(
                    self.flights.insert(hash, flight).is_none(),
                    "two transfers share hash {hash}"
                );
            }
        }
        Ok(total)
    }

    /// Takes in a finalized block; a transfer reported twice by one
    /// validator, or one never submitted, is an error.
    fn record(&mut self, event: Event, window: std::ops::Range<Instant>) -> anyhow::Result<()> {
        let Event::Finalized { node, at, block } = event else {
            return Ok(());
        };
        for hash in &block.transactions {
            let Some(flight) = self.flights.get_mut(hash) else {
                bail!(
                    "validator {node} finalized transfer {hash} at height {} again, or one never submitted",
                    block.height
                );
            };
            let bit = 1u32 << node;
            ensure!(
                flight.seen & bit == 0,
                "validator {node} finalized transfer {hash} twice (again at height {})",
                block.height
            );
            flight.seen |= bit;
            let flight = &*flight;
            self.finalized_at[node] += 1;
            if flight.node == node {
                if window.contains(&at) {
                    self.latencies.push(at - flight.submitted);
                }
                self.in_flight -= 1;
                let sender = flight.sender;
                self.outstanding[sender] -= 1;
                if !self.queued[sender] && !self.queues[sender].as_slice().is_empty() {
                    self.queued[sender] = true;
                    self.ready[node].push_back(sender);
                }
            }
            if flight.seen == self.all_seen {
                self.flights.remove(hash);
            }
        }
        Ok(())
    }

    /// Every submitted transfer is final at every validator.
    fn all_final(&self) -> bool {
        self.flights.is_empty()
    }
}

/// The nearest-rank percentile of sorted samples.
fn percentile(sorted: &[Duration], fraction: f64) -> Duration {
    let rank = (fraction * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}
