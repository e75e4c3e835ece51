"""The catch-up against a real database: idempotent, racing threads, unique constraints as the last
line of defence, the timer, and a migration that matches the models."""

from __future__ import annotations

import json
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
from grant_service.adapters.orm import Base, GrantRow, LedgerEntryRow, ScheduleRow
from grant_service.adapters.unit_of_work import SqlTransactions
from grant_service.domain.clocks import REAL_TIME
from grant_service.domain.schedules import ScheduledAmount
from grant_service.entrypoints import app
from grant_service.service_layer.context import GrantContext
from grant_service.service_layer.issuance import catch_up
from grant_service.service_layer.simulated_clocks import create_test_clock
from grant_service.service_layer.subscriptions import ScheduleSpec, SubscriptionSpec, apply_subscription
from tests.support.grant_context import sql_context
from tests.support.grant_rows import insert_due_subscriptions
from tests.support.servers import serving

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
    ctx = sql_context(session_factories(engine), ManualClock(NOW), batch_size=7)
    _subscribe(ctx, 30, datetime(2025, 12, 15, tzinfo=UTC))  # periods Dec..May: 6 grants, 5 expired each

    with ThreadPoolExecutor(4) as pool:
        list(pool.map(lambda _: catch_up(ctx.transactions, clock_key=REAL_TIME, now=NOW, batch_size=7), range(4)))
    assert _counts(engine) == (180, 180, 150)
    # Even with every cursor wound back (as if a crash lost them), nothing is issued twice.
    with engine.begin() as c:
        c.execute(update(ScheduleRow).values(next_period_index=0, next_period_start=datetime(2025, 12, 15, tzinfo=UTC)))
    catch_up(ctx.transactions, clock_key=REAL_TIME, now=NOW, batch_size=7)
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
        ctx = sql_context(session_factories(engine), clock, test_clocks_enabled=True)
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


def _history(engine) -> tuple[list, list, list]:
    """Grants, each schedule's ledger in order, and cursors, without the generated ids."""
    with engine.connect() as c:
        grants = sorted(
            c.execute(
                select(
                    GrantRow.schedule_id,
                    GrantRow.period_index,
                    GrantRow.segment,
                    GrantRow.amount,
                    GrantRow.effective_time,
                    GrantRow.expire_time,
                    GrantRow.closed,
                )
            ).all()
        )
        ledger = c.execute(
            select(
                GrantRow.schedule_id,
                GrantRow.period_index,
                GrantRow.segment,
                LedgerEntryRow.type,
                LedgerEntryRow.amount,
                LedgerEntryRow.effective_time,
                LedgerEntryRow.description,
            )
            .join(GrantRow, GrantRow.grant_id == LedgerEntryRow.grant_id)
            .order_by(GrantRow.schedule_id, LedgerEntryRow.seq)
        ).all()
        cursors = c.execute(
            select(ScheduleRow.schedule_id, ScheduleRow.next_period_index, ScheduleRow.next_period_start).order_by(
                ScheduleRow.schedule_id
            )
        ).all()
    return grants, ledger, cursors


def test_a_batch_of_schedules_with_different_terms_issues_as_one_schedule_per_batch(database_url_factory):
    """The sweep works out what is due once per distinct terms in a batch and advances the cursors
    by groups: schedules that share an anchor, others that do not, an amendment, an end, a cursor
    further on and a schedule not yet due, all in one batch, come out as one schedule per batch."""
    anchors = [datetime(2025, 12, 15, tzinfo=UTC)] * 4 + [datetime(2026, 1, 31, tzinfo=UTC)] * 3
    anchors += [datetime(2026, 5, 31, 12, tzinfo=UTC), NOW, datetime(2026, 6, 2, tzinfo=UTC)]
    histories = []
    for batch_size in (1, 100):
        engine = _engine(database_url_factory(f"terms{batch_size}"))
        insert_due_subscriptions(engine, anchors, NOW, amount="7")
        with engine.begin() as c:
            amended = [["7", "2025-12-15T00:00:00+00:00"], ["9.5", "2026-03-25T06:00:00+00:00"]]
            c.execute(update(ScheduleRow).where(ScheduleRow.schedule_id == "sch_1").values(amounts=json.dumps(amended)))
            c.execute(
                update(ScheduleRow)
                .where(ScheduleRow.schedule_id == "sch_2")
                .values(end_time=datetime(2026, 4, 1, tzinfo=UTC))
            )
            c.execute(  # as if periods 0..2 had been issued elsewhere
                update(ScheduleRow)
                .where(ScheduleRow.schedule_id == "sch_5")
                .values(next_period_index=3, next_period_start=datetime(2026, 4, 30, tzinfo=UTC))
            )
        catch_up(
            SqlTransactions(session_factories(engine), ManualClock(NOW)),
            clock_key=REAL_TIME,
            now=NOW,
            batch_size=batch_size,
        )
        histories.append(_history(engine))
        engine.dispose()
    assert histories[0] == histories[1]
    grants, _ledger, cursors = histories[1]
    per_schedule = [sum(1 for g in grants if g.schedule_id == f"sch_{i}") for i in range(10)]
    # sch_1: one more segment (the amendment); sch_2: Dec..Mar (its end); sch_5: from April (its cursor).
    assert per_schedule == [6, 7, 4, 6, 5, 2, 5, 1, 1, 0]
    assert cursors[-1] == ("sch_9", 0, datetime(2026, 6, 2, tzinfo=UTC))


def test_the_sweep_opens_pending_grants_once_in_time_order(database_url_factory):
    """One-off grants created for later are pending (no ledger entry); the real-time sweep, racing
    itself in small batches, writes each GRANT entry once when it is due, and the EXPIRE of one
    already over right after it."""
    from datetime import timedelta

    from grant_service.service_layer.operators import create_grant
    from grant_service.service_layer.subscriptions import apply_credit_currency

    engine = _engine(database_url_factory("pending"))
    ctx = sql_context(session_factories(engine), ManualClock(NOW), batch_size=3)
    apply_credit_currency(ctx, "ai-credits", 1, {}, None)
    _subscribe(ctx, 4, datetime(2026, 5, 15, tzinfo=UTC))
    catch_up(ctx.transactions, clock_key=REAL_TIME, now=NOW, batch_size=3)
    assert _counts(engine) == (4, 4, 0)
    later = NOW + timedelta(days=1)
    for i in range(4):
        create_grant(ctx, f"r{i}", f"c{i}", "ai-credits", Decimal(3), later, later + timedelta(hours=i + 1), None, "")
        create_grant(ctx, f"s{i}", f"c{i}", "ai-credits", Decimal(4), later, None, None, "")
    assert _counts(engine) == (12, 4, 0)  # stored, nothing in the ledger
    catch_up(ctx.transactions, clock_key=REAL_TIME, now=later - timedelta(microseconds=1), batch_size=3)
    assert _counts(engine) == (12, 4, 0)  # not yet due: still nothing opened
    swept_at = later + timedelta(hours=2, minutes=30)
    with ThreadPoolExecutor(3) as pool:
        list(pool.map(lambda _: catch_up(ctx.transactions, clock_key=REAL_TIME, now=swept_at, batch_size=3), range(3)))
    assert _counts(engine) == (12, 12, 2)  # 8 opened, 2 of them already over
    with engine.connect() as c:
        rows = c.execute(
            select(LedgerEntryRow.grant_id, LedgerEntryRow.type, LedgerEntryRow.effective_time).order_by(
                LedgerEntryRow.seq
            )
        ).all()
        pending = c.scalar(select(func.count()).select_from(GrantRow).where(GrantRow.opens_at.is_not(None)))
    assert pending == 0
    assert all(when <= swept_at for _, _, when in rows)
    for grant_id in {g for g, type_, _ in rows if type_ == "EXPIRE"}:
        assert [type_ for g, type_, _ in rows if g == grant_id] == ["GRANT", "EXPIRE"]


def test_the_timer_opens_a_pending_grant_when_it_is_due(database_url_factory):
    from datetime import timedelta

    from grant_service.service_layer.operators import create_grant
    from grant_service.service_layer.subscriptions import apply_credit_currency

    url = database_url_factory("timer_pending")
    clock = ManualClock(NOW)
    with serving(app.DEFINITION, app.build, url, clock=clock, args=["--catch-up-interval", "0.05"]) as (_, _channel):
        engine = create_db_engine(DatabaseSettings(url=url))
        ctx = sql_context(session_factories(engine), clock)
        apply_credit_currency(ctx, "ai-credits", 1, {}, None)
        _subscribe(ctx, 1, datetime(2026, 5, 20, tzinfo=UTC))
        later = NOW + timedelta(hours=1)
        create_grant(ctx, "r", "c0", "ai-credits", Decimal(3), later, None, None, "")
        deadline = time.monotonic() + 60
        while _counts(engine)[1] < 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _counts(engine) == (2, 1, 0)  # the recurring grant only: the one-off grant is pending
        clock.set(later)
        while _counts(engine)[1] < 2 and time.monotonic() < deadline:  # no RPC reads: only the timer opens it
            time.sleep(0.05)
        assert _counts(engine) == (2, 2, 0)
        engine.dispose()
