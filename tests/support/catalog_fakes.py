"""In-memory fakes of the catalog's ports (catalog_service/service_layer/ports.py), for use-case
tests at unit speed (cosmicpython's FakeUnitOfWork). A transaction works on a copy of the committed
state, which replaces it only when the work returns: an exception rolls everything back, as the
SQL units of work do. The SQL repositories themselves are tested against both databases."""

from __future__ import annotations

import copy
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypeVar

from catalog_service.domain.model import (
    CreditCurrency,
    Customer,
    Feature,
    FeatureType,
    Plan,
    PlanStatus,
    PlanVersion,
    Subscription,
)
from catalog_service.domain.outbox import (
    KIND_CREDIT_CURRENCY,
    KIND_SUBSCRIPTION,
    STATUS_FAILED,
    STATUS_PENDING,
    DeliveryRecord,
    HandoffState,
    OutboxEntry,
    summarize,
)
from credit_common.idempotency import SeenRequest

T = TypeVar("T")


class FakeConflict(Exception):
    """What a fake repository raises where the database would raise a constraint violation."""


def _after(items: list[T], key: Callable[[T], tuple], after: Sequence[Any] | None, limit: int) -> list[T]:
    ordered = sorted(items, key=key)
    if after is not None:
        ordered = [item for item in ordered if key(item) > tuple(after)]
    return ordered[:limit]


@dataclass
class State:
    features: dict[str, Feature] = field(default_factory=dict)
    currencies: dict[str, CreditCurrency] = field(default_factory=dict)
    plans: dict[str, Plan] = field(default_factory=dict)
    versions: dict[tuple[str, int], PlanVersion] = field(default_factory=dict)
    customers: dict[str, Customer] = field(default_factory=dict)
    subscriptions: dict[str, Subscription] = field(default_factory=dict)
    requests: dict[tuple[str, str], SeenRequest[bytes]] = field(default_factory=dict)
    outbox: list[OutboxEntry] = field(default_factory=list)


class _Features:
    def __init__(self, state: State) -> None:
        self.s = state

    def get(self, key: str) -> Feature | None:
        return self.s.features.get(key)

    def add(self, feature: Feature) -> None:
        if feature.key in self.s.features:
            raise FakeConflict(feature.key)
        self.s.features[feature.key] = feature

    def types_of(self, keys: Collection[str]) -> dict[str, FeatureType]:
        return {k: self.s.features[k].type for k in keys if k in self.s.features}

    def list(self, after: Sequence[Any] | None, limit: int) -> list[Feature]:
        return _after(list(self.s.features.values()), lambda f: (f.key,), after, limit)


class _Currencies:
    def __init__(self, state: State) -> None:
        self.s = state

    def get(self, key: str, *, for_update: bool = False) -> CreditCurrency | None:
        return self.s.currencies.get(key)

    def existing_keys(self, keys: Collection[str]) -> set[str]:
        return {k for k in keys if k in self.s.currencies}

    def save(self, currency: CreditCurrency, *, rates_changed: bool) -> None:
        self.s.currencies[currency.key] = currency

    def list(self, after: Sequence[Any] | None, limit: int) -> list[CreditCurrency]:
        return _after(list(self.s.currencies.values()), lambda c: (c.key,), after, limit)


class _Plans:
    def __init__(self, state: State) -> None:
        self.s = state

    def get(self, key: str, *, for_update: bool = False) -> Plan | None:
        return self.s.plans.get(key)

    def save(self, plan: Plan) -> None:
        self.s.plans[plan.key] = plan

    def add_version(self, version: PlanVersion) -> None:
        if (version.plan_key, version.version) in self.s.versions:
            raise FakeConflict(version.plan_key)
        self.s.versions[(version.plan_key, version.version)] = version

    def get_version(self, key: str, version: int) -> PlanVersion | None:
        return self.s.versions.get((key, version))

    def list(self, status: PlanStatus | None, after: Sequence[Any] | None, limit: int) -> list[Plan]:
        def status_of(plan: Plan) -> PlanStatus:
            if plan.archive_time is not None:
                return PlanStatus.ARCHIVED
            return PlanStatus.PUBLISHED if plan.latest_version else PlanStatus.DRAFT

        plans = [p for p in self.s.plans.values() if status is None or status_of(p) is status]
        return _after(plans, lambda p: (p.key,), after, limit)


class _Customers:
    def __init__(self, state: State) -> None:
        self.s = state

    def get(self, key: str) -> Customer | None:
        return self.s.customers.get(key)

    def add(self, customer: Customer) -> None:
        if customer.key in self.s.customers:
            raise FakeConflict(customer.key)
        self.s.customers[customer.key] = customer

    def list(self, after: Sequence[Any] | None, limit: int) -> list[Customer]:
        return _after(list(self.s.customers.values()), lambda c: (c.key,), after, limit)


class _Subscriptions:
    def __init__(self, state: State) -> None:
        self.s = state

    def get(self, subscription_id: str, *, for_update: bool = False) -> Subscription | None:
        return self.s.subscriptions.get(subscription_id)

    def add(self, subscription: Subscription) -> None:
        self.s.subscriptions[subscription.subscription_id] = subscription

    def save_revision(self, subscription: Subscription) -> None:
        assert self.s.subscriptions[subscription.subscription_id].revision == subscription.revision - 1
        self.s.subscriptions[subscription.subscription_id] = subscription

    def list(self, customer_key: str, plan_key: str, after: Sequence[Any] | None, limit: int) -> list[Subscription]:
        found = [
            s
            for s in self.s.subscriptions.values()
            if (not customer_key or s.customer_key == customer_key) and (not plan_key or s.plan_key == plan_key)
        ]
        found.sort(key=lambda s: (s.create_time, s.subscription_id), reverse=True)
        if after is not None:
            found = [s for s in found if (s.create_time, s.subscription_id) < tuple(after)]
        return found[:limit]


class _Requests:
    def __init__(self, state: State) -> None:
        self.s = state

    def get(self, method: str, request_id: str) -> SeenRequest[bytes] | None:
        return self.s.requests.get((method, request_id))

    def add(self, method: str, request_id: str, fingerprint: str, response: bytes, now: datetime) -> None:
        if (method, request_id) in self.s.requests:
            raise FakeConflict(request_id)
        self.s.requests[(method, request_id)] = SeenRequest(fingerprint, response)


class _Outbox:
    def __init__(self, state: State) -> None:
        self.s = state

    def _add(self, kind: str, key: str, revision: int, now: datetime) -> OutboxEntry:
        entry = OutboxEntry(len(self.s.outbox) + 1, kind, key, revision, STATUS_PENDING, 0, None, now, now, None)
        self.s.outbox.append(entry)
        return entry

    def add_subscription(self, subscription: Subscription, now: datetime) -> DeliveryRecord:
        entry = self._add(KIND_SUBSCRIPTION, subscription.subscription_id, subscription.revision, now)
        return _record(entry)

    def add_credit_currency(self, currency: CreditCurrency, now: datetime) -> None:
        self._add(KIND_CREDIT_CURRENCY, currency.key, currency.revision, now)

    def handoff_states(self, subscription_ids: Collection[str]) -> dict[str, HandoffState]:
        return {
            key: summarize(_record(e) for e in self.s.outbox if e.kind == KIND_SUBSCRIPTION and e.aggregate_key == key)
            for key in subscription_ids
        }

    def list(
        self, *, status: str | None, kind: str | None, aggregate_key: str | None, after_id: int | None, limit: int
    ) -> list[OutboxEntry]:
        return [
            e
            for e in self.s.outbox
            if (status is None or e.status == status)
            and (kind is None or e.kind == kind)
            and (aggregate_key is None or e.aggregate_key == aggregate_key)
            and (after_id is None or e.id > after_id)
        ][:limit]

    def requeue_failed(self, kind: str | None, aggregate_key: str | None, now: datetime) -> int:
        count = 0
        for i, e in enumerate(self.s.outbox):
            if e.status == STATUS_FAILED and kind in (None, e.kind) and aggregate_key in (None, e.aggregate_key):
                self.s.outbox[i] = OutboxEntry(
                    e.id, e.kind, e.aggregate_key, e.revision, STATUS_PENDING, e.attempts, e.last_error, now,
                    e.created_at, None,
                )  # fmt: skip
                count += 1
        return count


def _record(e: OutboxEntry) -> DeliveryRecord:
    return DeliveryRecord(e.revision, e.status, e.attempts, e.last_error, e.next_attempt_at, e.delivered_at)


class FakeCatalogUnitOfWork:
    def __init__(self, state: State) -> None:
        self.features = _Features(state)
        self.currencies = _Currencies(state)
        self.plans = _Plans(state)
        self.customers = _Customers(state)
        self.subscriptions = _Subscriptions(state)
        self.idempotency = _Requests(state)
        self.outbox = _Outbox(state)


class FakeCatalogTransactions:
    """`Transactions` in memory. `in_transaction` tells whether a transaction is open (what a test
    asserts about calls that must happen outside one); `writes` counts write transactions begun."""

    def __init__(self) -> None:
        self.state = State()
        self.in_transaction = False
        self.writes = 0

    def write(self, work: Callable[[FakeCatalogUnitOfWork], T]) -> T:
        self.writes += 1
        return self._run(work, commit=True)

    def read(self, work: Callable[[FakeCatalogUnitOfWork], T]) -> T:
        return self._run(work, commit=False)

    def _run(self, work: Callable[[FakeCatalogUnitOfWork], T], *, commit: bool) -> T:
        working = copy.deepcopy(self.state)
        self.in_transaction = True
        try:
            result = work(FakeCatalogUnitOfWork(working))
        finally:
            self.in_transaction = False
        if commit:
            self.state = working
        return result
