//! Disputes settled by re-executing a real example module in the sandbox:
//! slashing, the reporter's deposit, rejections, and a property over every
//! way two receipts can differ.

mod world;

use std::path::Path;

use idlegrid_ledger::{
    Dispute, DisputeVerdict, Event, Evidence, NoReExecution, StakeRole, Transaction, TxKind,
    transaction_hash,
};
use idlegrid_sandbox::{Sandbox, SandboxConfig, TaskSpec, outcome_of, task_limits};
use idlegrid_types::codec::Bounded;
use idlegrid_types::{
    AccountId, ContentId, Execution, ExecutionLimits, JobId, Keypair, ReExecute, Receipt,
    SignedReceipt, TaskInput, TaskOutcome, task_seed,
};
use proptest::prelude::*;
use world::*;

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
