"""A lost race injected into a real database: a statement (`lose_race`) or the COMMIT
(`lose_race_at_commit`) of an engine fails the way a transaction that lost a race with a concurrent
one fails (a serialization failure, SQLSTATE 40001, or a
deadlock, 40P01), so that a test can show a writer surviving it (the shared runner's retry,
credit_common.db.transactions) without having to stage the race itself.

On PostgreSQL the database reports it: a DO block raising that SQLSTATE runs on the statement's
connection in its place, so the transaction is aborted as a real loser's is and the driver's own
error (psycopg's SerializationFailure or DeadlockDetected) reaches SQLAlchemy. SQLite never reports
either (its writers take the write lock up front, one at a time): there the driver's error is raised
in the statement's place, carrying the SQLSTATE, which is what the runner reads; on SQLite the test
proves the wiring (the writer runs on the runner), on PostgreSQL the real thing.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import Engine, event
from sqlalchemy.exc import OperationalError

SERIALIZATION_FAILURE = "40001"
DEADLOCK = "40P01"


class _InjectedLostRace(sqlite3.OperationalError):
    def __init__(self, sqlstate: str) -> None:
        super().__init__(f"injected lost race (SQLSTATE {sqlstate})")
        self.sqlstate = sqlstate


class LostRaces:
    """The statements that failed, in order."""

    def __init__(self, times: int, after: int) -> None:
        self.statements: list[str] = []
        self._times, self._after, self._seen = times, after, 0
        self._lock = threading.Lock()

    def take(self, statement: str, prefix: str) -> bool:
        """Whether `statement` is to fail: the ones beginning with `prefix`, past the first `after`
        of them, `times` of them."""
        if not " ".join(statement.split()).upper().startswith(prefix.upper()):
            return False
        with self._lock:
            self._seen += 1
            if self._seen <= self._after or len(self.statements) >= self._times:
                return False
            self.statements.append(statement)
            return True

    @property
    def count(self) -> int:
        with self._lock:
            return len(self.statements)


@contextmanager
def lose_race(
    engine: Engine, prefix: str, sqlstate: str = SERIALIZATION_FAILURE, *, times: int = 1, after: int = 0
) -> Iterator[LostRaces]:
    """While in the block, statements of `engine` that begin with `prefix` (e.g. "UPDATE
    outbox_deliveries", case and spacing ignored) fail with a lost race (`sqlstate`) instead of
    running: `times` of them, once the first `after` have run (to fail a transaction after its first
    writes). Yields what failed, so that the test can check the race was met."""
    races = LostRaces(times, after)
    postgres = engine.dialect.name == "postgresql"

    def fail(cursor) -> None:
        if postgres:
            cursor.execute(f"DO $$ BEGIN RAISE EXCEPTION 'injected lost race' USING ERRCODE = '{sqlstate}'; END $$")
            raise AssertionError("PostgreSQL did not report the injected lost race")
        raise _InjectedLostRace(sqlstate)

    def do_execute(cursor, statement, parameters, context):
        if races.take(statement, prefix):
            fail(cursor)
        return False

    def do_execute_no_params(cursor, statement, context):
        if races.take(statement, prefix):
            fail(cursor)
        return False

    listeners = [
        ("do_execute", do_execute),
        ("do_executemany", do_execute),
        ("do_execute_no_params", do_execute_no_params),
    ]
    for name, listener in listeners:
        event.listen(engine, name, listener)
    try:
        yield races
    finally:
        for name, listener in listeners:
            event.remove(engine, name, listener)


@contextmanager
def lose_race_at_commit(engine: Engine, sqlstate: str = SERIALIZATION_FAILURE, times: int = 1) -> Iterator[LostRaces]:
    """While in the block, the first `times` COMMITs of `engine` fail with a lost race (`sqlstate`),
    as a serializable transaction's or a deferred constraint's COMMIT does: the transaction is rolled
    back, nothing of it committed. Yields what failed ("COMMIT" once per failure)."""
    races = LostRaces(times, 0)
    postgres = engine.dialect.name == "postgresql"

    def commit(connection) -> None:
        if not races.take("COMMIT", "COMMIT"):
            return
        error: OperationalError | None = None
        if postgres:  # reported by PostgreSQL (SQLAlchemy wraps psycopg's error)
            try:
                connection.exec_driver_sql(
                    f"DO $$ BEGIN RAISE EXCEPTION 'injected lost race' USING ERRCODE = '{sqlstate}'; END $$"
                )
            except OperationalError as reported:
                error = reported
            else:
                raise AssertionError("PostgreSQL did not report the injected lost race")
        else:
            error = OperationalError("COMMIT", {}, _InjectedLostRace(sqlstate))
        # A COMMIT that fails ends the transaction, rolled back: so here too, before SQLAlchemy's COMMIT
        # (which this event precedes) is abandoned.
        connection.connection.rollback()
        raise error

    event.listen(engine, "commit", commit)
    try:
        yield races
    finally:
        event.remove(engine, "commit", commit)
