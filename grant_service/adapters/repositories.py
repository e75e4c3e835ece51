"""The repositories of the grant service's unit of work (service_layer/ports.py),
over one SQLAlchemy session: they own the SQL and hand out domain objects."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import Select, String, any_, bindparam, delete, insert, select, update
from sqlalchemy.dialects import postgresql
from sqlalchemy.orm import Session

from credit_common.clock import Clock
from credit_common.db.bulk import insert_ignoring_conflicts
from credit_common.db.chunks import chunks
from credit_common.db.keyset import keyset_after
from credit_common.idempotency import SeenRequest
from credit_common.metrics import tally_ledger
from grant_service.adapters.catch_up import pending_columns
from grant_service.adapters.debits import (
    debit_head,
    insert_request_id,
    open_grants,
    rates_version,
    record_debit,
    recorded_usage,
)
from grant_service.adapters.events import event_rows, wrote_events
from grant_service.adapters.locking import is_postgres, locked
from grant_service.adapters.mappers import (
    clock_of,
    encode_amounts,
    entry_of,
    grant_of,
    ledger_row,
    schedule_of,
    stored_schedule_of,
    stored_subscription_of,
    subscription_row,
)
from grant_service.adapters.orm import (
    ALERT_STATES,
    CURRENCIES,
    CUSTOMERS,
    RATES,
    SCHEDULES,
    SUBSCRIPTIONS,
    ClockRow,
    CurrencyRow,
    CustomerRow,
    GrantRow,
    LedgerEntryRow,
    RateSetRow,
    RequestIdRow,
    ScheduleRow,
    SubscriptionRow,
    UsageRow,
)
from grant_service.adapters.rates import RatesCache, feature_known, rates_in_force
from grant_service.domain.balances import RECURRING_PRIORITY, GrantView, exact_sum
from grant_service.domain.clocks import ClockKey
from grant_service.domain.model import (
    Customer,
    DebitHead,
    Grant,
    LedgerEntry,
    NewGrant,
    SimulatedClock,
    StoredSchedule,
    StoredSubscription,
    Usage,
)
from grant_service.domain.revisions import RevisionWindow
from grant_service.domain.schedules import Pending, Schedule
from grant_service.service_layer.ports import DebitOrder, DebitRecord


class SqlSimulatedClockRepository:
    def __init__(self, session: Session) -> None:
        self.session = session

    def get(self, test_clock_id: str, *, for_update: bool = False) -> SimulatedClock | None:
        query = select(ClockRow).where(ClockRow.test_clock_id == test_clock_id)
        row = self.session.scalars(locked(self.session, query) if for_update else query).first()
        return None if row is None else clock_of(row)

    def frozen_time(self, test_clock_id: str) -> datetime | None:
        return self.session.scalar(select(ClockRow.frozen_time).where(ClockRow.test_clock_id == test_clock_id))

    def frozen_times(self, test_clock_ids: Sequence[str]) -> dict[str, datetime]:
        if not test_clock_ids:
            return {}
        query = select(ClockRow.test_clock_id, ClockRow.frozen_time).where(
            ClockRow.test_clock_id.in_(list(test_clock_ids))
        )
        return {key: frozen for key, frozen in self.session.execute(query)}

    def add(self, clock: SimulatedClock) -> None:
        self.session.add(
            ClockRow(
                test_clock_id=clock.test_clock_id,
                name=clock.name,
                frozen_time=clock.frozen_time,
                create_time=clock.create_time,
            )
        )
        self.session.flush()

    def set_frozen_time(self, test_clock_id: str, frozen_time: datetime) -> None:
        self.session.execute(
            update(ClockRow).where(ClockRow.test_clock_id == test_clock_id).values(frozen_time=frozen_time)
        )

    def list(self, after: tuple[datetime, str] | None, limit: int) -> list[SimulatedClock]:
        query = select(ClockRow).where(
            keyset_after((ClockRow.create_time, ClockRow.test_clock_id), after, descending=True)
        )
        query = query.order_by(ClockRow.create_time.desc(), ClockRow.test_clock_id.desc()).limit(limit)
        return [clock_of(row) for row in self.session.scalars(query)]

    def delete(self, test_clock_id: str) -> None:
        session = self.session
        customers = select(CustomerRow.customer_key).where(CustomerRow.clock_key == test_clock_id)
        grants = select(GrantRow.grant_id).where(GrantRow.clock_key == test_clock_id)
        # Their usages through their DEBIT entries, by the ledger's customer index: every usage has one
        # (its credits are more than 0), and usages have no index by customer, which every debit would
        # pay for this one rare statement (migration 0010).
        debited = select(LedgerEntryRow.usage_id).where(
            LedgerEntryRow.customer_key.in_(customers), LedgerEntryRow.usage_id.is_not(None)
        )
        session.execute(delete(UsageRow).where(UsageRow.usage_id.in_(debited)))
        session.execute(delete(LedgerEntryRow).where(LedgerEntryRow.grant_id.in_(grants)))
        # Their alert state goes too; their events stay (the log is append-only), and so do alert levels
        # set for them (append-only: their highest id is the version that caches trust).
        session.execute(delete(ALERT_STATES).where(ALERT_STATES.c.customer_key.in_(customers)))
        session.execute(delete(GrantRow).where(GrantRow.clock_key == test_clock_id))
        session.execute(delete(ScheduleRow).where(ScheduleRow.clock_key == test_clock_id))
        session.execute(delete(SubscriptionRow).where(SubscriptionRow.clock_key == test_clock_id))
        session.execute(delete(CustomerRow).where(CustomerRow.clock_key == test_clock_id))
        session.execute(delete(ClockRow).where(ClockRow.test_clock_id == test_clock_id))


class SqlCustomerRepository:
    def __init__(self, session: Session) -> None:
        self.session = session

    def lock_many(self, customer_keys: Sequence[str]) -> list[Customer]:
        query = (
            select(CUSTOMERS.c.customer_key, CUSTOMERS.c.clock_key)
            .where(CUSTOMERS.c.customer_key.in_(list(customer_keys)))
            .order_by(CUSTOMERS.c.customer_key)
        )
        return [Customer(key, clock_key) for key, clock_key in self.session.execute(locked(self.session, query))]

    def add_all(self, customers: Sequence[Customer]) -> None:
        if customers:
            self.session.execute(
                insert(CUSTOMERS), [{"customer_key": c.customer_key, "clock_key": c.clock_key} for c in customers]
            )

    def get(self, customer_key: str) -> Customer | None:
        row = self.session.get(CustomerRow, customer_key)
        return None if row is None else Customer(row.customer_key, row.clock_key)

    def lock(self, customer_key: str) -> Customer | None:
        query = select(CustomerRow).where(CustomerRow.customer_key == customer_key)
        row = self.session.scalars(locked(self.session, query)).first()
        return None if row is None else Customer(row.customer_key, row.clock_key)

    def pending(self, customer_key: str) -> Pending:
        query = select(*pending_columns(CUSTOMERS.c.customer_key)).where(CUSTOMERS.c.customer_key == customer_key)
        row = self.session.execute(query).one()
        return Pending(row.next_issue, row.next_expiry, row.next_open)

    def pending_many(self, customer_keys: Sequence[str]) -> dict[str, Pending]:
        keys = sorted(set(customer_keys))
        found: dict[str, Pending] = {}
        for chunk in chunks(keys):
            query = select(CUSTOMERS.c.customer_key, *pending_columns(CUSTOMERS.c.customer_key)).where(
                CUSTOMERS.c.customer_key.in_(chunk)
            )
            for row in self.session.execute(query):
                found[row.customer_key] = Pending(row.next_issue, row.next_expiry, row.next_open)
        return found


def _window(window: RevisionWindow) -> dict[str, Any]:
    return {"revision_window_start": window.start, "revision_window_base": window.base}


class SqlCurrencyRepository:
    def __init__(self, session: Session) -> None:
        self.session = session

    def exists(self, currency_key: str) -> bool:
        for column in (RateSetRow.currency_key, ScheduleRow.currency_key, GrantRow.currency_key):
            if self.session.scalar(select(column).where(column == currency_key).limit(1)) is not None:
                return True
        return False

    def revision(self, currency_key: str, *, for_update: bool = False) -> tuple[int, RevisionWindow] | None:
        query = select(CurrencyRow.revision, CurrencyRow.revision_window_start, CurrencyRow.revision_window_base).where(
            CurrencyRow.currency_key == currency_key
        )
        row = self.session.execute(locked(self.session, query) if for_update else query).first()
        if row is None:
            return None
        return row.revision, RevisionWindow(row.revision_window_start, row.revision_window_base)

    def add(self, currency_key: str, revision: int, window: RevisionWindow) -> None:
        self.session.execute(insert(CURRENCIES).values(currency_key=currency_key, revision=revision, **_window(window)))

    def set_revision(self, currency_key: str, revision: int, window: RevisionWindow) -> None:
        self.session.execute(
            update(CURRENCIES)
            .where(CurrencyRow.currency_key == currency_key)
            .values(revision=revision, **_window(window))
        )

    def add_rate_set(
        self, currency_key: str, revision: int, effective_time: datetime, rates: dict[str, Decimal]
    ) -> None:
        rate_set = RateSetRow(currency_key=currency_key, revision=revision, effective_time=effective_time)
        self.session.add(rate_set)
        self.session.flush()
        if rates:
            self.session.execute(
                insert(RATES),
                [
                    {"rate_set_id": rate_set.rate_set_id, "feature_key": feature, "credits_per_unit": rate}
                    for feature, rate in rates.items()
                ],
            )


class SqlGrantRepository:
    def __init__(self, session: Session) -> None:
        self.session = session

    def get(self, grant_id: str, *, for_update: bool = False) -> Grant | None:
        if not for_update:
            row = self.session.get(GrantRow, grant_id)
        else:
            query = select(GrantRow).where(GrantRow.grant_id == grant_id)
            row = self.session.scalars(locked(self.session, query)).first()
        return None if row is None else grant_of(row)

    def customer_of(self, grant_id: str) -> str | None:
        return self.session.scalar(select(GrantRow.customer_key).where(GrantRow.grant_id == grant_id))

    def active_at(self, customer_key: str, currency_key: str, at: datetime) -> list[Grant]:
        query = (
            select(GrantRow)
            .where(
                GrantRow.customer_key == customer_key,
                GrantRow.currency_key == currency_key,
                GrantRow.effective_time <= at,
                (GrantRow.expire_time.is_(None)) | (GrantRow.expire_time > at),
                (GrantRow.void_time.is_(None)) | (GrantRow.void_time > at),
            )
            .order_by(GrantRow.grant_id)
        )
        return [grant_of(row) for row in self.session.scalars(query)]

    def list(
        self, customer_key: str, currency_key: str, subscription_id: str, after: tuple[datetime, str] | None, limit: int
    ) -> list[Grant]:
        query = select(GrantRow).where(GrantRow.customer_key == customer_key)
        if currency_key:
            query = query.where(GrantRow.currency_key == currency_key)
        if subscription_id:
            query = query.where(GrantRow.subscription_id == subscription_id)
        query = query.where(keyset_after((GrantRow.effective_time, GrantRow.grant_id), after))
        query = query.order_by(GrantRow.effective_time, GrantRow.grant_id).limit(limit)
        return [grant_of(row) for row in self.session.scalars(query)]

    def add(self, grant: Grant) -> None:
        self.session.add(
            GrantRow(
                grant_id=grant.grant_id,
                customer_key=grant.customer_key,
                currency_key=grant.currency_key,
                clock_key=grant.clock_key,
                source=grant.source.value,
                subscription_id=grant.subscription_id,
                schedule_id=grant.schedule_id,
                entitlement_key=grant.entitlement_key,
                period_index=grant.period_index,
                segment=grant.segment,
                amount=grant.amount,
                used=grant.used,
                effective_time=grant.effective_time,
                expire_time=grant.expire_time,
                priority=grant.priority,
                void_time=grant.void_time,
                reason=grant.reason,
                closed=grant.closed,
                opens_at=grant.opens_at,
            )
        )
        self.session.flush()

    def void(self, grant_id: str, void_time: datetime, reason: str) -> None:
        self.session.execute(
            update(GrantRow)
            .where(GrantRow.grant_id == grant_id)
            .values(void_time=void_time, closed=True, reason=reason, opens_at=None)
        )


class SqlLedgerRepository:
    def __init__(self, session: Session) -> None:
        self.session = session

    def add(self, entry: LedgerEntry) -> None:
        row = ledger_row(entry)
        self.session.add(LedgerEntryRow(**row))
        self.session.flush()
        tally_ledger(self.session, [row])

    def debits_by_grant(self, grant_ids: Sequence[str], at: datetime | None = None) -> dict[str, Decimal]:
        """Summed exactly in Python."""
        totals: dict[str, list[Decimal]] = defaultdict(list)
        for chunk in chunks(grant_ids):
            query = select(LedgerEntryRow.grant_id, LedgerEntryRow.amount).where(
                LedgerEntryRow.grant_id.in_(chunk), LedgerEntryRow.type == "DEBIT"
            )
            if at is not None:
                query = query.where(LedgerEntryRow.effective_time <= at)
            for grant_id, amount in self.session.execute(query):
                totals[grant_id].append(-amount)
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
        query = select(LedgerEntryRow).where(LedgerEntryRow.customer_key == customer_key)
        if currency_key:
            query = query.where(LedgerEntryRow.currency_key == currency_key)
        if start is not None:
            query = query.where(LedgerEntryRow.effective_time >= start)
        if end is not None:
            query = query.where(LedgerEntryRow.effective_time < end)
        if entry_type:
            query = query.where(LedgerEntryRow.type == entry_type)
        query = query.where(keyset_after((LedgerEntryRow.effective_time, LedgerEntryRow.seq), after))
        query = query.order_by(LedgerEntryRow.effective_time, LedgerEntryRow.seq).limit(limit)
        return [entry_of(row) for row in self.session.scalars(query)]


class SqlRequestIdRepository:
    def __init__(self, session: Session) -> None:
        self.session = session

    def get(self, scope: str, request_id: str) -> SeenRequest[str] | None:
        row = self.session.get(RequestIdRow, (scope, request_id))
        return None if row is None else SeenRequest(row.fingerprint, row.resource_id)

    def add(self, scope: str, request_id: str, fingerprint: str, result: str, now: datetime) -> None:
        insert_request_id(self.session.connection(), request_id_row(scope, request_id, fingerprint, result, now))


def request_id_row(scope: str, request_id: str, fingerprint: str, resource_id: str, now: datetime) -> dict[str, Any]:
    """The row of `request_ids` that records `request_id` in `scope`."""
    return {
        "scope": scope,
        "request_id": request_id,
        "fingerprint": fingerprint,
        "resource_id": resource_id,
        "create_time": now,
    }


class SqlDebitAccountRepository:
    """DebitAccountRepository: a debit's customer, read and written through adapters/debits.py (in a
    debit group, from and into the group's sets)."""

    def __init__(self, session: Session, clock: Clock | None = None, *, events: bool = True) -> None:
        self.session = session
        self._clock = clock
        self._events = events

    def head(self, order: DebitOrder) -> DebitHead | None:
        return debit_head(self.session, order.customer_key, order.scope, order.request_id)

    def open_grants(self, customer_key: str) -> list[GrantView]:
        return open_grants(self.session, customer_key)

    def record(self, order: DebitOrder, record: DebitRecord) -> None:
        events = record.events if self._events else ()
        rows = []
        if events:
            rows = event_rows(events, self._clock.now() if self._clock is not None else record.usage.usage_time)
        record_debit(self.session, order, record, rows)
        if events:
            wrote_events(self.session)

    def recorded(self, usage_id: str) -> tuple[Usage, list[tuple[str, Decimal]]] | None:
        return recorded_usage(self.session, usage_id)


class SqlRateRepository:
    def __init__(self, session: Session, cache: RatesCache | None = None) -> None:
        self.session = session
        self.cache = cache

    def in_force(self, feature_key: str, at: datetime) -> dict[str, Decimal]:
        # A debit's head read the number of rate sets the transaction sees: the cache's key.
        version = rates_version(self.session)
        if version is None or self.cache is None:
            return rates_in_force(self.session, feature_key, at)
        return self.cache.rates_in_force(self.session, feature_key, at, version)

    def feature_known(self, feature_key: str) -> bool:
        return feature_known(self.session, feature_key)


# The sweep reads plain rows (Core), not ORM instances (building them is a visible share of a catch-up
# batch: docs/performance.md); the schedules are not in the session's identity map.
_DUE_COLUMNS = [c for c in SCHEDULES.c if c.key != "next_period_start"]
_ZERO = Decimal(0)
_ADVANCE = update(SCHEDULES).values(next_period_index=bindparam("b_index"), next_period_start=bindparam("b_start"))
_ADVANCE_IN = _ADVANCE.where(SCHEDULES.c.schedule_id.in_(bindparam("ids", expanding=True)))
_ADVANCE_ANY = _ADVANCE.where(SCHEDULES.c.schedule_id == any_(bindparam("ids", type_=postgresql.ARRAY(String))))


class SqlIssuanceRepository:
    def __init__(self, session: Session) -> None:
        self.session = session

    def due_schedules(
        self, clock_key: ClockKey, now: datetime, customer_key: str | None, limit: int, *, skip_locked: bool
    ) -> list[StoredSchedule]:
        query = select(*_DUE_COLUMNS).where(SCHEDULES.c.next_period_start <= now)
        if customer_key is not None:
            query = query.where(SCHEDULES.c.customer_key == customer_key)
        else:
            query = query.where(SCHEDULES.c.clock_key == clock_key)
        # The sweep (SKIP LOCKED, never waits) orders by the indexed column only: with a tie-break on
        # schedule_id (not in ix_schedules_due), a storm of N schedules due at one instant was sorted
        # whole for every batch (quadratic in the storm's size; docs/performance.md). A catch-up that
        # waits for locks keeps the tie-break, so that such catch-ups lock in one stable order.
        order = [SCHEDULES.c.next_period_start]
        if not skip_locked:
            order.append(SCHEDULES.c.schedule_id)
        query = query.order_by(*order).limit(limit)
        rows = self.session.execute(locked(self.session, query, skip_locked=skip_locked)).all()
        # A storm's schedules share their terms: each distinct terms decoded once, one Schedule for all.
        terms: dict[tuple, Schedule] = {}
        result = []
        for row in rows:
            key = (row.anchor_time, row.cadence, row.amounts, row.end_time)
            schedule = terms.get(key)
            if schedule is None:
                schedule = terms[key] = schedule_of(row)
            result.append(stored_schedule_of(row, schedule))
        return result

    def _due_grants(
        self, query: Select, order: Any, clock_key: ClockKey, customer_key: str | None, limit: int, skip_locked: bool
    ) -> list[Grant]:
        if customer_key is not None:
            query = query.where(GrantRow.customer_key == customer_key)
        else:
            query = query.where(GrantRow.clock_key == clock_key)
        # As in due_schedules: the tie-break only for a catch-up that waits for locks.
        query = query.order_by(order) if skip_locked else query.order_by(order, GrantRow.grant_id)
        rows = self.session.scalars(locked(self.session, query.limit(limit), skip_locked=skip_locked))
        return [grant_of(row) for row in rows]

    def due_to_expire(
        self, clock_key: ClockKey, now: datetime, customer_key: str | None, limit: int, *, skip_locked: bool
    ) -> list[Grant]:
        query = select(GrantRow).where(
            GrantRow.closed.is_(False), GrantRow.expire_time <= now, GrantRow.opens_at.is_(None)
        )
        return self._due_grants(query, GrantRow.expire_time, clock_key, customer_key, limit, skip_locked)

    def due_to_open(
        self, clock_key: ClockKey, now: datetime, customer_key: str | None, limit: int, *, skip_locked: bool
    ) -> list[Grant]:
        query = select(GrantRow).where(GrantRow.opens_at <= now)
        return self._due_grants(query, GrantRow.opens_at, clock_key, customer_key, limit, skip_locked)

    def add_grants(self, grants: Sequence[NewGrant]) -> set[str]:
        rows = []
        for grant in grants:
            schedule, segment = grant.schedule, grant.segment
            rows.append(
                {
                    "grant_id": grant.grant_id,
                    "customer_key": schedule.customer_key,
                    "currency_key": schedule.currency_key,
                    "clock_key": schedule.clock_key,
                    "source": "RECURRING",
                    "subscription_id": schedule.subscription_id,
                    "schedule_id": schedule.schedule_id,
                    "entitlement_key": schedule.entitlement_key,
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
                    "opens_at": grant.opens_at,
                }
            )
        return insert_ignoring_conflicts(self.session, GrantRow, rows, "grant_id")

    def add_entries(self, entries: Sequence[LedgerEntry]) -> None:
        rows = [ledger_row(entry) for entry in entries]
        inserted = insert_ignoring_conflicts(self.session, LedgerEntryRow, rows, "entry_id")
        tally_ledger(self.session, (row for row in rows if row["entry_id"] in inserted))

    def opened(self, grant_ids: Sequence[str], closed: Sequence[str] = ()) -> None:
        if not grant_ids:
            return
        closing = set(closed)
        self.session.execute(
            update(GrantRow),
            [{"grant_id": g, "opens_at": None, "closed": g in closing} for g in grant_ids],
        )

    def close(self, grant_ids: Sequence[str]) -> None:
        if grant_ids:
            self.session.execute(update(GrantRow), [{"grant_id": g, "closed": True} for g in grant_ids])

    def advance_cursors(self, schedule_ids: Sequence[str], next_index: int, next_start: datetime | None) -> None:
        """One statement for them all (an ORM bulk UPDATE by primary key spends its time building
        per-row parameters: docs/performance.md). PostgreSQL takes the ids as one array (an IN list
        of 500 placeholders was rendered and parsed for every batch)."""
        values = {"b_index": next_index, "b_start": next_start}
        if is_postgres(self.session):
            self.session.execute(_ADVANCE_ANY, {"ids": list(schedule_ids), **values})
            return
        for chunk in chunks(schedule_ids, 1000):
            self.session.execute(_ADVANCE_IN, {"ids": list(chunk), **values})

    def open_grants_of(self, schedule_id: str) -> list[Grant]:
        query = (
            select(GrantRow)
            .where(GrantRow.schedule_id == schedule_id, GrantRow.closed.is_(False))
            .order_by(GrantRow.grant_id)
            .execution_options(populate_existing=True)
        )
        return [grant_of(row) for row in self.session.scalars(locked(self.session, query))]

    def grants_of_periods(self, schedule_id: str, periods: Sequence[int]) -> list[Grant]:
        query = (
            select(GrantRow)
            .where(GrantRow.schedule_id == schedule_id, GrantRow.period_index.in_(list(periods)))
            .execution_options(populate_existing=True)
        )
        return [grant_of(row) for row in self.session.scalars(query)]

    def set_expiry(self, grant_id: str, expire_time: datetime) -> None:
        self.session.execute(update(GrantRow).where(GrantRow.grant_id == grant_id).values(expire_time=expire_time))

    def withdraw(self, grant_ids: Sequence[str]) -> None:
        if not grant_ids:
            return
        self.session.execute(delete(LedgerEntryRow).where(LedgerEntryRow.grant_id.in_(list(grant_ids))))
        self.session.execute(delete(GrantRow).where(GrantRow.grant_id.in_(list(grant_ids))))


class SqlSubscriptionRepository:
    """Core statements, no ORM instances: what a batch reads is not kept in the session, and what it
    adds goes in one executemany INSERT per table."""

    def __init__(self, session: Session) -> None:
        self.session = session

    def get(self, subscription_id: str) -> StoredSubscription | None:
        query = select(SUBSCRIPTIONS).where(SUBSCRIPTIONS.c.subscription_id == subscription_id)
        row = self.session.execute(query).first()
        return None if row is None else stored_subscription_of(row)

    def lock_many(self, subscription_ids: Sequence[str]) -> list[StoredSubscription]:
        query = (
            select(SUBSCRIPTIONS)
            .where(SUBSCRIPTIONS.c.subscription_id.in_(list(subscription_ids)))
            .order_by(SUBSCRIPTIONS.c.subscription_id)
        )
        return [stored_subscription_of(row) for row in self.session.execute(locked(self.session, query))]

    def add_all(self, subscriptions: Sequence[StoredSubscription]) -> None:
        if subscriptions:
            self.session.execute(
                insert(SUBSCRIPTIONS),
                [subscription_row(s) for s in subscriptions],
            )

    def save_all(self, subscriptions: Sequence[StoredSubscription]) -> None:
        if subscriptions:
            self.session.execute(
                update(SubscriptionRow),
                [
                    {
                        "subscription_id": s.subscription_id,
                        "revision": s.revision,
                        "end_time": s.end_time,
                        "update_time": s.update_time,
                        "revision_window_start": s.revision_window.start,
                        "revision_window_base": s.revision_window.base,
                    }
                    for s in subscriptions
                ],
            )

    def ended_unreported(
        self, clock_key: ClockKey, now: datetime, customer_key: str | None, limit: int, *, skip_locked: bool
    ) -> list[StoredSubscription]:
        query = select(SUBSCRIPTIONS).where(SUBSCRIPTIONS.c.end_reported.is_(False), SUBSCRIPTIONS.c.end_time <= now)
        if customer_key is not None:
            query = query.where(SUBSCRIPTIONS.c.customer_key == customer_key)
        else:
            query = query.where(SUBSCRIPTIONS.c.clock_key == clock_key)
        query = query.order_by(SUBSCRIPTIONS.c.end_time, SUBSCRIPTIONS.c.subscription_id).limit(limit)
        rows = self.session.execute(locked(self.session, query, skip_locked=skip_locked))
        return [stored_subscription_of(row) for row in rows]

    def mark_end_reported(self, subscription_ids: Sequence[str]) -> None:
        if subscription_ids:
            self.session.execute(
                update(SUBSCRIPTIONS)
                .where(SUBSCRIPTIONS.c.subscription_id.in_(list(subscription_ids)))
                .values(end_reported=True)
            )


def _schedule_terms(stored: StoredSchedule) -> dict[str, Any]:
    """The columns of `schedules` that a revision may change."""
    return {
        "end_time": stored.schedule.end_time,
        "amounts": encode_amounts(stored.schedule.amounts),
        "position": stored.position,
        "removed": stored.removed,
        "next_period_start": stored.next_period_start,
    }


class SqlScheduleRepository:
    def __init__(self, session: Session) -> None:
        self.session = session

    def of_subscription(self, subscription_id: str, *, for_update: bool = False) -> list[StoredSchedule]:
        query = (
            select(SCHEDULES).where(SCHEDULES.c.subscription_id == subscription_id).order_by(SCHEDULES.c.schedule_id)
        )
        rows = self.session.execute(locked(self.session, query) if for_update else query)
        return [stored_schedule_of(row) for row in rows]

    def add_all(self, schedules: Sequence[StoredSchedule]) -> None:
        if not schedules:
            return
        rows = [
            {
                "schedule_id": s.schedule_id,
                "subscription_id": s.subscription_id,
                "customer_key": s.customer_key,
                "clock_key": s.clock_key,
                "entitlement_key": s.entitlement_key,
                "currency_key": s.currency_key,
                "cadence": s.schedule.cadence.value,
                "anchor_time": s.schedule.anchor,
                "next_period_index": s.next_period_index,
                **_schedule_terms(s),
            }
            for s in schedules
        ]
        self.session.execute(insert(SCHEDULES), rows)

    def save(self, schedule: StoredSchedule) -> None:
        self.session.execute(
            update(SCHEDULES).where(SCHEDULES.c.schedule_id == schedule.schedule_id).values(**_schedule_terms(schedule))
        )
