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
from grant_service.domain.model import GrantInfo, LedgerEntry, evaluate
from grant_service.service_layer.context import (
    GrantContext,
    catch_up_customer,
    currency_not_found,
    customer_due,
    customer_not_found,
)
from grant_service.service_layer.unit_of_work import GrantUnitOfWork


@dataclass(frozen=True)
class BalanceInfo:
    customer_key: str
    currency_key: str
    as_of: datetime
    available: Decimal
    grants: list[GrantInfo]


def balance_at(
    uow: GrantUnitOfWork, customer_key: str, currency_key: str, at: datetime, *, current: bool = False
) -> tuple[Decimal, list[GrantInfo]]:
    """The balance at `at` and the grants active then, in burn-down order. `current` (at the customer's
    now, nothing being due) takes the grants' running debit totals instead of summing the ledger."""
    grants = {g.grant_id: g for g in uow.grants.active_at(customer_key, currency_key, at)}
    if current:
        used = {grant_id: g.used for grant_id, g in grants.items()}
    else:
        used = uow.ledger.debits_by_grant(list(grants), at)
    views = active_in_burn_order((g.view(used.get(g.grant_id, Decimal(0))) for g in grants.values()), at)
    infos = [evaluate(grants[v.grant_id], v.used, at) for v in views]
    return exact_sum(v.remaining for v in views), infos


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
    views = active_in_burn_order((g.view(g.used) for g in customer.grants), now)
    by_id = {g.grant_id: g for g in customer.grants} if with_grants else {}
    infos = [evaluate(by_id[v.grant_id], v.used, now) for v in views] if with_grants else []
    return BalanceInfo(customer_key, currency_key, now, exact_sum(v.remaining for v in views), infos)


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
        total, infos = balance_at(uow, customer_key, currency_key, at, current=as_of is None)
        if not infos and not uow.currencies.exists(currency_key):
            raise currency_not_found(currency_key)
        return BalanceInfo(customer_key, currency_key, at, total, infos if with_grants else [])

    info = ctx.transactions.read(lambda uow: work(uow, None))
    if info is None:
        _, now = catch_up_customer(ctx, customer_key)
        info = ctx.transactions.read(lambda uow: work(uow, now))
    return info


def list_grants(
    ctx: GrantContext, customer_key: str, currency_key: str, subscription_id: str, page: PageRequest
) -> tuple[list[GrantInfo], str]:
    _, now = catch_up_customer(ctx, customer_key)

    def work(uow: GrantUnitOfWork) -> tuple[list[GrantInfo], str]:
        grants = uow.grants.list(customer_key, currency_key, subscription_id, page.after, page.size + 1)
        grants, token = page.cut(grants, lambda g: (g.effective_time, g.grant_id))
        used = uow.ledger.debits_by_grant([g.grant_id for g in grants], now)
        return [evaluate(g, used.get(g.grant_id, Decimal(0)), now) for g in grants], token

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
