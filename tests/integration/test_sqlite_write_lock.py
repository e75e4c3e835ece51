"""SQLite: the writers of one process wait for each other in Python, not in SQLite's busy handler
(which sleeps up to 100 ms at a time and retries), and the wait ends when the writer before them
has given its connection back, whether it committed or failed."""

from __future__ import annotations

import threading
import time

import pytest
from sqlalchemy import event, text

from credit_common.db.engine import DatabaseSettings, create_db_engine, session_factories


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
