"""One SQLite writer at a time inside the catalog process, queued on a Python lock.

SQLite admits one write transaction at a time; a writer that finds the write
lock taken (BEGIN IMMEDIATE) polls for it in SQLite's busy handler, sleeping
1, 2, 5, 10 ... up to 100 ms between tries. Under many concurrent writers
(32 ProvisionSubscription callers) the lock was often free while every waiter
slept, and an unlucky waiter lost for over a second (bench provisioning:
p99 1.5 s at p50 70 ms). Writers of this process now wait on a lock of their
own, which hands over as soon as it is released; only the holder meets
SQLite's lock, which other processes may still hold (then the busy handler
waits as before).

The lock is taken when a write connection begins its transaction (the
`write` execution option of credit_common.db.engine) and released when it
commits or rolls back. Nothing changes on PostgreSQL.
"""

from __future__ import annotations

import sqlite3
import threading

from sqlalchemy import Engine, event
from sqlalchemy.engine import Connection
from sqlalchemy.exc import OperationalError

_HELD = "catalog_write_lock_held"


def serialize_sqlite_writers(engine: Engine, timeout_s: float = 30.0) -> None:
    """Queue the write transactions of `engine` on one lock when it is SQLite (no-op otherwise)."""
    if engine.dialect.name != "sqlite":
        return
    lock = threading.Lock()

    def acquire(connection: Connection, _cursor, statement: str, *_args) -> None:
        if statement == "BEGIN IMMEDIATE":
            # As long as SQLite itself would wait; then the same error as a busy SQLite.
            if not lock.acquire(timeout=timeout_s):
                raise OperationalError(
                    statement, None, sqlite3.OperationalError("database is locked (waited for this process's writers)")
                )
            connection.info[_HELD] = True

    def release(info: dict) -> None:
        if info.pop(_HELD, False):
            lock.release()

    # Before the engine's own "begin" listener, which emits BEGIN IMMEDIATE.
    event.listen(engine, "before_cursor_execute", acquire)
    event.listen(engine, "commit", lambda connection: release(connection.info))
    event.listen(engine, "rollback", lambda connection: release(connection.info))
    # Whatever happens to a transaction (BEGIN itself failing, a connection lost), its connection
    # goes back to the pool or is invalidated: the lock is never kept past that.
    event.listen(engine, "checkin", lambda _dbapi, record: release(record.info))
    event.listen(engine, "invalidate", lambda _dbapi, record, _error: release(record.info), insert=True)
