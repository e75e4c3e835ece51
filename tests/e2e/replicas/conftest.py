"""Real service processes on PostgreSQL: replicas sharing one database, and a PostgreSQL
server that a test may stop and start under them (its own, not the session's)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pytest

from credit_common.db.engine import DatabaseSettings, create_db_engine
from credit_common.db.migrations import upgrade
from credit_common.grpc.errors import error_details
from credit_common.testing.postgres import PostgresServer
from credit_common.testing.processes import ServiceProcess, start_service

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
        process = start_service(module, args, log_path=tmp_path / f"{module}-{len(started)}.log")
        started.append(process)
        return process

    yield start
    for process in started:
        process.stop()


def wait_until(predicate: Callable[[], bool], what: str, *, processes=(), limit_s: float = 60.0) -> None:
    """Poll `predicate` until true; fail if a process died or `limit_s` passed."""
    deadline = time.monotonic() + limit_s
    while not predicate():
        for process in processes:
            if not process.alive():
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
