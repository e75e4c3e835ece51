"""Schedules (amendments, end time) and balances (burn-down order, allocation), without a database."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from credit_common.periods import Cadence, period_start
from grant_service.domain.balances import GrantView, InsufficientCredits, allocate, available
from grant_service.domain.schedules import GrantSegment, Schedule, ScheduledAmount


def utc(*args) -> datetime:
    return datetime(*args, tzinfo=UTC)


A = utc(2025, 1, 31, 10)


def test_plain_period_is_one_segment():
    schedule = Schedule(A, Cadence.MONTHLY, (ScheduledAmount(Decimal(100), A),))
    assert schedule.segments(1) == [GrantSegment(1, 0, Decimal(100), utc(2025, 2, 28, 10), utc(2025, 3, 31, 10))]


def test_amendment_inside_a_period_splits_it_and_applies_to_later_periods():
    amend = utc(2025, 3, 10)
    schedule = Schedule(A, Cadence.MONTHLY, (ScheduledAmount(Decimal(100), A), ScheduledAmount(Decimal(250), amend)))
    assert schedule.segments(2 - 1) == [
        GrantSegment(1, 0, Decimal(100), utc(2025, 2, 28, 10), amend),
        GrantSegment(1, 1, Decimal(250), amend, utc(2025, 3, 31, 10)),
    ]
    assert [s.amount for s in schedule.segments(2)] == [Decimal(250)]
    assert schedule.periods_touched_by_changes() == {1}


def test_amendment_at_a_boundary_does_not_split():
    schedule = Schedule(
        A, Cadence.MONTHLY, (ScheduledAmount(Decimal(100), A), ScheduledAmount(Decimal(7), utc(2025, 2, 28, 10)))
    )
    assert [(s.amount, s.segment) for s in schedule.segments(0)] == [(Decimal(100), 0)]
    assert [(s.amount, s.segment) for s in schedule.segments(1)] == [(Decimal(7), 0)]


def test_end_time_cuts_the_active_period_and_stops_later_ones():
    end = utc(2025, 3, 15)
    schedule = Schedule(A, Cadence.MONTHLY, (ScheduledAmount(Decimal(100), A),), end_time=end)
    assert schedule.segments(1)[0].expire_time == end
    assert schedule.segments(2) == []
    assert not schedule.has_period(2) and schedule.has_period(1)
    at_boundary = Schedule(A, Cadence.MONTHLY, (ScheduledAmount(Decimal(100), A),), end_time=utc(2025, 2, 28, 10))
    assert at_boundary.segments(1) == [] and at_boundary.segments(0)[0].expire_time == utc(2025, 2, 28, 10)


def grant(gid, remaining, priority=100, expire=None, effective=A):
    return GrantView(gid, Decimal(remaining), Decimal(0), priority, effective, expire, None, "c", "ai-credits", None)


def test_burn_order_priority_then_soonest_expiry_never_last_then_oldest():
    t = utc(2025, 2, 1)
    grants = [
        grant("never", 10),
        grant("late", 10, expire=utc(2025, 6, 1)),
        grant("soon", 10, expire=utc(2025, 3, 1)),
        grant("vip", 10, priority=5, expire=utc(2025, 9, 1)),
        grant("older-never", 10, effective=utc(2024, 1, 1)),
    ]
    taken, before = allocate(grants, Decimal(45), t)
    assert before == 50
    assert [(grant.grant_id, amount) for grant, amount in taken] == [
        ("vip", Decimal(10)),
        ("soon", Decimal(10)),
        ("late", Decimal(10)),
        ("older-never", Decimal(10)),
        ("never", Decimal(5)),
    ]


def test_insufficient_takes_nothing_and_reports_available():
    with pytest.raises(InsufficientCredits) as error:
        allocate([grant("a", "1.5"), grant("b", 2, expire=utc(2025, 1, 31, 11))], Decimal(3), utc(2025, 2, 1))
    assert error.value.available == Decimal("1.5") and error.value.required == Decimal(3)


def test_active_window_is_half_open_and_void_counts():
    g = GrantView("g", Decimal(5), Decimal(2), 100, A, utc(2025, 2, 28, 10), utc(2025, 2, 10), "c", "ai-credits", None)
    assert available([g], A) == Decimal(3)
    assert available([g], utc(2025, 2, 10)) == 0
    assert available([g], A.replace(hour=9)) == 0


@given(
    st.lists(st.integers(1, 400 * 24), min_size=0, max_size=6, unique=True),
    st.one_of(st.none(), st.integers(1, 400 * 24)),
    st.integers(0, 12),
)
def test_segments_tile_each_period_and_carry_the_amount_in_force(change_hours, end_hours, k):
    amounts = [ScheduledAmount(Decimal(1), A)] + [
        ScheduledAmount(Decimal(i + 2), A + timedelta(hours=h)) for i, h in enumerate(sorted(change_hours))
    ]
    end = A + timedelta(hours=end_hours) if end_hours is not None else None
    schedule = Schedule(A, Cadence.MONTHLY, tuple(amounts), end)
    segments = schedule.segments(k)
    start, stop = period_start(A, Cadence.MONTHLY, k), period_start(A, Cadence.MONTHLY, k + 1)
    if end is not None and start >= end:
        assert segments == []
        return
    limit = min(stop, end) if end is not None else stop
    assert segments[0].effective_time == start and segments[-1].expire_time == limit
    for i, (a, b) in enumerate(itertools.pairwise(segments)):
        assert a.expire_time == b.effective_time and a.segment == i
    for segment in segments:
        assert segment.effective_time < segment.expire_time
        assert segment.amount == schedule.amount_at(segment.effective_time)
