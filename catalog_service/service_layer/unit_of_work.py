"""The catalog's unit of work: one transaction and its repositories."""

from __future__ import annotations

from sqlalchemy import Engine

from catalog_service.adapters.repositories import (
    CreditCurrencyRepository,
    CustomerRepository,
    FeatureRepository,
    IdempotencyRepository,
    OutboxRepository,
    PlanRepository,
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

    def _open_repositories(self) -> None:
        self.features = FeatureRepository(self.session)
        self.currencies = CreditCurrencyRepository(self.session)
        self.plans = PlanRepository(self.session)
        self.customers = CustomerRepository(self.session)
        self.subscriptions = SubscriptionRepository(self.session)
        self.idempotency = IdempotencyRepository(self.session)
        self.outbox = OutboxRepository(self.session)


class UnitsOfWork:
    """Makes units of work: `read()` for queries, `write()` for anything that
    writes (on SQLite it takes the write lock up front)."""

    def __init__(self, engine: Engine) -> None:
        self._factories = session_factories(engine)

    def read(self) -> CatalogUnitOfWork:
        return CatalogUnitOfWork(self._factories.read)

    def write(self) -> CatalogUnitOfWork:
        return CatalogUnitOfWork(self._factories.write)
