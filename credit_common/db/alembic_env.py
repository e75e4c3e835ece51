"""The body of each service's Alembic env.py: online migrations over the
connection handed in by credit_common.db.migrations, or over the configured URL
when run by the alembic command line."""

from __future__ import annotations

from alembic import context
from sqlalchemy import MetaData

from credit_common.db.engine import DatabaseSettings, create_db_engine


def run_migrations(target_metadata: MetaData) -> None:
    config = context.config
    connection = config.attributes.get("connection")
    if connection is not None:
        _run(connection, target_metadata)
        return
    engine = create_db_engine(DatabaseSettings(url=config.get_main_option("sqlalchemy.url")))
    with engine.begin() as connection:
        _run(connection, target_metadata)
    engine.dispose()


def _run(connection, target_metadata: MetaData) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()
