"""The SQL unit of work of the catalog: one SQLAlchemy session and transaction, and its
repositories (adapters/repositories.py), run by the shared transaction runner
(credit_common.db.transactions)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from sqlalchemy import Engine
from sqlalchemy.orm import Session

from catalog_service.adapters.repositories import (
    PublishedVersions,
    SqlCreditCurrencyRepository,
    SqlCustomerRepository,
    SqlFeatureRepository,
    SqlHandoffRepository,
    SqlPlanRepository,
    SqlRequestIdRepository,
    SqlSubscriptionRepository,
)
from credit_common.db.engine import session_factories
from credit_common.db.transactions import RETRY, RetryPolicy, Transactions

T = TypeVar("T")


class SqlCatalogUnitOfWork:
    def __init__(self, session: Session, published_versions: PublishedVersions) -> None:
        self.session = session
        self.features = SqlFeatureRepository(session)
        self.currencies = SqlCreditCurrencyRepository(session)
        self.plans = SqlPlanRepository(session, published_versions)
        self.customers = SqlCustomerRepository(session)
        self.subscriptions = SqlSubscriptionRepository(session)
        self.idempotency = SqlRequestIdRepository(session)
        self.outbox = SqlHandoffRepository(session)


class SqlCatalogTransactions:
    """`Transactions` (service_layer/unit_of_work.py) over an engine: writes on its write sessions
    (on SQLite they take the write lock up front), reads on its read sessions."""

    def __init__(self, engine: Engine, retry: RetryPolicy = RETRY) -> None:
        self._transactions = Transactions.of(session_factories(engine), retry)
        self._published_versions = PublishedVersions()  # one database: one set of versions

    def _unit(self, session: Session) -> SqlCatalogUnitOfWork:
        return SqlCatalogUnitOfWork(session, self._published_versions)

    def write(self, work: Callable[[SqlCatalogUnitOfWork], T]) -> T:
        return self._transactions.write(lambda session: work(self._unit(session)))

    def read(self, work: Callable[[SqlCatalogUnitOfWork], T]) -> T:
        return self._transactions.read(lambda session: work(self._unit(session)))
