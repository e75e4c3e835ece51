"""Test clocks (Stripe-like): a frozen "now" for the customers and subscriptions
attached to it. Advancing one runs the same catch-up as real time, with the
clock's new time as "now", before returning."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import delete, or_, select
from sqlalchemy.orm import Session

from credit_common.errors import InvalidArgument, NotFound
from credit_common.idempotency import fingerprint
from credit_common.ids import new_id
from credit_common.pagination import PageRequest
from grant_service.adapters.orm import (
    ClockRow,
    CustomerRow,
    GrantRow,
    LedgerEntryRow,
    ScheduleRow,
    SubscriptionRow,
    UsageRow,
)
from grant_service.adapters.repository import clock_of, locked
from grant_service.domain.model import TestClock
from grant_service.service_layer.context import GrantContext, remember, replayed, require_test_clocks
from grant_service.service_layer.issuance import catch_up


def _get(session: Session, test_clock_id: str, *, for_update: bool = False) -> ClockRow:
    query = select(ClockRow).where(ClockRow.test_clock_id == test_clock_id)
    row = session.scalars(locked(session, query) if for_update else query).first()
    if row is None:
        raise NotFound(
            f"test clock {test_clock_id!r} not found",
            reason="TEST_CLOCK_NOT_FOUND",
            metadata={"test_clock_id": test_clock_id},
        )
    return row


def create_test_clock(ctx: GrantContext, name: str, frozen_time: datetime, request_id: str) -> TestClock:
    require_test_clocks(ctx)
    print_ = fingerprint(name, frozen_time)

    def work(session: Session) -> TestClock:
        seen = replayed(session, "CreateTestClock", request_id, print_)
        if seen is not None:
            return clock_of(_get(session, seen))
        now = ctx.clock.now()
        row = ClockRow(test_clock_id=new_id("clk"), name=name, frozen_time=frozen_time, create_time=now)
        session.add(row)
        session.flush()
        remember(session, "CreateTestClock", request_id, print_, row.test_clock_id, now)
        return clock_of(row)

    return ctx.write(work)


def get_test_clock(ctx: GrantContext, test_clock_id: str) -> TestClock:
    require_test_clocks(ctx)
    return ctx.read(lambda session: clock_of(_get(session, test_clock_id)))


def list_test_clocks(ctx: GrantContext, page: PageRequest) -> tuple[list[TestClock], str]:
    require_test_clocks(ctx)

    def work(session: Session) -> tuple[list[TestClock], str]:
        query = select(ClockRow)
        if page.after is not None:
            after_time, after_id = page.after
            query = query.where(
                or_(
                    ClockRow.create_time < after_time,
                    (ClockRow.create_time == after_time) & (ClockRow.test_clock_id < after_id),
                )
            )
        rows = list(
            session.scalars(
                query.order_by(ClockRow.create_time.desc(), ClockRow.test_clock_id.desc()).limit(page.size + 1)
            )
        )
        more = len(rows) > page.size
        rows = rows[: page.size]
        token = page.token_after([rows[-1].create_time, rows[-1].test_clock_id]) if more else ""
        return [clock_of(r) for r in rows], token

    return ctx.read(work)


def advance_test_clock(ctx: GrantContext, test_clock_id: str, frozen_time: datetime, request_id: str) -> TestClock:
    require_test_clocks(ctx)
    print_ = fingerprint(test_clock_id, frozen_time)

    def work(session: Session) -> TestClock:
        seen = replayed(session, "AdvanceTestClock", request_id, print_)
        row = _get(session, test_clock_id, for_update=True)
        if seen is not None:
            return clock_of(row)
        if frozen_time < row.frozen_time:
            raise InvalidArgument(
                "a test clock cannot move backwards",
                reason="TEST_CLOCK_BACKWARDS",
                metadata={"frozen_time": row.frozen_time.isoformat()},
                violations=[],
            )
        row.frozen_time = frozen_time
        remember(session, "AdvanceTestClock", request_id, print_, test_clock_id, ctx.clock.now())
        return clock_of(row)

    row = ctx.write(work)
    catch_up(ctx.factories, clock_key=test_clock_id, now=row.frozen_time, batch_size=ctx.batch_size)
    return row


def delete_test_clock(ctx: GrantContext, test_clock_id: str, request_id: str) -> None:
    """Deletes the clock and everything attached to it (customers, subscriptions, grants, ledger, usages)."""
    require_test_clocks(ctx)
    print_ = fingerprint(test_clock_id)

    def work(session: Session) -> None:
        if replayed(session, "DeleteTestClock", request_id, print_) is not None:
            return
        _get(session, test_clock_id, for_update=True)
        customers = select(CustomerRow.customer_key).where(CustomerRow.clock_key == test_clock_id)
        grants = select(GrantRow.grant_id).where(GrantRow.clock_key == test_clock_id)
        session.execute(delete(LedgerEntryRow).where(LedgerEntryRow.grant_id.in_(grants)))
        session.execute(delete(UsageRow).where(UsageRow.customer_key.in_(customers)))
        session.execute(delete(GrantRow).where(GrantRow.clock_key == test_clock_id))
        session.execute(delete(ScheduleRow).where(ScheduleRow.clock_key == test_clock_id))
        session.execute(delete(SubscriptionRow).where(SubscriptionRow.clock_key == test_clock_id))
        session.execute(delete(CustomerRow).where(CustomerRow.clock_key == test_clock_id))
        session.execute(delete(ClockRow).where(ClockRow.test_clock_id == test_clock_id))
        remember(session, "DeleteTestClock", request_id, print_, test_clock_id, ctx.clock.now())

    ctx.write(work)
