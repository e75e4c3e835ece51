"""Test clocks (Stripe-like): a frozen "now" for the customers and subscriptions
attached to it. Advancing one runs the same catch-up as real time, with the
clock's new time as "now", before returning."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime

from credit_common.errors import InvalidArgument, test_clock_not_found
from credit_common.idempotency import fingerprint, remember, replay
from credit_common.ids import new_id
from credit_common.pagination import PageRequest
from grant_service.domain.model import SimulatedClock
from grant_service.service_layer.context import GrantContext, require_test_clocks
from grant_service.service_layer.issuance import catch_up
from grant_service.service_layer.unit_of_work import GrantUnitOfWork


def _get(uow: GrantUnitOfWork, test_clock_id: str, *, for_update: bool = False) -> SimulatedClock:
    clock = uow.clocks.get(test_clock_id, for_update=for_update)
    if clock is None:
        raise test_clock_not_found(test_clock_id)
    return clock


def create_test_clock(ctx: GrantContext, name: str, frozen_time: datetime, request_id: str) -> SimulatedClock:
    require_test_clocks(ctx)
    print_ = fingerprint(name, frozen_time)

    def work(uow: GrantUnitOfWork) -> SimulatedClock:
        seen = replay(uow.request_ids, "CreateTestClock", request_id, print_)
        if seen is not None:
            return _get(uow, seen)
        now = ctx.clock.now()
        clock = SimulatedClock(test_clock_id=new_id("clk"), name=name, frozen_time=frozen_time, create_time=now)
        uow.clocks.add(clock)
        remember(uow.request_ids, "CreateTestClock", request_id, print_, clock.test_clock_id, now)
        return clock

    return ctx.transactions.write(work)


def get_test_clock(ctx: GrantContext, test_clock_id: str) -> SimulatedClock:
    require_test_clocks(ctx)
    return ctx.transactions.read(lambda uow: _get(uow, test_clock_id))


def list_test_clocks(ctx: GrantContext, page: PageRequest) -> tuple[list[SimulatedClock], str]:
    require_test_clocks(ctx)
    clocks = ctx.transactions.read(lambda uow: uow.clocks.list(page.after, page.size + 1))
    return page.cut(clocks, lambda c: (c.create_time, c.test_clock_id))


def advance_test_clock(ctx: GrantContext, test_clock_id: str, frozen_time: datetime, request_id: str) -> SimulatedClock:
    require_test_clocks(ctx)
    print_ = fingerprint(test_clock_id, frozen_time)

    def work(uow: GrantUnitOfWork) -> SimulatedClock:
        seen = replay(uow.request_ids, "AdvanceTestClock", request_id, print_)
        clock = _get(uow, test_clock_id, for_update=True)
        if seen is not None:
            return clock
        if frozen_time < clock.frozen_time:
            raise InvalidArgument(
                "a test clock cannot move backwards",
                reason="TEST_CLOCK_BACKWARDS",
                metadata={"frozen_time": clock.frozen_time.isoformat()},
                violations=[],
            )
        uow.clocks.set_frozen_time(test_clock_id, frozen_time)
        remember(uow.request_ids, "AdvanceTestClock", request_id, print_, test_clock_id, ctx.clock.now())
        return replace(clock, frozen_time=frozen_time)

    clock = ctx.transactions.write(work)
    catch_up(ctx.transactions, clock_key=test_clock_id, now=clock.frozen_time, batch_size=ctx.batch_size)
    return clock


def delete_test_clock(ctx: GrantContext, test_clock_id: str, request_id: str) -> None:
    """Deletes the clock and everything attached to it (customers, subscriptions, grants, ledger, usages)."""
    require_test_clocks(ctx)
    print_ = fingerprint(test_clock_id)

    def work(uow: GrantUnitOfWork) -> None:
        if replay(uow.request_ids, "DeleteTestClock", request_id, print_) is not None:
            return
        _get(uow, test_clock_id, for_update=True)
        uow.clocks.delete(test_clock_id)
        remember(uow.request_ids, "DeleteTestClock", request_id, print_, test_clock_id, ctx.clock.now())

    ctx.transactions.write(work)
