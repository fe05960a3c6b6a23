//! Seeded fault campaigns (`idlegrid_chain::campaign`): 4–7 validators on
//! the deterministic runtime under a transfer load while they crash and
//! restart, the network splits and heals, links drop and delay messages,
//! and validators leave, rejoin and join at epoch boundaries.
//!
//! `IDLEGRID_CAMPAIGN_SEEDS=N` runs seeds 1 to N instead of the default
//! few; `IDLEGRID_CAMPAIGN_SEED=S` replays seed S alone (a failure prints
//! its seed and plan).

use std::time::Duration;

use idlegrid_chain::campaign::{self, Fault, LOAD_FOR, Plan, VALIDATORS_MAX, VALIDATORS_MIN};

/// Seeds `cargo test` runs (each sees every kind of fault): few enough for
/// CI's two cores.
const SEEDS_DEFAULT: u64 = 3;

fn seeds() -> Vec<u64> {
    let number = |name: &str| {
        std::env::var(name).ok().map(|value| {
            value
                .parse::<u64>()
                .unwrap_or_else(|_| panic!("{name} is a number"))
        })
    };
    if let Some(seed) = number("IDLEGRID_CAMPAIGN_SEED") {
        return vec![seed];
    }
    (1..=number("IDLEGRID_CAMPAIGN_SEEDS").unwrap_or(SEEDS_DEFAULT)).collect()
}

#[test]
fn seeded_fault_campaigns_lose_no_transfer_never_fork_and_replay_exactly() {
    let run = |seed: u64| {
        campaign::run(seed).unwrap_or_else(|failure| {
            panic!(
                "{failure}\nreplay it: IDLEGRID_CAMPAIGN_SEED={seed} cargo test -p idlegrid-chain --test campaign"
            )
        })
    };
    let mut replayed = false;
    for seed in seeds() {
        let report = run(seed);
        if !replayed {
            // The first seed again: the same events, in the same order.
            replayed = true;
            let again = run(seed);
            assert_eq!(report.audit, again.audit, "seed {seed} replays exactly");
        }
        println!(
            "seed {seed}: {} validators, {} transfers final once each ({} resent), {} faults {:?}, height {}, {:.0} s simulated",
            report.plan.validators,
            report.transfers,
            report.resent,
            report.faults.values().sum::<u64>(),
            report.faults,
            report.height,
            report.simulated.as_secs_f64()
        );
        assert!(report.transfers > 100, "seed {seed}: the load ran");
        for kind in ["crash", "partition", "lossy", "leave", "rejoin", "join"] {
            assert!(
                report.faults.contains_key(kind),
                "seed {seed} injects every kind of fault; none was `{kind}`: {:?}",
                report.faults
            );
        }
    }
}

#[test]
fn plans_come_from_the_seed_alone_and_end_their_faults_before_the_load_does() {
    for seed in 0..500 {
        let plan = Plan::draw(seed);
        assert_eq!(plan, Plan::draw(seed), "seed {seed}");
        assert!((VALIDATORS_MIN..=VALIDATORS_MAX).contains(&plan.validators));
        assert!((3..=6).contains(&plan.epoch_length));
        let mut free_from = Duration::ZERO;
        let mut out = None;
        for scheduled in &plan.faults {
            assert!(
                scheduled.at >= free_from,
                "seed {seed}: one fault at a time"
            );
            free_from = scheduled.at + scheduled.fault.lasting();
            assert!(
                free_from < LOAD_FOR,
                "seed {seed}: every fault ends within the load"
            );
            match scheduled.fault {
                Fault::Crash { validator, .. } => assert!(validator < plan.validators),
                Fault::Leave { validator } => {
                    assert_eq!(out, None, "seed {seed}: one validator out at a time");
                    out = Some(validator);
                }
                Fault::Rejoin { validator } => {
                    assert_eq!(
                        out,
                        Some(validator),
                        "seed {seed}: only one that left rejoins"
                    );
                    out = None;
                }
                _ => {}
            }
        }
        assert_eq!(
            out, None,
            "seed {seed}: a validator that left is back by the end"
        );
        for kind in ["crash", "partition", "lossy", "leave", "rejoin", "join"] {
            assert!(
                plan.faults
                    .iter()
                    .any(|scheduled| scheduled.fault.kind() == kind),
                "seed {seed} has no `{kind}`"
            );
        }
    }
}
