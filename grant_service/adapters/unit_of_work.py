"""The SQL unit of work of the grant service: one SQLAlchemy session and
transaction, and its repositories (adapters/repositories.py); and the fast paths
chosen with it: debits committed in groups, GetBalance's batched reads."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from datetime import datetime
from typing import TypeVar

from sqlalchemy import Connection, Engine
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.orm import Session

from credit_common.batching import Batcher, Slot
from credit_common.calls import check_before_commit
from credit_common.clock import Clock
from credit_common.db.engine import CONFLICT_SQLSTATES, SessionFactories, sqlstate
from credit_common.db.group_commit import GroupCommit
from credit_common.metrics import GROUP_COMMIT_SIZE
from grant_service.adapters.alerts import AlertsCache, SqlAlertRepository
from grant_service.adapters.balance_reads import current_grants
from grant_service.adapters.debits import SqlDebitPort, debit_group
from grant_service.adapters.events import EventListener, EventSignal, SqlEventRepository
from grant_service.adapters.mappers import customer_now_of
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
    SqlSubscriptionRepository,
    SqlTestClockRepository,
)
from grant_service.adapters.webhooks import SqlWebhookDeliveryRepository, SqlWebhookEndpointRepository
from grant_service.domain.model import CustomerNow

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
        self.clocks = SqlTestClockRepository(session)
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


class SqlUnitsOfWork:
    """`UnitsOfWork` (service_layer/unit_of_work.py) over the service's session factories: writes
    on the write factory (on SQLite, it takes the write lock up front), reads on the read one.

    Debits are made by `debit_port` (adapters/debits.py SqlDebitPort), in groups
    (credit_common.db.group_commit): a group's customers are locked and their DebitHeads read at
    once (on PostgreSQL in one round trip), its writes sent together as sets
    (debits.debit_group). GetBalance's hot-path reads of concurrent callers are one statement,
    run by one of them (credit_common.batching), on a connection the thread keeps. `linger_s`: how
    long a batch's leader may wait for more callers. The rate sets are cached (RatesCache)."""

    def __init__(
        self,
        factories: SessionFactories,
        clock: Clock,
        *,
        linger_s: float = 0.0,
        attempts: int = 3,
        events: bool = True,
    ) -> None:
        self.factories = factories
        self._events_enabled = events
        self._clock = clock
        self._attempts = attempts
        self._rates = RatesCache()
        self._alerts = AlertsCache()
        self._events = EventSignal()
        self._events.listen(factories.write)
        self.debit_port = SqlDebitPort(
            GroupCommit(
                factories.write, self._write, debit_group, linger_s=linger_s, observe_size=GROUP_COMMIT_SIZE.observe
            ),
            self._unit,
        )
        self._balance_reads = Batcher(self._read_current_grants, linger_s=linger_s)

    def _unit(self, session: Session) -> SqlGrantUnitOfWork:
        return SqlGrantUnitOfWork(session, self._rates, self._clock, self._alerts, self._events_enabled)

    def _write(self, work: Callable[[Session], T]) -> T:
        for attempt in range(self._attempts):
            try:
                with self.factories.write() as session, session.begin():
                    result = work(session)
                    check_before_commit()  # a call whose caller gave up does not commit: credit_common.calls
                    return result
            except (IntegrityError, OperationalError) as error:
                retryable = isinstance(error, IntegrityError) or sqlstate(error) in CONFLICT_SQLSTATES
                if not retryable or attempt == self._attempts - 1:
                    raise
        raise AssertionError("unreachable")

    def write(self, work: Callable[[SqlGrantUnitOfWork], T]) -> T:
        return self._write(lambda session: work(self._unit(session)))

    def read(self, work: Callable[[SqlGrantUnitOfWork], T]) -> T:
        with self.factories.read() as session, session.begin():
            return work(self._unit(session))

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

    def customer_now(self, customer_key: str, currency_key: str) -> tuple[datetime, CustomerNow | None]:
        now, rows = self._balance_reads.submit((customer_key, currency_key))
        return now, customer_now_of(rows)

    def _read_current_grants(self, take: Callable[[], list[Slot]]) -> None:
        slots = take()
        now = self._clock.now()
        by_currency: dict[str, list[Slot]] = defaultdict(list)
        for slot in slots:
            by_currency[slot.item[1]].append(slot)

        def read(connection: Connection) -> None:
            for currency_key, asking in by_currency.items():
                customers = sorted({slot.item[0] for slot in asking})
                rows = current_grants(connection, customers, currency_key, now)
                for slot in asking:
                    slot.succeed((now, rows.get(slot.item[0], [])))

        self.factories.single_statement.run(read)
