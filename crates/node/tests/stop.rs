//! Validators in one process, more consensus engines than cores, under a
//! transfer load across epochs of three blocks: asked to stop, each
//! finishes its writes and ends without a panic, so its directory may go
//! at once; started again over the same directories they go on from where
//! they stopped, agree, and have applied every transfer once.
//!
//! What this guards: `idlegrid-bench chain` could not stop its validators,
//! so when it gave up on an error it removed their directories while they
//! ran, and a validator panicked pruning a consensus journal whose file
//! was gone ("unable to prune journal: BlobMissing").

use std::time::{Duration, Instant};

use idlegrid_chain::submit_batch;
use idlegrid_ledger::{Transaction, TxKind};
use idlegrid_node::testnet::{self, TestnetPlan};
use idlegrid_node::{Validator, start_validator};
use idlegrid_types::{AccountId, Keypair};

const VALIDATORS: usize = 4;
const SENDERS: u64 = 16;
const EPOCH: u64 = 3;
const CHAIN: &str = "idlegrid-stop-test";
/// Every wait below is for the chain to do something; none is expected to
/// take more than a few seconds.
const DEADLINE: Duration = Duration::from_secs(120);

fn sender(index: u64) -> Keypair {
    let mut seed = [7u8; 32];
    seed[..8].copy_from_slice(&index.to_le_bytes());
    Keypair::from_seed(seed)
}

fn recipient() -> AccountId {
    Keypair::from_seed([9u8; 32]).account_id()
}

fn height(validator: &Validator) -> u64 {
    validator
        .node
        .lock()
        .map_or(0, |node| node.ledger().height())
}

fn wait_for(validators: &[Validator], what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + DEADLINE;
    while !condition() {
        assert!(
            Instant::now() < deadline,
            "{what} within {DEADLINE:?} (heights {:?})",
            validators.iter().map(height).collect::<Vec<_>>()
        );
        std::thread::park_timeout(Duration::from_millis(20));
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Resend {
    No,
    Yes,
}

/// Submits one transfer from each sender, nonce `round`, spread over the
/// validators. A resent transfer may be refused as already final
/// (`stale_nonce`) or already pending (`duplicate`).
fn submit_round(validators: &[Validator], round: u64, resend: Resend) {
    for (index, validator) in validators.iter().enumerate() {
        let batch = (0..SENDERS)
            .filter(|sender| *sender as usize % validators.len() == index)
            .map(|sender| {
                let body = Transaction::new(
                    CHAIN,
                    round,
                    1,
                    TxKind::Transfer {
                        to: recipient(),
                        amount: 1,
                    },
                )
                .expect("a short chain id");
                self::sender(sender).sign(body)
            })
            .collect();
        for answer in submit_batch(&validator.node, batch) {
            match answer {
                Ok(_) => {}
                Err(refused)
                    if resend == Resend::Yes
                        && matches!(refused.code(), "stale_nonce" | "duplicate") => {}
                Err(refused) => panic!("the pool refused a transfer: {refused}"),
            }
        }
    }
}

fn balance(validator: &Validator) -> u64 {
    validator.node.lock().map_or(0, |node| {
        node.ledger()
            .account(&recipient())
            .map_or(0, |account| account.balance)
    })
}

/// Sends `rounds` rounds of transfers, each once the one before is final
/// everywhere, while blocks go by.
fn load(validators: &[Validator], first_round: u64, rounds: u64) {
    for round in first_round..first_round + rounds {
        submit_round(validators, round, Resend::No);
        wait_final(validators, round + 1);
    }
}

/// Waits until every validator has applied `rounds` rounds of transfers.
fn wait_final(validators: &[Validator], rounds: u64) {
    wait_for(validators, "a round of transfers is final", || {
        validators
            .iter()
            .all(|validator| balance(validator) == rounds * SENDERS)
    });
}

fn assert_same_root(validators: &[Validator]) {
    let common = validators.iter().map(height).min().unwrap_or(0);
    let roots: Vec<_> = validators
        .iter()
        .map(|validator| {
            let node = validator.node.lock().expect("the node");
            node.ledger()
                .state_root_at(common)
                .expect("readable")
                .expect("a root at every height")
        })
        .collect();
    assert!(
        roots.iter().all(|root| *root == roots[0]),
        "the validators disagree at height {common}"
    );
}

fn stop_all(validators: Vec<Validator>) {
    for (index, validator) in validators.into_iter().enumerate() {
        let started = Instant::now();
        validator
            .stop()
            .unwrap_or_else(|error| panic!("validator {index} did not stop cleanly: {error:#}"));
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "validator {index} took {:?} to stop",
            started.elapsed()
        );
    }
}

#[test]
fn validators_stopped_under_load_end_cleanly_and_go_on_from_their_files() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let base = testnet::free_ports(2 * VALIDATORS).expect("free ports");
    let plan = TestnetPlan {
        validators: VALIDATORS,
        chain_id: CHAIN.to_owned(),
        p2p_port: base,
        api_port: base + VALIDATORS as u16,
        epoch_length: EPOCH,
        accounts: (0..SENDERS)
            .map(|index| (sender(index).account_id(), 1_000_000))
            .collect(),
        ..TestnetPlan::default()
    };
    let net = testnet::init(dir.path(), &plan).expect("a testnet");
    let start = || -> Vec<Validator> {
        net.configs
            .iter()
            .map(|config| start_validator(config).expect("the validator starts"))
            .collect()
    };

    // Several epochs under load, then stop mid-stream: the last round is
    // submitted and not waited for.
    let validators = start();
    load(&validators, 0, 4);
    wait_for(&validators, "three epochs pass", || {
        validators
            .iter()
            .all(|validator| height(validator) > 3 * EPOCH)
    });
    submit_round(&validators, 4, Resend::No);
    let stopped_at: Vec<u64> = validators.iter().map(height).collect();
    stop_all(validators);

    // Again over the same files: each goes on from its height, the round
    // in flight is final once (or lost with the pools and sent again),
    // and more follow.
    let validators = start();
    for (index, validator) in validators.iter().enumerate() {
        assert!(
            height(validator) >= stopped_at[index],
            "validator {index} reopened below the height it stopped at"
        );
    }
    wait_for(&validators, "the chain goes on after a restart", || {
        validators
            .iter()
            .all(|validator| height(validator) > stopped_at.iter().max().unwrap_or(&0) + EPOCH)
    });
    // Transfers still in the pools when they stopped went with them; a
    // client sends them again, the same bytes: one final already is
    // refused as stale, never applied twice.
    submit_round(&validators, 4, Resend::Yes);
    wait_final(&validators, 5);
    load(&validators, 5, 2);
    assert_same_root(&validators);
    let applied = balance(&validators[0]);
    assert_eq!(applied, 7 * SENDERS, "every transfer applied exactly once");
    stop_all(validators);
    drop(dir);
}
