"""Provisioning: a subscription of a customer to a published plan version, with the values of its
variable entitlements, queued for the grant service in the same transaction.

One write transaction does it all (a replay, the customer, the plan, the new rows) except reading a
test clock's time from the grant service, never done while holding the transaction (on SQLite, the
write lock): for a customer on a test clock the first attempt stops once it has read the customer
(`_ClockNeeded`), the clock is read, and the transaction runs again with that time."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

from catalog_service.domain import lifecycle
from catalog_service.domain.model import Customer, PlanView, Subscription
from catalog_service.domain.provisioning import resolve_entitlements
from catalog_service.service_layer.context import CatalogContext
from catalog_service.service_layer.idempotency import Replayed, RequestKey, run_once
from catalog_service.service_layer.plans import check_not_archived, plan_not_found, version_view
from catalog_service.service_layer.subscriptions import SubscriptionView, queue_revision
from catalog_service.service_layer.unit_of_work import CatalogUnitOfWork
from credit_common.errors import FailedPrecondition, FieldViolation, InvalidArgument, Violations, not_found
from credit_common.ids import new_id


@dataclass(frozen=True)
class ProvisionRequest:
    customer_key: str
    plan_key: str
    plan_version: int  # 0: the latest
    values: Mapping[str, str]  # entitlement key -> decimal string, as the caller sent it
    start_time: datetime | None  # None: the customer's now
    end_time: datetime | None
    test_clock_id: str  # '' : the customer's clock


class _ClockNeeded(Exception):
    """Raised inside the write transaction when it needs a test clock's time: the caller rolls back,
    reads it from the grant service, and runs the transaction again."""

    def __init__(self, test_clock_id: str) -> None:
        super().__init__(test_clock_id)
        self.test_clock_id = test_clock_id


def provision_subscription(
    ctx: CatalogContext, request: ProvisionRequest, key: RequestKey | None
) -> SubscriptionView | Replayed:
    _check_request(request)
    clock_times: dict[str, datetime] = {}

    def effect(uow: CatalogUnitOfWork) -> SubscriptionView:
        customer = uow.customers.get(request.customer_key)
        if customer is None:
            raise not_found("customer", request.customer_key, "CUSTOMER_NOT_FOUND")
        clock_id = _clock_of(customer, request.test_clock_id)
        if clock_id and clock_id not in clock_times:
            raise _ClockNeeded(clock_id)
        now = clock_times[clock_id] if clock_id else ctx.clock.now()
        version = _published_version(uow, request.plan_key, request.plan_version)
        subscription = _new_subscription(ctx, request, version, clock_id, now)
        uow.subscriptions.add(subscription)
        return queue_revision(ctx, uow, subscription, now)

    while True:
        try:
            return ctx.queued(run_once(ctx.transactions, ctx.clock, key, effect))
        except _ClockNeeded as needed:
            clock_times[needed.test_clock_id] = ctx.now_of(needed.test_clock_id)


def _check_request(request: ProvisionRequest) -> None:
    violations = Violations()
    if not request.customer_key:
        violations.add("customer_key", "is required")
    if not request.plan_key:
        violations.add("plan_key", "is required")
    if request.plan_version < 0:
        violations.add("plan_version", "must be 0 (latest) or a published version")
    violations.raise_if_any()


def _clock_of(customer: Customer, test_clock_id: str) -> str | None:
    """The clock the subscription lives on: the customer's; the request may only repeat it."""
    if test_clock_id and customer.test_clock_id and test_clock_id != customer.test_clock_id:
        raise InvalidArgument(
            "test_clock_id differs from the customer's test clock",
            reason="TEST_CLOCK_MISMATCH",
            violations=[
                FieldViolation(
                    "test_clock_id", f"must be the customer's test clock {customer.test_clock_id!r} or empty"
                )
            ],
        )
    return test_clock_id or customer.test_clock_id


def _published_version(uow: CatalogUnitOfWork, plan_key: str, number: int) -> PlanView:
    """Version `number` (0: the latest) of a plan that is published and not archived."""
    plan = uow.plans.get(plan_key)
    if plan is None:
        raise plan_not_found(plan_key)
    check_not_archived(plan)
    if plan.latest_version == 0:
        raise FailedPrecondition(
            f"plan {plan_key!r} has no published version", reason="PLAN_NOT_PUBLISHED", metadata={"plan_key": plan_key}
        )
    return version_view(uow, plan, number or plan.latest_version)


def _new_subscription(
    ctx: CatalogContext, request: ProvisionRequest, version: PlanView, clock_id: str | None, now: datetime
) -> Subscription:
    """The subscription's first revision, its entitlements resolved with the request's values; one
    field violation per problem."""
    violations = Violations()
    resolved = resolve_entitlements(version.content, request.values, violations)
    start = request.start_time or now
    if request.end_time is not None and request.end_time <= start:
        violations.add("end_time", "must be after start_time", "END_BEFORE_START")
    if any(lifecycle.first_period_end(start, e.cadence) is None for e in resolved.credit_entitlements):
        violations.add(
            "start_time",
            "the first period of every credit entitlement must end before year 10000",
            "TIMESTAMP_OUT_OF_RANGE",
        )
    if resolved.missing or any(v.field.startswith("entitlement_values") for v in violations):
        violations.raise_if_any(
            "the entitlement values do not fit the plan version"
            + (f"; missing values for: {', '.join(resolved.missing)}" if resolved.missing else ""),
            reason="INVALID_ENTITLEMENT_VALUES",
            metadata={"missing_entitlements": ",".join(resolved.missing)} if resolved.missing else None,
        )
    violations.raise_if_any()
    return Subscription(
        subscription_id=new_id("sub"),
        customer_key=request.customer_key,
        plan_key=request.plan_key,
        plan_version=version.version,
        start_time=start,
        end_time=request.end_time,
        credit_entitlements=tuple(resolved.credit_entitlements),
        feature_entitlements=tuple(resolved.feature_entitlements),
        test_clock_id=clock_id,
        revision=1,
        create_time=ctx.clock.now(),
    )
