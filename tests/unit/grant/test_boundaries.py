"""Period boundaries (issue 13, docs/grant-semantics.md), without a database: a change applied to
grants already issued (withdrawal, cut, void then change, pending grants), late changes clamped to
now, and the end of representable time."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

from credit_common.periods import MAX_INSTANT, Cadence, period_index_at, period_start, period_start_or_none
from grant_service.domain.balances import RECURRING_PRIORITY
from grant_service.domain.clocks import REAL_TIME
from grant_service.domain.model import Grant, GrantSource
from grant_service.domain.reconciliation import reconcile
from grant_service.domain.schedules import (
    GrantSegment,
    Pending,
    Schedule,
    ScheduledAmount,
    clamp_amounts,
    clamp_end,
    first_period_fits,
)


def utc(*args) -> datetime:
    return datetime(*args, tzinfo=UTC)


A = utc(2024, 1, 31, 12)  # the issue's anchor: period 1 starts 2024-02-29T12:00
P1, P2 = utc(2024, 2, 29, 12), utc(2024, 3, 31, 12)


def amounts(*pairs) -> tuple[ScheduledAmount, ...]:
    return tuple(ScheduledAmount(Decimal(a), t) for a, t in pairs)


def issued(grant_id, k, seg, amount, start, end, *, opened=True, closed=False, void=None, debited=False):
    """A recurring grant as stored: segment `seg` of period `k`."""
    return Grant(
        grant_id=grant_id,
        customer_key="c1",
        currency_key="ai-credits",
        clock_key=REAL_TIME,
        source=GrantSource.RECURRING,
        subscription_id="sub_1",
        entitlement_key="monthly",
        period_index=k,
        amount=Decimal(amount),
        effective_time=start,
        expire_time=end,
        priority=RECURRING_PRIORITY,
        void_time=void,
        reason="",
        schedule_id="sch_1",
        segment=seg,
        used=Decimal(1) if debited else Decimal(0),
        closed=closed,
        opens_at=None if opened else start,
    )


def test_amount_changed_exactly_at_an_issued_period_start_withdraws_its_grant():
    schedule = Schedule(A, Cadence.MONTHLY, amounts(("100", A), ("200", P1)))
    plan = reconcile(schedule, [issued("g1", 1, 0, "100", P1, P2)], [1], P1)
    assert plan.withdrawn == ["g1"] and plan.expiries == {}
    assert plan.issue == [GrantSegment(1, 0, Decimal(200), P1, P2)]


def test_a_debited_grant_is_cut_to_zero_length_not_withdrawn_and_its_replacement_gets_a_free_segment():
    schedule = Schedule(A, Cadence.MONTHLY, amounts(("100", A), ("200", P1)))
    plan = reconcile(schedule, [issued("g1", 1, 0, "100", P1, P2, debited=True)], [1], P1)
    assert plan.withdrawn == [] and plan.expiries == {"g1": P1}
    assert plan.issue == [GrantSegment(1, 1, Decimal(200), P1, P2)]


def test_cancel_exactly_at_an_issued_period_start_leaves_nothing_in_that_period():
    schedule = Schedule(A, Cadence.MONTHLY, amounts(("100", A)), end_time=P1)
    plan = reconcile(schedule, [issued("g1", 1, 0, "100", P1, P2)], [1], P1)
    assert plan.withdrawn == ["g1"] and plan.issue == []


def test_cancel_inside_a_period_cuts_the_open_grant_at_now():
    now = P1 + timedelta(days=3)
    schedule = Schedule(A, Cadence.MONTHLY, amounts(("100", A)), end_time=now)
    plan = reconcile(schedule, [issued("g1", 1, 0, "100", P1, P2)], [1], now)
    assert plan.expiries == {"g1": now} and plan.withdrawn == [] and plan.issue == []


def test_after_a_void_a_later_change_issues_the_new_amount_to_the_period_end():
    void, now = P1 + timedelta(days=2), P1 + timedelta(days=5)
    schedule = Schedule(A, Cadence.MONTHLY, amounts(("100", A), ("300", now)))
    voided = issued("g1", 1, 0, "100", P1, P2, closed=True, void=void)
    plan = reconcile(schedule, [voided], [1], now)
    assert plan.issue == [GrantSegment(1, 1, Decimal(300), now, P2)]
    # Without a change, nothing more is issued for the rest of the period.
    unchanged = Schedule(A, Cadence.MONTHLY, amounts(("100", A)))
    assert reconcile(unchanged, [voided], [1], now).issue == []


def test_a_grant_voided_the_instant_it_started_is_not_issued_again_by_a_later_revision():
    voided = issued("g1", 1, 0, "100", P1, P2, closed=True, void=P1)
    # A change ahead (next period) changes nothing now: the voided credits do not come back.
    ahead = Schedule(A, Cadence.MONTHLY, amounts(("100", A), ("100", P2)))
    assert reconcile(ahead, [voided], [1], P1).issue == []
    # A cancel a day later issues no backdated grant of the voided segment either.
    now = P1 + timedelta(days=1)
    cancelled = Schedule(A, Cadence.MONTHLY, amounts(("100", A)), end_time=now)
    assert reconcile(cancelled, [voided], [1], now).issue == []
    # A new amount at the void instant is a change: it is issued.
    changed = Schedule(A, Cadence.MONTHLY, amounts(("100", A), ("200", P1)))
    assert reconcile(changed, [voided], [1], P1).issue == [GrantSegment(1, 1, Decimal(200), P1, P2)]


def test_pending_grants_are_rederived_freely():
    now, later = P1 + timedelta(days=1), P1 + timedelta(days=10)
    pending = issued("g2", 1, 1, "300", later, P2, opened=False)
    current = issued("g1", 1, 0, "100", P1, later)
    # The future change is dropped: the open grant runs to the period end again, the pending one goes.
    plan = reconcile(Schedule(A, Cadence.MONTHLY, amounts(("100", A))), [current, pending], [1], now)
    assert plan.dropped == ["g2"] and plan.expiries == {"g1": P2} and plan.issue == []
    # The same future change again: nothing to do.
    same = Schedule(A, Cadence.MONTHLY, amounts(("100", A), ("300", later)))
    plan = reconcile(same, [current, pending], [1], now)
    assert plan.dropped == [] and plan.expiries == {} and plan.issue == []
    # Another amount at that instant: replaced.
    other = Schedule(A, Cadence.MONTHLY, amounts(("100", A), ("400", later)))
    plan = reconcile(other, [current, pending], [1], now)
    assert plan.dropped == ["g2"] and plan.issue == [GrantSegment(1, 1, Decimal(400), later, P2)]


def test_closed_history_never_changes():
    now = P1 + timedelta(days=1)
    schedule = Schedule(A, Cadence.MONTHLY, amounts(("100", A), ("999", now)))
    past = issued("g0", 0, 0, "100", A, P1, closed=True)
    plan = reconcile(schedule, [past, issued("g1", 1, 0, "100", P1, P2)], [0, 1], now)
    assert "g0" not in plan.expiries and plan.withdrawn == []
    assert plan.expiries == {"g1": now} and plan.issue == [GrantSegment(1, 1, Decimal(999), now, P2)]


def test_a_late_amount_is_clamped_to_now_and_reported():
    now = P1 + timedelta(days=3)
    stored = amounts(("100", A))
    applied, late = clamp_amounts(stored, amounts(("100", A), ("200", P1)), now)
    assert late == P1 and applied == amounts(("100", A), ("200", now))
    # Dated exactly now or later: applied as dated, nothing reported.
    assert clamp_amounts(stored, amounts(("100", A), ("200", now)), now) == (amounts(("100", A), ("200", now)), None)
    later = now + timedelta(days=1)
    assert clamp_amounts(stored, amounts(("100", A), ("200", later)), now)[1] is None
    # Dated before now but later amounts kept as dated.
    applied, late = clamp_amounts(stored, amounts(("100", A), ("200", P1), ("300", later)), now)
    assert late == P1 and applied == amounts(("100", A), ("200", now), ("300", later))
    # The same history sent again is no change.
    history = amounts(("100", A), ("200", P1))
    assert clamp_amounts(history, history, now) == (history, None)
    # A past change withdrawn by the revision: the stored past stays, the requested value applies from now.
    applied, late = clamp_amounts(history, stored, now)
    assert late == P1 and applied == amounts(("100", A), ("200", P1), ("100", now))


def test_a_late_end_time_is_clamped_to_now_and_an_ended_subscription_keeps_its_end():
    now = P1 + timedelta(days=3)
    assert clamp_end(None, P1, now) == (now, True)
    assert clamp_end(None, now, now) == (now, False)
    assert clamp_end(None, P2, now) == (P2, False)
    assert clamp_end(P2, None, now) == (None, False)
    assert clamp_end(P1, None, now) == (P1, True)  # already ended: not revived
    assert clamp_end(P1, P2, now) == (P1, True)
    assert clamp_end(P1, P1, now) == (P1, False)


def test_periods_past_year_9999_do_not_exist():
    anchor = utc(9999, 10, 31, 12)
    schedule = Schedule(anchor, Cadence.MONTHLY, amounts(("5", anchor)))
    assert period_start_or_none(anchor, Cadence.MONTHLY, 2) == utc(9999, 12, 31, 12)
    assert period_start_or_none(anchor, Cadence.MONTHLY, 3) is None
    assert schedule.has_period(2) and not schedule.has_period(3)
    # The last period is cut at the end of representable time.
    assert schedule.segments(2) == [GrantSegment(2, 0, Decimal(5), utc(9999, 12, 31, 12), MAX_INSTANT)]
    assert schedule.segments(3) == []
    assert period_index_at(anchor, Cadence.MONTHLY, MAX_INSTANT) == 2
    assert first_period_fits(anchor, Cadence.MONTHLY)
    assert not first_period_fits(utc(9999, 12, 1), Cadence.MONTHLY)
    assert not first_period_fits(utc(9999, 1, 1), Cadence.YEARLY)
    assert first_period_fits(utc(9998, 12, 31), Cadence.YEARLY)
    assert period_start(utc(2024, 1, 31), Cadence.MONTHLY, 1) == utc(2024, 2, 29)


def test_a_pending_grant_makes_the_customer_due_at_its_effective_time():
    t = utc(2024, 5, 1)
    pending = Pending(None, None, t)
    assert not pending.due(t - timedelta(microseconds=1))
    assert pending.due(t) and pending.issue_due(t)


def test_a_stored_schedule_whose_first_period_would_end_after_year_9999_still_reads():
    """Rejected up front now, but a row stored earlier must never break the catch-up or a read."""
    anchor = utc(9999, 12, 15)
    schedule = Schedule(anchor, Cadence.MONTHLY, amounts(("5", anchor)), end_time=None)
    assert schedule.segments(0) == [GrantSegment(0, 0, Decimal(5), anchor, MAX_INSTANT)]
    assert not schedule.has_period(1) and schedule.period_start(1) is None
    assert schedule.period_at(MAX_INSTANT) == 0
