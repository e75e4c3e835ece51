"""SQLite: writers wait for each other in Python (the threads of one process) and in the kernel (the
processes), not in SQLite's busy handler (which sleeps up to 100 ms at a time and retries); the wait
ends when the writer before them has given its connection back, whether it committed or failed. And
the write-ahead log is checkpointed off the write path."""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import sys
import threading
import time

import pytest
from sqlalchemy import event, text

from credit_common.db.engine import DatabaseSettings, create_db_engine, session_factories
from credit_common.db.sqlite import BACKSTOP_AUTOCHECKPOINT_PAGES, gate_path


@pytest.fixture
def engine(tmp_path):
    engine = create_db_engine(DatabaseSettings(url=f"sqlite:///{tmp_path / 'lock.db'}"))
    with engine.begin() as c:
        c.exec_driver_sql("CREATE TABLE t (v INTEGER)")
    yield engine
    engine.dispose()


def test_a_second_writer_begins_only_after_the_first_gave_its_connection_back(engine):
    log: list[str] = []
    entered = threading.Event()

    @event.listens_for(engine, "before_cursor_execute")
    def _log(conn, cursor, statement, parameters, context, executemany):
        log.append(f"{threading.current_thread().name}: {statement}")

    @event.listens_for(engine.pool, "checkout")  # just before its "begin"
    def _entered(dbapi_connection, record, proxy):
        if threading.current_thread().name == "second":
            entered.set()

    factories = session_factories(engine)
    # Two connections in the pool first: opening one runs PRAGMA journal_mode, which waits for writers.
    with engine.connect(), engine.connect():
        pass

    def second() -> None:
        with factories.write() as session, session.begin():
            session.execute(text("INSERT INTO t VALUES (2)"))

    with factories.write() as session, session.begin():
        session.execute(text("INSERT INTO t VALUES (1)"))
        thread = threading.Thread(target=second, name="second")
        thread.start()
        assert entered.wait(10)
        time.sleep(0.2)  # room for the second writer to run BEGIN IMMEDIATE, if it were not waiting
        log.append("first: committing")
    thread.join(10)
    assert log.index("first: committing") < log.index("second: BEGIN IMMEDIATE")


def test_a_failed_write_transaction_lets_the_next_writer_in(engine):
    factories = session_factories(engine)
    with pytest.raises(RuntimeError), factories.write() as session, session.begin():
        session.execute(text("INSERT INTO t VALUES (1)"))
        raise RuntimeError("the work failed")
    done = threading.Event()

    def other() -> None:
        with factories.write() as session, session.begin():
            session.execute(text("INSERT INTO t VALUES (2)"))
        done.set()

    thread = threading.Thread(target=other)
    thread.start()
    thread.join(10)
    assert done.is_set()  # with the lock left held, it would wait for the 30 s busy timeout
    with engine.connect() as c:
        assert c.exec_driver_sql("SELECT v FROM t").scalars().all() == [2]


def test_readers_do_not_wait_for_the_writers_lock(engine):
    factories = session_factories(engine)
    entered, release = threading.Event(), threading.Event()

    def hold() -> None:
        with factories.write() as session, session.begin():
            session.execute(text("INSERT INTO t (v) VALUES (1)"))
            entered.set()
            release.wait(10)

    holder = threading.Thread(target=hold)
    holder.start()
    assert entered.wait(10)
    try:
        with factories.read() as session, session.begin():
            assert session.execute(text("SELECT count(*) FROM t")).scalar_one() == 0  # uncommitted row unseen
        assert factories.single_statement.run(lambda c: c.scalar(text("SELECT count(*) FROM t"))) == 0
    finally:
        release.set()
        holder.join(10)


_HOLDER = """
import sys
from sqlalchemy import text
from credit_common.db.engine import DatabaseSettings, create_db_engine, session_factories
engine = create_db_engine(DatabaseSettings(url=sys.argv[1]))
with session_factories(engine).write() as session, session.begin():
    session.execute(text("INSERT INTO t VALUES (1)"))
    print("holding", flush=True)
    sys.stdin.readline()
engine.dispose()
"""


def _gate_waiters(path) -> int:
    """Requests queued in the kernel for an flock of `path` (the "->" lines of /proc/locks)."""
    inode = os.stat(path).st_ino
    return sum(
        1 for line in open("/proc/locks").read().splitlines() if "->" in line and line.split()[6].endswith(f":{inode}")
    )


def test_a_writer_of_another_process_is_waited_for_in_the_kernel_not_in_sqlites_busy_handler(tmp_path):
    """Between processes, a writer waits for the gate (an flock beside the database) and goes on the
    moment the other process's writer is done. Its own busy timeout is 0 here: had it gone on to SQLite's
    lock while the other held it, its write would have failed at once ("database is locked")."""
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    engine = create_db_engine(DatabaseSettings(url=url, sqlite_busy_timeout_ms=0))
    with engine.begin() as c:
        c.exec_driver_sql("CREATE TABLE t (v INTEGER)")
    other = subprocess.Popen(
        [sys.executable, "-c", _HOLDER, url], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    outcome: list[object] = []
    try:
        assert other.stdout.readline().strip() == "holding"

        def write() -> None:
            try:
                with session_factories(engine).write() as session, session.begin():
                    session.execute(text("INSERT INTO t VALUES (2)"))
                outcome.append("written")
            except Exception as error:
                outcome.append(error)

        writer = threading.Thread(target=write)
        writer.start()
        deadline = time.monotonic() + 20
        while _gate_waiters(gate_path(str(tmp_path / "shared.db"))) < 1:
            assert time.monotonic() < deadline and not outcome, f"the writer did not wait for the gate: {outcome}"
            time.sleep(0.01)
        other.stdin.write("\n")
        other.stdin.flush()
        writer.join(20)
    finally:
        other.stdin.close()
        other.wait(20)
    assert outcome == ["written"]
    with engine.connect() as c:
        assert c.exec_driver_sql("SELECT v FROM t ORDER BY v").scalars().all() == [1, 2]
    engine.dispose()


def test_the_log_is_checkpointed_into_the_database_file_off_the_write_path(tmp_path):
    """Commits leave the write-ahead log to the checkpointer's thread (their own checkpoints wait for a
    log ten times SQLite's default): soon after a write, its rows are in the database file itself."""
    path = tmp_path / "checkpointed.db"
    engine = create_db_engine(DatabaseSettings(url=f"sqlite:///{path}"))
    with engine.connect() as c:
        assert c.exec_driver_sql("PRAGMA wal_autocheckpoint").scalar() == BACKSTOP_AUTOCHECKPOINT_PAGES
    factories = session_factories(engine)
    with factories.write() as session, session.begin():
        session.execute(text("CREATE TABLE t (v INTEGER)"))
    for v in range(3):
        with factories.write() as session, session.begin():
            session.execute(text("INSERT INTO t VALUES (:v)"), {"v": v})

    def rows_in_the_file_alone() -> list[int] | None:
        copy = tmp_path / "copy.db"
        shutil.copyfile(path, copy)  # without its -wal: only what was checkpointed
        try:
            with sqlite3.connect(copy) as c:
                return [v for (v,) in c.execute("SELECT v FROM t ORDER BY v")]
        except sqlite3.Error:  # not checkpointed yet (no table t), or copied mid-checkpoint
            return None
        finally:
            copy.unlink()

    deadline = time.monotonic() + 20
    while rows_in_the_file_alone() != [0, 1, 2]:
        assert time.monotonic() < deadline, "the log was not checkpointed"
        time.sleep(0.02)
    engine.dispose()
