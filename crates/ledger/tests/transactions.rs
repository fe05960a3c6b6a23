//! Every transaction kind, every rejection reason, and disputes settled by
//! re-executing a real example module in the sandbox.

use std::path::Path;

use idlegrid_ledger::{
    Dispute, DisputeVerdict, Event, Evidence, Genesis, JobStatus, Ledger, MemoryStore,
    NoReExecution, OpenJob, Params, ProviderRecord, Rejection, SignedTransaction, StakeRole,
    Transaction, TxKind, transaction_hash,
};
use idlegrid_sandbox::{Sandbox, SandboxConfig, TaskSpec, outcome_of, task_limits};
use idlegrid_types::codec::Bounded;
use idlegrid_types::{
    AccountId, ContentId, Execution, ExecutionLimits, JobId, Keypair, ReExecute, Receipt,
    SignedReceipt, TaskInput, TaskOutcome, Voucher, task_seed,
};
use proptest::prelude::*;

const CHAIN: &str = "idlegrid-test";
const FEE: u64 = 10;
const START: u64 = 1_000_000;

struct World {
    ledger: Ledger<MemoryStore>,
    keys: Vec<Keypair>,
    executor: Box<dyn ReExecute>,
}

const ALICE: usize = 0;
const BOB: usize = 1;
const PROVIDER: usize = 2;
const CHEATER: usize = 3;
const VALIDATOR: usize = 4;

fn params() -> Params {
    Params {
        epoch_length_blocks: 1_000,
        unbonding_blocks: 5,
        ..Params::default()
    }
}

fn world_with(executor: Box<dyn ReExecute>) -> World {
    let keys: Vec<Keypair> = (1..=5u8)
        .map(|seed| Keypair::from_seed([seed; 32]))
        .collect();
    let genesis = Genesis {
        chain_id: CHAIN.to_owned(),
        params: params(),
        balances: keys.iter().map(|key| (key.account_id(), START)).collect(),
        validators: vec![(keys[VALIDATOR].account_id(), 50_000)],
    };
    World {
        ledger: Ledger::init(MemoryStore::default(), &genesis).expect("genesis"),
        keys,
        executor,
    }
}

fn world() -> World {
    world_with(Box::new(NoReExecution))
}

impl World {
    fn id(&self, who: usize) -> AccountId {
        self.keys[who].account_id()
    }

    fn sign(&self, who: usize, kind: TxKind) -> SignedTransaction {
        let nonce = self.ledger.account(&self.id(who)).expect("account").nonce;
        let tx = Transaction::new(CHAIN, nonce, FEE, kind).expect("tx");
        self.keys[who].sign(tx)
    }

    fn apply(&mut self, signed: SignedTransaction) -> Result<Vec<Event>, Rejection> {
        let height = self.ledger.height() + 1;
        let outcome = self
            .ledger
            .apply_block(height, &[signed], self.executor.as_ref())
            .expect("block applies");
        outcome.transactions[0].outcome.clone()
    }

    fn submit(&mut self, who: usize, kind: TxKind) -> Result<Vec<Event>, Rejection> {
        let signed = self.sign(who, kind);
        self.apply(signed)
    }

    fn empty_blocks(&mut self, count: u64) {
        for _ in 0..count {
            let height = self.ledger.height() + 1;
            self.ledger
                .apply_block(height, &[], self.executor.as_ref())
                .expect("block");
        }
    }

    fn balance(&self, who: usize) -> u64 {
        self.ledger.account(&self.id(who)).expect("account").balance
    }

    fn open_job(&mut self, who: usize, terms: OpenJob) -> JobId {
        let nonce = self.ledger.account(&self.id(who)).expect("account").nonce;
        self.submit(who, TxKind::OpenJob(terms)).expect("job opens");
        JobId::derive(&self.id(who), nonce)
    }

    fn voucher(
        &self,
        signer: usize,
        job: JobId,
        provider: usize,
        amount: u64,
        sequence: u64,
    ) -> TxKind {
        TxKind::Redeem {
            voucher: self.keys[signer].sign(Voucher {
                job,
                provider: self.id(provider),
                cumulative_amount: amount,
                cumulative_fuel: amount * 1_000,
                sequence,
            }),
        }
    }

    fn assert_books_balance(&self) {
        let supply = self.ledger.supply().expect("supply");
        assert_eq!(
            self.ledger.tokens_in_existence().expect("scan"),
            supply.expected_total()
        );
    }
}

fn terms(height: u64) -> OpenJob {
    OpenJob {
        module: ContentId::of(b"module"),
        spec: ContentId::of(b"spec"),
        escrow: 10_000,
        price_per_million_fuel: 5,
        deadline_height: height + 10,
        limits: ExecutionLimits {
            fuel: 1_000_000_000,
            memory_bytes: 64 << 20,
            output_bytes: 1 << 20,
        },
    }
}

/// The rejection's code, after checking it has a readable message.
fn rejected(result: Result<Vec<Event>, Rejection>) -> &'static str {
    match result {
        Ok(events) => panic!("expected a rejection, it applied: {events:?}"),
        Err(rejection) => {
            assert!(!rejection.to_string().is_empty());
            rejection.code()
        }
    }
}

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
        .apply_block(1, &[bad, good], &NoReExecution)
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
        .apply_block(height, &unstakes, &NoReExecution)
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
        .apply_block(height, &block, world.executor.as_ref())
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

// --- disputes, re-executed in the real sandbox ---------------------------------------

fn pi_module() -> Vec<u8> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/pi/pi.wasm");
    std::fs::read(path).expect("examples/pi/pi.wasm")
}

fn sandbox() -> Sandbox {
    Sandbox::new(SandboxConfig {
        memory_bytes_ceiling: 1 << 30,
        concurrent_tasks_max: 2,
        ..SandboxConfig::default()
    })
    .expect("sandbox")
}

struct DisputeSetup {
    world: World,
    module: Vec<u8>,
    input: TaskInput,
    honest: SignedReceipt,
    dishonest: SignedReceipt,
}

fn dispute_setup() -> DisputeSetup {
    let mut world = world_with(Box::new(sandbox()));
    for who in [PROVIDER, CHEATER] {
        let stake = TxKind::Stake {
            role: StakeRole::Provider,
            amount: 40_000,
        };
        world.submit(who, stake).expect("stakes");
    }
    let module = pi_module();
    let height = world.ledger.height();
    let mut job_terms = terms(height);
    job_terms.module = ContentId::of(&module);
    let job = world.open_job(ALICE, job_terms.clone());

    // The honest provider runs task 3 exactly as the network would.
    let input = TaskInput::new(vec!["20000".to_owned()], Vec::new()).expect("input");
    let spec = TaskSpec {
        args: input.arg_strings(),
        seed: task_seed(&job, 3),
        limits: task_limits(&job_terms.limits, std::time::Duration::from_secs(60)),
        ..TaskSpec::default()
    };
    let report = sandbox().run_module(&module, &spec).expect("runs");
    let honest_receipt = Receipt {
        job,
        task_index: 3,
        module: ContentId::of(&module),
        input: input.content_id(),
        outcome: outcome_of(&report),
        fuel_used: report.fuel_used,
        energy_millijoules: 1_200,
    };
    let mut lie = honest_receipt.clone();
    lie.energy_millijoules = 900;
    lie.outcome = TaskOutcome::Completed {
        exit_code: 0,
        output: ContentId::of(b"samples=20000 inside=20000 pi=4.000000000\n"),
    };
    DisputeSetup {
        honest: SignedReceipt::sign(&world.keys[PROVIDER], honest_receipt),
        // Signed with others in one batch, as providers return results: it
        // stands alone as evidence through its proof.
        dishonest: {
            let others = |task_index| Receipt {
                task_index,
                ..lie.clone()
            };
            let batch = vec![others(1), others(2), lie.clone(), others(4), others(5)];
            SignedReceipt::sign_batch(&world.keys[CHEATER], batch).remove(2)
        },
        world,
        module,
        input,
    }
}

fn dispute(evidence: Evidence, module: &[u8], input: &[u8]) -> TxKind {
    TxKind::Dispute(Box::new(Dispute {
        evidence,
        module: Bounded::new(module.to_vec()).expect("small module"),
        input: Bounded::new(input.to_vec()).expect("small input"),
    }))
}

#[test]
fn a_dishonest_receipt_is_slashed_and_an_honest_one_survives() {
    let DisputeSetup {
        mut world,
        module,
        input,
        honest,
        dishonest,
    } = dispute_setup();
    let reporter_before = world.balance(BOB);
    let burned_before = world.ledger.supply().unwrap().burned;
    let truth = (honest.body.outcome, honest.body.fuel_used);
    let evidence = Evidence::Conflicting(honest, dishonest.clone());
    let signed = world.sign(BOB, dispute(evidence, &module, &input.encode()));
    let hash = transaction_hash(&signed);
    let events = world.apply(signed).expect("the dispute applies");
    // The reporter learns what re-execution gave and who was wrong.
    assert_eq!(
        world.ledger.verdict(&hash).expect("store"),
        Some(DisputeVerdict {
            job: dishonest.body.job,
            task: 3,
            outcome: truth.0,
            fuel_used: truth.1,
            wrong: vec![world.id(CHEATER)],
        })
    );
    let slashed = u64::from(params().slash_fraction_bps) * 40_000 / 10_000;
    let to_reporter = slashed * u64::from(params().slash_reporter_share_bps) / 10_000;
    assert!(events.contains(&Event::Slashed {
        provider: world.id(CHEATER),
        amount: slashed,
        burned: slashed - to_reporter,
        to_reporter,
    }));
    let honest_slashed = events.iter().any(
        |event| matches!(event, Event::Slashed { provider, .. } if *provider == world.id(PROVIDER)),
    );
    assert!(!honest_slashed);
    assert_eq!(world.balance(BOB), reporter_before - FEE + to_reporter);
    let stake_of = |who: usize| {
        world
            .ledger
            .stake(StakeRole::Provider, &world.id(who))
            .unwrap()
            .bonded
    };
    assert_eq!(stake_of(CHEATER), 40_000 - slashed);
    assert_eq!(stake_of(PROVIDER), 40_000);
    assert_eq!(
        world.ledger.supply().unwrap().burned,
        burned_before + slashed - to_reporter
    );
    world.assert_books_balance();

    // The same lie cannot be slashed twice.
    let again = dispute(Evidence::Claimed(dishonest), &module, &input.encode());
    assert_eq!(rejected(world.submit(BOB, again)), "already_disputed");
}

#[test]
fn a_two_receipt_dispute_where_the_accused_is_right_slashes_its_counterpart() {
    let DisputeSetup {
        mut world,
        module,
        input,
        honest,
        dishonest,
    } = dispute_setup();
    // The reporter believed the wrong side: it names the honest receipt
    // second, as the one it accuses.
    let evidence = Evidence::Conflicting(dishonest, honest.clone());
    let signed = world.sign(BOB, dispute(evidence, &module, &input.encode()));
    let hash = transaction_hash(&signed);
    let events = world.apply(signed).expect("the dispute applies");
    let slashed: Vec<AccountId> = events
        .iter()
        .filter_map(|event| match event {
            Event::Slashed { provider, .. } => Some(*provider),
            _ => None,
        })
        .collect();
    assert_eq!(slashed, vec![world.id(CHEATER)]);
    let verdict = world.ledger.verdict(&hash).unwrap().expect("a verdict");
    assert_eq!(
        (verdict.outcome, verdict.fuel_used),
        (honest.body.outcome, honest.body.fuel_used)
    );
    assert_eq!(verdict.wrong, vec![world.id(CHEATER)]);
    // The record every requestor reads says who lost, and only them.
    let lost = |who: usize| {
        world
            .ledger
            .provider_record(&world.id(who))
            .unwrap()
            .disputes_lost
    };
    assert_eq!((lost(CHEATER), lost(PROVIDER)), (1, 0));
    let cheater = world.ledger.provider_record(&world.id(CHEATER)).unwrap();
    assert_eq!(cheater.last_lost_height, world.ledger.height());
    let stake_of = |who: usize| {
        world
            .ledger
            .stake(StakeRole::Provider, &world.id(who))
            .unwrap()
            .bonded
    };
    assert_eq!(stake_of(PROVIDER), 40_000);
    assert!(stake_of(CHEATER) < 40_000);
    world.assert_books_balance();
}

#[test]
fn a_false_claim_costs_the_reporter_its_deposit() {
    let DisputeSetup {
        mut world,
        module,
        input,
        honest,
        ..
    } = dispute_setup();
    let before = world.balance(BOB);
    let claim = dispute(Evidence::Claimed(honest), &module, &input.encode());
    let signed = world.sign(BOB, claim);
    let hash = transaction_hash(&signed);
    let events = world.apply(signed).expect("applies");
    let deposit = params().dispute_deposit;
    // Nobody was wrong, and the verdict says so.
    assert_eq!(
        world
            .ledger
            .verdict(&hash)
            .unwrap()
            .expect("a verdict")
            .wrong,
        vec![]
    );
    assert!(events.contains(&Event::DisputeRejected {
        reporter: world.id(BOB),
        deposit_burned: deposit
    }));
    assert_eq!(world.balance(BOB), before - FEE - deposit);
    let provider_stake = world
        .ledger
        .stake(StakeRole::Provider, &world.id(PROVIDER))
        .unwrap();
    assert_eq!(provider_stake.bonded, 40_000);
    world.assert_books_balance();
}

/// Energy is advisory: two replicas that measured different energy for the
/// same result do not disagree, and a receipt whose result the re-execution
/// confirms is right whatever energy it states.
#[test]
fn receipts_that_differ_only_in_energy_are_no_dispute() {
    let DisputeSetup {
        mut world,
        module,
        input,
        honest,
        ..
    } = dispute_setup();
    let encoded = input.encode();
    let other_energy = SignedReceipt::sign(
        &world.keys[CHEATER],
        Receipt {
            energy_millijoules: honest.body.energy_millijoules + 5_000,
            ..honest.body.clone()
        },
    );
    let conflicting = Evidence::Conflicting(honest.clone(), other_energy.clone());
    let both = dispute(conflicting, &module, &encoded);
    assert_eq!(rejected(world.submit(BOB, both)), "receipts_agree");

    let before = world.balance(BOB);
    let claim = dispute(Evidence::Claimed(other_energy), &module, &encoded);
    let events = world.submit(BOB, claim).expect("applies");
    assert!(
        !events
            .iter()
            .any(|event| matches!(event, Event::Slashed { .. }))
    );
    assert_eq!(world.balance(BOB), before - FEE - params().dispute_deposit);
    let bonded = world
        .ledger
        .stake(StakeRole::Provider, &world.id(CHEATER))
        .unwrap()
        .bonded;
    assert_eq!(bonded, 40_000);
    world.assert_books_balance();
}

#[test]
fn dispute_rejections() {
    let DisputeSetup {
        mut world,
        module,
        input,
        honest,
        dishonest,
    } = dispute_setup();
    let encoded = input.encode();
    let resign = |world: &World, edit: &dyn Fn(&mut Receipt)| {
        let mut body = dishonest.body.clone();
        edit(&mut body);
        SignedReceipt::sign(&world.keys[CHEATER], body)
    };

    let mut forged = dishonest.clone();
    forged.body.fuel_used += 1;
    let mut cases: Vec<(Evidence, Vec<u8>, Vec<u8>, &str)> = vec![(
        Evidence::Claimed(forged),
        module.clone(),
        encoded.clone(),
        "receipt_bad_signature",
    )];
    let other_task = resign(&world, &|body| body.task_index = 4);
    cases.push((
        Evidence::Conflicting(honest.clone(), other_task),
        module.clone(),
        encoded.clone(),
        "receipts_not_comparable",
    ));
    let twin = SignedReceipt::sign(&world.keys[CHEATER], honest.body.clone());
    cases.push((
        Evidence::Conflicting(honest.clone(), twin),
        module.clone(),
        encoded.clone(),
        "receipts_agree",
    ));
    let wrong_module = resign(&world, &|body| body.module = ContentId::of(b"another"));
    cases.push((
        Evidence::Claimed(wrong_module),
        module.clone(),
        encoded.clone(),
        "receipt_wrong_module",
    ));
    cases.push((
        Evidence::Claimed(dishonest.clone()),
        b"\0asm\x01\0\0\0".to_vec(),
        encoded.clone(),
        "module_mismatch",
    ));
    cases.push((
        Evidence::Claimed(dishonest.clone()),
        module.clone(),
        b"other input".to_vec(),
        "input_mismatch",
    ));
    let garbage = b"not a task input".to_vec();
    let undecodable = resign(&world, &|body| {
        body.input = ContentId::of(b"not a task input")
    });
    cases.push((
        Evidence::Claimed(undecodable),
        module.clone(),
        garbage,
        "input_malformed",
    ));
    let missing_job = resign(&world, &|body| body.job = JobId::from_bytes([7; 32]));
    cases.push((
        Evidence::Claimed(missing_job),
        module.clone(),
        encoded.clone(),
        "unknown_job",
    ));
    for (evidence, module_bytes, input_bytes, code) in cases {
        let kind = dispute(evidence, &module_bytes, &input_bytes);
        assert_eq!(rejected(world.submit(BOB, kind)), code);
    }

    // A reporter without the deposit.
    let poor = Keypair::from_seed([42; 32]);
    let fund = TxKind::Transfer {
        to: poor.account_id(),
        amount: FEE + 1,
    };
    world.submit(ALICE, fund).expect("funds");
    let claim = dispute(Evidence::Claimed(dishonest.clone()), &module, &encoded);
    let tx = poor.sign(Transaction::new(CHAIN, 0, FEE, claim).unwrap());
    assert_eq!(rejected(world.apply(tx)), "insufficient_balance");

    // A host that cannot re-execute decides nothing.
    world.executor = Box::new(NoReExecution);
    let claim = dispute(Evidence::Claimed(dishonest), &module, &encoded);
    assert_eq!(rejected(world.submit(BOB, claim)), "re_execution_failed");
    world.assert_books_balance();
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
    assert_eq!(set(&world, 0), vec![world.id(VALIDATOR)]);
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
}

/// A re-execution that always gives one fixed result.
struct Fixed(Execution);

impl ReExecute for Fixed {
    fn re_execute(
        &self,
        _module: &[u8],
        _input: &TaskInput,
        _seed: [u8; 32],
        _limits: &ExecutionLimits,
    ) -> Result<Execution, String> {
        Ok(self.0)
    }
}

/// A claim a receipt makes: the truth, or one of the ways to differ from it.
#[derive(Debug, Clone, Copy)]
enum Claim {
    Truth,
    OtherOutput,
    OtherFuel(u64),
    OtherExit(i32),
    Trapped,
}

fn claim() -> impl Strategy<Value = Claim> {
    prop_oneof![
        3 => Just(Claim::Truth),
        1 => Just(Claim::OtherOutput),
        1 => (1u64..1_000).prop_map(Claim::OtherFuel),
        1 => (1i32..255).prop_map(Claim::OtherExit),
        1 => Just(Claim::Trapped),
    ]
}

fn claimed(truth: Execution, claim: Claim) -> (TaskOutcome, u64) {
    let output = ContentId::of(b"pi=3.14");
    match claim {
        Claim::Truth => (truth.outcome, truth.fuel_used),
        Claim::OtherOutput => (
            TaskOutcome::Completed {
                exit_code: 0,
                output: ContentId::of(b"pi=4"),
            },
            truth.fuel_used,
        ),
        Claim::OtherFuel(delta) => (truth.outcome, truth.fuel_used + delta),
        Claim::OtherExit(exit_code) => (
            TaskOutcome::Completed { exit_code, output },
            truth.fuel_used,
        ),
        Claim::Trapped => (
            TaskOutcome::Failed(idlegrid_types::ErrorKind::Trap),
            truth.fuel_used,
        ),
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// Whatever two receipts claim and whoever files them, in whichever
    /// order: a receipt equal to the re-execution is never slashed, every
    /// one that differs is, and the verdict names exactly those.
    #[test]
    fn a_receipt_equal_to_the_re_execution_is_never_slashed(
        first in claim(),
        second in claim(),
        swap in any::<bool>(),
        reporter in prop_oneof![Just(ALICE), Just(BOB), Just(PROVIDER)],
        energies in (any::<u64>(), any::<u64>()),
    ) {
        let truth = Execution {
            outcome: TaskOutcome::Completed { exit_code: 0, output: ContentId::of(b"pi=3.14") },
            fuel_used: 5_000,
        };
        let mut world = world_with(Box::new(Fixed(truth)));
        for who in [PROVIDER, CHEATER] {
            let stake = TxKind::Stake { role: StakeRole::Provider, amount: 40_000 };
            world.submit(who, stake).expect("stakes");
        }
        let module = b"\0asm\x01\0\0\0".to_vec();
        let mut job_terms = terms(world.ledger.height());
        job_terms.module = ContentId::of(&module);
        let job = world.open_job(ALICE, job_terms);
        let input = TaskInput::new(vec!["7".to_owned()], Vec::new()).expect("input");
        // Each receipt's advisory energy is whatever its provider measured.
        let receipt = |signer: usize, claim: Claim, energy_millijoules: u64| {
            let (outcome, fuel_used) = claimed(truth, claim);
            SignedReceipt::sign(&world.keys[signer], Receipt {
                job,
                task_index: 9,
                module: ContentId::of(&module),
                input: input.content_id(),
                outcome,
                fuel_used,
                energy_millijoules,
            })
        };
        let signers = [(PROVIDER, first), (CHEATER, second)];
        let (a, b) = (receipt(PROVIDER, first, energies.0), receipt(CHEATER, second, energies.1));
        let agree = (a.body.outcome, a.body.fuel_used) == (b.body.outcome, b.body.fuel_used);
        let evidence = if swap { Evidence::Conflicting(b, a) } else { Evidence::Conflicting(a, b) };
        let signed = world.sign(reporter, dispute(evidence, &module, &input.encode()));
        let hash = transaction_hash(&signed);
        let applied = world.apply(signed);
        if agree {
            prop_assert_eq!(rejected(applied), "receipts_agree");
            return Ok(());
        }
        let events = applied.expect("a dispute of differing receipts applies");
        let verdict = world.ledger.verdict(&hash).unwrap().expect("a verdict");
        prop_assert_eq!((verdict.outcome, verdict.fuel_used), (truth.outcome, truth.fuel_used));
        for (signer, claim) in signers {
            let right = claimed(truth, claim) == (truth.outcome, truth.fuel_used);
            let id = world.id(signer);
            let slashed = events
                .iter()
                .any(|event| matches!(event, Event::Slashed { provider, .. } if *provider == id));
            let bonded = world.ledger.stake(StakeRole::Provider, &id).unwrap().bonded;
            prop_assert_eq!(slashed, !right);
            prop_assert_eq!(verdict.wrong.contains(&id), !right);
            prop_assert_eq!(bonded == 40_000, right);
        }
        world.assert_books_balance();
    }
}
