"""The catalog's unit of work, as the service layer sees it: one transaction and its repositories
(ports.py). The SQL implementation is catalog_service/adapters/unit_of_work.py, chosen at wiring."""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol, TypeVar

from catalog_service.service_layer.ports import (
    CreditCurrencyRepository,
    CustomerRepository,
    FeatureRepository,
    OutboxRepository,
    PlanRepository,
    RequestIdRepository,
    SubscriptionRepository,
)

T = TypeVar("T")


class CatalogUnitOfWork(Protocol):
    features: FeatureRepository
    currencies: CreditCurrencyRepository
    plans: PlanRepository
    customers: CustomerRepository
    subscriptions: SubscriptionRepository
    idempotency: RequestIdRepository
    outbox: OutboxRepository


class Transactions(Protocol):
    """Runs use cases' work in transactions (the shared runner: credit_common.db.transactions)."""

    def write(self, work: Callable[[CatalogUnitOfWork], T]) -> T:
        """Run `work` in one write transaction and commit when it returns; an exception it raises
        rolls everything back. A lost race with a concurrent caller (the same request id, the same
        new key; on PostgreSQL a deadlock or serialization failure) runs it again from scratch, in a
        new transaction, and `work` then sees what the other caller did: so `work` must have no
        effect outside its unit of work."""
        ...

    def read(self, work: Callable[[CatalogUnitOfWork], T]) -> T:
        """Run `work` in one read transaction."""
        ...
