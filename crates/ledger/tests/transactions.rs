//! Every transaction kind and every rejection reason (disputes are in
//! disputes.rs).

mod world;

use idlegrid_ledger::{
    Event, JobStatus, NoReExecution, OpenJob, ProviderRecord, StakeRole, Transaction, TxKind,
    capped_powers,
};
use idlegrid_types::{AccountId, JobId, Voucher};
use world::*;

#[test]
fn transfers_move_balance_charge_the_fee_and_advance_the_nonce() {
    let mut world = world();
    let bob = world.id(BOB);
    let events = world
        .submit(
            ALICE,
            TxKind::Transfer {
                to: bob,
                amount: 500,
            },
        )
        .expect("applies");
    assert!(events.contains(&Event::Transferred {
        from: world.id(ALICE),
        to: bob,
        amount: 500
    }));
    assert_eq!(world.balance(ALICE), START - 500 - FEE);
    assert_eq!(world.balance(BOB), START + 500);
    assert_eq!(world.ledger.account(&world.id(ALICE)).unwrap().nonce, 1);
    world.assert_books_balance();
}

#[test]
fn envelope_rejections() {
    let mut world = world();
    let bob = world.id(BOB);
    let transfer = TxKind::Transfer { to: bob, amount: 1 };

    let mut tampered = world.sign(ALICE, transfer.clone());
    tampered.body.fee += 1;
    assert_eq!(rejected(world.apply(tampered)), "bad_signature");

    let other_chain = Transaction::new("another-chain", 0, FEE, transfer.clone()).unwrap();
    let other_chain = world.keys[ALICE].sign(other_chain);
    assert_eq!(rejected(world.apply(other_chain)), "wrong_chain");

    let future = world.keys[ALICE].sign(Transaction::new(CHAIN, 5, FEE, transfer.clone()).unwrap());
    assert_eq!(rejected(world.apply(future)), "stale_nonce");

    let free = world.keys[ALICE].sign(Transaction::new(CHAIN, 0, 0, transfer.clone()).unwrap());
    assert_eq!(rejected(world.apply(free)), "fee_too_low");

    let replayed = world.sign(ALICE, transfer.clone());
    world.apply(replayed.clone()).expect("first time applies");
    assert_eq!(rejected(world.apply(replayed)), "stale_nonce");

    let too_much = TxKind::Transfer {
        to: bob,
        amount: START,
    };
    assert_eq!(
        rejected(world.submit(ALICE, too_much)),
        "insufficient_balance"
    );
    let nothing = TxKind::Transfer { to: bob, amount: 0 };
    assert_eq!(rejected(world.submit(ALICE, nothing)), "zero_amount");
    world.assert_books_balance();
}

#[test]
fn a_rejected_transaction_changes_nothing_but_its_neighbours_apply() {
    let mut world = world();
    let bob = world.id(BOB);
    let good = world.sign(ALICE, TxKind::Transfer { to: bob, amount: 7 });
    let bad = world.keys[BOB]
        .sign(Transaction::new(CHAIN, 99, FEE, TxKind::Transfer { to: bob, amount: 7 }).unwrap());
    let outcome = world
        .ledger
        .apply_block(1, 0, &[bad, good], &NoReExecution)
        .expect("block");
    let rejection = outcome.transactions[0].outcome.as_ref().unwrap_err();
    assert_eq!(rejection.code(), "stale_nonce");
    assert!(outcome.transactions[1].outcome.is_ok());
    assert_eq!(world.balance(BOB), START + 7);
    assert_eq!(world.ledger.account(&bob).unwrap().nonce, 0);
}

#[test]
fn stake_unstake_and_release_after_the_unbonding_period() {
    let mut world = world();
    let provider = world.id(PROVIDER);
    let role = StakeRole::Provider;
    world
        .submit(
            PROVIDER,
            TxKind::Stake {
                role,
                amount: 30_000,
            },
        )
        .expect("stakes");
    assert_eq!(world.ledger.providers().unwrap(), vec![(provider, 30_000)]);
    let too_much = TxKind::Unstake {
        role,
        amount: 30_001,
    };
    assert_eq!(
        rejected(world.submit(PROVIDER, too_much)),
        "insufficient_stake"
    );
    world
        .submit(
            PROVIDER,
            TxKind::Unstake {
                role,
                amount: 10_000,
            },
        )
        .expect("unstakes");
    let before = world.balance(PROVIDER);
    world.empty_blocks(4);
    assert_eq!(world.balance(PROVIDER), before, "still unbonding");
    world.empty_blocks(1);
    assert_eq!(world.balance(PROVIDER), before + 10_000, "released");
    assert_eq!(world.ledger.stake(role, &provider).unwrap().bonded, 20_000);
    world.assert_books_balance();

    // Seventeen unbondings in one block: the last one is refused.
    let nonce = world.ledger.account(&provider).unwrap().nonce;
    let unstakes: Vec<_> = (0..17)
        .map(|index| {
            let kind = TxKind::Unstake { role, amount: 1 };
            world.keys[PROVIDER].sign(Transaction::new(CHAIN, nonce + index, FEE, kind).unwrap())
        })
        .collect();
    let height = world.ledger.height() + 1;
    let outcome = world
        .ledger
        .apply_block(height, 0, &unstakes, &NoReExecution)
        .expect("block");
    assert!(
        outcome.transactions[..16]
            .iter()
            .all(|tx| tx.outcome.is_ok())
    );
    let last = outcome.transactions[16].outcome.clone();
    assert_eq!(rejected(last), "too_many_unbondings");
}

#[test]
fn jobs_open_redeem_and_close_and_the_books_close() {
    let mut world = world();
    let height = world.ledger.height();
    let job = world.open_job(ALICE, terms(height));
    assert_eq!(world.balance(ALICE), START - FEE - 10_000);

    world
        .submit(PROVIDER, world.voucher(ALICE, job, PROVIDER, 3_000, 1))
        .expect("redeems");
    world
        .submit(PROVIDER, world.voucher(ALICE, job, PROVIDER, 4_500, 2))
        .expect("redeems the difference");
    assert_eq!(world.balance(PROVIDER), START - 2 * FEE + 4_500);
    // The provider's record counts what it was paid, and the job once.
    let record = world.ledger.provider_record(&world.id(PROVIDER)).unwrap();
    assert_eq!(
        record,
        ProviderRecord {
            fuel_paid: 4_500_000,
            amount_paid: 4_500,
            jobs_paid: 1,
            disputes_lost: 0,
            last_lost_height: 0,
        }
    );
    world
        .submit(ALICE, TxKind::TopUpJob { job, amount: 1_000 })
        .expect("tops up");

    world.empty_blocks(10);
    let before = world.balance(ALICE);
    let events = world
        .submit(ALICE, TxKind::CloseJob { job })
        .expect("closes");
    assert!(events.contains(&Event::JobClosed { job, refund: 6_500 }));
    assert_eq!(world.balance(ALICE), before - FEE + 6_500);
    let record = world.ledger.job(&job).unwrap().expect("job");
    assert_eq!(record.status, JobStatus::Closed);
    // Payments plus refund equal everything escrowed.
    assert_eq!(record.redeemed_total + 6_500, 11_000);
    world.assert_books_balance();
}

#[test]
fn an_agent_runs_a_job_within_its_escrow_and_the_refund_is_the_requestors() {
    // Alice opens a job that Bob runs for her (a gateway's key for it).
    let mut world = world();
    let height = world.ledger.height();
    let job = world.open_job(
        ALICE,
        OpenJob {
            agent: Some(world.id(BOB)),
            ..terms(height)
        },
    );
    assert_eq!(
        world.ledger.job(&job).unwrap().expect("job").agent,
        Some(world.id(BOB))
    );
    // The agent's vouchers pay, and the requestor's still do.
    world
        .submit(PROVIDER, world.voucher(BOB, job, PROVIDER, 3_000, 1))
        .expect("the agent's voucher redeems");
    world
        .submit(PROVIDER, world.voucher(ALICE, job, PROVIDER, 4_000, 2))
        .expect("the requestor's voucher redeems");
    // Never past the escrow, whoever signs.
    let over = world.submit(PROVIDER, world.voucher(BOB, job, PROVIDER, 10_001, 3));
    assert_eq!(rejected(over), "voucher_exceeds_escrow");
    // Nobody else signs for the job.
    let stranger = world.submit(PROVIDER, world.voucher(CHEATER, job, PROVIDER, 5_000, 3));
    assert_eq!(rejected(stranger), "voucher_not_from_requestor");
    // Only the requestor adds to the escrow.
    let top_up = world.submit(BOB, TxKind::TopUpJob { job, amount: 1 });
    assert_eq!(rejected(top_up), "not_requestor");
    // Bob's own job cannot be paid by vouchers for Alice's: the agent is
    // per job.
    let own = world.open_job(BOB, terms(world.ledger.height()));
    let cross = world.submit(PROVIDER, world.voucher(ALICE, own, PROVIDER, 1_000, 1));
    assert_eq!(rejected(cross), "voucher_not_from_requestor");

    // The agent closes it after the deadline, and the refund is Alice's.
    world.empty_blocks(10);
    let stranger = world.submit(CHEATER, TxKind::CloseJob { job });
    assert_eq!(rejected(stranger), "not_requestor");
    let alice = world.balance(ALICE);
    let bob = world.balance(BOB);
    let events = world
        .submit(BOB, TxKind::CloseJob { job })
        .expect("the agent closes");
    assert!(events.contains(&Event::JobClosed { job, refund: 6_000 }));
    assert_eq!(world.balance(ALICE), alice + 6_000);
    assert_eq!(world.balance(BOB), bob - FEE);
    world.assert_books_balance();
}

#[test]
fn jobs_are_listed_most_recently_opened_first_and_by_status() {
    let mut world = world();
    let first = world.open_job(ALICE, terms(world.ledger.height()));
    // Two jobs in one block: the later one in the block is the newer.
    let height = world.ledger.height() + 1;
    let bob_nonce = world.ledger.account(&world.id(BOB)).expect("account").nonce;
    let alice_nonce = world
        .ledger
        .account(&world.id(ALICE))
        .expect("account")
        .nonce;
    let block = [
        world.sign(BOB, TxKind::OpenJob(terms(height))),
        world.sign(ALICE, TxKind::OpenJob(terms(height))),
    ];
    let outcome = world
        .ledger
        .apply_block(height, 0, &block, world.executor.as_ref())
        .expect("block applies");
    assert!(outcome.transactions.iter().all(|tx| tx.outcome.is_ok()));
    let second = JobId::derive(&world.id(BOB), bob_nonce);
    let third = JobId::derive(&world.id(ALICE), alice_nonce);
    // A rejected opening is not listed.
    let mut broke = terms(world.ledger.height());
    broke.escrow = START * 2;
    assert_eq!(
        rejected(world.submit(BOB, TxKind::OpenJob(broke))),
        "insufficient_balance"
    );
    world.empty_blocks(11);
    world
        .submit(ALICE, TxKind::CloseJob { job: third })
        .expect("closes");

    let ids = |status, limit| -> Vec<JobId> {
        world
            .ledger
            .jobs(status, limit)
            .expect("jobs")
            .into_iter()
            .map(|(id, _)| id)
            .collect()
    };
    assert_eq!(ids(None, 10), [third, second, first]);
    assert_eq!(ids(None, 2), [third, second]);
    assert_eq!(ids(None, 0), []);
    assert_eq!(ids(Some(JobStatus::Open), 10), [second, first]);
    assert_eq!(ids(Some(JobStatus::Open), 1), [second]);
    assert_eq!(ids(Some(JobStatus::Closed), 10), [third]);
    let listed = world.ledger.jobs(None, 1).expect("jobs");
    assert_eq!(
        Some(&listed[0].1),
        world.ledger.job(&third).expect("job").as_ref()
    );
}

#[test]
fn job_rejections() {
    let mut world = world();
    let height = world.ledger.height();
    let mut cases: Vec<(OpenJob, &str)> = Vec::new();
    let mut bad = terms(height);
    bad.escrow = 0;
    cases.push((bad, "zero_amount"));
    let mut bad = terms(height);
    bad.price_per_million_fuel = 0;
    cases.push((bad, "zero_price"));
    let mut bad = terms(height);
    bad.deadline_height = 1;
    cases.push((bad, "deadline_in_past"));
    let mut bad = terms(height);
    bad.deadline_height = u64::MAX / 2;
    cases.push((bad, "deadline_too_far"));
    let mut bad = terms(height);
    bad.limits.fuel = params().dispute_fuel_max + 1;
    cases.push((bad, "fuel_limit_too_high"));
    let mut bad = terms(height);
    bad.escrow = START * 2;
    cases.push((bad, "insufficient_balance"));
    for (terms, code) in cases {
        assert_eq!(rejected(world.submit(ALICE, TxKind::OpenJob(terms))), code);
    }

    let unknown = JobId::from_bytes([9; 32]);
    let top_up_unknown = TxKind::TopUpJob {
        job: unknown,
        amount: 1,
    };
    assert_eq!(rejected(world.submit(ALICE, top_up_unknown)), "unknown_job");
    let height = world.ledger.height();
    let job = world.open_job(ALICE, terms(height));
    let top_up = TxKind::TopUpJob { job, amount: 1 };
    assert_eq!(rejected(world.submit(BOB, top_up.clone())), "not_requestor");
    let close = TxKind::CloseJob { job };
    assert_eq!(rejected(world.submit(BOB, close.clone())), "not_requestor");
    assert_eq!(
        rejected(world.submit(ALICE, close.clone())),
        "deadline_not_reached"
    );
    world.empty_blocks(10);
    assert_eq!(rejected(world.submit(ALICE, top_up.clone())), "job_expired");
    let late = world.voucher(ALICE, job, PROVIDER, 1, 1);
    assert_eq!(rejected(world.submit(PROVIDER, late)), "job_expired");
    world.submit(ALICE, close.clone()).expect("closes");
    assert_eq!(rejected(world.submit(ALICE, close)), "job_closed");
    assert_eq!(rejected(world.submit(ALICE, top_up)), "job_closed");
}

#[test]
fn voucher_rejections() {
    let mut world = world();
    let height = world.ledger.height();
    let job = world.open_job(ALICE, terms(height));

    let mut forged = world.voucher(ALICE, job, PROVIDER, 100, 1);
    if let TxKind::Redeem { voucher } = &mut forged {
        voucher.body.cumulative_amount = 9_999;
    }
    assert_eq!(
        rejected(world.submit(PROVIDER, forged)),
        "voucher_bad_signature"
    );
    let cases = [
        (PROVIDER, BOB, 100, 1, "voucher_not_from_requestor"),
        (BOB, ALICE, 100, 1, "voucher_for_another_provider"),
        (PROVIDER, ALICE, 10_001, 1, "voucher_exceeds_escrow"),
    ];
    for (redeemer, signer, amount, sequence, code) in cases {
        let kind = world.voucher(signer, job, PROVIDER, amount, sequence);
        assert_eq!(rejected(world.submit(redeemer, kind)), code);
    }
    // Fuel decides epoch rewards: a voucher cannot claim more than it pays for.
    let greedy = TxKind::Redeem {
        voucher: world.keys[ALICE].sign(Voucher {
            job,
            provider: world.id(PROVIDER),
            cumulative_amount: 1,
            cumulative_fuel: u64::MAX - 1,
            sequence: 1,
        }),
    };
    assert_eq!(
        rejected(world.submit(PROVIDER, greedy)),
        "voucher_fuel_exceeds_payment"
    );
    world
        .submit(PROVIDER, world.voucher(ALICE, job, PROVIDER, 100, 1))
        .expect("redeems");
    let same_sequence = world.voucher(ALICE, job, PROVIDER, 200, 1);
    assert_eq!(
        rejected(world.submit(PROVIDER, same_sequence)),
        "voucher_not_newer"
    );
    let lower = world.voucher(ALICE, job, PROVIDER, 50, 2);
    assert_eq!(
        rejected(world.submit(PROVIDER, lower)),
        "voucher_below_redeemed"
    );
    let lower_fuel = TxKind::Redeem {
        voucher: world.keys[ALICE].sign(Voucher {
            job,
            provider: world.id(PROVIDER),
            cumulative_amount: 300,
            cumulative_fuel: 1,
            sequence: 3,
        }),
    };
    assert_eq!(
        rejected(world.submit(PROVIDER, lower_fuel)),
        "voucher_fuel_below_redeemed"
    );
    world.assert_books_balance();
}

#[test]
fn epoch_rewards_follow_fuel_paid_and_validator_stake() {
    let mut world = world();
    let height = world.ledger.height();
    let job = world.open_job(ALICE, terms(height));
    world
        .submit(PROVIDER, world.voucher(ALICE, job, PROVIDER, 1_000, 1))
        .expect("redeems");
    world
        .submit(CHEATER, world.voucher(ALICE, job, CHEATER, 3_000, 1))
        .expect("redeems");
    let provider_before = world.balance(PROVIDER);
    let other_before = world.balance(CHEATER);
    let validator_before = world.balance(VALIDATOR);
    let to_epoch_end = params().epoch_length_blocks - world.ledger.height();
    world.empty_blocks(to_epoch_end);
    let emission = params().emission_per_epoch;
    let validator_share = emission * u64::from(params().validator_reward_share_bps) / 10_000;
    let provider_pool = emission - validator_share;
    assert_eq!(world.balance(PROVIDER) - provider_before, provider_pool / 4);
    assert_eq!(world.balance(CHEATER) - other_before, provider_pool * 3 / 4);
    // The only validator gets its share of the emission and all fees.
    assert_eq!(
        world.balance(VALIDATOR) - validator_before,
        validator_share + 3 * FEE
    );
    world.assert_books_balance();
    assert_eq!(
        world.ledger.supply().unwrap().emitted,
        provider_pool + validator_share
    );
}

#[test]
fn each_epochs_validator_set_is_the_validator_stake_at_the_end_of_the_one_before() {
    let mut world = world();
    let length = params().epoch_length_blocks;
    let set = |world: &World, epoch: u64| -> Vec<AccountId> {
        world
            .ledger
            .validator_set(epoch)
            .expect("readable")
            .unwrap_or_else(|| panic!("no set for epoch {epoch}"))
            .into_iter()
            .map(|(account, _)| account)
            .collect()
    };
    let powers = |world: &World, epoch: u64| -> Vec<u64> {
        world
            .ledger
            .validator_set(epoch)
            .expect("readable")
            .unwrap_or_else(|| panic!("no set for epoch {epoch}"))
            .into_iter()
            .map(|(_, power)| power)
            .collect()
    };
    assert_eq!(set(&world, 0), vec![world.id(VALIDATOR)]);
    assert_eq!(powers(&world, 0), vec![50_000]);
    assert_eq!(world.ledger.validator_set(1).expect("readable"), None);
    // Alice bonds more than the genesis validator: she leads the next set.
    world
        .submit(
            ALICE,
            TxKind::Stake {
                role: StakeRole::Validator,
                amount: 60_000,
            },
        )
        .expect("stake");
    world.empty_blocks(length - world.ledger.height());
    assert_eq!(world.ledger.epoch_of(length), 0);
    assert_eq!(world.ledger.epoch_of(length + 1), 1);
    assert_eq!(set(&world, 1), vec![world.id(ALICE), world.id(VALIDATOR)]);
    // Two validators cannot both stay under the 30% cap: the set is left
    // uncapped.
    assert_eq!(params().voting_power_cap_bps, 3_000);
    assert_eq!(
        powers(&world, 1),
        capped_powers(&[60_000, 50_000], params().voting_power_cap_bps)
    );
    assert_eq!(powers(&world, 1), vec![60_000, 50_000]);
    // The genesis validator leaves: gone from the epoch after.
    world
        .submit(
            VALIDATOR,
            TxKind::Unstake {
                role: StakeRole::Validator,
                amount: 50_000,
            },
        )
        .expect("unstake");
    world.empty_blocks(2 * length - world.ledger.height());
    assert_eq!(set(&world, 2), vec![world.id(ALICE)]);
    assert_eq!(powers(&world, 2), vec![60_000]);
    // Everyone leaving keeps the last set rather than halt the chain.
    world
        .submit(
            ALICE,
            TxKind::Unstake {
                role: StakeRole::Validator,
                amount: 60_000,
            },
        )
        .expect("unstake");
    world.empty_blocks(3 * length - world.ledger.height());
    assert_eq!(set(&world, 3), vec![world.id(ALICE)]);
    assert_eq!(powers(&world, 3), vec![60_000]);
}
