"""The catch-up against a real database: idempotent, racing threads, unique constraints as the last
line of defence, the timer, and a migration that matches the models."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from decimal import Decimal

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import func, select, update

from credit_common.clock import ManualClock
from credit_common.db.engine import DatabaseSettings, create_db_engine, session_factories
from credit_common.db.migrations import upgrade
from credit_common.periods import Cadence
from credit_common.testing.servers import serving
from grant_service.adapters.orm import Base, GrantRow, LedgerEntryRow, ScheduleRow
from grant_service.domain.schedules import ScheduledAmount
from grant_service.entrypoints import app
from grant_service.service_layer.context import GrantContext
from grant_service.service_layer.issuance import catch_up
from grant_service.service_layer.subscriptions import ScheduleSpec, SubscriptionSpec, apply_subscription
from grant_service.service_layer.test_clocks import create_test_clock

NOW = datetime(2026, 6, 1, 12, tzinfo=UTC)


def _engine(url: str):
    engine = create_db_engine(DatabaseSettings(url=url))
    upgrade("grant_service.adapters:migrations", engine)
    return engine


def _subscribe(ctx: GrantContext, n: int, anchor: datetime) -> None:
    for i in range(n):
        apply_subscription(
            ctx,
            SubscriptionSpec(
                f"sub_{i}",
                f"c{i}",
                1,
                anchor,
                None,
                (ScheduleSpec("credits", "ai-credits", Cadence.MONTHLY, (ScheduledAmount(Decimal(7), anchor),)),),
                "",
            ),
        )


def _counts(engine) -> tuple[int, int, int]:
    with engine.connect() as c:
        grants = c.scalar(select(func.count()).select_from(GrantRow))
        opened = c.scalar(select(func.count()).select_from(LedgerEntryRow).where(LedgerEntryRow.type == "GRANT"))
        closed = c.scalar(select(func.count()).select_from(LedgerEntryRow).where(LedgerEntryRow.type == "EXPIRE"))
    return grants, opened, closed


def test_migration_matches_the_models(database_url_factory):
    engine = _engine(database_url_factory("schema"))
    with engine.connect() as connection:
        diff = compare_metadata(MigrationContext.configure(connection, opts={"compare_type": False}), Base.metadata)
    assert diff == []
    engine.dispose()


def test_catch_up_is_idempotent_under_racing_threads_and_a_reset_cursor(database_url_factory):
    engine = _engine(database_url_factory("race"))
    ctx = GrantContext(session_factories(engine), ManualClock(NOW), batch_size=7)
    _subscribe(ctx, 30, datetime(2025, 12, 15, tzinfo=UTC))  # periods Dec..May: 6 grants, 5 expired each

    with ThreadPoolExecutor(4) as pool:
        list(pool.map(lambda _: catch_up(ctx.factories, clock_key="", now=NOW, batch_size=7), range(4)))
    assert _counts(engine) == (180, 180, 150)
    # Even with every cursor wound back (as if a crash lost them), nothing is issued twice.
    with engine.begin() as c:
        c.execute(update(ScheduleRow).values(next_period_index=0, next_period_start=datetime(2025, 12, 15, tzinfo=UTC)))
    catch_up(ctx.factories, clock_key="", now=NOW, batch_size=7)
    assert _counts(engine) == (180, 180, 150)
    with engine.connect() as c:
        assert c.scalar(select(func.count()).select_from(ScheduleRow).where(ScheduleRow.next_period_index == 6)) == 30
    engine.dispose()


def test_the_timer_issues_real_time_subscriptions_only(database_url_factory):
    url = database_url_factory("timer")
    clock = ManualClock(NOW)
    with serving(
        app.DEFINITION, app.build, url, clock=clock, args=["--catch-up-interval", "0.05", "--enable-test-clocks"]
    ) as (
        _,
        _channel,
    ):
        engine = create_db_engine(DatabaseSettings(url=url))
        ctx = GrantContext(session_factories(engine), clock, test_clocks_enabled=True)
        _subscribe(ctx, 3, datetime(2026, 4, 1, tzinfo=UTC))
        test_clock = create_test_clock(ctx, "frozen", datetime(2026, 4, 1, tzinfo=UTC), "")
        anchor = datetime(2025, 1, 1, tzinfo=UTC)  # far behind real time, but its clock says April 2026
        apply_subscription(
            ctx,
            SubscriptionSpec(
                "sub_clock",
                "on-clock",
                1,
                anchor,
                None,
                (ScheduleSpec("credits", "ai-credits", Cadence.MONTHLY, (ScheduledAmount(Decimal(1), anchor),)),),
                test_clock.test_clock_id,
            ),
        )
        deadline = time.monotonic() + 60
        while _counts(engine)[2] < 6 and time.monotonic() < deadline:  # no RPC reads: only the timer issues
            time.sleep(0.05)
        assert _counts(engine) == (9, 9, 6)
        engine.dispose()
