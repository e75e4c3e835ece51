"""The SQL unit of work of the grant service: one SQLAlchemy session and
transaction, and its repositories (adapters/repositories.py)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.orm import Session

from credit_common.db.engine import CONFLICT_SQLSTATES, SessionFactories, sqlstate
from grant_service.adapters.repositories import (
    SqlCurrencyRepository,
    SqlCurrencyRevisionRepository,
    SqlCustomerRepository,
    SqlGrantRepository,
    SqlIssuanceRepository,
    SqlLedgerRepository,
    SqlRequestIdRepository,
    SqlScheduleRepository,
    SqlSubscriptionRepository,
    SqlTestClockRepository,
)

T = TypeVar("T")


class SqlGrantUnitOfWork:
    def __init__(self, session: Session) -> None:
        self.session = session
        self.clocks = SqlTestClockRepository(session)
        self.customers = SqlCustomerRepository(session)
        self.currencies = SqlCurrencyRepository(session)
        self.grants = SqlGrantRepository(session)
        self.issuance = SqlIssuanceRepository(session)
        self.ledger = SqlLedgerRepository(session)
        self.request_ids = SqlRequestIdRepository(session)
        self.subscriptions = SqlSubscriptionRepository(session)
        self.schedules = SqlScheduleRepository(session)
        self.currency_revisions = SqlCurrencyRevisionRepository(session)


class SqlUnitsOfWork:
    """`UnitsOfWork` (service_layer/unit_of_work.py) over the service's session factories: writes
    on the write factory (on SQLite, it takes the write lock up front), reads on the read one."""

    def __init__(self, factories: SessionFactories, attempts: int = 3) -> None:
        self._factories = factories
        self._attempts = attempts

    def write(self, work: Callable[[SqlGrantUnitOfWork], T]) -> T:
        for attempt in range(self._attempts):
            try:
                with self._factories.write() as session, session.begin():
                    return work(SqlGrantUnitOfWork(session))
            except (IntegrityError, OperationalError) as error:
                retryable = isinstance(error, IntegrityError) or sqlstate(error) in CONFLICT_SQLSTATES
                if not retryable or attempt == self._attempts - 1:
                    raise
        raise AssertionError("unreachable")

    def read(self, work: Callable[[SqlGrantUnitOfWork], T]) -> T:
        with self._factories.read() as session, session.begin():
            return work(SqlGrantUnitOfWork(session))
