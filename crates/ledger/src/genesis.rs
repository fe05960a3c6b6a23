//! Parameters and the genesis file: who owns what at height 0, and the rules.

use std::path::Path;

use borsh::{BorshDeserialize, BorshSerialize};
use idlegrid_types::AccountId;
use serde::Deserialize;

/// The rules of a chain, fixed at genesis.
#[derive(Debug, Clone, PartialEq, Eq, BorshSerialize, BorshDeserialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Params {
    /// Blocks per epoch; rewards are paid and the validator set is taken at
    /// each epoch's last block.
    pub epoch_length_blocks: u64,
    /// New tokens minted per epoch (split among providers by fuel paid and
    /// validators by stake).
    pub emission_per_epoch: u64,
    /// Share of the emission for validators, in basis points.
    pub validator_reward_share_bps: u16,
    /// Blocks between `Unstake` and the stake's return to the balance.
    pub unbonding_blocks: u64,
    /// Share of a provider's stake slashed for a wrong receipt, in basis points.
    pub slash_fraction_bps: u16,
    /// Share of a slash paid to the reporter (the rest is burned), in basis points.
    pub slash_reporter_share_bps: u16,
    /// Locked by a dispute; burned if the dispute is false.
    pub dispute_deposit: u64,
    pub minimum_fee: u64,
    /// The most fuel a job may give a task (a dispute re-executes up to this).
    pub dispute_fuel_max: u64,
    /// The furthest a job's deadline may be, in blocks.
    pub job_deadline_blocks_max: u64,
    /// The most validators an epoch has: those with the most stake (their
    /// own and delegated). At most [`crate::VALIDATORS_MAX`].
    pub validators_max: u32,
    /// The largest share of the set's power one validator may hold, in
    /// basis points (below one third); power above it is not counted.
    pub voting_power_cap_bps: u16,
    /// The highest commission a validator may charge its delegators.
    pub commission_max_bps: u16,
    /// The most a validator's commission may move in one change (one per
    /// epoch).
    pub commission_change_max_bps: u16,
    /// Share of a validator's stake, and of the stake delegated to it,
    /// slashed for signing two conflicting votes, in basis points.
    pub validator_slash_fraction_bps: u16,
    /// Share of the providers that declared a speed challenged each
    /// epoch, in basis points (0: no challenges).
    pub challenge_share_bps: u16,
    /// Passes of each challenge over its 64 MiB: its fuel is
    /// `idlegrid_types::capacity::challenge_fuel(challenge_passes)`.
    pub challenge_passes: u32,
    /// The deadline's slack over the time the declared speed needs, in
    /// basis points of that time.
    pub challenge_slack_bps: u32,
    /// Added to every challenge's deadline for seeing the challenge and
    /// getting the answer into a block.
    pub challenge_round_trip_ms: u64,
    /// Share of agreeing pairs whose answer the validators check anyway,
    /// in basis points, drawn from the state root after the later of the
    /// pair's commitments (which neither knew when it committed): two
    /// colluders agreeing on a wrong answer are caught this often.
    pub challenge_spot_check_bps: u16,
    /// Share of the providers' part of each epoch's emission paid for
    /// proven availability (by the speed each challenge answered right in
    /// the epoch proved), in basis points; the rest pays verified work.
    /// With no such answer in an epoch, all of it pays work.
    pub availability_reward_share_bps: u16,
    /// How long a GPU challenge takes at the GPU speed its provider
    /// declared: its target is set so that the expected fuel of the search
    /// is that speed times this time
    /// (`idlegrid_types::capacity::gpu_challenge_target`).
    pub gpu_challenge_ms: u64,
}

impl Default for Params {
    fn default() -> Self {
        Self {
            epoch_length_blocks: 100,
            emission_per_epoch: 1_000_000,
            validator_reward_share_bps: 2_000,
            unbonding_blocks: 200,
            slash_fraction_bps: 5_000,
            slash_reporter_share_bps: 5_000,
            dispute_deposit: 1_000,
            minimum_fee: 1,
            dispute_fuel_max: 1_000_000_000_000,
            job_deadline_blocks_max: 1_000_000,
            validators_max: 100,
            voting_power_cap_bps: 3_000,
            commission_max_bps: 2_500,
            commission_change_max_bps: 500,
            validator_slash_fraction_bps: 500,
            challenge_share_bps: 10_000,
            challenge_passes: 100,
            challenge_slack_bps: 12_500,
            challenge_round_trip_ms: 2_000,
            challenge_spot_check_bps: 500,
            availability_reward_share_bps: 2_000,
            gpu_challenge_ms: 10_000,
        }
    }
}

/// Why a genesis file is unusable.
#[derive(Debug, thiserror::Error)]
pub enum GenesisError {
    #[error("failed to read genesis file {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("genesis file is malformed: {0}")]
    Malformed(String),
    #[error("genesis account `{0}` is not a did:key")]
    BadAccount(String),
    #[error("genesis lists {0} more than once")]
    Duplicate(AccountId),
    #[error("genesis parameters are invalid: {0}")]
    BadParams(String),
    #[error("the genesis supply overflows")]
    Overflow,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct GenesisFile {
    chain_id: String,
    #[serde(default)]
    params: Params,
    #[serde(default)]
    accounts: Vec<AccountEntry>,
    #[serde(default)]
    validators: Vec<ValidatorEntry>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AccountEntry {
    account: String,
    balance: u64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ValidatorEntry {
    account: String,
    stake: u64,
}

/// The state at height 0.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Genesis {
    pub chain_id: String,
    pub params: Params,
    pub balances: Vec<(AccountId, u64)>,
    pub validators: Vec<(AccountId, u64)>,
}

impl Genesis {
    pub fn from_file(path: &Path) -> Result<Self, GenesisError> {
        let text = std::fs::read_to_string(path).map_err(|source| GenesisError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::from_toml(&text)
    }

    pub fn from_toml(text: &str) -> Result<Self, GenesisError> {
        let file: GenesisFile =
            toml::from_str(text).map_err(|error| GenesisError::Malformed(error.to_string()))?;
        let parse = |text: &str| {
            text.parse::<AccountId>()
                .map_err(|_| GenesisError::BadAccount(text.to_owned()))
        };
        let genesis = Genesis {
            chain_id: file.chain_id,
            params: file.params,
            balances: file
                .accounts
                .iter()
                .map(|entry| Ok((parse(&entry.account)?, entry.balance)))
                .collect::<Result<_, GenesisError>>()?,
            validators: file
                .validators
                .iter()
                .map(|entry| Ok((parse(&entry.account)?, entry.stake)))
                .collect::<Result<_, GenesisError>>()?,
        };
        genesis.validate()?;
        Ok(genesis)
    }

    /// Checks the rules that make a genesis usable.
    pub fn validate(&self) -> Result<(), GenesisError> {
        let params = &self.params;
        if params.epoch_length_blocks == 0 {
            return Err(GenesisError::BadParams(
                "epoch_length_blocks must be above 0".to_owned(),
            ));
        }
        for (bps, name) in [
            (
                params.validator_reward_share_bps,
                "validator_reward_share_bps",
            ),
            (params.slash_fraction_bps, "slash_fraction_bps"),
            (params.slash_reporter_share_bps, "slash_reporter_share_bps"),
            (params.commission_max_bps, "commission_max_bps"),
            (
                params.commission_change_max_bps,
                "commission_change_max_bps",
            ),
            (
                params.availability_reward_share_bps,
                "availability_reward_share_bps",
            ),
        ] {
            if bps > 10_000 {
                return Err(GenesisError::BadParams(format!("{name} is above 10000")));
            }
        }
        // A pool slashed to nothing could not share what is delegated
        // after; below one third, no validator's power alone can halt or
        // fork the chain.
        if params.validator_slash_fraction_bps >= 10_000 {
            return Err(GenesisError::BadParams(
                "validator_slash_fraction_bps must be below 10000".to_owned(),
            ));
        }
        if params.challenge_share_bps > 10_000 {
            return Err(GenesisError::BadParams(
                "challenge_share_bps is above 10000".to_owned(),
            ));
        }
        if params.challenge_passes > idlegrid_types::capacity::CHALLENGE_PASSES_MAX {
            return Err(GenesisError::BadParams(format!(
                "challenge_passes must be at most {}",
                idlegrid_types::capacity::CHALLENGE_PASSES_MAX
            )));
        }
        if params.challenge_spot_check_bps > 10_000 {
            return Err(GenesisError::BadParams(
                "challenge_spot_check_bps is above 10000".to_owned(),
            ));
        }
        if params.challenge_slack_bps < 10_000 || params.challenge_slack_bps > 100_000 {
            return Err(GenesisError::BadParams(
                "challenge_slack_bps must be 10000 to 100000".to_owned(),
            ));
        }
        if params.challenge_round_trip_ms > 600_000 {
            return Err(GenesisError::BadParams(
                "challenge_round_trip_ms must be at most 600000".to_owned(),
            ));
        }
        if params.gpu_challenge_ms == 0 || params.gpu_challenge_ms > 600_000 {
            return Err(GenesisError::BadParams(
                "gpu_challenge_ms must be 1 to 600000".to_owned(),
            ));
        }
        if params.voting_power_cap_bps == 0 || params.voting_power_cap_bps > 3_333 {
            return Err(GenesisError::BadParams(
                "voting_power_cap_bps must be 1 to 3333 (below one third)".to_owned(),
            ));
        }
        if params.validators_max == 0 || params.validators_max as usize > crate::VALIDATORS_MAX {
            return Err(GenesisError::BadParams(format!(
                "validators_max must be 1 to {}",
                crate::VALIDATORS_MAX
            )));
        }
        if self.chain_id.is_empty() || self.chain_id.len() > crate::tx::CHAIN_ID_BYTES_MAX {
            return Err(GenesisError::BadParams(
                "chain_id must be 1 to 64 bytes".to_owned(),
            ));
        }
        for list in [&self.balances, &self.validators] {
            let mut seen = std::collections::BTreeSet::new();
            for (account, _) in list {
                if !seen.insert(*account) {
                    return Err(GenesisError::Duplicate(*account));
                }
            }
        }
        self.supply().ok_or(GenesisError::Overflow)?;
        Ok(())
    }

    /// Everything that exists at height 0: balances plus validator stake.
    pub fn supply(&self) -> Option<u64> {
        self.balances
            .iter()
            .chain(&self.validators)
            .try_fold(0u64, |total, (_, amount)| total.checked_add(*amount))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use idlegrid_types::Keypair;

    fn account(seed: u8) -> String {
        Keypair::from_seed([seed; 32]).account_id().to_string()
    }

    #[test]
    fn parses_a_genesis_file_with_defaults_for_missing_params() {
        let text = format!(
            r#"
            chain_id = "idlegrid-devnet"
            [params]
            epoch_length_blocks = 10
            [[accounts]]
            account = "{}"
            balance = 1000
            [[validators]]
            account = "{}"
            stake = 50
            "#,
            account(1),
            account(2)
        );
        let genesis = Genesis::from_toml(&text).expect("parses");
        assert_eq!(genesis.params.epoch_length_blocks, 10);
        assert_eq!(
            genesis.params.unbonding_blocks,
            Params::default().unbonding_blocks
        );
        assert_eq!(genesis.supply(), Some(1050));
    }

    #[test]
    fn reports_what_is_wrong_with_a_bad_genesis() {
        let cases = [
            ("chain_id = 5".to_owned(), "malformed"),
            (
                "chain_id = \"x\"\n[[accounts]]\naccount = \"bob\"\nbalance = 1".to_owned(),
                "not a did:key",
            ),
            (
                "chain_id = \"x\"\n[params]\nepoch_length_blocks = 0".to_owned(),
                "epoch_length_blocks must be above 0",
            ),
            (
                "chain_id = \"x\"\n[params]\nslash_fraction_bps = 10001".to_owned(),
                "slash_fraction_bps is above 10000",
            ),
            (
                format!(
                    "chain_id = \"x\"\n[[accounts]]\naccount = \"{0}\"\nbalance = 1\n\
                     [[accounts]]\naccount = \"{0}\"\nbalance = 2",
                    account(3)
                ),
                "more than once",
            ),
            (
                format!(
                    "chain_id = \"x\"\n[[accounts]]\naccount = \"{}\"\nbalance = {}\n\
                     [[validators]]\naccount = \"{}\"\nstake = 1",
                    account(3),
                    u64::MAX,
                    account(4)
                ),
                "overflows",
            ),
            (
                "chain_id = \"x\"\n[params]\ncommission_max_bps = 10001".to_owned(),
                "commission_max_bps is above 10000",
            ),
            (
                "chain_id = \"x\"\n[params]\ncommission_change_max_bps = 10001".to_owned(),
                "commission_change_max_bps is above 10000",
            ),
            (
                "chain_id = \"x\"\n[params]\nvalidator_slash_fraction_bps = 10000".to_owned(),
                "validator_slash_fraction_bps must be below 10000",
            ),
            (
                "chain_id = \"x\"\n[params]\nvoting_power_cap_bps = 0".to_owned(),
                "voting_power_cap_bps must be 1 to 3333",
            ),
            (
                "chain_id = \"x\"\n[params]\nvoting_power_cap_bps = 3334".to_owned(),
                "voting_power_cap_bps must be 1 to 3333",
            ),
            (
                "chain_id = \"x\"\n[params]\nvalidators_max = 0".to_owned(),
                "validators_max must be 1 to 100",
            ),
            (
                "chain_id = \"x\"\n[params]\nvalidators_max = 101".to_owned(),
                "validators_max must be 1 to 100",
            ),
        ];
        for (text, expected) in cases {
            let error = Genesis::from_toml(&text).expect_err(&text).to_string();
            assert!(
                error.contains(expected),
                "`{error}` should say `{expected}`"
            );
        }
    }

    #[test]
    fn the_delegation_params_accept_their_limits() {
        let text = "chain_id = \"x\"\n[params]\nvalidators_max = 100\n\
                    voting_power_cap_bps = 3333\ncommission_max_bps = 10000\n\
                    commission_change_max_bps = 10000\nvalidator_slash_fraction_bps = 9999";
        let genesis = Genesis::from_toml(text).expect("the limits themselves are allowed");
        assert_eq!(genesis.params.validators_max, 100);
        assert_eq!(genesis.params.voting_power_cap_bps, 3_333);
        assert_eq!(genesis.params.validator_slash_fraction_bps, 9_999);
        let smallest = "chain_id = \"x\"\n[params]\nvalidators_max = 1\nvoting_power_cap_bps = 1";
        let genesis = Genesis::from_toml(smallest).expect("one validator, a 1 bps cap");
        assert_eq!(genesis.params.validators_max, 1);
        assert_eq!(genesis.params.voting_power_cap_bps, 1);
        // Missing ones take the defaults.
        let genesis = Genesis::from_toml("chain_id = \"x\"").expect("defaults");
        assert_eq!(genesis.params, Params::default());
        genesis.validate().expect("the defaults are valid");
    }
}
