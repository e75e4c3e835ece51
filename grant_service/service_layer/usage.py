"""ReportUsage and CheckUsage: price a usage with the rate in force and burn the
customer's active grants in burn-down order, atomically, once per request id.

Concurrency: the customer row is locked (SELECT ... FOR UPDATE on PostgreSQL; the
write transaction itself on SQLite) before the balance is read, so two debits of
one customer never both spend the same credits."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from sqlalchemy import select
from sqlalchemy.orm import Session

from credit_common.decimals import format_decimal
from credit_common.errors import FailedPrecondition, FieldViolation, InvalidArgument, NotFound, ResourceExhausted
from credit_common.idempotency import fingerprint
from credit_common.ids import new_id
from grant_service.adapters.orm import LedgerEntryRow, UsageRow
from grant_service.adapters.repository import (
    currency_exists,
    feature_known,
    grants_active_at,
    lock_customer,
    rates_in_force,
    views_at,
)
from grant_service.domain.balances import (
    InsufficientCredits,
    allocate,
    available,
    exact_difference,
    exact_product,
    exact_sum,
)
from grant_service.service_layer.context import GrantContext, catch_up_customer, get_customer, remember, replayed
from grant_service.service_layer.issuance import grant_dict, issue_due_batch, ledger_entry

SCOPE = "ReportUsage"


@dataclass(frozen=True)
class UsageResult:
    usage: UsageRow
    debits: list[tuple[str, Decimal]]


@dataclass(frozen=True)
class UsageCheck:
    allowed: bool
    currency_key: str
    credits_per_unit: Decimal
    credits_required: Decimal
    available: Decimal


def price(session: Session, feature_key: str, currency_key: str, at: datetime) -> tuple[str, Decimal]:
    """(currency, credits per unit) for a usage of `feature_key` at `at`."""
    rates = rates_in_force(session, feature_key, at)
    if currency_key:
        if currency_key not in rates:
            if not currency_exists(session, currency_key):
                raise NotFound(
                    f"credit currency {currency_key!r} not found",
                    reason="CURRENCY_NOT_FOUND",
                    metadata={"currency_key": currency_key},
                )
            if not feature_known(session, feature_key):
                raise _feature_not_found(feature_key)
            raise FailedPrecondition(
                f"feature {feature_key!r} does not burn currency {currency_key!r}",
                reason="FEATURE_NOT_BURNING_CURRENCY",
                metadata={"feature_key": feature_key, "currency_key": currency_key},
            )
        return currency_key, rates[currency_key]
    if not rates:
        if not feature_known(session, feature_key):
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
    return NotFound(
        f"metered feature {feature_key!r} not found", reason="FEATURE_NOT_FOUND", metadata={"feature_key": feature_key}
    )


def report_usage(
    ctx: GrantContext, request_id: str, customer_key: str, feature_key: str, quantity: Decimal, currency_key: str
) -> UsageResult:
    print_ = fingerprint(customer_key, feature_key, str(quantity), currency_key)
    catch_up_customer(ctx, customer_key)

    def work(session: Session) -> UsageResult:
        customer = lock_customer(session, customer_key)
        if customer is None:
            get_customer(session, customer_key)  # raises NOT_FOUND
        seen = replayed(session, SCOPE, request_id, print_)
        if seen is not None:
            return load_usage(session, seen)
        now = ctx.now_of(session, customer.clock_key)
        # A period that started since the catch-up above is issued in this very transaction: never lag.
        # Not skip_locked: a concurrent sweep may be issuing this customer's period right now; waiting
        # for it, then seeing its grant, beats rejecting the usage for want of credits.
        issue_due_batch(session, customer.clock_key, now, customer_key, ctx.batch_size, skip_locked=False)
        currency, rate = price(session, feature_key, currency_key, now)
        credits = exact_product(quantity, rate)
        rows = {r.grant_id: r for r in grants_active_at(session, customer_key, currency, now, for_update=True)}
        views = views_at(session, list(rows.values()), now, current=True)
        try:
            taken = allocate(views, credits, now)
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
        usage = UsageRow(
            usage_id=new_id("use"),
            request_id=request_id,
            customer_key=customer_key,
            feature_key=feature_key,
            quantity=quantity,
            currency_key=currency,
            credits_per_unit=rate,
            credits=credits,
            usage_time=now,
            balance_after=exact_difference(available(views, now), credits),
        )
        session.add(usage)
        for grant_id, amount in taken:
            rows[grant_id].used = exact_sum((rows[grant_id].used, amount))
        session.flush()
        session.add_all(
            LedgerEntryRow(
                **ledger_entry(
                    grant_dict(rows[grant_id]),
                    "DEBIT",
                    -amount,
                    now,
                    f"{format_decimal(quantity)} x {feature_key}",
                    usage_id=usage.usage_id,
                )
            )
            for grant_id, amount in taken
        )
        remember(session, SCOPE, request_id, print_, usage.usage_id, now)
        return UsageResult(usage, taken)

    return ctx.write(work)


def load_usage(session: Session, usage_id: str) -> UsageResult:
    usage = session.get(UsageRow, usage_id)
    if usage is None:  # its test clock was deleted since
        raise NotFound(f"usage {usage_id!r} not found", reason="USAGE_NOT_FOUND", metadata={"usage_id": usage_id})
    debits = session.execute(
        select(LedgerEntryRow.grant_id, LedgerEntryRow.amount)
        .where(LedgerEntryRow.usage_id == usage_id, LedgerEntryRow.type == "DEBIT")
        .order_by(LedgerEntryRow.seq)
    )
    return UsageResult(usage, [(grant_id, -amount) for grant_id, amount in debits])


def check_usage(
    ctx: GrantContext, customer_key: str, feature_key: str, quantity: Decimal, currency_key: str
) -> UsageCheck:
    _, now = catch_up_customer(ctx, customer_key)

    def work(session: Session) -> UsageCheck:
        currency, rate = price(session, feature_key, currency_key, now)
        credits = exact_product(quantity, rate)
        views = views_at(session, grants_active_at(session, customer_key, currency, now), now, current=True)
        total = available(views, now)
        return UsageCheck(total >= credits, currency, rate, credits, total)

    return ctx.read(work)
