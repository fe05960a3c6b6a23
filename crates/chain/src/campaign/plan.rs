//! What one campaign run does, drawn from its seed before it starts (so a
//! failure's seed names the whole run, and the plan can be printed).

use std::fmt;
use std::time::Duration;

use idlegrid_types::SplitMix64;

/// Validators in genesis: at least four (one may fail), at most seven.
pub const VALIDATORS_MIN: usize = 4;
pub const VALIDATORS_MAX: usize = 7;
/// How long the client submits transfers; every fault starts and ends
/// within it.
pub const LOAD_FOR: Duration = Duration::from_secs(30);

/// One fault, from `at` (time since the network started) on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scheduled {
    pub at: Duration,
    pub fault: Fault,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// The validator's tasks are aborted wherever they are (in the middle
    /// of a commit, a journal write, a vote); its pool and everything not
    /// in its ledger or journals is lost; it restarts over them after
    /// `down_for`.
    Crash {
        validator: usize,
        down_for: Duration,
    },
    /// No messages between `side` and the others for `lasting`; the side
    /// may hold a quorum or neither may.
    Partition { side: Vec<usize>, lasting: Duration },
    /// Every link drops one message in `1 / drop_one_in` and delays the
    /// rest by 50–250 ms, for `lasting`.
    Lossy { drop_one_in: u32, lasting: Duration },
    /// The validator unstakes: it leaves the set at the next epoch and
    /// follows.
    Leave { validator: usize },
    /// A validator that left stakes again, back in a later epoch's set.
    Rejoin { validator: usize },
    /// A node funded at genesis but not in its set stakes and joins.
    Join,
}

impl Fault {
    /// A short name, for counts.
    pub fn kind(&self) -> &'static str {
        match self {
            Fault::Crash { .. } => "crash",
            Fault::Partition { .. } => "partition",
            Fault::Lossy { .. } => "lossy",
            Fault::Leave { .. } => "leave",
            Fault::Rejoin { .. } => "rejoin",
            Fault::Join => "join",
        }
    }

    /// How long the fault lasts once it starts (zero for stake changes,
    /// which are one transaction).
    pub fn lasting(&self) -> Duration {
        match self {
            Fault::Crash { down_for, .. } => *down_for,
            Fault::Partition { lasting, .. } | Fault::Lossy { lasting, .. } => *lasting,
            Fault::Leave { .. } | Fault::Rejoin { .. } | Fault::Join => Duration::ZERO,
        }
    }
}

/// Everything a run does, drawn from its seed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub seed: u64,
    pub validators: usize,
    pub epoch_length: u64,
    /// Funded transfer senders.
    pub senders: usize,
    /// Time between two submissions.
    pub submit_every: Duration,
    pub faults: Vec<Scheduled>,
}

impl Plan {
    /// The plan of run `seed`: 4–7 validators, epochs of 3–6 blocks, a
    /// steady transfer load, and one fault after another (each cleared
    /// before the next starts, a gap between them) until the load ends.
    /// The first five are one of each kind but rejoin (in a drawn order),
    /// then crashes are most of them; at most one validator is down at a
    /// time, and a validator that left rejoins before the end.
    pub fn draw(seed: u64) -> Self {
        let mut rng = Draws(SplitMix64::new(seed));
        let validators =
            VALIDATORS_MIN + rng.below((VALIDATORS_MAX - VALIDATORS_MIN + 1) as u64) as usize;
        let epoch_length = 3 + rng.below(4);
        let senders = 4 + rng.below(5) as usize;
        let submit_every = Duration::from_millis(40 + rng.below(80));
        let mut faults = Vec::new();
        let mut at = Duration::from_millis(500 + rng.below(1_000));
        let mut left: Option<usize> = None;
        // The first five faults are one of each kind but rejoin, in a
        // drawn order, so every run changes its validator set and sees
        // every kind; then crashes are most of them.
        let mut deck = [
            Kind::Crash,
            Kind::Partition,
            Kind::Lossy,
            Kind::Leave,
            Kind::Join,
        ];
        for at in (1..deck.len()).rev() {
            deck.swap(at, rng.below(at as u64 + 1) as usize);
        }
        // Leave room at the end for a rejoin to take effect.
        let last_start = LOAD_FOR - Duration::from_secs(9);
        while at < last_start || faults.len() < deck.len() {
            let draw = rng.below(100);
            let kind = match deck.get(faults.len()) {
                Some(kind) => *kind,
                None if left.is_some() && draw < 15 => Kind::Rejoin,
                None if draw < 65 => Kind::Crash,
                None if draw < 80 => Kind::Partition,
                None if draw < 95 => Kind::Lossy,
                None if left.is_none() => Kind::Leave,
                None => Kind::Crash,
            };
            let validator = rng.below(validators as u64) as usize;
            let fault = match kind {
                Kind::Crash => Fault::Crash {
                    validator,
                    down_for: Duration::from_millis(200 + rng.below(3_000)),
                },
                Kind::Partition => {
                    let mut side: Vec<usize> =
                        (0..validators).filter(|_| rng.below(2) == 0).collect();
                    if side.is_empty() || side.len() == validators {
                        side = vec![validator];
                    }
                    Fault::Partition {
                        side,
                        lasting: Duration::from_millis(500 + rng.below(4_000)),
                    }
                }
                Kind::Lossy => Fault::Lossy {
                    drop_one_in: 3 + rng.below(10) as u32,
                    lasting: Duration::from_millis(1_000 + rng.below(3_000)),
                },
                Kind::Leave => {
                    left = Some(validator);
                    Fault::Leave { validator }
                }
                Kind::Rejoin => Fault::Rejoin {
                    validator: left.take().unwrap_or(validator),
                },
                Kind::Join => Fault::Join,
            };
            let lasting = fault.lasting();
            faults.push(Scheduled { at, fault });
            at += lasting + Duration::from_millis(500 + rng.below(2_000));
        }
        if let Some(validator) = left {
            // After the last fault ends, still within the load.
            faults.push(Scheduled {
                at,
                fault: Fault::Rejoin { validator },
            });
        }
        Self {
            seed,
            validators,
            epoch_length,
            senders,
            submit_every,
            faults,
        }
    }

    /// Whether a node outside genesis joins (it runs from the start,
    /// following, so that it has synced by the time it stakes).
    pub fn has_joiner(&self) -> bool {
        self.faults.iter().any(|fault| fault.fault == Fault::Join)
    }
}

impl fmt::Display for Plan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "seed {}: {} validators, epochs of {} blocks, {} senders, a transfer every {:?}",
            self.seed, self.validators, self.epoch_length, self.senders, self.submit_every
        )?;
        for scheduled in &self.faults {
            writeln!(
                f,
                "  at {:>6.1} s: {:?}",
                scheduled.at.as_secs_f64(),
                scheduled.fault
            )?;
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Copy)]
enum Kind {
    Crash,
    Partition,
    Lossy,
    Leave,
    Rejoin,
    Join,
}

/// The plan's only randomness, so a plan depends on its seed alone and not
/// on how the runtime draws.
struct Draws(SplitMix64);

impl Draws {
    /// Uniform enough below `bound` (> 0) for drawing a plan.
    fn below(&mut self, bound: u64) -> u64 {
        self.0.next_u64() % bound
    }
}
