"""Migrations build the schema on both backends; models and migrations agree;
`migrate` upgrades; a server refuses a schema that is behind and says what to run."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import create_engine

from catalog_service.entrypoints import app as catalog_app
from credit_common.db.engine import DatabaseSettings, create_db_engine
from credit_common.db.migrations import upgrade
from grant_service.entrypoints import app as grant_app

APPS = [pytest.param(catalog_app, id="catalog"), pytest.param(grant_app, id="grant")]


def _metadata(app):
    module = __import__(f"{app.DEFINITION.name}.adapters.orm", fromlist=["Base"])
    return module.Base.metadata


@pytest.mark.parametrize("app", APPS)
def test_migrations_match_models(app, database_url_factory):
    engine = create_db_engine(DatabaseSettings(url=database_url_factory("schema")))
    try:
        upgrade(app.DEFINITION.migrations, engine)
        with engine.connect() as connection:
            context = MigrationContext.configure(connection, opts={"compare_type": True})
            diff = compare_metadata(context, _metadata(app))
        assert diff == [], f"models and migrations disagree; write a migration: {diff}"
    finally:
        engine.dispose()


def _run(module: str, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    return subprocess.run(
        [sys.executable, "-m", module, *args], capture_output=True, text=True, timeout=timeout, env=env
    )


@pytest.mark.parametrize("app", APPS)
def test_server_refuses_schema_behind_then_migrate_fixes_it(app, database_url_factory):
    url = database_url_factory("behind")
    name = app.DEFINITION.name
    refused = _run(name, "serve", "--listen", "127.0.0.1:0", "--database-url", url)
    assert refused.returncode == 2
    assert f"python -m {name} migrate" in refused.stderr

    migrated = _run(name, "migrate", "--database-url", url)
    assert migrated.returncode == 0, migrated.stderr
    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            current = MigrationContext.configure(connection).get_current_heads()
        assert current, "migrate left no alembic version"
    finally:
        engine.dispose()


def test_grants_leave_room_for_the_updates_of_debits_on_postgresql(database_url_factory, backend):
    """Migration 0009: a debit's update of a grant's running total stays on its page (a heap-only
    tuple, no index entries) because the table's pages are filled to 70%."""
    if backend != "postgresql":
        pytest.skip("SQLite updates rows in place")
    engine = create_db_engine(DatabaseSettings(url=database_url_factory("fill")))
    try:
        upgrade(grant_app.DEFINITION.migrations, engine)
        with engine.connect() as connection:
            options = connection.exec_driver_sql("SELECT reloptions FROM pg_class WHERE relname = 'grants'").scalar()
        assert "fillfactor=70" in options
    finally:
        engine.dispose()
