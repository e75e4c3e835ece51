"""The pool and timeout flags reach the engine and the PostgreSQL session; database errors map to
retryable statuses (UNAVAILABLE for a database that is down or too slow, ABORTED for a lost race),
never to INTERNAL."""

from __future__ import annotations

import threading
from datetime import UTC, datetime

import psycopg.errors
import pytest
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from credit_common.config import parse_service_args
from credit_common.db.engine import create_db_engine, translate_db_error
from credit_common.errors import Aborted, Unavailable


def _settings(url: str, *flags: str):
    return parse_service_args(
        service="grant_service",
        env_prefix="UNUSED_IN_TESTS",
        default_port=0,
        database_file="unused.db",
        argv=["--database-url", url, *flags],
    ).database


@pytest.mark.parametrize("backend", ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def test_pool_flags_size_the_pool(database_url_factory, backend):
    engine = create_db_engine(_settings(database_url_factory("pool"), "--db-pool-size", "3", "--db-max-overflow", "2"))
    try:
        if backend == "sqlite":  # SQLite keeps every connection it opens: no overflow to close again
            assert (engine.pool.size(), engine.pool._max_overflow) == (5, 0)
        else:
            assert (engine.pool.size(), engine.pool._max_overflow) == (3, 2)
        # pool_size + max_overflow connections can be open at once, and no more
        connections = [engine.connect() for _ in range(5)]
        assert engine.pool.checkedout() == 5
        with pytest.raises(PoolTimeout):
            engine.pool._timeout = 0.05
            engine.connect()
        for connection in connections:
            connection.close()
        if backend == "sqlite":
            assert engine.pool.checkedin() == 5  # all kept for the next burst
    finally:
        engine.dispose()


@pytest.mark.postgres
@pytest.mark.parametrize("backend", ["postgresql"])
def test_statement_timeout_flag_sets_statement_and_lock_timeouts(database_url_factory, backend):
    engine = create_db_engine(_settings(database_url_factory("timeouts"), "--db-statement-timeout-ms", "300"))
    try:
        with engine.connect() as connection:
            assert connection.scalar(text("SHOW statement_timeout")) == "300ms"
            assert connection.scalar(text("SHOW lock_timeout")) == "300ms"
            with pytest.raises(OperationalError) as raised:
                connection.execute(text("SELECT pg_sleep(5)"))
        translated = translate_db_error(raised.value)
        assert isinstance(translated, Unavailable) and translated.reason == "DATABASE_UNAVAILABLE"
    finally:
        engine.dispose()


@pytest.mark.postgres
@pytest.mark.parametrize("backend", ["postgresql"])
def test_sessions_run_in_utc_so_instants_are_read_in_utc_as_psycopg_gives_them(database_url_factory, backend):
    """The session's time zone is UTC (whatever the server's default): psycopg reads a timestamptz
    with the UTC tzinfo that UtcDateTime returns, which its result processor then keeps as it is."""
    engine = create_db_engine(_settings(database_url_factory("utc")))
    try:
        with engine.connect() as connection:
            assert connection.scalar(text("SHOW TimeZone")) == "UTC"
            read = connection.scalar(text("SELECT TIMESTAMPTZ '2026-12-07 09:00:00+02'"))
        assert read == datetime(2026, 12, 7, 7, tzinfo=UTC) and read.tzinfo is UTC
    finally:
        engine.dispose()


@pytest.mark.postgres
@pytest.mark.parametrize("backend", ["postgresql"])
def test_a_real_deadlock_maps_to_aborted(database_url_factory, backend):
    engine = create_db_engine(_settings(database_url_factory("deadlock")))
    try:
        with engine.begin() as connection:
            connection.execute(text("CREATE TABLE t (id int PRIMARY KEY, v int)"))
            connection.execute(text("INSERT INTO t VALUES (1, 0), (2, 0)"))
        both_locked_one = threading.Barrier(2)
        errors: list[Exception] = []

        def transfer(first: int, second: int) -> None:
            try:
                with engine.begin() as connection:
                    connection.execute(text("UPDATE t SET v = v + 1 WHERE id = :id"), {"id": first})
                    both_locked_one.wait(timeout=10)
                    connection.execute(text("UPDATE t SET v = v + 1 WHERE id = :id"), {"id": second})
            except OperationalError as error:
                errors.append(error)

        threads = [threading.Thread(target=transfer, args=pair) for pair in ((1, 2), (2, 1))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=30)
        assert len(errors) == 1  # PostgreSQL picks one victim
        translated = translate_db_error(errors[0])
        assert isinstance(translated, Aborted) and translated.reason == "CONCURRENT_MODIFICATION"
    finally:
        engine.dispose()


def _wrapped(orig: Exception) -> OperationalError:
    return OperationalError("UPDATE ...", {}, orig)


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (_wrapped(psycopg.errors.SerializationFailure("could not serialize access")), Aborted),
        (_wrapped(psycopg.errors.DeadlockDetected("deadlock detected")), Aborted),
        (_wrapped(psycopg.errors.AdminShutdown("terminating connection due to administrator command")), Unavailable),
        (_wrapped(psycopg.errors.CannotConnectNow("the database system is starting up")), Unavailable),
        (_wrapped(psycopg.errors.TooManyConnections("sorry, too many clients already")), Unavailable),
        (_wrapped(psycopg.errors.LockNotAvailable("canceling statement due to lock timeout")), Unavailable),
        (_wrapped(psycopg.OperationalError("connection failed: Connection refused")), Unavailable),
        (psycopg.OperationalError("consuming input failed: server closed the connection unexpectedly"), Unavailable),
        (PoolTimeout("QueuePool limit of size 10 overflow 10 reached"), Unavailable),
        (IntegrityError("INSERT ...", {}, psycopg.errors.UniqueViolation("duplicate key")), None),
        (_wrapped(psycopg.errors.DivisionByZero("division by zero")), None),
        (KeyError("not a database error"), None),
    ],
)
def test_translate_db_error(error, expected):
    translated = translate_db_error(error)
    if expected is None:
        assert translated is None
    else:
        assert isinstance(translated, expected), translated
