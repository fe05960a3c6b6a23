//! A fault campaign: validators on commonware's deterministic runtime and
//! simulated network, each through the same engine wiring as a real one,
//! under a transfer load while a seeded [`Plan`] crashes and restarts
//! them, splits and heals the network, drops and delays messages, and
//! changes the validator set at epoch boundaries (a validator leaves and
//! rejoins, one outside genesis joins).
//!
//! After every run: every transfer the client sent is final exactly once
//! at every node (it resends what a crash lost, as a real client would;
//! a resend of one already final is refused as stale, never applied
//! again), every node holds the same state root at every height they all
//! reached, nothing panicked, and the chain finished within its simulated
//! deadline. A failure names its seed; [`run`] with that seed replays the
//! run exactly (the runtime's audit of every event is the same).

mod plan;

use std::collections::BTreeMap;
use std::panic::AssertUnwindSafe;
use std::time::Duration;

use commonware_cryptography::Signer as _;
use commonware_cryptography::ed25519::{PrivateKey, PublicKey};
use commonware_p2p::simulated::{self, Link, Network, Oracle};
use commonware_runtime::deterministic;
use commonware_runtime::{Clock, Handle, Quota, Runner as _, Spawner as _, Supervisor as _};
use commonware_utils::{NZU32, NZUsize, Probability, probability};
use idlegrid_ledger::{
    Genesis, Ledger, MemoryStore, NoReExecution, Params, SignedTransaction, StakeRole, Transaction,
    TxKind,
};
use idlegrid_types::{AccountId, Keypair};

pub use plan::{Fault, LOAD_FOR, Plan, Scheduled, VALIDATORS_MAX, VALIDATORS_MIN};

use crate::engine::{Channels, EngineConfig, channel, max_message_size, private_key};
use crate::{Chain, Mempool, MempoolConfig, SharedNode, shared};

const CHAIN: &str = "idlegrid-campaign";
/// Each genesis validator's stake (and what a joiner stakes).
const STAKE: u64 = 50_000;
/// Messages per second per peer and channel on the simulated network.
const QUOTA: Quota = Quota::per_second(NZU32!(10_000));
/// A transfer not final this long after it was sent is sent again.
const RESEND_AFTER: Duration = Duration::from_secs(3);
/// After the load ends: how long the chain may take to finalize every
/// transfer and every node to catch up (simulated time).
const SETTLE_MAX: Duration = Duration::from_secs(240);
/// The simulated time past which the runtime gives up (a stall).
const SIMULATED_MAX: Duration = Duration::from_secs(600);

/// What one run did.
#[derive(Debug, Clone)]
pub struct Report {
    pub plan: Plan,
    /// Faults injected, by kind.
    pub faults: BTreeMap<&'static str, u64>,
    /// Transfers the client sent (each once final).
    pub transfers: u64,
    /// Sends of a transfer again after a crash or a refusal.
    pub resent: u64,
    /// Submissions a pool refused, by reason (stale resends included).
    pub refusals: BTreeMap<&'static str, u64>,
    /// The lowest height every node reached.
    pub height: u64,
    /// Simulated seconds the run took.
    pub simulated: Duration,
    /// The runtime's audit of every event (equal for equal seeds).
    pub audit: String,
}

/// Why a run failed; its display names the seed to replay it with.
#[derive(Debug, Clone, thiserror::Error)]
#[error("campaign seed {seed} failed: {what}\n{plan}")]
pub struct Failure {
    pub seed: u64,
    pub what: String,
    pub plan: Plan,
}

/// Runs the campaign of `seed` and checks it.
pub fn run(seed: u64) -> Result<Report, Failure> {
    let plan = Plan::draw(seed);
    let fail = |what: String| Failure {
        seed,
        what,
        plan: plan.clone(),
    };
    let config = deterministic::Config::default()
        .with_seed(seed)
        .with_timeout(Some(SIMULATED_MAX));
    let outcome = std::panic::catch_unwind(AssertUnwindSafe(|| {
        deterministic::Runner::new(config).start(|context| drive(context, plan.clone()))
    }));
    match outcome {
        Ok(Ok(report)) => Ok(report),
        Ok(Err(what)) => Err(fail(what)),
        Err(panic) => {
            let message = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|text| (*text).to_owned()))
                .unwrap_or_else(|| "a panic without a message".to_owned());
            Err(fail(format!("panicked: {message}")))
        }
    }
}

fn validator_key(index: usize) -> Keypair {
    let mut seed = [0xa0; 32];
    seed[..8].copy_from_slice(&(index as u64).to_le_bytes());
    Keypair::from_seed(seed)
}

fn sender_key(index: usize) -> Keypair {
    let mut seed = [0x5e; 32];
    seed[..8].copy_from_slice(&(index as u64).to_le_bytes());
    Keypair::from_seed(seed)
}

fn recipient() -> AccountId {
    Keypair::from_seed([0x7e; 32]).account_id()
}

fn genesis(plan: &Plan, nodes: &[Keypair]) -> Genesis {
    Genesis {
        chain_id: CHAIN.to_owned(),
        params: Params {
            epoch_length_blocks: plan.epoch_length,
            ..Params::default()
        },
        balances: (0..plan.senders)
            .map(|index| (sender_key(index).account_id(), 1_000_000))
            .chain(nodes.iter().map(|key| (key.account_id(), 4 * STAKE)))
            .collect(),
        validators: nodes[..plan.validators]
            .iter()
            .map(|key| (key.account_id(), STAKE))
            .collect(),
    }
}

/// One node of the run: a genesis validator, or the joiner.
struct Member {
    key: Keypair,
    signer: PrivateKey,
    public: PublicKey,
    node: SharedNode<MemoryStore>,
    engine: Option<Handle<()>>,
    /// Transactions this node's account sent (stake changes).
    nonce: u64,
}

impl Member {
    fn up(&self) -> bool {
        self.engine.is_some()
    }
}

fn height(node: &SharedNode<MemoryStore>) -> u64 {
    node.lock().map_or(0, |node| node.ledger().height())
}

/// A node over `ledger` with an empty pool, as a process starts.
fn node_over(ledger: Ledger<MemoryStore>) -> Result<SharedNode<MemoryStore>, String> {
    let chain = Chain::new(ledger).map_err(|error| format!("a chain over the ledger: {error}"))?;
    Ok(shared(
        chain,
        Mempool::new(MempoolConfig::default()),
        Box::new(NoReExecution),
    ))
}

async fn start_member(
    context: &deterministic::Context,
    oracle: &Oracle<PublicKey, deterministic::Context>,
    member: &Member,
    index: usize,
) -> Result<Handle<()>, String> {
    let control = oracle.control(member.public.clone());
    let mut registered = Vec::new();
    for id in channel::ALL {
        registered.push(
            control
                .register(id, QUOTA)
                .await
                .map_err(|error| format!("registering channel {id}: {error}"))?,
        );
    }
    let mut registered = registered.into_iter();
    let mut next = || registered.next().ok_or("six channels");
    let channels = Channels {
        votes: next()?,
        certificates: next()?,
        requests: next()?,
        broadcast: next()?,
        backfill: next()?,
        transactions: next()?,
    };
    let manager = oracle.manager();
    let mut config = EngineConfig::new(CHAIN);
    config.partition_prefix = format!("node-{index}");
    let (signer, node) = (member.signer.clone(), member.node.clone());
    Ok(context
        .child("node")
        .with_attribute("index", index)
        .spawn(move |context| async move {
            match crate::engine::start(context, &config, signer, node, manager, control, channels)
                .await
            {
                Ok(running) => {
                    let _ = running.engine.await;
                }
                Err(error) => panic!("node {index}'s engine did not start: {error}"),
            }
        }))
}

/// Links every pair of nodes: reliable, or dropping one message in
/// `drop_one_in` and delaying the rest unevenly. `apart` pairs stay
/// unlinked (a partition).
async fn link(
    oracle: &Oracle<PublicKey, deterministic::Context>,
    keys: &[PublicKey],
    drop_one_in: Option<u32>,
    apart: impl Fn(usize, usize) -> bool,
) {
    for (a, from) in keys.iter().enumerate() {
        for (b, to) in keys.iter().enumerate() {
            if a == b {
                continue;
            }
            let _ = oracle.remove_link(from.clone(), to.clone()).await;
            if apart(a, b) {
                continue;
            }
            let link = match drop_one_in {
                None => Link {
                    latency: Duration::from_millis(10),
                    jitter: Duration::from_millis(5),
                    success_rate: probability!(1.0),
                },
                Some(one_in) => Link {
                    latency: Duration::from_millis(150),
                    jitter: Duration::from_millis(100),
                    success_rate: Probability::new(u64::from(one_in - 1), u64::from(one_in))
                        .unwrap_or(probability!(1.0)),
                },
            };
            let _ = oracle.add_link(from.clone(), to.clone(), link).await;
        }
    }
}

/// The client: one transfer after another from each sender in turn (each
/// of amount 1 to one recipient), to a node that is up, and each one not
/// final within [`RESEND_AFTER`] sent again to another.
struct Client {
    senders: Vec<Keypair>,
    /// Per sender: its transfers, in nonce order, and when each was last sent.
    sent: Vec<Vec<(SignedTransaction, Duration)>>,
    next_sender: usize,
    resent: u64,
    refusals: BTreeMap<&'static str, u64>,
}

impl Client {
    fn new(senders: usize) -> Self {
        Self {
            senders: (0..senders).map(sender_key).collect(),
            sent: vec![Vec::new(); senders],
            next_sender: 0,
            resent: 0,
            refusals: BTreeMap::new(),
        }
    }

    fn transfers(&self) -> u64 {
        self.sent.iter().map(|sent| sent.len() as u64).sum()
    }

    fn submit(&mut self, node: &SharedNode<MemoryStore>, transaction: SignedTransaction) {
        let Ok(mut node) = node.lock() else { return };
        if let Err(refused) = node.submit(transaction) {
            *self.refusals.entry(refused.code()).or_default() += 1;
        }
    }

    /// Sends the next sender's next transfer to `node`.
    fn send_new(&mut self, node: &SharedNode<MemoryStore>, now: Duration) {
        let sender = self.next_sender;
        self.next_sender = (sender + 1) % self.senders.len();
        let nonce = self.sent[sender].len() as u64;
        let body = Transaction::new(
            CHAIN,
            nonce,
            1,
            TxKind::Transfer {
                to: recipient(),
                amount: 1,
            },
        )
        .expect("the chain id is short");
        let transaction = self.senders[sender].sign(body);
        self.sent[sender].push((transaction.clone(), now));
        self.submit(node, transaction);
    }

    /// Sends again, to `node`, every transfer `final_view` does not hold
    /// final that was last sent [`RESEND_AFTER`] ago.
    fn resend(
        &mut self,
        view: &SharedNode<MemoryStore>,
        node: &SharedNode<MemoryStore>,
        now: Duration,
    ) {
        for sender in 0..self.senders.len() {
            let next = view.lock().map_or(0, |view| {
                view.ledger()
                    .account(&self.senders[sender].account_id())
                    .map_or(0, |account| account.nonce)
            });
            let mut again = Vec::new();
            for (transaction, last) in self.sent[sender].iter_mut().skip(next as usize) {
                if now.saturating_sub(*last) >= RESEND_AFTER {
                    *last = now;
                    again.push(transaction.clone());
                }
            }
            for transaction in again {
                self.resent += 1;
                self.submit(node, transaction);
            }
        }
    }

    /// How many of this client's transfers `node` holds final, and how
    /// many it should.
    fn final_at(&self, node: &SharedNode<MemoryStore>) -> (u64, u64) {
        let Ok(node) = node.lock() else { return (0, 0) };
        let applied = self
            .senders
            .iter()
            .map(|key| {
                node.ledger()
                    .account(&key.account_id())
                    .map_or(0, |account| account.nonce)
            })
            .sum();
        (applied, self.transfers())
    }
}

/// A stake change signed by `member`'s account.
fn stake(member: &mut Member, kind: TxKind) -> SignedTransaction {
    let body = Transaction::new(CHAIN, member.nonce, 1, kind).expect("the chain id is short");
    member.nonce += 1;
    member.key.sign(body)
}

async fn drive(context: deterministic::Context, plan: Plan) -> Result<Report, String> {
    let count = plan.validators + usize::from(plan.has_joiner());
    let keys: Vec<Keypair> = (0..count).map(validator_key).collect();
    let genesis = genesis(&plan, &keys);
    let mut members = Vec::new();
    for key in &keys {
        let signer = private_key(key.seed());
        let ledger = Ledger::init(MemoryStore::default(), &genesis)
            .map_err(|error| format!("genesis: {error}"))?;
        members.push(Member {
            key: key.clone(),
            public: signer.public_key(),
            signer,
            node: node_over(ledger)?,
            engine: None,
            nonce: 0,
        });
    }
    let publics: Vec<PublicKey> = members.iter().map(|member| member.public.clone()).collect();
    let (network, oracle) = Network::new_with_peers(
        context.child("network"),
        simulated::Config {
            max_size: max_message_size(VALIDATORS_MAX as u32 + 1),
            max_peers_per_set: NZUsize!(VALIDATORS_MAX + 1),
            disconnect_on_block: true,
            tracked_peer_sets: NZUsize!(4),
        },
        publics.clone(),
    )
    .await;
    network.start();
    link(&oracle, &publics, None, |_, _| false).await;
    for (index, member) in members.iter_mut().enumerate() {
        member.engine = Some(start_member(&context, &oracle, member, index).await?);
    }
    let started = context.current();
    let elapsed = |context: &deterministic::Context| {
        context
            .current()
            .duration_since(started)
            .unwrap_or_default()
    };

    let mut client = Client::new(plan.senders);
    let mut faults: BTreeMap<&'static str, u64> = BTreeMap::new();
    let mut pending = plan.faults.iter().peekable();
    // A fault in progress and when it ends.
    let mut clearing: Option<(Duration, Fault)> = None;
    let mut turn = 0usize;
    let mut last_resend = Duration::ZERO;
    while elapsed(&context) < LOAD_FOR {
        let now = elapsed(&context);
        // End the fault in progress, then start the next that is due.
        if let Some((until, fault)) = clearing.take() {
            if now >= until {
                clear(&context, &oracle, &publics, &mut members, &fault).await?;
            } else {
                clearing = Some((until, fault));
            }
        }
        if clearing.is_none()
            && let Some(next) = pending.next_if(|next| next.at <= now)
        {
            *faults.entry(next.fault.kind()).or_default() += 1;
            inject(&oracle, &publics, &mut members, &plan, &next.fault).await;
            clearing = Some((now + next.fault.lasting(), next.fault.clone()));
        }
        // Load: the next transfer to the next node that is up.
        let up: Vec<usize> = (0..members.len())
            .filter(|index| members[*index].up())
            .collect();
        if !up.is_empty() {
            turn += 1;
            let node = &members[up[turn % up.len()]].node;
            client.send_new(node, now);
            if now.saturating_sub(last_resend) >= Duration::from_secs(1) {
                last_resend = now;
                let view = &members[up[(turn + 1) % up.len()]].node;
                client.resend(view, node, now);
            }
        }
        context.sleep(plan.submit_every).await;
    }
    if let Some((_, fault)) = clearing.take() {
        clear(&context, &oracle, &publics, &mut members, &fault).await?;
    }

    // Settle: every transfer final at every node, and every node past the
    // height the chain had when the load ended by two epochs.
    let target = members
        .iter()
        .map(|member| height(&member.node))
        .max()
        .unwrap_or(0)
        + 2 * plan.epoch_length;
    let settle_by = elapsed(&context) + SETTLE_MAX;
    loop {
        let now = elapsed(&context);
        let done = members.iter().all(|member| {
            let (applied, sent) = client.final_at(&member.node);
            applied == sent && height(&member.node) >= target
        });
        if done {
            break;
        }
        if now > settle_by {
            let state: Vec<(u64, u64)> = members
                .iter()
                .map(|member| (height(&member.node), client.final_at(&member.node).0))
                .collect();
            return Err(format!(
                "the chain did not settle within {SETTLE_MAX:?} of the load ending: \
                 (height, transfers final) per node {state:?}, {} sent, target height {target}",
                client.transfers()
            ));
        }
        if now.saturating_sub(last_resend) >= Duration::from_secs(1) {
            last_resend = now;
            turn += 1;
            let node = &members[turn % members.len()].node;
            let view = &members[(turn + 1) % members.len()].node;
            client.resend(view, node, now);
        }
        context.sleep(Duration::from_millis(100)).await;
    }
    let height = check(&members, &client)?;
    Ok(Report {
        faults,
        transfers: client.transfers(),
        resent: client.resent,
        refusals: client.refusals.clone(),
        height,
        simulated: elapsed(&context),
        audit: context.auditor().state(),
        plan,
    })
}

async fn inject(
    oracle: &Oracle<PublicKey, deterministic::Context>,
    publics: &[PublicKey],
    members: &mut [Member],
    plan: &Plan,
    fault: &Fault,
) {
    match fault {
        Fault::Crash { validator, .. } => {
            if let Some(engine) = members[*validator].engine.take() {
                engine.abort();
            }
        }
        Fault::Partition { side, .. } => {
            let on_side = |index: usize| side.contains(&index);
            link(oracle, publics, None, |a, b| on_side(a) != on_side(b)).await;
        }
        Fault::Lossy { drop_one_in, .. } => {
            link(oracle, publics, Some(*drop_one_in), |_, _| false).await;
        }
        Fault::Leave { validator } => {
            let unstake = stake(
                &mut members[*validator],
                TxKind::Unstake {
                    role: StakeRole::Validator,
                    amount: STAKE,
                },
            );
            submit_anywhere(members, unstake);
        }
        Fault::Rejoin { validator } => {
            let restake = stake(
                &mut members[*validator],
                TxKind::Stake {
                    role: StakeRole::Validator,
                    amount: STAKE,
                },
            );
            submit_anywhere(members, restake);
        }
        Fault::Join => {
            let joiner = plan.validators;
            let join = stake(
                &mut members[joiner],
                TxKind::Stake {
                    role: StakeRole::Validator,
                    amount: STAKE,
                },
            );
            submit_anywhere(members, join);
        }
    }
}

/// Hands a stake change to every node that is up (the pools relay it; a
/// copy a pool holds already is refused as a duplicate).
fn submit_anywhere(members: &[Member], transaction: SignedTransaction) {
    for member in members.iter().filter(|member| member.up()) {
        if let Ok(mut node) = member.node.lock() {
            let _ = node.submit(transaction.clone());
        }
    }
}

/// Ends a fault: a crashed validator restarts over its ledger and
/// journals with an empty pool; links become reliable and whole again.
async fn clear(
    context: &deterministic::Context,
    oracle: &Oracle<PublicKey, deterministic::Context>,
    publics: &[PublicKey],
    members: &mut [Member],
    fault: &Fault,
) -> Result<(), String> {
    match fault {
        Fault::Crash { validator, .. } => {
            let member = &mut members[*validator];
            // What a process finds on disk: the ledger as committed (each
            // block commits at once); its pool and the chain's blocks in
            // progress are gone.
            let store = member
                .node
                .lock()
                .map_err(|_| format!("node {validator}'s state was poisoned by a panic"))?
                .ledger()
                .store()
                .clone();
            let ledger = Ledger::open(store)
                .map_err(|error| format!("node {validator}'s ledger does not reopen: {error}"))?;
            member.node = node_over(ledger)?;
            member.engine = Some(start_member(context, oracle, member, *validator).await?);
        }
        Fault::Partition { .. } | Fault::Lossy { .. } => {
            link(oracle, publics, None, |_, _| false).await;
        }
        Fault::Leave { .. } | Fault::Rejoin { .. } | Fault::Join => {}
    }
    Ok(())
}

/// Every transfer final exactly once at every node, and the same state
/// root at every height they all reached; the lowest height.
fn check(members: &[Member], client: &Client) -> Result<u64, String> {
    let sent = client.transfers();
    let common = members
        .iter()
        .map(|member| height(&member.node))
        .min()
        .unwrap_or(0);
    let mut roots: Option<Vec<[u8; 32]>> = None;
    for (index, member) in members.iter().enumerate() {
        let node = member
            .node
            .lock()
            .map_err(|_| format!("node {index}'s state was poisoned by a panic"))?;
        let ledger = node.ledger();
        let received = ledger
            .account(&recipient())
            .map_err(|error| error.to_string())?
            .balance;
        if received != sent {
            return Err(format!(
                "node {index} applied {received} of the {sent} transfers sent: {} lost, {} applied twice",
                sent.saturating_sub(received),
                received.saturating_sub(sent)
            ));
        }
        let here = (1..=common)
            .map(|at| {
                ledger
                    .state_root_at(at)
                    .map_err(|error| error.to_string())?
                    .ok_or_else(|| format!("node {index} keeps no state root for height {at}"))
            })
            .collect::<Result<Vec<_>, String>>()?;
        match &roots {
            None => roots = Some(here),
            Some(first) => {
                if let Some(at) = (0..first.len()).find(|at| first[*at] != here[*at]) {
                    return Err(format!(
                        "node {index} holds another state root than node 0 at height {}",
                        at + 1
                    ));
                }
            }
        }
    }
    Ok(common)
}
