"""Lifecycle rules of a subscription: cancelling and amending. Plain functions
from a subscription and "now" (the subscription's clock time) to its next
revision; no I/O.

- Current period (for cancelling at period end): the period of the longest
  cadence among the subscription's credit entitlements (YEARLY if any is yearly,
  else MONTHLY; MONTHLY without credit entitlements), anchored at the start
  time; before the start it is the first period.
- Cancel IMMEDIATELY: end_time = now (the start time if it has not started:
  nothing is granted). Cancel AT_PERIOD_END: end_time = the end of the current
  period. A cancel never moves an earlier end_time later.
- Amend: the entitlement's history gains {amount, effective_time} with
  effective_time = the start of the entitlement's next period (its own cadence)
  for NEXT_PERIOD, or now for IMMEDIATELY (at the start time if it has not
  started, which replaces the provisioned amount). Changes at or after that
  instant are replaced by it, so the history stays strictly increasing.
- Periods end at year 9999: a period whose end would fall after it ends at
  9999-12-31T23:59:59.999999Z (cancel at period end), and there is no next
  period after it (amend NEXT_PERIOD: FAILED_PRECONDITION, NO_NEXT_PERIOD). A
  subscription whose first period would not end before year 10000 is refused
  when provisioned (`first_period_end`).
- Neither is allowed once the subscription has ended or was cancelled
  (FAILED_PRECONDITION, SUBSCRIPTION_ENDED), except cancelling immediately a
  subscription cancelled at period end, which ends it sooner.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from datetime import UTC, datetime
from decimal import Decimal

from catalog_service.domain.model import (
    AmendmentTiming,
    AmountChange,
    CancelMode,
    ResolvedCreditEntitlement,
    Subscription,
)
from credit_common.errors import FailedPrecondition
from credit_common.periods import Cadence, period_index_at, period_start


def longest_cadence(subscription: Subscription) -> Cadence:
    cadences = {e.cadence for e in subscription.credit_entitlements}
    return Cadence.YEARLY if Cadence.YEARLY in cadences else Cadence.MONTHLY


END_OF_TIME = datetime.max.replace(tzinfo=UTC)


def _period_start(anchor: datetime, cadence: Cadence, k: int) -> datetime | None:
    """Start of period k (k >= 0), None when it would fall after year 9999 (no such period)."""
    try:
        return period_start(anchor, cadence, k)
    except (ValueError, OverflowError):  # a datetime of year 10000
        return None


def first_period_end(start: datetime, cadence: Cadence) -> datetime | None:
    """End of the first period, None when it would fall after year 9999."""
    return _period_start(start, cadence, 1)


def next_period_start(start: datetime, cadence: Cadence, now: datetime) -> datetime:
    """Start of the period after the one containing `now` (the start itself before it)."""
    following = _period_start(start, cadence, max(period_index_at(start, cadence, now), -1) + 1)
    if following is None:
        raise FailedPrecondition(
            "the current period is the last one: no period starts after it before year 10000",
            reason="NO_NEXT_PERIOD",
        )
    return following


def current_period_end(subscription: Subscription, now: datetime) -> datetime:
    cadence = longest_cadence(subscription)
    k = max(period_index_at(subscription.start_time, cadence, now), 0)
    return _period_start(subscription.start_time, cadence, k + 1) or END_OF_TIME


def _ended(subscription: Subscription, now: datetime) -> FailedPrecondition:
    when = subscription.end_time.isoformat() if subscription.end_time else ""
    return FailedPrecondition(
        f"subscription {subscription.subscription_id!r} has ended or is cancelled (end_time {when})",
        reason="SUBSCRIPTION_ENDED",
        metadata={"subscription_id": subscription.subscription_id, "end_time": when},
    )


def cancel(subscription: Subscription, mode: CancelMode, now: datetime) -> Subscription:
    """The next revision of `subscription` cancelled at `now` in `mode`."""
    if subscription.end_time is not None and subscription.end_time <= now:
        raise _ended(subscription, now)
    immediately = mode is CancelMode.IMMEDIATELY
    end = max(now, subscription.start_time) if immediately else current_period_end(subscription, now)
    if subscription.end_time is not None and subscription.end_time <= end:
        if subscription.cancel_time is not None:
            raise FailedPrecondition(
                f"subscription {subscription.subscription_id!r} is already cancelled to end at "
                f"{subscription.end_time.isoformat()}",
                reason="ALREADY_CANCELLED",
                metadata={
                    "subscription_id": subscription.subscription_id,
                    "end_time": subscription.end_time.isoformat(),
                },
            )
        end = subscription.end_time
    return replace(subscription, end_time=end, cancel_time=now, cancel_mode=mode, revision=subscription.revision + 1)


def _amended(
    entitlement: ResolvedCreditEntitlement, amount: Decimal, start: datetime, timing: AmendmentTiming, now: datetime
) -> ResolvedCreditEntitlement:
    if timing is AmendmentTiming.IMMEDIATELY:
        effective = max(now, start)
    else:
        effective = next_period_start(start, entitlement.cadence, now)
    if effective <= start:
        return replace(entitlement, amount=amount, changes=())
    kept = tuple(c for c in entitlement.changes if c.effective_time < effective)
    return replace(entitlement, changes=(*kept, AmountChange(amount, effective)))


def amend(
    subscription: Subscription, amounts: Mapping[str, Decimal], timing: AmendmentTiming, now: datetime
) -> Subscription:
    """The next revision of `subscription` with the credit entitlements in
    `amounts` (already validated against the plan version) amended."""
    if subscription.cancel_time is not None or (subscription.end_time is not None and subscription.end_time <= now):
        raise _ended(subscription, now)
    entitlements = tuple(
        _amended(e, amounts[e.key], subscription.start_time, timing, now) if e.key in amounts else e
        for e in subscription.credit_entitlements
    )
    return replace(subscription, credit_entitlements=entitlements, revision=subscription.revision + 1)
