"""Engines for SQLite (the embedded default) and PostgreSQL (production)."""

from __future__ import annotations

import os
from dataclasses import dataclass

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from credit_common.errors import DomainError, Unavailable


@dataclass(frozen=True)
class DatabaseSettings:
    url: str
    pool_size: int = 10
    max_overflow: int = 10
    pool_timeout_s: float = 10.0
    statement_timeout_ms: int = 30_000
    sqlite_busy_timeout_ms: int = 30_000


def create_db_engine(settings: DatabaseSettings) -> Engine:
    url = make_url(settings.url)
    if url.get_backend_name() == "sqlite":
        return _sqlite_engine(settings)
    if url.get_backend_name() == "postgresql":
        if url.drivername == "postgresql":
            url = url.set(drivername="postgresql+psycopg")
        return create_engine(
            url,
            pool_size=settings.pool_size,
            max_overflow=settings.max_overflow,
            pool_timeout=settings.pool_timeout_s,
            pool_pre_ping=True,
            pool_recycle=1800,
            connect_args={
                "connect_timeout": 5,
                "options": f"-c statement_timeout={settings.statement_timeout_ms}"
                f" -c lock_timeout={settings.statement_timeout_ms}",
                "application_name": "credit-grants",
            },
        )
    raise ValueError(f"unsupported database URL {settings.url!r}: use sqlite:/// or postgresql://")


def _sqlite_engine(settings: DatabaseSettings) -> Engine:
    url = make_url(settings.url)
    if url.database and url.database != ":memory:":
        os.makedirs(os.path.dirname(os.path.abspath(url.database)), exist_ok=True)
    engine = create_engine(
        url,
        pool_size=settings.pool_size,
        max_overflow=settings.max_overflow,
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
        cursor.execute(f"PRAGMA busy_timeout={int(settings.sqlite_busy_timeout_ms)}")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection):
        # Writers take the write lock up front (BEGIN IMMEDIATE) so that two
        # writers never deadlock upgrading a read lock; readers stay concurrent.
        if connection.get_execution_options().get("write"):
            connection.exec_driver_sql("BEGIN IMMEDIATE")
        else:
            connection.exec_driver_sql("BEGIN")

    return engine


@dataclass(frozen=True)
class SessionFactories:
    """Sessions for reads and for writes. On SQLite a write session begins with
    BEGIN IMMEDIATE; on PostgreSQL both are the same."""

    read: sessionmaker[Session]
    write: sessionmaker[Session]


def session_factories(engine: Engine) -> SessionFactories:
    return SessionFactories(
        read=sessionmaker(bind=engine, expire_on_commit=False),
        write=sessionmaker(bind=engine.execution_options(write=True), expire_on_commit=False),
    )


def is_backend(engine: Engine, name: str) -> bool:
    return engine.dialect.name == name


def translate_db_error(error: Exception) -> DomainError | None:
    """Infrastructure errors a caller should retry: a database that is down,
    restarting or unreachable becomes UNAVAILABLE, never INTERNAL."""
    if isinstance(error, OperationalError | DBAPIError) and getattr(error, "connection_invalidated", False):
        return Unavailable("the database is unavailable; retry", reason="DATABASE_UNAVAILABLE")
    if isinstance(error, OperationalError):
        text = str(error.orig).lower() if error.orig else str(error).lower()
        transient = (
            "database is locked",
            "connection",
            "server closed",
            "terminating",
            "could not connect",
            "the database system is",
            "timeout",
            "canceling statement",
        )
        if any(marker in text for marker in transient):
            return Unavailable("the database is unavailable; retry", reason="DATABASE_UNAVAILABLE")
    return None
