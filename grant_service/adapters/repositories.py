"""The repositories of the grant service's unit of work (service_layer/ports.py),
over one SQLAlchemy session: they own the SQL and hand out domain objects."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from credit_common.db.keyset import keyset_after
from credit_common.idempotency import SeenRequest
from grant_service.adapters.orm import (
    ClockRow,
    CustomerRow,
    GrantRow,
    LedgerEntryRow,
    RequestIdRow,
    ScheduleRow,
    SubscriptionRow,
    UsageRow,
)
from grant_service.adapters.repository import (
    clock_of,
    currency_exists,
    debits_by_grant,
    entry_of,
    grant_of,
    grants_active_at,
    insert_request_id,
    lock_customer,
    locked,
    pending,
)
from grant_service.domain.model import Customer, Grant, LedgerEntry, TestClock
from grant_service.domain.schedules import Pending


class SqlTestClockRepository:
    def __init__(self, session: Session) -> None:
        self.session = session

    def get(self, test_clock_id: str, *, for_update: bool = False) -> TestClock | None:
        query = select(ClockRow).where(ClockRow.test_clock_id == test_clock_id)
        row = self.session.scalars(locked(self.session, query) if for_update else query).first()
        return None if row is None else clock_of(row)

    def frozen_time(self, test_clock_id: str) -> datetime | None:
        return self.session.scalar(select(ClockRow.frozen_time).where(ClockRow.test_clock_id == test_clock_id))

    def add(self, clock: TestClock) -> None:
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

    def list(self, after: tuple[datetime, str] | None, limit: int) -> list[TestClock]:
        query = select(ClockRow).where(
            keyset_after((ClockRow.create_time, ClockRow.test_clock_id), after, descending=True)
        )
        query = query.order_by(ClockRow.create_time.desc(), ClockRow.test_clock_id.desc()).limit(limit)
        return [clock_of(row) for row in self.session.scalars(query)]

    def delete(self, test_clock_id: str) -> None:
        session = self.session
        customers = select(CustomerRow.customer_key).where(CustomerRow.clock_key == test_clock_id)
        grants = select(GrantRow.grant_id).where(GrantRow.clock_key == test_clock_id)
        session.execute(delete(LedgerEntryRow).where(LedgerEntryRow.grant_id.in_(grants)))
        session.execute(delete(UsageRow).where(UsageRow.customer_key.in_(customers)))
        session.execute(delete(GrantRow).where(GrantRow.clock_key == test_clock_id))
        session.execute(delete(ScheduleRow).where(ScheduleRow.clock_key == test_clock_id))
        session.execute(delete(SubscriptionRow).where(SubscriptionRow.clock_key == test_clock_id))
        session.execute(delete(CustomerRow).where(CustomerRow.clock_key == test_clock_id))
        session.execute(delete(ClockRow).where(ClockRow.test_clock_id == test_clock_id))


class SqlCustomerRepository:
    def __init__(self, session: Session) -> None:
        self.session = session

    def get(self, customer_key: str) -> Customer | None:
        row = self.session.get(CustomerRow, customer_key)
        return None if row is None else Customer(row.customer_key, row.clock_key)

    def lock(self, customer_key: str) -> Customer | None:
        row = lock_customer(self.session, customer_key)
        return None if row is None else Customer(row.customer_key, row.clock_key)

    def pending(self, customer_key: str) -> Pending:
        return pending(self.session, customer_key)


class SqlCurrencyRepository:
    def __init__(self, session: Session) -> None:
        self.session = session

    def exists(self, currency_key: str) -> bool:
        return currency_exists(self.session, currency_key)


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
        return [grant_of(row) for row in grants_active_at(self.session, customer_key, currency_key, at)]

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

    def add(self, entry: dict[str, Any]) -> None:
        self.session.add(LedgerEntryRow(**entry))
        self.session.flush()

    def debits_by_grant(self, grant_ids: Sequence[str], at: datetime | None = None) -> dict[str, Decimal]:
        return debits_by_grant(self.session, grant_ids, at)

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
        insert_request_id(
            self.session,
            {
                "scope": scope,
                "request_id": request_id,
                "fingerprint": fingerprint,
                "resource_id": result,
                "create_time": now,
            },
        )
