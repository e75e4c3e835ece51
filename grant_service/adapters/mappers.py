"""Domain objects of the grant service's rows, and the stored form of schedule amounts."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any

from credit_common.periods import Cadence
from grant_service.adapters.orm import (
    ClockRow,
    LedgerEntryRow,
)
from grant_service.domain.model import (
    CustomerNow,
    EntryType,
    Grant,
    GrantSource,
    LedgerEntry,
    SimulatedClock,
    StoredSchedule,
    StoredSubscription,
    Usage,
)
from grant_service.domain.revisions import RevisionWindow
from grant_service.domain.schedules import Pending, Schedule, ScheduledAmount

# The tables, for the Core statements built once below.


def encode_amounts(amounts: Iterable[ScheduledAmount]) -> str:
    return json.dumps([[str(a.amount), a.effective_time.isoformat()] for a in amounts])


def decode_amounts(text: str) -> tuple[ScheduledAmount, ...]:
    return tuple(ScheduledAmount(Decimal(amount), datetime.fromisoformat(t)) for amount, t in json.loads(text))


def schedule_of(row: Any) -> Schedule:
    """The terms of a `ScheduleRow` or of a row with the columns of `schedules`."""
    return Schedule(row.anchor_time, Cadence(row.cadence), decode_amounts(row.amounts), row.end_time)


def stored_schedule_of(row: Any, schedule: Schedule | None = None) -> StoredSchedule:
    """The schedule of a `ScheduleRow` or of a row with the columns of `schedules` (its terms:
    `schedule` if given)."""
    return StoredSchedule(
        schedule_id=row.schedule_id,
        subscription_id=row.subscription_id,
        customer_key=row.customer_key,
        clock_key=row.clock_key,
        entitlement_key=row.entitlement_key,
        currency_key=row.currency_key,
        schedule=schedule_of(row) if schedule is None else schedule,
        next_period_index=row.next_period_index,
        position=row.position,
        removed=row.removed,
    )


def grant_of(row: Any) -> Grant:
    """The grant of a `GrantRow`, or of a row of a statement that selects the columns of `grants`."""
    return Grant(
        grant_id=row.grant_id,
        customer_key=row.customer_key,
        currency_key=row.currency_key,
        clock_key=row.clock_key,
        source=GrantSource(row.source),
        subscription_id=row.subscription_id,
        entitlement_key=row.entitlement_key,
        period_index=row.period_index,
        amount=row.amount,
        effective_time=row.effective_time,
        expire_time=row.expire_time,
        priority=row.priority,
        void_time=row.void_time,
        reason=row.reason,
        schedule_id=row.schedule_id,
        segment=row.segment,
        used=row.used,
        closed=row.closed,
        opens_at=row.opens_at,
    )


def entry_of(row: LedgerEntryRow) -> LedgerEntry:
    return LedgerEntry(
        entry_id=row.entry_id,
        customer_key=row.customer_key,
        currency_key=row.currency_key,
        type=EntryType(row.type),
        amount=row.amount,
        grant_id=row.grant_id,
        effective_time=row.effective_time,
        usage_id=row.usage_id,
        subscription_id=row.subscription_id,
        description=row.description,
        opens=row.opens_grant_id is not None,
        closes=row.closes_grant_id is not None,
        seq=row.seq,
    )


def ledger_row(entry: LedgerEntry) -> dict[str, Any]:
    """The columns of `ledger_entries` of a new entry (its `seq` is the database's)."""
    grant_id = entry.grant_id
    return {
        "entry_id": entry.entry_id,
        "customer_key": entry.customer_key,
        "currency_key": entry.currency_key,
        "type": entry.type.value,
        "amount": entry.amount,
        "grant_id": grant_id,
        "effective_time": entry.effective_time,
        "usage_id": entry.usage_id,
        "subscription_id": entry.subscription_id,
        "description": entry.description,
        "opens_grant_id": grant_id if entry.opens else None,
        "closes_grant_id": grant_id if entry.closes else None,
    }


def usage_of(row: Any) -> Usage:
    """The usage of a `UsageRow` or of the dict of its columns."""
    values = row if isinstance(row, dict) else {name: getattr(row, name) for name in Usage.__slots__}
    return Usage(**{name: values[name] for name in Usage.__slots__})


def clock_of(row: ClockRow) -> SimulatedClock:
    return SimulatedClock(row.test_clock_id, row.name, row.frozen_time, row.create_time)


def stored_subscription_of(row: Any) -> StoredSubscription:
    """The subscription of a row with the columns of `subscriptions`."""
    return StoredSubscription(
        subscription_id=row.subscription_id,
        customer_key=row.customer_key,
        revision=row.revision,
        start_time=row.start_time,
        end_time=row.end_time,
        clock_key=row.clock_key,
        update_time=row.update_time,
        revision_window=RevisionWindow(row.revision_window_start, row.revision_window_base),
    )


def subscription_row(s: StoredSubscription) -> dict[str, Any]:
    """The columns of `subscriptions` of a stored subscription."""
    return {
        "subscription_id": s.subscription_id,
        "customer_key": s.customer_key,
        "revision": s.revision,
        "start_time": s.start_time,
        "end_time": s.end_time,
        "clock_key": s.clock_key,
        "update_time": s.update_time,
        "revision_window_start": s.revision_window.start,
        "revision_window_base": s.revision_window.base,
    }


def customer_now_of(rows: Sequence[Any]) -> CustomerNow | None:
    """The customer of the rows `current_grants` read of it (none: no such customer)."""
    if not rows:
        return None
    first = rows[0]
    return CustomerNow(
        first.customer_clock_key,
        Pending(first.next_issue, first.next_expiry, first.next_open),
        tuple(grant_of(row) for row in rows if row.grant_id is not None),
    )
