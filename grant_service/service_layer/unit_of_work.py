"""The grant service's unit of work, as the service layer sees it: one transaction
and its repositories (ports.py). The SQL implementation is in
grant_service/adapters/unit_of_work.py, chosen at wiring."""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol, TypeVar

from grant_service.service_layer.ports import (
    CurrencyRepository,
    CurrencyRevisionRepository,
    CustomerRepository,
    GrantRepository,
    IssuanceRepository,
    LedgerRepository,
    RequestIdRepository,
    ScheduleRepository,
    SubscriptionRepository,
    TestClockRepository,
)

T = TypeVar("T")


class GrantUnitOfWork(Protocol):
    clocks: TestClockRepository
    customers: CustomerRepository
    currencies: CurrencyRepository
    grants: GrantRepository
    issuance: IssuanceRepository
    ledger: LedgerRepository
    request_ids: RequestIdRepository
    subscriptions: SubscriptionRepository
    schedules: ScheduleRepository
    currency_revisions: CurrencyRevisionRepository


class UnitsOfWork(Protocol):
    """Runs use cases' work in transactions."""

    def write(self, work: Callable[[GrantUnitOfWork], T]) -> T:
        """Run `work` in one write transaction and commit. A lost race with a concurrent caller (the
        same request id, the same new row; on PostgreSQL a deadlock or serialization failure) runs it
        again, and `work` then sees what the other caller did."""
        ...

    def read(self, work: Callable[[GrantUnitOfWork], T]) -> T:
        """Run `work` in one read transaction."""
        ...
