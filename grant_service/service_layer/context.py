"""What every use case of the grant service needs: its transaction runner, the
read model of GetBalance's fast path, the clock, settings; plus the helpers shared
by them (a customer's "now", its catch-up, request-id replay of a record already
read)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal

from credit_common import idempotency
from credit_common.clock import Clock
from credit_common.errors import FailedPrecondition, NotFound, not_found, test_clock_not_found
from credit_common.idempotency import SeenRequest
from grant_service.domain.clocks import ClockKey, on_real_time
from grant_service.domain.events import StoredEvent
from grant_service.domain.model import Customer
from grant_service.domain.webhooks import UrlPolicy
from grant_service.service_layer.issuance import catch_up
from grant_service.service_layer.ports import BalanceReads
from grant_service.service_layer.unit_of_work import GrantUnitOfWork, Transactions


@dataclass(frozen=True)
class GrantContext:
    transactions: Transactions
    balance_reads: BalanceReads
    clock: Clock
    test_clocks_enabled: bool = False
    batch_size: int = 500
    # How far a revision may rise within a window (grant_service.domain.revisions).
    max_revision_step: int = 1000
    max_revision_step_window: timedelta = timedelta(days=1)
    # The largest amount ApplySubscription(s) may schedule; None: no ceiling.
    max_applied_amount: Decimal | None = None
    # WatchEvents: a heartbeat after this long without a message; a read at least this often
    # (commits of other replicas are not notified).
    events_heartbeat_s: float = 15.0
    events_poll_s: float = 0.05
    # Webhooks: where endpoints may point, and an event as a webhook body (set by the wiring).
    webhook_policy: UrlPolicy = field(default_factory=UrlPolicy)
    event_body: Callable[[StoredEvent, str], bytes] | None = None

    def now_in(self, uow: GrantUnitOfWork, clock_key: ClockKey) -> datetime:
        """Real time, or the time of test clock `clock_key` as `uow` reads it."""
        if on_real_time(clock_key):
            return self.clock.now()
        frozen = uow.clocks.frozen_time(clock_key)
        if frozen is None:
            raise test_clock_not_found(clock_key)
        return frozen


def customer_not_found(customer_key: str) -> NotFound:
    return not_found("customer", customer_key, "CUSTOMER_NOT_FOUND", key_name="customer_key")


def currency_not_found(currency_key: str) -> NotFound:
    return not_found("credit currency", currency_key, "CURRENCY_NOT_FOUND", key_name="currency_key")


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
    customer, now, anything_due = ctx.transactions.read(lambda uow: customer_due(ctx, uow, customer_key))
    if anything_due:
        catch_up(
            ctx.transactions,
            clock_key=customer.clock_key,
            now=now,
            customer_key=customer_key,
            batch_size=ctx.batch_size,
        )
    return customer, now


class _AlreadyRead:
    """A `RequestStore` over the one record (or none) a caller has already read."""

    def __init__(self, seen: SeenRequest[str] | None) -> None:
        self.seen = seen

    def get(self, scope: str, request_id: str) -> SeenRequest[str] | None:
        return self.seen

    def add(self, scope: str, request_id: str, fingerprint: str, result: str, now: datetime) -> None:
        raise NotImplementedError


def replayed_record(seen: SeenRequest[str] | None, scope: str, request_id: str, print_: str) -> str | None:
    """The resource id recorded for `request_id` in `scope` (None: the request is new), of the
    record of it the caller has already read (`seen`; None: there is none)."""
    return idempotency.replay(_AlreadyRead(seen), scope, request_id, print_)


def require_test_clocks(ctx: GrantContext) -> None:
    if not ctx.test_clocks_enabled:
        raise FailedPrecondition(
            "test clocks are disabled on this server (start it with --enable-test-clocks)",
            reason="TEST_CLOCKS_DISABLED",
        )
