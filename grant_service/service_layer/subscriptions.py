"""ApplySubscription, GetSubscription and ApplyCreditCurrency: the state the catalog pushes,
idempotent by revision. A new revision never rewrites the past: a change dated before the
customer's "now" takes effect at "now" and is reported (ClampedChange)."""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from decimal import Decimal

from credit_common.errors import DomainError, FailedPrecondition, Violations, not_found, test_clock_not_found
from credit_common.ids import new_id
from credit_common.periods import Cadence
from grant_service.domain.clocks import ClockKey, api_test_clock_id, clock_key_of, on_real_time
from grant_service.domain.events import EventType, LateChange, NewEvent, subscription_changed
from grant_service.domain.model import (
    CreditSchedule,
    Customer,
    StoredSchedule,
    StoredSubscription,
    Subscription,
)
from grant_service.domain.revisions import NO_WINDOW, RevisionWindow, advance
from grant_service.domain.schedules import Schedule, ScheduledAmount, clamp_amounts, clamp_end
from grant_service.service_layer import alerts
from grant_service.service_layer.context import GrantContext, require_test_clocks
from grant_service.service_layer.issuance import catch_up_in_transaction, ended_events, reconcile_issued
from grant_service.service_layer.unit_of_work import GrantUnitOfWork

# Rates of a currency's first revision are in force since this instant unless told otherwise,
# so that usage at any (test clock) time finds them.
BEGINNING_OF_TIME = datetime.fromisoformat("1970-01-01T00:00:00+00:00")


class ApplyOutcome(enum.Enum):
    APPLIED = 1
    ALREADY_APPLIED = 2
    STALE = 3


@dataclass(frozen=True)
class ScheduleSpec:
    entitlement_key: str
    currency_key: str
    cadence: Cadence
    amounts: tuple[ScheduledAmount, ...]  # validated: ordered, the first at the start


@dataclass(frozen=True)
class SubscriptionSpec:
    subscription_id: str
    customer_key: str
    revision: int
    start_time: datetime
    end_time: datetime | None
    schedules: tuple[ScheduleSpec, ...]
    test_clock_id: str


@dataclass(frozen=True)
class ClampedChange:
    """A change of a new revision dated before "now", applied at `applied_time` instead of
    `requested_time` (None: an end time removed). `entitlement_key` is empty for the end time."""

    entitlement_key: str
    requested_time: datetime | None
    applied_time: datetime


@dataclass(frozen=True)
class ApplyResult:
    """The result of one item of `apply_subscriptions`: an outcome, the revision in force and the
    changes clamped to "now", or the domain error that rejected it (then nothing of it was applied)."""

    outcome: ApplyOutcome | None
    current_revision: int
    error: DomainError | None = None
    clamped: tuple[ClampedChange, ...] = ()


class _Rejected(Exception):
    """An item of a batch failed: the batch's transaction is rolled back and run again without it."""

    def __init__(self, index: int, error: DomainError) -> None:
        super().__init__(str(error))
        self.index, self.error = index, error


class _Refused(Exception):
    """An item of a batch failed its checks, before it changed anything: the batch goes on without it."""

    def __init__(self, error: DomainError) -> None:
        super().__init__(str(error))
        self.error = error


def check_amounts(spec: SubscriptionSpec, ceiling: Decimal | None) -> None:
    """Refuse amounts above `--max-applied-amount` (None: no ceiling): what a leaked sync key can mint
    through ApplySubscription is bounded by it (docs/security.md, blast radius of each role)."""
    if ceiling is None:
        return
    violations = Violations()
    for i, schedule in enumerate(spec.schedules):
        for j, amount in enumerate(schedule.amounts):
            if amount.amount > ceiling:
                violations.add(
                    f"credit_schedules[{i}].amounts[{j}].amount", f"must be at most {ceiling}", "AMOUNT_ABOVE_CEILING"
                )
    violations.raise_if_any(
        f"amounts above the ceiling of {ceiling} set by --max-applied-amount",
        reason="AMOUNT_ABOVE_CEILING",
        metadata={"max_applied_amount": str(ceiling)},
    )


def apply_subscription(ctx: GrantContext, spec: SubscriptionSpec) -> ApplyResult:
    """Apply one revision; a rejection is raised as its domain error."""
    result = apply_subscriptions(ctx, [spec])[0]
    if result.error is not None:
        raise result.error
    return result


def apply_subscriptions(ctx: GrantContext, specs: Sequence[SubscriptionSpec]) -> list[ApplyResult]:
    """Apply several revisions in one write transaction; one result per spec, in order.

    The customers and subscriptions of the whole batch are read (and locked, in key order, so
    that two batches cannot deadlock) with one query each; the new customers, subscriptions and
    schedules are inserted with one statement per table. Items are applied in customer_key order,
    each customer's items in the order given (so revisions of one subscription follow each other).
    An item refused by its checks (a revision too far ahead, a test clock that does not exist or
    differs from its customer's, an amount above the ceiling, a changed immutable field), which
    come before it changes anything, is skipped and the batch goes on. An item rejected later (a
    DomainError once it changed something) rolls the transaction back, and the batch runs again
    without it. Either way a rejected item leaves no trace and the others see exactly what they
    would have seen had it never been sent; a batch of refused items costs one run, not one run
    per refusal."""
    rejected: dict[int, DomainError] = {}
    for i, spec in enumerate(specs):
        if spec.test_clock_id:
            try:
                require_test_clocks(ctx)
            except DomainError as error:
                rejected[i] = error

    def work(uow: GrantUnitOfWork) -> dict[int, ApplyResult]:
        order = sorted((i for i in range(len(specs)) if i not in rejected), key=lambda i: specs[i].customer_key)
        if not order:
            return {}
        batch = _Batch.load(ctx, uow, [specs[i] for i in order])
        results: dict[int, ApplyResult] = {}
        for i in order:
            try:
                results[i] = batch.apply(specs[i])
            except _Refused as refusal:
                results[i] = ApplyResult(None, 0, refusal.error)
            except DomainError as error:
                raise _Rejected(i, error) from error
        batch.flush()
        return results

    while True:
        try:
            applied = ctx.transactions.write(work)
            break
        except _Rejected as rejection:
            rejected[rejection.index] = rejection.error
    return [ApplyResult(None, 0, rejected[i]) if i in rejected else applied[i] for i in range(len(specs))]


@dataclass
class _Batch:
    """What a batch of applies works on, read once and kept up to date as items are applied."""

    uow: GrantUnitOfWork
    ctx: GrantContext
    real_now: datetime
    batch_size: int
    clocks: dict[str, datetime]  # frozen time of each test clock named in the batch that exists
    customers: dict[str, Customer]
    subscriptions: dict[str, StoredSubscription]
    # What the batch adds, written by `flush_new` (each table after the one it refers to, one
    # statement per table), and the subscriptions it changed, written by `flush`.
    new_customers: list[Customer] = field(default_factory=list)
    new_subscriptions: list[StoredSubscription] = field(default_factory=list)
    new_schedules: list[StoredSchedule] = field(default_factory=list)
    changed: dict[str, StoredSubscription] = field(default_factory=dict)
    # Its events (SUBSCRIPTION_CHANGED of each revision applied, SUBSCRIPTION_ENDED of each that ends
    # at or before now), written by `flush`.
    events: list[NewEvent] = field(default_factory=list)
    ended: list[StoredSubscription] = field(default_factory=list)
    alerts_version: int | None = None  # of the balance alert levels, read once per batch

    @classmethod
    def load(cls, ctx: GrantContext, uow: GrantUnitOfWork, specs: Sequence[SubscriptionSpec]) -> _Batch:
        clocks = uow.clocks.frozen_times(sorted({s.test_clock_id for s in specs if s.test_clock_id}))
        customers = uow.customers.lock_many(sorted({s.customer_key for s in specs}))
        subscriptions = uow.subscriptions.lock_many(sorted({s.subscription_id for s in specs}))
        return cls(
            uow,
            ctx,
            ctx.clock.now(),
            ctx.batch_size,
            clocks,
            {c.customer_key: c for c in customers},
            {s.subscription_id: s for s in subscriptions},
        )

    def apply(self, spec: SubscriptionSpec) -> ApplyResult:
        try:
            clock_key, sub, window = self._check(spec)
        except DomainError as error:
            raise _Refused(error) from error
        if spec.customer_key not in self.customers:
            customer = Customer(spec.customer_key, clock_key)
            self.new_customers.append(customer)
            self.customers[spec.customer_key] = customer
        now = self.real_now if on_real_time(clock_key) else self.clocks[clock_key]
        if sub is None:
            sub = StoredSubscription(
                subscription_id=spec.subscription_id,
                customer_key=spec.customer_key,
                revision=spec.revision,
                start_time=spec.start_time,
                end_time=spec.end_time,
                clock_key=clock_key,
                update_time=now,
                revision_window=window,
            )
            self.new_subscriptions.append(sub)
            self.new_schedules.extend(
                _new_schedule(sub, spec, i, schedule) for i, schedule in enumerate(spec.schedules)
            )
            self.subscriptions[spec.subscription_id] = sub
            self._changed(sub, 0, now, (), ())
            return ApplyResult(ApplyOutcome.APPLIED, spec.revision)
        if spec.revision == sub.revision:
            return ApplyResult(ApplyOutcome.ALREADY_APPLIED, sub.revision)
        if spec.revision < sub.revision:
            return ApplyResult(ApplyOutcome.STALE, sub.revision)
        self.flush_new()  # the schedules are read back from the database
        # The change applies to the customer's state at `now`: what is due is issued first.
        catch_up_in_transaction(self.uow, clock_key, now, spec.customer_key, self.batch_size)
        end_time, late = clamp_end(sub.end_time, spec.end_time, now)
        clamped = [ClampedChange("", spec.end_time, end_time or now)] if late else []
        sub = replace(sub, revision=spec.revision, end_time=end_time, update_time=now, revision_window=window)
        previous = self.subscriptions[spec.subscription_id]
        self.subscriptions[spec.subscription_id] = self.changed[spec.subscription_id] = sub
        withdrawn: list[str] = []
        clamped.extend(_apply_schedules(self.uow, sub, spec, now, self.new_schedules, withdrawn))
        self._changed(sub, previous.revision, now, clamped, withdrawn)
        if self.alerts_version is None:
            self.alerts_version = self.uow.alerts.version()
        alerts.evaluate(self.uow, clock_key, now, [spec.customer_key], version=self.alerts_version)
        return ApplyResult(ApplyOutcome.APPLIED, spec.revision, clamped=tuple(clamped))

    def _check(self, spec: SubscriptionSpec) -> tuple[ClockKey, StoredSubscription | None, RevisionWindow]:
        """The item's checks, which change nothing: its clock, its subscription as held, and the
        revision window it would leave; raises the DomainError that refuses it."""
        clock_key = clock_key_of(spec.test_clock_id)
        if not on_real_time(clock_key) and clock_key not in self.clocks:
            raise test_clock_not_found(clock_key)
        sub = self.subscriptions.get(spec.subscription_id)
        window = advance(
            "subscription",
            spec.subscription_id,
            sub.revision if sub else 0,
            spec.revision,
            sub.revision_window if sub else NO_WINDOW,
            self.real_now,
            self.ctx.max_revision_step,
            self.ctx.max_revision_step_window,
        )
        if spec.revision > (sub.revision if sub else 0):
            check_amounts(spec, self.ctx.max_applied_amount)
        customer = self.customers.get(spec.customer_key)
        if customer is not None and customer.clock_key != clock_key:
            raise FailedPrecondition(
                "the subscription's test clock differs from its customer's",
                reason="TEST_CLOCK_MISMATCH",
                metadata={
                    "customer_key": spec.customer_key,
                    "customer_test_clock_id": api_test_clock_id(customer.clock_key),
                },
            )
        if sub is not None and spec.revision > sub.revision:
            _check_immutable(sub, spec, clock_key)
        return clock_key, sub, window

    def _changed(
        self,
        sub: StoredSubscription,
        previous_revision: int,
        now: datetime,
        clamped: Sequence[ClampedChange],
        withdrawn: Sequence[str],
    ) -> None:
        late = [LateChange(c.entitlement_key, c.requested_time, c.applied_time) for c in clamped]
        self.events.append(
            subscription_changed(
                EventType.SUBSCRIPTION_CHANGED,
                sub.subscription_id,
                sub.customer_key,
                sub.clock_key,
                now,
                sub.revision,
                previous_revision,
                sub.end_time,
                late,
                withdrawn,
            )
        )
        if sub.end_time is not None and sub.end_time <= now:
            self.ended = [s for s in self.ended if s.subscription_id != sub.subscription_id] + [sub]

    def flush_new(self) -> None:
        """Insert what the batch adds, each table after the one it refers to."""
        self.uow.customers.add_all(self.new_customers)
        self.uow.subscriptions.add_all(self.new_subscriptions)
        self.uow.schedules.add_all(self.new_schedules)
        self.new_customers, self.new_subscriptions, self.new_schedules = [], [], []

    def flush(self) -> None:
        """Write everything the batch did."""
        self.flush_new()
        self.uow.subscriptions.save_all(list(self.changed.values()))
        self.changed = {}
        # An end already reported (a later revision of an ended subscription) is skipped by its dedupe key.
        self.uow.events.add([*self.events, *ended_events(self.ended)])
        self.uow.subscriptions.mark_end_reported([s.subscription_id for s in self.ended])
        self.events, self.ended = [], []


def _check_immutable(sub: StoredSubscription, spec: SubscriptionSpec, clock_key: ClockKey) -> None:
    changed = []
    if sub.customer_key != spec.customer_key:
        changed.append("customer_key")
    if sub.start_time != spec.start_time:
        changed.append("start_time")
    if sub.clock_key != clock_key:
        changed.append("test_clock_id")
    if changed:
        raise FailedPrecondition(
            f"a subscription's {', '.join(changed)} cannot change between revisions",
            reason="IMMUTABLE_FIELD_CHANGED",
            metadata={"fields": ",".join(changed)},
        )


def _apply_schedules(
    uow: GrantUnitOfWork,
    sub: StoredSubscription,
    spec: SubscriptionSpec,
    now: datetime,
    new_schedules: list[StoredSchedule],
    withdrawn: list[str],
) -> list[ClampedChange]:
    """Apply the schedules of `spec` (its end time: `sub.end_time`, already clamped) at `now`; the
    amount changes clamped to `now`. The schedules it adds are appended to `new_schedules`, the
    grants it withdraws to `withdrawn`."""
    # Locked, so that a catch-up issuing these schedules right now finishes first and its cursors are seen.
    clamped: list[ClampedChange] = []
    existing = {s.entitlement_key: s for s in uow.schedules.of_subscription(sub.subscription_id, for_update=True)}
    wanted = {s.entitlement_key for s in spec.schedules}
    for position, schedule in enumerate(spec.schedules):
        stored = existing.get(schedule.entitlement_key)
        if stored is None:
            new_schedules.append(_new_schedule(sub, spec, position, schedule))
            continue
        if stored.schedule.cadence != schedule.cadence or stored.currency_key != schedule.currency_key:
            raise FailedPrecondition(
                f"the cadence or currency of credit schedule {schedule.entitlement_key!r} cannot change",
                reason="IMMUTABLE_FIELD_CHANGED",
                metadata={"entitlement_key": schedule.entitlement_key},
            )
        amounts = schedule.amounts
        if not stored.removed:
            amounts, late = clamp_amounts(stored.schedule.amounts, schedule.amounts, now)
            if late is not None:
                clamped.append(ClampedChange(schedule.entitlement_key, late, now))
        terms = replace(stored.schedule, amounts=amounts, end_time=sub.end_time)
        withdrawn += _save_and_reconcile(uow, replace(stored, schedule=terms, position=position, removed=False), now)
    for key, stored in existing.items():
        if key in wanted or stored.removed:
            continue
        # A schedule dropped by a revision ends now: its current grant expires now, no later one is issued.
        end_time = now if stored.schedule.end_time is None else min(stored.schedule.end_time, now)
        terms = replace(stored.schedule, end_time=end_time)
        withdrawn += _save_and_reconcile(uow, replace(stored, schedule=terms, removed=True), now)
    return clamped


def _save_and_reconcile(uow: GrantUnitOfWork, stored: StoredSchedule, now: datetime) -> list[str]:
    """Store the schedule's new terms and its cursor's start (`next_period_start`), then bring what
    it has issued in line with them; the grants withdrawn."""
    uow.schedules.save(stored)
    return reconcile_issued(uow, stored, now)


def _new_schedule(
    sub: StoredSubscription, spec: SubscriptionSpec, position: int, schedule: ScheduleSpec
) -> StoredSchedule:
    return StoredSchedule(
        schedule_id=new_id("sch"),
        subscription_id=sub.subscription_id,
        customer_key=sub.customer_key,
        clock_key=sub.clock_key,
        entitlement_key=schedule.entitlement_key,
        currency_key=schedule.currency_key,
        schedule=Schedule(sub.start_time, schedule.cadence, schedule.amounts, spec.end_time),
        next_period_index=0,
        position=position,
    )


def get_subscription(ctx: GrantContext, subscription_id: str) -> Subscription:
    def work(uow: GrantUnitOfWork) -> Subscription:
        sub = uow.subscriptions.get(subscription_id)
        if sub is None:
            raise not_found("subscription", subscription_id, "SUBSCRIPTION_NOT_FOUND", key_name="subscription_id")
        schedules = sorted(
            (s for s in uow.schedules.of_subscription(subscription_id) if not s.removed), key=lambda s: s.position
        )
        return sub.with_schedules(
            tuple(
                CreditSchedule(s.entitlement_key, s.currency_key, s.schedule.cadence, s.schedule.amounts)
                for s in schedules
            )
        )

    return ctx.transactions.read(work)


def apply_credit_currency(
    ctx: GrantContext,
    currency_key: str,
    revision: int,
    rates: dict[str, Decimal],
    effective_time: datetime | None,
) -> tuple[ApplyOutcome, int]:
    def work(uow: GrantUnitOfWork) -> tuple[ApplyOutcome, int]:
        stored = uow.currencies.revision(currency_key, for_update=True)
        held, window = stored if stored is not None else (0, NO_WINDOW)
        window = advance(
            "credit currency",
            currency_key,
            held,
            revision,
            window,
            ctx.clock.now(),
            ctx.max_revision_step,
            ctx.max_revision_step_window,
        )
        if stored is not None:
            if revision == held:
                return ApplyOutcome.ALREADY_APPLIED, held
            if revision < held:
                return ApplyOutcome.STALE, held
            uow.currencies.set_revision(currency_key, revision, window)
            start = effective_time or ctx.clock.now()
        else:
            uow.currencies.add(currency_key, revision, window)
            start = effective_time or BEGINNING_OF_TIME
        uow.currencies.add_rate_set(currency_key, revision, start, rates)
        return ApplyOutcome.APPLIED, revision

    return ctx.transactions.write(work)
