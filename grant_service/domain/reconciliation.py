"""Reconciliation: what a change of a schedule at `now` (an amendment, a new end time) does
to the grants already issued for its periods. Pure: no I/O."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

from grant_service.domain.model import Grant
from grant_service.domain.schedules import GrantSegment, Schedule


@dataclass
class Reconciliation:
    """What to do with a schedule's stored grants after a change at `now`."""

    expiries: dict[str, datetime] = field(default_factory=dict)  # open grants whose expiry changes
    withdrawn: list[str] = field(default_factory=list)  # opened grants that never counted: deleted with their GRANT
    dropped: list[str] = field(default_factory=list)  # pending grants the schedule no longer has: deleted
    issue: list[GrantSegment] = field(default_factory=list)  # new grants (pending if they start after now)


def reconcile(schedule: Schedule, grants: Sequence[Grant], periods: Sequence[int], now: datetime) -> Reconciliation:
    """Bring the issued `periods` (their grants: `grants`, recurring grants as stored, caught up:
    every grant effective at `now` is opened) in line with `schedule`, changed at `now`.

    Closed grants (expired, voided) are history and never change; history ends at their expiry,
    or at the void time of a voided one. An open grant keeps running while the schedule still has
    its amount at its start, to the end of that segment; otherwise it is cut at `now` (EXPIRE of its
    remainder at `now`), or, if it started at `now` and nothing was debited from it, withdrawn: it
    never counted anywhere. Pending grants are re-derived freely. The segments the schedule has
    after the history of their period are issued."""
    result = Reconciliation()
    by_period: dict[int, list[Grant]] = {}
    for grant in grants:
        by_period.setdefault(grant.period_index, []).append(grant)
    for k in sorted(set(periods)):
        desired = schedule.segments(k)
        mine = by_period.get(k, [])
        covered: datetime | None = None  # history (and what keeps running) covers the period up to here
        numbers: set[int] = set()
        kept_pending: set[tuple] = set()
        history = [g for g in mine if g.closed or (g.opened and g.expire_time <= now)]
        # A segment that history already holds (same start, same amount) is not issued again, even where
        # history ends at its start (a grant voided the instant it became effective).
        held = {(g.effective_time, g.amount) for g in history}
        for grant in history:
            end = grant.void_time if grant.void_time is not None else grant.expire_time
            covered = end if covered is None else max(covered, end)
            numbers.add(grant.segment)
        for grant in mine:
            if grant in history:
                continue
            if not grant.opened:
                shape = (grant.effective_time, grant.amount, grant.expire_time)
                if any((d.effective_time, d.amount, d.expire_time) == shape for d in desired):
                    kept_pending.add(shape)
                    numbers.add(grant.segment)
                else:
                    result.dropped.append(grant.grant_id)
                continue
            segment = next((d for d in desired if d.effective_time <= grant.effective_time < d.expire_time), None)
            if segment is not None and segment.amount == grant.amount:
                expiry = max(segment.expire_time, now)
            elif grant.effective_time >= now and not grant.debited:
                result.withdrawn.append(grant.grant_id)
                continue
            else:
                expiry = now
            if expiry != grant.expire_time:
                result.expiries[grant.grant_id] = expiry
            numbers.add(grant.segment)
            covered = expiry if covered is None else max(covered, expiry)
        for d in desired:
            if (covered is not None and d.effective_time < covered) or (d.effective_time, d.amount) in held:
                continue
            if (d.effective_time, d.amount, d.expire_time) in kept_pending:
                continue
            number = d.segment if d.segment not in numbers else max(numbers) + 1
            numbers.add(number)
            result.issue.append(GrantSegment(k, number, d.amount, d.effective_time, d.expire_time))
    return result
