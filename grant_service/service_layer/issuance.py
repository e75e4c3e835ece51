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
from dataclasses import dataclass, replace
from datetime import datetime
from decimal import Decimal

from credit_common.ids import new_id, new_ids
from grant_service.domain.balances import GrantView, exact_difference
from grant_service.domain.clocks import ClockKey, clock_label, on_real_time
from grant_service.domain.events import (
    EventType,
    NewEvent,
    credits_expired,
    credits_granted,
    subscription_changed,
)
from grant_service.domain.model import (
    EntryType,
    Grant,
    GrantSource,
    LedgerEntry,
    NewGrant,
    StoredSchedule,
    StoredSubscription,
)
from grant_service.domain.reconciliation import reconcile
from grant_service.domain.schedules import GrantSegment, Schedule
from grant_service.service_layer import alerts
from grant_service.service_layer.unit_of_work import GrantUnitOfWork, Transactions

log = logging.getLogger("credit_grants.grant.issuance")


@dataclass
class CatchUpResult:
    issued: int = 0
    expired: int = 0
    opened: int = 0


def catch_up(
    transactions: Transactions,
    *,
    clock_key: ClockKey,
    now: datetime,
    customer_key: str | None = None,
    batch_size: int = 500,
) -> CatchUpResult:
    """Run the catch-up to `now`, one transaction per batch, until nothing is due.

    Only the real-time timer's sweep skips rows another transaction has locked (replicas share that
    work: whoever holds a row is issuing it). Every other catch-up must not return before what is
    due is committed, so it waits for such locks: a customer's own catch-up before a read or a
    debit, and a test clock's advance (its reply promises everything due is issued)."""
    skip_locked = customer_key is None and on_real_time(clock_key)
    result = CatchUpResult()
    # Expiries first, so that at a period boundary the ledger reads: EXPIRE of the old grant, GRANT of the new.
    while True:
        done = transactions.write(
            lambda uow: expire_due_batch(uow, clock_key, now, customer_key, batch_size, skip_locked=skip_locked)
        )
        result.expired += done
        if done < batch_size:
            break
    # Then the pending grants whose time has come, each closed at once if it is already over.
    while True:
        done, expired = transactions.write(
            lambda uow: open_due_batch(uow, clock_key, now, customer_key, batch_size, skip_locked=skip_locked)
        )
        result.opened += done
        result.expired += expired
        if done < batch_size:
            break
    while True:
        done, issued, expired = transactions.write(
            lambda uow: issue_due_batch(uow, clock_key, now, customer_key, batch_size, skip_locked=skip_locked)
        )
        result.issued += issued
        result.expired += expired
        if done < batch_size:
            break
    # Then the subscriptions whose end has passed: their SUBSCRIPTION_ENDED.
    while (
        transactions.write(
            lambda uow: report_ended_batch(uow, clock_key, now, customer_key, batch_size, skip_locked=skip_locked)
        )
        == batch_size
    ):
        pass
    if result.issued or result.expired or result.opened:
        log.info(
            "catch-up",
            extra={
                "clock": clock_label(clock_key),
                "issued": result.issued,
                "opened": result.opened,
                "expired": result.expired,
            },
        )
    return result


def report_ended_batch(
    uow: GrantUnitOfWork,
    clock_key: ClockKey,
    now: datetime,
    customer_key: str | None,
    batch_size: int,
    *,
    skip_locked: bool,
) -> int:
    """Write the SUBSCRIPTION_ENDED event of up to `batch_size` subscriptions whose end has passed
    at `now` (occurred at their end); how many were handled."""
    ended = uow.subscriptions.ended_unreported(clock_key, now, customer_key, batch_size, skip_locked=skip_locked)
    uow.events.add(ended_events(ended))
    uow.subscriptions.mark_end_reported([sub.subscription_id for sub in ended])
    return len(ended)


def ended_events(ended: Sequence[StoredSubscription]) -> list[NewEvent]:
    return [
        subscription_changed(
            EventType.SUBSCRIPTION_ENDED,
            sub.subscription_id,
            sub.customer_key,
            sub.clock_key,
            sub.end_time,
            sub.revision,
            sub.revision,
            sub.end_time,
            (),
            (),
        )
        for sub in ended
        if sub.end_time is not None
    ]


def issue_due_batch(
    uow: GrantUnitOfWork,
    clock_key: ClockKey,
    now: datetime,
    customer_key: str | None,
    batch_size: int,
    *,
    skip_locked: bool = True,
) -> tuple[int, int, int]:
    """Issue the due periods of up to `batch_size` schedules; a period already over is expired at
    once. Returns (schedules handled, grants issued, grants expired). `skip_locked=False` waits for
    a schedule another transaction is issuing (then sees it issued) instead of skipping it."""
    schedules = uow.issuance.due_schedules(clock_key, now, customer_key, batch_size, skip_locked=skip_locked)
    segments: list[tuple[StoredSchedule, GrantSegment]] = []
    # What is due depends only on the schedule's terms (a Schedule value) and cursor, which a storm's
    # schedules share: worked out once per terms and cursor in the batch, and the cursors advanced
    # by one statement each.
    plans: dict[tuple[Schedule, int], tuple[list[GrantSegment], int, datetime | None]] = {}
    advanced: dict[tuple[int, datetime | None], list[str]] = {}
    for stored in schedules:
        terms = (stored.schedule, stored.next_period_index)
        plan = plans.get(terms)
        if plan is None:
            plan = plans[terms] = due_segments(stored.schedule, stored.next_period_index, now)
        due, k, next_start = plan
        segments.extend((stored, segment) for segment in due)
        advanced.setdefault((k, next_start), []).append(stored.schedule_id)
    issued, over = issue_in_time_order(uow, segments, now)
    for (k, next_start), schedule_ids in advanced.items():
        uow.issuance.advance_cursors(schedule_ids, k, next_start)
    if issued:
        instants = [(g.customer_key, g.effective_time) for g in issued] + [
            (g.customer_key, g.expire_time) for g in over
        ]
        latest = alerts.last_changes((c, t) for c, t in instants if t <= now)
        alerts.evaluate(uow, clock_key, now, latest, only_if_complete=True, occurred=latest)
    return len(schedules), len(issued), len(over)


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
    uow: GrantUnitOfWork, segments: Sequence[tuple[StoredSchedule, GrantSegment]], now: datetime
) -> tuple[list[NewGrant], list[NewGrant]]:
    """Issue `segments` (each schedule's in time order) and record the EXPIRE of those already over
    at `now`, in waves: wave j holds the j-th segment of every schedule. Before a wave is issued,
    the grants of earlier waves that are over are closed, so where a schedule's grant ends and its
    next begins (a period boundary, an immediate amendment) the ledger records EXPIRE then GRANT,
    however many periods one catch-up covers; a wave is still one statement for the whole batch.
    Returns (grants issued, grants expired)."""
    waves: list[list[tuple[StoredSchedule, GrantSegment]]] = []
    position: dict[str, int] = {}
    for stored, segment in segments:
        j = position.get(stored.schedule_id, 0)
        position[stored.schedule_id] = j + 1
        if j == len(waves):
            waves.append([])
        waves[j].append((stored, segment))
    issued: list[NewGrant] = []
    expired: list[NewGrant] = []
    open_over: list[NewGrant] = []  # issued here, over at `now`, not yet closed
    for wave in waves:
        close_expired(uow, open_over)
        expired.extend(open_over)
        new = issue_segments(uow, wave, now)
        issued.extend(new)
        open_over = [g for g in new if g.expire_time <= now]
    close_expired(uow, open_over)
    expired.extend(open_over)
    return issued, expired


def issue_segments(
    uow: GrantUnitOfWork, segments: Sequence[tuple[StoredSchedule, GrantSegment]], now: datetime
) -> list[NewGrant]:
    """Insert the grants of `segments` (each with its schedule) and the GRANT entries of those
    effective at `now`; one that starts later is stored pending (its GRANT entry is written by the
    catch-up that opens it). A segment already issued is skipped. Returns the grants inserted."""
    if not segments:
        return []
    grants = [
        NewGrant(grant_id, stored, segment, segment.effective_time if segment.effective_time > now else None)
        for (stored, segment), grant_id in zip(segments, new_ids("grt", len(segments)), strict=True)
    ]
    inserted = uow.issuance.add_grants(grants)
    issued = [grant for grant in grants if grant.grant_id in inserted]
    opened = [grant for grant in issued if grant.opens_at is None]
    uow.issuance.add_entries(
        [
            grant_entry(grant, recurring_description(grant), entry_id=entry_id)
            for grant, entry_id in zip(opened, new_ids("led", len(opened)), strict=True)
        ]
    )
    if uow.events.enabled:
        uow.events.add(granted_events(opened))
    return issued


def granted_events(grants: Sequence[Grant | NewGrant]) -> list[NewEvent]:
    """The CREDITS_GRANTED event of each grant (its GRANT entry written in the same transaction)."""
    return [
        credits_granted(grant, grant.clock_key, grant.source.value) for grant in grants
    ]


def expired_events(grants: Sequence[Grant | NewGrant]) -> list[NewEvent]:
    """The CREDITS_EXPIRED event of each grant (its EXPIRE entry written in the same transaction)."""
    return [
        credits_expired(grant, grant.clock_key, exact_difference(grant.amount, grant.used)) for grant in grants
    ]


def recurring_description(grant: Grant | NewGrant) -> str:
    return f"period {grant.period_index} of {grant.entitlement_key}"


def open_due_batch(
    uow: GrantUnitOfWork,
    clock_key: ClockKey,
    now: datetime,
    customer_key: str | None,
    batch_size: int,
    *,
    skip_locked: bool,
) -> tuple[int, int]:
    """Write the GRANT entry of up to `batch_size` pending grants whose effective time has come (and
    the EXPIRE of those already over), in time order: at one instant, EXPIRE before GRANT. Returns
    (grants opened, grants expired)."""
    grants = uow.issuance.due_to_open(clock_key, now, customer_key, batch_size, skip_locked=skip_locked)
    if not grants:
        return 0, 0
    over = {g.grant_id for g in grants if g.expire_time is not None and g.expire_time <= now}
    events = [(g.effective_time, 1, g) for g in grants] + [(g.expire_time, 0, g) for g in grants if g.grant_id in over]
    entries = []
    facts: list[NewEvent] = []
    for _, kind, grant in sorted(events, key=lambda e: (e[0], e[1], e[2].grant_id)):
        if kind == 1:
            description = (
                recurring_description(grant)
                if grant.source is GrantSource.RECURRING
                else grant.reason or "one-off grant"
            )
            entries.append(grant_entry(grant, description))
            facts.extend(granted_events([grant]))
        else:
            entries.append(expire_entry(grant))
            facts.extend(expired_events([grant]))
    uow.issuance.add_entries(entries)
    uow.events.add(facts)
    uow.issuance.opened([g.grant_id for g in grants], closed=sorted(over))
    latest = alerts.last_changes(
        [(g.customer_key, g.effective_time) for g in grants]
        + [(g.customer_key, g.expire_time) for g in grants if g.grant_id in over]
    )
    alerts.evaluate(uow, clock_key, now, latest, only_if_complete=True, occurred=latest)
    return len(grants), len(over)


def grant_entry(grant: Grant | NewGrant, description: str, *, entry_id: str | None = None) -> LedgerEntry:
    return ledger_entry(
        grant, EntryType.GRANT, grant.amount, grant.effective_time, description, opens=True, entry_id=entry_id
    )


def ledger_entry(
    grant: Grant | NewGrant | GrantView,
    type_: EntryType,
    amount: Decimal,
    effective_time: datetime,
    description: str,
    *,
    opens: bool = False,
    closes: bool = False,
    usage_id: str | None = None,
    entry_id: str | None = None,
) -> LedgerEntry:
    """A ledger entry of `grant`; its id is `entry_id` (made in bulk by the caller) or a new one."""
    return LedgerEntry(
        entry_id or new_id("led"),
        grant.customer_key,
        grant.currency_key,
        type_,
        amount,
        grant.grant_id,
        effective_time,
        usage_id,
        grant.subscription_id,
        description,
        opens,
        closes,
    )


def expire_due_batch(
    uow: GrantUnitOfWork,
    clock_key: ClockKey,
    now: datetime,
    customer_key: str | None,
    batch_size: int,
    *,
    skip_locked: bool,
) -> int:
    """Record the EXPIRE of up to `batch_size` grants whose expiry has passed; how many were handled."""
    grants = uow.issuance.due_to_expire(clock_key, now, customer_key, batch_size, skip_locked=skip_locked)
    close_expired(uow, grants)
    if grants:
        latest = alerts.last_changes((g.customer_key, g.expire_time) for g in grants)
        alerts.evaluate(uow, clock_key, now, latest, only_if_complete=True, occurred=latest)
    return len(grants)


def expire_entry(grant: Grant | NewGrant, *, entry_id: str | None = None) -> LedgerEntry:
    assert grant.expire_time is not None
    return ledger_entry(
        grant,
        EntryType.EXPIRE,
        -exact_difference(grant.amount, grant.used),
        grant.expire_time,
        "unused remainder expired",
        closes=True,
        entry_id=entry_id,
    )


def close_expired(uow: GrantUnitOfWork, grants: Sequence[Grant | NewGrant]) -> None:
    """Record the EXPIRE of each grant (what was left of it at its expiry) and mark it closed; a grant
    whose closing entry already exists is skipped."""
    if not grants:
        return
    uow.issuance.add_entries(
        [
            expire_entry(grant, entry_id=entry_id)
            for grant, entry_id in zip(grants, new_ids("led", len(grants)), strict=True)
        ]
    )
    uow.issuance.close([g.grant_id for g in grants])
    if uow.events.enabled:
        uow.events.add(expired_events(grants))


def catch_up_in_transaction(
    uow: GrantUnitOfWork, clock_key: ClockKey, now: datetime, customer_key: str, batch_size: int
) -> None:
    """The customer's catch-up to `now`, inside the caller's transaction (waiting for locks), when
    something of it is due: what a change at `now` applies to is then the customer's state at `now`."""
    if not uow.customers.pending(customer_key).due(now):
        return
    while expire_due_batch(uow, clock_key, now, customer_key, batch_size, skip_locked=False) == batch_size:
        pass
    while open_due_batch(uow, clock_key, now, customer_key, batch_size, skip_locked=False)[0] == batch_size:
        pass
    while issue_due_batch(uow, clock_key, now, customer_key, batch_size, skip_locked=False)[0] == batch_size:
        pass


def reconcile_issued(uow: GrantUnitOfWork, stored: StoredSchedule, now: datetime) -> list[str]:
    """After a change at `now` (an amendment, a new end time; the customer caught up to `now`;
    `stored` as the change left it): bring the periods already issued in line with the schedule
    (grant_service.domain.schedules.reconcile). An open grant cut at `now` has its EXPIRE recorded
    at once, before its replacement's GRANT, so the ledger reads EXPIRE then GRANT at that instant
    as at every period boundary; a withdrawn grant is deleted with its GRANT entry; a pending one
    the schedule no longer has is deleted. Returns the ids of the withdrawn grants that had been
    effective (their CREDITS_GRANTED is in the log)."""
    schedule = stored.schedule
    # Locked (in id order) so that a concurrent expiry either finishes first (and we see the grant closed)
    # or waits for the new expiry.
    open_grants = uow.issuance.open_grants_of(stored.schedule_id)
    current = schedule.period_at(now)
    issued_until = stored.next_period_index
    periods = {g.period_index for g in open_grants if g.period_index is not None}
    if 0 <= current < issued_until:
        periods.add(current)
    if not periods:
        return []
    existing = {g.grant_id: g for g in uow.issuance.grants_of_periods(stored.schedule_id, sorted(periods))}
    plan = reconcile(schedule, list(existing.values()), sorted(periods), now)
    for grant_id, expiry in plan.expiries.items():
        uow.issuance.set_expiry(grant_id, expiry)
        existing[grant_id] = replace(existing[grant_id], expire_time=expiry)
    uow.issuance.withdraw([*plan.withdrawn, *plan.dropped])
    close_expired(uow, [existing[g] for g, expiry in plan.expiries.items() if expiry <= now])
    issue_segments(uow, [(stored, segment) for segment in plan.issue], now)
    return list(plan.withdrawn)
