//! Real processes, real disks: four `idlegrid validator` processes on
//! loopback, killed with SIGKILL again and again while clients send
//! transfers, and restarted over data directories damaged on purpose.
//!
//! Every validator ends on the same blocks and state roots, every transfer
//! is applied exactly once, nothing panics, and a validator whose files were
//! damaged either recovers and agrees with the others or refuses to start
//! with an error that names the damaged file: it never runs on a state of
//! its own.
//!
//! Kill timings and garbage come from a seeded generator; the seed is
//! printed, and `IDLEGRID_FAULT_SEED` replays one.

mod common;

use std::collections::BTreeMap;
use std::fs::OpenOptions;
use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::{Testnet, data_dir, get, poll_until, transfer, try_submit};
use idlegrid_market::SplitMix64;
use idlegrid_node::read_key;
use idlegrid_types::{AccountId, Keypair};
use serde_json::Value;

const VALIDATORS: usize = 4;
/// Short epochs, so kills land on both sides of epoch changes.
const EPOCH_LENGTH_BLOCKS: u64 = 10;
const KILLS: usize = 20;
/// The whole kill loop, restarts and catching up included, runs within this.
const KILL_LOOP_MAX: Duration = Duration::from_secs(300);
/// A kill comes this long at most after the restarted validator caught up.
const KILL_DELAY_MS_MAX: u64 = 2_500;
/// A killed validator stays down while the others commit up to this many
/// blocks (an epoch and a half at most).
const DOWN_BLOCKS_MAX: u64 = 15;
const SENDERS: usize = 4;
const RECIPIENTS_PER_SENDER: u64 = 3;
/// Each sender's balance from the faucet.
const FUNDS: u64 = 1_000_000_000;
/// Every transfer's fee (what `common::transfer` signs).
const FEE: u64 = 1;
/// How far past its finalized nonce a sender runs (the pool takes 64).
const WINDOW: u64 = 16;
/// A sender whose finalized nonce has not moved for this long sends what
/// is pending again, the same signed bytes, to another validator.
const STALL: Duration = Duration::from_secs(2);
/// Senders drain what they sent within this once the kills end.
const DRAIN_MAX: Duration = Duration::from_secs(60);
const CATCH_UP: Duration = Duration::from_secs(90);
/// A validator restarted over damaged files recovers or exits within this.
const VERDICT_MAX: Duration = Duration::from_secs(90);
/// Earlier heights whose blocks are compared across validators.
const SAMPLED_HEIGHTS: usize = 24;
const SEED_ENV: &str = "IDLEGRID_FAULT_SEED";
/// No validator is down.
const NONE_DOWN: usize = usize::MAX;

/// The seed from [`SEED_ENV`], or a new one; printed either way.
fn seed() -> u64 {
    let seed = std::env::var(SEED_ENV)
        .ok()
        .map(|text| text.trim().parse().expect("IDLEGRID_FAULT_SEED is a u64"))
        .unwrap_or_else(|| {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |since| since.as_nanos() as u64)
        });
    println!("fault seed {seed} (replay with {SEED_ENV}={seed})");
    seed
}

/// The testnet's validators with short epochs.
fn testnet() -> Testnet {
    Testnet::start_with(
        VALIDATORS,
        &["--epoch-length", &EPOCH_LENGTH_BLOCKS.to_string()],
    )
}

fn status(api: &str) -> Option<Value> {
    match get(&format!("{api}/v1/status")) {
        Ok((200, body)) => Some(body),
        _ => None,
    }
}

fn height_at(api: &str) -> Option<u64> {
    status(api).and_then(|body| body["height"].as_u64())
}

fn account(api: &str, id: &AccountId) -> Option<Value> {
    match get(&format!("{api}/v1/accounts/{id}")) {
        Ok((200, body)) => Some(body),
        _ => None,
    }
}

fn nonce_at(api: &str, id: &AccountId) -> Option<u64> {
    account(api, id).and_then(|body| body["nonce"].as_u64())
}

fn balance_at(api: &str, id: &AccountId) -> Option<u64> {
    account(api, id).and_then(|body| body["balance"].as_u64())
}

/// The block at `height` as validator `api` stores it: its digest and the
/// state root it was built on.
fn block_at(api: &str, height: u64) -> Option<(String, String)> {
    match get(&format!("{api}/v1/blocks/{height}")) {
        Ok((200, body)) => Some((
            body["digest"].as_str()?.to_owned(),
            body["parent_state_root"].as_str()?.to_owned(),
        )),
        _ => None,
    }
}

/// Polls `condition` for at most `timeout`, failing with every log.
fn wait_for(net: &Testnet, timeout: Duration, what: &str, condition: impl FnMut() -> bool) {
    assert!(
        poll_until(timeout, condition),
        "timed out waiting for {what}\n{}",
        net.logs()
    );
}

/// The time left before `deadline`, failing when there is none.
fn left(net: &Testnet, deadline: Instant, what: &str) -> Duration {
    let left = deadline.saturating_duration_since(Instant::now());
    assert!(
        !left.is_zero(),
        "the kill loop ran past {KILL_LOOP_MAX:?} ({what})\n{}",
        net.logs()
    );
    left
}

/// The highest height any validator but `except` reports.
fn height_of_others(net: &Testnet, except: usize) -> u64 {
    (0..net.apis.len())
        .filter(|index| *index != except)
        .filter_map(|index| height_at(&net.apis[index]))
        .max()
        .unwrap_or(0)
}

/// Validator `index` is at least as high as the others were when asked;
/// fails at once if it exited.
fn wait_caught_up(net: &mut Testnet, index: usize, timeout: Duration) {
    let target = height_of_others(net, index);
    let mut exit = None;
    let settled = poll_until(timeout, || {
        exit = net.exited(index);
        exit.is_some() || height_at(&net.apis[index]).is_some_and(|height| height >= target)
    });
    assert!(
        settled && exit.is_none(),
        "validator {index} did not catch up to {target} (exit: {exit:?})\n{}",
        net.logs()
    );
}

/// Every validator holds the same block at each of `heights`, built on
/// the same state root.
fn assert_same_blocks(net: &Testnet, heights: &[u64]) {
    for &height in heights {
        let blocks: Vec<Option<(String, String)>> =
            net.apis.iter().map(|api| block_at(api, height)).collect();
        assert!(
            blocks[0].is_some() && blocks.iter().all(|block| *block == blocks[0]),
            "validators disagree at height {height}: {blocks:?}\n{}",
            net.logs()
        );
    }
}

/// No validator's log, of any start, says a thread panicked.
fn assert_no_panics(net: &Testnet) {
    for path in net.log_files() {
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            !text.contains("panicked"),
            "{} shows a panic:\n{text}",
            path.display()
        );
    }
}

/// What one sender sends: transfer `nonce` goes to one of its recipients.
fn recipient(recipients: &[AccountId], nonce: u64) -> AccountId {
    recipients[(nonce % RECIPIENTS_PER_SENDER) as usize]
}

fn amount(nonce: u64) -> u64 {
    nonce % 5 + 1
}

/// One client: signs transfers with nonces in order, keeps [`WINDOW`] of
/// them in flight on validators that are up, and when nothing is
/// finalized for [`STALL`] (a validator killed with them in its pool)
/// sends the pending ones again, the same bytes, to another validator.
/// Once `stop` is set it sends nothing new and returns how many it sent
/// when all of them are final.
struct Client<'a> {
    apis: &'a [String],
    chain_id: &'a str,
    key: Keypair,
    recipients: Vec<AccountId>,
    down: &'a AtomicUsize,
    stop: &'a AtomicBool,
}

/// What a client did.
#[derive(Debug, Clone, Copy)]
struct Sent {
    /// Transfers signed and final (its nonce).
    transfers: u64,
    /// Times it sent its pending transfers again after a stall.
    resends: u64,
}

impl Client<'_> {
    fn run(&self, seed: u64) -> Sent {
        let account = self.key.account_id();
        let mut signed: Vec<Vec<u8>> = Vec::new();
        let mut finalized = 0;
        let mut resends = 0;
        let mut moved_at = Instant::now();
        let mut stopped_at: Option<Instant> = None;
        let mut turn = seed as usize;
        loop {
            turn = turn.wrapping_add(1);
            let api = &self.apis[self.up(turn)];
            if self.stop.load(Ordering::Relaxed) {
                let stopped = *stopped_at.get_or_insert_with(Instant::now);
                if finalized == signed.len() as u64 {
                    return Sent {
                        transfers: finalized,
                        resends,
                    };
                }
                assert!(
                    stopped.elapsed() < DRAIN_MAX,
                    "{account}: {} of {} transfers final after {DRAIN_MAX:?}",
                    finalized,
                    signed.len()
                );
            } else {
                while (signed.len() as u64) < finalized + WINDOW {
                    let nonce = signed.len() as u64;
                    let to = recipient(&self.recipients, nonce);
                    let bytes = transfer(&self.key, self.chain_id, nonce, to, amount(nonce));
                    // Refused or lost: sent again on a stall.
                    let _ = try_submit(api, &bytes);
                    signed.push(bytes);
                }
            }
            let before = finalized;
            poll_until(Duration::from_millis(500), || {
                if let Some(nonce) = nonce_at(api, &account) {
                    finalized = finalized.max(nonce);
                }
                finalized > before
            });
            if finalized > before {
                moved_at = Instant::now();
            } else if moved_at.elapsed() >= STALL {
                for bytes in &signed[finalized as usize..] {
                    let _ = try_submit(api, bytes);
                }
                resends += 1;
                moved_at = Instant::now();
            }
        }
    }

    /// A validator not known to be down, by turns.
    fn up(&self, turn: usize) -> usize {
        let down = self.down.load(Ordering::Relaxed);
        (0..self.apis.len())
            .map(|step| (turn + step) % self.apis.len())
            .find(|index| *index != down)
            .unwrap_or(0)
    }
}

/// The faucet funds one sender per seed; returns their keys.
fn fund_senders(net: &Testnet, chain_id: &str) -> Vec<Keypair> {
    let faucet = read_key(&net.faucet_key()).expect("faucet key");
    let senders: Vec<Keypair> = (0..SENDERS)
        .map(|index| Keypair::from_seed([index as u8 + 100; 32]))
        .collect();
    for (nonce, sender) in senders.iter().enumerate() {
        let bytes = transfer(&faucet, chain_id, nonce as u64, sender.account_id(), FUNDS);
        let answer = try_submit(&net.apis[0], &bytes).expect("the API answers");
        assert_eq!(answer.0, 200, "funding refused: {}", answer.1);
    }
    for sender in &senders {
        wait_for(net, CATCH_UP, "the senders' funds", || {
            balance_at(&net.apis[0], &sender.account_id()) == Some(FUNDS)
        });
    }
    senders
}

fn recipients_of(sender: usize) -> Vec<AccountId> {
    (0..RECIPIENTS_PER_SENDER)
        .map(|index| Keypair::from_seed([sender as u8 * 8 + index as u8 + 1; 32]).account_id())
        .collect()
}

#[test]
fn validators_killed_again_and_again_under_load_agree_and_apply_every_transfer_once() {
    let seed = seed();
    let mut rng = SplitMix64::new(seed);
    let mut net = testnet();
    let started = Instant::now();
    let chain_id = status(&net.apis[0]).expect("status")["chain_id"]
        .as_str()
        .expect("chain id")
        .to_owned();
    let senders = fund_senders(&net, &chain_id);
    let down = AtomicUsize::new(NONE_DOWN);
    let stop = AtomicBool::new(false);
    let apis = net.apis.clone();
    let mut epochs_crossed = 0;
    let sent: Vec<Sent> = std::thread::scope(|scope| {
        let clients: Vec<_> = senders
            .into_iter()
            .enumerate()
            .map(|(index, key)| {
                let client = Client {
                    apis: &apis,
                    chain_id: &chain_id,
                    key,
                    recipients: recipients_of(index),
                    down: &down,
                    stop: &stop,
                };
                scope.spawn(move || client.run(index as u64))
            })
            .collect();
        let deadline = Instant::now() + KILL_LOOP_MAX;
        for kill in 0..KILLS {
            let victim = kill % VALIDATORS;
            let witness = (victim + 1) % VALIDATORS;
            // A random moment, with blocks committing.
            let from = height_at(&net.apis[witness]).unwrap_or(0);
            let kill_at = Instant::now() + Duration::from_millis(rng.below(KILL_DELAY_MS_MAX));
            wait_for(
                &net,
                left(&net, deadline, "before a kill"),
                "the kill's moment",
                || {
                    Instant::now() >= kill_at
                        && height_at(&net.apis[witness]).is_some_and(|height| height > from)
                },
            );
            let before = height_at(&net.apis[victim]).unwrap_or(0);
            net.kill(victim);
            down.store(victim, Ordering::Relaxed);
            // The others go on without it for a while.
            let gone = height_at(&net.apis[witness]).unwrap_or(0);
            let away = 1 + rng.below(DOWN_BLOCKS_MAX);
            wait_for(
                &net,
                left(&net, deadline, "while one is down"),
                "blocks without it",
                || height_at(&net.apis[witness]).is_some_and(|height| height >= gone + away),
            );
            net.launch(victim);
            net.wait_ready_within(victim, left(&net, deadline, "a restart"));
            // Nothing it had finalized is lost.
            let restarted = height_at(&net.apis[victim]).unwrap_or(0);
            assert!(
                restarted >= before,
                "validator {victim} was at {before} and restarted at {restarted}\n{}",
                net.logs()
            );
            let timeout = left(&net, deadline, "catching up");
            wait_caught_up(&mut net, victim, timeout);
            down.store(NONE_DOWN, Ordering::Relaxed);
            let now = height_at(&net.apis[victim]).unwrap_or(0);
            if before / EPOCH_LENGTH_BLOCKS != now / EPOCH_LENGTH_BLOCKS {
                epochs_crossed += 1;
            }
            println!(
                "kill {kill}: validator {victim} at height {before}, down for {away} blocks, caught up at {now} ({:?})",
                started.elapsed()
            );
        }
        stop.store(true, Ordering::Relaxed);
        clients
            .into_iter()
            .map(|client| client.join().expect("a client panicked"))
            .collect()
    });
    let transfers: u64 = sent.iter().map(|sent| sent.transfers).sum();
    let resends: u64 = sent.iter().map(|sent| sent.resends).sum();
    println!(
        "{KILLS} kills ({epochs_crossed} across an epoch change), {transfers} transfers \
         ({resends} resends after a stall) in {:?}",
        started.elapsed()
    );
    // Every validator applies every transfer.
    for (index, sent) in sent.iter().enumerate() {
        let sender = Keypair::from_seed([index as u8 + 100; 32]).account_id();
        for api in &net.apis {
            wait_for(&net, CATCH_UP, "every transfer final everywhere", || {
                nonce_at(api, &sender) == Some(sent.transfers)
            });
        }
    }
    // Exactly once: each account holds exactly what was sent, less fees.
    let mut expected: BTreeMap<AccountId, u64> = BTreeMap::new();
    for (index, sent) in sent.iter().enumerate() {
        let recipients = recipients_of(index);
        let mut spent = 0;
        for nonce in 0..sent.transfers {
            *expected.entry(recipient(&recipients, nonce)).or_default() += amount(nonce);
            spent += amount(nonce) + FEE;
        }
        let sender = Keypair::from_seed([index as u8 + 100; 32]).account_id();
        expected.insert(sender, FUNDS - spent);
    }
    for api in &net.apis {
        for (id, balance) in &expected {
            assert_eq!(balance_at(api, id), Some(*balance), "{id} at {api}");
        }
    }
    // A common height, and a sample of earlier ones: the same blocks on
    // the same state roots (block h + 1 is built on the root after h).
    let top = (0..VALIDATORS)
        .filter_map(|index| height_at(&net.apis[index]))
        .max()
        .unwrap_or(0)
        + 1;
    for api in &net.apis {
        wait_for(&net, CATCH_UP, "a common height", || {
            height_at(api).is_some_and(|height| height >= top)
        });
    }
    let mut heights: Vec<u64> = (0..SAMPLED_HEIGHTS).map(|_| 1 + rng.below(top)).collect();
    heights.extend([top - 1, top]);
    assert_same_blocks(&net, &heights);
    assert!(
        top >= 3 * EPOCH_LENGTH_BLOCKS,
        "the chain barely moved: {top} blocks"
    );
    assert_no_panics(&net);
}

/// Cuts `bytes` off the end of `path`.
fn cut_tail(path: &Path, bytes: u64) {
    let file = OpenOptions::new().write(true).open(path).expect("open");
    let length = file.metadata().expect("metadata").len();
    file.set_len(length.saturating_sub(bytes))
        .expect("truncate");
}

/// Writes `bytes` of garbage at `offset` into `path` (from its end when
/// `offset` is negative), within the file.
fn garbage(path: &Path, offset: i64, bytes: u64, rng: &mut SplitMix64) {
    let mut file = OpenOptions::new().write(true).open(path).expect("open");
    let length = file.metadata().expect("metadata").len();
    let start = if offset < 0 {
        length.saturating_sub(offset.unsigned_abs())
    } else {
        (offset as u64).min(length)
    };
    let count = bytes.min(length - start) as usize;
    let noise: Vec<u8> = (0..count).map(|_| rng.next_u64() as u8).collect();
    file.seek(SeekFrom::Start(start)).expect("seek");
    file.write_all(&noise).expect("write");
    file.sync_all().expect("sync");
}

/// The newest simplex journal blob: the highest-numbered blob in the
/// partition of the latest epoch (`idlegrid-simplex-e<N>`), if it has one
/// yet.
fn newest_journal_blob(data: &Path) -> Option<PathBuf> {
    let partition = std::fs::read_dir(data.join("engine"))
        .ok()?
        .filter_map(|entry| {
            let path = entry.ok()?.path();
            let epoch: u64 = path
                .file_name()?
                .to_str()?
                .strip_prefix("idlegrid-simplex-e")?
                .parse()
                .ok()?;
            Some((epoch, path))
        })
        .max()?
        .1;
    std::fs::read_dir(partition)
        .ok()?
        .filter_map(|entry| Some(entry.ok()?.path()))
        .filter(|path| path.is_file())
        .max()
}

/// One way to damage a stopped validator's files; returns the file.
struct Damage {
    what: &'static str,
    apply: fn(&Path, &mut SplitMix64) -> PathBuf,
}

const DAMAGES: [Damage; 7] = [
    Damage {
        what: "the ledger file's last byte cut off",
        apply: |data, _| {
            let path = data.join("ledger.redb");
            cut_tail(&path, 1);
            path
        },
    },
    Damage {
        what: "the ledger file's last 4 KiB cut off",
        apply: |data, _| {
            let path = data.join("ledger.redb");
            cut_tail(&path, 4096);
            path
        },
    },
    Damage {
        what: "the newest journal blob's last 100 bytes cut off",
        apply: |data, _| {
            let path = newest_journal_blob(data).expect("a journal blob");
            cut_tail(&path, 100);
            path
        },
    },
    Damage {
        what: "the newest journal blob's last 100 bytes overwritten with garbage",
        apply: |data, rng| {
            let path = newest_journal_blob(data).expect("a journal blob");
            garbage(&path, -100, 100, rng);
            path
        },
    },
    Damage {
        what: "the newest journal blob overwritten with garbage, header and all",
        apply: |data, rng| {
            let path = newest_journal_blob(data).expect("a journal blob");
            garbage(&path, 0, u64::MAX, rng);
            path
        },
    },
    Damage {
        what: "512 bytes of garbage in the middle of the ledger file",
        apply: |data, rng| {
            let path = data.join("ledger.redb");
            let length = std::fs::metadata(&path).expect("metadata").len();
            garbage(&path, (length / 2) as i64, 512, rng);
            path
        },
    },
    Damage {
        // Where redb's newest commit keeps pages the one before does not:
        // redb falls back to that earlier commit, a block behind.
        what: "64 bytes of garbage in the ledger file's second page",
        apply: |data, rng| {
            let path = data.join("ledger.redb");
            garbage(&path, 4096 + 100, 64, rng);
            path
        },
    },
];

/// What a validator restarted over damaged files did.
#[derive(Debug)]
enum Verdict {
    /// It caught up, on the others' blocks and state roots.
    Recovered { height: u64 },
    /// It exited, failing, with this log.
    Refused { log: String },
}

/// Blocks a validator restarted over damaged files must apply beyond the
/// others' height to count as recovered: it answers its API from its
/// ledger before consensus starts, and may still refuse after that.
const RECOVERED_BLOCKS: u64 = 3;

/// Watches validator `index`, restarted over damaged files, until it has
/// caught up and agrees with the others or has exited.
fn verdict(net: &mut Testnet, index: usize) -> Verdict {
    let target = height_of_others(net, index) + RECOVERED_BLOCKS;
    let mut exit = None;
    let mut reached = None;
    let settled = poll_until(VERDICT_MAX, || {
        exit = net.exited(index);
        reached = status(&net.apis[index]).and_then(|body| {
            let height = body["height"].as_u64()?;
            let root = body["state_root"].as_str()?.to_owned();
            let tip = body["tip"].as_str()?.to_owned();
            (height >= target).then_some((height, root, tip))
        });
        exit.is_some() || reached.is_some()
    });
    assert!(
        settled,
        "validator {index} neither caught up nor exited in {VERDICT_MAX:?}\n{}",
        net.logs()
    );
    if let Some(exit) = exit {
        let log = std::fs::read_to_string(net.log(index)).unwrap_or_default();
        assert!(
            !exit.success(),
            "validator {index} exited with success:\n{log}"
        );
        return Verdict::Refused { log };
    }
    let (height, root, tip) = reached.expect("caught up");
    // Its tip and state root are the others' at that height (the next
    // block is built on the root after it).
    let other = (index + 1) % net.apis.len();
    wait_for(net, CATCH_UP, "the next block elsewhere", || {
        block_at(&net.apis[other], height + 1).is_some()
    });
    let (digest, _) = block_at(&net.apis[other], height).expect("the block");
    let (_, next_root) = block_at(&net.apis[other], height + 1).expect("the next block");
    assert_eq!(
        (tip, root),
        (digest, next_root),
        "validator {index} runs on a state of its own at {height}\n{}",
        net.logs()
    );
    assert!(
        net.exited(index).is_none(),
        "validator {index} caught up, then exited\n{}",
        net.logs()
    );
    Verdict::Recovered { height }
}

#[test]
fn a_validator_restarted_over_damaged_files_recovers_or_refuses_naming_the_file() {
    let seed = seed();
    let mut rng = SplitMix64::new(seed);
    let mut net = testnet();
    let started = Instant::now();
    let victim = VALIDATORS - 1;
    let data = data_dir(&net.configs[victim]);
    for damage in &DAMAGES {
        // It is caught up, and the chain has gone on a few blocks since
        // its last restart (its newest journal blob holds votes).
        wait_caught_up(&mut net, victim, CATCH_UP);
        let from = height_at(&net.apis[victim]).unwrap_or(0);
        wait_for(&net, CATCH_UP, "a few more blocks", || {
            height_at(&net.apis[victim]).is_some_and(|height| height >= from + 3)
                && newest_journal_blob(&data).is_some()
        });
        net.kill(victim);
        let path = (damage.apply)(&data, &mut rng);
        net.launch(victim);
        match verdict(&mut net, victim) {
            Verdict::Recovered { height } => {
                println!("{}: recovered, agreeing at {height}", damage.what);
            }
            Verdict::Refused { log } => {
                let named = path.to_str().expect("utf-8 path");
                assert!(
                    log.contains(named) && !log.contains("panicked"),
                    "{}: the refusal does not name {named} (or panicked):\n{log}",
                    damage.what
                );
                let error = log.lines().find(|line| line.contains(named)).unwrap_or("");
                println!("{}: refused: {error}", damage.what);
                // The operator starts it over from nothing: it syncs from
                // its peers.
                std::fs::remove_dir_all(&data).expect("wipe the data directory");
                net.launch(victim);
                net.wait_ready(victim);
            }
        }
    }
    wait_caught_up(&mut net, victim, CATCH_UP);
    let top = height_of_others(&net, NONE_DOWN);
    for api in &net.apis {
        wait_for(&net, CATCH_UP, "a common height", || {
            height_at(api).is_some_and(|height| height > top)
        });
    }
    let mut heights: Vec<u64> = (0..SAMPLED_HEIGHTS).map(|_| 1 + rng.below(top)).collect();
    heights.extend([top, top + 1]);
    assert_same_blocks(&net, &heights);
    assert_no_panics(&net);
    println!("{} damages in {:?}", DAMAGES.len(), started.elapsed());
}
