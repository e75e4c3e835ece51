"""Operator actions: VoidGrant and CreateGrant (one-off grants), idempotent by request id."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from sqlalchemy import select
from sqlalchemy.orm import Session

from credit_common.errors import FailedPrecondition, FieldViolation, InvalidArgument, NotFound
from credit_common.idempotency import fingerprint
from credit_common.ids import new_id
from grant_service.adapters.orm import GrantRow, LedgerEntryRow
from grant_service.adapters.repository import debits_by_grant, grant_of, lock_customer, locked
from grant_service.domain.balances import RECURRING_PRIORITY, exact_difference
from grant_service.domain.model import GrantInfo, evaluate
from grant_service.service_layer.balances import require_currency
from grant_service.service_layer.context import GrantContext, catch_up_customer, get_customer, remember, replayed
from grant_service.service_layer.issuance import grant_dict, grant_entry, ledger_entry


def _grant_info(session: Session, ctx: GrantContext, grant_id: str) -> GrantInfo:
    row = session.get(GrantRow, grant_id)
    if row is None:  # its test clock was deleted since
        raise NotFound(f"grant {grant_id!r} not found", reason="GRANT_NOT_FOUND", metadata={"grant_id": grant_id})
    customer = get_customer(session, row.customer_key)
    now = ctx.now_of(session, customer.clock_key)
    used = debits_by_grant(session, [grant_id], now).get(grant_id, Decimal(0))
    return evaluate(grant_of(row), used, now)


def void_grant(ctx: GrantContext, grant_id: str, reason: str, request_id: str) -> GrantInfo:
    print_ = fingerprint(grant_id, reason)
    customer_key = ctx.read(lambda s: s.scalar(select(GrantRow.customer_key).where(GrantRow.grant_id == grant_id)))
    if customer_key is None:
        raise NotFound(f"grant {grant_id!r} not found", reason="GRANT_NOT_FOUND", metadata={"grant_id": grant_id})
    customer, _ = catch_up_customer(ctx, customer_key)

    def work(session: Session) -> GrantInfo:
        lock_customer(session, customer_key)
        seen = replayed(session, "VoidGrant", request_id, print_)
        if seen is not None:
            return _grant_info(session, ctx, seen)
        grant = session.scalars(locked(session, select(GrantRow).where(GrantRow.grant_id == grant_id))).one()
        now = ctx.now_of(session, customer.clock_key)
        if grant.void_time is not None:
            raise FailedPrecondition(
                f"grant {grant_id!r} is already voided", reason="GRANT_ALREADY_VOIDED", metadata={"grant_id": grant_id}
            )
        if grant.closed or (grant.expire_time is not None and grant.expire_time <= now):
            raise FailedPrecondition(
                f"grant {grant_id!r} has expired", reason="GRANT_EXPIRED", metadata={"grant_id": grant_id}
            )
        used = grant.used
        if grant.opens_at is None:
            remaining = exact_difference(grant.amount, used)
            session.add(
                LedgerEntryRow(
                    **ledger_entry(
                        grant_dict(grant), "VOID", -remaining, now, reason or "voided by an operator", closes=True
                    )
                )
            )
        # A pending grant (not yet effective) never counted: voided, it never will, and has no ledger entry.
        grant.void_time, grant.closed, grant.reason, grant.opens_at = now, True, reason, None
        session.flush()
        remember(session, "VoidGrant", request_id, print_, grant_id, now)
        return evaluate(grant_of(grant), used, now)

    return ctx.write(work)


def create_grant(
    ctx: GrantContext,
    request_id: str,
    customer_key: str,
    currency_key: str,
    amount: Decimal,
    effective_time: datetime | None,
    expire_time: datetime | None,
    priority: int | None,
    reason: str,
) -> GrantInfo:
    print_ = fingerprint(customer_key, currency_key, str(amount), effective_time, expire_time, priority, reason)

    def work(session: Session) -> GrantInfo:
        customer = lock_customer(session, customer_key) or get_customer(session, customer_key)
        seen = replayed(session, "CreateGrant", request_id, print_)
        if seen is not None:
            return _grant_info(session, ctx, seen)
        require_currency(session, currency_key)
        now = ctx.now_of(session, customer.clock_key)
        effective = effective_time or now
        if expire_time is not None and expire_time <= effective:
            raise InvalidArgument(
                "expire_time must be after effective_time",
                violations=[FieldViolation("expire_time", "must be after effective_time (or now when that is unset)")],
            )
        grant = GrantRow(
            grant_id=new_id("grt"),
            customer_key=customer_key,
            currency_key=currency_key,
            clock_key=customer.clock_key,
            source="ONE_OFF",
            subscription_id=None,
            schedule_id=None,
            entitlement_key=None,
            period_index=None,
            segment=None,
            amount=amount,
            used=Decimal(0),
            effective_time=effective,
            expire_time=expire_time,
            priority=RECURRING_PRIORITY if priority is None else priority,
            void_time=None,
            reason=reason,
            closed=False,
            # Stored pending until it is effective: its GRANT entry is written then, by the catch-up.
            opens_at=effective if effective > now else None,
        )
        session.add(grant)
        session.flush()
        if grant.opens_at is None:
            session.add(LedgerEntryRow(**grant_entry(grant_dict(grant), reason or "one-off grant")))
        remember(session, "CreateGrant", request_id, print_, grant.grant_id, now)
        return evaluate(grant_of(grant), Decimal(0), now)

    return ctx.write(work)
