"""Real service processes on PostgreSQL: replicas sharing one database, and a PostgreSQL
server that a test may stop and start under them (its own, not the session's)."""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import grpc
import pytest
from sqlalchemy import func, select
from sqlalchemy.exc import OperationalError

from credit_common.db.engine import DatabaseSettings, create_db_engine
from credit_common.db.migrations import upgrade
from credit_common.grpc.errors import error_details
from grant_service.adapters.orm import EventRow, GrantRow, LedgerEntryRow, ScheduleRow
from tests.support.grant_rows import insert_due_subscriptions
from tests.support.postgres import PostgresServer
from tests.support.processes import ServiceProcess

GRANT_MIGRATIONS = "grant_service.adapters:migrations"
CATALOG_MIGRATIONS = "catalog_service.adapters:migrations"


@pytest.fixture
def own_postgres() -> Iterator[PostgresServer]:
    """A PostgreSQL server for this test alone, so that it can be stopped, crashed and restarted."""
    server = PostgresServer(crash_safe=True)
    server.start()
    yield server
    server.destroy()


def migrated_database(server: PostgresServer, name: str, migrations: str) -> str:
    url = server.create_database(name)
    engine = create_db_engine(DatabaseSettings(url=url))
    try:
        upgrade(migrations, engine)
    finally:
        engine.dispose()
    return url


@pytest.fixture
def services(tmp_path: Path) -> Iterator[Callable[..., ServiceProcess]]:
    """`start(module, *args)` starts a service process (logs under tmp_path); all are stopped after
    the test, and a test fails if one of them did not exit cleanly on SIGTERM."""
    started: list[ServiceProcess] = []

    def start(module: str, *args: str) -> ServiceProcess:
        process = ServiceProcess(
            module,
            None,  # in args
            log_dir=tmp_path,
            args=args,
            name=f"{module}-{len(started)}",
            migrate=False,
            shutdown_grace_s=None,
        )
        started.append(process)
        return process.start(ready_timeout_s=30.0)

    yield start
    for process in started:
        process.stop()


def wait_until(predicate: Callable[[], bool], what: str, *, processes=(), limit_s: float = 60.0) -> None:
    """Poll `predicate` until true; fail if a process died or `limit_s` passed."""
    deadline = time.monotonic() + limit_s
    while not predicate():
        for process in processes:
            if process.process is not None and not process.running:
                pytest.fail(f"a service process exited ({process.process.returncode}): {process.log_tail()}")
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.05)


def expect_unavailable(call: Callable[[], object], domain: str) -> None:
    """`call` fails with UNAVAILABLE / DATABASE_UNAVAILABLE (not INTERNAL, not a deadline)."""
    with pytest.raises(grpc.RpcError) as raised:
        call()
    assert raised.value.code() == grpc.StatusCode.UNAVAILABLE, (raised.value.code(), raised.value.details())
    info, _ = error_details(raised.value)
    assert info is not None, raised.value.details()
    assert (info.reason, info.domain) == ("DATABASE_UNAVAILABLE", domain)


def seed_due_subscriptions(url: str, count: int) -> datetime:
    """`count` real-time monthly subscriptions of 1000 credits, one customer each, all started within
    the last day and a half and none issued yet: exactly one grant each is due, at once. Bulk
    inserted in one transaction (the way a migration from another system would load them). Returns
    the instant they were seeded at."""
    now = datetime.now(UTC).replace(microsecond=0)
    anchors = [now - timedelta(days=1, seconds=i % 40_000) for i in range(count)]
    engine = create_db_engine(DatabaseSettings(url=url))
    try:
        insert_due_subscriptions(engine, anchors, now)
    finally:
        engine.dispose()
    return now


def count_rows(url: str, model, *where) -> int:
    engine = create_db_engine(DatabaseSettings(url=url, pool_size=1, max_overflow=0))
    try:
        with engine.connect() as connection:
            return connection.scalar(select(func.count()).select_from(model).where(*where))
    except OperationalError:
        return -1  # the database is restarting: not yet
    finally:
        engine.dispose()


def assert_each_seeded_subscription_granted_once(url: str, count: int) -> None:
    """Row by row: every seeded schedule has exactly one grant (period 0, 1000 credits, starting at
    its anchor) with exactly one GRANT entry, and its cursor moved to period 1; nothing else."""
    engine = create_db_engine(DatabaseSettings(url=url))
    try:
        with engine.connect() as connection:
            grants = connection.execute(
                select(
                    GrantRow.grant_id,
                    GrantRow.schedule_id,
                    GrantRow.period_index,
                    GrantRow.amount,
                    GrantRow.effective_time,
                    ScheduleRow.anchor_time,
                ).join(ScheduleRow, ScheduleRow.schedule_id == GrantRow.schedule_id)
            ).all()
            entries = connection.execute(
                select(LedgerEntryRow.grant_id, LedgerEntryRow.type, LedgerEntryRow.amount)
            ).all()
            cursors = dict(connection.execute(select(ScheduleRow.schedule_id, ScheduleRow.next_period_index)).all())
            events = connection.execute(select(EventRow.type, EventRow.dedupe_key, EventRow.payload)).all()
    finally:
        engine.dispose()
    per_schedule = Counter(g.schedule_id for g in grants)
    assert len(per_schedule) == count, f"{count - len(per_schedule)} subscriptions got no grant"
    assert [s for s, n in per_schedule.items() if n != 1] == [], "a subscription got two grants"
    assert [g.grant_id for g in grants if g.period_index != 0 or g.effective_time != g.anchor_time] == []
    assert {g.amount for g in grants} == {Decimal("1000")}
    assert Counter(e.type for e in entries) == {"GRANT": count}
    granted = Counter(e.grant_id for e in entries)
    assert set(granted) == {g.grant_id for g in grants} and set(granted.values()) == {1}
    assert {e.amount for e in entries} == {Decimal("1000")}
    assert set(cursors.values()) == {1}
    # The event log: one CREDITS_GRANTED per grant, none lost, none twice.
    assert Counter(e.type for e in events) == {"CREDITS_GRANTED": count}
    reported = Counter(json.loads(e.payload)["grant_id"] for e in events)
    assert set(reported) == {g.grant_id for g in grants} and set(reported.values()) == {1}
