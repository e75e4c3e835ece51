"""Operator actions: VoidGrant and CreateGrant (one-off grants), idempotent by request id."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime
from decimal import Decimal

from credit_common.errors import FailedPrecondition, FieldViolation, InvalidArgument, NotFound, not_found
from credit_common.idempotency import fingerprint, remember, replay
from credit_common.ids import new_id
from grant_service.domain.balances import RECURRING_PRIORITY, exact_difference
from grant_service.domain.events import grant_voided
from grant_service.domain.model import EntryType, Grant, GrantSource
from grant_service.service_layer import alerts
from grant_service.service_layer.context import (
    GrantContext,
    catch_up_customer,
    currency_not_found,
    customer_not_found,
)
from grant_service.service_layer.issuance import grant_entry, granted_events, ledger_entry
from grant_service.service_layer.unit_of_work import GrantUnitOfWork


def _grant_not_found(grant_id: str) -> NotFound:
    return not_found("grant", grant_id, "GRANT_NOT_FOUND", key_name="grant_id")


def _grant_now(uow: GrantUnitOfWork, ctx: GrantContext, grant_id: str) -> tuple[Grant, datetime]:
    """The grant as it stands at its customer's now (its `used`: debits until then), and that now."""
    grant = uow.grants.get(grant_id)
    if grant is None:  # its test clock was deleted since
        raise _grant_not_found(grant_id)
    customer = uow.customers.get(grant.customer_key)
    if customer is None:
        raise customer_not_found(grant.customer_key)
    now = ctx.now_in(uow, customer.clock_key)
    used = uow.ledger.debits_by_grant([grant_id], now).get(grant_id, Decimal(0))
    return grant.with_used(used), now


def void_grant(ctx: GrantContext, grant_id: str, reason: str, request_id: str) -> tuple[Grant, datetime]:
    """Void the grant (what was left of it leaves the balance), once per request id; the grant as it
    stands at its customer's now (voided), and that now (the instant of its status in an answer)."""
    print_ = fingerprint(grant_id, reason)
    customer_key = ctx.transactions.read(lambda uow: uow.grants.customer_of(grant_id))
    if customer_key is None:
        raise _grant_not_found(grant_id)
    customer, _ = catch_up_customer(ctx, customer_key)

    def work(uow: GrantUnitOfWork) -> tuple[Grant, datetime]:
        uow.customers.lock(customer_key)
        seen = replay(uow.request_ids, "VoidGrant", request_id, print_)
        if seen is not None:
            return _grant_now(uow, ctx, seen)
        grant = uow.grants.get(grant_id, for_update=True)
        if grant is None:
            raise _grant_not_found(grant_id)
        now = ctx.now_in(uow, customer.clock_key)
        if grant.void_time is not None:
            raise FailedPrecondition(
                f"grant {grant_id!r} is already voided", reason="GRANT_ALREADY_VOIDED", metadata={"grant_id": grant_id}
            )
        if grant.closed or (grant.expire_time is not None and grant.expire_time <= now):
            raise FailedPrecondition(
                f"grant {grant_id!r} has expired", reason="GRANT_EXPIRED", metadata={"grant_id": grant_id}
            )
        remaining = Decimal(0)
        if grant.opens_at is None:
            remaining = exact_difference(grant.amount, grant.used)
            uow.ledger.add(
                ledger_entry(grant, EntryType.VOID, -remaining, now, reason or "voided by an operator", closes=True)
            )
        uow.events.add([grant_voided(grant, customer.clock_key, remaining, now, reason)])
        # A pending grant (not yet effective) never counted: voided, it never will, and has no ledger entry.
        uow.grants.void(grant_id, now, reason)
        alerts.evaluate(uow, customer.clock_key, now, [customer_key])
        remember(uow.request_ids, "VoidGrant", request_id, print_, grant_id, now)
        return replace(grant, void_time=now, closed=True, reason=reason, opens_at=None), now

    return ctx.transactions.write(work)


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
) -> tuple[Grant, datetime]:
    """Give the customer a one-off grant, once per request id; the grant as it stands at the
    customer's now, and that now (the instant of its status in an answer)."""
    print_ = fingerprint(customer_key, currency_key, str(amount), effective_time, expire_time, priority, reason)

    def work(uow: GrantUnitOfWork) -> tuple[Grant, datetime]:
        customer = uow.customers.lock(customer_key) or uow.customers.get(customer_key)
        if customer is None:
            raise customer_not_found(customer_key)
        seen = replay(uow.request_ids, "CreateGrant", request_id, print_)
        if seen is not None:
            return _grant_now(uow, ctx, seen)
        if not uow.currencies.exists(currency_key):
            raise currency_not_found(currency_key)
        now = ctx.now_in(uow, customer.clock_key)
        effective = effective_time or now
        if expire_time is not None and expire_time <= effective:
            raise InvalidArgument(
                "expire_time must be after effective_time",
                violations=[FieldViolation("expire_time", "must be after effective_time (or now when that is unset)")],
            )
        grant = Grant(
            grant_id=new_id("grt"),
            customer_key=customer_key,
            currency_key=currency_key,
            clock_key=customer.clock_key,
            source=GrantSource.ONE_OFF,
            subscription_id=None,
            entitlement_key=None,
            period_index=None,
            amount=amount,
            effective_time=effective,
            expire_time=expire_time,
            priority=RECURRING_PRIORITY if priority is None else priority,
            void_time=None,
            reason=reason,
            # Stored pending until it is effective: its GRANT entry is written then, by the catch-up.
            opens_at=effective if effective > now else None,
        )
        uow.grants.add(grant)
        if grant.opens_at is None:
            uow.ledger.add(grant_entry(grant, reason or "one-off grant"))
            uow.events.add(granted_events([grant]))
            alerts.evaluate(uow, customer.clock_key, now, [customer_key])
        remember(uow.request_ids, "CreateGrant", request_id, print_, grant.grant_id, now)
        return grant, now

    return ctx.transactions.write(work)
