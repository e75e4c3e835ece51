"""What every use case of the grant service needs: sessions, the clock, settings;
plus the helpers shared by them (a customer's "now", transactions that retry a
lost race, request-id idempotency)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import TypeVar

from sqlalchemy import Connection
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.orm import Session

from credit_common import idempotency
from credit_common.batching import Batcher, Slot
from credit_common.clock import Clock
from credit_common.db.engine import SessionFactories
from credit_common.db.group_commit import GroupCommit
from credit_common.errors import FailedPrecondition, NotFound
from credit_common.idempotency import SeenRequest
from grant_service.adapters.orm import REAL_TIME
from grant_service.adapters.repositories import SqlRequestIdRepository
from grant_service.adapters.repository import RatesCache, current_grants, customer_now_of, debit_group
from grant_service.adapters.unit_of_work import SqlUnitsOfWork
from grant_service.domain.model import Customer, CustomerNow
from grant_service.service_layer.issuance import catch_up
from grant_service.service_layer.unit_of_work import GrantUnitOfWork, UnitsOfWork

T = TypeVar("T")
_RETRYABLE = {"40P01", "40001"}  # deadlock_detected, serialization_failure


@dataclass(frozen=True)
class GrantContext:
    factories: SessionFactories
    clock: Clock
    test_clocks_enabled: bool = False
    batch_size: int = 500
    # How long a batch's leader may wait for the callers of the previous batch (credit_common.batching).
    batch_linger_s: float = 0.0
    # The most an applied revision may be ahead of the stored one (of none: 0); see check_revision_step.
    max_revision_step: int = 1000
    rates: RatesCache = field(default_factory=RatesCache, compare=False, repr=False)
    # Debits of concurrent callers, committed together (see credit_common.db.group_commit); each unit's
    # subject is its (customer_key, scope, request_id), for their DebitHeads read at once.
    debits: GroupCommit = field(init=False, compare=False, repr=False)

    # GetBalance's hot-path reads of concurrent callers, run together (see `current_grants`).
    _balance_reads: Batcher = field(init=False, compare=False, repr=False)
    # The transactions of the use cases moved behind the unit of work (service_layer/unit_of_work.py);
    # None: SQL units of work over `factories`.
    uows: UnitsOfWork = field(default=None, compare=False, repr=False)  # type: ignore[assignment]

    def __post_init__(self) -> None:
        if self.uows is None:
            object.__setattr__(self, "uows", SqlUnitsOfWork(self.factories))
        object.__setattr__(
            self, "debits", GroupCommit(self.factories.write, self.write, debit_group, linger_s=self.batch_linger_s)
        )
        object.__setattr__(self, "_balance_reads", Batcher(self._read_current_grants, linger_s=self.batch_linger_s))

    def current_grants(self, customer_key: str, currency_key: str) -> tuple[datetime, CustomerNow | None]:
        """Real time now, and what `repository.current_grants` reads of the customer then (None: no
        such customer). The reads that threads ask for at the same time are one statement, run by one
        of them (credit_common.batching): under load, one thread reads for all instead of each one
        taking its turn at the GIL and the database."""
        now, rows = self._balance_reads.submit((customer_key, currency_key))
        return now, customer_now_of(rows)

    def _read_current_grants(self, take: Callable[[], list[Slot]]) -> None:
        slots = take()
        now = self.clock.now()
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

    def now_in(self, uow: GrantUnitOfWork, clock_key: str) -> datetime:
        """Real time, or the time of test clock `clock_key` as `uow` reads it."""
        if clock_key == REAL_TIME:
            return self.clock.now()
        frozen = uow.clocks.frozen_time(clock_key)
        if frozen is None:
            raise test_clock_not_found(clock_key)
        return frozen

    def write(self, work: Callable[[Session], T], attempts: int = 3) -> T:
        """Run `work` in one write transaction and commit. A unique-constraint conflict means a
        concurrent caller won a race (same request id, same new row): retry, and `work` then sees it.
        A PostgreSQL deadlock or serialization failure is retried too."""
        for attempt in range(attempts):
            try:
                with self.factories.write() as session, session.begin():
                    return work(session)
            except (IntegrityError, OperationalError) as error:
                retryable = isinstance(error, IntegrityError) or getattr(error.orig, "sqlstate", None) in _RETRYABLE
                if not retryable or attempt == attempts - 1:
                    raise
        raise AssertionError("unreachable")

    def read(self, work: Callable[[Session], T]) -> T:
        with self.factories.read() as session, session.begin():
            return work(session)


def customer_not_found(customer_key: str) -> NotFound:
    return NotFound(
        f"customer {customer_key!r} not found", reason="CUSTOMER_NOT_FOUND", metadata={"customer_key": customer_key}
    )


def test_clock_not_found(clock_key: str) -> NotFound:
    return NotFound(f"test clock {clock_key!r} not found", reason="TEST_CLOCK_NOT_FOUND")


def customer_due(ctx: GrantContext, uow: GrantUnitOfWork, customer_key: str) -> tuple[Customer, datetime, bool]:
    """The customer, its "now", and whether anything of it is due (a period to issue or a grant to
    expire) at that instant."""
    customer = uow.customers.get(customer_key)
    if customer is None:
        raise customer_not_found(customer_key)
    now = ctx.now_in(uow, customer.clock_key)
    return customer, now, uow.customers.pending(customer_key).due(now)


def catch_up_customer(ctx: GrantContext, customer_key: str) -> tuple[Customer, datetime]:
    """Bring one customer's grants up to its "now" (issue and expire what is due), so that reads
    never depend on the timer having run; returns the customer and that instant."""
    customer, now, anything_due = ctx.uows.read(lambda uow: customer_due(ctx, uow, customer_key))
    if anything_due:
        catch_up(ctx.uows, clock_key=customer.clock_key, now=now, customer_key=customer_key, batch_size=ctx.batch_size)
    return customer, now


class _AlreadyRead:
    """A `RequestStore` over the one record (or none) a caller has already read."""

    def __init__(self, seen: SeenRequest[str] | None) -> None:
        self.seen = seen

    def get(self, scope: str, request_id: str) -> SeenRequest[str] | None:
        return self.seen

    def add(self, scope: str, request_id: str, fingerprint: str, result: str, now: datetime) -> None:
        raise NotImplementedError


def replayed(session: Session, scope: str, request_id: str, print_: str) -> str | None:
    """The resource id recorded for `request_id` in `scope`, None if the request is new."""
    return idempotency.replay(SqlRequestIdRepository(session), scope, request_id, print_)


def replayed_record(seen: SeenRequest[str] | None, scope: str, request_id: str, print_: str) -> str | None:
    """As `replayed`, for the record of `request_id` the caller has already read (None: there is none)."""
    return idempotency.replay(_AlreadyRead(seen), scope, request_id, print_)


def request_record(scope: str, request_id: str, print_: str, resource_id: str, now: datetime) -> dict | None:
    """The row `remember` writes (none without a request_id), for a caller that writes it with its effect."""
    return _request_record(scope, request_id, print_, resource_id, now) if request_id else None


def _request_record(scope: str, request_id: str, fingerprint: str, resource_id: str, now: datetime) -> dict:
    return {
        "scope": scope,
        "request_id": request_id,
        "fingerprint": fingerprint,
        "resource_id": resource_id,
        "create_time": now,
    }


def require_test_clocks(ctx: GrantContext) -> None:
    if not ctx.test_clocks_enabled:
        raise FailedPrecondition(
            "test clocks are disabled on this server (start it with --enable-test-clocks)",
            reason="TEST_CLOCKS_DISABLED",
        )
