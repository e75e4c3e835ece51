"""Cancelling and amending a subscription (catalog_service.domain.lifecycle), without a database."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from decimal import Decimal

import pytest

from catalog_service.domain.lifecycle import END_OF_TIME, amend, cancel, current_period_end, first_period_end
from catalog_service.domain.model import (
    AmendmentTiming,
    AmountChange,
    Cadence,
    CancelMode,
    CreditEntitlement,
    FeatureEntitlement,
    PlanContent,
    ResolvedCreditEntitlement,
    Subscription,
    VariableValue,
)
from catalog_service.domain.provisioning import amendment_amounts
from credit_common.errors import FailedPrecondition, Violations

START = datetime(2026, 1, 31, 12, tzinfo=UTC)
NEXT, IMMEDIATELY = AmendmentTiming.NEXT_PERIOD, AmendmentTiming.IMMEDIATELY


def utc(*args) -> datetime:
    return datetime(*args, tzinfo=UTC)


def subscription(*cadences: Cadence, end_time: datetime | None = None) -> Subscription:
    return Subscription(
        subscription_id="sub_1",
        customer_key="acme",
        plan_key="enterprise",
        plan_version=1,
        start_time=START,
        end_time=end_time,
        credit_entitlements=tuple(
            ResolvedCreditEntitlement(f"e{i}", "ai", c, Decimal(1000), True) for i, c in enumerate(cadences)
        ),
        feature_entitlements=(),
    )


@pytest.mark.parametrize(
    ("cadences", "now", "end"),
    [
        ((Cadence.MONTHLY,), utc(2026, 2, 15), utc(2026, 2, 28, 12)),  # Jan 31 anchor, clamped to Feb 28
        ((Cadence.MONTHLY,), utc(2026, 2, 28, 12), utc(2026, 3, 31, 12)),  # a boundary starts the next period
        ((Cadence.MONTHLY, Cadence.YEARLY), utc(2026, 2, 15), utc(2027, 1, 31, 12)),  # the longest cadence
        ((), utc(2026, 2, 15), utc(2026, 2, 28, 12)),  # no credit entitlement: monthly
        ((Cadence.MONTHLY,), utc(2025, 12, 1), utc(2026, 2, 28, 12)),  # before the start: the first period
    ],
)
def test_current_period_end(cadences, now, end):
    assert current_period_end(subscription(*cadences), now) == end


def test_cancel_immediately_and_at_period_end():
    now = utc(2026, 3, 10, 8)
    immediately = cancel(subscription(Cadence.MONTHLY), CancelMode.IMMEDIATELY, now)
    assert (immediately.end_time, immediately.cancel_time, immediately.cancel_mode) == (
        now,
        now,
        CancelMode.IMMEDIATELY,
    )
    assert immediately.revision == 2
    at_end = cancel(subscription(Cadence.MONTHLY), CancelMode.AT_PERIOD_END, now)
    assert (at_end.end_time, at_end.cancel_mode, at_end.revision) == (utc(2026, 3, 31, 12), CancelMode.AT_PERIOD_END, 2)
    # cancelling immediately a subscription cancelled at period end ends it sooner
    sooner = cancel(at_end, CancelMode.IMMEDIATELY, utc(2026, 3, 20))
    assert (sooner.end_time, sooner.revision) == (utc(2026, 3, 20), 3)
    # not twice to the same end, and never later
    with pytest.raises(FailedPrecondition) as caught:
        cancel(at_end, CancelMode.AT_PERIOD_END, utc(2026, 3, 20))
    assert caught.value.reason == "ALREADY_CANCELLED"


def test_cancel_before_the_start_grants_nothing_and_an_ended_subscription_cannot_change():
    early = cancel(subscription(Cadence.MONTHLY), CancelMode.IMMEDIATELY, utc(2026, 1, 1))
    assert early.end_time == START
    ended = subscription(Cadence.MONTHLY, end_time=utc(2026, 2, 10))
    for change in (
        lambda: cancel(ended, CancelMode.IMMEDIATELY, utc(2026, 2, 10)),
        lambda: amend(ended, {"e0": Decimal(5)}, NEXT, utc(2026, 2, 11)),
        lambda: amend(early, {"e0": Decimal(5)}, NEXT, utc(2026, 1, 2)),  # cancelled, even if not ended yet
    ):
        with pytest.raises(FailedPrecondition) as caught:
            change()
        assert caught.value.reason == "SUBSCRIPTION_ENDED"


def test_cancel_at_period_end_keeps_an_earlier_provisioned_end():
    sub = subscription(Cadence.MONTHLY, end_time=utc(2026, 2, 20))
    cancelled = cancel(sub, CancelMode.AT_PERIOD_END, utc(2026, 2, 10))
    assert (cancelled.end_time, cancelled.cancel_time) == (utc(2026, 2, 20), utc(2026, 2, 10))


def test_amend_next_period_uses_each_entitlements_own_cadence():
    sub = subscription(Cadence.MONTHLY, Cadence.YEARLY)
    now = utc(2026, 3, 10)
    amended = amend(sub, {"e0": Decimal(2000), "e1": Decimal(3000)}, NEXT, now)
    monthly, yearly = amended.credit_entitlements
    assert monthly.changes == (AmountChange(Decimal(2000), utc(2026, 3, 31, 12)),)
    assert yearly.changes == (AmountChange(Decimal(3000), utc(2027, 1, 31, 12)),)
    assert amended.revision == 2
    assert monthly.amount_at(now) == Decimal(1000)  # in force now: still the old amount
    assert monthly.amount_at(utc(2026, 3, 31, 12)) == Decimal(2000)
    assert monthly.history(START) == (
        AmountChange(Decimal(1000), START),
        AmountChange(Decimal(2000), utc(2026, 3, 31, 12)),
    )


def test_amend_immediately_replaces_later_scheduled_changes():
    sub = amend(subscription(Cadence.MONTHLY), {"e0": Decimal(2000)}, NEXT, utc(2026, 3, 10))
    now = utc(2026, 3, 12, 9, 30)
    amended = amend(sub, {"e0": Decimal(500)}, IMMEDIATELY, now)
    (e,) = amended.credit_entitlements
    assert e.changes == (AmountChange(Decimal(500), now),)  # the change scheduled for Mar 31 is superseded
    assert e.amount_at(now) == Decimal(500) and e.amount_at(utc(2026, 4, 30)) == Decimal(500)
    again = amend(amended, {"e0": Decimal(700)}, NEXT, utc(2026, 3, 20))
    assert again.credit_entitlements[0].changes == (
        AmountChange(Decimal(500), now),
        AmountChange(Decimal(700), utc(2026, 3, 31, 12)),
    )


def test_amend_before_the_start_replaces_the_provisioned_amount():
    amended = amend(subscription(Cadence.MONTHLY), {"e0": Decimal(42)}, IMMEDIATELY, utc(2026, 1, 1))
    (e,) = amended.credit_entitlements
    assert (e.amount, e.changes) == (Decimal(42), ())


CONTENT = PlanContent(
    custom=True,
    credit_entitlements=(
        CreditEntitlement("monthly", "ai", Cadence.MONTHLY, variable=VariableValue(Decimal(100), Decimal(1000))),
        CreditEntitlement("yearly", "ai", Cadence.YEARLY, fixed_amount=Decimal(7)),
    ),
    feature_entitlements=(FeatureEntitlement("seats", "seats", variable=VariableValue(max=Decimal(50))),),
)


def check(values):
    violations = Violations()
    amounts = amendment_amounts(CONTENT, values, violations)
    return amounts, {v.field: v.reason for v in violations}


def test_amendment_values_follow_the_provisioning_rules():
    assert check({"monthly": "250.5"}) == ({"monthly": Decimal("250.5")}, {})
    amounts, problems = check({"monthly": "5000", "yearly": "8", "seats": "3", "ghost": "1"})
    assert amounts == {}
    assert problems == {
        "entitlement_values[monthly]": "OUT_OF_BOUNDS",
        "entitlement_values[yearly]": "NOT_VARIABLE",
        "entitlement_values[seats]": "NOT_AMENDABLE",
        "entitlement_values[ghost]": "UNKNOWN",
    }
    assert check({"monthly": "1e3"})[1] == {"entitlement_values[monthly]": "INVALID_DECIMAL"}
    assert check({"monthly": "-5"})[1] == {"entitlement_values[monthly]": "INVALID_DECIMAL"}
    assert check({})[1] == {"entitlement_values": "REQUIRED"}


def test_replace_keeps_other_entitlements_untouched():
    sub = subscription(Cadence.MONTHLY, Cadence.MONTHLY)
    amended = amend(sub, {"e1": Decimal(9)}, NEXT, utc(2026, 2, 1))
    assert amended.credit_entitlements[0] == sub.credit_entitlements[0]
    assert amended.credit_entitlements[1] == replace(
        sub.credit_entitlements[1], changes=(AmountChange(Decimal(9), utc(2026, 2, 28, 12)),)
    )


def test_periods_end_at_year_9999():
    late = replace(subscription(Cadence.MONTHLY), start_time=utc(9999, 12, 15))
    assert current_period_end(late, utc(2026, 6, 1)) == END_OF_TIME
    assert cancel(late, CancelMode.AT_PERIOD_END, utc(2026, 6, 1)).end_time == END_OF_TIME
    assert first_period_end(utc(9999, 12, 15), Cadence.MONTHLY) is None
    assert first_period_end(utc(9999, 1, 15), Cadence.YEARLY) is None
    assert first_period_end(utc(9999, 11, 30), Cadence.MONTHLY) == utc(9999, 12, 30)
