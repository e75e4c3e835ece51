"""Subscriptions after provisioning (provisioning.py): cancel and amend (each a new revision queued
for the grant service in the transaction of the change), get and list with their handoff state."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

from catalog_service.domain import lifecycle
from catalog_service.domain.model import AmendmentTiming, CancelMode, Subscription, SubscriptionStatus
from catalog_service.domain.outbox import HandoffState, summarize
from catalog_service.domain.provisioning import amendment_amounts
from catalog_service.service_layer.context import SERVICE, CatalogContext
from catalog_service.service_layer.idempotency import Replayed, RequestKey, replayed, run_once
from catalog_service.service_layer.unit_of_work import CatalogUnitOfWork
from credit_common.errors import FieldViolation, InvalidArgument, NotFound, Violations, not_found
from credit_common.pagination import page_request


@dataclass(frozen=True)
class SubscriptionView:
    """A subscription as shown at `now` (its clock's time), with its handoff state."""

    subscription: Subscription
    status: SubscriptionStatus
    now: datetime
    handoff: HandoffState


def subscription_not_found(subscription_id: str) -> NotFound:
    return not_found("subscription", subscription_id, "SUBSCRIPTION_NOT_FOUND")


def queue_revision(
    ctx: CatalogContext, uow: CatalogUnitOfWork, subscription: Subscription, now: datetime
) -> SubscriptionView:
    """Queue the subscription's new revision for the grant service (same transaction) and view it."""
    queued = uow.outbox.add_subscription(subscription, ctx.clock.now())
    if subscription.revision == 1:  # a new subscription: the delivery just queued is its only one
        handoff = summarize([queued])
    else:
        handoff = uow.outbox.handoff_states([subscription.subscription_id])[subscription.subscription_id]
    return SubscriptionView(subscription, subscription.status_at(now), now, handoff)


def _views(
    ctx: CatalogContext, uow: CatalogUnitOfWork, subscriptions: Sequence[Subscription]
) -> list[SubscriptionView]:
    """The views of a page of subscriptions: one handoff-state query, one clock read per clock."""
    handoffs = uow.outbox.handoff_states([s.subscription_id for s in subscriptions])
    nows: dict[str | None, datetime] = {}
    views = []
    for s in subscriptions:
        if s.test_clock_id not in nows:
            nows[s.test_clock_id] = ctx.now_of(s.test_clock_id)
        now = nows[s.test_clock_id]
        views.append(SubscriptionView(s, s.status_at(now), now, handoffs[s.subscription_id]))
    return views


def _change(
    ctx: CatalogContext,
    subscription_id: str,
    change: Callable[[CatalogUnitOfWork, Subscription, datetime], Subscription],
    request: RequestKey | None,
) -> SubscriptionView | Replayed:
    """Read the subscription and its clock's time, then in one write
    transaction lock it, apply `change` and queue the new revision."""

    def read(uow: CatalogUnitOfWork) -> tuple[Replayed | None, Subscription | None]:
        earlier = replayed(uow, request)
        return earlier, None if earlier is not None else uow.subscriptions.get(subscription_id)

    earlier, current = ctx.transactions.read(read)
    if earlier is not None:
        return earlier
    if current is None:
        raise subscription_not_found(subscription_id)
    now = ctx.now_of(current.test_clock_id)

    def effect(uow: CatalogUnitOfWork) -> SubscriptionView:
        subscription = uow.subscriptions.get(subscription_id, for_update=True)
        assert subscription is not None  # subscriptions are never deleted
        changed = change(uow, subscription, now)
        uow.subscriptions.save_revision(changed)
        return queue_revision(ctx, uow, changed, now)

    return ctx.queued(run_once(ctx.transactions, ctx.clock, request, effect))


def cancel_subscription(
    ctx: CatalogContext, subscription_id: str, mode: CancelMode | None, request: RequestKey | None
) -> SubscriptionView | Replayed:
    """A new revision ending at now or at the end of the current period (see domain.lifecycle)."""
    if mode is None:
        raise InvalidArgument(
            "mode is required",
            violations=[FieldViolation("mode", "must be CANCEL_MODE_IMMEDIATELY or CANCEL_MODE_AT_PERIOD_END")],
        )
    return _change(ctx, subscription_id, lambda _uow, s, now: lifecycle.cancel(s, mode, now), request)


def amend_subscription(
    ctx: CatalogContext,
    subscription_id: str,
    values: Mapping[str, str],
    timing: AmendmentTiming,
    request: RequestKey | None,
) -> SubscriptionView | Replayed:
    """A new revision whose credit entitlements in `values` gain an amount
    change at their next period start or now (see domain.lifecycle)."""

    def change(uow: CatalogUnitOfWork, subscription: Subscription, now: datetime) -> Subscription:
        version = uow.plans.get_version(subscription.plan_key, subscription.plan_version)
        assert version is not None  # published versions are never deleted
        violations = Violations()
        amounts = amendment_amounts(version.content, values, violations)
        violations.raise_if_any(
            "the entitlement values do not fit the plan version", reason="INVALID_ENTITLEMENT_VALUES"
        )
        return lifecycle.amend(subscription, amounts, timing, now)

    return _change(ctx, subscription_id, change, request)


def get_subscription(ctx: CatalogContext, subscription_id: str) -> SubscriptionView:
    def read(uow: CatalogUnitOfWork) -> SubscriptionView:
        subscription = uow.subscriptions.get(subscription_id)
        if subscription is None:
            raise subscription_not_found(subscription_id)
        return _views(ctx, uow, [subscription])[0]

    return ctx.transactions.read(read)


def list_subscriptions(
    ctx: CatalogContext, customer_key: str, plan_key: str, page_size: int, page_token: str
) -> tuple[list[SubscriptionView], str]:
    filters = [customer_key, plan_key]
    page = page_request(page_size, page_token, filters, method=SERVICE + "ListSubscriptions", key=(datetime, str))

    def read(uow: CatalogUnitOfWork) -> tuple[list[SubscriptionView], str]:
        items = uow.subscriptions.list(customer_key, plan_key, page.after, page.size + 1)
        items, token = page.cut(items, lambda s: (s.create_time, s.subscription_id))
        return _views(ctx, uow, items), token

    return ctx.transactions.read(read)
