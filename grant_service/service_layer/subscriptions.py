"""ApplySubscription, GetSubscription and ApplyCreditCurrency: the state the catalog pushes,
idempotent by revision. A new revision never rewrites the past: a change dated before the
customer's "now" takes effect at "now" and is reported (ClampedChange)."""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal

from sqlalchemy import select
from sqlalchemy.orm import Session

from credit_common.errors import DomainError, FailedPrecondition, FieldViolation, InvalidArgument, NotFound
from credit_common.ids import new_id
from credit_common.periods import Cadence
from grant_service.adapters.mappers import decode_amounts, encode_amounts, stored_schedule_of, subscription_of
from grant_service.adapters.orm import (
    REAL_TIME,
    ClockRow,
    CurrencyRow,
    CustomerRow,
    RateRow,
    RateSetRow,
    ScheduleRow,
    SubscriptionRow,
)
from grant_service.adapters.sql import locked
from grant_service.adapters.unit_of_work import SqlGrantUnitOfWork
from grant_service.domain.model import Subscription
from grant_service.domain.schedules import ScheduledAmount, clamp_amounts, clamp_end
from grant_service.service_layer.context import GrantContext, require_test_clocks
from grant_service.service_layer.issuance import catch_up_in_transaction, reconcile_issued

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


def check_revision_step(kind: str, key: str, revision: int, stored: int, max_step: int) -> None:
    """Refuse a revision more than `max_step` ahead of the stored one (0: none stored yet). The catalog
    numbers revisions 1, 2, 3 ... and a gap only comes from revisions it parked or superseded, so a
    revision far ahead is no revision of the catalog's: applied, it would make every later real one
    STALE and own the subscription (or currency) for good."""
    if revision - stored <= max_step:
        return
    raise InvalidArgument(
        f"revision {revision} of {kind} {key!r} is more than {max_step} ahead of the revision held ({stored})",
        reason="REVISION_TOO_FAR_AHEAD",
        metadata={"current_revision": str(stored), "max_revision_step": str(max_step)},
        violations=[FieldViolation("revision", f"must be at most {stored + max_step}", "REVISION_TOO_FAR_AHEAD")],
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
    that two batches cannot deadlock) with one query each, the new rows are inserted by the
    flush at commit, many per statement. Items are applied in customer_key order, each
    customer's items in the order given (so revisions of one subscription follow each other).
    A rejected item (a DomainError) rolls the transaction back, and the batch runs again
    without it: a rejected item leaves no trace and the others see exactly what they would
    have seen had it never been sent. Rejections are rare (the catalog validates what it
    sends), so the batch normally runs once."""
    rejected: dict[int, DomainError] = {}
    for i, spec in enumerate(specs):
        if spec.test_clock_id:
            try:
                require_test_clocks(ctx)
            except DomainError as error:
                rejected[i] = error

    def work(session: Session) -> dict[int, ApplyResult]:
        order = sorted((i for i in range(len(specs)) if i not in rejected), key=lambda i: specs[i].customer_key)
        if not order:
            return {}
        batch = _Batch.load(ctx, session, [specs[i] for i in order])
        results: dict[int, ApplyResult] = {}
        for i in order:
            try:
                results[i] = batch.apply(specs[i])
            except DomainError as error:
                raise _Rejected(i, error) from error
        batch.flush_new()
        return results

    while True:
        try:
            applied = ctx.uows.write(lambda uow: work(uow.session))
            break
        except _Rejected as rejection:
            rejected[rejection.index] = rejection.error
    return [ApplyResult(None, 0, rejected[i]) if i in rejected else applied[i] for i in range(len(specs))]


@dataclass
class _Batch:
    """The rows a batch of applies works on, read once and kept up to date as items are applied."""

    session: Session
    max_revision_step: int
    real_now: datetime
    batch_size: int
    clocks: dict[str, datetime]  # frozen time of each test clock named in the batch that exists
    customers: dict[str, CustomerRow]
    subscriptions: dict[str, SubscriptionRow]
    # New rows, kept out of the session until `flush_new` adds them parent first (the ORM orders
    # inserts by relationships, and these rows have none), so that each table gets one INSERT.
    new_rows: tuple[list[CustomerRow], list[SubscriptionRow], list[ScheduleRow]] = field(
        default_factory=lambda: ([], [], [])
    )

    @classmethod
    def load(cls, ctx: GrantContext, session: Session, specs: Sequence[SubscriptionSpec]) -> _Batch:
        customer_keys = sorted({s.customer_key for s in specs})
        subscription_ids = sorted({s.subscription_id for s in specs})
        clock_keys = sorted({s.test_clock_id for s in specs if s.test_clock_id})
        clocks: dict[str, datetime] = {}
        if clock_keys:
            rows = session.execute(
                select(ClockRow.test_clock_id, ClockRow.frozen_time).where(ClockRow.test_clock_id.in_(clock_keys))
            )
            clocks = {key: frozen for key, frozen in rows}
        customers = session.scalars(
            locked(
                session,
                select(CustomerRow)
                .where(CustomerRow.customer_key.in_(customer_keys))
                .order_by(CustomerRow.customer_key),
            )
        )
        subscriptions = session.scalars(
            locked(
                session,
                select(SubscriptionRow)
                .where(SubscriptionRow.subscription_id.in_(subscription_ids))
                .order_by(SubscriptionRow.subscription_id),
            )
        )
        return cls(
            session,
            ctx.max_revision_step,
            ctx.clock.now(),
            ctx.batch_size,
            clocks,
            {c.customer_key: c for c in customers},
            {s.subscription_id: s for s in subscriptions},
        )

    def apply(self, spec: SubscriptionSpec) -> ApplyResult:
        session = self.session
        clock_key = spec.test_clock_id or REAL_TIME
        if clock_key != REAL_TIME and clock_key not in self.clocks:
            raise NotFound(f"test clock {clock_key!r} not found", reason="TEST_CLOCK_NOT_FOUND")
        held = self.subscriptions.get(spec.subscription_id)
        check_revision_step(
            "subscription", spec.subscription_id, spec.revision, held.revision if held else 0, self.max_revision_step
        )
        customer = self.customers.get(spec.customer_key)
        if customer is None:
            customer = CustomerRow(customer_key=spec.customer_key, clock_key=clock_key)
            self.new_rows[0].append(customer)
            self.customers[spec.customer_key] = customer
        elif customer.clock_key != clock_key:
            raise FailedPrecondition(
                "the subscription's test clock differs from its customer's",
                reason="TEST_CLOCK_MISMATCH",
                metadata={"customer_key": spec.customer_key, "customer_test_clock_id": customer.clock_key},
            )
        now = self.real_now if clock_key == REAL_TIME else self.clocks[clock_key]
        sub = self.subscriptions.get(spec.subscription_id)
        if sub is None:
            sub = SubscriptionRow(
                subscription_id=spec.subscription_id,
                customer_key=spec.customer_key,
                revision=spec.revision,
                start_time=spec.start_time,
                end_time=spec.end_time,
                clock_key=clock_key,
                update_time=now,
            )
            self.new_rows[1].append(sub)
            self.new_rows[2].extend(_new_schedule(sub, spec, i, schedule) for i, schedule in enumerate(spec.schedules))
            self.subscriptions[spec.subscription_id] = sub
            return ApplyResult(ApplyOutcome.APPLIED, spec.revision)
        if spec.revision == sub.revision:
            return ApplyResult(ApplyOutcome.ALREADY_APPLIED, sub.revision)
        if spec.revision < sub.revision:
            return ApplyResult(ApplyOutcome.STALE, sub.revision)
        _check_immutable(sub, spec, clock_key)
        self.flush_new()  # the schedules are read back from the database
        # The change applies to the customer's state at `now`: what is due is issued first.
        catch_up_in_transaction(SqlGrantUnitOfWork(session), clock_key, now, spec.customer_key, self.batch_size)
        end_time, late = clamp_end(sub.end_time, spec.end_time, now)
        clamped = [ClampedChange("", spec.end_time, end_time or now)] if late else []
        sub.revision, sub.end_time, sub.update_time = spec.revision, end_time, now
        clamped.extend(_apply_schedules(session, sub, spec, now))
        return ApplyResult(ApplyOutcome.APPLIED, spec.revision, clamped=tuple(clamped))

    def flush_new(self) -> None:
        """Insert the new rows, each table after the one it refers to."""
        for rows in self.new_rows:
            if rows:
                self.session.add_all(rows)
                self.session.flush()
                rows.clear()


def _check_immutable(sub: SubscriptionRow, spec: SubscriptionSpec, clock_key: str) -> None:
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
    session: Session, sub: SubscriptionRow, spec: SubscriptionSpec, now: datetime
) -> list[ClampedChange]:
    """Apply the schedules of `spec` (its end time: `sub.end_time`, already clamped) at `now`; the
    amount changes clamped to `now`."""
    # Locked, so that a catch-up issuing these schedules right now finishes first and its cursors are seen.
    # Read afresh: the catch-up before it moved cursors with statements the session does not track.
    query = (
        select(ScheduleRow)
        .where(ScheduleRow.subscription_id == sub.subscription_id)
        .order_by(ScheduleRow.schedule_id)
        .execution_options(populate_existing=True)
    )
    clamped: list[ClampedChange] = []
    existing = {row.entitlement_key: row for row in session.scalars(locked(session, query))}
    wanted = {s.entitlement_key for s in spec.schedules}
    for position, schedule in enumerate(spec.schedules):
        row = existing.get(schedule.entitlement_key)
        if row is None:
            session.add(_new_schedule(sub, spec, position, schedule))
            continue
        if row.cadence != schedule.cadence.value or row.currency_key != schedule.currency_key:
            raise FailedPrecondition(
                f"the cadence or currency of credit schedule {schedule.entitlement_key!r} cannot change",
                reason="IMMUTABLE_FIELD_CHANGED",
                metadata={"entitlement_key": schedule.entitlement_key},
            )
        amounts = schedule.amounts
        if not row.removed:
            amounts, late = clamp_amounts(decode_amounts(row.amounts), schedule.amounts, now)
            if late is not None:
                clamped.append(ClampedChange(schedule.entitlement_key, late, now))
        row.amounts, row.end_time, row.position, row.removed = (
            encode_amounts(amounts),
            sub.end_time,
            position,
            False,
        )
        reset_cursor(row)
        session.flush()
        reconcile_issued(SqlGrantUnitOfWork(session), stored_schedule_of(row), now)
    for key, row in existing.items():
        if key in wanted or row.removed:
            continue
        # A schedule dropped by a revision ends now: its current grant expires now, no later one is issued.
        row.removed = True
        row.end_time = now if row.end_time is None else min(row.end_time, now)
        reset_cursor(row)
        session.flush()
        reconcile_issued(SqlGrantUnitOfWork(session), stored_schedule_of(row), now)
    session.flush()
    return clamped


def _new_schedule(sub: SubscriptionRow, spec: SubscriptionSpec, position: int, schedule: ScheduleSpec) -> ScheduleRow:
    row = ScheduleRow(
        schedule_id=new_id("sch"),
        subscription_id=sub.subscription_id,
        customer_key=sub.customer_key,
        clock_key=sub.clock_key,
        entitlement_key=schedule.entitlement_key,
        currency_key=schedule.currency_key,
        cadence=schedule.cadence.value,
        anchor_time=sub.start_time,
        end_time=spec.end_time,
        amounts=encode_amounts(schedule.amounts),
        position=position,
        removed=False,
        next_period_index=0,
    )
    reset_cursor(row)
    return row


def get_subscription(ctx: GrantContext, subscription_id: str) -> Subscription:
    def work(session: Session) -> Subscription:
        sub = session.get(SubscriptionRow, subscription_id)
        if sub is None:
            raise NotFound(
                f"subscription {subscription_id!r} not found",
                reason="SUBSCRIPTION_NOT_FOUND",
                metadata={"subscription_id": subscription_id},
            )
        schedules = list(
            session.scalars(
                select(ScheduleRow)
                .where(ScheduleRow.subscription_id == subscription_id, ScheduleRow.removed.is_(False))
                .order_by(ScheduleRow.position)
            )
        )
        return subscription_of(sub, schedules)

    return ctx.uows.read(lambda uow: work(uow.session))


def apply_credit_currency(
    ctx: GrantContext,
    currency_key: str,
    revision: int,
    rates: dict[str, Decimal],
    effective_time: datetime | None,
) -> tuple[ApplyOutcome, int]:
    def work(session: Session) -> tuple[ApplyOutcome, int]:
        row = session.scalars(locked(session, select(CurrencyRow).where(CurrencyRow.currency_key == currency_key)))
        currency = row.first()
        check_revision_step(
            "credit currency", currency_key, revision, currency.revision if currency else 0, ctx.max_revision_step
        )
        if currency is not None:
            if revision == currency.revision:
                return ApplyOutcome.ALREADY_APPLIED, currency.revision
            if revision < currency.revision:
                return ApplyOutcome.STALE, currency.revision
            currency.revision = revision
            start = effective_time or ctx.clock.now()
        else:
            session.add(CurrencyRow(currency_key=currency_key, revision=revision))
            start = effective_time or BEGINNING_OF_TIME
        rate_set = RateSetRow(currency_key=currency_key, revision=revision, effective_time=start)
        session.add(rate_set)
        session.flush()
        session.add_all(
            RateRow(rate_set_id=rate_set.rate_set_id, feature_key=feature, credits_per_unit=rate)
            for feature, rate in rates.items()
        )
        return ApplyOutcome.APPLIED, revision

    return ctx.uows.write(lambda uow: work(uow.session))


def reset_cursor(row: ScheduleRow) -> None:
    """The cursor's next start after the end time changed (NULL once no period starts before the end)."""
    row.next_period_start = stored_schedule_of(row).next_period_start
