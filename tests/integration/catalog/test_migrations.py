"""The hand-written migration matches the ORM models, on both backends."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from catalog_service.adapters.orm import Base
from catalog_service.entrypoints.app import DEFINITION
from credit_common.db.engine import DatabaseSettings, create_db_engine
from credit_common.db.migrations import upgrade


def test_migration_matches_models(database_url_factory):
    engine = create_db_engine(DatabaseSettings(url=database_url_factory("catalog_migrations")))
    try:
        upgrade(DEFINITION.migrations, engine)
        with engine.connect() as connection:
            context = MigrationContext.configure(connection, opts={"compare_type": True})
            diff = compare_metadata(context, Base.metadata)
        assert diff == []
    finally:
        engine.dispose()
