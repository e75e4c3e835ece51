"""The grant service as real processes.

`--processes N` (credit_common.processes): a supervisor and N server processes on one port. Each
server process listens on it, with its own CPU under --cpus; writes through every connection land
once; SIGTERM stops them all; a server process that dies takes the service down (for systemd or
Kubernetes to restart), and so does the supervisor's death.

Exactly-once issuance across processes: `python -m grant_service` SIGKILLed in the middle of a
catch-up and restarted, and two processes running their timers on one database at once."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from sqlalchemy import func, select

from credit_common.db.engine import DatabaseSettings, create_db_engine
from credit_common.db.migrations import upgrade
from credit_common.periods import Cadence, period_index_at, period_start
from grant_service.adapters.orm import GrantRow, LedgerEntryRow, ScheduleRow
from grant_service.v1 import grant_service_pb2 as gpb
from grant_service.v1 import grant_service_pb2_grpc as gpb_grpc
from tests.e2e.grant.conftest import subscription
from tests.support.grant_rows import insert_due_subscriptions
from tests.support.processes import ServiceProcess

linux_only = pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="Linux")


def _grant(tmp_path: Path, *args: str) -> ServiceProcess:
    return ServiceProcess.grant(f"sqlite:///{tmp_path / 'grant.db'}", log_dir=tmp_path, args=["--processes", *args])


def _server_pids(service: ServiceProcess) -> list[int]:
    """The server processes' pids, once each of them serves (the first to serve answers health checks
    while the others start)."""
    deadline = time.monotonic() + 60
    while len([r for r in service.log_records() if r["message"] == "serving"]) < 2:
        assert time.monotonic() < deadline, service.log_tail()
        time.sleep(0.05)
    return next(r["processes"] for r in service.log_records() if r["message"] == "supervising")


def _listening_inodes(port: int) -> set[str]:
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if int(fields[1].rsplit(":", 1)[1], 16) == port and fields[3] == "0A":  # LISTEN
                inodes.add(fields[9])
    return inodes


def _listens(pid: int, port: int) -> bool:
    inodes = _listening_inodes(port)
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:[") and target[8:-1] in inodes:
            return True
    return False


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    status = Path(f"/proc/{pid}/status").read_text()
    return "State:\tZ" not in status


def _wait_gone(pids: list[int], limit_s: float = 30) -> None:
    deadline = time.monotonic() + limit_s
    while any(_alive(pid) for pid in pids):
        assert time.monotonic() < deadline, f"still running: {[pid for pid in pids if _alive(pid)]}"
        time.sleep(0.05)


@linux_only
def test_every_server_process_listens_on_the_port_and_every_write_lands_once(tmp_path):
    with _grant(tmp_path, "2") as grant:
        pids = _server_pids(grant)
        assert len(set(pids)) == 2
        assert all(_listens(pid, grant.port) for pid in pids)
        serving = [r for r in grant.log_records() if r["message"] == "serving"]
        assert sorted(r["server_process"] for r in serving) == [0, 1]
        # Connections of their own: the kernel spreads them over the two processes.
        channels = [grant.channel(options=[("grpc.use_local_subchannel_pool", 1)]) for _ in range(16)]
        try:
            stubs = [gpb_grpc.GrantServiceStub(channel) for channel in channels]
            stubs[0].ApplyCreditCurrency(
                gpb.ApplyCreditCurrencyRequest(
                    currency_key="ai", revision=1, rates=[gpb.CreditRate(feature_key="gpt", credits_per_unit="1")]
                ),
                timeout=10,
            )
            stubs[0].ApplySubscription(
                subscription("s", "c", datetime.now(UTC) - timedelta(days=1), [("100", None)], currency="ai"),
                timeout=10,
            )
            for i, stub in enumerate(stubs):
                stub.CreateGrant(
                    gpb.CreateGrantRequest(
                        request_id=f"g{i}", customer_key="c", currency_key="ai", amount="1.5", reason="test"
                    ),
                    timeout=10,
                )
                stub.CreateGrant(  # the same request again, through another connection: a replay
                    gpb.CreateGrantRequest(
                        request_id=f"g{i}", customer_key="c", currency_key="ai", amount="1.5", reason="test"
                    ),
                    timeout=10,
                )
            for i, stub in enumerate(stubs):
                stub.ReportUsage(
                    gpb.ReportUsageRequest(request_id=f"u{i}", customer_key="c", feature_key="gpt", quantity="1"),
                    timeout=10,
                )
            balance = stubs[-1].GetBalance(gpb.GetBalanceRequest(customer_key="c", currency_key="ai"), timeout=10)
        finally:
            for channel in channels:
                channel.close()
        assert Decimal(balance.balance.available) == 100 + Decimal("1.5") * 16 - 16
        assert grant.stop() == 0
    _wait_gone(pids)


@linux_only
def test_with_cpus_each_server_process_runs_on_a_cpu_of_its_own(tmp_path):
    cpus = sorted(os.sched_getaffinity(0))[:2]
    if len(cpus) < 2:
        pytest.skip("one CPU")
    with _grant(tmp_path, "2", "--cpus", ",".join(map(str, cpus))) as grant:
        pids = _server_pids(grant)
        allowed = [
            {
                line.split(":", 1)[1].strip()
                for task in Path(f"/proc/{pid}/task").iterdir()
                for line in (task / "status").read_text().splitlines()
                if line.startswith("Cpus_allowed_list:")
            }
            for pid in pids
        ]
    assert allowed == [{str(cpus[0])}, {str(cpus[1])}]


@linux_only
def test_a_server_process_that_dies_takes_the_service_down(tmp_path):
    grant = _grant(tmp_path, "2").start()
    pids = _server_pids(grant)
    os.kill(pids[0], signal.SIGKILL)
    grant.process.wait(timeout=60)
    assert grant.process.returncode == 1
    _wait_gone(pids)
    failed = [r for r in grant.log_records() if r["message"] == "a server process exited: stopping the others"]
    assert failed and failed[0]["exit_code"] == -signal.SIGKILL
    grant.stop()


@linux_only
def test_server_processes_stop_when_their_supervisor_dies(tmp_path):
    grant = _grant(tmp_path, "2").start()
    pids = _server_pids(grant)
    grant.kill()
    _wait_gone(pids)


# ------------------------------------------------------------- exactly-once issuance across processes

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


@pytest.mark.slow
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


@pytest.mark.slow
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
