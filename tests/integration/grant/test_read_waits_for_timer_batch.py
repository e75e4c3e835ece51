"""On PostgreSQL the timer's batches skip schedules that other transactions hold (replicas share
the work), but a customer's own catch-up before a read must wait for them: skipping would answer a
balance without a grant that is due and being issued by a timer batch in another replica."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from sqlalchemy import text

from credit_common.clock import ManualClock
from credit_common.db.engine import session_factories
from credit_common.periods import Cadence
from grant_service.adapters.unit_of_work import SqlGrantUnitOfWork
from grant_service.domain.schedules import ScheduledAmount
from grant_service.service_layer.balances import get_balance
from grant_service.service_layer.issuance import issue_due_batch
from grant_service.service_layer.simulated_clocks import advance_test_clock, create_test_clock
from grant_service.service_layer.subscriptions import ScheduleSpec, SubscriptionSpec, apply_subscription
from tests.integration.grant.test_catch_up import NOW, _engine, _subscribe
from tests.support.grant_context import sql_context


def _lock_waits(engine) -> int:
    """Backends of this database waiting for a lock (a new transaction each time: within one,
    PostgreSQL shows the same snapshot of pg_stat_activity)."""
    with engine.connect() as probe:
        return probe.scalar(
            text(
                "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND datname = current_database()"
            )
        )


@pytest.mark.postgres
@pytest.mark.parametrize("backend", ["postgresql"])
def test_a_balance_read_waits_for_the_timer_batch_issuing_its_grant(database_url_factory, backend):
    engine = _engine(database_url_factory("read_waits"))
    ctx = sql_context(session_factories(engine), ManualClock(NOW))
    _subscribe(ctx, 1, NOW - timedelta(days=1))  # customer c0: 7 credits due, not issued yet
    balances: list[Decimal] = []
    try:
        with ctx.transactions.factories.write() as timer, timer.begin():
            # a timer batch in another replica: the schedule locked, its grant inserted, not committed
            assert issue_due_batch(SqlGrantUnitOfWork(timer), "", NOW, None, 500)[1] == 1
            reader = threading.Thread(
                target=lambda: balances.append(get_balance(ctx, "c0", "ai-credits", None, False).available)
            )
            reader.start()
            deadline = time.monotonic() + 20
            while not _lock_waits(engine):
                assert time.monotonic() < deadline, f"the read did not wait for the batch: {balances}"
                time.sleep(0.02)
            assert balances == []  # still waiting
        reader.join(timeout=20)
        assert balances == [Decimal(7)]
    finally:
        engine.dispose()


@pytest.mark.postgres
@pytest.mark.parametrize("backend", ["postgresql"])
def test_advancing_a_test_clock_waits_for_a_catch_up_issuing_on_that_clock(database_url_factory, backend):
    """AdvanceTestClock promises that everything due is issued when it returns, so its catch-up must
    wait for a schedule another transaction (here a customer's own catch-up) is issuing, not skip it."""
    engine = _engine(database_url_factory("advance_waits"))
    ctx = sql_context(session_factories(engine), ManualClock(NOW), test_clocks_enabled=True)
    start = datetime(2026, 4, 1, tzinfo=UTC)
    clock = create_test_clock(ctx, "frozen", start, "")
    anchor = start + timedelta(days=1)
    apply_subscription(
        ctx,
        SubscriptionSpec(
            "sub_clock",
            "on-clock",
            1,
            anchor,
            None,
            (ScheduleSpec("credits", "ai-credits", Cadence.MONTHLY, (ScheduledAmount(Decimal(5), anchor),)),),
            clock.test_clock_id,
        ),
    )
    later = anchor + timedelta(hours=1)
    advanced: list[str] = []
    try:
        with ctx.transactions.factories.write() as holder, holder.begin():
            # a customer's catch-up in another request: the schedule locked, its grant inserted, not committed
            assert (
                issue_due_batch(
                    SqlGrantUnitOfWork(holder), clock.test_clock_id, later, "on-clock", 500, skip_locked=False
                )[1]
                == 1
            )
            mover = threading.Thread(
                target=lambda: advanced.append(advance_test_clock(ctx, clock.test_clock_id, later, "").test_clock_id)
            )
            mover.start()
            deadline = time.monotonic() + 20
            while not _lock_waits(engine):
                assert time.monotonic() < deadline, f"the advance did not wait for the catch-up: {advanced}"
                time.sleep(0.02)
            assert advanced == []  # still waiting
        mover.join(timeout=20)
        assert advanced == [clock.test_clock_id]
        with engine.connect() as connection:
            grants = connection.scalar(text("SELECT count(*) FROM grants WHERE subscription_id = 'sub_clock'"))
        assert grants == 1
    finally:
        engine.dispose()
