"""The SQL unit of work of the grant service: one SQLAlchemy session and
transaction, and its repositories (adapters/repositories.py); and the transaction
runner over it, with the fast path chosen with it: debits committed in groups.
GetBalance's read model is adapters/balance_reads.py."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from sqlalchemy import Engine
from sqlalchemy.orm import Session

from credit_common.clock import Clock
from credit_common.db.engine import SessionFactories
from credit_common.db.group_commit import GroupCommit
from credit_common.db.transactions import RETRY, RetryPolicy, Transactions
from credit_common.metrics import GROUP_COMMIT_SIZE
from grant_service.adapters.alerts import AlertsCache, SqlAlertRepository
from grant_service.adapters.debits import SqlDebitPort, debit_group, skips_held
from grant_service.adapters.events import EventListener, EventSignal, SqlEventRepository
from grant_service.adapters.rates import RatesCache
from grant_service.adapters.repositories import (
    SqlCurrencyRepository,
    SqlCustomerRepository,
    SqlDebitAccountRepository,
    SqlGrantRepository,
    SqlIssuanceRepository,
    SqlLedgerRepository,
    SqlRateRepository,
    SqlRequestIdRepository,
    SqlScheduleRepository,
    SqlSimulatedClockRepository,
    SqlSubscriptionRepository,
)
from grant_service.adapters.webhooks import SqlWebhookDeliveryRepository, SqlWebhookEndpointRepository

T = TypeVar("T")


class SqlGrantUnitOfWork:
    def __init__(
        self,
        session: Session,
        rates: RatesCache | None = None,
        clock: Clock | None = None,
        alerts: AlertsCache | None = None,
        events: bool = True,
    ) -> None:
        self.session = session
        self.events = SqlEventRepository(session, clock, enabled=events)
        self.alerts = SqlAlertRepository(session, alerts)
        self.clocks = SqlSimulatedClockRepository(session)
        self.customers = SqlCustomerRepository(session)
        self.currencies = SqlCurrencyRepository(session)
        self.grants = SqlGrantRepository(session)
        self.issuance = SqlIssuanceRepository(session)
        self.ledger = SqlLedgerRepository(session)
        self.accounts = SqlDebitAccountRepository(session, clock, events=events)
        self.rates = SqlRateRepository(session, rates)
        self.request_ids = SqlRequestIdRepository(session)
        self.subscriptions = SqlSubscriptionRepository(session)
        self.schedules = SqlScheduleRepository(session)
        self.webhooks = SqlWebhookEndpointRepository(session)
        self.webhook_deliveries = SqlWebhookDeliveryRepository(session)


class SqlTransactions:
    """The transaction runner `Transactions` (service_layer/unit_of_work.py) over the service's
    session factories: writes on the write factory (on SQLite, it takes the write lock up front),
    reads on the read one.

    Debits are made by `debit_port` (adapters/debits.py SqlDebitPort), in groups
    (credit_common.db.group_commit): a group's customers are locked and their DebitHeads read at
    once (on PostgreSQL in one round trip), its writes sent together as sets
    (debits.debit_group). `linger_s`: how long a group's leader may wait for more callers. The rate
    sets are cached (RatesCache)."""

    def __init__(
        self,
        factories: SessionFactories,
        clock: Clock,
        *,
        linger_s: float = 0.0,
        retry: RetryPolicy = RETRY,
        events: bool = True,
    ) -> None:
        self.factories = factories
        self._events_enabled = events
        self._clock = clock
        # The shared runner and retry policy (credit_common.db.transactions); a debit that must run
        # alone (its group failed) runs there too.
        self._transactions = Transactions.of(factories, retry)
        self._rates = RatesCache()
        self._alerts = AlertsCache()
        self._events = EventSignal()
        self._events.listen(factories.write)
        self.debit_port = SqlDebitPort(
            GroupCommit(
                factories.write,
                self._transactions.write,
                debit_group,
                linger_s=linger_s,
                observe_size=GROUP_COMMIT_SIZE.observe,
                retryable=retry.retryable,
            ),
            self._unit,
            skips_held(factories.dialect),
        )

    def _unit(self, session: Session) -> SqlGrantUnitOfWork:
        return SqlGrantUnitOfWork(session, self._rates, self._clock, self._alerts, self._events_enabled)

    def write(self, work: Callable[[SqlGrantUnitOfWork], T]) -> T:
        return self._transactions.write(lambda session: work(self._unit(session)))

    def read(self, work: Callable[[SqlGrantUnitOfWork], T]) -> T:
        return self._transactions.read(lambda session: work(self._unit(session)))

    def listen_for_events(self, engine: Engine) -> Callable[[], None]:
        """On PostgreSQL, wake this process's streams on every process's commits of events (the
        function returned stops it); elsewhere nothing (SQLite: one process per database file)."""
        if engine.dialect.name != "postgresql":
            return lambda: None
        return EventListener(engine, self._events).start()

    def event_generation(self) -> int:
        return self._events.generation

    def wait_for_events(self, generation: int, timeout_s: float) -> None:
        self._events.wait(generation, timeout_s)
