//! Crash safety of the ledger on redb.
//!
//! - A block whose writes go into a write transaction that never commits
//!   (`RedbStore::abandon`) leaves no trace: the reopened ledger is at the
//!   previous height with the same root and balances, and applying the same
//!   block afterwards gives what an uninterrupted copy gives.
//! - A process killed with SIGKILL while it applies blocks (during a commit,
//!   or just after one) leaves a store that opens at a block boundary no
//!   lower than the last commit it reported, with exactly the roots and
//!   balances of an independent in-memory replay of the same blocks.
//!
//! The kill test re-runs this test binary as a child, filtered to
//! [`crash_child_applies_blocks_until_killed`] with [`CHILD_ENV`] set; as a
//! normal test (variable unset) that function returns at once.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};

use idlegrid_ledger::{
    Event, Genesis, Ledger, MemoryStore, NoReExecution, Params, RedbStore, SignedTransaction,
    StakeRole, Store, Transaction, TxKind,
};
use idlegrid_types::{AccountId, Keypair, SplitMix64};

const CHAIN: &str = "idlegrid-crash";
/// Set (to a directory) only in the child process of the kill test.
const CHILD_ENV: &str = "IDLEGRID_CRASH_CHILD";
/// What the child prints, then a height, just before it commits a block's
/// write batch, and once the commit has returned.
const COMMITTING: &str = "idlegrid-crash-committing ";
const COMMITTED: &str = "idlegrid-crash-committed ";
/// Accounts that send in the kill test's blocks; two more only receive.
const SENDERS: usize = 8;
const TRANSFERS_PER_SENDER: u64 = 8;
const GENESIS_BALANCE: u64 = 1_000_000_000_000;
/// The child stops by itself here, in case nobody kills it.
const CHILD_HEIGHT_MAX: u64 = 100_000;

fn keys() -> Vec<Keypair> {
    (0..SENDERS + 2)
        .map(|index| Keypair::from_seed([index as u8 + 40; 32]))
        .collect()
}

fn genesis(keys: &[Keypair]) -> Genesis {
    Genesis {
        chain_id: CHAIN.to_owned(),
        params: Params {
            epoch_length_blocks: 4,
            emission_per_epoch: 10_000,
            unbonding_blocks: 2,
            ..Params::default()
        },
        balances: keys[..SENDERS]
            .iter()
            .map(|key| (key.account_id(), GENESIS_BALANCE))
            .collect(),
        validators: vec![(keys[0].account_id(), 5_000), (keys[1].account_id(), 3_000)],
    }
}

/// The kill test's block at `height`: every sender makes
/// [`TRANSFERS_PER_SENDER`] transfers, amounts and recipients seeded from the
/// height. Every transaction applies, so nonces follow from the height.
fn transfer_block(keys: &[Keypair], height: u64) -> Vec<SignedTransaction> {
    let mut numbers = SplitMix64::new(height);
    let mut block = Vec::new();
    for sender in &keys[..SENDERS] {
        for index in 0..TRANSFERS_PER_SENDER {
            let to = keys[(numbers.next_u64() % keys.len() as u64) as usize].account_id();
            let amount = 1 + numbers.next_u64() % 1_000;
            let fee = 1 + numbers.next_u64() % 3;
            let nonce = (height - 1) * TRANSFERS_PER_SENDER + index;
            let transaction = Transaction::new(CHAIN, nonce, fee, TxKind::Transfer { to, amount })
                .expect("a short chain id");
            block.push(sender.sign(transaction));
        }
    }
    block
}

fn apply_all_accepted<S: Store>(
    ledger: &mut Ledger<S>,
    height: u64,
    block: &[SignedTransaction],
) -> [u8; 32] {
    let outcome = ledger
        .apply_block(height, 0, block, &NoReExecution)
        .expect("apply the block");
    for result in &outcome.transactions {
        if let Err(rejection) = &result.outcome {
            panic!("a transaction at height {height} was rejected: {rejection}");
        }
    }
    outcome.state_root
}

fn assert_supply<S: Store>(ledger: &Ledger<S>) {
    let supply = ledger.supply().expect("supply");
    assert_eq!(
        ledger.tokens_in_existence().expect("tokens"),
        supply.expected_total(),
        "the supply invariant at height {}",
        ledger.height()
    );
}

/// Everything the tests compare between two ledgers.
fn snapshot<S: Store>(ledger: &Ledger<S>, ids: &[AccountId]) -> Vec<String> {
    let mut lines = vec![
        format!("height {}", ledger.height()),
        format!("root {}", hex::encode(ledger.state_root())),
        format!("supply {:?}", ledger.supply().expect("supply")),
        format!("tokens {}", ledger.tokens_in_existence().expect("tokens")),
        format!("validators {:?}", ledger.validators().expect("validators")),
        format!("providers {:?}", ledger.providers().expect("providers")),
    ];
    for id in ids {
        lines.push(format!("{id} {:?}", ledger.account(id).expect("account")));
        for role in [StakeRole::Provider, StakeRole::Validator] {
            lines.push(format!(
                "{id} {} {:?}",
                role.as_str(),
                ledger.stake(role, id).expect("stake")
            ));
        }
    }
    lines
}

// ---------------------------------------------------------------------------
// (a) A block written but never committed.

/// Hands out each sender's next nonce.
#[derive(Default)]
struct Nonces(BTreeMap<AccountId, u64>);

impl Nonces {
    fn sign(&mut self, key: &Keypair, kind: TxKind) -> SignedTransaction {
        let nonce = self.0.entry(key.account_id()).or_default();
        let transaction = Transaction::new(CHAIN, *nonce, 2, kind).expect("a short chain id");
        *nonce += 1;
        key.sign(transaction)
    }
}

/// Blocks 1..=8 for the abandon test: transfers, stake moving in and out,
/// and a block 8 that ends an epoch and releases an unbonding.
fn varied_blocks(keys: &[Keypair]) -> Vec<Vec<SignedTransaction>> {
    let mut nonces = Nonces::default();
    let mut blocks = Vec::new();
    for height in 1..=8u64 {
        let mut block = Vec::new();
        for (index, key) in keys[..4].iter().enumerate() {
            let to = keys[(index + height as usize) % keys.len()].account_id();
            block.push(nonces.sign(
                key,
                TxKind::Transfer {
                    to,
                    amount: 100 * height + index as u64,
                },
            ));
        }
        match height {
            2 => {
                block.push(nonces.sign(
                    &keys[2],
                    TxKind::Stake {
                        role: StakeRole::Validator,
                        amount: 7_000,
                    },
                ));
                block.push(nonces.sign(
                    &keys[3],
                    TxKind::Stake {
                        role: StakeRole::Provider,
                        amount: 4_000,
                    },
                ));
            }
            // Released at block 8 (unbonding takes 2 blocks).
            6 => block.push(nonces.sign(
                &keys[2],
                TxKind::Unstake {
                    role: StakeRole::Validator,
                    amount: 2_500,
                },
            )),
            8 => block.push(nonces.sign(
                &keys[3],
                TxKind::Unstake {
                    role: StakeRole::Provider,
                    amount: 1_000,
                },
            )),
            _ => {}
        }
        blocks.push(block);
    }
    blocks
}

#[test]
fn an_abandoned_block_leaves_the_store_at_the_previous_block() {
    let keys = keys();
    let ids: Vec<AccountId> = keys.iter().map(Keypair::account_id).collect();
    let genesis = genesis(&keys);
    let blocks = varied_blocks(&keys);
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("ledger.redb");

    // An uninterrupted copy, in memory.
    let mut reference = Ledger::init(MemoryStore::default(), &genesis).expect("init in memory");
    let mut ledger =
        Ledger::init(RedbStore::open(&path).expect("open redb"), &genesis).expect("init in redb");
    for (index, block) in blocks[..7].iter().enumerate() {
        let height = index as u64 + 1;
        let root = apply_all_accepted(&mut ledger, height, block);
        assert_eq!(root, apply_all_accepted(&mut reference, height, block));
    }
    let before = snapshot(&ledger, &ids);
    assert_eq!(before, snapshot(&reference, &ids));

    // Block 8's writes go into a write transaction that never commits.
    let (batch, outcome) = ledger
        .execute_block(8, 0, &blocks[7], &NoReExecution)
        .expect("execute block 8");
    assert!(
        outcome
            .block_events
            .iter()
            .any(|event| matches!(event, Event::Unbonded { .. })),
        "block 8 releases an unbonding"
    );
    assert!(
        outcome
            .block_events
            .iter()
            .any(|event| matches!(event, Event::ValidatorRewarded { .. })),
        "block 8 ends an epoch"
    );
    assert!(!batch.is_empty());
    let mut store = ledger.store().clone();
    store.abandon(batch).expect("abandon block 8");
    assert_eq!(
        snapshot(&ledger, &ids),
        before,
        "nothing of the abandoned block is visible"
    );
    assert_eq!(ledger.state_root_at(8).expect("root"), None);
    drop(store);
    drop(ledger);

    // Reopened: still block 7, exactly.
    let reopened = Ledger::open(RedbStore::open(&path).expect("reopen redb")).expect("open");
    assert_eq!(reopened.height(), 7);
    assert_eq!(snapshot(&reopened, &ids), before);
    assert_eq!(reopened.state_root_at(8).expect("root"), None);
    for height in 0..=7 {
        assert_eq!(
            reopened.state_root_at(height).expect("root"),
            reference.state_root_at(height).expect("root"),
            "root at {height}"
        );
    }
    assert_supply(&reopened);

    // Applying block 8 now gives what the uninterrupted copy gives.
    let mut ledger = reopened;
    let applied = ledger
        .apply_block(8, 0, &blocks[7], &NoReExecution)
        .expect("apply block 8");
    assert_eq!(
        applied, outcome,
        "the same outcome as the abandoned attempt"
    );
    let expected = reference
        .apply_block(8, 0, &blocks[7], &NoReExecution)
        .expect("apply block 8 in memory");
    assert_eq!(applied, expected);
    assert_eq!(snapshot(&ledger, &ids), snapshot(&reference, &ids));
    assert_supply(&ledger);

    // And once more without reopening: abandon, then apply on the same
    // ledger, then reopen.
    // keys[0] sent one transfer in each of blocks 1..=8.
    let block9 = vec![Nonces(BTreeMap::from([(ids[0], 8)])).sign(
        &keys[0],
        TxKind::Transfer {
            to: ids[9],
            amount: 5,
        },
    )];
    let (batch, _) = ledger
        .execute_block(9, 0, &block9, &NoReExecution)
        .expect("execute block 9");
    ledger
        .store()
        .clone()
        .abandon(batch)
        .expect("abandon block 9");
    let root = apply_all_accepted(&mut ledger, 9, &block9);
    assert_eq!(root, apply_all_accepted(&mut reference, 9, &block9));
    drop(ledger);
    let reopened = Ledger::open(RedbStore::open(&path).expect("reopen redb")).expect("open");
    assert_eq!(reopened.height(), 9);
    assert_eq!(snapshot(&reopened, &ids), snapshot(&reference, &ids));
}

// ---------------------------------------------------------------------------
// (b) A process killed while it applies blocks.

/// In the kill test's child: applies transfer blocks to the store in the
/// directory [`CHILD_ENV`] names, until it is killed, saying on stdout when it
/// starts and ends each block's commit. As a normal test it does nothing.
///
/// Each block is `execute_block` followed by `Store::commit` of its batch
/// (what `apply_block` does), so the "committing" line comes right before the
/// write transaction; the ledger is then reopened over the same database.
#[test]
fn crash_child_applies_blocks_until_killed() {
    let Some(dir) = std::env::var_os(CHILD_ENV) else {
        return;
    };
    let keys = keys();
    let mut store =
        RedbStore::open(&Path::new(&dir).join("ledger.redb")).expect("child: open redb");
    let mut ledger =
        Ledger::open_or_init(store.clone(), &genesis(&keys)).expect("child: open the ledger");
    let mut stdout = std::io::stdout().lock();
    // A write error means the parent is gone: stop.
    let mut say = |prefix: &str, height: u64| {
        writeln!(stdout, "{prefix}{height}")
            .and_then(|()| stdout.flush())
            .is_ok()
    };
    while ledger.height() < CHILD_HEIGHT_MAX {
        let height = ledger.height() + 1;
        let block = transfer_block(&keys, height);
        let (batch, outcome) = ledger
            .execute_block(height, 0, &block, &NoReExecution)
            .expect("child: execute the block");
        assert!(
            outcome
                .transactions
                .iter()
                .all(|result| result.outcome.is_ok()),
            "child: a transaction at height {height} was rejected"
        );
        if !say(COMMITTING, height) {
            return;
        }
        store.commit(batch).expect("child: commit the block");
        ledger = Ledger::open(store.clone()).expect("child: reopen the ledger");
        assert_eq!(ledger.height(), height);
        assert_eq!(ledger.state_root(), outcome.state_root);
        if !say(COMMITTED, height) {
            return;
        }
    }
}

/// Kills the child if the parent fails before it does.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// When the parent kills the child.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum KillAt {
    /// On reading that the child is committing the target height.
    Committing,
    /// On reading that the target height is committed.
    Committed,
}

/// Runs the child on `dir` until it says it is committing (or has
/// committed) `target`, then kills it. Returns the last height it said was
/// committed.
fn run_child_and_kill(dir: &Path, target: u64, kill_at: KillAt) -> u64 {
    let exe = std::env::current_exe().expect("the test binary");
    let child = Command::new(exe)
        .args([
            "crash_child_applies_blocks_until_killed",
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn the child");
    let mut child = Killed(child);
    let stdout = child.0.stdout.take().expect("the child's stdout");
    let mut committed = None;
    for line in BufReader::new(stdout).lines() {
        let line = line.expect("read the child's stdout");
        let (phase, height) = if let Some(height) = line.strip_prefix(COMMITTING) {
            (KillAt::Committing, height)
        } else if let Some(height) = line.strip_prefix(COMMITTED) {
            (KillAt::Committed, height)
        } else {
            continue;
        };
        let height: u64 = height.trim().parse().expect("a height");
        if phase == KillAt::Committed {
            if let Some(previous) = committed {
                assert_eq!(height, previous + 1, "the child commits heights in order");
            }
            committed = Some(height);
        }
        if phase == kill_at && height >= target {
            child.0.kill().expect("kill the child");
            let status = child.0.wait().expect("wait for the child");
            assert!(!status.success(), "the child was killed: {status}");
            return committed.unwrap_or(0);
        }
    }
    let status = child.0.wait().expect("wait for the child");
    panic!("the child stopped by itself ({status}) at height {committed:?}, before {target}");
}

#[test]
fn a_killed_process_leaves_a_store_that_replays_exactly() {
    let keys = keys();
    let ids: Vec<AccountId> = keys.iter().map(Keypair::account_id).collect();
    let genesis = genesis(&keys);
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("ledger.redb");
    let mut replay = Ledger::init(MemoryStore::default(), &genesis).expect("init in memory");
    let mut reached = 0;
    // Three kills at different points; each child resumes the store the
    // last one left.
    for (extra, kill_at) in [
        (5u64, KillAt::Committing),
        (7, KillAt::Committed),
        (11, KillAt::Committing),
    ] {
        let target = reached + extra;
        let printed = run_child_and_kill(dir.path(), target, kill_at);
        assert!(printed + 1 >= target);

        let ledger = Ledger::open(RedbStore::open(&path).expect("reopen after the kill"))
            .expect("the ledger opens after the kill");
        let height = ledger.height();
        assert!(
            height >= printed,
            "the store is at {height} but the child had committed {printed}"
        );
        while replay.height() < height {
            let next = replay.height() + 1;
            apply_all_accepted(&mut replay, next, &transfer_block(&keys, next));
        }
        assert_eq!(ledger.state_root(), replay.state_root(), "root at {height}");
        for at in 0..=height {
            assert_eq!(
                ledger.state_root_at(at).expect("root"),
                replay.state_root_at(at).expect("root"),
                "root at {at}"
            );
        }
        assert_eq!(ledger.state_root_at(height + 1).expect("root"), None);
        assert_eq!(snapshot(&ledger, &ids), snapshot(&replay, &ids));
        assert_supply(&ledger);
        let supply = ledger.supply().expect("supply");
        assert!(
            supply.emitted > 0,
            "epochs ended, so tokens were emitted by height {height}"
        );
        reached = height;
        // Closed before the next child opens the file.
        drop(ledger);
    }
}
