"""The grant service's unit of work, as the service layer sees it: one transaction
and its repositories (ports.py); and the transaction runner (`Transactions`) that
gives a use case's work a unit of work, commits it and runs it again after a lost
race. The SQL implementations are in grant_service/adapters/unit_of_work.py,
chosen at wiring."""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol, TypeVar

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
    SimulatedClockRepository,
    SubscriptionRepository,
    WebhookDeliveryRepository,
    WebhookEndpointRepository,
)

T = TypeVar("T")


class GrantUnitOfWork(Protocol):
    """One transaction's repositories: a use case's work takes one (`uow`) from `Transactions`."""

    clocks: SimulatedClockRepository
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


class Transactions(Protocol):
    """The transaction runner: runs a use case's work (a function of a `GrantUnitOfWork`) in one
    transaction each time it is called; `debit_port` makes debits (ports.DebitPort)."""

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
