"""ApplySubscription, GetSubscription and ApplyCreditCurrency: the state the catalog pushes,
idempotent by revision."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from sqlalchemy import select
from sqlalchemy.orm import Session

from credit_common.errors import FailedPrecondition, NotFound
from credit_common.ids import new_id
from credit_common.periods import Cadence
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
from grant_service.adapters.repository import encode_amounts, lock_customer, locked
from grant_service.domain.schedules import ScheduledAmount
from grant_service.service_layer.context import GrantContext, require_test_clocks
from grant_service.service_layer.issuance import reconcile_issued, reset_cursor

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
class SubscriptionView:
    row: SubscriptionRow
    schedules: list[ScheduleRow]


def apply_subscription(ctx: GrantContext, spec: SubscriptionSpec) -> tuple[ApplyOutcome, int]:
    clock_key = spec.test_clock_id or REAL_TIME
    if clock_key != REAL_TIME:
        require_test_clocks(ctx)

    def work(session: Session) -> tuple[ApplyOutcome, int]:
        if clock_key != REAL_TIME and session.get(ClockRow, clock_key) is None:
            raise NotFound(f"test clock {clock_key!r} not found", reason="TEST_CLOCK_NOT_FOUND")
        customer = lock_customer(session, spec.customer_key)
        if customer is None:
            customer = CustomerRow(customer_key=spec.customer_key, clock_key=clock_key)
            session.add(customer)
            session.flush()
        elif customer.clock_key != clock_key:
            raise FailedPrecondition(
                "the subscription's test clock differs from its customer's",
                reason="TEST_CLOCK_MISMATCH",
                metadata={"customer_key": spec.customer_key, "customer_test_clock_id": customer.clock_key},
            )
        sub = session.scalars(
            locked(session, select(SubscriptionRow).where(SubscriptionRow.subscription_id == spec.subscription_id))
        ).first()
        now = ctx.now_of(session, clock_key)
        if sub is not None:
            if spec.revision == sub.revision:
                return ApplyOutcome.ALREADY_APPLIED, sub.revision
            if spec.revision < sub.revision:
                return ApplyOutcome.STALE, sub.revision
            _check_immutable(sub, spec, clock_key)
            sub.revision, sub.end_time, sub.update_time = spec.revision, spec.end_time, now
        else:
            sub = SubscriptionRow(
                subscription_id=spec.subscription_id,
                customer_key=spec.customer_key,
                revision=spec.revision,
                start_time=spec.start_time,
                end_time=spec.end_time,
                clock_key=clock_key,
                update_time=now,
            )
            session.add(sub)
            session.flush()
        _apply_schedules(session, sub, spec, now)
        return ApplyOutcome.APPLIED, spec.revision

    return ctx.write(work)


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


def _apply_schedules(session: Session, sub: SubscriptionRow, spec: SubscriptionSpec, now: datetime) -> None:
    # Locked, so that a catch-up issuing these schedules right now finishes first and its cursors are seen.
    query = (
        select(ScheduleRow).where(ScheduleRow.subscription_id == sub.subscription_id).order_by(ScheduleRow.schedule_id)
    )
    existing = {row.entitlement_key: row for row in session.scalars(locked(session, query))}
    wanted = {s.entitlement_key for s in spec.schedules}
    for position, schedule in enumerate(spec.schedules):
        row = existing.get(schedule.entitlement_key)
        if row is None:
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
            session.add(row)
            continue
        if row.cadence != schedule.cadence.value or row.currency_key != schedule.currency_key:
            raise FailedPrecondition(
                f"the cadence or currency of credit schedule {schedule.entitlement_key!r} cannot change",
                reason="IMMUTABLE_FIELD_CHANGED",
                metadata={"entitlement_key": schedule.entitlement_key},
            )
        row.amounts, row.end_time, row.position, row.removed = (
            encode_amounts(schedule.amounts),
            spec.end_time,
            position,
            False,
        )
        reset_cursor(row)
        session.flush()
        reconcile_issued(session, row, now)
    for key, row in existing.items():
        if key in wanted or row.removed:
            continue
        # A schedule dropped by a revision ends now: its current grant expires now, no later one is issued.
        row.removed = True
        row.end_time = now if row.end_time is None else min(row.end_time, now)
        reset_cursor(row)
        session.flush()
        reconcile_issued(session, row, now)
    session.flush()


def get_subscription(ctx: GrantContext, subscription_id: str) -> SubscriptionView:
    def work(session: Session) -> SubscriptionView:
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
        return SubscriptionView(sub, schedules)

    return ctx.read(work)


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

    return ctx.write(work)
