"""The catalog's unit of work: one transaction and its repositories."""

from __future__ import annotations

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from catalog_service.adapters.repositories import (
    CreditCurrencyRepository,
    CustomerRepository,
    FeatureRepository,
    IdempotencyRepository,
    OutboxRepository,
    PlanRepository,
    PublishedVersions,
    SubscriptionRepository,
)
from credit_common.db.engine import session_factories
from credit_common.db.uow import SqlAlchemyUnitOfWork


class CatalogUnitOfWork(SqlAlchemyUnitOfWork):
    features: FeatureRepository
    currencies: CreditCurrencyRepository
    plans: PlanRepository
    customers: CustomerRepository
    subscriptions: SubscriptionRepository
    idempotency: IdempotencyRepository
    outbox: OutboxRepository

    def __init__(self, session_factory: sessionmaker[Session], published_versions: PublishedVersions) -> None:
        super().__init__(session_factory)
        self._published_versions = published_versions

    def _open_repositories(self) -> None:
        self.features = FeatureRepository(self.session)
        self.currencies = CreditCurrencyRepository(self.session)
        self.plans = PlanRepository(self.session, self._published_versions)
        self.customers = CustomerRepository(self.session)
        self.subscriptions = SubscriptionRepository(self.session)
        self.idempotency = IdempotencyRepository(self.session)
        self.outbox = OutboxRepository(self.session)


class UnitsOfWork:
    """Makes units of work: `read()` for queries, `write()` for anything that
    writes (on SQLite it takes the write lock up front)."""

    def __init__(self, engine: Engine) -> None:
        self._factories = session_factories(engine)
        self._published_versions = PublishedVersions()  # one database: one set of versions

    def read(self) -> CatalogUnitOfWork:
        return CatalogUnitOfWork(self._factories.read, self._published_versions)

    def write(self) -> CatalogUnitOfWork:
        return CatalogUnitOfWork(self._factories.write, self._published_versions)
