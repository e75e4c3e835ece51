"""On PostgreSQL the timer's batches skip schedules that other transactions hold (replicas share
the work), but a customer's own catch-up before a read must wait for them: skipping would answer a
balance without a grant that is due and being issued by a timer batch in another replica."""

from __future__ import annotations

import threading
import time
from datetime import timedelta
from decimal import Decimal

import pytest
from sqlalchemy import text

from credit_common.clock import ManualClock
from credit_common.db.engine import session_factories
from grant_service.service_layer.balances import get_balance
from grant_service.service_layer.context import GrantContext
from grant_service.service_layer.issuance import issue_due_batch
from tests.integration.grant.test_catch_up import NOW, _engine, _subscribe


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
    ctx = GrantContext(factories=session_factories(engine), clock=ManualClock(NOW))
    _subscribe(ctx, 1, NOW - timedelta(days=1))  # customer c0: 7 credits due, not issued yet
    balances: list[Decimal] = []
    try:
        with ctx.factories.write() as timer, timer.begin():
            # a timer batch in another replica: the schedule locked, its grant inserted, not committed
            assert issue_due_batch(timer, "", NOW, None, 500)[1] == 1
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
