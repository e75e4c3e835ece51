"""SQLite files are private to the service's user: the database, its -wal and -shm and the writer
lock file beside them are created 0600, a data directory the service creates 0700, whatever the
umask (here none at all)."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator

import pytest
from sqlalchemy import text

from credit_common.db.engine import DatabaseSettings, create_db_engine, session_factories
from credit_common.db.sqlite import gate_path


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.fixture
def no_umask() -> Iterator[None]:
    previous = os.umask(0)
    try:
        yield
    finally:
        os.umask(previous)


def test_database_wal_shm_and_lock_file_are_0600_in_a_0700_directory(tmp_path, no_umask):
    database = tmp_path / "data" / "nested" / "grant.db"
    engine = create_db_engine(DatabaseSettings(url=f"sqlite:///{database}"))
    try:
        with session_factories(engine).write() as session, session.begin():  # takes the writer lock
            session.execute(text("CREATE TABLE t (v INTEGER)"))
            session.execute(text("INSERT INTO t VALUES (1)"))
        files = [database, f"{database}-wal", f"{database}-shm", gate_path(str(database))]
        assert all(os.path.exists(f) for f in files)
        assert {str(f): mode(f) for f in files} == {str(f): 0o600 for f in files}
        assert mode(database.parent) == 0o700
        assert mode(database.parent.parent) == 0o700
    finally:
        engine.dispose()


def test_an_existing_database_file_keeps_its_mode(tmp_path, no_umask):
    database = tmp_path / "catalog.db"
    database.touch(mode=0o640)
    engine = create_db_engine(DatabaseSettings(url=f"sqlite:///{database}"))
    try:
        with engine.begin() as connection:
            connection.execute(text("CREATE TABLE t (v INTEGER)"))
        assert mode(database) == 0o640
    finally:
        engine.dispose()
