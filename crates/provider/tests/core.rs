//! The provider's decisions without a network: what it takes, runs, signs,
//! keeps and redeems, driven through `ProviderCore::handle`.

mod common;

use std::collections::HashMap;

use idlegrid_net::{Request, Response, TaskBatch, TaskReturn};
use idlegrid_provider::core::{
    Command, Input, JobCheck, ModuleStatus, ProviderCore, RESULTS_ATTEMPTS_MAX,
    RESULTS_IN_FLIGHT_MAX, Redemption, RunResult,
};
use idlegrid_types::codec::Bounded;
use idlegrid_types::{ContentId, ErrorKind, JobId, Offer, SignedVoucher, TaskOutcome, Voucher};
use proptest::prelude::*;

use common::*;

#[test]
fn a_batch_for_an_unchecked_job_waits_for_the_ledger_then_its_module_then_runs() {
    let mut core = ProviderCore::new(config(100), Vec::new());
    let commands = core.handle(NOW, tasks(7, batch(job(1), [0, 1])));
    assert!(replies(&commands).is_empty(), "answered before the check");
    assert!(matches!(commands[..], [Command::CheckJob { job: checked }] if checked == job(1)));
    // A second batch of the same job does not ask the ledger again.
    let commands = core.handle(NOW, tasks(8, batch(job(1), [2])));
    assert!(commands.is_empty(), "{commands:?}");

    let commands = core.handle(
        NOW,
        Input::JobChecked {
            job: job(1),
            check: approved(),
        },
    );
    assert_eq!(
        replies(&commands),
        vec![(7, Response::Ok), (8, Response::Ok)]
    );
    let fetches: Vec<_> = commands
        .iter()
        .filter(|command| matches!(command, Command::FetchModule { .. }))
        .collect();
    assert_eq!(fetches.len(), 1, "one fetch for the module: {commands:?}");
    assert!(
        runs(&commands).is_empty(),
        "nothing runs without the module"
    );

    let commands = core.handle(
        NOW,
        Input::ModuleReady {
            cid: module(),
            status: ModuleStatus::Ready,
        },
    );
    assert_eq!(runs(&commands), vec![(job(1), 0), (job(1), 1), (job(1), 2)]);
    assert_eq!(core.totals().held, 3);
}

#[test]
fn batches_the_provider_should_not_take_are_refused_with_a_reason() {
    let mut core = ready_core(4);
    let cheap = TaskBatch {
        price_per_million_fuel: FLOOR - 1,
        ..batch(job(1), [0])
    };
    let commands = core.handle(NOW, tasks(1, cheap));
    assert_eq!(
        refusal_code(&replies(&commands)[0].1).as_deref(),
        Some("price_too_low")
    );

    let commands = core.handle(NOW, tasks(2, batch(job(1), 0..5)));
    assert_eq!(
        refusal_code(&replies(&commands)[0].1).as_deref(),
        Some("busy")
    );
    assert_eq!(core.totals().held, 0, "a refused batch holds nothing");

    let stranger = Input::Request {
        id: 3,
        peer: key(9).account_id(),
        request: Request::Tasks(batch(job(1), [0])),
    };
    let commands = core.handle(NOW, stranger);
    assert_eq!(
        refusal_code(&replies(&commands)[0].1).as_deref(),
        Some("not_the_requestor")
    );
    let other_module = TaskBatch {
        module: ContentId::of(b"another"),
        ..batch(job(1), [0])
    };
    let commands = core.handle(NOW, tasks(4, other_module));
    assert_eq!(
        refusal_code(&replies(&commands)[0].1).as_deref(),
        Some("wrong_module")
    );

    core.handle(
        NOW,
        Input::JobChecked {
            job: job(2),
            check: JobCheck::Rejected {
                code: "job_closed",
                message: "closed".to_owned(),
            },
        },
    );
    let commands = core.handle(NOW, tasks(5, batch(job(2), [0])));
    assert_eq!(
        refusal_code(&replies(&commands)[0].1).as_deref(),
        Some("job_closed")
    );

    core.handle(NOW, Input::Paused(true));
    let commands = core.handle(NOW, tasks(6, batch(job(1), [0])));
    assert_eq!(
        refusal_code(&replies(&commands)[0].1).as_deref(),
        Some("paused")
    );
    assert_eq!(core.totals().held, 0);
}

#[test]
fn a_job_the_ledger_could_not_confirm_is_checked_again_by_its_next_batch() {
    let mut core = ProviderCore::new(config(100), Vec::new());
    core.handle(NOW, tasks(1, batch(job(1), [0])));
    let commands = core.handle(
        NOW,
        Input::JobChecked {
            job: job(1),
            check: JobCheck::Rejected {
                code: "unknown_job",
                message: "the ledger has no such job".to_owned(),
            },
        },
    );
    assert_eq!(
        refusal_code(&replies(&commands)[0].1).as_deref(),
        Some("unknown_job")
    );
    let commands = core.handle(NOW, tasks(2, batch(job(1), [0])));
    assert!(
        matches!(commands[..], [Command::CheckJob { job: checked }] if checked == job(1)),
        "asked again: {commands:?}"
    );
}

#[test]
fn results_go_back_signed_for_the_task_module_and_input_that_ran() {
    let mut core = ready_core(100);
    core.handle(NOW, tasks(1, batch(job(1), [0, 1])));
    let commands = core.handle(
        NOW,
        Input::TaskDone {
            job: job(1),
            index: 1,
            result: completed(b"hello"),
        },
    );
    let sent = sent_results(&commands);
    assert_eq!(sent.len(), 1);
    let TaskReturn::Ran { receipt, stdout } = &sent[0].1[0] else {
        panic!("expected a receipt: {sent:?}");
    };
    assert_eq!(receipt.signer, provider());
    assert!(receipt.verify().is_ok());
    assert_eq!(receipt.body.job, job(1));
    assert_eq!(receipt.body.task_index, 1);
    assert_eq!(receipt.body.module, module());
    assert_eq!(receipt.body.input, input(1).content_id());
    assert_eq!(receipt.body.fuel_used, 100);
    // The worker's energy figure is signed into the receipt as it came.
    assert_eq!(receipt.body.energy_millijoules, 250);
    assert_eq!(&stdout[..], b"hello");
    assert_eq!(core.totals().tasks_done, 1);
    assert_eq!(core.totals().held, 1);
}

#[test]
fn a_module_the_sandbox_refuses_is_every_task_s_result_and_an_unfetchable_one_is_not_run() {
    let mut core = ProviderCore::new(config(100), Vec::new());
    core.handle(
        NOW,
        Input::JobChecked {
            job: job(1),
            check: approved(),
        },
    );
    core.handle(NOW, tasks(1, batch(job(1), [0])));
    let commands = core.handle(
        NOW,
        Input::ModuleReady {
            cid: module(),
            status: ModuleStatus::Invalid(ErrorKind::InvalidModule),
        },
    );
    assert!(runs(&commands).is_empty());
    let sent = sent_results(&commands);
    let TaskReturn::Ran { receipt, .. } = &sent[0].1[0] else {
        panic!("expected a receipt: {sent:?}");
    };
    assert_eq!(
        receipt.body.outcome,
        TaskOutcome::Failed(ErrorKind::InvalidModule)
    );
    assert_eq!(receipt.body.fuel_used, 0);
    assert_eq!(receipt.body.energy_millijoules, 0);

    let mut core = ProviderCore::new(config(100), Vec::new());
    core.handle(
        NOW,
        Input::JobChecked {
            job: job(1),
            check: approved(),
        },
    );
    core.handle(NOW, tasks(1, batch(job(1), [0])));
    let commands = core.handle(
        NOW,
        Input::ModuleReady {
            cid: module(),
            status: ModuleStatus::Unavailable("unreachable".to_owned()),
        },
    );
    let sent = sent_results(&commands);
    assert!(matches!(sent[0].1[0], TaskReturn::NotRun { index: 0, .. }));
    assert_eq!(core.totals().held, 0);
    // The next batch that needs it fetches it again.
    let commands = core.handle(NOW, tasks(2, batch(job(1), [1])));
    assert!(
        commands
            .iter()
            .any(|command| matches!(command, Command::FetchModule { .. }))
    );
}

#[test]
fn a_cancelled_task_is_skipped_and_its_place_freed() {
    let mut core = ready_core(2);
    core.handle(NOW, tasks(1, batch(job(1), [0, 1])));
    let cancel = Input::Request {
        id: 2,
        peer: requestor(),
        request: Request::Cancel {
            job: job(1),
            tasks: Bounded::new(vec![1]).expect("one"),
        },
    };
    let commands = core.handle(NOW, cancel);
    assert!(
        commands
            .iter()
            .any(|command| matches!(command, Command::Cancel { index: 1, .. }))
    );
    core.handle(
        NOW,
        Input::TaskSkipped {
            job: job(1),
            index: 1,
        },
    );
    assert_eq!(core.totals().held, 1);
    let commands = core.handle(NOW, tasks(3, batch(job(1), [2])));
    assert_eq!(replies(&commands), vec![(3, Response::Ok)]);
    // A result for the skipped task is nobody's: nothing is signed.
    let commands = core.handle(
        NOW,
        Input::TaskDone {
            job: job(1),
            index: 1,
            result: completed(b"late"),
        },
    );
    assert!(sent_results(&commands).is_empty());
}

#[test]
fn results_wait_for_the_requestor_and_are_retried_then_given_up() {
    let mut core = ready_core(1000);
    core.handle(NOW, tasks(1, batch(job(1), 0..10)));
    let mut batches = Vec::new();
    for index in 0..10 {
        let commands = core.handle(
            NOW,
            Input::TaskDone {
                job: job(1),
                index,
                result: completed(b"x"),
            },
        );
        batches.extend(sent_results(&commands));
    }
    assert_eq!(
        batches.len(),
        RESULTS_IN_FLIGHT_MAX,
        "no more in flight than the limit"
    );
    // The first batch is lost every time it is sent: it is sent again
    // (with what waited) until its attempts run out.
    let mut lost = batches[0].0;
    let lost_task = batches[0].1[0].index();
    let mut attempts = 1;
    loop {
        let commands = core.handle(
            NOW,
            Input::ResultsAnswered {
                batch: lost,
                delivered: false,
            },
        );
        let resent = sent_results(&commands);
        match resent
            .iter()
            .find(|(_, results)| results.iter().any(|result| result.index() == lost_task))
        {
            Some((batch, _)) => {
                lost = *batch;
                attempts += 1;
            }
            None => break,
        }
    }
    assert_eq!(attempts, RESULTS_ATTEMPTS_MAX);
}

#[test]
fn vouchers_are_stored_before_they_are_acknowledged_and_forged_ones_refused() {
    let mut core = ProviderCore::new(config(10), Vec::new());
    let commands = core.handle(NOW, voucher_request(1, voucher(job(1), 50, 1)));
    assert!(
        matches!(
            &commands[..],
            [Command::StoreVoucher { reply: Some(1), .. }]
        ),
        "stored, and acknowledged only once stored: {commands:?}"
    );
    assert_eq!(core.totals().owed, 50);
    // An older one adds nothing: acknowledged at once.
    let commands = core.handle(NOW, voucher_request(2, voucher(job(1), 40, 0)));
    assert_eq!(replies(&commands), vec![(2, Response::Ok)]);
    assert_eq!(core.totals().owed, 50);

    let from_someone_else = Input::Request {
        id: 3,
        peer: key(9).account_id(),
        request: Request::Voucher(voucher(job(1), 90, 5)),
    };
    let commands = core.handle(NOW, from_someone_else);
    assert_eq!(
        refusal_code(&replies(&commands)[0].1).as_deref(),
        Some("bad_voucher")
    );
    let for_someone_else = requestor_key().sign(Voucher {
        job: job(1),
        provider: key(9).account_id(),
        cumulative_amount: 90,
        cumulative_fuel: 90,
        sequence: 5,
    });
    let commands = core.handle(NOW, voucher_request(4, for_someone_else));
    assert_eq!(
        refusal_code(&replies(&commands)[0].1).as_deref(),
        Some("bad_voucher")
    );
    let mut forged = voucher(job(1), 90, 5);
    forged.body.cumulative_amount = 900;
    let commands = core.handle(NOW, voucher_request(5, forged));
    assert_eq!(
        refusal_code(&replies(&commands)[0].1).as_deref(),
        Some("bad_voucher")
    );
    assert_eq!(core.totals().owed, 50);
}

#[test]
fn vouchers_are_redeemed_once_each_and_failed_redemptions_tried_again() {
    let mut core = ProviderCore::new(config(10), vec![voucher(job(1), 30, 1)]);
    core.handle(NOW, voucher_request(1, voucher(job(2), 70, 1)));
    assert_eq!(core.totals().owed, 100);
    let mut ordered = redeemed(&core.handle(NOW, Input::RedeemTimer));
    ordered.sort_by_key(|(_, amount)| *amount);
    assert_eq!(ordered, vec![(job(1), 30), (job(2), 70)]);
    // Already on their way: not ordered twice.
    assert!(redeemed(&core.handle(NOW, Input::RedeemTimer)).is_empty());

    core.handle(
        NOW,
        Input::Redeemed {
            job: job(1),
            amount: 30,
            outcome: Redemption::Paid,
        },
    );
    core.handle(
        NOW,
        Input::Redeemed {
            job: job(2),
            amount: 70,
            outcome: Redemption::Failed,
        },
    );
    assert_eq!(core.totals().earned, 30);
    assert_eq!(core.totals().owed, 70);
    assert_eq!(
        redeemed(&core.handle(NOW, Input::RedeemTimer)),
        vec![(job(2), 70)]
    );
    // A job the requestor says is done is redeemed at once.
    core.handle(NOW, voucher_request(2, voucher(job(1), 45, 2)));
    let commands = core.handle(
        NOW,
        Input::Request {
            id: 3,
            peer: requestor(),
            request: Request::JobDone { job: job(1) },
        },
    );
    assert_eq!(replies(&commands), vec![(3, Response::Ok)]);
    assert_eq!(redeemed(&commands), vec![(job(1), 45)]);
}

#[test]
fn shutting_down_refuses_work_and_redeems_everything_owed() {
    let mut core = ready_core(10);
    core.handle(NOW, voucher_request(1, voucher(job(1), 30, 1)));
    let commands = core.handle(NOW, Input::Shutdown);
    assert_eq!(redeemed(&commands), vec![(job(1), 30)]);
    assert_eq!(core.redeeming(), 1);
    assert!(core.totals().paused);
    let commands = core.handle(NOW, tasks(2, batch(job(1), [0])));
    assert_eq!(
        refusal_code(&replies(&commands)[0].1).as_deref(),
        Some("paused")
    );
    // The owner's load falling does not undo a shutdown.
    core.handle(NOW, Input::Paused(false));
    assert!(core.totals().paused);
}

fn offer_of(commands: &[Command]) -> Option<Offer> {
    commands.iter().find_map(|command| match command {
        Command::PublishOffer(offer) => Some(offer.body.clone()),
        _ => None,
    })
}

#[test]
fn offers_are_paced_for_new_subscribers_and_expire_at_once_when_paused() {
    let mut core = ProviderCore::new(config(10), Vec::new());
    let first = offer_of(&core.handle(NOW, Input::OfferTimer)).expect("published");
    assert_eq!(first.expires_at_ms, NOW + 60_000);
    assert!(offer_of(&core.handle(NOW + 10, Input::OfferSubscriber)).is_none());
    assert_eq!(core.wake_at(), Some(NOW + 1_000));
    assert!(offer_of(&core.handle(NOW + 500, Input::Wake)).is_none());
    let again = offer_of(&core.handle(NOW + 1_000, Input::Wake)).expect("published");
    assert!(again.sequence > first.sequence);
    assert_eq!(core.wake_at(), None);

    let paused = offer_of(&core.handle(NOW + 2_000, Input::Paused(true))).expect("published");
    assert_eq!(paused.expires_at_ms, NOW + 2_000);
    assert!(paused.sequence > again.sequence);
}

#[test]
fn a_requestor_asking_for_the_offer_gets_the_newest_one_signed() {
    let mut core = ProviderCore::new(config(10), Vec::new());
    let ask = |core: &mut ProviderCore, now| {
        let commands = core.handle(
            now,
            Input::Request {
                id: 3,
                peer: requestor(),
                request: Request::Offer,
            },
        );
        match &replies(&commands)[..] {
            [(3, response)] => response.clone(),
            other => panic!("one reply expected: {other:?}"),
        }
    };
    assert_eq!(
        refusal_code(&ask(&mut core, NOW)).as_deref(),
        Some("no_offer")
    );
    core.handle(NOW, Input::OfferTimer);
    let newest = offer_of(&core.handle(NOW + 5_000, Input::OfferTimer)).expect("published");
    match ask(&mut core, NOW + 6_000) {
        Response::Offer(offer) => {
            assert_eq!(offer.body, newest);
            assert!(offer.verify().is_ok());
        }
        other => panic!("an offer expected: {other:?}"),
    }
}

#[test]
fn compiled_modules_held_are_bounded() {
    let mut core = ProviderCore::new(config(10_000), Vec::new());
    let mut dropped = 0;
    for n in 0..(idlegrid_provider::core::MODULES_HELD_MAX as u64 + 5) {
        let module = ContentId::of(&n.to_le_bytes());
        let job = JobId::derive(&requestor(), n + 100);
        core.handle(
            NOW,
            Input::JobChecked {
                job,
                check: JobCheck::Approved {
                    requestor: requestor(),
                    module,
                },
            },
        );
        core.handle(
            NOW,
            tasks(
                n,
                TaskBatch {
                    module,
                    ..batch(job, [0])
                },
            ),
        );
        let commands = core.handle(
            NOW,
            Input::ModuleReady {
                cid: module,
                status: ModuleStatus::Ready,
            },
        );
        dropped += commands
            .iter()
            .filter(|command| matches!(command, Command::DropModule(_)))
            .count();
    }
    assert_eq!(dropped, 5);
}

/// One step of a random provider's life.
#[derive(Debug, Clone)]
enum Step {
    Batch {
        job: u8,
        first: u64,
        count: u64,
    },
    Done {
        pick: usize,
        ran: bool,
    },
    Skip {
        pick: usize,
    },
    Cancel {
        job: u8,
        index: u64,
    },
    Answer {
        pick: usize,
        delivered: bool,
    },
    /// A worker reports a task the core never handed out.
    Stray {
        job: u8,
        index: u64,
    },
    Voucher {
        job: u8,
        amount: u64,
        sequence: u64,
    },
    RedeemTimer,
    Redeemed {
        pick: usize,
        outcome: u8,
    },
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        (0..3u8, 0..20u64, 1..6u64).prop_map(|(job, first, count)| Step::Batch {
            job,
            first,
            count
        }),
        (any::<usize>(), any::<bool>()).prop_map(|(pick, ran)| Step::Done { pick, ran }),
        any::<usize>().prop_map(|pick| Step::Skip { pick }),
        (0..3u8, 0..25u64).prop_map(|(job, index)| Step::Cancel { job, index }),
        (any::<usize>(), any::<bool>())
            .prop_map(|(pick, delivered)| Step::Answer { pick, delivered }),
        (0..3u8, 0..25u64).prop_map(|(job, index)| Step::Stray { job, index }),
        (0..3u8, 0..1_000u64, 0..20u64).prop_map(|(job, amount, sequence)| Step::Voucher {
            job,
            amount,
            sequence
        }),
        Just(Step::RedeemTimer),
        (any::<usize>(), 0..3u8).prop_map(|(pick, outcome)| Step::Redeemed { pick, outcome }),
    ]
}

/// What the shell would hold, played from the core's commands.
#[derive(Default)]
struct World {
    /// Tasks handed to the workers, not yet reported.
    running: Vec<(JobId, u64)>,
    /// Tasks that ran (reported `Ran`), not yet seen signed: how many
    /// times each (a requestor may send a finished task again).
    ran: HashMap<(JobId, u64), usize>,
    /// Batches in flight.
    sending: Vec<u64>,
    /// What is on disk.
    disk: HashMap<JobId, SignedVoucher>,
    redeeming: Vec<(JobId, u64)>,
    next_request: u64,
}

impl World {
    fn play(&mut self, commands: Vec<Command>) -> Result<(), TestCaseError> {
        for command in commands {
            match command {
                Command::Run(task) => self.running.push((task.job, task.index)),
                Command::SendResults { batch, results, .. } => {
                    for result in results.results.iter() {
                        if let TaskReturn::Ran { receipt, .. } = result {
                            let key = (receipt.body.job, receipt.body.task_index);
                            let unsigned = self.ran.get_mut(&key).filter(|count| **count > 0);
                            prop_assert!(
                                unsigned.is_some(),
                                "signed {key:?}, which no worker ran (or signed it twice)"
                            );
                            if let Some(count) = unsigned {
                                *count -= 1;
                            }
                            prop_assert!(receipt.verify().is_ok());
                        }
                    }
                    self.sending.push(batch);
                }
                Command::StoreVoucher { voucher, .. } => {
                    self.disk.insert(voucher.body.job, voucher);
                }
                Command::ForgetVoucher(job) => {
                    self.disk.remove(&job);
                }
                Command::Redeem(vouchers) => {
                    for voucher in vouchers {
                        self.redeeming
                            .push((voucher.body.job, voucher.body.cumulative_amount));
                    }
                }
                _ => {}
            }
        }
        Ok(())
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Whatever arrives in whatever order: a receipt is signed only for a
    /// task handed to a worker that reported it ran, once (a batch that is
    /// sent again after a failed delivery re-signs the same results, so a
    /// test of it re-adds them); the vouchers held are exactly those on
    /// disk, so a restarted provider holds every one; what is held stays
    /// within its bounds.
    #[test]
    fn receipts_are_signed_only_for_work_that_ran_and_every_voucher_survives_a_restart(
        steps in proptest::collection::vec(step(), 1..200),
    ) {
        let mut core = ProviderCore::new(config(12), Vec::new());
        let mut world = World::default();
        for n in 0..3 {
            core.handle(NOW, Input::JobChecked { job: job(n), check: approved() });
        }
        world.play(core.handle(NOW, tasks(0, batch(job(0), []))))?;
        world.play(core.handle(NOW, Input::ModuleReady { cid: module(), status: ModuleStatus::Ready }))?;
        // Results in flight, by batch: to re-add what is signed again.
        let mut in_batches: HashMap<u64, Vec<(JobId, u64)>> = HashMap::new();
        for step in steps {
            world.next_request += 1;
            let id = world.next_request;
            let commands = match step {
                Step::Batch { job: n, first, count } => {
                    core.handle(NOW, tasks(id, batch(job(n), first..first + count)))
                }
                Step::Done { pick, ran } => {
                    if world.running.is_empty() { continue; }
                    let (job, index) = world.running.remove(pick % world.running.len());
                    let result = if ran {
                        *world.ran.entry((job, index)).or_default() += 1;
                        completed(&index.to_le_bytes())
                    } else {
                        RunResult::NotRun { reason: "host".to_owned() }
                    };
                    core.handle(NOW, Input::TaskDone { job, index, result })
                }
                Step::Skip { pick } => {
                    if world.running.is_empty() { continue; }
                    let (job, index) = world.running.remove(pick % world.running.len());
                    core.handle(NOW, Input::TaskSkipped { job, index })
                }
                Step::Cancel { job: n, index } => core.handle(NOW, Input::Request {
                    id,
                    peer: requestor(),
                    request: Request::Cancel { job: job(n), tasks: Bounded::new(vec![index]).expect("one") },
                }),
                Step::Answer { pick, delivered } => {
                    if world.sending.is_empty() { continue; }
                    let batch = world.sending.remove(pick % world.sending.len());
                    if !delivered {
                        for key in in_batches.remove(&batch).unwrap_or_default() {
                            *world.ran.entry(key).or_default() += 1;
                        }
                    }
                    core.handle(NOW, Input::ResultsAnswered { batch, delivered })
                }
                Step::Stray { job: n, index } => {
                    let key = (job(n), index);
                    if world.running.contains(&key) { continue; }
                    core.handle(NOW, Input::TaskDone { job: key.0, index, result: completed(b"stray") })
                }
                Step::Voucher { job: n, amount, sequence } => {
                    core.handle(NOW, voucher_request(id, voucher(job(n), amount, sequence)))
                }
                Step::RedeemTimer => core.handle(NOW, Input::RedeemTimer),
                Step::Redeemed { pick, outcome } => {
                    if world.redeeming.is_empty() { continue; }
                    let (job, amount) = world.redeeming.remove(pick % world.redeeming.len());
                    let outcome = [Redemption::Paid, Redemption::Settled, Redemption::Failed][usize::from(outcome)];
                    core.handle(NOW, Input::Redeemed { job, amount, outcome })
                }
            };
            for command in &commands {
                if let Command::SendResults { batch, results, .. } = command {
                    let keys = results.results.iter().filter_map(|result| match result {
                        TaskReturn::Ran { receipt, .. } => Some((receipt.body.job, receipt.body.task_index)),
                        TaskReturn::NotRun { .. } => None,
                    });
                    in_batches.insert(*batch, keys.collect());
                }
            }
            world.play(commands)?;
            let totals = core.totals();
            prop_assert!(totals.held <= 12, "held {} of 12", totals.held);
            prop_assert!(totals.held as usize >= world.running.len());
            let held: HashMap<JobId, SignedVoucher> = core
                .vouchers()
                .map(|voucher| (voucher.body.job, voucher.clone()))
                .collect();
            prop_assert_eq!(&held, &world.disk, "held and stored vouchers differ");
        }
        let restarted = ProviderCore::new(config(12), world.disk.values().cloned().collect());
        let mut before: Vec<_> = core.vouchers().cloned().map(|voucher| voucher.body).collect();
        let mut after: Vec<_> = restarted.vouchers().cloned().map(|voucher| voucher.body).collect();
        before.sort_by_key(|body| body.job);
        after.sort_by_key(|body| body.job);
        prop_assert_eq!(before, after);
    }
}
