"""The grant service's unit of work, as the service layer sees it: one transaction
and its repositories (ports.py). The SQL implementation is in
grant_service/adapters/unit_of_work.py, chosen at wiring."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Protocol, TypeVar

from grant_service.domain.model import CustomerNow
from grant_service.service_layer.ports import (
    AlertRepository,
    CurrencyRepository,
    CustomerRepository,
    DebitAccountRepository,
    DebitPort,
    EventRepository,
    GrantRepository,
    IssuanceRepository,
    LedgerRepository,
    RateRepository,
    RequestIdRepository,
    ScheduleRepository,
    SubscriptionRepository,
    TestClockRepository,
    WebhookDeliveryRepository,
    WebhookEndpointRepository,
)

T = TypeVar("T")


class GrantUnitOfWork(Protocol):
    clocks: TestClockRepository
    customers: CustomerRepository
    currencies: CurrencyRepository
    grants: GrantRepository
    issuance: IssuanceRepository
    ledger: LedgerRepository
    accounts: DebitAccountRepository
    rates: RateRepository
    request_ids: RequestIdRepository
    subscriptions: SubscriptionRepository
    schedules: ScheduleRepository
    webhooks: WebhookEndpointRepository
    webhook_deliveries: WebhookDeliveryRepository
    events: EventRepository
    alerts: AlertRepository


class UnitsOfWork(Protocol):
    """Runs use cases' work in transactions; `debit_port` makes debits (ports.DebitPort)."""

    debit_port: DebitPort

    def write(self, work: Callable[[GrantUnitOfWork], T]) -> T:
        """Run `work` in one write transaction and commit. A lost race with a concurrent caller (the
        same request id, the same new row; on PostgreSQL a deadlock or serialization failure) runs it
        again, and `work` then sees what the other caller did."""
        ...

    def read(self, work: Callable[[GrantUnitOfWork], T]) -> T:
        """Run `work` in one read transaction."""
        ...

    def event_generation(self) -> int:
        """A number that grows each time a transaction of this process that wrote events commits."""
        ...

    def wait_for_events(self, generation: int, timeout_s: float) -> None:
        """Return once `event_generation()` has passed `generation`, or after `timeout_s`."""
        ...

    def customer_now(self, customer_key: str, currency_key: str) -> tuple[datetime, CustomerNow | None]:
        """Real time now, and the customer then (None: no such customer): its clock, what a catch-up
        owes it, its grants in `currency_key` active then. One statement outside any transaction;
        the reads of concurrent callers may be one statement together (GetBalance's hot path)."""
        ...
