//! Delegated stake as the API shows it: the validators with their own and
//! delegated stake, commission, power and uptime (`GET /v1/validators`), and an
//! account's delegations with the rewards each has earned
//! (`GET /v1/accounts/{account}/delegations`).

use axum::Json;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use idlegrid_ledger::{StakeRole, Store};
use serde::Serialize;
use utoipa::ToSchema;

use crate::error::{ApiError, ErrorBody, ledger_unavailable};
use crate::handlers::{UnbondingView, parse_account, segment};
use crate::state::{ApiState, with_node};

/// The most delegations one answer lists.
pub const DELEGATIONS_LISTED_MAX: usize = 1_000;

#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct ValidatorEntry {
    account: String,
    /// The validator's own bonded stake.
    own_stake: u64,
    /// Stake delegated to it and bonded.
    delegated: u64,
    /// Stake its delegators are unbonding (still slashable).
    delegated_unbonding: u64,
    /// Accounts that delegate to it.
    delegators: u64,
    /// Its share of its delegators' rewards, in basis points.
    commission_bps: u16,
    /// Its voting power in the current epoch (0: not in the set).
    power: u64,
    /// Whether it is in the current epoch's validator set.
    in_set: bool,
    /// The epoch of its first proven consensus fault: it is in no set
    /// after it, and takes no delegations.
    jailed_since: Option<u64>,
    /// Of the latest finalizations this node saw (up to 1,000) made while
    /// it was in the set, how many certificates carry its signature (a
    /// certificate holds a quorum's, so one that is up may still be
    /// missing from some).
    finalizations_signed: u64,
    finalizations_in_set: u64,
}

#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct ValidatorsView {
    /// The epoch of the next block.
    epoch: u64,
    /// The largest share of the set's power one validator may hold.
    voting_power_cap_bps: u16,
    /// Accounts with validator stake and the current set's members, most
    /// power first, then most total stake.
    validators: Vec<ValidatorEntry>,
}

/// The validators: own and delegated stake, delegators, commission, and
/// power in the current epoch's set.
#[utoipa::path(
    get,
    path = "/v1/validators",
    tag = "ledger",
    responses(
        (status = 200, description = "The validators", body = ValidatorsView),
        (status = 500, description = "The request failed inside the node (`internal`)", body = ErrorBody),
        (status = 503, description = "The node cannot answer now (`unavailable`)", body = ErrorBody),
    )
)]
pub(crate) async fn validators<S: Store + Send + 'static>(
    State(state): State<ApiState<S>>,
) -> Result<Json<ValidatorsView>, ApiError> {
    let view = with_node(&state, |node| {
        let ledger = node.ledger();
        let epoch = ledger.epoch_of(ledger.height() + 1);
        let set = ledger
            .validator_set(epoch)
            .map_err(ledger_unavailable)?
            .unwrap_or_default();
        let mut accounts: Vec<_> = ledger
            .validators()
            .map_err(ledger_unavailable)?
            .into_iter()
            .map(|(account, _)| account)
            .collect();
        accounts.extend(set.iter().map(|(account, _)| *account));
        accounts.sort();
        accounts.dedup();
        let mut validators = Vec::with_capacity(accounts.len());
        let set_of = |epoch: u64| {
            ledger
                .validator_set(epoch)
                .ok()
                .flatten()
                .map(|set| set.into_iter().map(|(account, _)| account).collect())
        };
        for account in accounts {
            let (finalizations_signed, finalizations_in_set) = node.uptime.of(&account, set_of);
            let pool = ledger.pool(&account).map_err(ledger_unavailable)?;
            let own = ledger
                .stake(StakeRole::Validator, &account)
                .map_err(ledger_unavailable)?
                .bonded;
            let power = set
                .iter()
                .find(|(member, _)| *member == account)
                .map(|(_, power)| *power);
            validators.push(ValidatorEntry {
                account: account.to_string(),
                own_stake: own,
                delegated: pool.tokens,
                delegated_unbonding: pool.unbonding_tokens,
                delegators: ledger
                    .delegator_count(&account)
                    .map_err(ledger_unavailable)? as u64,
                commission_bps: pool.commission_bps,
                power: power.unwrap_or(0),
                in_set: power.is_some(),
                jailed_since: ledger.jailed_since(&account).map_err(ledger_unavailable)?,
                finalizations_signed,
                finalizations_in_set,
            });
        }
        validators.sort_by(|a, b| {
            (b.power, b.own_stake + b.delegated).cmp(&(a.power, a.own_stake + a.delegated))
        });
        Ok(ValidatorsView {
            epoch,
            voting_power_cap_bps: ledger.params().voting_power_cap_bps,
            validators,
        })
    })
    .await?;
    Ok(Json(view))
}

#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct DelegationView {
    validator: String,
    /// What the bonded shares are worth now.
    stake: u64,
    /// Shares of the validator's pool (a decimal string: they may exceed
    /// 2^53).
    shares: String,
    /// Rewards earned and not yet claimed.
    rewards: u64,
    /// Undelegations waiting for release, at what they are worth now.
    unbonding: Vec<UnbondingView>,
}

#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct DelegationsView {
    account: String,
    /// Up to 1,000 delegations, by validator.
    delegations: Vec<DelegationView>,
    /// Rewards earned across them, not yet claimed.
    rewards_total: u64,
}

/// An account's delegations: stake, shares, unclaimed rewards and
/// undelegations in progress, per validator.
#[utoipa::path(
    get,
    path = "/v1/accounts/{account}/delegations",
    tag = "ledger",
    params(("account" = String, Path, description = "The account (`did:key:z6Mk…`)")),
    responses(
        (status = 200, description = "The delegations", body = DelegationsView),
        (status = 400, description = "Not an account id (`malformed_account`, `malformed_path`)", body = ErrorBody),
        (status = 500, description = "The request failed inside the node (`internal`)", body = ErrorBody),
        (status = 503, description = "The node cannot answer now (`unavailable`)", body = ErrorBody),
    )
)]
pub(crate) async fn delegations<S: Store + Send + 'static>(
    State(state): State<ApiState<S>>,
    path: Result<Path<String>, PathRejection>,
) -> Result<Json<DelegationsView>, ApiError> {
    let id = parse_account(&segment(path)?)?;
    let view = with_node(&state, move |node| {
        let ledger = node.ledger();
        let mut delegations = Vec::new();
        for (validator, record) in ledger
            .delegations_of(&id)
            .map_err(ledger_unavailable)?
            .into_iter()
            .take(DELEGATIONS_LISTED_MAX)
        {
            let pool = ledger.pool(&validator).map_err(ledger_unavailable)?;
            delegations.push(DelegationView {
                validator: validator.to_string(),
                stake: pool.value_of(record.shares),
                shares: record.shares.to_string(),
                rewards: record.rewards_owed,
                unbonding: record
                    .unbonding
                    .iter()
                    .map(|entry| UnbondingView {
                        amount: pool.unbonding_value_of(entry.shares),
                        release_height: entry.release_height,
                    })
                    .collect(),
            });
        }
        let rewards_total = delegations
            .iter()
            .map(|delegation| delegation.rewards)
            .fold(0u64, u64::saturating_add);
        Ok(DelegationsView {
            account: id.to_string(),
            delegations,
            rewards_total,
        })
    })
    .await?;
    Ok(Json(view))
}
