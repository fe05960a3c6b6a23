//! The mempool against a real ledger: what it refuses and why, fee and
//! nonce order, its bounds, and that every block it proposes applies.

mod common;

use common::{key, ledger, transfer};
use idlegrid_chain::{
    Chain, Mempool, MempoolConfig, Refused, SUBMIT_BATCH_MAX, shared, submit_batch,
};
use idlegrid_ledger::{Ledger, MemoryStore, NoReExecution, Rejection, SignedTransaction};
use idlegrid_types::AccountId;
use proptest::prelude::*;

const START: u64 = 1_000;

fn insert(
    pool: &mut Mempool,
    ledger: &Ledger<MemoryStore>,
    tx: SignedTransaction,
) -> Result<(), Refused> {
    pool.insert(tx, ledger, &NoReExecution).map(|_| ())
}

/// (sender seed, nonce) of a block, in order.
fn order(block: &[SignedTransaction]) -> Vec<(AccountId, u64)> {
    block.iter().map(|tx| (tx.signer, tx.body.nonce)).collect()
}

#[test]
fn a_submitted_batch_answers_each_transaction_in_order_and_takes_at_most_its_limit() {
    // 20 funded accounts, 52 nonces each: more than one batch takes.
    let node = shared(
        Chain::new(ledger(20)).expect("chain"),
        Mempool::new(MempoolConfig::default()),
        Box::new(NoReExecution),
    );
    let mut batch: Vec<SignedTransaction> = (0..52)
        .flat_map(|nonce| (1..=20).map(move |from| transfer(from, nonce, 1, 1)))
        .collect();
    // One signed by another key than the one it names.
    batch[5].signature = key(99).sign(batch[5].body.clone()).signature;
    let over = batch.len() - SUBMIT_BATCH_MAX;
    let results = submit_batch(&node, batch.clone());
    assert_eq!(results.len(), batch.len());
    for (index, (transaction, result)) in batch.iter().zip(&results).enumerate() {
        match result {
            _ if index == 5 => assert_eq!(
                result,
                &Err(Refused::Rejected(Rejection::BadSignature)),
                "the forged one"
            ),
            Ok(hash) => assert_eq!(*hash, idlegrid_ledger::transaction_hash(transaction)),
            Err(refused) => {
                assert!(index >= SUBMIT_BATCH_MAX, "{index}: {refused}");
                assert_eq!(refused.code(), "unavailable");
            }
        }
    }
    let taken = results.iter().filter(|result| result.is_ok()).count();
    assert_eq!(taken, SUBMIT_BATCH_MAX - 1);
    assert_eq!(results[SUBMIT_BATCH_MAX..].len(), over);
    assert_eq!(node.lock().expect("node").mempool.len(), taken);
}

#[test]
fn proposes_by_fee_across_accounts_and_by_nonce_within_one() {
    let ledger = ledger(3);
    let mut pool = Mempool::new(MempoolConfig::default());
    // Account 1 pays little on its first transaction, much on its second:
    // the second still waits for the first.
    for tx in [
        transfer(1, 1, 50, 1),
        transfer(1, 0, 2, 1),
        transfer(2, 0, 10, 1),
        transfer(3, 0, 5, 1),
        transfer(3, 1, 4, 1),
    ] {
        insert(&mut pool, &ledger, tx).expect("taken");
    }
    let selection = pool
        .propose(&ledger, 0, 100, 1 << 20, &NoReExecution)
        .expect("propose")
        .selection;
    let (one, two, three) = (
        key(1).account_id(),
        key(2).account_id(),
        key(3).account_id(),
    );
    assert_eq!(
        order(&selection.included),
        vec![(two, 0), (three, 0), (three, 1), (one, 0), (one, 1)]
    );
    assert!(selection.dropped.is_empty());
}

#[test]
fn refuses_what_cannot_apply_with_a_reason() {
    let mut ledger = ledger(2);
    let mut pool = Mempool::new(MempoolConfig {
        nonces_ahead_max: 4,
        ..MempoolConfig::default()
    });
    insert(&mut pool, &ledger, transfer(1, 0, 3, 10)).expect("taken");
    assert_eq!(
        insert(&mut pool, &ledger, transfer(1, 0, 3, 10)),
        Err(Refused::Duplicate)
    );
    // A replacement must pay more.
    assert_eq!(
        insert(&mut pool, &ledger, transfer(1, 0, 3, 11)),
        Err(Refused::FeeTooLowToReplace { fee: 3 })
    );
    insert(&mut pool, &ledger, transfer(1, 0, 4, 11)).expect("replaces");
    assert_eq!(pool.len(), 1);
    assert_eq!(
        insert(&mut pool, &ledger, transfer(1, 4, 3, 10)),
        Err(Refused::NonceTooFarAhead { next: 0, found: 4 })
    );
    // Overdraft and a forged signature.
    let overdraft = insert(&mut pool, &ledger, transfer(2, 0, 3, START * 2));
    assert!(matches!(
        overdraft,
        Err(Refused::Rejected(Rejection::InsufficientBalance { .. }))
    ));
    let mut forged = transfer(2, 0, 3, 10);
    forged.signer = key(1).account_id();
    forged.body.nonce = 1;
    assert_eq!(
        insert(&mut pool, &ledger, forged),
        Err(Refused::Rejected(Rejection::BadSignature))
    );
    // Once nonce 0 is in a block, it is stale.
    let block = pool
        .propose(&ledger, 0, 100, 1 << 20, &NoReExecution)
        .expect("propose")
        .selection;
    let outcome = ledger
        .apply_block(1, 0, &block.included, &NoReExecution)
        .expect("apply");
    assert!(outcome.transactions.iter().all(|tx| tx.outcome.is_ok()));
    pool.finalized(&block.included, &ledger).expect("finalized");
    assert!(pool.is_empty());
    assert_eq!(
        insert(&mut pool, &ledger, transfer(1, 0, 9, 10)),
        Err(Refused::StaleNonce { next: 1, found: 0 })
    );
    assert_eq!(
        Refused::StaleNonce { next: 1, found: 0 }.code(),
        "stale_nonce"
    );
}

#[test]
fn a_full_pool_evicts_the_cheapest_and_what_depends_on_it() {
    let ledger = ledger(3);
    let mut pool = Mempool::new(MempoolConfig {
        transactions_max: 3,
        ..MempoolConfig::default()
    });
    insert(&mut pool, &ledger, transfer(1, 0, 2, 1)).expect("taken");
    insert(&mut pool, &ledger, transfer(1, 1, 9, 1)).expect("taken");
    insert(&mut pool, &ledger, transfer(2, 0, 5, 1)).expect("taken");
    // Paying no more than the cheapest is refused...
    assert_eq!(
        insert(&mut pool, &ledger, transfer(3, 0, 2, 1)),
        Err(Refused::PoolFull { fee: 2 })
    );
    // ...paying more evicts it, and account 1's nonce 1 with it.
    insert(&mut pool, &ledger, transfer(3, 0, 3, 1)).expect("evicts");
    assert_eq!(pool.len(), 2);
    let selection = pool
        .propose(&ledger, 0, 100, 1 << 20, &NoReExecution)
        .expect("propose")
        .selection;
    assert_eq!(
        order(&selection.included),
        vec![(key(2).account_id(), 0), (key(3).account_id(), 0)]
    );
}

#[test]
fn a_transaction_that_no_longer_applies_is_dropped_with_its_reason() {
    let ledger = ledger(1);
    let mut pool = Mempool::new(MempoolConfig::default());
    // Each applies alone; together they overdraw.
    insert(&mut pool, &ledger, transfer(1, 0, 1, 600)).expect("taken");
    insert(&mut pool, &ledger, transfer(1, 1, 1, 600)).expect("taken");
    let selection = pool
        .propose(&ledger, 0, 100, 1 << 20, &NoReExecution)
        .expect("propose")
        .selection;
    assert_eq!(selection.included.len(), 1);
    assert_eq!(selection.dropped.len(), 1);
    assert_eq!(selection.dropped[0].1.code(), "insufficient_balance");
    assert_eq!(pool.len(), 1, "the dropped one left the pool");
}

#[test]
fn blocks_respect_count_and_byte_limits() {
    let ledger = ledger(5);
    let mut pool = Mempool::new(MempoolConfig::default());
    for seed in 1..=5 {
        for nonce in 0..4 {
            insert(&mut pool, &ledger, transfer(seed, nonce, 1, 1)).expect("taken");
        }
    }
    let by_count = pool
        .propose(&ledger, 0, 7, 1 << 20, &NoReExecution)
        .expect("propose")
        .selection;
    assert_eq!(by_count.included.len(), 7);
    let one = by_count.bytes / 7;
    let by_bytes = pool
        .propose(&ledger, 0, 100, one * 3 + one / 2, &NoReExecution)
        .expect("propose")
        .selection;
    assert_eq!(by_bytes.included.len(), 3);
    assert!(by_bytes.bytes <= one * 3 + one / 2);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Whatever is thrown at it, the pool stays within its bounds and every
    /// block it proposes applies completely.
    #[test]
    fn every_proposed_block_applies(
        inserts in prop::collection::vec((1u8..=4, 0u64..6, 1u64..20, 0u64..700), 1..60),
        blocks in 1usize..4,
    ) {
        let mut ledger = ledger(4);
        let mut pool = Mempool::new(MempoolConfig {
            transactions_max: 12,
            nonces_ahead_max: 5,
            ..MempoolConfig::default()
        });
        for (seed, nonce, fee, amount) in inserts {
            let _ = pool.insert(transfer(seed, nonce, fee, amount), &ledger, &NoReExecution);
            prop_assert!(pool.len() <= 12);
        }
        for _ in 0..blocks {
            let selection = pool.propose(&ledger, 0, 5, 1 << 20, &NoReExecution).expect("propose").selection;
            prop_assert!(selection.included.len() <= 5);
            let height = ledger.height() + 1;
            let outcome = ledger.apply_block(height, 0, &selection.included, &NoReExecution).expect("apply");
            prop_assert!(outcome.transactions.iter().all(|tx| tx.outcome.is_ok()));
            pool.finalized(&selection.included, &ledger).expect("finalized");
            for tx in &selection.included {
                prop_assert!(!pool.contains(&idlegrid_ledger::transaction_hash(tx)));
            }
        }
    }
}
