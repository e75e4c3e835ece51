"""Engines for SQLite (the embedded default) and PostgreSQL (production)."""

from __future__ import annotations

import logging
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TypeVar

import psycopg
from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.orm import Session, sessionmaker

from credit_common.db.driver import send_deferred_writes
from credit_common.db.sqlite import BACKSTOP_AUTOCHECKPOINT_PAGES, Checkpointer, WriteGate, create_private_file
from credit_common.errors import Aborted, DomainError, Unavailable

T = TypeVar("T")


@dataclass(frozen=True)
class DatabaseSettings:
    url: str
    pool_size: int = 10
    max_overflow: int = 10
    pool_timeout_s: float = 10.0
    statement_timeout_ms: int = 30_000
    sqlite_busy_timeout_ms: int = 30_000
    # Test each connection when it leaves the pool (one round trip). Off for the grant service's
    # per-thread read connections, which never return to the pool and retry a read once instead.
    pre_ping: bool = True


def create_db_engine(settings: DatabaseSettings) -> Engine:
    url = make_url(settings.url)
    if url.get_backend_name() == "sqlite":
        return _sqlite_engine(settings)
    if url.get_backend_name() == "postgresql":
        if url.drivername == "postgresql":
            url = url.set(drivername="postgresql+psycopg")
        engine = create_engine(
            url,
            pool_size=settings.pool_size,
            max_overflow=settings.max_overflow,
            pool_timeout=settings.pool_timeout_s,
            pool_pre_ping=settings.pre_ping,
            pool_recycle=1800,
            connect_args={
                "connect_timeout": 5,
                # Instants in UTC: psycopg then reads them with the UTC tzinfo that UtcDateTime returns.
                "options": f"-c statement_timeout={settings.statement_timeout_ms}"
                f" -c lock_timeout={settings.statement_timeout_ms} -c TimeZone=UTC",
                "application_name": "credit-grants",
                # A peer that vanished without closing the connection (a crashed host, a network
                # partition) is noticed within about a minute instead of the kernel's two hours.
                "keepalives": 1,
                "keepalives_idle": 30,
                "keepalives_interval": 10,
                "keepalives_count": 3,
            },
        )
        # Writes deferred by credit_common.db.driver.deferred_writes go before any statement of SQLAlchemy's.
        event.listen(engine, "before_cursor_execute", lambda conn, *_: send_deferred_writes(conn))
        return engine
    raise ValueError(f"unsupported database URL {settings.url!r}: use sqlite:/// or postgresql://")


def _sqlite_engine(settings: DatabaseSettings) -> Engine:
    url = make_url(settings.url)
    if url.database and url.database != ":memory:":
        create_private_file(url.database)
    # An SQLite connection is a file handle: the pool keeps every one it opens (pool + overflow),
    # instead of closing the overflow after each burst and paying the connect and PRAGMAs again
    # on the next, a hot spot of GetBalance under many callers (docs/performance.md).
    engine = create_engine(
        url,
        pool_size=settings.pool_size + settings.max_overflow,
        max_overflow=0,
        pool_timeout=settings.pool_timeout_s,
        connect_args={"check_same_thread": False, "timeout": settings.sqlite_busy_timeout_ms / 1000},
    )

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection, _record):
        # Let SQLAlchemy's "begin" event emit BEGIN itself (pysqlite's own
        # transaction handling is not usable for this), see the SQLAlchemy docs
        # "Serializable isolation / Savepoints / Transactional DDL" for pysqlite.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA wal_autocheckpoint={BACKSTOP_AUTOCHECKPOINT_PAGES}")
        cursor.execute(f"PRAGMA busy_timeout={int(settings.sqlite_busy_timeout_ms)}")
        cursor.close()

    # Writers first take the gate of the file (credit_common.db.sqlite): the threads of this process,
    # then the processes, each woken as soon as it is free, instead of sleeping in SQLite's busy handler
    # (1, 2, 5 ... then 100 ms at a time) while the lock was free: under many writers some waited
    # seconds. A writer holds the gate until its connection is back in the pool. The gate is not granted
    # in arrival order: every hand-over would then wait for the woken thread to be scheduled
    # (docs/performance.md).
    # Writes deferred by credit_common.db.driver.deferred_writes go before any statement of SQLAlchemy's.
    event.listen(engine, "before_cursor_execute", lambda conn, *_: send_deferred_writes(conn))
    database = url.database if url.database and url.database != ":memory:" else None
    gate = WriteGate(database)
    checkpointer = Checkpointer(database) if database else None
    timeout_s = settings.sqlite_busy_timeout_ms / 1000

    @event.listens_for(engine, "begin")
    def _on_begin(connection):
        # Writers take the write lock up front (BEGIN IMMEDIATE) so that two
        # writers never deadlock upgrading a read lock; readers stay concurrent.
        options = connection.get_execution_options()
        if options.get("write"):
            record_info = connection.connection.record_info
            # Past the timeout, BEGIN IMMEDIATE and its busy timeout decide (and report a locked database).
            if not record_info.get(_HOLDS_WRITE_LOCK) and gate.acquire(timeout_s):
                record_info[_HOLDS_WRITE_LOCK] = True
            connection.exec_driver_sql("BEGIN IMMEDIATE")
        elif not options.get(SINGLE_STATEMENT):
            connection.exec_driver_sql("BEGIN")

    @event.listens_for(engine.pool, "checkin")
    def _on_checkin(_dbapi_connection, record):
        # After the commit or rollback (the pool's reset), also of a connection invalidated by an error.
        if record.record_info.pop(_HOLDS_WRITE_LOCK, False):
            gate.release()

    if checkpointer is not None:
        # The commits leave the log's checkpoints to the checkpointer's thread (credit_common.db.sqlite).
        @event.listens_for(engine, "commit")
        def _on_commit(connection):
            if connection.get_execution_options().get("write"):
                checkpointer.wrote()

    @event.listens_for(engine, "engine_disposed")
    def _on_dispose(_engine):
        if checkpointer is not None:
            checkpointer.stop()
        gate.close()

    return engine


_HOLDS_WRITE_LOCK = "credit_grants.holds_write_lock"


# Execution option of connections that run one read statement outside a transaction.
SINGLE_STATEMENT = "credit_grants_single_statement"


class ThreadConnections:
    """Connections for reads that are one statement, one per thread, kept by that thread.

    A statement is consistent on its own on both databases, so these run outside any
    transaction (autocommit on PostgreSQL, no BEGIN on SQLite): one round trip instead of three.
    And a thread keeps its connection: checking one out of the shared pool and back in for
    every read cost more than the read (plus PostgreSQL's pre-ping round trip; the figures:
    docs/performance.md).
    A kept connection that went stale (the database restarted) fails once: the read is then
    run again on a new connection. Give it an engine of its own, sized to the threads that
    read (see `read_engine_settings`); with the main engine, each thread holds one of its
    connections."""

    def __init__(self, engine: Engine) -> None:
        if engine.dialect.name == "postgresql":
            self._engine = engine.execution_options(isolation_level="AUTOCOMMIT")
        else:
            self._engine = engine.execution_options(**{SINGLE_STATEMENT: True})
        self._local = threading.local()

    def run(self, work: Callable[[Connection], T]) -> T:
        for attempt in range(2):
            connection: Connection | None = getattr(self._local, "connection", None)
            if connection is None or connection.closed or connection.invalidated:
                connection = self._local.connection = self._engine.connect()
            # No BEGIN reaches the database, and SQLAlchemy's own bookkeeping "transaction" is left
            # open between reads (ending and beginning it for each read cost a third of the read).
            try:
                return work(connection)
            except DBAPIError as error:
                self._local.connection = None
                connection.close()
                if attempt == 0 and error.connection_invalidated:
                    continue  # a connection from before a database restart: once more on a new one
                raise
        raise AssertionError("unreachable")


def read_engine_settings(settings: DatabaseSettings, threads: int) -> DatabaseSettings:
    """Settings of the engine behind `ThreadConnections`: one connection per reading thread."""
    return replace(settings, pool_size=threads, max_overflow=0, pre_ping=False)


@dataclass(frozen=True)
class SessionFactories:
    """Sessions for reads and for writes. On SQLite a write session begins with
    BEGIN IMMEDIATE; on PostgreSQL both are the same. `single_statement` runs one-statement
    reads on the calling thread's own connection (see `ThreadConnections`)."""

    read: sessionmaker[Session]
    write: sessionmaker[Session]
    single_statement: ThreadConnections
    dialect: str  # the database's ("sqlite", "postgresql")


def session_factories(engine: Engine, read_engine: Engine | None = None) -> SessionFactories:
    return SessionFactories(
        read=sessionmaker(bind=engine, expire_on_commit=False),
        write=sessionmaker(bind=engine.execution_options(write=True), expire_on_commit=False),
        single_statement=ThreadConnections(read_engine or engine),
        dialect=engine.dialect.name,
    )


def is_backend(engine: Engine, name: str) -> bool:
    return engine.dialect.name == name


# SQLSTATEs of a lost race between transactions: the caller may simply run it again.
CONFLICT_SQLSTATES = frozenset({"40001", "40P01"})  # serialization_failure, deadlock_detected
# SQLSTATE classes and codes of a database that is down, restarting, overloaded or too slow.
UNAVAILABLE_SQLSTATE_CLASSES = frozenset({"08", "53", "57"})  # connection, resources, operator intervention
UNAVAILABLE_SQLSTATES = frozenset({"55P03"})  # lock_not_available (lock_timeout)
_TRANSIENT_MESSAGES = (
    "database is locked",  # SQLite: the busy timeout ran out
    "connection",
    "server closed",
    "terminating",
    "could not connect",
    "the database system is",
    "timeout",
    "canceling statement",
)


def sqlstate(error: BaseException) -> str | None:
    """The PostgreSQL SQLSTATE of `error` (a SQLAlchemy or psycopg error), if it has one."""
    orig = getattr(error, "orig", None) or error
    return getattr(orig, "sqlstate", None)


def translate_db_error(error: Exception) -> DomainError | None:
    """Infrastructure errors a caller should retry. A database that is down, restarting,
    unreachable, out of connections or past the statement/lock timeout becomes UNAVAILABLE
    (DATABASE_UNAVAILABLE); a deadlock or serialization failure that survived the service's own
    retries becomes ABORTED (CONCURRENT_MODIFICATION). Never INTERNAL. None: not ours to map."""
    if isinstance(error, PoolTimeout):
        return Unavailable("every database connection is busy; retry", reason="DATABASE_UNAVAILABLE")
    if not isinstance(error, DBAPIError | psycopg.Error):
        return None
    state = sqlstate(error)
    if state in CONFLICT_SQLSTATES:
        return Aborted(
            "the transaction lost a race with a concurrent one (deadlock or serialization failure); retry",
            reason="CONCURRENT_MODIFICATION",
        )
    if getattr(error, "connection_invalidated", False):
        return Unavailable("the database is unavailable; retry", reason="DATABASE_UNAVAILABLE")
    if state is not None and (state[:2] in UNAVAILABLE_SQLSTATE_CLASSES or state in UNAVAILABLE_SQLSTATES):
        return Unavailable("the database is unavailable; retry", reason="DATABASE_UNAVAILABLE")
    if isinstance(error, OperationalError | InterfaceError | psycopg.OperationalError | psycopg.InterfaceError):
        orig = getattr(error, "orig", None) or error
        text = str(orig).lower()
        if any(marker in text for marker in _TRANSIENT_MESSAGES):
            return Unavailable("the database is unavailable; retry", reason="DATABASE_UNAVAILABLE")
    return None


def log_failure(logger: logging.Logger, message: str, extra: dict[str, object]) -> None:
    """Log the exception being handled by background work (a catch-up run, a delivery pass or lane): a
    database that is down, restarting or busy is a warning without a traceback (the next run retries, and
    an outage is ridden out); anything else an error with it."""
    error = sys.exc_info()[1]
    if error is not None and translate_db_error(error) is not None:
        logger.warning(
            message, extra={**extra, "error": str(error).splitlines()[0] if str(error) else type(error).__name__}
        )
    else:
        logger.exception(message, extra=extra)
