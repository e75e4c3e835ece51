"""Period math: period k of a schedule anchored at A is [start(k), start(k+1))
with start(k) = A + k*P, computed from A every time (never from the previous
boundary), the day clamped to the last day of a short month, the time of day kept.
One function serves both the issue time of a period and the expiry of the previous one."""

from __future__ import annotations

import calendar
import enum
from datetime import UTC, datetime

# The last representable instant: periods that would start after it do not exist.
MAX_INSTANT = datetime.max.replace(tzinfo=UTC)


class Cadence(enum.StrEnum):
    MONTHLY = "MONTHLY"
    YEARLY = "YEARLY"

    @property
    def months(self) -> int:
        return 1 if self is Cadence.MONTHLY else 12


def add_months(anchor: datetime, months: int) -> datetime:
    """`anchor` moved by `months` calendar months, the day clamped to the target month's length;
    OverflowError past year 9999."""
    total = anchor.year * 12 + (anchor.month - 1) + months
    year, month = divmod(total, 12)
    month += 1
    if year > MAX_INSTANT.year:
        raise OverflowError(f"{anchor.isoformat()} + {months} months is after year {MAX_INSTANT.year}")
    day = min(anchor.day, calendar.monthrange(year, month)[1])
    return anchor.replace(year=year, month=month, day=day)


def period_start(anchor: datetime, cadence: Cadence, k: int) -> datetime:
    """Start of period k (k >= 0) of a schedule anchored at `anchor`."""
    if k < 0:
        raise ValueError("period index must not be negative")
    return add_months(anchor, k * cadence.months)


def period_start_or_none(anchor: datetime, cadence: Cadence, k: int) -> datetime | None:
    """Start of period k, None when it would start after MAX_INSTANT (such a period does not exist)."""
    try:
        return period_start(anchor, cadence, k)
    except OverflowError:
        return None


def period_index_at(anchor: datetime, cadence: Cadence, t: datetime) -> int:
    """Index k of the period containing `t` (start(k) <= t < start(k+1)); -1 before the anchor."""
    if t < anchor:
        return -1
    months = (t.year - anchor.year) * 12 + (t.month - anchor.month)
    k = months // cadence.months
    # The estimate can be one too high (t earlier in its month than the anchor's day/time) but never too low.
    while k > 0 and period_start(anchor, cadence, k) > t:
        k -= 1
    while (following := period_start_or_none(anchor, cadence, k + 1)) is not None and following <= t:
        k += 1
    return k
