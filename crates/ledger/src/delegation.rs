//! Delegated stake: each validator's pool, delegations as shares of it,
//! rewards through a per-share accumulator, the validator's commission,
//! undelegation through the unbonding period, and the validator set's
//! capped voting power.
//!
//! Nothing here loops over a pool's delegators: a reward raises the pool's
//! `reward_per_share` and a slash lowers its tokens, and each delegation
//! catches up when its owner next touches it. Every division rounds down,
//! so what delegators can claim never exceeds what was paid in.

use idlegrid_types::AccountId;

use crate::apply::{Applied, BlockScope, Failure, bps, credit, debit, nonzero, stake};
use crate::state::{
    Delegation, DelegationUnbonding, Overlay, Pool, UNBONDINGS_MAX, keys, mul_div, mul_div_ceil,
    share_of,
};
use crate::store::{Store, StoreError};
use crate::tx::{Event, Rejection, StakeRole};

/// Fixed-point scale of `Pool::reward_per_share`.
const REWARD_SCALE: u128 = 1 << 64;

pub(crate) fn pool<S: Store>(
    overlay: &Overlay<'_, S>,
    validator: &AccountId,
) -> Result<Pool, StoreError> {
    Ok(overlay.get(&keys::pool(validator))?.unwrap_or_default())
}

pub(crate) fn delegation<S: Store>(
    overlay: &Overlay<'_, S>,
    validator: &AccountId,
    delegator: &AccountId,
) -> Result<Delegation, StoreError> {
    Ok(overlay
        .get(&keys::delegation(validator, delegator))?
        .unwrap_or_default())
}

/// Writes a delegation (and its index entry), or deletes both once it
/// holds nothing.
fn put_delegation<S: Store>(
    overlay: &mut Overlay<'_, S>,
    validator: &AccountId,
    delegator: &AccountId,
    record: &Delegation,
) {
    if record.is_empty() {
        overlay.delete(keys::delegation(validator, delegator));
        overlay.delete(keys::delegated_by(delegator, validator));
    } else {
        overlay.put(keys::delegation(validator, delegator), record);
        overlay.put(keys::delegated_by(delegator, validator), &());
    }
}

fn invariant(what: &str) -> Failure {
    Failure::Invariant(format!("delegation arithmetic: {what}"))
}

/// Brings a delegation's owed rewards up to the pool's accumulator.
pub(crate) fn settle(pool: &Pool, record: &mut Delegation) -> Result<(), Failure> {
    let growth = pool
        .reward_per_share
        .checked_sub(record.reward_index)
        .ok_or_else(|| invariant("a delegation is ahead of its pool"))?;
    if record.shares > 0 && growth > 0 {
        let earned = mul_div(record.shares, growth, REWARD_SCALE)
            .and_then(|earned| u64::try_from(earned).ok())
            .ok_or_else(|| invariant("rewards overflow"))?;
        record.rewards_owed = record
            .rewards_owed
            .checked_add(earned)
            .ok_or_else(|| invariant("owed rewards overflow"))?;
    }
    record.reward_index = pool.reward_per_share;
    Ok(())
}

pub(crate) fn delegate<S: Store>(
    overlay: &mut Overlay<'_, S>,
    delegator: AccountId,
    validator: AccountId,
    amount: u64,
) -> Applied {
    nonzero(amount)?;
    if stake(overlay, StakeRole::Validator, &validator)?.bonded == 0 {
        return Err(Rejection::NotAValidator(validator).into());
    }
    if overlay.get_raw(&keys::jailed(&validator))?.is_some() {
        return Err(Rejection::ValidatorJailed(validator).into());
    }
    debit(overlay, &delegator, amount)?;
    let mut pool = pool(overlay, &validator)?;
    if pool.tokens == 0 && pool.shares > 0 {
        return Err(Rejection::PoolWipedOut(validator).into());
    }
    let shares = if pool.shares == 0 {
        u128::from(amount)
    } else {
        mul_div(u128::from(amount), pool.shares, u128::from(pool.tokens))
            .ok_or(Rejection::PoolFull(validator))?
    };
    if shares == 0 {
        return Err(Rejection::ZeroAmount.into());
    }
    pool.tokens = pool
        .tokens
        .checked_add(amount)
        .ok_or(Rejection::PoolFull(validator))?;
    pool.shares = pool
        .shares
        .checked_add(shares)
        .ok_or(Rejection::PoolFull(validator))?;
    let mut record = delegation(overlay, &validator, &delegator)?;
    settle(&pool, &mut record)?;
    record.shares += shares;
    overlay.put(keys::pool(&validator), &pool);
    put_delegation(overlay, &validator, &delegator, &record);
    Ok(vec![Event::Delegated {
        delegator,
        validator,
        amount,
        shares,
    }])
}

pub(crate) fn undelegate<S: Store>(
    overlay: &mut Overlay<'_, S>,
    scope: &BlockScope<'_>,
    delegator: AccountId,
    validator: AccountId,
    amount: u64,
) -> Applied {
    nonzero(amount)?;
    let mut pool = pool(overlay, &validator)?;
    let mut record = delegation(overlay, &validator, &delegator)?;
    if record.shares == 0 {
        return Err(Rejection::NoDelegation(validator).into());
    }
    if record.unbonding.len() >= UNBONDINGS_MAX {
        return Err(Rejection::TooManyUnbondings {
            limit: UNBONDINGS_MAX,
        }
        .into());
    }
    settle(&pool, &mut record)?;
    let worth = pool.value_of(record.shares);
    // Asking for less than all of it gives up the shares worth at least
    // `amount` (rounded up, so the rounding stays with the pool).
    let (shares, tokens) = if amount >= worth {
        (record.shares, worth)
    } else {
        let shares = mul_div_ceil(u128::from(amount), pool.shares, u128::from(pool.tokens))
            .ok_or_else(|| invariant("shares to undelegate"))?
            .min(record.shares);
        (shares, amount)
    };
    record.shares -= shares;
    pool.shares -= shares;
    pool.tokens = pool
        .tokens
        .checked_sub(tokens)
        .ok_or_else(|| invariant("a pool gave more than it held"))?;
    let release_height = scope.height + scope.params.unbonding_blocks.max(1);
    if tokens > 0 {
        let unbonding_shares = if pool.unbonding_shares == 0 {
            u128::from(tokens)
        } else if pool.unbonding_tokens == 0 {
            return Err(Rejection::PoolWipedOut(validator).into());
        } else {
            mul_div(
                u128::from(tokens),
                pool.unbonding_shares,
                u128::from(pool.unbonding_tokens),
            )
            .ok_or(Rejection::PoolFull(validator))?
        };
        pool.unbonding_tokens = pool
            .unbonding_tokens
            .checked_add(tokens)
            .ok_or(Rejection::PoolFull(validator))?;
        pool.unbonding_shares = pool
            .unbonding_shares
            .checked_add(unbonding_shares)
            .ok_or(Rejection::PoolFull(validator))?;
        record.unbonding.push(DelegationUnbonding {
            release_height,
            shares: unbonding_shares,
        });
        let mut due: Vec<(AccountId, AccountId)> = overlay
            .get(&keys::delegation_release(release_height))?
            .unwrap_or_default();
        if !due.contains(&(validator, delegator)) {
            due.push((validator, delegator));
        }
        overlay.put(keys::delegation_release(release_height), &due);
    }
    overlay.put(keys::pool(&validator), &pool);
    put_delegation(overlay, &validator, &delegator, &record);
    Ok(vec![Event::UndelegationStarted {
        delegator,
        validator,
        amount: tokens,
        release_height,
    }])
}

pub(crate) fn claim_rewards<S: Store>(
    overlay: &mut Overlay<'_, S>,
    delegator: AccountId,
    validator: AccountId,
) -> Applied {
    let mut pool = pool(overlay, &validator)?;
    let mut record = delegation(overlay, &validator, &delegator)?;
    if record.is_empty() {
        return Err(Rejection::NoDelegation(validator).into());
    }
    settle(&pool, &mut record)?;
    let amount = record.rewards_owed;
    if amount == 0 {
        return Err(Rejection::NoRewards(validator).into());
    }
    pool.rewards_unclaimed = pool
        .rewards_unclaimed
        .checked_sub(amount)
        .ok_or_else(|| invariant("a pool owes more rewards than it holds"))?;
    record.rewards_owed = 0;
    overlay.put(keys::pool(&validator), &pool);
    put_delegation(overlay, &validator, &delegator, &record);
    credit(overlay, &delegator, amount)?;
    Ok(vec![Event::RewardsClaimed {
        delegator,
        validator,
        amount,
    }])
}

pub(crate) fn set_commission<S: Store>(
    overlay: &mut Overlay<'_, S>,
    scope: &BlockScope<'_>,
    validator: AccountId,
    commission_bps: u16,
) -> Applied {
    if stake(overlay, StakeRole::Validator, &validator)?.bonded == 0 {
        return Err(Rejection::NotAValidator(validator).into());
    }
    let params = scope.params;
    if commission_bps > params.commission_max_bps {
        return Err(Rejection::CommissionTooHigh {
            requested: commission_bps,
            maximum: params.commission_max_bps,
        }
        .into());
    }
    let mut pool = pool(overlay, &validator)?;
    let epoch = scope.height.saturating_sub(1) / params.epoch_length_blocks;
    if pool.commission_epoch == Some(epoch) {
        return Err(Rejection::CommissionChangedThisEpoch { epoch }.into());
    }
    if commission_bps.abs_diff(pool.commission_bps) > params.commission_change_max_bps {
        return Err(Rejection::CommissionStepTooLarge {
            from: pool.commission_bps,
            to: commission_bps,
            maximum: params.commission_change_max_bps,
        }
        .into());
    }
    pool.commission_bps = commission_bps;
    pool.commission_epoch = Some(epoch);
    overlay.put(keys::pool(&validator), &pool);
    Ok(vec![Event::CommissionSet {
        validator,
        commission_bps,
    }])
}

/// Returns the undelegations that mature at `height` to their owners.
pub(crate) fn release<S: Store>(
    overlay: &mut Overlay<'_, S>,
    height: u64,
) -> Result<Vec<Event>, Failure> {
    let key = keys::delegation_release(height);
    let due: Vec<(AccountId, AccountId)> = overlay.get(&key)?.unwrap_or_default();
    let mut events = Vec::new();
    for (validator, delegator) in due {
        let mut pool = pool(overlay, &validator)?;
        let mut record = delegation(overlay, &validator, &delegator)?;
        let matured: u128 = record
            .unbonding
            .iter()
            .filter(|entry| entry.release_height <= height)
            .map(|entry| entry.shares)
            .sum();
        record
            .unbonding
            .retain(|entry| entry.release_height > height);
        let amount = pool.unbonding_value_of(matured);
        pool.unbonding_shares = pool
            .unbonding_shares
            .checked_sub(matured)
            .ok_or_else(|| invariant("unbonding shares"))?;
        pool.unbonding_tokens -= amount;
        overlay.put(keys::pool(&validator), &pool);
        put_delegation(overlay, &validator, &delegator, &record);
        if amount > 0 {
            credit(overlay, &delegator, amount)?;
            events.push(Event::Undelegated {
                delegator,
                validator,
                amount,
            });
        }
    }
    overlay.delete(key);
    Ok(events)
}

/// What a validator's epoch reward comes to once its delegators have
/// their part.
pub(crate) struct RewardSplit {
    /// Credited to the validator: its own stake's part plus its commission.
    pub to_validator: u64,
    /// Paid into the pool for the delegators.
    pub to_delegators: u64,
    pub commission: u64,
}

/// Splits a validator's reward between its own stake and its pool by
/// their sizes; the pool's part, less the commission, raises the pool's
/// accumulator.
pub(crate) fn share_reward<S: Store>(
    overlay: &mut Overlay<'_, S>,
    validator: &AccountId,
    reward: u64,
) -> Result<RewardSplit, Failure> {
    let mut pool = pool(overlay, validator)?;
    let own = stake(overlay, StakeRole::Validator, validator)?.bonded;
    let all_to_validator = RewardSplit {
        to_validator: reward,
        to_delegators: 0,
        commission: 0,
    };
    if pool.shares == 0 || pool.tokens == 0 {
        return Ok(all_to_validator);
    }
    let delegated_part = share_of(
        reward,
        u128::from(pool.tokens),
        u128::from(own) + u128::from(pool.tokens),
    );
    let commission = bps(delegated_part, pool.commission_bps);
    let net = delegated_part - commission;
    let growth = mul_div(u128::from(net), REWARD_SCALE, pool.shares)
        .ok_or_else(|| invariant("reward growth"))?;
    if net == 0 || growth == 0 {
        return Ok(all_to_validator);
    }
    pool.reward_per_share = pool
        .reward_per_share
        .checked_add(growth)
        .ok_or_else(|| invariant("the reward accumulator overflows"))?;
    pool.rewards_unclaimed = pool
        .rewards_unclaimed
        .checked_add(net)
        .ok_or_else(|| invariant("unclaimed rewards overflow"))?;
    overlay.put(keys::pool(validator), &pool);
    Ok(RewardSplit {
        to_validator: reward - net,
        to_delegators: net,
        commission,
    })
}

/// Takes `fraction_bps` of everything delegated to a validator, bonded and
/// unbonding, in one step; returns the amount taken.
pub(crate) fn slash_pool<S: Store>(
    overlay: &mut Overlay<'_, S>,
    validator: &AccountId,
    fraction_bps: u16,
) -> Result<u64, StoreError> {
    let mut pool = pool(overlay, validator)?;
    let bonded = bps(pool.tokens, fraction_bps);
    let unbonding = bps(pool.unbonding_tokens, fraction_bps);
    if bonded + unbonding == 0 {
        return Ok(0);
    }
    pool.tokens -= bonded;
    pool.unbonding_tokens -= unbonding;
    overlay.put(keys::pool(validator), &pool);
    Ok(bonded + unbonding)
}

/// Each validator's voting power from its stake (listed largest first):
/// no validator's power is above `cap_bps` of the total. The largest are
/// brought down to one level, the highest at which each holds at most the
/// cap; the rest keep their stake. A set too small for the cap to hold
/// (fewer than `10000 / cap_bps` validators: three or fewer at 30 %) is
/// left uncapped, each validator's power its stake.
pub fn capped_powers(stakes: &[u64], cap_bps: u16) -> Vec<u64> {
    let count = stakes.len() as u128;
    let cap = u128::from(cap_bps);
    if count * cap < 10_000 {
        return stakes.to_vec();
    }
    let mut rest: u128 = stakes.iter().map(|stake| u128::from(*stake)).sum();
    for (capped, stake) in stakes.iter().enumerate() {
        let Some(room) = 10_000u128
            .checked_sub(capped as u128 * cap)
            .filter(|room| *room > 0)
        else {
            break;
        };
        // With the first `capped` at `level`, the total is
        // capped × level + rest, and level × 10000 ≤ cap × total.
        let level = rest * cap / room;
        if u128::from(*stake) <= level {
            let level = u64::try_from(level).unwrap_or(u64::MAX);
            let mut powers = vec![level; capped];
            powers.extend_from_slice(&stakes[capped..]);
            return powers;
        }
        rest -= u128::from(*stake);
    }
    // Unreachable when count × cap ≥ 10000 (the last validator always
    // fits its level); uncapped rather than wrong.
    stakes.to_vec()
}

/// A validator's total stake: its own bonded stake and what is delegated
/// to it and bonded.
pub(crate) fn total_stake<S: Store>(
    overlay: &Overlay<'_, S>,
    validator: &AccountId,
    own: u64,
) -> Result<u64, StoreError> {
    Ok(own.saturating_add(pool(overlay, validator)?.tokens))
}
