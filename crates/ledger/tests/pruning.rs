//! Bounded storage: pruning the state tree's superseded nodes.
//!
//! - Over a long run of transfers on redb, the tree's stored nodes stop
//!   growing once the kept history fills, and so, but for the records kept
//!   per transaction, does the file; an unpruned twin keeps growing.
//! - A pruned ledger's roots equal an unpruned one's at every height, for
//!   any blocks of transfers, stakes and unstakes (whose releases delete
//!   state keys) and any history length.
//! - A pruned redb store reopened goes on like an unpruned twin, and an
//!   unpruned store reopened with a history prunes its backlog down to
//!   what a store pruned from the start holds.

use std::num::NonZeroU64;
use std::path::Path;

use idlegrid_ledger::{
    Genesis, Ledger, MemoryStore, NoReExecution, PRUNE_NODES_PER_COMMIT_BASE, Params, RedbStore,
    SignedTransaction, StakeRole, Store, Transaction, TreeHistory, TxKind,
};
use idlegrid_types::{Keypair, SplitMix64};
use proptest::prelude::*;

const CHAIN: &str = "idlegrid-pruning";
const GENESIS_BALANCE: u64 = 1_000_000_000_000;
const FEE: u64 = 1;

fn history(heights: u64) -> TreeHistory {
    TreeHistory::Heights(NonZeroU64::new(heights).expect("a history of at least one height"))
}

/// Funded accounts and their next nonces, for blocks in which every
/// transaction applies.
struct Accounts {
    keys: Vec<Keypair>,
    nonces: Vec<u64>,
    numbers: SplitMix64,
}

impl Accounts {
    fn new(count: usize) -> Self {
        let keys = (0..count as u64)
            .map(|index| {
                let mut seed = [7u8; 32];
                seed[..8].copy_from_slice(&index.to_le_bytes());
                Keypair::from_seed(seed)
            })
            .collect();
        Self {
            keys,
            nonces: vec![0; count],
            numbers: SplitMix64::new(count as u64),
        }
    }

    /// Every account funded, the first a validator; short epochs and
    /// unbondings, so rewards and releases come often.
    fn genesis(&self) -> Genesis {
        self.genesis_with_epochs_of(7)
    }

    /// [`Accounts::genesis`] with epochs of `blocks`.
    fn genesis_with_epochs_of(&self, blocks: u64) -> Genesis {
        Genesis {
            chain_id: CHAIN.to_owned(),
            params: Params {
                epoch_length_blocks: blocks,
                emission_per_epoch: 10_000,
                unbonding_blocks: 3,
                ..Params::default()
            },
            balances: self
                .keys
                .iter()
                .map(|key| (key.account_id(), GENESIS_BALANCE))
                .collect(),
            validators: vec![(self.keys[0].account_id(), 50_000)],
        }
    }

    fn sign(&mut self, from: usize, kind: TxKind) -> SignedTransaction {
        let body = Transaction::new(CHAIN, self.nonces[from], FEE, kind).expect("a short chain id");
        self.nonces[from] += 1;
        self.keys[from].sign(body)
    }

    /// `count` transfers from distinct senders (taking turns by height) to
    /// random accounts.
    fn transfers(&mut self, height: u64, count: usize) -> Vec<SignedTransaction> {
        let accounts = self.keys.len();
        assert!(count <= accounts, "a block repeats no sender");
        (0..count)
            .map(|index| {
                let from = (height as usize * count + index) % accounts;
                let to =
                    self.keys[(self.numbers.next_u64() % accounts as u64) as usize].account_id();
                let amount = 1 + self.numbers.next_u64() % 1_000;
                self.sign(from, TxKind::Transfer { to, amount })
            })
            .collect()
    }

    /// Transfers, and from the last account a provider stake every tenth
    /// height and an unstake of half of it five heights later: the unstake
    /// releases (deletes) an unbonding record three heights on.
    fn varied(&mut self, height: u64) -> Vec<SignedTransaction> {
        let mut block = self.transfers(height, 6);
        let provider = self.keys.len() - 1;
        let role = StakeRole::Provider;
        match height % 10 {
            1 => block.push(self.sign(
                provider,
                TxKind::Stake {
                    role,
                    amount: 1_000,
                },
            )),
            6 => block.push(self.sign(provider, TxKind::Unstake { role, amount: 500 })),
            _ => {}
        }
        block
    }
}

/// Applies the next block; every transaction must apply. Returns the root.
fn apply<S: Store>(ledger: &mut Ledger<S>, block: &[SignedTransaction]) -> [u8; 32] {
    let height = ledger.height() + 1;
    let outcome = ledger
        .apply_block(height, 0, block, &NoReExecution)
        .unwrap_or_else(|error| panic!("block {height} applies: {error}"));
    for result in &outcome.transactions {
        if let Err(rejection) = &result.outcome {
            panic!("a transaction of block {height} was rejected: {rejection}");
        }
    }
    outcome.state_root
}

fn open_redb(path: &Path) -> Ledger<RedbStore> {
    Ledger::open(RedbStore::open(path).expect("open redb")).expect("open the ledger")
}

fn init_redb(path: &Path, genesis: &Genesis) -> Ledger<RedbStore> {
    Ledger::init(RedbStore::open(path).expect("open redb"), genesis).expect("genesis")
}

fn assert_same_roots<A: Store, B: Store>(left: &Ledger<A>, right: &Ledger<B>) {
    assert_eq!(left.height(), right.height());
    for height in 0..=left.height() {
        assert_eq!(
            left.state_root_at(height).expect("root"),
            right.state_root_at(height).expect("root"),
            "root at {height}"
        );
    }
}

const LONG_RUN_ACCOUNTS: usize = 400;
const LONG_RUN_BLOCKS: u64 = 1_000;
const LONG_RUN_TRANSFERS_PER_BLOCK: usize = 10;
const LONG_RUN_HISTORY_HEIGHTS: u64 = 25;
/// Tree nodes are counted every this many blocks.
const LONG_RUN_SAMPLE_BLOCKS: u64 = 10;

#[test]
fn a_long_run_keeps_the_tree_and_the_redb_file_bounded() {
    let mut accounts = Accounts::new(LONG_RUN_ACCOUNTS);
    // One epoch for the whole run: each epoch records its validator set,
    // a state key of its own, and the live state would grow with them.
    let genesis = accounts.genesis_with_epochs_of(LONG_RUN_BLOCKS + 1);
    let dir = tempfile::tempdir().expect("tempdir");
    let mut pruned = init_redb(&dir.path().join("pruned.redb"), &genesis)
        .with_tree_history(history(LONG_RUN_HISTORY_HEIGHTS));
    let mut unpruned = init_redb(&dir.path().join("unpruned.redb"), &genesis)
        .with_tree_history(TreeHistory::Unlimited);

    // The stores' stats after genesis, half way and at the end.
    let disk = |pruned: &Ledger<RedbStore>, unpruned: &Ledger<RedbStore>| {
        [pruned, unpruned].map(|ledger| ledger.store().stats().expect("stats"))
    };
    let mut disk_samples = vec![disk(&pruned, &unpruned)];
    let half = LONG_RUN_BLOCKS / 2;
    let mut unpruned_nodes_half = 0;
    // The most tree nodes the pruned store held in each half, once the
    // kept history filled.
    let mut pruned_nodes_max = [0, 0];
    for height in 1..=LONG_RUN_BLOCKS {
        let block = accounts.transfers(height, LONG_RUN_TRANSFERS_PER_BLOCK);
        assert_eq!(
            apply(&mut pruned, &block),
            apply(&mut unpruned, &block),
            "root at {height}"
        );
        if height == half {
            disk_samples.push(disk(&pruned, &unpruned));
            unpruned_nodes_half = unpruned.tree_stats().expect("stats").nodes;
        }
        if height > 2 * LONG_RUN_HISTORY_HEIGHTS && height.is_multiple_of(LONG_RUN_SAMPLE_BLOCKS) {
            let max = &mut pruned_nodes_max[usize::from(height > half)];
            *max = (*max).max(pruned.tree_stats().expect("stats").nodes);
        }
    }
    disk_samples.push(disk(&pruned, &unpruned));

    // The tree: flat once the history filled (long before half way; the
    // count moves a little with the nodes each kept block superseded),
    // while the unpruned tree doubles.
    let [first_half, second_half] = pruned_nodes_max;
    assert!(
        second_half * 20 <= first_half * 21,
        "the pruned tree grew from at most {first_half} nodes to {second_half}"
    );
    let unpruned_nodes = unpruned.tree_stats().expect("stats").nodes;
    assert!(unpruned_nodes * 10 >= unpruned_nodes_half * 19);
    assert!(second_half * 10 <= unpruned_nodes_half);

    // The file's pages in use, grown over each half: the pruned store
    // grows over the second half by its per-transaction records only,
    // much less than over the first (which filled the history), and a
    // small part of what the unpruned store grows, which grows as much in
    // each half.
    let growth = |store: usize, half: usize| {
        disk_samples[half + 1][store].allocated_bytes - disk_samples[half][store].allocated_bytes
    };
    let (pruned_first, pruned_second) = (growth(0, 0), growth(0, 1));
    let (unpruned_first, unpruned_second) = (growth(1, 0), growth(1, 1));
    let report = format!(
        "bytes in use grew by {pruned_first} then {pruned_second} pruned, \
         {unpruned_first} then {unpruned_second} unpruned"
    );
    assert!(pruned_second * 2 <= pruned_first, "{report}");
    assert!(unpruned_second * 10 >= unpruned_first * 9, "{report}");
    assert!(pruned_second * 10 <= unpruned_second, "{report}");
    // The file (which redb grows by doubling it) ends far smaller.
    let [pruned_end, unpruned_end] = disk_samples[2];
    assert!(
        pruned_end.file_bytes * 4 <= unpruned_end.file_bytes,
        "files of {} and {} bytes",
        pruned_end.file_bytes,
        unpruned_end.file_bytes
    );
}

/// One transaction of a generated block: who signs it and what it does.
#[derive(Debug, Clone)]
enum Op {
    Transfer { from: usize, to: usize, amount: u64 },
    Stake { from: usize, amount: u64 },
    Unstake { from: usize, amount: u64 },
}

const PROPERTY_ACCOUNTS: usize = 12;

fn op() -> impl Strategy<Value = Op> {
    let account = 0..PROPERTY_ACCOUNTS;
    prop_oneof![
        6 => (account.clone(), 0..PROPERTY_ACCOUNTS, 1u64..1_000)
            .prop_map(|(from, to, amount)| Op::Transfer { from, to, amount }),
        1 => (account.clone(), 1u64..2_000).prop_map(|(from, amount)| Op::Stake { from, amount }),
        1 => (account, 1u64..2_000).prop_map(|(from, amount)| Op::Unstake { from, amount }),
    ]
}

/// Signs a block's operations with the nonces `ledger` expects, one
/// transaction per signer (a later one from the same signer is left out).
fn sign_block<S: Store>(
    ledger: &Ledger<S>,
    keys: &[Keypair],
    ops: &[Op],
) -> Vec<SignedTransaction> {
    let mut signers = std::collections::BTreeSet::new();
    let role = StakeRole::Provider;
    ops.iter()
        .filter_map(|op| {
            let (from, kind) = match *op {
                Op::Transfer { from, to, amount } => (
                    from,
                    TxKind::Transfer {
                        to: keys[to].account_id(),
                        amount,
                    },
                ),
                Op::Stake { from, amount } => (from, TxKind::Stake { role, amount }),
                Op::Unstake { from, amount } => (from, TxKind::Unstake { role, amount }),
            };
            if !signers.insert(from) {
                return None;
            }
            let nonce = ledger
                .account(&keys[from].account_id())
                .expect("account")
                .nonce;
            let body = Transaction::new(CHAIN, nonce, FEE, kind).expect("a short chain id");
            Some(keys[from].sign(body))
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 32, failure_persistence: None, ..ProptestConfig::default() })]

    /// Pruning changes what the store holds, never the state: the roots
    /// of a pruned ledger equal an unpruned one's after every block
    /// (rejected transactions included), and its tree never holds more.
    #[test]
    fn pruned_and_unpruned_ledgers_agree_at_every_height(
        blocks in prop::collection::vec(prop::collection::vec(op(), 0..6), 1..40),
        heights in 1u64..8,
    ) {
        let accounts = Accounts::new(PROPERTY_ACCOUNTS);
        let genesis = accounts.genesis();
        let mut pruned = Ledger::init(MemoryStore::default(), &genesis)
            .expect("genesis")
            .with_tree_history(history(heights));
        let mut unpruned = Ledger::init(MemoryStore::default(), &genesis)
            .expect("genesis")
            .with_tree_history(TreeHistory::Unlimited);
        for ops in &blocks {
            let block = sign_block(&unpruned, &accounts.keys, ops);
            let height = unpruned.height() + 1;
            let expected = unpruned.apply_block(height, 0, &block, &NoReExecution).expect("unpruned applies");
            let outcome = pruned.apply_block(height, 0, &block, &NoReExecution).expect("pruned applies");
            prop_assert_eq!(outcome, expected, "block {}", height);
            let (kept, all) = (pruned.tree_stats().expect("stats"), unpruned.tree_stats().expect("stats"));
            prop_assert!(kept.nodes <= all.nodes, "height {}: {:?} against {:?}", height, kept, all);
        }
        assert_same_roots(&pruned, &unpruned);
    }
}

const REOPEN_BLOCKS: u64 = 60;
const REOPEN_HISTORY_HEIGHTS: u64 = 4;

#[test]
fn a_reopened_pruned_store_goes_on_like_an_unpruned_twin() {
    let mut accounts = Accounts::new(40);
    let genesis = accounts.genesis();
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("ledger.redb");
    let mut unpruned = Ledger::init(MemoryStore::default(), &genesis)
        .expect("genesis")
        .with_tree_history(TreeHistory::Unlimited);
    // Pruned from the start, and never reopened: what the redb store
    // should hold.
    let mut reference = Ledger::init(MemoryStore::default(), &genesis)
        .expect("genesis")
        .with_tree_history(history(REOPEN_HISTORY_HEIGHTS));
    let mut ledger = init_redb(&path, &genesis).with_tree_history(history(REOPEN_HISTORY_HEIGHTS));
    for round in 0..2 {
        for _ in 0..REOPEN_BLOCKS {
            let block = accounts.varied(unpruned.height() + 1);
            let root = apply(&mut unpruned, &block);
            assert_eq!(apply(&mut reference, &block), root);
            assert_eq!(
                apply(&mut ledger, &block),
                root,
                "root at {} (round {round})",
                unpruned.height()
            );
        }
        assert_eq!(
            ledger.tree_stats().expect("stats"),
            reference.tree_stats().expect("stats")
        );
        drop(ledger);
        ledger = open_redb(&path).with_tree_history(history(REOPEN_HISTORY_HEIGHTS));
        assert_eq!(ledger.state_root(), unpruned.state_root());
    }
    assert_same_roots(&ledger, &unpruned);
}

const BACKLOG_BLOCKS: u64 = 200;

#[test]
fn an_unpruned_store_reopened_with_a_history_prunes_its_backlog() {
    let mut accounts = Accounts::new(40);
    let genesis = accounts.genesis();
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("ledger.redb");
    let mut reference = Ledger::init(MemoryStore::default(), &genesis)
        .expect("genesis")
        .with_tree_history(history(REOPEN_HISTORY_HEIGHTS));
    let mut ledger = init_redb(&path, &genesis).with_tree_history(TreeHistory::Unlimited);
    for _ in 0..BACKLOG_BLOCKS {
        let block = accounts.varied(ledger.height() + 1);
        assert_eq!(apply(&mut ledger, &block), apply(&mut reference, &block));
    }
    let backlog = ledger.tree_stats().expect("stats");
    assert!(backlog.nodes > 10 * reference.tree_stats().expect("stats").nodes);
    drop(ledger);

    let mut ledger = open_redb(&path).with_tree_history(history(REOPEN_HISTORY_HEIGHTS));
    let mut caught_up_after = None;
    for blocks in 1..=20 {
        let block = accounts.varied(ledger.height() + 1);
        assert_eq!(apply(&mut ledger, &block), apply(&mut reference, &block));
        let (stats, expected) = (
            ledger.tree_stats().expect("stats"),
            reference.tree_stats().expect("stats"),
        );
        assert!(stats.nodes <= backlog.nodes, "pruning only deletes");
        if stats == expected {
            caught_up_after.get_or_insert(blocks);
        } else {
            assert_eq!(caught_up_after, None, "once caught up, it stays so");
        }
    }
    // A commit deletes up to PRUNE_NODES_PER_COMMIT_BASE due nodes, far
    // more than a block of these supersedes: the backlog goes in a few
    // blocks.
    let caught_up_after = caught_up_after.expect("the backlog is pruned within 20 blocks");
    let bound = backlog.superseded_nodes / (PRUNE_NODES_PER_COMMIT_BASE as u64 / 2) + 1;
    assert!(
        caught_up_after <= bound,
        "caught up after {caught_up_after} blocks, not {bound}, from {backlog:?}"
    );
    assert_same_roots(&ledger, &reference);
}
