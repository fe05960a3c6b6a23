//! What a run is configured with: the devices' strategies and the
//! [`SimConfig`].

use idlegrid_market::{Policy, Trust};
use idlegrid_types::ChallengeRules;

/// How a device answers the tasks it is given.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Strategy {
    Honest,
    /// Every output is wrong (and different from everyone else's).
    AlwaysWrong,
    /// One output in ten is wrong, at random.
    RandomWrong,
    /// The same output for every task, like every other device of this kind.
    ConstantOutput,
    /// Wrong outputs agreed with a partner device, so that the two match.
    Colluding,
}

impl Strategy {
    /// The cheating strategies, in the order cheaters are dealt them.
    pub const CHEATING: [Strategy; 4] = [
        Strategy::AlwaysWrong,
        Strategy::RandomWrong,
        Strategy::ConstantOutput,
        Strategy::Colluding,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Strategy::Honest => "honest",
            Strategy::AlwaysWrong => "always_wrong",
            Strategy::RandomWrong => "random_wrong",
            Strategy::ConstantOutput => "constant_output",
            Strategy::Colluding => "colluding",
        }
    }

    pub fn parse(name: &str) -> Option<Strategy> {
        [Strategy::Honest]
            .into_iter()
            .chain(Strategy::CHEATING)
            .find(|strategy| strategy.name() == name)
    }
}

/// Everything a run depends on. The same configuration gives the same run.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SimConfig {
    pub seed: u64,
    pub devices: u32,
    /// Tasks per job.
    pub tasks: u64,
    /// Jobs submitted one after another by the same requestor; trust that
    /// providers earn in one job carries into the next.
    pub jobs: u32,
    #[serde(skip)]
    pub policy: Policy,
    /// The adaptive policy's knobs.
    #[serde(skip)]
    pub trust: Trust,
    /// Share of devices that cheat, dealt the strategies in `cheat_with` in turn.
    pub cheater_fraction: f64,
    pub cheat_with: Vec<Strategy>,
    /// Mean fuel of one task; each task's fuel is spread ±50% around it.
    pub task_fuel: u64,
    /// Median device speed in fuel per second; devices spread 1/4× to 4×.
    pub median_speed: u64,
    /// Share of devices slowed down by `slow_factor` (a second population).
    pub slow_fraction: f64,
    pub slow_factor: u64,
    /// One-way latency between a device and the requestor, drawn per device.
    pub latency_ms: (u64, u64),
    /// Mean online and offline time of a device; 0 online means no churn.
    pub session_mean_ms: u64,
    pub offline_mean_ms: u64,
    /// Share of departures that are crashes (silent) rather than goodbyes.
    pub crash_fraction: f64,
    /// How long a crashed device's connection takes to be declared lost.
    pub crash_detect_ms: u64,
    /// Share of tasks a device fails to run (host error, not fraud).
    pub failure_fraction: f64,
    /// Time from fraud evidence to the stake being slashed on the ledger;
    /// also how long a dispute takes to give a verdict.
    pub dispute_delay_ms: u64,
    /// Tasks of at most this much fuel the requestor re-executes itself
    /// when their results disagree (at `median_speed`, holding the output);
    /// above it the ledger re-executes through a dispute, and a provider
    /// must still produce the output.
    pub referee_fuel_max: u64,
    /// Job budget as a multiple of one assignment's cost per task.
    pub budget_factor: f64,
    pub price_per_million_fuel: u64,
    /// Each honest device's bonded stake (a slash takes half).
    pub stake: u64,
    pub tick_ms: u64,
    pub sample_ms: u64,
    /// Simulated time after which the run stops, finished or not.
    pub time_limit_ms: u64,
    /// A capacity-challenge epoch every this long (0: no challenges).
    pub challenge_epoch_ms: u64,
    /// Share of devices each epoch challenges, in basis points.
    pub challenge_share_bps: u32,
    /// Fuel of one challenge.
    pub challenge_fuel: u64,
    /// A challenge's deadline over the time the offered speed needs, in
    /// basis points (12,500: 1.25×), plus `challenge_round_trip_ms`.
    pub challenge_slack_bps: u32,
    pub challenge_round_trip_ms: u64,
    /// Share of devices that offer `claim_factor` times the speed they
    /// have.
    pub capacity_liar_fraction: f64,
    pub claim_factor: f64,
    /// How much slower than its benchmark a device may compute a challenge
    /// (its owner's load, heat): each time, a speed drawn from
    /// (1 − speed_noise, 1] of it.
    pub speed_noise: f64,
}

impl Default for SimConfig {
    fn default() -> Self {
        Self {
            seed: 1,
            devices: 1_000,
            tasks: 10_000,
            jobs: 1,
            policy: Policy::Adaptive,
            trust: Trust::default(),
            cheater_fraction: 0.05,
            cheat_with: Strategy::CHEATING.to_vec(),
            task_fuel: 2_000_000_000,
            median_speed: 1_000_000_000,
            slow_fraction: 0.0,
            slow_factor: 10,
            latency_ms: (10, 150),
            session_mean_ms: 30 * 60_000,
            offline_mean_ms: 10 * 60_000,
            crash_fraction: 0.5,
            crash_detect_ms: 10_000,
            failure_fraction: 0.001,
            dispute_delay_ms: 5_000,
            referee_fuel_max: u64::MAX,
            budget_factor: 4.0,
            price_per_million_fuel: 10,
            stake: 10_000_000,
            tick_ms: 250,
            sample_ms: 500,
            time_limit_ms: 24 * 3_600_000,
            challenge_epoch_ms: 0,
            challenge_share_bps: ChallengeRules::default().share_bps,
            challenge_fuel: ChallengeRules::default().fuel,
            challenge_slack_bps: ChallengeRules::default().slack_bps,
            challenge_round_trip_ms: ChallengeRules::default().round_trip_ms,
            capacity_liar_fraction: 0.0,
            claim_factor: 2.0,
            speed_noise: 0.1,
        }
    }
}
