"""What a credit schedule grants in each period, amendments and the end of the
subscription included. Pure: no I/O.

Period k normally has one grant (segment 0) of the amount in force at its start,
effective at start(k) and expiring at start(k+1). An amount whose effective time
falls strictly inside the period starts a new segment there: the previous
segment expires at that instant and a grant of the new amount runs to the period
end. The subscription's end time cuts everything: no segment starts at or after
it, and the segment active at it expires at it."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from credit_common.periods import Cadence, period_index_at, period_start


@dataclass(frozen=True, slots=True)
class ScheduledAmount:
    amount: Decimal
    effective_time: datetime


@dataclass(frozen=True, slots=True)
class Schedule:
    anchor: datetime
    cadence: Cadence
    amounts: tuple[ScheduledAmount, ...]  # ordered by effective_time, the first at the anchor
    end_time: datetime | None = None

    def amount_at(self, t: datetime) -> Decimal:
        current = self.amounts[0].amount
        for scheduled in self.amounts:
            if scheduled.effective_time <= t:
                current = scheduled.amount
        return current

    def has_period(self, k: int) -> bool:
        """Whether period k starts before the end (i.e. has a grant at all)."""
        return self.end_time is None or period_start(self.anchor, self.cadence, k) < self.end_time

    def segments(self, k: int) -> list[GrantSegment]:
        """The grants of period k, in time order (empty if the subscription ended before it)."""
        start = period_start(self.anchor, self.cadence, k)
        stop = period_start(self.anchor, self.cadence, k + 1)
        if self.end_time is not None:
            if start >= self.end_time:
                return []
            stop = min(stop, self.end_time)
        boundaries = [start, *sorted({a.effective_time for a in self.amounts if start < a.effective_time < stop})]
        ends = [*boundaries[1:], stop]
        return [
            GrantSegment(k, i, self.amount_at(begin), begin, end)
            for i, (begin, end) in enumerate(zip(boundaries, ends, strict=True))
        ]

    def periods_touched_by_changes(self) -> set[int]:
        """Indexes of the periods an amendment or the end time falls inside (they may need re-segmenting)."""
        instants = [a.effective_time for a in self.amounts[1:]]
        if self.end_time is not None:
            instants.append(self.end_time)
        return {period_index_at(self.anchor, self.cadence, t) for t in instants if t > self.anchor}


@dataclass(frozen=True, slots=True)
class GrantSegment:
    period_index: int
    segment: int
    amount: Decimal
    effective_time: datetime
    expire_time: datetime


@dataclass(frozen=True, slots=True)
class Pending:
    """What of a customer still awaits the catch-up: its earliest period not yet issued and its
    earliest grant not yet closed that expires (None: nothing)."""

    next_issue: datetime | None
    next_expiry: datetime | None

    def issue_due(self, now: datetime) -> bool:
        return self.next_issue is not None and self.next_issue <= now

    def due(self, now: datetime) -> bool:
        """Whether a period is to be issued or a grant to be expired at `now`."""
        return self.issue_due(now) or (self.next_expiry is not None and self.next_expiry <= now)
