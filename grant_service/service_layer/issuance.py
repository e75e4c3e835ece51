"""The idempotent catch-up: issue every grant whose period has started, open every
pending grant (stored before it was effective) whose time has come, and expire
every grant whose end has passed, up to `now`, for one clock (real time or a test
clock), optionally for one customer only. Nothing is written to the ledger before
it happens: a segment of an issued period that starts later is stored pending,
without its GRANT entry, which the catch-up writes when it becomes effective.

The database is the source of truth: each schedule keeps a cursor (the first
period not yet issued), selected with one indexed query in bounded batches, and
unique constraints make a second issuance or expiry impossible, so the catch-up
can run any number of times, in any number of processes, after any crash.
A period already over when it is issued is issued and expired at its end, so
the ledger tells the full story."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from credit_common.db.engine import SessionFactories
from credit_common.ids import new_id, new_ids
from grant_service.adapters.orm import REAL_TIME, GrantRow, LedgerEntryRow, ScheduleRow
from grant_service.adapters.repository import (
    advance_cursors,
    insert_ignoring_conflicts,
    locked,
    pending,
    schedule_of,
)
from grant_service.domain.balances import RECURRING_PRIORITY, exact_difference
from grant_service.domain.schedules import GrantSegment, Schedule, StoredGrant, reconcile

log = logging.getLogger("credit_grants.grant.issuance")


@dataclass
class CatchUpResult:
    issued: int = 0
    expired: int = 0
    opened: int = 0


def catch_up(
    factories: SessionFactories,
    *,
    clock_key: str,
    now: datetime,
    customer_key: str | None = None,
    batch_size: int = 500,
) -> CatchUpResult:
    """Run the catch-up to `now`, one transaction per batch, until nothing is due.

    Only the real-time timer's sweep skips rows another transaction has locked (replicas share that
    work: whoever holds a row is issuing it). Every other catch-up must not return before what is
    due is committed, so it waits for such locks: a customer's own catch-up before a read or a
    debit, and a test clock's advance (its reply promises everything due is issued)."""
    skip_locked = customer_key is None and clock_key == REAL_TIME
    result = CatchUpResult()
    # Expiries first, so that at a period boundary the ledger reads: EXPIRE of the old grant, GRANT of the new.
    while True:
        with factories.write() as session, session.begin():
            done = expire_due_batch(session, clock_key, now, customer_key, batch_size, skip_locked=skip_locked)
        result.expired += done
        if done < batch_size:
            break
    # Then the pending grants whose time has come, each closed at once if it is already over.
    while True:
        with factories.write() as session, session.begin():
            done, expired = open_due_batch(session, clock_key, now, customer_key, batch_size, skip_locked=skip_locked)
        result.opened += done
        result.expired += expired
        if done < batch_size:
            break
    while True:
        with factories.write() as session, session.begin():
            done, issued, expired = issue_due_batch(
                session, clock_key, now, customer_key, batch_size, skip_locked=skip_locked
            )
        result.issued += issued
        result.expired += expired
        if done < batch_size:
            break
    if result.issued or result.expired or result.opened:
        log.info(
            "catch-up",
            extra={
                "clock": clock_key or "real",
                "issued": result.issued,
                "opened": result.opened,
                "expired": result.expired,
            },
        )
    return result


def issue_due_batch(
    session: Session,
    clock_key: str,
    now: datetime,
    customer_key: str | None,
    batch_size: int,
    *,
    skip_locked: bool = True,
) -> tuple[int, int, int]:
    """Issue the due periods of up to `batch_size` schedules; a period already over is expired at
    once. Returns (schedules handled, grants issued, grants expired). `skip_locked=False` waits for
    a schedule another transaction is issuing (then sees it issued) instead of skipping it."""
    query = select(*_DUE_COLUMNS).where(_SCHEDULES.c.next_period_start <= now)
    if customer_key is not None:
        query = query.where(_SCHEDULES.c.customer_key == customer_key)
    else:
        query = query.where(_SCHEDULES.c.clock_key == clock_key)
    # The sweep (SKIP LOCKED, never waits) orders by the indexed column only: with a tie-break on
    # schedule_id (not in ix_schedules_due), a storm of N schedules due at one instant was sorted
    # whole for every batch (quadratic in the storm's size; docs/performance.md). A catch-up that
    # waits for locks keeps the tie-break, so that such catch-ups lock in one stable order.
    order = [_SCHEDULES.c.next_period_start]
    if not skip_locked:
        order.append(_SCHEDULES.c.schedule_id)
    query = query.order_by(*order).limit(batch_size)
    rows = session.execute(locked(session, query, skip_locked=skip_locked)).all()
    segments: list[tuple[Any, GrantSegment]] = []
    # What is due depends only on the schedule's terms and cursor, which a storm's schedules share:
    # worked out once per distinct terms in the batch, and the cursors advanced by one UPDATE each.
    plans: dict[tuple, tuple[list[GrantSegment], int, datetime | None]] = {}
    advanced: dict[tuple[int, datetime | None], list[str]] = {}
    for row in rows:
        terms = (row.anchor_time, row.cadence, row.amounts, row.end_time, row.next_period_index)
        plan = plans.get(terms)
        if plan is None:
            plan = plans[terms] = due_segments(schedule_of(row), row.next_period_index, now)
        due, k, next_start = plan
        segments.extend((row, segment) for segment in due)
        advanced.setdefault((k, next_start), []).append(row.schedule_id)
    issued, over = issue_in_time_order(session, segments, now)
    for (k, next_start), schedule_ids in advanced.items():
        advance_cursors(session, schedule_ids, k, next_start)
    return len(rows), len(issued), len(over)


def due_segments(schedule: Schedule, k: int, now: datetime) -> tuple[list[GrantSegment], int, datetime | None]:
    """The segments of periods k, k+1, ... that have started at `now` (period k has: the cursor
    says so), in time order; and the cursor after them (next period index and its start, None once
    the schedule has no further period)."""
    due: list[GrantSegment] = []
    next_start: datetime | None = schedule.period_start(k)
    while next_start is not None and next_start <= now:
        due.extend(schedule.segments(k))
        k += 1
        next_start = schedule.period_start(k) if schedule.has_period(k) else None
    return due, k, next_start


def issue_in_time_order(
    session: Session, segments: Sequence[tuple[Any, GrantSegment]], now: datetime
) -> tuple[list[dict], list[dict]]:
    """Issue `segments` (each schedule's in time order) and record the EXPIRE of those already over
    at `now`, in waves: wave j holds the j-th segment of every schedule. Before a wave is issued,
    the grants of earlier waves that are over are closed, so where a schedule's grant ends and its
    next begins (a period boundary, an immediate amendment) the ledger records EXPIRE then GRANT,
    however many periods one catch-up covers; a wave is still one statement for the whole batch.
    Returns (grants issued, grants expired)."""
    waves: list[list[tuple[Any, GrantSegment]]] = []
    position: dict[str, int] = {}
    for row, segment in segments:
        j = position.get(row.schedule_id, 0)
        position[row.schedule_id] = j + 1
        if j == len(waves):
            waves.append([])
        waves[j].append((row, segment))
    issued: list[dict] = []
    expired: list[dict] = []
    open_over: list[dict] = []  # issued here, over at `now`, not yet closed
    for wave in waves:
        close_expired(session, open_over)
        expired.extend(open_over)
        new = issue_segments(session, wave, now)
        issued.extend(new)
        open_over = [g for g in new if g["expire_time"] <= now]
    close_expired(session, open_over)
    expired.extend(open_over)
    return issued, expired


# The sweep reads plain rows (Core), not ORM instances (building them is a visible share of a catch-up
# batch: docs/performance.md); the schedules are not in the session's identity map.
_SCHEDULES = ScheduleRow.__table__
_DUE_COLUMNS = [c for c in _SCHEDULES.c if c.key not in ("position", "removed", "next_period_start")]


def issue_segments(session: Session, segments: Sequence[tuple[Any, GrantSegment]], now: datetime) -> list[dict]:
    """Insert the grants of `segments` (each with its schedule: a row of the schedules table) and
    the GRANT entries of those effective at `now`; one that starts later is stored pending (its
    GRANT entry is written by the catch-up that opens it). A segment already issued is skipped.
    Returns the grants inserted."""
    if not segments:
        return []
    grants = [
        {
            "grant_id": grant_id,
            "customer_key": row.customer_key,
            "currency_key": row.currency_key,
            "clock_key": row.clock_key,
            "source": "RECURRING",
            "subscription_id": row.subscription_id,
            "schedule_id": row.schedule_id,
            "entitlement_key": row.entitlement_key,
            "period_index": segment.period_index,
            "segment": segment.segment,
            "amount": segment.amount,
            "used": _ZERO,
            "effective_time": segment.effective_time,
            "expire_time": segment.expire_time,
            "priority": RECURRING_PRIORITY,
            "void_time": None,
            "reason": "",
            "closed": False,
            "opens_at": segment.effective_time if segment.effective_time > now else None,
        }
        for (row, segment), grant_id in zip(segments, new_ids("grt", len(segments)), strict=True)
    ]
    inserted = insert_ignoring_conflicts(session, GrantRow, grants, "grant_id")
    issued = [grant for grant in grants if grant["grant_id"] in inserted]
    opened = [grant for grant in issued if grant["opens_at"] is None]
    entries = [
        grant_entry(grant, recurring_description(grant), entry_id=entry_id)
        for grant, entry_id in zip(opened, new_ids("led", len(opened)), strict=True)
    ]
    insert_ignoring_conflicts(session, LedgerEntryRow, entries, "entry_id")
    return issued


_ZERO = Decimal(0)


def recurring_description(grant: dict) -> str:
    return f"period {grant['period_index']} of {grant['entitlement_key']}"


def open_due_batch(
    session: Session, clock_key: str, now: datetime, customer_key: str | None, batch_size: int, *, skip_locked: bool
) -> tuple[int, int]:
    """Write the GRANT entry of up to `batch_size` pending grants whose effective time has come (and
    the EXPIRE of those already over), in time order: at one instant, EXPIRE before GRANT. Returns
    (grants opened, grants expired)."""
    query = select(GrantRow).where(GrantRow.opens_at <= now)
    if customer_key is not None:
        query = query.where(GrantRow.customer_key == customer_key)
    else:
        query = query.where(GrantRow.clock_key == clock_key)
    order = (GrantRow.opens_at,) if skip_locked else (GrantRow.opens_at, GrantRow.grant_id)
    rows = list(session.scalars(locked(session, query.order_by(*order).limit(batch_size), skip_locked=skip_locked)))
    if not rows:
        return 0, 0
    grants = [grant_dict(r) for r in rows]
    over = {g["grant_id"] for g in grants if g["expire_time"] is not None and g["expire_time"] <= now}
    events = [(g["effective_time"], 1, g) for g in grants] + [
        (g["expire_time"], 0, g) for g in grants if g["grant_id"] in over
    ]
    entries = []
    for _, kind, grant in sorted(events, key=lambda e: (e[0], e[1], e[2]["grant_id"])):
        if kind == 1:
            description = (
                recurring_description(grant) if grant["source"] == "RECURRING" else grant["reason"] or "one-off grant"
            )
            entries.append(grant_entry(grant, description))
        else:
            entries.append(expire_entry(grant))
    insert_ignoring_conflicts(session, LedgerEntryRow, entries, "entry_id")
    session.execute(
        update(GrantRow),
        [{"grant_id": g["grant_id"], "opens_at": None, "closed": g["grant_id"] in over} for g in grants],
    )
    return len(rows), len(over)


def grant_entry(grant: dict, description: str, *, entry_id: str | None = None) -> dict:
    return ledger_entry(
        grant, "GRANT", grant["amount"], grant["effective_time"], description, opens=True, entry_id=entry_id
    )


def ledger_entry(
    grant: dict,
    type_: str,
    amount: Decimal,
    effective_time: datetime,
    description: str,
    *,
    opens: bool = False,
    closes: bool = False,
    usage_id: str | None = None,
    entry_id: str | None = None,
) -> dict:
    """A ledger entry of `grant`; its id is `entry_id` (made in bulk by the caller) or a new one."""
    return {
        "entry_id": entry_id or new_id("led"),
        "customer_key": grant["customer_key"],
        "currency_key": grant["currency_key"],
        "type": type_,
        "amount": amount,
        "grant_id": grant["grant_id"],
        "effective_time": effective_time,
        "usage_id": usage_id,
        "subscription_id": grant["subscription_id"],
        "description": description,
        "opens_grant_id": grant["grant_id"] if opens else None,
        "closes_grant_id": grant["grant_id"] if closes else None,
    }


def grant_dict(row: GrantRow) -> dict:
    return {c.key: getattr(row, c.key) for c in GrantRow.__table__.columns}


def expire_due_batch(
    session: Session, clock_key: str, now: datetime, customer_key: str | None, batch_size: int, *, skip_locked: bool
) -> int:
    """Record the EXPIRE of up to `batch_size` grants whose expiry has passed; how many were handled."""
    query = select(GrantRow).where(GrantRow.closed.is_(False), GrantRow.expire_time <= now, GrantRow.opens_at.is_(None))
    if customer_key is not None:
        query = query.where(GrantRow.customer_key == customer_key)
    else:
        query = query.where(GrantRow.clock_key == clock_key)
    order = (GrantRow.expire_time,) if skip_locked else (GrantRow.expire_time, GrantRow.grant_id)  # as above
    query = query.order_by(*order).limit(batch_size)
    rows = list(session.scalars(locked(session, query, skip_locked=skip_locked)))
    if not rows:
        return 0
    close_expired(session, [grant_dict(r) for r in rows])
    return len(rows)


def expire_entry(grant: dict, *, entry_id: str | None = None) -> dict:
    return ledger_entry(
        grant,
        "EXPIRE",
        -exact_difference(grant["amount"], grant["used"]),
        grant["expire_time"],
        "unused remainder expired",
        closes=True,
        entry_id=entry_id,
    )


def close_expired(session: Session, grants: Sequence[dict]) -> None:
    """Record the EXPIRE of each grant (what was left of it at its expiry) and mark it closed; a grant
    whose closing entry already exists is skipped."""
    if not grants:
        return
    entries = [
        expire_entry(grant, entry_id=entry_id)
        for grant, entry_id in zip(grants, new_ids("led", len(grants)), strict=True)
    ]
    insert_ignoring_conflicts(session, LedgerEntryRow, entries, "entry_id")
    session.execute(update(GrantRow), [{"grant_id": g["grant_id"], "closed": True} for g in grants])


def catch_up_in_transaction(
    session: Session, clock_key: str, now: datetime, customer_key: str, batch_size: int
) -> None:
    """The customer's catch-up to `now`, inside the caller's transaction (waiting for locks), when
    something of it is due: what a change at `now` applies to is then the customer's state at `now`."""
    if not pending(session, customer_key).due(now):
        return
    while expire_due_batch(session, clock_key, now, customer_key, batch_size, skip_locked=False) == batch_size:
        pass
    while open_due_batch(session, clock_key, now, customer_key, batch_size, skip_locked=False)[0] == batch_size:
        pass
    while issue_due_batch(session, clock_key, now, customer_key, batch_size, skip_locked=False)[0] == batch_size:
        pass


def reconcile_issued(session: Session, row: ScheduleRow, now: datetime) -> None:
    """After a change at `now` (an amendment, a new end time; the customer caught up to `now`):
    bring the periods already issued in line with the schedule (grant_service.domain.schedules.
    reconcile). An open grant cut at `now` has its EXPIRE recorded at once, before its
    replacement's GRANT, so the ledger reads EXPIRE then GRANT at that instant as at every
    period boundary; a withdrawn grant is deleted with its GRANT entry; a pending one the
    schedule no longer has is deleted."""
    schedule = schedule_of(row)
    issued_until = row.next_period_index
    # Locked (in id order) so that a concurrent expiry either finishes first (and we see the grant closed)
    # or waits for the new expiry.
    open_grants = list(
        session.scalars(
            locked(
                session,
                select(GrantRow)
                .where(GrantRow.schedule_id == row.schedule_id, GrantRow.closed.is_(False))
                .order_by(GrantRow.grant_id)
                .execution_options(populate_existing=True),
            )
        )
    )
    current = schedule.period_at(now)
    periods = {g.period_index for g in open_grants} | ({current} if 0 <= current < issued_until else set())
    if not periods:
        return
    existing = {
        g.grant_id: g
        for g in session.scalars(
            select(GrantRow)
            .where(GrantRow.schedule_id == row.schedule_id, GrantRow.period_index.in_(periods))
            .execution_options(populate_existing=True)
        )
    }
    plan = reconcile(schedule, [_stored(g) for g in existing.values()], sorted(periods), now)
    for grant_id, expiry in plan.expiries.items():
        existing[grant_id].expire_time = expiry
    gone = [*plan.withdrawn, *plan.dropped]
    if gone:
        session.execute(delete(LedgerEntryRow).where(LedgerEntryRow.grant_id.in_(gone)))
        for grant_id in gone:
            session.delete(existing.pop(grant_id))
    session.flush()
    close_expired(session, [grant_dict(existing[g]) for g, expiry in plan.expiries.items() if expiry <= now])
    issue_segments(session, [(row, segment) for segment in plan.issue], now)


def _stored(row: GrantRow) -> StoredGrant:
    return StoredGrant(
        row.grant_id,
        row.period_index,
        row.segment,
        row.amount,
        row.effective_time,
        row.expire_time,
        row.void_time,
        opened=row.opens_at is None,
        closed=row.closed,
        debited=row.used != 0,
    )


def reset_cursor(row: ScheduleRow) -> None:
    """The cursor's next start after the end time changed (NULL once no period starts before the end)."""
    schedule = schedule_of(row)
    k = row.next_period_index
    row.next_period_start = schedule.period_start(k) if not row.removed and schedule.has_period(k) else None
