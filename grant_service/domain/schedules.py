"""What a credit schedule grants in each period, amendments and the end of the
subscription included. Pure: no I/O.

Period k normally has one grant (segment 0) of the amount in force at its start,
effective at start(k) and expiring at start(k+1). An amount whose effective time
falls strictly inside the period starts a new segment there: the previous
segment expires at that instant and a grant of the new amount runs to the period
end. The subscription's end time cuts everything: no segment starts at or after
it, and the segment active at it expires at it. The schedule ends at MAX_INSTANT at the latest:
periods that would start later do not exist, and the last one is cut there.

`clamp` turns a new revision into the schedule actually applied (a change never rewrites
the past); reconciliation.py works out what happens to the grants already stored when it is."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from credit_common.periods import MAX_INSTANT, Cadence, period_index_at, period_start_or_none
from grant_service.domain.balances import GrantView


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

    @property
    def end(self) -> datetime:
        """The end time, MAX_INSTANT at the latest."""
        return MAX_INSTANT if self.end_time is None else min(self.end_time, MAX_INSTANT)

    def period_start(self, k: int) -> datetime | None:
        """Start of period k, None if it would start after MAX_INSTANT."""
        return period_start_or_none(self.anchor, self.cadence, k)

    def has_period(self, k: int) -> bool:
        """Whether period k starts before the end (i.e. has a grant at all)."""
        start = self.period_start(k)
        return start is not None and start < self.end

    def segments(self, k: int) -> list[GrantSegment]:
        """The grants of period k, in time order (empty if the subscription ended before it)."""
        start = self.period_start(k)
        if start is None or start >= self.end:
            return []
        stop = min(self.period_start(k + 1) or MAX_INSTANT, self.end)
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

    def period_at(self, t: datetime) -> int:
        """Index of the period containing `t` (-1 before the anchor)."""
        return period_index_at(self.anchor, self.cadence, t)


def first_period_fits(anchor: datetime, cadence: Cadence) -> bool:
    """Whether the first period of a schedule anchored at `anchor` ends before year 10000."""
    return period_start_or_none(anchor, cadence, 1) is not None


@dataclass(frozen=True, slots=True)
class GrantSegment:
    period_index: int
    segment: int
    amount: Decimal
    effective_time: datetime
    expire_time: datetime


@dataclass(frozen=True, slots=True)
class Pending:
    """What of a customer still awaits the catch-up: its earliest period not yet issued, its
    earliest grant not yet closed that expires, and its earliest pending grant (stored, its GRANT
    entry not yet written) (None: nothing)."""

    next_issue: datetime | None
    next_expiry: datetime | None
    next_open: datetime | None = None

    @classmethod
    def of(cls, next_issue: datetime | None, open_grants: Iterable[GrantView]) -> Pending:
        """The Pending of a customer whose earliest period not yet issued is `next_issue`, from its
        open grants: every grant not yet closed, pending ones included (a grant's `opens_at` is
        cleared when it opens or is voided, so no closed grant is pending). The same as the columns
        of adapters/catch_up.py `pending_columns`, from rows a debit reads anyway."""
        next_expiry = next_open = None
        for grant in open_grants:
            expiry, opens = grant.expire_time, grant.opens_at
            if expiry is not None and (next_expiry is None or expiry < next_expiry):
                next_expiry = expiry
            if opens is not None and (next_open is None or opens < next_open):
                next_open = opens
        return cls(next_issue, next_expiry, next_open)

    def issue_due(self, now: datetime) -> bool:
        """Whether a period is to be issued or a pending grant opened at `now`."""
        return (self.next_issue is not None and self.next_issue <= now) or (
            self.next_open is not None and self.next_open <= now
        )

    def due(self, now: datetime) -> bool:
        """Whether a period is to be issued, a pending grant opened or a grant expired at `now`."""
        return self.issue_due(now) or (self.next_expiry is not None and self.next_expiry <= now)


# ------------------------------------------------------------------------------ changes


def _in_force(amounts: Sequence[ScheduledAmount], t: datetime) -> Decimal:
    current = amounts[0].amount
    for scheduled in amounts:
        if scheduled.effective_time <= t:
            current = scheduled.amount
    return current


def clamp_amounts(
    stored: Sequence[ScheduledAmount], requested: Sequence[ScheduledAmount], now: datetime
) -> tuple[tuple[ScheduledAmount, ...], datetime | None]:
    """The amounts to apply when a revision replaces `stored` by `requested` at `now`, and the
    earliest instant before `now` at which the requested amounts differ from the stored ones (None:
    the change is not late, and `requested` is applied as sent). A late change takes effect at
    `now`: the stored amounts before `now`, the requested ones from `now` on."""
    instants = sorted({a.effective_time for a in (*stored, *requested) if a.effective_time < now})
    late = next((t for t in instants if _in_force(stored, t) != _in_force(requested, t)), None)
    if late is None:
        return tuple(requested), None
    applied = [a for a in stored if a.effective_time < now]
    at_now = _in_force(requested, now)
    if at_now != applied[-1].amount:
        applied.append(ScheduledAmount(at_now, now))
    applied.extend(a for a in requested if a.effective_time > now)
    return tuple(applied), late


def clamp_end(stored: datetime | None, requested: datetime | None, now: datetime) -> tuple[datetime | None, bool]:
    """The end time to apply when a revision replaces `stored` by `requested` at `now`, and whether the
    change was late (the two differ before `now`). A late change takes effect at `now`; a
    subscription that has already ended keeps its end."""
    if stored == requested:
        return requested, False
    first_difference = min(t for t in (stored, requested, MAX_INSTANT) if t is not None)
    if first_difference >= now:
        return requested, False
    if stored is not None and stored < now:
        return stored, True
    return now, True
