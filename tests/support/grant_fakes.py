"""In-memory fakes of the grant service's ports (grant_service/service_layer/ports.py,
unit_of_work.py), for unit tests of the use cases without a database (cosmicpython's
FakeRepository and FakeUnitOfWork).

Each fake keeps its port's documented contract: what it returns, in which order, what it skips
(a grant already issued for its schedule period segment, a second opening or closing entry of a
grant, an event whose dedupe key the log holds) and what it refuses (a second record of a request
id, a second usage of one request id, a second customer with the same key: as a unique constraint
would). What they do not model:

- concurrency: one thread at a time. Locks (`for_update`, `lock`, `lock_many`) only read, and
  `skip_locked` skips nothing; no race is ever lost, so `Transactions.write` runs its work once.
  The debit port (`FakeDebitPort`) makes the orders of one call in one transaction, as the SQL
  port's group does, and keeps its rules (a DomainError is the order's own answer; any other
  failure runs each order alone); it has no other callers to group with, and no caller that has
  gone (deadline, cancel: credit_common.calls) keeps a transaction from committing.
- the event log's high-water mark: every committed event is visible at once, in commit order;
  nor the bound on the rows a read with an unindexed filter examines (`EventRepository.scan`).
- caches: a `version` argument (alert levels, rate sets) is accepted and ignored.
- webhooks: using them raises NotImplementedError (their fakes can come with their own tests).

A transaction works on a deep copy of the store, which replaces the store when the work returns
(commit) and is dropped when it raises (rollback); a read's copy is always dropped."""

from __future__ import annotations

import copy
import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from decimal import Decimal
from typing import Any, TypeVar

from credit_common.clock import Clock
from credit_common.errors import DomainError
from credit_common.idempotency import SeenRequest
from grant_service.domain.alerts import AlertLevel, BalanceState, state_of
from grant_service.domain.balances import RECURRING_PRIORITY, GrantView, exact_sum
from grant_service.domain.clocks import ClockKey
from grant_service.domain.events import EventFilter, EventPosition, EventScan, NewEvent, StoredEvent
from grant_service.domain.model import (
    Customer,
    CustomerNow,
    DebitHead,
    EntryType,
    Grant,
    GrantSource,
    LedgerEntry,
    NewGrant,
    SimulatedClock,
    StoredSchedule,
    StoredSubscription,
    Usage,
)
from grant_service.domain.revisions import RevisionWindow
from grant_service.domain.schedules import Pending
from grant_service.service_layer.context import GrantContext
from grant_service.service_layer.ports import DebitOrder, DebitRecord

T = TypeVar("T")
Pair = tuple[str, str]


class Conflict(Exception):
    """What a unique constraint of the database would refuse."""


@dataclass
class FakeStore:
    """The grant service's state, as the fakes keep it."""

    clocks: dict[str, SimulatedClock] = field(default_factory=dict)
    customers: dict[str, Customer] = field(default_factory=dict)
    currencies: dict[str, tuple[int, RevisionWindow]] = field(default_factory=dict)
    # (currency_key, revision, effective_time, rates)
    rate_sets: list[tuple[str, int, datetime, dict[str, Decimal]]] = field(default_factory=list)
    grants: dict[str, Grant] = field(default_factory=dict)
    ledger: list[LedgerEntry] = field(default_factory=list)
    request_ids: dict[Pair, SeenRequest[str]] = field(default_factory=dict)
    subscriptions: dict[str, StoredSubscription] = field(default_factory=dict)
    end_reported: set[str] = field(default_factory=set)
    schedules: dict[str, StoredSchedule] = field(default_factory=dict)
    events: list[StoredEvent] = field(default_factory=list)
    # (customer_key, currency_key, levels), in the order set
    alert_sets: list[tuple[str, str, tuple[AlertLevel, ...] | None]] = field(default_factory=list)
    alert_states: dict[Pair, frozenset[str]] = field(default_factory=dict)
    usages: dict[str, Usage] = field(default_factory=dict)
    seq: int = 0  # the last ledger or event sequence number handed out

    def next_seq(self) -> int:
        self.seq += 1
        return self.seq

    def pending(self, customer_key: str) -> Pending:
        """As adapters/catch_up.pending_columns: the earliest cursor start of its schedules, expiry of
        its grants not closed, and opening of its pending grants."""
        starts = [s.next_period_start for s in self.schedules.values() if s.customer_key == customer_key]
        grants = [g for g in self.grants.values() if g.customer_key == customer_key]
        expiries = [g.expire_time for g in grants if not g.closed and g.expire_time is not None]
        opens = [g.opens_at for g in grants if g.opens_at is not None]
        return Pending(
            min((t for t in starts if t is not None), default=None),
            min(expiries, default=None),
            min(opens, default=None),
        )


class _NotModelled:
    def __init__(self, what: str) -> None:
        self._what = what

    def __getattr__(self, name: str) -> Any:
        raise NotImplementedError(f"the in-memory fakes do not model {self._what}")


class FakeSimulatedClockRepository:
    def __init__(self, store: FakeStore) -> None:
        self.store = store

    def get(self, test_clock_id: str, *, for_update: bool = False) -> SimulatedClock | None:
        return self.store.clocks.get(test_clock_id)

    def frozen_time(self, test_clock_id: str) -> datetime | None:
        clock = self.store.clocks.get(test_clock_id)
        return None if clock is None else clock.frozen_time

    def frozen_times(self, test_clock_ids: Sequence[str]) -> dict[str, datetime]:
        return {k: self.store.clocks[k].frozen_time for k in test_clock_ids if k in self.store.clocks}

    def add(self, clock: SimulatedClock) -> None:
        if clock.test_clock_id in self.store.clocks:
            raise Conflict(clock.test_clock_id)
        self.store.clocks[clock.test_clock_id] = clock

    def set_frozen_time(self, test_clock_id: str, frozen_time: datetime) -> None:
        self.store.clocks[test_clock_id] = replace(self.store.clocks[test_clock_id], frozen_time=frozen_time)

    def list(self, after: tuple[datetime, str] | None, limit: int) -> list[SimulatedClock]:
        clocks = sorted(self.store.clocks.values(), key=lambda c: (c.create_time, c.test_clock_id), reverse=True)
        return [c for c in clocks if after is None or (c.create_time, c.test_clock_id) < after][:limit]

    def delete(self, test_clock_id: str) -> None:
        s = self.store
        customers = {k for k, c in s.customers.items() if c.clock_key == test_clock_id}
        grants = {k for k, g in s.grants.items() if g.clock_key == test_clock_id}
        s.ledger = [e for e in s.ledger if e.grant_id not in grants]
        s.usages = {k: u for k, u in s.usages.items() if u.customer_key not in customers}
        s.alert_states = {p: v for p, v in s.alert_states.items() if p[0] not in customers}
        s.grants = {k: g for k, g in s.grants.items() if k not in grants}
        s.schedules = {k: v for k, v in s.schedules.items() if v.clock_key != test_clock_id}
        s.subscriptions = {k: v for k, v in s.subscriptions.items() if v.clock_key != test_clock_id}
        s.customers = {k: c for k, c in s.customers.items() if k not in customers}
        s.clocks.pop(test_clock_id, None)


class FakeCustomerRepository:
    def __init__(self, store: FakeStore) -> None:
        self.store = store

    def get(self, customer_key: str) -> Customer | None:
        return self.store.customers.get(customer_key)

    def lock(self, customer_key: str) -> Customer | None:
        return self.store.customers.get(customer_key)

    def pending(self, customer_key: str) -> Pending:
        return self.store.pending(customer_key)

    def lock_many(self, customer_keys: Sequence[str]) -> list[Customer]:
        return [self.store.customers[k] for k in sorted(set(customer_keys)) if k in self.store.customers]

    def pending_many(self, customer_keys: Sequence[str]) -> dict[str, Pending]:
        return {k: self.store.pending(k) for k in set(customer_keys) if k in self.store.customers}

    def add_all(self, customers: Sequence[Customer]) -> None:
        for customer in customers:
            if customer.customer_key in self.store.customers:
                raise Conflict(customer.customer_key)
            self.store.customers[customer.customer_key] = customer


class FakeCurrencyRepository:
    def __init__(self, store: FakeStore) -> None:
        self.store = store

    def exists(self, currency_key: str) -> bool:
        s = self.store
        return (
            any(r[0] == currency_key for r in s.rate_sets)
            or any(v.currency_key == currency_key for v in s.schedules.values())
            or any(g.currency_key == currency_key for g in s.grants.values())
        )

    def revision(self, currency_key: str, *, for_update: bool = False) -> tuple[int, RevisionWindow] | None:
        return self.store.currencies.get(currency_key)

    def add(self, currency_key: str, revision: int, window: RevisionWindow) -> None:
        if currency_key in self.store.currencies:
            raise Conflict(currency_key)
        self.store.currencies[currency_key] = (revision, window)

    def set_revision(self, currency_key: str, revision: int, window: RevisionWindow) -> None:
        self.store.currencies[currency_key] = (revision, window)

    def add_rate_set(
        self, currency_key: str, revision: int, effective_time: datetime, rates: dict[str, Decimal]
    ) -> None:
        self.store.rate_sets.append((currency_key, revision, effective_time, dict(rates)))


class FakeRateRepository:
    def __init__(self, store: FakeStore) -> None:
        self.store = store

    def in_force(self, feature_key: str, at: datetime, version: int | None = None) -> dict[str, Decimal]:
        latest: dict[str, tuple[datetime, int, dict[str, Decimal]]] = {}
        for currency_key, revision, effective, rates in self.store.rate_sets:
            if effective <= at and (currency_key not in latest or (effective, revision) > latest[currency_key][:2]):
                latest[currency_key] = (effective, revision, rates)
        return {c: rates[feature_key] for c, (_, _, rates) in latest.items() if feature_key in rates}

    def feature_known(self, feature_key: str) -> bool:
        return any(feature_key in rates for *_, rates in self.store.rate_sets)


def _active_at(grant: Grant, at: datetime) -> bool:
    return (
        grant.effective_time <= at
        and (grant.expire_time is None or grant.expire_time > at)
        and (grant.void_time is None or grant.void_time > at)
    )


class FakeGrantRepository:
    def __init__(self, store: FakeStore) -> None:
        self.store = store

    def get(self, grant_id: str, *, for_update: bool = False) -> Grant | None:
        return self.store.grants.get(grant_id)

    def customer_of(self, grant_id: str) -> str | None:
        grant = self.store.grants.get(grant_id)
        return None if grant is None else grant.customer_key

    def active_at(self, customer_key: str, currency_key: str, at: datetime) -> list[Grant]:
        return sorted(
            (
                g
                for g in self.store.grants.values()
                if g.customer_key == customer_key and g.currency_key == currency_key and _active_at(g, at)
            ),
            key=lambda g: g.grant_id,
        )

    def list(
        self, customer_key: str, currency_key: str, subscription_id: str, after: tuple[datetime, str] | None, limit: int
    ) -> list[Grant]:
        grants = sorted(
            (
                g
                for g in self.store.grants.values()
                if g.customer_key == customer_key
                and (not currency_key or g.currency_key == currency_key)
                and (not subscription_id or g.subscription_id == subscription_id)
                and (after is None or (g.effective_time, g.grant_id) > after)
            ),
            key=lambda g: (g.effective_time, g.grant_id),
        )
        return grants[:limit]

    def add(self, grant: Grant) -> None:
        if grant.grant_id in self.store.grants:
            raise Conflict(grant.grant_id)
        self.store.grants[grant.grant_id] = grant

    def void(self, grant_id: str, void_time: datetime, reason: str) -> None:
        grant = self.store.grants[grant_id]
        self.store.grants[grant_id] = replace(grant, void_time=void_time, closed=True, reason=reason, opens_at=None)


def _append_entries(store: FakeStore, entries: Sequence[LedgerEntry], *, skip_conflicts: bool) -> None:
    ids = {e.entry_id for e in store.ledger}
    opened = {e.grant_id for e in store.ledger if e.opens}
    closed = {e.grant_id for e in store.ledger if e.closes}
    for entry in entries:
        conflict = (
            entry.entry_id in ids
            or (entry.opens and entry.grant_id in opened)
            or (entry.closes and entry.grant_id in closed)
        )
        if conflict:
            if skip_conflicts:
                continue
            raise Conflict(entry.entry_id)
        store.ledger.append(replace(entry, seq=store.next_seq()))
        ids.add(entry.entry_id)
        (opened if entry.opens else closed if entry.closes else set()).add(entry.grant_id)


class FakeLedgerRepository:
    def __init__(self, store: FakeStore) -> None:
        self.store = store

    def add(self, entry: LedgerEntry) -> None:
        _append_entries(self.store, [entry], skip_conflicts=False)

    def debits_by_grant(self, grant_ids: Sequence[str], at: datetime | None = None) -> dict[str, Decimal]:
        wanted = set(grant_ids)
        totals: dict[str, list[Decimal]] = {}
        for e in self.store.ledger:
            if e.grant_id in wanted and e.type is EntryType.DEBIT and (at is None or e.effective_time <= at):
                totals.setdefault(e.grant_id, []).append(-e.amount)
        return {grant_id: exact_sum(values) for grant_id, values in totals.items()}

    def list(
        self,
        customer_key: str,
        currency_key: str,
        start: datetime | None,
        end: datetime | None,
        entry_type: str | None,
        after: tuple[datetime, int] | None,
        limit: int,
    ) -> list[LedgerEntry]:
        entries = sorted(
            (
                e
                for e in self.store.ledger
                if e.customer_key == customer_key
                and (not currency_key or e.currency_key == currency_key)
                and (start is None or e.effective_time >= start)
                and (end is None or e.effective_time < end)
                and (not entry_type or e.type.value == entry_type)
                and (after is None or (e.effective_time, e.seq) > after)
            ),
            key=lambda e: (e.effective_time, e.seq),
        )
        return entries[:limit]


def _grant_of(new: NewGrant) -> Grant:
    stored = new.schedule
    return Grant(
        grant_id=new.grant_id,
        customer_key=stored.customer_key,
        currency_key=stored.currency_key,
        clock_key=stored.clock_key,
        source=GrantSource.RECURRING,
        subscription_id=stored.subscription_id,
        entitlement_key=stored.entitlement_key,
        period_index=new.period_index,
        amount=new.amount,
        effective_time=new.effective_time,
        expire_time=new.expire_time,
        priority=RECURRING_PRIORITY,
        void_time=None,
        reason="",
        schedule_id=stored.schedule_id,
        segment=new.segment.segment,
        opens_at=new.opens_at,
    )


class FakeIssuanceRepository:
    def __init__(self, store: FakeStore) -> None:
        self.store = store

    def _of(self, clock_key: ClockKey, customer_key: str | None, owner: Any) -> bool:
        return owner.customer_key == customer_key if customer_key is not None else owner.clock_key == clock_key

    def due_schedules(
        self, clock_key: ClockKey, now: datetime, customer_key: str | None, limit: int, *, skip_locked: bool
    ) -> list[StoredSchedule]:
        due = [
            s
            for s in self.store.schedules.values()
            if self._of(clock_key, customer_key, s) and s.next_period_start is not None and s.next_period_start <= now
        ]
        due.sort(key=lambda s: (s.next_period_start, s.schedule_id))
        return [copy.deepcopy(s) for s in due[:limit]]

    def _due(self, clock_key: ClockKey, customer_key: str | None, limit: int, when: Callable[[Grant], Any]) -> list:
        due = [g for g in self.store.grants.values() if self._of(clock_key, customer_key, g) and when(g) is not None]
        return sorted(due, key=lambda g: (when(g), g.grant_id))[:limit]

    def due_to_expire(
        self, clock_key: ClockKey, now: datetime, customer_key: str | None, limit: int, *, skip_locked: bool
    ) -> list[Grant]:
        def expiring(g: Grant) -> datetime | None:
            due = not g.closed and g.opens_at is None and g.expire_time is not None and g.expire_time <= now
            return g.expire_time if due else None

        return self._due(clock_key, customer_key, limit, expiring)

    def due_to_open(
        self, clock_key: ClockKey, now: datetime, customer_key: str | None, limit: int, *, skip_locked: bool
    ) -> list[Grant]:
        return self._due(
            clock_key,
            customer_key,
            limit,
            lambda g: g.opens_at if g.opens_at is not None and g.opens_at <= now else None,
        )

    def add_grants(self, grants: Sequence[NewGrant]) -> set[str]:
        issued = {(g.schedule_id, g.period_index, g.segment) for g in self.store.grants.values()}
        inserted = set()
        for new in grants:
            grant = _grant_of(new)
            key = (grant.schedule_id, grant.period_index, grant.segment)
            if key in issued:
                continue  # issued by another transaction: skipped
            issued.add(key)
            self.store.grants[grant.grant_id] = grant
            inserted.add(grant.grant_id)
        return inserted

    def add_entries(self, entries: Sequence[LedgerEntry]) -> None:
        _append_entries(self.store, entries, skip_conflicts=True)

    def opened(self, grant_ids: Sequence[str], closed: Sequence[str] = ()) -> None:
        closing = set(closed)
        for grant_id in grant_ids:
            self.store.grants[grant_id] = replace(
                self.store.grants[grant_id], opens_at=None, closed=grant_id in closing
            )

    def close(self, grant_ids: Sequence[str]) -> None:
        for grant_id in grant_ids:
            self.store.grants[grant_id] = replace(self.store.grants[grant_id], closed=True)

    def advance_cursors(self, schedule_ids: Sequence[str], next_index: int, next_start: datetime | None) -> None:
        for schedule_id in schedule_ids:
            stored = replace(self.store.schedules[schedule_id], next_period_index=next_index)
            assert stored.next_period_start == next_start, "the cursor's start is the schedule's period start"
            self.store.schedules[schedule_id] = stored

    def open_grants_of(self, schedule_id: str) -> list[Grant]:
        grants = (g for g in self.store.grants.values() if g.schedule_id == schedule_id and not g.closed)
        return sorted(grants, key=lambda g: g.grant_id)

    def grants_of_periods(self, schedule_id: str, periods: Sequence[int]) -> list[Grant]:
        wanted = set(periods)
        return [g for g in self.store.grants.values() if g.schedule_id == schedule_id and g.period_index in wanted]

    def set_expiry(self, grant_id: str, expire_time: datetime) -> None:
        self.store.grants[grant_id] = replace(self.store.grants[grant_id], expire_time=expire_time)

    def withdraw(self, grant_ids: Sequence[str]) -> None:
        gone = set(grant_ids)
        self.store.ledger = [e for e in self.store.ledger if e.grant_id not in gone]
        self.store.grants = {k: g for k, g in self.store.grants.items() if k not in gone}


class FakeRequestIdRepository:
    def __init__(self, store: FakeStore) -> None:
        self.store = store

    def get(self, scope: str, request_id: str) -> SeenRequest[str] | None:
        return self.store.request_ids.get((scope, request_id))

    def add(self, scope: str, request_id: str, fingerprint: str, result: str, now: datetime) -> None:
        if (scope, request_id) in self.store.request_ids:
            raise Conflict(request_id)
        self.store.request_ids[(scope, request_id)] = SeenRequest(fingerprint, result)


class FakeSubscriptionRepository:
    def __init__(self, store: FakeStore) -> None:
        self.store = store

    def get(self, subscription_id: str) -> StoredSubscription | None:
        return self.store.subscriptions.get(subscription_id)

    def lock_many(self, subscription_ids: Sequence[str]) -> list[StoredSubscription]:
        return [self.store.subscriptions[k] for k in sorted(set(subscription_ids)) if k in self.store.subscriptions]

    def add_all(self, subscriptions: Sequence[StoredSubscription]) -> None:
        for sub in subscriptions:
            if sub.subscription_id in self.store.subscriptions:
                raise Conflict(sub.subscription_id)
            self.store.subscriptions[sub.subscription_id] = sub

    def save_all(self, subscriptions: Sequence[StoredSubscription]) -> None:
        for sub in subscriptions:
            held = self.store.subscriptions[sub.subscription_id]
            self.store.subscriptions[sub.subscription_id] = replace(
                held,
                revision=sub.revision,
                end_time=sub.end_time,
                update_time=sub.update_time,
                revision_window=sub.revision_window,
            )

    def ended_unreported(
        self, clock_key: ClockKey, now: datetime, customer_key: str | None, limit: int, *, skip_locked: bool
    ) -> list[StoredSubscription]:
        ended = [
            s
            for s in self.store.subscriptions.values()
            if (s.customer_key == customer_key if customer_key is not None else s.clock_key == clock_key)
            and s.subscription_id not in self.store.end_reported
            and s.end_time is not None
            and s.end_time <= now
        ]
        return sorted(ended, key=lambda s: (s.end_time, s.subscription_id))[:limit]

    def mark_end_reported(self, subscription_ids: Sequence[str]) -> None:
        self.store.end_reported.update(subscription_ids)


class FakeScheduleRepository:
    def __init__(self, store: FakeStore) -> None:
        self.store = store

    def of_subscription(self, subscription_id: str, *, for_update: bool = False) -> list[StoredSchedule]:
        found = [s for s in self.store.schedules.values() if s.subscription_id == subscription_id]
        return [copy.deepcopy(s) for s in sorted(found, key=lambda s: s.schedule_id)]

    def add_all(self, schedules: Sequence[StoredSchedule]) -> None:
        for stored in schedules:
            taken = {(s.subscription_id, s.entitlement_key) for s in self.store.schedules.values()}
            if stored.schedule_id in self.store.schedules or (stored.subscription_id, stored.entitlement_key) in taken:
                raise Conflict(stored.schedule_id)
            self.store.schedules[stored.schedule_id] = copy.deepcopy(stored)

    def save(self, schedule: StoredSchedule) -> None:
        held = self.store.schedules[schedule.schedule_id]
        terms = replace(held.schedule, amounts=schedule.schedule.amounts, end_time=schedule.schedule.end_time)
        self.store.schedules[schedule.schedule_id] = replace(
            held, schedule=terms, position=schedule.position, removed=schedule.removed
        )


class FakeEventRepository:
    enabled = True

    def __init__(self, store: FakeStore, clock: Clock) -> None:
        self.store = store
        self._clock = clock

    def add(self, events: Sequence[NewEvent]) -> None:
        keys = {e.event.dedupe_key for e in self.store.events}
        for event in events:
            if event.dedupe_key in keys:
                continue
            keys.add(event.dedupe_key)
            position = EventPosition(0, self.store.next_seq())
            self.store.events.append(StoredEvent(position, self._clock.now(), event))

    def log_id(self) -> str:
        return "log_fake"

    def after(self, position: EventPosition | None, limit: int, where: EventFilter | None = None) -> list[StoredEvent]:
        found = [
            e
            for e in self.store.events
            if (position is None or e.position > position) and (where is None or where.matches(e.event))
        ]
        return found[:limit]

    def scan(self, position: EventPosition | None, limit: int, where: EventFilter) -> EventScan:
        """Examines every row after `position` up to the `limit`-th match (the bound on rows examined
        of an unindexed filter is not modelled)."""
        rows = [e for e in self.store.events if position is None or e.position > position]
        found: list[StoredEvent] = []
        for i, stored in enumerate(rows):
            if where.matches(stored.event):
                found.append(stored)
                if len(found) == limit:
                    return EventScan(found, stored.position, i == len(rows) - 1)
        return EventScan(found, rows[-1].position if rows else None, True)


class FakeAlertRepository:
    def __init__(self, store: FakeStore) -> None:
        self.store = store

    def version(self) -> int:
        return len(self.store.alert_sets)

    def configured(
        self, customer_key: str, currency_key: str
    ) -> tuple[tuple[AlertLevel, ...] | None, tuple[AlertLevel, ...] | None]:
        def latest(key: str) -> tuple[AlertLevel, ...] | None:
            found = [levels for c, k, levels in self.store.alert_sets if c == key and k == currency_key]
            return found[-1] if found else None

        return (latest(customer_key) if customer_key else None), latest("")

    def in_force(self, customer_key: str, currency_key: str, version: int) -> tuple[AlertLevel, ...] | None:
        own, default = self.configured(customer_key, currency_key)
        return own if own is not None else default

    def set(self, customer_key: str, currency_key: str, levels: Sequence[AlertLevel] | None, now: datetime) -> None:
        self.store.alert_sets.append((customer_key, currency_key, None if levels is None else tuple(levels)))

    def states_of(self, customer_keys: Sequence[str]) -> dict[Pair, frozenset[str]]:
        wanted = set(customer_keys)
        return {pair: state for pair, state in self.store.alert_states.items() if pair[0] in wanted}

    def save_states(self, states: dict[Pair, frozenset[str]]) -> None:
        self.store.alert_states.update(states)

    def current_of(self, customer_keys: Sequence[str]) -> dict[Pair, BalanceState]:
        wanted = set(customer_keys)
        grants: dict[Pair, list[tuple[Decimal, Decimal]]] = {}
        for g in self.store.grants.values():
            if g.customer_key in wanted and not g.closed and g.opens_at is None:
                grants.setdefault((g.customer_key, g.currency_key), []).append((g.amount, g.used))
        return {pair: state_of(found) for pair, found in grants.items()}


class FakeDebitAccountRepository:
    """`uow.accounts`: what a debit rule reads and records of its customer (its lock only reads)."""

    def __init__(self, store: FakeStore, events: FakeEventRepository) -> None:
        self.store = store
        self._events = events

    def head(self, order: DebitOrder) -> DebitHead | None:
        s = self.store
        customer = s.customers.get(order.customer_key)
        if customer is None:
            return None
        clock = s.clocks.get(customer.clock_key)
        return DebitHead(
            customer.clock_key,
            None if clock is None else clock.frozen_time,
            s.request_ids.get((order.scope, order.request_id)),
            s.pending(order.customer_key),
            self.open_grants(order.customer_key),
            len(s.alert_sets),  # as FakeAlertRepository.version
        )

    def open_grants(self, customer_key: str) -> list[GrantView]:
        grants = sorted(
            (g for g in self.store.grants.values() if g.customer_key == customer_key and not g.closed),
            key=lambda g: g.grant_id,
        )
        return [
            GrantView(
                g.grant_id,
                g.amount,
                g.used,
                g.priority,
                g.effective_time,
                g.expire_time,
                g.void_time,
                g.customer_key,
                g.currency_key,
                g.subscription_id,
                g.opens_at,
            )
            for g in grants
        ]

    def record(self, order: DebitOrder, record: DebitRecord) -> None:
        s, usage = self.store, record.usage
        if usage.usage_id in s.usages or any(u.request_id == usage.request_id for u in s.usages.values()):
            raise Conflict(usage.request_id)  # the usages' unique request_id: a twin committed first
        s.usages[usage.usage_id] = copy.copy(usage)
        for grant_id, used in record.totals:
            s.grants[grant_id] = replace(s.grants[grant_id], used=used)
        _append_entries(s, record.entries, skip_conflicts=False)
        if usage.request_id:
            FakeRequestIdRepository(s).add(
                order.scope, usage.request_id, order.fingerprint, usage.usage_id, usage.usage_time
            )
        if self._events.enabled:
            self._events.add(record.events)

    def recorded(self, usage_id: str) -> tuple[Usage, list[tuple[str, Decimal]]] | None:
        usage = self.store.usages.get(usage_id)
        if usage is None:
            return None
        debits = [
            (e.grant_id, -e.amount) for e in self.store.ledger if e.usage_id == usage_id and e.type is EntryType.DEBIT
        ]
        return copy.copy(usage), debits


class FakeDebitPort:
    """`DebitPort` over `FakeTransactions`: the orders of one call in one write transaction, in
    customer key order (a customer's own orders in the order given), as the SQL port's group runs
    them (credit_common.db.group_commit). A DomainError a rule raises is its order's answer and the
    others commit; any other failure rolls the transaction back and runs each order again in a
    write transaction of its own, whose failure is then that order's answer. `transactions` counts
    the write transactions it ran."""

    def __init__(self, transactions: FakeTransactions) -> None:
        self._transactions = transactions
        self.transactions = 0

    def make(self, orders: Sequence[DebitOrder], rule: Callable[[Any, DebitOrder], T]) -> list[T | Exception]:
        ordered = sorted(range(len(orders)), key=lambda i: orders[i].customer_key)

        def together(uow: FakeUnitOfWork) -> dict[int, T | Exception]:
            answers: dict[int, T | Exception] = {}
            for i in ordered:
                try:
                    answers[i] = rule(uow, orders[i])
                except DomainError as error:
                    answers[i] = error
            return answers

        try:
            self.transactions += 1
            answers = self._transactions.write(together)
        except Exception:
            answers = {}
            for i in ordered:
                self.transactions += 1
                try:
                    answers[i] = self._transactions.write(lambda uow, order=orders[i]: rule(uow, order))
                except Exception as error:
                    answers[i] = error
        return [answers[i] for i in range(len(orders))]


class FakeUnitOfWork:
    """`GrantUnitOfWork` over one transaction's copy of the store."""

    def __init__(self, store: FakeStore, clock: Clock) -> None:
        self.store = store
        self.clocks = FakeSimulatedClockRepository(store)
        self.customers = FakeCustomerRepository(store)
        self.currencies = FakeCurrencyRepository(store)
        self.grants = FakeGrantRepository(store)
        self.issuance = FakeIssuanceRepository(store)
        self.ledger = FakeLedgerRepository(store)
        self.rates = FakeRateRepository(store)
        self.request_ids = FakeRequestIdRepository(store)
        self.subscriptions = FakeSubscriptionRepository(store)
        self.schedules = FakeScheduleRepository(store)
        self.events = FakeEventRepository(store, clock)
        self.alerts = FakeAlertRepository(store)
        self.accounts = FakeDebitAccountRepository(store, self.events)
        self.webhooks = _NotModelled("webhooks")
        self.webhook_deliveries = _NotModelled("webhooks")


class FakeTransactions:
    """`Transactions` over a `FakeStore`: each transaction on a copy of it, kept if the work returns.
    `committed` counts the write transactions committed."""

    def __init__(self, store: FakeStore, clock: Clock) -> None:
        self.store = store
        self.clock = clock
        self.committed = 0
        self.debit_port = FakeDebitPort(self)
        self._generation = itertools.count(1)
        self._events_generation = 0

    def write(self, work: Callable[[FakeUnitOfWork], T]) -> T:
        copied = copy.deepcopy(self.store)
        result = work(FakeUnitOfWork(copied, self.clock))
        if len(copied.events) != len(self.store.events):
            self._events_generation = next(self._generation)
        self.store.__dict__.update(copied.__dict__)
        self.committed += 1
        return result

    def read(self, work: Callable[[FakeUnitOfWork], T]) -> T:
        return work(FakeUnitOfWork(copy.deepcopy(self.store), self.clock))

    def event_generation(self) -> int:
        return self._events_generation

    def wait_for_events(self, generation: int, timeout_s: float) -> None:
        return None  # one thread: nothing commits while it would wait


class FakeBalanceReads:
    """`BalanceReads` over a `FakeStore`: what a read transaction sees at the clock's now."""

    def __init__(self, store: FakeStore, clock: Clock) -> None:
        self.store = store
        self.clock = clock
        self.reads = 0

    def customer_now(self, customer_key: str, currency_key: str) -> tuple[datetime, CustomerNow | None]:
        self.reads += 1
        now = self.clock.now()
        customer = self.store.customers.get(customer_key)
        if customer is None:
            return now, None
        grants = tuple(
            g
            for g in self.store.grants.values()
            if g.customer_key == customer_key and g.currency_key == currency_key and not g.closed and _active_at(g, now)
        )
        return now, CustomerNow(customer.clock_key, self.store.pending(customer_key), grants)


def fake_context(clock: Clock, store: FakeStore | None = None, **settings: Any) -> GrantContext:
    """A use-case context over the fakes (as tests/support/grant_context.sql_context over SQL)."""
    store = store if store is not None else FakeStore()
    return GrantContext(
        transactions=FakeTransactions(store, clock),
        balance_reads=FakeBalanceReads(store, clock),
        clock=clock,
        **settings,
    )
