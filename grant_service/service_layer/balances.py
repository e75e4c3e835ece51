"""GetBalance, ListGrants, ListLedgerEntries. Each first brings the customer up to its
"now" (the same catch-up the timer runs), so a due grant always counts."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from credit_common.errors import InvalidArgument
from credit_common.pagination import PageRequest
from grant_service.domain.balances import active_in_burn_order, exact_sum
from grant_service.domain.clocks import on_real_time
from grant_service.domain.model import Grant, LedgerEntry
from grant_service.service_layer.context import (
    GrantContext,
    catch_up_customer,
    currency_not_found,
    customer_due,
    customer_not_found,
)
from grant_service.service_layer.unit_of_work import GrantUnitOfWork

_ZERO = Decimal(0)


@dataclass(frozen=True)
class BalanceInfo:
    """A balance at `as_of`, and (if asked for) the grants active then, in burn-down order, as they
    stood then (their `used`: debits until then; status and remaining: `status_at(as_of)`,
    `remaining_at(as_of)`)."""

    customer_key: str
    currency_key: str
    as_of: datetime
    available: Decimal
    grants: list[Grant]


def balance_at(
    uow: GrantUnitOfWork, customer_key: str, currency_key: str, at: datetime, *, current: bool = False
) -> tuple[Decimal, list[Grant]]:
    """The balance at `at` and the grants active then, in burn-down order, as they stood then. `current`
    (at the customer's now, nothing being due) takes the grants' running debit totals instead of
    summing the ledger."""
    grants = uow.grants.active_at(customer_key, currency_key, at)
    if not current:
        used = uow.ledger.debits_by_grant([g.grant_id for g in grants], at)
        grants = [g.with_used(used.get(g.grant_id, _ZERO)) for g in grants]
    active = active_in_burn_order(grants, at)
    return exact_sum(g.remaining for g in active), active


def current_balance(ctx: GrantContext, customer_key: str, currency_key: str, with_grants: bool) -> BalanceInfo | None:
    """The hot path of GetBalance: a customer on real time with nothing due, answered from the read
    model (`ctx.balance_reads`: the customer, what is due and its active grants, outside any
    transaction). None when it does not apply (a test clock, something due, no active grant): the
    general path answers then."""
    now, customer = ctx.balance_reads.customer_now(customer_key, currency_key)
    if customer is None:
        raise customer_not_found(customer_key)
    if not on_real_time(customer.clock_key) or customer.pending.due(now) or not customer.grants:
        return None
    active = active_in_burn_order(customer.grants, now)  # their `used`, running totals, is as of now
    return BalanceInfo(
        customer_key, currency_key, now, exact_sum(g.remaining for g in active), active if with_grants else []
    )


def get_balance(
    ctx: GrantContext, customer_key: str, currency_key: str, as_of: datetime | None, with_grants: bool
) -> BalanceInfo:
    """The common case (real time, nothing due) is one read of the read model, see `current_balance`. Otherwise
    one read transaction: the customer, the due check, the grants; and if anything is due, the
    customer is caught up first, as every read does."""
    if as_of is None:
        info = current_balance(ctx, customer_key, currency_key, with_grants)
        if info is not None:
            return info

    def work(uow: GrantUnitOfWork, caught_up_at: datetime | None) -> BalanceInfo | None:
        if caught_up_at is None:
            _, now, anything_due = customer_due(ctx, uow, customer_key)
            if anything_due:
                return None
        else:
            now = caught_up_at
        if as_of is not None and as_of > now:
            raise InvalidArgument(
                "as_of_time must not be after the customer's current time",
                reason="AS_OF_TIME_IN_FUTURE",
                metadata={"now": now.isoformat()},
            )
        at = as_of or now
        total, grants = balance_at(uow, customer_key, currency_key, at, current=as_of is None)
        if not grants and not uow.currencies.exists(currency_key):
            raise currency_not_found(currency_key)
        return BalanceInfo(customer_key, currency_key, at, total, grants if with_grants else [])

    info = ctx.transactions.read(lambda uow: work(uow, None))
    if info is None:
        _, now = catch_up_customer(ctx, customer_key)
        info = ctx.transactions.read(lambda uow: work(uow, now))
    return info


def list_grants(
    ctx: GrantContext, customer_key: str, currency_key: str, subscription_id: str, page: PageRequest
) -> tuple[list[Grant], str, datetime]:
    """A page of the customer's grants as they stand at its now (their `used`: debits until then), the
    next page's token, and that now (the instant of their `status_at` and `remaining_at`)."""
    _, now = catch_up_customer(ctx, customer_key)

    def work(uow: GrantUnitOfWork) -> tuple[list[Grant], str, datetime]:
        grants = uow.grants.list(customer_key, currency_key, subscription_id, page.after, page.size + 1)
        grants, token = page.cut(grants, lambda g: (g.effective_time, g.grant_id))
        used = uow.ledger.debits_by_grant([g.grant_id for g in grants], now)
        return [g.with_used(used.get(g.grant_id, _ZERO)) for g in grants], token, now

    return ctx.transactions.read(work)


def list_ledger_entries(
    ctx: GrantContext,
    customer_key: str,
    currency_key: str,
    start: datetime | None,
    end: datetime | None,
    entry_type: str | None,
    page: PageRequest,
) -> tuple[list[LedgerEntry], str]:
    catch_up_customer(ctx, customer_key)
    entries = ctx.transactions.read(
        lambda uow: uow.ledger.list(customer_key, currency_key, start, end, entry_type, page.after, page.size + 1)
    )
    return page.cut(entries, lambda e: (e.effective_time, e.seq))
