"""GetBalance, ListGrants, ListLedgerEntries. Each first brings the customer up to its
"now" (the same catch-up the timer runs), so a due grant always counts."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from credit_common.errors import InvalidArgument, NotFound
from credit_common.pagination import PageRequest
from grant_service.adapters.orm import GrantRow, LedgerEntryRow
from grant_service.adapters.repository import (
    currency_exists,
    debits_by_grant,
    entry_of,
    grant_of,
    grants_active_at,
    view_of,
    views_at,
)
from grant_service.domain.balances import active_in_burn_order, exact_sum
from grant_service.domain.model import REAL_TIME, GrantInfo, LedgerEntry, evaluate
from grant_service.domain.schedules import Pending
from grant_service.service_layer.context import GrantContext, catch_up_customer, customer_due, customer_not_found


@dataclass(frozen=True)
class BalanceInfo:
    customer_key: str
    currency_key: str
    as_of: datetime
    available: Decimal
    grants: list[GrantInfo]


def currency_not_found(currency_key: str) -> NotFound:
    return NotFound(
        f"credit currency {currency_key!r} not found",
        reason="CURRENCY_NOT_FOUND",
        metadata={"currency_key": currency_key},
    )


def require_currency(session: Session, currency_key: str) -> None:
    if not currency_exists(session, currency_key):
        raise currency_not_found(currency_key)


def balance_at(
    session: Session, customer_key: str, currency_key: str, at: datetime, *, current: bool = False
) -> tuple[Decimal, list[GrantInfo]]:
    """The balance at `at` and the grants active then, in burn-down order. `current` (at the customer's
    now, nothing being due) takes the grants' running debit totals instead of summing the ledger."""
    rows = {r.grant_id: r for r in grants_active_at(session, customer_key, currency_key, at)}
    views = active_in_burn_order(views_at(session, list(rows.values()), at, current=current), at)
    infos = [evaluate(grant_of(rows[v.grant_id]), v.used, at) for v in views]
    return exact_sum(v.remaining for v in views), infos


def current_balance(ctx: GrantContext, customer_key: str, currency_key: str, with_grants: bool) -> BalanceInfo | None:
    """The hot path of GetBalance: a customer on real time with nothing due, which is one statement
    (the customer, its due flags and its active grants) outside any transaction. None when it does
    not apply (a test clock, something due, no active grant): the general path answers then."""
    now, rows = ctx.current_grants(customer_key, currency_key)
    if not rows:
        raise customer_not_found(customer_key)
    first = rows[0]
    if (
        first.customer_clock_key != REAL_TIME
        or Pending(first.next_issue, first.next_expiry, first.next_open).due(now)
        or first.grant_id is None
    ):
        return None
    views = active_in_burn_order((view_of(row, row.used) for row in rows), now)
    by_id = {row.grant_id: row for row in rows}
    infos = [evaluate(grant_of(by_id[v.grant_id]), v.used, now) for v in views] if with_grants else []
    return BalanceInfo(customer_key, currency_key, now, exact_sum(v.remaining for v in views), infos)


def get_balance(
    ctx: GrantContext, customer_key: str, currency_key: str, as_of: datetime | None, with_grants: bool
) -> BalanceInfo:
    """The common case (real time, nothing due) is one statement, see `current_balance`. Otherwise
    one read transaction: the customer, the due check, the grants; and if anything is due, the
    customer is caught up first, as every read does."""
    if as_of is None:
        info = current_balance(ctx, customer_key, currency_key, with_grants)
        if info is not None:
            return info

    def work(session: Session, caught_up_at: datetime | None) -> BalanceInfo | None:
        if caught_up_at is None:
            _, now, anything_due = customer_due(ctx, session, customer_key)
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
        total, infos = balance_at(session, customer_key, currency_key, at, current=as_of is None)
        if not infos:
            require_currency(session, currency_key)
        return BalanceInfo(customer_key, currency_key, at, total, infos if with_grants else [])

    info = ctx.read(lambda session: work(session, None))
    if info is None:
        _, now = catch_up_customer(ctx, customer_key)
        info = ctx.read(lambda session: work(session, now))
    return info


def list_grants(
    ctx: GrantContext, customer_key: str, currency_key: str, subscription_id: str, page: PageRequest
) -> tuple[list[GrantInfo], str]:
    _, now = catch_up_customer(ctx, customer_key)

    def work(session: Session) -> tuple[list[GrantInfo], str]:
        query = select(GrantRow).where(GrantRow.customer_key == customer_key)
        if currency_key:
            query = query.where(GrantRow.currency_key == currency_key)
        if subscription_id:
            query = query.where(GrantRow.subscription_id == subscription_id)
        if page.after is not None:
            after_time, after_id = page.after
            query = query.where(
                or_(
                    GrantRow.effective_time > after_time,
                    (GrantRow.effective_time == after_time) & (GrantRow.grant_id > after_id),
                )
            )
        rows = list(session.scalars(query.order_by(GrantRow.effective_time, GrantRow.grant_id).limit(page.size + 1)))
        rows, token = page.cut(rows, lambda r: (r.effective_time, r.grant_id))
        used = debits_by_grant(session, [r.grant_id for r in rows], now)
        return [evaluate(grant_of(r), used.get(r.grant_id, Decimal(0)), now) for r in rows], token

    return ctx.read(work)


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

    def work(session: Session) -> tuple[list[LedgerEntry], str]:
        query = select(LedgerEntryRow).where(LedgerEntryRow.customer_key == customer_key)
        if currency_key:
            query = query.where(LedgerEntryRow.currency_key == currency_key)
        if start is not None:
            query = query.where(LedgerEntryRow.effective_time >= start)
        if end is not None:
            query = query.where(LedgerEntryRow.effective_time < end)
        if entry_type:
            query = query.where(LedgerEntryRow.type == entry_type)
        if page.after is not None:
            after_time, after_seq = page.after
            query = query.where(
                or_(
                    LedgerEntryRow.effective_time > after_time,
                    (LedgerEntryRow.effective_time == after_time) & (LedgerEntryRow.seq > after_seq),
                )
            )
        rows = list(
            session.scalars(query.order_by(LedgerEntryRow.effective_time, LedgerEntryRow.seq).limit(page.size + 1))
        )
        rows, token = page.cut(rows, lambda r: (r.effective_time, r.seq))
        return [entry_of(r) for r in rows], token

    return ctx.read(work)
