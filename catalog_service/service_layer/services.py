"""The catalog's use cases, each one transaction over a unit of work. Inputs are
plain values (decimal strings as the caller sent them); every caller mistake
is a DomainError."""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import TypeVar

from catalog_service.domain import lifecycle
from catalog_service.domain.catalog import CURRENCY_UPDATABLE_FIELDS, check_feature, parse_rates
from catalog_service.domain.model import (
    AmendmentTiming,
    CancelMode,
    CreditCurrency,
    Customer,
    Feature,
    FeatureType,
    Plan,
    PlanContent,
    PlanStatus,
    PlanVersion,
    PlanView,
    Subscription,
    SubscriptionStatus,
)
from catalog_service.domain.outbox import HandoffState, OutboxEntry, summarize
from catalog_service.domain.plans import (
    PLAN_UPDATABLE_FIELDS,
    PlanSpec,
    build_content,
    check_key,
    check_plan_rules,
    check_text,
    referenced_keys,
)
from catalog_service.domain.provisioning import amendment_amounts, resolve_entitlements
from catalog_service.service_layer.idempotency import Replayed, RequestKey, replayed, run_once
from catalog_service.service_layer.ports import TestClockReader
from catalog_service.service_layer.unit_of_work import CatalogUnitOfWork, UnitsOfWork
from credit_common.clock import Clock
from credit_common.errors import (
    AlreadyExists,
    FailedPrecondition,
    FieldViolation,
    InvalidArgument,
    NotFound,
    Violations,
)
from credit_common.ids import new_id
from credit_common.pagination import page_request

T = TypeVar("T")


@dataclass(frozen=True)
class SubscriptionView:
    """A subscription as shown at `now` (its clock's time), with its handoff state."""

    subscription: Subscription
    status: SubscriptionStatus
    now: datetime
    handoff: HandoffState


def _check_mask(mask: Sequence[str], allowed: Collection[str], violations: Violations) -> None:
    if not mask:
        violations.add("update_mask", f"is required: any of {', '.join(allowed)}")
    for path in mask:
        if path not in allowed:
            violations.add("update_mask", f"{path!r} cannot be updated: use any of {', '.join(allowed)}")


def _not_found(kind: str, key: str, reason: str) -> NotFound:
    return NotFound(f"{kind} {key!r} does not exist", reason=reason, metadata={"key": key})


_SERVICE = "/catalog_service.v1.CatalogService/"


class _ClockNeeded(Exception):
    """Raised inside a write transaction that needs a test clock's time: the caller rolls back,
    reads it from the grant service, and runs the transaction again."""

    def __init__(self, test_clock_id: str) -> None:
        super().__init__(test_clock_id)
        self.test_clock_id = test_clock_id


class CatalogService:
    """Mutations return their result, or `Replayed` (the stored first response)
    when their request_id was seen before with the same request."""

    def __init__(
        self,
        uows: UnitsOfWork,
        clock: Clock,
        test_clocks: TestClockReader,
        on_queued: Callable[[], None] = lambda: None,
    ) -> None:
        self.uows = uows
        self.clock = clock
        self.test_clocks = test_clocks
        self._on_queued = on_queued  # wakes the outbox dispatcher

    def _queued(self, result: T) -> T:
        """After a commit that queued a delivery (or its replay): deliver now, not at the next poll."""
        self._on_queued()
        return result

    # ------------------------------------------------------------ features

    def create_feature(
        self, key: str, display_name: str, type_: FeatureType | None, unit_name: str, request: RequestKey | None
    ) -> Feature | Replayed:
        violations = Violations()
        check_key(key, "feature.key", violations)
        check_text(display_name, "feature.display_name", violations, 200)
        check_feature(type_, unit_name, violations)
        violations.raise_if_any()
        assert type_ is not None

        def effect(uow: CatalogUnitOfWork) -> Feature:
            if uow.features.get(key) is not None:
                raise AlreadyExists(
                    f"feature {key!r} already exists", reason="KEY_ALREADY_EXISTS", metadata={"key": key}
                )
            feature = Feature(key, display_name, type_, unit_name, self.clock.now())
            uow.features.add(feature)
            return feature

        return run_once(self.uows, self.clock, request, effect)

    def get_feature(self, key: str) -> Feature:
        with self.uows.read() as uow:
            feature = uow.features.get(key)
        if feature is None:
            raise _not_found("feature", key, "FEATURE_NOT_FOUND")
        return feature

    def list_features(self, page_size: int, page_token: str) -> tuple[list[Feature], str]:
        page = page_request(page_size, page_token, method=_SERVICE + "ListFeatures", key=(str,))
        with self.uows.read() as uow:
            items = uow.features.list(page.after, page.size + 1)
        return page.cut(items, lambda f: (f.key,))

    # --------------------------------------------------- credit currencies

    def create_credit_currency(
        self,
        key: str,
        display_name: str,
        unit_name: str,
        rates: Sequence[tuple[str, str]],
        request: RequestKey | None,
    ) -> CreditCurrency | Replayed:
        violations = Violations()
        check_key(key, "credit_currency.key", violations)
        check_text(display_name, "credit_currency.display_name", violations, 200)
        check_text(unit_name, "credit_currency.unit_name", violations, 200)

        def effect(uow: CatalogUnitOfWork) -> CreditCurrency:
            parsed = parse_rates(rates, uow.features.types_of({k for k, _ in rates}), violations)
            violations.raise_if_any()
            if uow.currencies.get(key) is not None:
                raise AlreadyExists(
                    f"credit currency {key!r} already exists", reason="KEY_ALREADY_EXISTS", metadata={"key": key}
                )
            now = self.clock.now()
            currency = CreditCurrency(key, display_name, unit_name, parsed, 1, now, now)
            uow.currencies.save(currency, rates_changed=True)
            uow.outbox.add_credit_currency(currency, now)
            return currency

        return self._queued(run_once(self.uows, self.clock, request, effect))

    def update_credit_currency(
        self,
        key: str,
        display_name: str,
        unit_name: str,
        rates: Sequence[tuple[str, str]],
        mask: Sequence[str],
        request: RequestKey | None,
    ) -> CreditCurrency | Replayed:
        violations = Violations()
        _check_mask(mask, CURRENCY_UPDATABLE_FIELDS, violations)
        if "display_name" in mask:
            check_text(display_name, "credit_currency.display_name", violations, 200)
        if "unit_name" in mask:
            check_text(unit_name, "credit_currency.unit_name", violations, 200)

        def effect(uow: CatalogUnitOfWork) -> CreditCurrency:
            parsed = None
            if "rates" in mask:
                parsed = parse_rates(rates, uow.features.types_of({k for k, _ in rates}), violations)
            violations.raise_if_any()
            current = uow.currencies.get(key, for_update=True)  # concurrent updates take turns
            if current is None:
                raise _not_found("credit currency", key, "CREDIT_CURRENCY_NOT_FOUND")
            changed = replace(
                current,
                display_name=display_name if "display_name" in mask else current.display_name,
                unit_name=unit_name if "unit_name" in mask else current.unit_name,
                rates=parsed if parsed is not None else current.rates,
            )
            if changed == current:
                return current
            now = self.clock.now()
            changed = replace(changed, revision=current.revision + 1, update_time=now)
            uow.currencies.save(changed, rates_changed=changed.rates != current.rates)
            uow.outbox.add_credit_currency(changed, now)
            return changed

        return self._queued(run_once(self.uows, self.clock, request, effect))

    def get_credit_currency(self, key: str) -> CreditCurrency:
        with self.uows.read() as uow:
            currency = uow.currencies.get(key)
        if currency is None:
            raise _not_found("credit currency", key, "CREDIT_CURRENCY_NOT_FOUND")
        return currency

    def list_credit_currencies(self, page_size: int, page_token: str) -> tuple[list[CreditCurrency], str]:
        page = page_request(page_size, page_token, method=_SERVICE + "ListCreditCurrencies", key=(str,))
        with self.uows.read() as uow:
            items = uow.currencies.list(page.after, page.size + 1)
        return page.cut(items, lambda c: (c.key,))

    # --------------------------------------------------------------- plans

    @staticmethod
    def _check_against_catalog(uow: CatalogUnitOfWork, content: PlanContent, violations: Violations) -> None:
        feature_keys, currency_keys = referenced_keys(content)
        check_plan_rules(
            content,
            feature_types=uow.features.types_of(feature_keys),
            currency_keys=uow.currencies.existing_keys(currency_keys),
            violations=violations,
        )

    @staticmethod
    def _draft_view(plan: Plan) -> PlanView:
        return PlanView(plan, 0, plan.draft, None)

    @staticmethod
    def _plan(uow: CatalogUnitOfWork, key: str) -> Plan:
        plan = uow.plans.get(key, for_update=True)
        if plan is None:
            raise _not_found("plan", key, "PLAN_NOT_FOUND")
        return plan

    @staticmethod
    def _not_archived(plan: Plan) -> None:
        if plan.archive_time is not None:
            raise FailedPrecondition(
                f"plan {plan.key!r} is archived", reason="PLAN_ARCHIVED", metadata={"plan_key": plan.key}
            )

    def _latest_view(self, uow: CatalogUnitOfWork, plan: Plan) -> PlanView:
        if plan.latest_version == 0:
            return self._draft_view(plan)
        version = uow.plans.get_version(plan.key, plan.latest_version)
        assert version is not None
        return PlanView(plan, version.version, version.content, version.publish_time)

    def create_plan(self, key: str, spec: PlanSpec, request: RequestKey | None) -> PlanView | Replayed:
        violations = Violations()
        check_key(key, "plan.key", violations)
        content = build_content(PlanContent(), spec, PLAN_UPDATABLE_FIELDS, violations)

        def effect(uow: CatalogUnitOfWork) -> PlanView:
            self._check_against_catalog(uow, content, violations)
            violations.raise_if_any()
            if uow.plans.get(key) is not None:
                raise AlreadyExists(f"plan {key!r} already exists", reason="KEY_ALREADY_EXISTS", metadata={"key": key})
            now = self.clock.now()
            plan = Plan(key, content, 0, now, now, None)
            uow.plans.save(plan)
            return self._draft_view(plan)

        return run_once(self.uows, self.clock, request, effect)

    def update_plan(
        self, key: str, spec: PlanSpec, mask: Sequence[str], request: RequestKey | None
    ) -> PlanView | Replayed:
        violations = Violations()
        _check_mask(mask, PLAN_UPDATABLE_FIELDS, violations)
        violations.raise_if_any()

        def effect(uow: CatalogUnitOfWork) -> PlanView:
            plan = self._plan(uow, key)
            self._not_archived(plan)
            content = build_content(plan.draft, spec, mask, violations)
            if plan.latest_version > 0 and content.custom != plan.draft.custom:
                violations.add("plan.custom", "cannot change after the plan's first publication", "IMMUTABLE")
            self._check_against_catalog(uow, content, violations)
            violations.raise_if_any()
            plan = replace(plan, draft=content, update_time=self.clock.now())
            uow.plans.save(plan)
            return self._draft_view(plan)

        return run_once(self.uows, self.clock, request, effect)

    def publish_plan(self, key: str, request: RequestKey | None) -> PlanView | Replayed:
        def effect(uow: CatalogUnitOfWork) -> PlanView:
            plan = self._plan(uow, key)
            self._not_archived(plan)
            if not plan.draft.has_entitlements:
                raise FailedPrecondition(
                    f"the draft of plan {key!r} has no entitlements: add at least one before publishing",
                    reason="PLAN_HAS_NO_ENTITLEMENTS",
                    metadata={"plan_key": key},
                )
            if plan.latest_version > 0:
                latest = uow.plans.get_version(key, plan.latest_version)
                if latest is not None and latest.content == plan.draft:
                    raise FailedPrecondition(
                        f"the draft of plan {key!r} is unchanged since version {plan.latest_version}",
                        reason="PLAN_DRAFT_UNCHANGED",
                        metadata={"plan_key": key, "latest_version": str(plan.latest_version)},
                    )
            violations = Violations()
            self._check_against_catalog(uow, plan.draft, violations)
            violations.raise_if_any("the draft is not valid")
            now = self.clock.now()
            version = PlanVersion(key, plan.latest_version + 1, plan.draft, now)
            uow.plans.add_version(version)
            plan = replace(plan, latest_version=version.version)
            uow.plans.save(plan)
            return PlanView(plan, version.version, version.content, now)

        return run_once(self.uows, self.clock, request, effect)

    def archive_plan(self, key: str, request: RequestKey | None) -> PlanView | Replayed:
        def effect(uow: CatalogUnitOfWork) -> PlanView:
            plan = self._plan(uow, key)
            if plan.archive_time is None:
                plan = replace(plan, archive_time=self.clock.now())
                uow.plans.save(plan)
            return self._latest_view(uow, plan)

        return run_once(self.uows, self.clock, request, effect)

    def _version_view(self, uow: CatalogUnitOfWork, plan: Plan, number: int) -> PlanView:
        version = uow.plans.get_version(plan.key, number)
        if version is None:
            raise NotFound(
                f"plan {plan.key!r} has no published version {number}",
                reason="PLAN_VERSION_NOT_FOUND",
                metadata={"plan_key": plan.key, "version": str(number), "latest_version": str(plan.latest_version)},
            )
        return PlanView(plan, version.version, version.content, version.publish_time)

    def get_plan(self, key: str, version: int, draft: bool) -> PlanView:
        if version < 0 or (draft and version != 0):
            raise InvalidArgument(
                "version must be 0 (latest) or a published version, and 0 with draft",
                violations=[FieldViolation("version", "must be >= 0, and 0 when draft is true")],
            )
        with self.uows.read() as uow:
            plan = uow.plans.get(key)
            if plan is None:
                raise _not_found("plan", key, "PLAN_NOT_FOUND")
            if draft:
                return self._draft_view(plan)
            if version == 0 and plan.latest_version == 0:
                raise NotFound(
                    f"plan {key!r} has no published version yet (ask for its draft)",
                    reason="PLAN_VERSION_NOT_FOUND",
                    metadata={"plan_key": key},
                )
            return self._version_view(uow, plan, version or plan.latest_version)

    def list_plans(self, status: PlanStatus | None, page_size: int, page_token: str) -> tuple[list[PlanView], str]:
        filters = [status.value if status else ""]
        page = page_request(page_size, page_token, filters, method=_SERVICE + "ListPlans", key=(str,))
        with self.uows.read() as uow:
            plans = uow.plans.list(status, page.after, page.size + 1)
            plans, token = page.cut(plans, lambda p: (p.key,))
            return [self._latest_view(uow, p) for p in plans], token

    # ----------------------------------------------------------- customers

    def create_customer(
        self, key: str, display_name: str, test_clock_id: str, request: RequestKey | None
    ) -> Customer | Replayed:
        violations = Violations()
        check_key(key, "customer.key", violations)
        check_text(display_name, "customer.display_name", violations, 200)
        check_text(test_clock_id, "customer.test_clock_id", violations, 128)
        violations.raise_if_any()
        if test_clock_id:
            self.test_clocks.now_of(test_clock_id, "customer.test_clock_id")  # NotFound for an unknown clock

        def effect(uow: CatalogUnitOfWork) -> Customer:
            if uow.customers.get(key) is not None:
                raise AlreadyExists(
                    f"customer {key!r} already exists", reason="KEY_ALREADY_EXISTS", metadata={"key": key}
                )
            customer = Customer(key, display_name, test_clock_id or None, self.clock.now())
            uow.customers.add(customer)
            return customer

        return run_once(self.uows, self.clock, request, effect)

    def get_customer(self, key: str) -> Customer:
        with self.uows.read() as uow:
            customer = uow.customers.get(key)
        if customer is None:
            raise _not_found("customer", key, "CUSTOMER_NOT_FOUND")
        return customer

    def list_customers(self, page_size: int, page_token: str) -> tuple[list[Customer], str]:
        page = page_request(page_size, page_token, method=_SERVICE + "ListCustomers", key=(str,))
        with self.uows.read() as uow:
            items = uow.customers.list(page.after, page.size + 1)
        return page.cut(items, lambda c: (c.key,))

    # ------------------------------------------------------- subscriptions

    def _now(self, test_clock_id: str | None) -> datetime:
        return self.test_clocks.now_of(test_clock_id) if test_clock_id else self.clock.now()

    def _views(self, uow: CatalogUnitOfWork, subscriptions: Sequence[Subscription]) -> list[SubscriptionView]:
        """The views of a page of subscriptions: one handoff-state query, one clock read per clock."""
        handoffs = uow.outbox.handoff_states([s.subscription_id for s in subscriptions])
        nows: dict[str | None, datetime] = {}
        views = []
        for s in subscriptions:
            if s.test_clock_id not in nows:
                nows[s.test_clock_id] = self._now(s.test_clock_id)
            now = nows[s.test_clock_id]
            views.append(SubscriptionView(s, s.status_at(now), now, handoffs[s.subscription_id]))
        return views

    def provision_subscription(
        self,
        customer_key: str,
        plan_key: str,
        plan_version: int,
        values: Mapping[str, str],
        start_time: datetime | None,
        end_time: datetime | None,
        test_clock_id: str,
        request: RequestKey | None,
    ) -> SubscriptionView | Replayed:
        violations = Violations()
        if not customer_key:
            violations.add("customer_key", "is required")
        if not plan_key:
            violations.add("plan_key", "is required")
        if plan_version < 0:
            violations.add("plan_version", "must be 0 (latest) or a published version")
        violations.raise_if_any()

        # One write transaction does it all (a replay, the customer, the plan, the new rows)
        # except reading a test clock's time from the grant service, never done while holding
        # the transaction (on SQLite, the write lock): for a customer on a test clock the first
        # attempt stops once it has read the customer, the clock is read, and the transaction
        # runs again with that time.
        clock_times: dict[str, datetime] = {}

        def effect(uow: CatalogUnitOfWork) -> SubscriptionView:
            customer = uow.customers.get(customer_key)
            if customer is None:
                raise _not_found("customer", customer_key, "CUSTOMER_NOT_FOUND")
            if test_clock_id and customer.test_clock_id and test_clock_id != customer.test_clock_id:
                raise InvalidArgument(
                    "test_clock_id differs from the customer's test clock",
                    reason="TEST_CLOCK_MISMATCH",
                    violations=[
                        FieldViolation(
                            "test_clock_id",
                            f"must be the customer's test clock {customer.test_clock_id!r} or empty",
                        )
                    ],
                )
            clock_id = test_clock_id or customer.test_clock_id
            if clock_id and clock_id not in clock_times:
                raise _ClockNeeded(clock_id)
            now = clock_times[clock_id] if clock_id else self.clock.now()
            plan = uow.plans.get(plan_key)
            if plan is None:
                raise _not_found("plan", plan_key, "PLAN_NOT_FOUND")
            self._not_archived(plan)
            if plan.latest_version == 0:
                raise FailedPrecondition(
                    f"plan {plan_key!r} has no published version",
                    reason="PLAN_NOT_PUBLISHED",
                    metadata={"plan_key": plan_key},
                )
            version = self._version_view(uow, plan, plan_version or plan.latest_version)
            resolved = resolve_entitlements(version.content, values, violations)
            start = start_time or now
            if end_time is not None and end_time <= start:
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
            subscription = Subscription(
                subscription_id=new_id("sub"),
                customer_key=customer_key,
                plan_key=plan_key,
                plan_version=version.version,
                start_time=start,
                end_time=end_time,
                credit_entitlements=tuple(resolved.credit_entitlements),
                feature_entitlements=tuple(resolved.feature_entitlements),
                test_clock_id=clock_id,
                revision=1,
                create_time=self.clock.now(),
            )
            uow.subscriptions.add(subscription)
            return self._queue(uow, subscription, now)

        while True:
            try:
                return self._queued(run_once(self.uows, self.clock, request, effect))
            except _ClockNeeded as needed:
                clock_times[needed.test_clock_id] = self._now(needed.test_clock_id)

    def _queue(self, uow: CatalogUnitOfWork, subscription: Subscription, now: datetime) -> SubscriptionView:
        """Queue the subscription's new revision for the grant service (same transaction) and view it."""
        queued = uow.outbox.add_subscription(subscription, self.clock.now())
        if subscription.revision == 1:  # a new subscription: the delivery just queued is its only one
            handoff = summarize([queued])
        else:
            handoff = uow.outbox.handoff_states([subscription.subscription_id])[subscription.subscription_id]
        return SubscriptionView(subscription, subscription.status_at(now), now, handoff)

    def _change_subscription(
        self,
        subscription_id: str,
        change: Callable[[CatalogUnitOfWork, Subscription, datetime], Subscription],
        request: RequestKey | None,
    ) -> SubscriptionView | Replayed:
        """Read the subscription and its clock's time, then in one write
        transaction lock it, apply `change` and queue the new revision."""
        with self.uows.read() as uow:
            earlier = replayed(uow, request)
            if earlier is not None:
                return earlier
            current = uow.subscriptions.get(subscription_id)
        if current is None:
            raise _not_found("subscription", subscription_id, "SUBSCRIPTION_NOT_FOUND")
        now = self._now(current.test_clock_id)

        def effect(uow: CatalogUnitOfWork) -> SubscriptionView:
            subscription = uow.subscriptions.get(subscription_id, for_update=True)
            assert subscription is not None  # subscriptions are never deleted
            changed = change(uow, subscription, now)
            uow.subscriptions.save_revision(changed)
            return self._queue(uow, changed, now)

        return self._queued(run_once(self.uows, self.clock, request, effect))

    def cancel_subscription(
        self, subscription_id: str, mode: CancelMode | None, request: RequestKey | None
    ) -> SubscriptionView | Replayed:
        """A new revision ending at now or at the end of the current period (see domain.lifecycle)."""
        if mode is None:
            raise InvalidArgument(
                "mode is required",
                violations=[FieldViolation("mode", "must be CANCEL_MODE_IMMEDIATELY or CANCEL_MODE_AT_PERIOD_END")],
            )
        return self._change_subscription(subscription_id, lambda _uow, s, now: lifecycle.cancel(s, mode, now), request)

    def amend_subscription(
        self,
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

        return self._change_subscription(subscription_id, change, request)

    def get_subscription(self, subscription_id: str) -> SubscriptionView:
        with self.uows.read() as uow:
            subscription = uow.subscriptions.get(subscription_id)
            if subscription is None:
                raise _not_found("subscription", subscription_id, "SUBSCRIPTION_NOT_FOUND")
            return self._views(uow, [subscription])[0]

    def list_subscriptions(
        self, customer_key: str, plan_key: str, page_size: int, page_token: str
    ) -> tuple[list[SubscriptionView], str]:
        filters = [customer_key, plan_key]
        page = page_request(page_size, page_token, filters, method=_SERVICE + "ListSubscriptions", key=(datetime, str))
        with self.uows.read() as uow:
            items = uow.subscriptions.list(customer_key, plan_key, page.after, page.size + 1)
            items, token = page.cut(items, lambda s: (s.create_time, s.subscription_id))
            return self._views(uow, items), token

    # ------------------------------------------------- handoffs (operators)

    def list_handoffs(
        self, status: str | None, kind: str | None, key: str, page_size: int, page_token: str
    ) -> tuple[list[OutboxEntry], str]:
        """The outbox's deliveries, oldest first; `status`/`kind` None and `key` '' for all."""
        filters = [status or "", kind or "", key]
        page = page_request(page_size, page_token, filters, method=_SERVICE + "ListHandoffs", key=(int,))
        with self.uows.read() as uow:
            items = uow.outbox.list(
                status=status,
                kind=kind,
                aggregate_key=key or None,
                after_id=page.after[0] if page.after else None,
                limit=page.size + 1,
            )
        return page.cut(items, lambda e: (e.id,))

    def requeue_handoffs(
        self, kind: str | None, key: str, all_parked: bool, request: RequestKey | None
    ) -> int | Replayed:
        """Put parked deliveries back in the queue, due now: those of one aggregate (`kind` and
        `key`), or every parked one (`all_parked`). Returns how many were parked."""
        violations = Violations()
        if all_parked:
            if kind is not None:
                violations.add("kind", "must be unset with all_parked")
            if key:
                violations.add("key", "must be empty with all_parked")
        else:
            if kind is None:
                violations.add("kind", "is required (SUBSCRIPTION or CREDIT_CURRENCY) unless all_parked is set")
            if not key:
                violations.add("key", "is required (a subscription_id or currency key) unless all_parked is set")
        violations.raise_if_any()

        def effect(uow: CatalogUnitOfWork) -> int:
            if all_parked:
                return uow.outbox.requeue_failed(None, None, self.clock.now())
            return uow.outbox.requeue_failed(kind, key, self.clock.now())

        return self._queued(run_once(self.uows, self.clock, request, effect))
