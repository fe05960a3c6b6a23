//! Two nodes building, verifying and finalizing blocks: blocks on top of
//! blocks that are not final yet, forks, invalid blocks, and finalized
//! blocks delivered twice.

mod common;

use common::{key, ledger};
use idlegrid_chain::{Block, Chain, ChainError, Finalized, Invalid, Mempool, MempoolConfig};
use idlegrid_ledger::{MemoryStore, NoReExecution, SignedTransaction};
use idlegrid_types::codec::Bounded;

fn node() -> Chain<MemoryStore> {
    Chain::new(ledger(3)).expect("a fresh chain")
}

fn transfer(from: u8, nonce: u64, amount: u64) -> SignedTransaction {
    common::transfer(from, nonce, 2, amount)
}

fn pool(chain: &Chain<MemoryStore>, txs: &[SignedTransaction]) -> Mempool {
    let mut pool = Mempool::new(MempoolConfig::default());
    for tx in txs {
        pool.insert(tx.clone(), chain.ledger(), &NoReExecution)
            .expect("taken");
    }
    pool
}

#[test]
fn blocks_build_on_pending_parents_and_finalize_to_the_same_state() {
    let (mut leader, mut follower) = (node(), node());
    let genesis = leader.tip();
    let mut mempool = pool(
        &leader,
        &[transfer(1, 0, 10), transfer(1, 1, 20), transfer(2, 0, 30)],
    );
    let first = leader
        .propose(genesis, 0, &mut mempool, &NoReExecution)
        .expect("propose 1");
    assert_eq!(first.height, 1);
    assert_eq!(first.transactions.len(), 3);
    // More transactions arrive; the next block builds on the first before
    // it is final.
    mempool
        .insert(transfer(3, 0, 40), leader.ledger(), &NoReExecution)
        .expect("taken");
    let second = leader
        .propose(first.digest(), 0, &mut mempool, &NoReExecution)
        .expect("propose 2");
    assert_eq!(second.height, 2);
    assert_eq!(
        second.transactions.len(),
        1,
        "block 1's transactions are not reused"
    );

    // The follower verifies both, over bytes, before either is final.
    for block in [&first, &second] {
        let received = Block::decode(&block.encode()).expect("decode");
        follower
            .verify(&received, 0, &NoReExecution)
            .expect("valid");
    }
    for chain in [&mut leader, &mut follower] {
        for block in [&first, &second] {
            assert!(matches!(
                chain.finalize(block, &NoReExecution).expect("finalize"),
                Finalized::Applied(_)
            ));
        }
        // Delivered again after a restart: applied once only.
        assert!(matches!(
            chain.finalize(&first, &NoReExecution).expect("again"),
            Finalized::AlreadyApplied
        ));
        assert_eq!(chain.ledger().height(), 2);
        assert_eq!(chain.pending_count(), 0);
    }
    assert_eq!(leader.ledger().state_root(), follower.ledger().state_root());
    assert_eq!(
        leader
            .ledger()
            .account(&key(100).account_id())
            .expect("account")
            .balance,
        100
    );
}

#[test]
fn a_losing_fork_is_dropped_when_its_sibling_finalizes() {
    let mut chain = node();
    let genesis = chain.tip();
    let mut left = pool(&chain, &[transfer(1, 0, 10)]);
    let mut right = pool(&chain, &[transfer(2, 0, 10)]);
    let a = chain
        .propose(genesis, 0, &mut left, &NoReExecution)
        .expect("a");
    let b = chain
        .propose(genesis, 0, &mut right, &NoReExecution)
        .expect("b");
    let mut more = pool(&chain, &[transfer(3, 0, 10)]);
    let on_b = chain
        .propose(b.digest(), 0, &mut more, &NoReExecution)
        .expect("on b");
    assert_eq!(chain.pending_count(), 3);
    chain.finalize(&a, &NoReExecution).expect("a final");
    assert_eq!(
        chain.pending_count(),
        0,
        "b and its child can never be final"
    );
    assert!(matches!(
        chain.verify(&on_b, 0, &NoReExecution),
        Err(ChainError::Invalid(Invalid::UnknownParent(_)))
    ));
    assert!(matches!(
        chain.finalize(&on_b, &NoReExecution),
        Err(ChainError::OutOfOrder { .. })
    ));
}

#[test]
fn invalid_blocks_are_refused_with_a_reason() {
    let (mut leader, mut follower) = (node(), node());
    let genesis = leader.tip();
    let mut mempool = pool(&leader, &[transfer(1, 0, 10)]);
    let good = leader
        .propose(genesis, 0, &mut mempool, &NoReExecution)
        .expect("propose");

    let mut wrong_height = good.clone();
    wrong_height.height = 5;
    let mut wrong_root = good.clone();
    wrong_root.parent_state_root = [7; 32];
    let mut unknown_parent = good.clone();
    unknown_parent.parent = good.digest();
    let mut overdraft = good.clone();
    overdraft.transactions =
        Bounded::new(vec![transfer(1, 0, 10), transfer(1, 1, 5_000)]).expect("bounded");

    assert!(matches!(
        follower.verify(&wrong_height, 0, &NoReExecution),
        Err(ChainError::Invalid(Invalid::WrongHeight {
            parent: 0,
            found: 5
        }))
    ));
    assert!(matches!(
        follower.verify(&wrong_root, 0, &NoReExecution),
        Err(ChainError::Invalid(Invalid::WrongParentStateRoot { .. }))
    ));
    assert!(matches!(
        follower.verify(&unknown_parent, 0, &NoReExecution),
        Err(ChainError::Invalid(Invalid::UnknownParent(_)))
    ));
    match follower.verify(&overdraft, 0, &NoReExecution) {
        Err(ChainError::Invalid(Invalid::Transaction { index, rejection })) => {
            assert_eq!(index, 1);
            assert_eq!(rejection.code(), "insufficient_balance");
        }
        other => panic!("overdraft accepted: {other:?}"),
    }
    assert!(Block::decode(&[0xff; 40]).is_err());
    assert_eq!(follower.pending_count(), 0);
    // The good one still verifies, and nothing was applied meanwhile.
    follower.verify(&good, 0, &NoReExecution).expect("valid");
    assert_eq!(follower.ledger().height(), 0);
}

#[test]
fn a_small_block_limit_leaves_the_rest_for_the_next_block() {
    let mut chain = node().with_limits(2, 1 << 20);
    let genesis = chain.tip();
    let mut mempool = pool(
        &chain,
        &[transfer(1, 0, 1), transfer(1, 1, 1), transfer(1, 2, 1)],
    );
    let first = chain
        .propose(genesis, 0, &mut mempool, &NoReExecution)
        .expect("first");
    assert_eq!(first.transactions.len(), 2);
    chain.finalize(&first, &NoReExecution).expect("final");
    mempool
        .finalized(&first.transactions, chain.ledger())
        .expect("pruned");
    let second = chain
        .propose(chain.tip(), 0, &mut mempool, &NoReExecution)
        .expect("second");
    assert_eq!(second.transactions.len(), 1);
    assert_eq!(second.transactions[0].body.nonce, 2);
}
