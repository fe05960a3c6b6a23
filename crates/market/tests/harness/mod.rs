//! The market's test harness: a market, its providers and a clock, driven
//! through inputs, with what it commanded kept for the checks.

use std::collections::{BTreeMap, BTreeSet};

use idlegrid_market::{
    Command, Decision, Input, JobSpec, JobSummary, Market, MarketConfig, Policy, Standing,
    TaskResult,
};
use idlegrid_types::{AccountId, ContentId, ExecutionLimits, JobId, Keypair, Offer, TaskOutcome};

pub const FUEL: u64 = 1_000_000;
pub const PRICE: u64 = 100;
pub const COST: u64 = FUEL * PRICE / 1_000_000;

/// Staked, with a slash covering the value of `stake` tasks, and no record.
pub fn standing(stake: u64) -> Standing {
    Standing {
        stake,
        slashable: stake.saturating_mul(COST),
        ..Standing::default()
    }
}

pub fn account(seed: u8) -> AccountId {
    Keypair::from_seed([seed; 32]).account_id()
}

pub fn offer(cores: u32, speed: u64, price_floor: u64) -> Offer {
    Offer {
        cores,
        memory_bytes: 1 << 30,
        gpu: None,
        benchmark_fuel_per_second: speed,
        price_floor_per_million_fuel: price_floor,
        concurrency: cores * 2,
        idle_only: false,
        operator: None,
        sequence: 1,
        expires_at_ms: u64::MAX,
    }
}

pub fn job(tasks: u64, policy: Policy, budget: u64) -> JobSpec {
    JobSpec {
        id: JobId::from_bytes([1; 32]),
        module: ContentId::of(b"module"),
        task_count: tasks,
        limits: ExecutionLimits {
            fuel: FUEL,
            memory_bytes: 1 << 26,
            output_bytes: 1 << 20,
        },
        price_per_million_fuel: PRICE,
        policy,
        budget,
        input_bytes: 0,
        gpu: None,
    }
}

pub fn truth(task: u64) -> TaskOutcome {
    TaskOutcome::Completed {
        exit_code: 0,
        output: ContentId::of(&task.to_le_bytes()),
    }
}

pub fn lie(task: u64) -> TaskOutcome {
    TaskOutcome::Completed {
        exit_code: 0,
        output: ContentId::of(&(task + 1_000_000).to_le_bytes()),
    }
}

pub fn result(outcome: TaskOutcome) -> TaskResult {
    TaskResult {
        outcome,
        fuel_used: FUEL / 2,
        receipt: None,
    }
}

/// A market, its providers, and everything it has said.
pub struct Harness {
    pub market: Market,
    pub now: u64,
    pub providers: Vec<AccountId>,
    /// Assignments not yet answered: (provider, task).
    pub outstanding: Vec<(AccountId, u64)>,
    /// Tasks accepted or failed so far.
    pub decided: BTreeSet<u64>,
    /// Times each task was decided (a reopened task may be decided again).
    pub decisions_made: BTreeMap<u64, u32>,
    /// How many times its task had been decided when an assignment was made.
    pub assigned_after: BTreeMap<(AccountId, u64), u32>,
    pub log: Vec<Command>,
    /// How a referee answers: with the truth, holding its output or not;
    /// `None` leaves referees unanswered.
    pub referee: Option<bool>,
}

impl Harness {
    pub fn new(config: MarketConfig, offers: &[(u8, Offer, u64)]) -> Self {
        let mut harness = Harness {
            market: Market::new(config),
            now: 0,
            providers: Vec::new(),
            outstanding: Vec::new(),
            decided: BTreeSet::new(),
            decisions_made: BTreeMap::new(),
            assigned_after: BTreeMap::new(),
            log: Vec::new(),
            referee: Some(true),
        };
        for (seed, offer, stake) in offers {
            let provider = account(*seed);
            harness.providers.push(provider);
            harness.send(Input::Offer {
                provider,
                offer: offer.clone(),
            });
            harness.send(Input::Standing {
                provider,
                standing: standing(*stake),
            });
            harness.send(Input::Connected(provider));
        }
        harness
    }

    pub fn send(&mut self, input: Input) -> Vec<Command> {
        let commands = self.market.handle(self.now, input);
        let mut referees = Vec::new();
        for command in &commands {
            match command {
                Command::Assign {
                    provider, tasks, ..
                } => {
                    for task in tasks {
                        // A provider given a task it still holds from an
                        // expired lease holds it once: one answer, or one
                        // failure, ends both.
                        if !self.outstanding.contains(&(*provider, *task)) {
                            self.outstanding.push((*provider, *task));
                        }
                        let made = self.decisions_made.get(task).copied().unwrap_or(0);
                        self.assigned_after.insert((*provider, *task), made);
                    }
                }
                Command::Cancel { provider, task, .. } => {
                    self.outstanding.retain(|held| held != &(*provider, *task));
                }
                Command::TaskAccepted { task, .. } | Command::TaskFailed { task, .. } => {
                    self.decided.insert(*task);
                    *self.decisions_made.entry(*task).or_default() += 1;
                }
                Command::TaskReopened { task, .. } => {
                    self.decided.remove(task);
                }
                Command::Referee { job, task, .. } => referees.push((*job, *task)),
                _ => {}
            }
            assert!(
                self.market.in_flight(&account_of(command))
                    <= self.market.window(&account_of(command)),
                "a provider holds more than its window"
            );
        }
        self.log.extend(commands.iter().cloned());
        if let Some(output_held) = self.referee {
            for (job, task) in referees {
                self.send(Input::Verdict {
                    job,
                    task,
                    outcome: truth(task),
                    fuel_used: FUEL / 2,
                    output_held,
                });
            }
        }
        commands
    }

    /// Answers every outstanding assignment; `answer` decides each outcome
    /// (None: the provider stays silent).
    pub fn answer_all(&mut self, answer: &dyn Fn(AccountId, u64) -> Option<TaskOutcome>) {
        let work = std::mem::take(&mut self.outstanding);
        for (provider, task) in work {
            match answer(provider, task) {
                Some(outcome) => {
                    self.send(Input::Result {
                        provider,
                        job: JobId::from_bytes([1; 32]),
                        task,
                        result: result(outcome),
                    });
                }
                None => self.outstanding.push((provider, task)),
            }
        }
    }

    /// Whether an answer to this assignment counts: its task was not
    /// decided since it was assigned (a decision ends every lease on it,
    /// late ones included, even if the task is reopened later).
    pub fn counts(&self, provider: AccountId, task: u64) -> bool {
        self.assigned_after.get(&(provider, task)).copied()
            == Some(self.decisions_made.get(&task).copied().unwrap_or(0))
    }

    pub fn finished(&self) -> Option<JobSummary> {
        self.log.iter().find_map(|command| match command {
            Command::JobFinished { summary, .. } => Some(*summary),
            _ => None,
        })
    }

    /// What each task stands accepted with now (a reopened task is not,
    /// until it is accepted again).
    pub fn accepted(&self) -> BTreeMap<u64, TaskOutcome> {
        self.decisions()
            .into_iter()
            .map(|(task, (outcome, _))| (task, outcome))
            .collect()
    }

    pub fn decisions(&self) -> BTreeMap<u64, (TaskOutcome, Decision)> {
        let mut accepted = BTreeMap::new();
        for command in &self.log {
            match command {
                Command::TaskAccepted {
                    task,
                    outcome,
                    decision,
                    ..
                } => {
                    assert!(
                        accepted.insert(*task, (*outcome, *decision)).is_none(),
                        "task {task} accepted twice without being reopened"
                    );
                }
                Command::TaskReopened { task, .. } => {
                    assert!(
                        accepted.remove(task).is_some(),
                        "reopened {task}, never accepted"
                    );
                }
                _ => {}
            }
        }
        accepted
    }

    pub fn referees(&self) -> usize {
        self.log
            .iter()
            .filter(|command| matches!(command, Command::Referee { .. }))
            .count()
    }

    pub fn assigned_to(&self, provider: AccountId) -> usize {
        self.log
            .iter()
            .map(|command| match command {
                Command::Assign {
                    provider: to,
                    tasks,
                    ..
                } if *to == provider => tasks.len(),
                _ => 0,
            })
            .sum()
    }

    /// The latest voucher per provider: (amount, fuel, sequence).
    pub fn vouchers(&self) -> BTreeMap<AccountId, (u64, u64, u64)> {
        let mut latest: BTreeMap<AccountId, (u64, u64, u64)> = BTreeMap::new();
        for command in &self.log {
            if let Command::Voucher {
                provider,
                cumulative_amount,
                cumulative_fuel,
                sequence,
                ..
            } = command
            {
                if let Some(previous) = latest.get(provider) {
                    assert!(*cumulative_amount >= previous.0, "a voucher went down");
                    assert_eq!(*sequence, previous.2 + 1, "voucher sequences skip");
                }
                latest.insert(*provider, (*cumulative_amount, *cumulative_fuel, *sequence));
            }
        }
        latest
    }

    pub fn frauds(&self) -> BTreeSet<AccountId> {
        self.log
            .iter()
            .filter_map(|command| match command {
                Command::Fraud { provider, .. } => Some(*provider),
                _ => None,
            })
            .collect()
    }
}

pub fn account_of(command: &Command) -> AccountId {
    match command {
        Command::Assign { provider, .. }
        | Command::Cancel { provider, .. }
        | Command::Voucher { provider, .. }
        | Command::Fraud { provider, .. } => *provider,
        _ => account(0),
    }
}

pub fn honest(_: AccountId, task: u64) -> Option<TaskOutcome> {
    Some(truth(task))
}
