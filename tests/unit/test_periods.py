"""Period math: unit cases from the domain reference and properties over 1970-2100."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from credit_common.periods import Cadence, period_index_at, period_start

MONTHLY, YEARLY = Cadence.MONTHLY, Cadence.YEARLY


def utc(*args) -> datetime:
    return datetime(*args, tzinfo=UTC)


def test_month_end_anchor_is_clamped_and_returns_to_31():
    anchor = utc(2025, 1, 31, 10)
    starts = [period_start(anchor, MONTHLY, k) for k in range(5)]
    assert starts == [
        utc(2025, 1, 31, 10),
        utc(2025, 2, 28, 10),
        utc(2025, 3, 31, 10),
        utc(2025, 4, 30, 10),
        utc(2025, 5, 31, 10),
    ]


def test_leap_year_february():
    assert period_start(utc(2024, 1, 31, 10), MONTHLY, 1) == utc(2024, 2, 29, 10)
    assert period_start(utc(2024, 1, 30), MONTHLY, 1) == utc(2024, 2, 29)
    assert period_start(utc(2024, 1, 29), MONTHLY, 1) == utc(2024, 2, 29)


def test_yearly_feb_29():
    anchor = utc(2024, 2, 29, 8, 30)
    assert [period_start(anchor, YEARLY, k) for k in range(1, 5)] == [
        utc(2025, 2, 28, 8, 30),
        utc(2026, 2, 28, 8, 30),
        utc(2027, 2, 28, 8, 30),
        utc(2028, 2, 29, 8, 30),
    ]


def test_index_at_boundaries():
    anchor = utc(2025, 1, 31, 10)
    assert period_index_at(anchor, MONTHLY, anchor - timedelta(microseconds=1)) == -1
    assert period_index_at(anchor, MONTHLY, anchor) == 0
    assert period_index_at(anchor, MONTHLY, utc(2025, 2, 28, 9, 59, 59)) == 0
    assert period_index_at(anchor, MONTHLY, utc(2025, 2, 28, 10)) == 1
    assert period_index_at(anchor, MONTHLY, utc(2025, 3, 30, 23)) == 1
    assert period_index_at(anchor, MONTHLY, utc(2025, 3, 31, 10)) == 2
    assert period_index_at(utc(2024, 2, 29), YEARLY, utc(2025, 2, 27)) == 0
    assert period_index_at(utc(2024, 2, 29), YEARLY, utc(2025, 2, 28)) == 1


def test_negative_index_rejected():
    with pytest.raises(ValueError):
        period_start(utc(2025, 1, 1), MONTHLY, -1)


def _independent_start(anchor: datetime, months: int) -> datetime:
    """Walk month by month over a calendar table (a different computation from the code under test)."""
    days_in = {m: 31 for m in (1, 3, 5, 7, 8, 10, 12)} | {m: 30 for m in (4, 6, 9, 11)}
    year, month = anchor.year, anchor.month
    for _ in range(months):
        month += 1
        if month == 13:
            year, month = year + 1, 1
    leap = year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)
    length = days_in.get(month, 29 if leap else 28)
    return anchor.replace(year=year, month=month, day=min(anchor.day, length))


day_heavy = st.one_of(st.integers(1, 28), st.sampled_from([29, 30, 31]), st.sampled_from([29, 30, 31]))


@st.composite
def anchors(draw):
    year = draw(st.integers(1970, 2090))
    month = draw(st.integers(1, 12))
    day = draw(day_heavy)
    if month == 2 and draw(st.booleans()):
        year = draw(st.sampled_from([y for y in range(1972, 2090, 4) if y != 2000] + [2000]))
        day = 29
    length = (datetime(year + (month == 12), month % 12 + 1, 1) - datetime(year, month, 1)).days
    day = min(day, length)
    return utc(
        year,
        month,
        day,
        draw(st.integers(0, 23)),
        draw(st.integers(0, 59)),
        draw(st.integers(0, 59)),
        draw(st.integers(0, 999_999)),
    )


@given(anchors(), st.sampled_from([MONTHLY, YEARLY]), st.integers(0, 120))
def test_contiguous_ordered_no_drift_and_independent(anchor, cadence, k):
    start, nxt = period_start(anchor, cadence, k), period_start(anchor, cadence, k + 1)
    assert start < nxt  # never overlap, never empty; [start, nxt) and [nxt, ...) are contiguous by construction
    assert start == _independent_start(anchor, k * cadence.months)
    assert start.time() == anchor.time() and start.tzinfo == UTC
    # Never drifts: the day returns to the anchor's whenever the month is long enough.
    assert start.day == anchor.day or (start.day < anchor.day and (start + timedelta(days=1)).day == 1)
    assert period_index_at(anchor, cadence, start) == k
    assert period_index_at(anchor, cadence, nxt - timedelta(microseconds=1)) == k


@given(anchors(), st.sampled_from([MONTHLY, YEARLY]), st.integers(0, 10**6 * 3600 * 24 * 365 * 8))
def test_index_at_contains_instant(anchor, cadence, offset_us):
    t = anchor + timedelta(microseconds=offset_us)
    k = period_index_at(anchor, cadence, t)
    assert period_start(anchor, cadence, k) <= t < period_start(anchor, cadence, k + 1)


def test_every_month_end_anchor_from_1970_to_2100_matches_the_independent_computation():
    for year in range(1970, 2101):
        for month in range(1, 13):
            for day in (28, 29, 30, 31):
                try:
                    anchor = utc(year, month, day, 23, 59, 59)
                except ValueError:
                    continue
                for k in range(14):
                    assert period_start(anchor, MONTHLY, k) == _independent_start(anchor, k)
                for k in range(3):
                    assert period_start(anchor, YEARLY, k) == _independent_start(anchor, 12 * k)
