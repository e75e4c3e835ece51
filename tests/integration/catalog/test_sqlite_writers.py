"""The catalog's SQLite writers queue on a lock of the process instead of polling SQLite's."""

from __future__ import annotations

import threading

import pytest
from sqlalchemy import text
from sqlalchemy.exc import OperationalError

from catalog_service.adapters.sqlite_writers import serialize_sqlite_writers
from credit_common.db.engine import DatabaseSettings, create_db_engine, session_factories


@pytest.fixture
def engine(tmp_path):
    # SQLite's own busy timeout is short: a writer that reached SQLite's lock while another
    # holds it would fail within 50 ms.
    engine = create_db_engine(DatabaseSettings(url=f"sqlite:///{tmp_path / 'w.db'}", sqlite_busy_timeout_ms=50))
    with engine.begin() as connection:
        connection.execute(text("CREATE TABLE t (n INTEGER)"))
    yield engine
    engine.dispose()


def hold_write_transaction(engine, entered: threading.Event, release: threading.Event, fail: bool = False) -> None:
    with session_factories(engine).write() as session, session.begin():
        session.execute(text("INSERT INTO t VALUES (1)"))
        entered.set()
        release.wait(10)
        if fail:
            raise RuntimeError("rolled back")


def write_once(engine) -> None:
    with session_factories(engine).write() as session, session.begin():
        session.execute(text("INSERT INTO t VALUES (2)"))


@pytest.mark.parametrize("fail", [False, True], ids=["commit", "rollback"])
def test_a_second_writer_waits_for_the_first_instead_of_failing(engine, fail):
    serialize_sqlite_writers(engine, timeout_s=10)
    entered, release = threading.Event(), threading.Event()
    errors: list[BaseException] = []

    def first() -> None:
        try:
            hold_write_transaction(engine, entered, release, fail)
        except RuntimeError:
            pass
        except BaseException as error:  # pragma: no cover - reported below
            errors.append(error)

    holder = threading.Thread(target=first)
    holder.start()
    assert entered.wait(10)
    second_done = threading.Event()

    def second() -> None:
        try:
            write_once(engine)
        except BaseException as error:  # pragma: no cover - reported below
            errors.append(error)
        second_done.set()

    waiter = threading.Thread(target=second)
    waiter.start()
    # Far longer than SQLite's 50 ms busy timeout: the second writer is still waiting, not failed.
    assert not second_done.wait(0.5)
    release.set()
    holder.join(10)
    waiter.join(10)
    assert errors == []
    with engine.connect() as connection:
        rows = sorted(n for (n,) in connection.execute(text("SELECT n FROM t")))
    assert rows == ([2] if fail else [1, 2])
    write_once(engine)  # the lock was released after the commit or the rollback


def test_without_the_lock_sqlite_itself_refuses_and_with_it_the_wait_is_bounded(engine):
    entered, release = threading.Event(), threading.Event()
    holder = threading.Thread(target=hold_write_transaction, args=(engine, entered, release))
    holder.start()
    assert entered.wait(10)
    with pytest.raises(OperationalError, match="database is locked"):
        write_once(engine)  # what the lock prevents: SQLite's busy handler gave up
    release.set()
    holder.join(10)

    serialize_sqlite_writers(engine, timeout_s=0.2)
    entered, release = threading.Event(), threading.Event()
    holder = threading.Thread(target=hold_write_transaction, args=(engine, entered, release))
    holder.start()
    assert entered.wait(10)
    with pytest.raises(OperationalError, match="database is locked"):
        write_once(engine)  # the process's lock gives up like SQLite would, after its timeout
    release.set()
    holder.join(10)
    write_once(engine)


def test_readers_are_not_queued(engine):
    serialize_sqlite_writers(engine, timeout_s=10)
    entered, release = threading.Event(), threading.Event()
    holder = threading.Thread(target=hold_write_transaction, args=(engine, entered, release))
    holder.start()
    assert entered.wait(10)
    with session_factories(engine).read() as session:
        assert session.execute(text("SELECT count(*) FROM t")).scalar_one() == 0
    release.set()
    holder.join(10)
