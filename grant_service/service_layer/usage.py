"""ReportUsage, ReportUsageBatch and CheckUsage: price a usage with the rate in force
and burn the customer's active grants in burn-down order, atomically, once per
request id.

Debits are made through the debit port (ports.DebitPort), which locks each debit's
customer (SELECT ... FOR UPDATE on PostgreSQL; the write transaction itself on
SQLite) before the rule here reads its balance, so two debits of one customer never
both spend the same credits; how debits are grouped into transactions and written is
the adapter's business."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from functools import partial

from credit_common import idempotency
from credit_common.decimals import format_decimal
from credit_common.errors import (
    DomainError,
    FailedPrecondition,
    FieldViolation,
    InvalidArgument,
    NotFound,
    ResourceExhausted,
    not_found,
    test_clock_not_found,
)
from credit_common.idempotency import fingerprint
from credit_common.ids import new_id, new_ids
from grant_service.domain.alerts import BalanceState, state_of
from grant_service.domain.balances import (
    GrantView,
    InsufficientCredits,
    allocate,
    available,
    exact_add,
    exact_difference,
    exact_product,
)
from grant_service.domain.events import NewEvent, grant_depleted, usage_rejected
from grant_service.domain.model import REAL_TIME, DebitHead, EntryType, LedgerEntry, Usage
from grant_service.service_layer import alerts
from grant_service.service_layer.context import (
    GrantContext,
    catch_up_customer,
    currency_not_found,
    customer_not_found,
    replayed_record,
)
from grant_service.service_layer.issuance import catch_up, issue_due_batch, open_due_batch
from grant_service.service_layer.ports import DebitOrder, DebitRecord
from grant_service.service_layer.unit_of_work import GrantUnitOfWork

SCOPE = "ReportUsage"


BATCH_MAX = 1000  # usages of one ReportUsageBatch call


@dataclass(slots=True)  # not frozen, as a debit's values (domain/model.py): a batch makes one per usage
class UsageResult:
    usage: Usage
    debits: list[tuple[str, Decimal]]
    replayed: bool = False  # the first result of this request id, recorded before


@dataclass(slots=True)  # not frozen, as a debit's values: a batch makes one per usage
class UsageRequest:
    """One usage of a batch (ReportUsageBatch): ReportUsage's arguments."""

    request_id: str
    customer_key: str
    feature_key: str
    quantity: Decimal
    currency_key: str


@dataclass(frozen=True)
class UsageCheck:
    allowed: bool
    currency_key: str
    credits_per_unit: Decimal
    credits_required: Decimal
    available: Decimal


def price(uow: GrantUnitOfWork, rates: dict[str, Decimal], feature_key: str, currency_key: str) -> tuple[str, Decimal]:
    """(currency, credits per unit) for a usage of `feature_key`, given the rates in force
    (`rates_in_force`) for it."""
    if currency_key:
        if currency_key not in rates:
            if not uow.currencies.exists(currency_key):
                raise currency_not_found(currency_key)
            if not uow.rates.feature_known(feature_key):
                raise _feature_not_found(feature_key)
            raise FailedPrecondition(
                f"feature {feature_key!r} does not burn currency {currency_key!r}",
                reason="FEATURE_NOT_BURNING_CURRENCY",
                metadata={"feature_key": feature_key, "currency_key": currency_key},
            )
        return currency_key, rates[currency_key]
    if not rates:
        if not uow.rates.feature_known(feature_key):
            raise _feature_not_found(feature_key)
        raise FailedPrecondition(
            f"feature {feature_key!r} burns no credit currency",
            reason="FEATURE_BURNS_NO_CURRENCY",
            metadata={"feature_key": feature_key},
        )
    if len(rates) > 1:
        raise InvalidArgument(
            f"feature {feature_key!r} burns several currencies; say which in currency_key",
            reason="AMBIGUOUS_CURRENCY",
            metadata={"currencies": ",".join(sorted(rates))},
            violations=[FieldViolation("currency_key", f"required: one of {', '.join(sorted(rates))}")],
        )
    return next(iter(rates.items()))


def _feature_not_found(feature_key: str) -> NotFound:
    return not_found("metered feature", feature_key, "FEATURE_NOT_FOUND", key_name="feature_key")


@dataclass(frozen=True, slots=True)
class _Refused:
    """The usage was refused for insufficient credits: its USAGE_REJECTED event is written in the
    debit's transaction, which commits; `error` is then the caller's answer."""

    error: DomainError


@dataclass(frozen=True)
class _CatchUpFirst:
    """The customer has a period to issue or a grant to expire at `now`: catch up, then debit."""

    clock_key: str
    now: datetime


def report_usage(
    ctx: GrantContext, request_id: str, customer_key: str, feature_key: str, quantity: Decimal, currency_key: str
) -> UsageResult:
    """One debit (DebitPort): lock the customer and read what the debit needs (DebitHead), price, burn
    its grants, record. If something of the customer is due at its "now", nothing is written, the
    customer caught up (committed by itself, as before a read) and the debit made again; a period
    that starts in between is then issued in the debit's own transaction."""
    [result] = _make(ctx, [_order_of(UsageRequest(request_id, customer_key, feature_key, quantity, currency_key))])
    if isinstance(result, Exception):
        raise result
    return result


def report_usages(ctx: GrantContext, requests: list[UsageRequest]) -> list[UsageResult | DomainError]:
    """ReportUsageBatch: each usage as ReportUsage would debit it, made together (DebitPort: the
    adapter makes them in one write transaction), a customer's usages in the order given. Each
    usage's answer: its UsageResult (accepted, or `replayed`), or the DomainError ReportUsage would
    have raised for it alone (its USAGE_REJECTED event written as ReportUsage writes it). Any other
    failure (the database) fails the whole call, as it would fail a ReportUsage."""
    results = _make(ctx, [_order_of(request) for request in requests])
    for result in results:
        if isinstance(result, Exception) and not isinstance(result, DomainError):
            raise result
    return results  # type: ignore[return-value]


def _order_of(request: UsageRequest) -> DebitOrder:
    print_ = fingerprint(request.customer_key, request.feature_key, str(request.quantity), request.currency_key)
    return DebitOrder(
        SCOPE,
        request.request_id,
        print_,
        request.customer_key,
        request.feature_key,
        request.quantity,
        request.currency_key,
    )


class _Round:
    """What the debits made together (one `DebitPort.make`) share: ids made in bulk (`new_ids`), and
    real time, read once per transaction of the port (one unit of work each), at its first debit on
    real time, once that debit's customer is locked: the port holds every customer of a transaction
    until it commits, so the transaction's debits happen at that instant, and each customer's
    debits are in time order, whichever transaction makes them."""

    def __init__(self, ctx: GrantContext, expected: int) -> None:
        self._clock = ctx.clock
        self._now: datetime | None = None
        self._now_of: GrantUnitOfWork | None = None  # the transaction `_now` was read in
        self._chunk = min(max(expected, 1), 1000)
        # Made here, before the port's transaction: a usage's id and (mostly) one entry's.
        self._made: dict[str, list[str]] = {prefix: new_ids(prefix, self._chunk) for prefix in ("use", "led")}
        self._prices: dict[tuple[str, str, Decimal, datetime], tuple[str, Decimal, Decimal]] = {}
        self._descriptions: dict[tuple[Decimal, str], str] = {}

    def priced(
        self, uow: GrantUnitOfWork, feature_key: str, currency_key: str, quantity: Decimal, now: datetime
    ) -> tuple[str, Decimal, Decimal]:
        """(currency, credits per unit, credits) of a usage at `now`: the rates do not change within
        the port's transaction, so a batch's usages of one feature, quantity and instant are priced once."""
        key = (feature_key, currency_key, quantity, now)
        found = self._prices.get(key)
        if found is None:
            currency, rate = price(uow, uow.rates.in_force(feature_key, now), feature_key, currency_key)
            found = self._prices[key] = (currency, rate, exact_product(quantity, rate))
        return found

    def description(self, quantity: Decimal, feature_key: str) -> str:
        """A DEBIT entry's description: a batch's usages share their quantities and features (and the
        text is a function of the quantity's value)."""
        key = (quantity, feature_key)
        found = self._descriptions.get(key)
        if found is None:
            found = self._descriptions[key] = f"{format_decimal(quantity)} x {feature_key}"
        return found

    def now(self, uow: GrantUnitOfWork) -> datetime:
        if self._now is None or self._now_of is not uow:
            self._now, self._now_of = self._clock.now(), uow
        return self._now

    def ids(self, prefix: str, n: int) -> list[str]:
        if n <= 0:
            return []
        made = self._made.get(prefix)
        if made is None or len(made) < n:
            made = self._made[prefix] = new_ids(prefix, max(self._chunk, n)) + (made or [])
        if n == 1:
            return [made.pop()]
        taken = made[-n:]
        del made[-n:]
        return taken


def _make(ctx: GrantContext, orders: list[DebitOrder]) -> list[UsageResult | Exception]:
    """Each order's UsageResult, or the exception that is its answer (a DomainError: refused).

    A customer with something due at its "now" (a period to issue, a grant to expire) is caught up
    between two rounds: its orders from the first that found it due (each later one of it finds it
    due too, unless it is a replay) are made again in the second round, in order, where a period
    starting in between is issued in the debit's own transaction."""
    results: list[UsageResult | Exception | None] = [None] * len(orders)
    waiting = list(range(len(orders)))
    caught_up: frozenset[str] = frozenset()
    while waiting:
        rule = partial(_debit, ctx, _Round(ctx, len(waiting)), caught_up)
        outcomes = ctx.transactions.debit_port.make([orders[i] for i in waiting], rule)
        again: list[int] = []
        due: dict[str, _CatchUpFirst] = {}
        for i, outcome in zip(waiting, outcomes, strict=True):
            if isinstance(outcome, _CatchUpFirst):
                again.append(i)
                due.setdefault(orders[i].customer_key, outcome)
            elif isinstance(outcome, _Refused):
                results[i] = outcome.error
            else:
                results[i] = outcome
        for customer_key, first in due.items():
            catch_up(
                ctx.transactions,
                clock_key=first.clock_key,
                now=first.now,
                customer_key=customer_key,
                batch_size=ctx.batch_size,
            )
        caught_up = caught_up | due.keys()
        waiting = again
    return [result for result in results if result is not None]


def _debit(
    ctx: GrantContext, round_: _Round, caught_up: frozenset[str], uow: GrantUnitOfWork, order: DebitOrder
) -> UsageResult | _CatchUpFirst | _Refused:
    """The rule of a debit (DebitPort.make): its answer, given its customer as the port locked it."""
    request_id, customer_key = order.request_id, order.customer_key
    head = uow.accounts.head(order)
    if head is None:
        raise customer_not_found(customer_key)
    if head.clock_key != REAL_TIME and head.frozen_time is None:
        raise test_clock_not_found(head.clock_key)
    seen = None if head.seen is None else replayed_record(head.seen, order.scope, request_id, order.fingerprint)
    if seen is not None:
        return load_usage(uow, seen, replayed=True)
    # The customer's "now", taken once its lock is held: its debits are in time order.
    now = round_.now(uow) if head.clock_key == REAL_TIME else head.frozen_time
    grants = head.open_grants
    if head.pending.due(now):
        if customer_key not in caught_up:
            return _CatchUpFirst(head.clock_key, now)
        if head.pending.issue_due(now):
            # Not skip_locked: a concurrent sweep may be issuing this customer's period right now; waiting
            # for it, then seeing its grant, beats rejecting the usage for want of credits.
            open_due_batch(uow, head.clock_key, now, customer_key, ctx.batch_size, skip_locked=False)
            issue_due_batch(uow, head.clock_key, now, customer_key, ctx.batch_size, skip_locked=False)
            grants = uow.accounts.open_grants(customer_key)
    try:
        return _burn(order, uow, round_, now, head, grants)
    except DomainError as error:
        # On PostgreSQL the DebitHead comes from a snapshot taken before the customer's lock was granted:
        # a twin of this request (same request_id, e.g. sent to another replica) may have committed in
        # the meantime, and its result, not this error, is the answer. (Had this debit succeeded, its
        # usage's insert would have failed on the request_id, and the write's retry replays the twin.)
        seen = idempotency.replay(uow.request_ids, order.scope, request_id, order.fingerprint)
        if seen is not None:
            return load_usage(uow, seen, replayed=True)
        if error.reason != "INSUFFICIENT_CREDITS":
            raise
        uow.events.add(
            [
                usage_rejected(
                    customer_key,
                    error.metadata["currency_key"],
                    head.clock_key,
                    now,
                    request_id,
                    order.feature_key,
                    order.quantity,
                    Decimal(error.metadata["required"]),
                    Decimal(error.metadata["available"]),
                    new_id("evt"),
                )
            ]
        )
        return _Refused(error)


def _burn(
    order: DebitOrder,
    uow: GrantUnitOfWork,
    round_: _Round,
    now: datetime,
    head: DebitHead,
    customer_grants: list[GrantView],
) -> UsageResult:
    """Price the debit, burn the customer's open grants (locked) active at `now`, and record it all."""
    feature_key, quantity, currency_key = order.feature_key, order.quantity, order.currency_key
    currency, rate, credits = round_.priced(uow, feature_key, currency_key, quantity, now)
    views = [grant for grant in customer_grants if grant.currency_key == currency]
    try:
        taken, before = allocate(views, credits, now)
    except InsufficientCredits as error:
        raise ResourceExhausted(
            f"insufficient credits: {format_decimal(error.available)} available, "
            f"{format_decimal(error.required)} required",
            reason="INSUFFICIENT_CREDITS",
            metadata={
                "available": format_decimal(error.available),
                "required": format_decimal(error.required),
                "currency_key": currency,
            },
        ) from None
    usage = Usage(  # its fields in order: keywords cost each batched usage more
        round_.ids("use", 1)[0],
        order.request_id,
        order.customer_key,
        feature_key,
        quantity,
        currency,
        rate,
        credits,
        now,
        exact_difference(before, credits),
    )
    crossed: list[NewEvent] = []
    if head.alerts_version:
        state = state_of([(v.amount, v.used) for v in views if v.is_active_at(now)])
        after = BalanceState(exact_difference(state.balance, credits), state.granted)
        pair = (order.customer_key, currency)
        crossed = alerts.crossed_by_debit(uow, head.clock_key, now, pair, state, after, head.alerts_version)
    uow.accounts.record(order, _record(uow, round_, order, taken, usage, now, head.clock_key, crossed))
    return UsageResult(usage, [(grant.grant_id, amount) for grant, amount in taken])


def _record(
    uow: GrantUnitOfWork,
    round_: _Round,
    order: DebitOrder,
    taken: list[tuple[GrantView, Decimal]],
    usage: Usage,
    now: datetime,
    clock_key: str,
    crossed: list[NewEvent],
) -> DebitRecord:
    """What the debit writes, with its events: the grants it depleted, then the alert levels it crossed."""
    description = round_.description(order.quantity, order.feature_key)
    events_on = uow.events.enabled
    totals: list[tuple[str, Decimal]] = []
    entries: list[LedgerEntry] = []
    events: list[NewEvent] = []
    for (grant, amount), entry_id in zip(taken, round_.ids("led", len(taken)), strict=True):
        total = exact_add(grant.used, amount)
        totals.append((grant.grant_id, total))
        entries.append(
            LedgerEntry(
                entry_id,
                grant.customer_key,
                grant.currency_key,
                EntryType.DEBIT,
                -amount,
                grant.grant_id,
                now,
                usage.usage_id,
                grant.subscription_id,
                description,
            )
        )
        if events_on and total == grant.amount:
            events.append(
                grant_depleted(
                    grant.grant_id,
                    grant.customer_key,
                    grant.currency_key,
                    grant.subscription_id,
                    total,
                    clock_key,
                    now,
                    usage.usage_id,
                )
            )
    return DebitRecord(usage, tuple(totals), tuple(entries), tuple(events + crossed))


def load_usage(uow: GrantUnitOfWork, usage_id: str, *, replayed: bool = False) -> UsageResult:
    recorded = uow.accounts.recorded(usage_id)
    if recorded is None:  # its test clock was deleted since
        raise not_found("usage", usage_id, "USAGE_NOT_FOUND", key_name="usage_id")
    usage, debits = recorded
    return UsageResult(usage, debits, replayed)


def check_usage(
    ctx: GrantContext, customer_key: str, feature_key: str, quantity: Decimal, currency_key: str
) -> UsageCheck:
    _, now = catch_up_customer(ctx, customer_key)

    def work(uow: GrantUnitOfWork) -> UsageCheck:
        currency, rate = price(uow, uow.rates.in_force(feature_key, now), feature_key, currency_key)
        credits = exact_product(quantity, rate)
        total = available(uow.grants.active_at(customer_key, currency, now), now)
        return UsageCheck(total >= credits, currency, rate, credits, total)

    return ctx.transactions.read(work)
