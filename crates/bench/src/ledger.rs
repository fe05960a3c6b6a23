//! `idlegrid-bench ledger`: how fast the ledger applies and commits transfers.
//!
//! Goal: at least 20,000 transfers a second on one validator, signature
//! checks included (`ledger.transfers`), so that the ledger is never what
//! limits the network; and a disk that stops growing with the state tree's
//! history once the kept heights are full (`ledger.storage_bytes`). Also
//! what checking a capacity challenge costs the chain when a pair agrees,
//! against what answering it costs a provider
//! (`ledger.challenge.check_agreeing_pair`: the check should be a
//! vanishing fraction).

use std::time::{Duration, Instant};

use anyhow::{bail, ensure};
use idlegrid_ledger::{
    Genesis, Ledger, MemoryStore, NoReExecution, Params, RedbStats, RedbStore, SignedTransaction,
    Store, TREE_HISTORY_HEIGHTS_DEFAULT, Transaction, TreeHistory, TxKind,
};
use idlegrid_sandbox::{Sandbox, SandboxConfig};
use idlegrid_types::capacity::answer_commitment;
use idlegrid_types::identity::{verify_batch, verify_raw};
use idlegrid_types::{AccountId, Keypair, Signable, Signature};

use crate::Measurement;

#[derive(Debug, clap::Args)]
pub struct Options {
    #[command(flatten)]
    pub common: crate::Common,
}

/// The chain id of every benchmark transaction (the chain suite's too, so
/// that its transfers are the same size as these).
pub(crate) const CHAIN: &str = "idlegrid-bench";

/// The state tree's history kept in `--quick`'s storage figure (the full
/// run keeps the default).
const QUICK_TREE_HISTORY_HEIGHTS: std::num::NonZeroU64 =
    std::num::NonZeroU64::new(20).expect("not zero");

/// Funded accounts that send transfers, one per sender per block, so that
/// no block waits on one account's nonces.
pub(crate) struct Senders {
    keys: Vec<Keypair>,
    nonces: Vec<u64>,
    next: usize,
}

impl Senders {
    pub(crate) fn new(count: usize) -> Self {
        let keys = (0..count as u64)
            .map(|index| {
                let mut seed = [0u8; 32];
                seed[..8].copy_from_slice(&index.to_le_bytes());
                Keypair::from_seed(seed)
            })
            .collect();
        Self {
            keys,
            nonces: vec![0; count],
            next: 0,
        }
    }

    /// A chain where every sender is funded, and nonces back at 0 to match.
    fn genesis(&mut self) -> Genesis {
        self.nonces.fill(0);
        self.next = 0;
        Genesis {
            chain_id: CHAIN.to_owned(),
            params: Params::default(),
            balances: self
                .keys
                .iter()
                .map(|key| (key.account_id(), 1 << 40))
                .collect(),
            validators: Vec::new(),
        }
    }

    /// `size` signed transfers, each from a different sender to its neighbour.
    fn block(&mut self, size: usize) -> Vec<SignedTransaction> {
        assert!(size <= self.keys.len(), "a block repeats no sender");
        (0..size)
            .map(|_| {
                let index = self.next;
                self.next = (index + 1) % self.keys.len();
                let to = self.keys[self.next].account_id();
                let transfer = TxKind::Transfer { to, amount: 1 };
                let body = Transaction::new(CHAIN, self.nonces[index], 1, transfer)
                    .expect("the chain id is short");
                self.nonces[index] += 1;
                self.keys[index].sign(body)
            })
            .collect()
    }
}

/// Applies and commits the next block; every transfer must apply.
fn apply<S: Store>(
    ledger: &mut Ledger<S>,
    block: &[SignedTransaction],
) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let outcome = ledger.apply_block(ledger.height() + 1, 0, block, &NoReExecution)?;
    let elapsed = started.elapsed();
    if let Some(rejection) = outcome
        .transactions
        .iter()
        .find_map(|tx| tx.outcome.as_ref().err())
    {
        bail!("a benchmark transfer was rejected: {rejection}");
    }
    Ok(elapsed)
}

/// Signs `count` blocks of `block_size` transfers and applies them, in
/// order, to a fresh in-memory ledger where every sender is funded: the
/// blocks, and the time applying them took (signature checks included,
/// signing not). The chain suite's baseline too.
pub(crate) fn apply_transfer_blocks(
    senders: &mut Senders,
    block_size: usize,
    count: usize,
) -> anyhow::Result<(Vec<Vec<SignedTransaction>>, Duration)> {
    let mut ledger = Ledger::init(MemoryStore::default(), &senders.genesis())?;
    let blocks: Vec<_> = (0..count).map(|_| senders.block(block_size)).collect();
    let applying = blocks
        .iter()
        .map(|block| apply(&mut ledger, block))
        .sum::<anyhow::Result<Duration>>()?;
    Ok((blocks, applying))
}

type SignedMessage = (AccountId, &'static str, Vec<u8>, Signature);

/// What each transaction's signature covers, as the verifiers take it.
fn signed_messages(block: &[SignedTransaction]) -> Vec<SignedMessage> {
    block
        .iter()
        .map(|tx| {
            (
                tx.signer,
                Transaction::DOMAIN,
                tx.signed_bytes(),
                tx.signature,
            )
        })
        .collect()
}

pub(crate) fn per_second(count: usize, elapsed: Duration) -> f64 {
    count as f64 / elapsed.as_secs_f64()
}

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

/// Applies `blocks` to a fresh ledger on redb keeping `history` of the
/// state tree: the store's stats after `warmup` blocks and after all of
/// them, and the final state root.
fn storage_run(
    genesis: &Genesis,
    blocks: &[Vec<SignedTransaction>],
    warmup: usize,
    history: TreeHistory,
) -> anyhow::Result<(RedbStats, RedbStats, [u8; 32])> {
    let directory = tempfile::tempdir()?;
    let store = RedbStore::open(&directory.path().join("ledger.redb"))?;
    let mut ledger = Ledger::init(store, genesis)?.with_tree_history(history);
    let (warming, measured) = blocks.split_at(warmup);
    for block in warming {
        apply(&mut ledger, block)?;
    }
    let before = ledger.store().stats()?;
    for block in measured {
        apply(&mut ledger, block)?;
    }
    Ok((before, ledger.store().stats()?, ledger.state_root()))
}

/// The redb store's growth in steady state, pruned (keeping `history`
/// heights) against keeping the whole tree, over the same blocks: bytes in
/// use per 10,000 blocks once the history is full, and the file at the end.
///
/// redb reserves file space by doubling it, so the file's length is a step
/// function of what it holds; the pages in use are what it must hold, and
/// the file follows them within a factor of two.
fn storage_rows(
    senders: &mut Senders,
    history: std::num::NonZeroU64,
    block_size: usize,
    (warmup, measured): (usize, usize),
) -> anyhow::Result<Vec<Measurement>> {
    ensure!(
        warmup as u64 > history.get(),
        "the warm-up fills the kept history"
    );
    let genesis = senders.genesis();
    let blocks: Vec<_> = (0..warmup + measured)
        .map(|_| senders.block(block_size))
        .collect();
    let (pruned_before, pruned, pruned_root) =
        storage_run(&genesis, &blocks, warmup, TreeHistory::Heights(history))?;
    let (whole_before, whole, whole_root) =
        storage_run(&genesis, &blocks, warmup, TreeHistory::Unlimited)?;
    ensure!(pruned_root == whole_root, "pruning changed the state root");
    let per_10k_blocks = |before: RedbStats, after: RedbStats| {
        after.allocated_bytes.saturating_sub(before.allocated_bytes) as f64 * 10_000.0
            / measured as f64
    };
    let total = warmup + measured;
    Ok(vec![
        Measurement::new(
            "ledger.storage_bytes_per_10k_blocks",
            per_10k_blocks(pruned_before, pruned),
            "B",
            per_10k_blocks(whole_before, whole),
            format!(
                "the same without pruning ({block_size} transfers a block, {history} heights kept)"
            ),
        ),
        Measurement::new(
            format!("ledger.storage_file_bytes.{total}_blocks"),
            pruned.file_bytes as f64,
            "B",
            whole.file_bytes as f64,
            "the same without pruning",
        ),
    ])
}

pub fn run(options: &Options) -> anyhow::Result<Vec<Measurement>> {
    // (block size, blocks) for throughput, block sizes and repetitions for commits.
    let (block_size, blocks, commit_sizes, repetitions) = if options.common.quick {
        (20, 2, [10, 100], 1)
    } else {
        (1_000, 20, [1_000, 10_000], 3)
    };
    let mut senders = Senders::new(commit_sizes[1]);
    let mut rows = Vec::new();

    // Transfers applied per second, against verifying their signatures alone.
    let (blocks, applying) = apply_transfer_blocks(&mut senders, block_size, blocks)?;
    let messages: Vec<_> = blocks
        .iter()
        .flat_map(|block| signed_messages(block))
        .collect();
    let started = Instant::now();
    for (signer, domain, message, signature) in &messages {
        verify_raw(signer, domain, message, signature)?;
    }
    let single = per_second(messages.len(), started.elapsed());
    rows.push(Measurement::new(
        format!("ledger.transfers.memory.{block_size}_per_block"),
        per_second(messages.len(), applying),
        "tx/s",
        single,
        "ed25519 verify of the same, one by one",
    ));

    // Batch verification, one batch per block.
    let started = Instant::now();
    for batch in messages.chunks(block_size) {
        ensure!(verify_batch(batch), "a benchmark signature does not verify");
    }
    rows.push(Measurement::new(
        format!("ledger.verify_batch.{block_size}_per_batch"),
        per_second(messages.len(), started.elapsed()),
        "sig/s",
        single,
        "ed25519 verify, one by one",
    ));

    // The cost of durability: one block on redb against the same in memory.
    for size in commit_sizes {
        let genesis = senders.genesis();
        let directory = tempfile::tempdir()?;
        let mut on_disk = Ledger::init(
            RedbStore::open(&directory.path().join("ledger.redb"))?,
            &genesis,
        )?;
        let mut in_memory = Ledger::init(MemoryStore::default(), &genesis)?;
        let (mut disk_times, mut memory_times) = (Vec::new(), Vec::new());
        for _ in 0..repetitions {
            let block = senders.block(size);
            memory_times.push(apply(&mut in_memory, &block)?);
            disk_times.push(apply(&mut on_disk, &block)?);
        }
        ensure!(
            on_disk.state_root() == in_memory.state_root(),
            "the stores disagree"
        );
        rows.push(Measurement::new(
            format!("ledger.block_commit.redb.{size}_transfers"),
            median(disk_times).as_secs_f64() * 1e3,
            "ms",
            median(memory_times).as_secs_f64() * 1e3,
            "the same block on MemoryStore",
        ));
    }

    // Disk growth with the state tree pruned, against keeping all of it.
    let (history, storage_block_size, storage_blocks) = if options.common.quick {
        (QUICK_TREE_HISTORY_HEIGHTS, 10, (40, 60))
    } else {
        (TREE_HISTORY_HEIGHTS_DEFAULT, 50, (1_200, 1_000))
    };
    rows.extend(storage_rows(
        &mut senders,
        history,
        storage_block_size,
        storage_blocks,
    )?);
    rows.push(challenge_check(if options.common.quick { 1 } else { 100 })?);
    rows.extend(gpu_challenge_check(if options.common.quick {
        1_000
    } else {
        10_000
    })?);
    Ok(rows)
}

/// A small chain for timing challenge blocks: three accounts (the last
/// validates), blocks 100 ms apart, the sandbox as executor.
struct ChallengeChain {
    ledger: Ledger<MemoryStore>,
    keys: Vec<Keypair>,
    sandbox: Sandbox,
    time_ms: u64,
}

impl ChallengeChain {
    const EPOCH: u64 = 4;

    fn new(params: Params) -> anyhow::Result<Self> {
        let keys: Vec<Keypair> = (1..=3u8)
            .map(|seed| Keypair::from_seed([seed; 32]))
            .collect();
        let genesis = Genesis {
            chain_id: CHAIN.to_owned(),
            params: Params {
                epoch_length_blocks: Self::EPOCH,
                challenge_share_bps: 10_000,
                ..params
            },
            balances: keys.iter().map(|key| (key.account_id(), 1 << 40)).collect(),
            validators: vec![(keys[2].account_id(), 1 << 20)],
        };
        Ok(Self {
            ledger: Ledger::init(MemoryStore::default(), &genesis)?,
            keys,
            sandbox: Sandbox::new(SandboxConfig::default())?,
            time_ms: 1_700_000_000_000,
        })
    }

    /// Applies a block of `txs` (each by the key at its index); gives how
    /// long applying it took. A refused transaction is an error.
    fn block(&mut self, txs: Vec<(usize, TxKind)>) -> anyhow::Result<Duration> {
        self.time_ms += 100;
        let signed: Vec<SignedTransaction> = txs
            .into_iter()
            .map(|(who, kind)| {
                let nonce = self.ledger.account(&self.keys[who].account_id())?.nonce;
                Ok(self.keys[who].sign(Transaction::new(CHAIN, nonce, 1, kind)?))
            })
            .collect::<anyhow::Result<_>>()?;
        let started = Instant::now();
        let height = self.ledger.height() + 1;
        let outcome = self
            .ledger
            .apply_block(height, self.time_ms, &signed, &self.sandbox)?;
        let took = started.elapsed();
        for result in &outcome.transactions {
            if let Err(rejection) = &result.outcome {
                bail!("a challenge transaction was refused: {rejection}");
            }
        }
        Ok(took)
    }

    /// Staked providers `who`, each sending `declare`.
    fn providers(&mut self, who: &[usize], declare: &TxKind) -> anyhow::Result<()> {
        for who in who {
            let stake = TxKind::Stake {
                role: idlegrid_ledger::StakeRole::Provider,
                amount: 1_000,
            };
            self.block(vec![(*who, stake)])?;
            self.block(vec![(*who, declare.clone())])?;
        }
        while !self.ledger.height().is_multiple_of(Self::EPOCH) {
            self.block(Vec::new())?;
        }
        Ok(())
    }
}

/// What checking a capacity challenge costs the chain when the pair
/// agrees: the block that takes the second reveal (both answers settled),
/// against running the challenge once, which is what each provider does.
fn challenge_check(passes: u32) -> anyhow::Result<Measurement> {
    // No spot check: the row is what an unchecked agreeing pair costs
    // (a spot-checked one costs the baseline's run).
    let mut chain = ChallengeChain::new(Params {
        challenge_passes: passes,
        challenge_spot_check_bps: 0,
        ..Params::default()
    })?;
    chain.providers(
        &[0, 1],
        &TxKind::DeclareCapacity {
            fuel_per_second: 1_000_000_000,
        },
    )?;
    let keys = chain.keys.clone();
    let (epoch, challenge) = chain
        .ledger
        .challenges(&keys[0].account_id())?
        .pop()
        .ok_or_else(|| anyhow::anyhow!("no challenge was issued"))?;
    let started = Instant::now();
    let answer = chain
        .sandbox
        .run_challenge(challenge.seed, challenge.passes, Duration::from_secs(600))
        .map_err(anyhow::Error::msg)?;
    let running = started.elapsed();
    let answers = (0..2)
        .map(|who| {
            let commitment = answer_commitment(&answer.output, &keys[who].account_id());
            (who, TxKind::AnswerChallenge { epoch, commitment })
        })
        .collect();
    chain.block(answers)?;
    let reveal = |who| {
        (
            who,
            TxKind::RevealChallenge {
                epoch,
                output: answer.output,
            },
        )
    };
    chain.block(vec![reveal(0)])?;
    let checking = chain.block(vec![reveal(1)])?;
    ensure!(
        chain.ledger.capacity(&keys[1].account_id())?.passed == 1,
        "the pair's answers did not settle"
    );
    Ok(Measurement::new(
        format!("ledger.challenge.check_agreeing_pair.{passes}_passes"),
        checking.as_secs_f64() * 1e3,
        "ms",
        running.as_secs_f64() * 1e3,
        "running the challenge once",
    ))
}

/// What checking a GPU challenge's answer costs the chain: the block that
/// takes the 256 nonces, against solving the challenge on this machine's
/// GPU (lavapipe where there is none), sized at `challenge_ms` of its
/// measured speed. `None` without a usable adapter.
fn gpu_challenge_check(challenge_ms: u64) -> anyhow::Result<Option<Measurement>> {
    use idlegrid_gpu::challenge;
    let gpu = match idlegrid_gpu::Gpu::open(None) {
        Ok(gpu) => gpu,
        Err(error) => {
            eprintln!("no GPU challenge row: {error}");
            return Ok(None);
        }
    };
    let limit = Duration::from_secs(600);
    challenge::benchmark_run(&gpu, 256, limit)?;
    let started = Instant::now();
    let fuel = challenge::benchmark_run(&gpu, 4_096, limit)?;
    let seconds = started.elapsed().as_secs_f64().max(1e-9);
    let speed = ((fuel as f64 / seconds) as u64).max(1);
    let mut chain = ChallengeChain::new(Params {
        gpu_challenge_ms: challenge_ms,
        ..Params::default()
    })?;
    chain.providers(
        &[0],
        &TxKind::DeclareGpuCapacity {
            fuel_per_second: speed,
        },
    )?;
    let account = chain.keys[0].account_id();
    let (epoch, issued) = chain
        .ledger
        .gpu_challenges(&account)?
        .pop()
        .ok_or_else(|| anyhow::anyhow!("no GPU challenge was issued"))?;
    let started = Instant::now();
    let found = challenge::solve(&gpu, &issued.seed, issued.target, speed, limit)?;
    let solving = started.elapsed();
    let nonces = idlegrid_types::Bounded::new(found.nonces)?;
    let checking = chain.block(vec![(0, TxKind::AnswerGpuChallenge { epoch, nonces })])?;
    ensure!(
        chain.ledger.gpu_capacity(&account)?.wrong == 0,
        "the GPU answer was judged wrong"
    );
    Ok(Some(Measurement::new(
        format!("ledger.gpu_challenge.check_answer.{challenge_ms}_ms"),
        checking.as_secs_f64() * 1e3,
        "ms",
        solving.as_secs_f64() * 1e3,
        "solving it on the GPU",
    )))
}
