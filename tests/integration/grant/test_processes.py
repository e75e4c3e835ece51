"""Exactly-once issuance across real processes: `python -m grant_service` SIGKILLed in the middle
of a catch-up and restarted, and two processes running their timers on one database at once."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select

from credit_common.db.engine import DatabaseSettings, create_db_engine
from credit_common.db.migrations import upgrade
from credit_common.periods import Cadence, period_index_at, period_start
from grant_service.adapters.orm import GrantRow, LedgerEntryRow, ScheduleRow
from tests.support.grant_rows import insert_due_subscriptions

pytestmark = pytest.mark.slow

SUBSCRIPTIONS = 10_000


def _seed(url: str, count: int) -> tuple[object, int]:
    """`count` real-time monthly subscriptions started 20-50 days ago, none issued yet; returns the
    engine and how many grants are due."""
    engine = create_db_engine(DatabaseSettings(url=url))
    upgrade("grant_service.adapters:migrations", engine)
    now = datetime.now(UTC)
    anchors = [(now - timedelta(days=20 + i % 30, seconds=i)).replace(microsecond=0) for i in range(count)]
    insert_due_subscriptions(engine, anchors, now)
    expected = sum(period_index_at(anchor, Cadence.MONTHLY, now) + 1 for anchor in anchors)
    return engine, expected


def _start(url: str, batch_size: int) -> subprocess.Popen:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "grant_service",
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--database-url",
            url,
            "--catch-up-interval",
            "0.2",
            "--catch-up-batch-size",
            str(batch_size),
            "--log-level",
            "WARNING",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


def _count(engine, model) -> int:
    with engine.connect() as connection:
        return connection.scalar(select(func.count()).select_from(model))


def _wait_for(predicate, processes, limit_s: float = 120.0) -> None:
    """Poll until `predicate()`; fail (with the servers' stderr) if a server died or it never happens."""
    deadline = time.monotonic() + limit_s
    while not predicate():
        for process in processes:
            if process.poll() is not None:
                pytest.fail(f"grant server exited: {process.stderr.read().decode()[-2000:]}")
        if time.monotonic() > deadline:
            pytest.fail("the catch-up did not finish")
        time.sleep(0.05)


def _stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=30)


def _assert_exactly_once(engine, expected: int) -> None:
    with engine.connect() as connection:
        duplicates = connection.execute(
            select(GrantRow.schedule_id, GrantRow.period_index, GrantRow.segment)
            .group_by(GrantRow.schedule_id, GrantRow.period_index, GrantRow.segment)
            .having(func.count() > 1)
        ).all()
        grant_entries = connection.scalar(
            select(func.count()).select_from(LedgerEntryRow).where(LedgerEntryRow.type == "GRANT")
        )
        distinct_granted = connection.scalar(
            select(func.count(func.distinct(LedgerEntryRow.grant_id))).where(LedgerEntryRow.type == "GRANT")
        )
        expires = connection.scalar(
            select(func.count()).select_from(LedgerEntryRow).where(LedgerEntryRow.type == "EXPIRE")
        )
        expired_grants = connection.scalar(
            select(func.count()).select_from(GrantRow).where(GrantRow.expire_time <= datetime.now(UTC))
        )
        wrong_start = [
            (row.schedule_id, row.period_index)
            for row in connection.execute(
                select(
                    GrantRow.schedule_id, GrantRow.period_index, GrantRow.effective_time, ScheduleRow.anchor_time
                ).join(ScheduleRow, ScheduleRow.schedule_id == GrantRow.schedule_id)
            )
            if period_start(row.anchor_time, Cadence.MONTHLY, row.period_index) != row.effective_time
        ]
    assert duplicates == []
    assert _count(engine, GrantRow) == expected
    assert grant_entries == distinct_granted == expected
    assert expires <= expired_grants  # at most one EXPIRE per grant (the timer may still be expiring the newest)
    assert wrong_start == []


def test_sigkill_mid_catch_up_then_restart_issues_each_period_once(database_url_factory):
    url = database_url_factory("grant")
    engine, expected = _seed(url, SUBSCRIPTIONS)
    first = _start(url, batch_size=100)
    try:
        _wait_for(lambda: _count(engine, GrantRow) >= 1000, [first])
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=30)
    finally:
        _stop(first)
    halfway = _count(engine, GrantRow)
    assert 0 < halfway < expected  # it really died in the middle
    second = _start(url, batch_size=100)
    try:
        _wait_for(lambda: _count(engine, GrantRow) >= expected, [second])
        _assert_exactly_once(engine, expected)
    finally:
        _stop(second)
    _assert_exactly_once(engine, expected)
    engine.dispose()


def test_two_processes_on_one_database_issue_each_period_once(database_url_factory):
    url = database_url_factory("grant")
    engine, expected = _seed(url, 3000)
    processes = [_start(url, batch_size=50), _start(url, batch_size=50)]
    try:
        _wait_for(lambda: _count(engine, GrantRow) >= expected, processes)
    finally:
        for process in processes:
            _stop(process)
    assert all(p.returncode == 0 for p in processes)
    _assert_exactly_once(engine, expected)
    engine.dispose()
