"""What the service layer needs of storage, as protocols: the repositories of a
unit of work (unit_of_work.py), the read model of GetBalance's fast path
(`BalanceReads`) and the debit port (DebitPort). Their SQL implementations are in
grant_service/adapters/ (repositories.py, balance_reads.py, debits.py)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Protocol, TypeVar

from credit_common.idempotency import SeenRequest
from grant_service.domain.alerts import AlertLevel, BalanceState
from grant_service.domain.balances import GrantView
from grant_service.domain.clocks import ClockKey
from grant_service.domain.events import EventFilter, EventPosition, EventScan, NewEvent, StoredEvent
from grant_service.domain.model import (
    Customer,
    CustomerNow,
    DebitHead,
    Grant,
    LedgerEntry,
    NewGrant,
    SimulatedClock,
    StoredSchedule,
    StoredSubscription,
    Usage,
)
from grant_service.domain.revisions import RevisionWindow
from grant_service.domain.schedules import Pending
from grant_service.domain.webhooks import DeliveryAttempt, NewDelivery, WebhookEndpoint

if TYPE_CHECKING:
    from grant_service.service_layer.unit_of_work import GrantUnitOfWork

T = TypeVar("T")


class BalanceReads(Protocol):
    """The read model of GetBalance's fast path (a view, in cosmicpython's words): what a current
    balance needs of a customer, read outside any transaction, without a unit of work. How the reads
    are made (one statement for many concurrent callers, a connection per thread) is the
    implementation's business; what it answers is what a read transaction at that instant would see."""

    def customer_now(self, customer_key: str, currency_key: str) -> tuple[datetime, CustomerNow | None]:
        """Real time now, and the customer then (None: no such customer): its clock, what a catch-up
        owes it, its grants in `currency_key` active then, with their running debit totals."""
        ...


class SimulatedClockRepository(Protocol):
    """Test clocks (SimulatedClock)."""

    def get(self, test_clock_id: str, *, for_update: bool = False) -> SimulatedClock | None:
        """The clock (locked for the transaction with `for_update`), None if there is none."""
        ...

    def frozen_time(self, test_clock_id: str) -> datetime | None: ...

    def frozen_times(self, test_clock_ids: Sequence[str]) -> dict[str, datetime]:
        """The frozen time of each of the test clocks that exists."""
        ...

    def add(self, clock: SimulatedClock) -> None: ...

    def set_frozen_time(self, test_clock_id: str, frozen_time: datetime) -> None: ...

    def list(self, after: tuple[datetime, str] | None, limit: int) -> list[SimulatedClock]:
        """Up to `limit` clocks, newest first (create_time, then id, descending), after `after`."""
        ...

    def delete(self, test_clock_id: str) -> None:
        """Delete the clock and everything attached to it: customers, subscriptions, schedules,
        grants, their ledger entries, usages."""
        ...


class CustomerRepository(Protocol):
    def get(self, customer_key: str) -> Customer | None: ...

    def lock(self, customer_key: str) -> Customer | None:
        """The customer, locked for the transaction (what serializes its debits, voids and
        grants), None if there is none."""
        ...

    def pending(self, customer_key: str) -> Pending:
        """What a catch-up owes the customer: its earliest period to issue, grant to expire, grant to open."""
        ...

    def lock_many(self, customer_keys: Sequence[str]) -> list[Customer]:
        """Those of the customers that exist, locked for the transaction in key order."""
        ...

    def pending_many(self, customer_keys: Sequence[str]) -> dict[str, Pending]:
        """`pending` of each of the customers that exists."""
        ...

    def add_all(self, customers: Sequence[Customer]) -> None: ...


class CurrencyRepository(Protocol):
    """Credit currencies: the revisions ApplyCreditCurrency stores, each with its rate set."""

    def exists(self, currency_key: str) -> bool:
        """Known from ApplyCreditCurrency, a credit schedule or a grant."""
        ...

    def revision(self, currency_key: str, *, for_update: bool = False) -> tuple[int, RevisionWindow] | None:
        """The revision held and its window (locked for the transaction with `for_update`), None if none is."""
        ...

    def add(self, currency_key: str, revision: int, window: RevisionWindow) -> None: ...

    def set_revision(self, currency_key: str, revision: int, window: RevisionWindow) -> None: ...

    def add_rate_set(
        self, currency_key: str, revision: int, effective_time: datetime, rates: dict[str, Decimal]
    ) -> None:
        """The complete rates (credits per unit of each feature) of a revision, in force from `effective_time`."""
        ...


class GrantRepository(Protocol):
    def get(self, grant_id: str, *, for_update: bool = False) -> Grant | None: ...

    def customer_of(self, grant_id: str) -> str | None: ...

    def active_at(self, customer_key: str, currency_key: str, at: datetime) -> list[Grant]:
        """The customer's grants in `currency_key` active at `at`, in id order, as stored now (their
        `used`: running totals; Grant.with_used gives one as it stood at `at`)."""
        ...

    def list(
        self, customer_key: str, currency_key: str, subscription_id: str, after: tuple[datetime, str] | None, limit: int
    ) -> list[Grant]:
        """Up to `limit` of the customer's grants (of a currency, of a subscription: empty is any), by
        effective time then id, after `after`."""
        ...

    def add(self, grant: Grant) -> None: ...

    def void(self, grant_id: str, void_time: datetime, reason: str) -> None:
        """Mark the grant voided at `void_time` (closed; a pending grant no longer opens)."""
        ...


class LedgerRepository(Protocol):
    def add(self, entry: LedgerEntry) -> None:
        """Append one entry (its `seq` is given by the ledger)."""
        ...

    def debits_by_grant(self, grant_ids: Sequence[str], at: datetime | None = None) -> dict[str, Decimal]:
        """Credits debited from each grant (at or before `at`, if given)."""
        ...

    def list(
        self,
        customer_key: str,
        currency_key: str,
        start: datetime | None,
        end: datetime | None,
        entry_type: str | None,
        after: tuple[datetime, int] | None,
        limit: int,
    ) -> list[LedgerEntry]:
        """Up to `limit` of the customer's entries (of a currency: empty is any; effective in [start,
        end); of a type), by effective time then ledger order (`seq`), after `after`."""
        ...


@dataclass(slots=True)  # not frozen, as a debit's values (domain/model.py): a batch makes one per usage
class DebitOrder:
    """A debit to make (a usage reported): `quantity` of `feature_key` used by `customer_key`, burnt in
    `currency_key` (empty: the one currency the feature burns), once per `request_id` in `scope`
    (`fingerprint`: of its payload, to tell a replay from a different request with the same id)."""

    scope: str
    request_id: str
    fingerprint: str
    customer_key: str
    feature_key: str
    quantity: Decimal
    currency_key: str


@dataclass(slots=True)  # not frozen, as DebitOrder
class DebitRecord:
    """What an accepted debit writes: its usage, the new running total (`used`) of each grant it
    debited (grant id, used), its DEBIT ledger entries in ledger order, and its events (the grants
    it depleted, then the balance alert levels it crossed)."""

    usage: Usage
    totals: tuple[tuple[str, Decimal], ...]
    entries: tuple[LedgerEntry, ...]
    events: tuple[NewEvent, ...] = ()


class DebitPort(Protocol):
    """Makes debits. `make(orders, rule)` runs `rule(uow, order)` for each order in a write transaction
    in which the order's customer is locked (what serializes its debits), and returns, in the order
    given, each rule's result or the exception it raised. A rule reads its customer through
    `uow.accounts` (DebitAccountRepository) and records an accepted debit there.

    Contract, whatever the adapter does to be fast (it may share a transaction among the orders of
    one call and those other callers make at the same time, commit one call's orders in several
    transactions, and write a transaction's debits as sets at its end):
    - a customer's orders of one call are made in one transaction (unless they run alone after a
      failure, below), and each transaction has a unit of work of its own (`rule`'s `uow`);
    - a customer's orders of one call run in the order given, each after the previous one's
      writes (its `head` shows them);
    - a `DomainError` that a rule raises before recording anything is that order's own answer: it
      does not affect the others;
    - any other failure (a constraint violation: a twin of the request committed meanwhile by
      another replica; a deadlock; a lost connection) runs each order again in a transaction of
      its own, so that one order's failure is never another's; if that fails too, it is that
      order's answer;
    - an order's effects are committed before its result is returned, and a caller that has gone
      (deadline, cancel) has nothing committed after it went (the orders of its call already
      committed stay so: each order is idempotent by its request id)."""

    def make(
        self, orders: Sequence[DebitOrder], rule: Callable[[GrantUnitOfWork, DebitOrder], T]
    ) -> list[T | Exception]: ...


class DebitAccountRepository(Protocol):
    """What a debit rule (DebitPort) reads and writes of its customer, in the port's transaction."""

    def head(self, order: DebitOrder) -> DebitHead | None:
        """Lock the order's customer (what serializes its debits) and read what its debit needs, with
        the previous orders' debits applied, its open grants locked too (as `open_grants`); None if
        there is no such customer."""
        ...

    def open_grants(self, customer_key: str) -> list[GrantView]:
        """The customer's open grants (not closed: pending ones too) of every currency, locked, in id
        order, as a debit reads them (GrantView: their running totals, and what their DEBIT entries
        repeat), read again (after a catch-up in the transaction issued or opened some)."""
        ...

    def record(self, order: DebitOrder, record: DebitRecord) -> None:
        """Write an accepted debit: its usage (a conflict on its request_id means a concurrent twin
        won: the transaction fails and the order runs again), the grants' new running totals, its
        DEBIT entries, the record of its request id (if it has one) in the order's scope, and its
        events (as EventRepository.add: one already in the log is skipped). An implementation may
        keep the writes until the transaction's end or its next read."""
        ...

    def recorded(self, usage_id: str) -> tuple[Usage, list[tuple[str, Decimal]]] | None:
        """A recorded usage and its debits (grant id, credits), in ledger order; None if it is gone
        (its test clock was deleted)."""
        ...


class RateRepository(Protocol):
    def in_force(self, feature_key: str, at: datetime) -> dict[str, Decimal]:
        """currency_key -> credits per unit of `feature_key`, for every currency whose rate set in
        force at `at` (the latest effective at or before it; ties to the higher revision) names the
        feature, as the caller's transaction sees them."""
        ...

    def feature_known(self, feature_key: str) -> bool:
        """Whether any rate set names the feature."""
        ...


class IssuanceRepository(Protocol):
    """What the catch-up (issuance.py) reads and writes, in bulk. The rows due are those of one
    clock (real time or a test clock), or of one customer if `customer_key` is given, oldest due
    first; they are locked for the transaction. `skip_locked` (the real-time sweep only: replicas
    share its work) skips rows another transaction holds; otherwise the call waits for them, and
    then sees what that transaction did."""

    def due_schedules(
        self, clock_key: ClockKey, now: datetime, customer_key: str | None, limit: int, *, skip_locked: bool
    ) -> list[StoredSchedule]:
        """Up to `limit` schedules whose next period has started at `now`."""
        ...

    def due_to_expire(
        self, clock_key: ClockKey, now: datetime, customer_key: str | None, limit: int, *, skip_locked: bool
    ) -> list[Grant]:
        """Up to `limit` open grants (not pending) whose expiry has passed at `now`."""
        ...

    def due_to_open(
        self, clock_key: ClockKey, now: datetime, customer_key: str | None, limit: int, *, skip_locked: bool
    ) -> list[Grant]:
        """Up to `limit` pending grants whose effective time has come at `now`."""
        ...

    def add_grants(self, grants: Sequence[NewGrant]) -> set[str]:
        """Insert new recurring grants, skipping any that another transaction already issued (the
        same schedule period segment); the ids of those inserted."""
        ...

    def add_entries(self, entries: Sequence[LedgerEntry]) -> None:
        """Append ledger entries (see LedgerRepository.add), skipping any whose grant already has
        its opening or closing entry."""
        ...

    def opened(self, grant_ids: Sequence[str], closed: Sequence[str] = ()) -> None:
        """Mark pending grants opened (their GRANT entry written), and those of `closed` closed too."""
        ...

    def close(self, grant_ids: Sequence[str]) -> None:
        """Mark grants closed (their EXPIRE written)."""
        ...

    def advance_cursors(self, schedule_ids: Sequence[str], next_index: int, next_start: datetime | None) -> None:
        """Move the cursor of each schedule to period `next_index`, which starts at `next_start`."""
        ...

    def open_grants_of(self, schedule_id: str) -> list[Grant]:
        """The schedule's grants not yet closed, locked, in id order, as stored now."""
        ...

    def grants_of_periods(self, schedule_id: str, periods: Sequence[int]) -> list[Grant]:
        """The schedule's grants of those periods, as stored now."""
        ...

    def set_expiry(self, grant_id: str, expire_time: datetime) -> None: ...

    def withdraw(self, grant_ids: Sequence[str]) -> None:
        """Delete grants that never counted, with their ledger entries."""
        ...


class RequestIdRepository(Protocol):
    """The grant service's `RequestStore` (credit_common.idempotency): the id of the resource each
    request_id created or changed."""

    def get(self, scope: str, request_id: str) -> SeenRequest[str] | None: ...

    def add(self, scope: str, request_id: str, fingerprint: str, result: str, now: datetime) -> None: ...


class SubscriptionRepository(Protocol):
    """What ApplySubscription(s) and GetSubscription read and write of subscriptions, and of the
    customers and test clocks a batch of them names. What a batch adds is written with one
    statement per table, whatever the number of rows."""

    def get(self, subscription_id: str) -> StoredSubscription | None: ...

    def lock_many(self, subscription_ids: Sequence[str]) -> list[StoredSubscription]:
        """Those of the subscriptions that exist, locked for the transaction in id order."""
        ...

    def add_all(self, subscriptions: Sequence[StoredSubscription]) -> None: ...

    def save_all(self, subscriptions: Sequence[StoredSubscription]) -> None:
        """Store the revision, end time and update time of each (nothing else of a subscription changes)."""
        ...

    def ended_unreported(
        self, clock_key: ClockKey, now: datetime, customer_key: str | None, limit: int, *, skip_locked: bool
    ) -> list[StoredSubscription]:
        """Up to `limit` subscriptions (of a clock, or of one customer) whose end has passed at `now`
        and whose SUBSCRIPTION_ENDED is not written, locked (as IssuanceRepository's due rows)."""
        ...

    def mark_end_reported(self, subscription_ids: Sequence[str]) -> None:
        """Their SUBSCRIPTION_ENDED is written."""
        ...


class ScheduleRepository(Protocol):
    def of_subscription(self, subscription_id: str, *, for_update: bool = False) -> list[StoredSchedule]:
        """The subscription's schedules (the removed ones too) in id order, as stored now (a catch-up
        moves cursors in bulk), locked for the transaction with `for_update`."""
        ...

    def add_all(self, schedules: Sequence[StoredSchedule]) -> None:
        """Insert new schedules, their cursors at `next_period_start`."""
        ...

    def save(self, schedule: StoredSchedule) -> None:
        """Store its terms (amounts, end time), position, `removed` and its cursor's start
        (`next_period_start`); the cursor's period, its ownership, cadence, currency and anchor never
        change."""
        ...


class WebhookEndpointRepository(Protocol):
    """Webhook endpoints, with their secrets."""

    def add(self, endpoint: WebhookEndpoint) -> None: ...

    def get(self, endpoint_id: str, *, for_update: bool = False) -> WebhookEndpoint | None:
        """The endpoint (locked for the transaction with `for_update`: what serialises its changes
        with the delivery workers' claims), None if there is none."""
        ...

    def list(self, after: tuple[datetime, str] | None, limit: int) -> list[WebhookEndpoint]:
        """Up to `limit` endpoints, newest first (create_time, then id, descending), after `after`."""
        ...

    def enabled(self) -> list[WebhookEndpoint]:
        """Every enabled endpoint (the fan-out's targets)."""
        ...

    def any_enabled(self) -> bool: ...

    def save(self, endpoint: WebhookEndpoint) -> None:
        """Write every field of an endpoint that exists."""
        ...

    def delete(self, endpoint_id: str) -> None:
        """Delete the endpoint, its deliveries and its attempts."""
        ...


class WebhookDeliveryRepository(Protocol):
    """Deliveries queued for the workers, the attempts made, and the fan-out's cursor."""

    def add(self, deliveries: Sequence[NewDelivery]) -> list[int]:
        """Queue the deliveries, due at once; one already queued (same endpoint, event and trigger
        key) is skipped, never doubled. The ids of those queued."""
        ...

    def attempts(
        self, endpoint_id: str, event_id: str, after: tuple[datetime, str] | None, limit: int
    ) -> list[DeliveryAttempt]:
        """Attempts to `endpoint_id` and/or of `event_id` ("": any), newest first, after `after`."""
        ...

    def cursor(self) -> EventPosition | None:
        """The fan-out's position, unlocked (a cheap look before taking the lock)."""
        ...

    def lock_cursor(self) -> EventPosition | None:
        """The log position of the last event fanned out (None: none yet), locked until the
        transaction ends, so one fan-out runs at a time across replicas."""
        ...

    def set_cursor(self, position: EventPosition) -> None: ...

    def event(self, event_id: str) -> StoredEvent | None:
        """One event of the log by its id."""
        ...


class EventRepository(Protocol):
    """The durable credit event log (grant_service.domain.events). Events are appended in the
    transaction of the change they report; they are read in log order, and only those before
    which no event can still commit (the high-water mark: docs/architecture.md#the-event-log), so
    that a reader that has read up to a position never misses an event that commits later."""

    enabled: bool  # False: `add` writes nothing (--events off, for measuring the log's cost)

    def add(self, events: Sequence[NewEvent]) -> None:
        """Append `events` (in bulk), skipping any whose dedupe key the log already holds (the same
        fact written by another replica or an earlier attempt): that is never an error."""
        ...

    def log_id(self) -> str:
        """The log's identity (a random id made with it), which cursors carry."""
        ...

    def after(self, position: EventPosition | None, limit: int, where: EventFilter | None = None) -> list[StoredEvent]:
        """Up to `limit` events after `position` (None: from the start), in log order, that match
        `where`; only committed events below the high-water mark."""
        ...

    def scan(self, position: EventPosition | None, limit: int, where: EventFilter) -> EventScan:
        """As `after`, at a bounded cost whatever the filter: a filter the log has no index for
        (EventFilter.indexed) examines at most a fixed number of rows after `position` (of the
        customer's rows, if it names one), then stops; `examined` is where the next read continues
        (every row up to it was examined, matching or not), `complete` False if rows are left."""
        ...


class AlertRepository(Protocol):
    """Balance alert levels (set over RPC, append-only: the latest set of a customer and currency is
    in force, customer '' being the currency's default) and the balance state last evaluated."""

    def version(self) -> int:
        """Grows with every set: levels read at one version stay valid while it is unchanged."""
        ...

    def configured(
        self, customer_key: str, currency_key: str
    ) -> tuple[tuple[AlertLevel, ...] | None, tuple[AlertLevel, ...] | None]:
        """(the customer's own levels, the currency's default levels); None: not set or cleared."""
        ...

    def in_force(self, customer_key: str, currency_key: str, version: int) -> tuple[AlertLevel, ...] | None:
        """The customer's own levels, else the currency's default, else None; `version` (read in the
        caller's transaction) lets an implementation answer from a cache."""
        ...

    def set(self, customer_key: str, currency_key: str, levels: Sequence[AlertLevel] | None, now: datetime) -> None:
        """Record levels (None: cleared) for the customer ('' : the currency's default)."""
        ...

    def states_of(self, customer_keys: Sequence[str]) -> dict[tuple[str, str], frozenset[str]]:
        """The alert state last stored (domain.alerts.below) of each (customer, currency) of these
        customers that has one."""
        ...

    def save_states(self, states: dict[tuple[str, str], frozenset[str]]) -> None: ...

    def current_of(self, customer_keys: Sequence[str]) -> dict[tuple[str, str], BalanceState]:
        """The state of each (customer, currency) of these customers that has open grants, from
        them: what is active at the customer's now once nothing of it is due."""
        ...
