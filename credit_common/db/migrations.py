"""Alembic, driven from code: each service keeps its migrations in its own
package and upgrades its own database. Servers refuse to start on a schema
that is behind."""

from __future__ import annotations

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine


class SchemaNotCurrent(RuntimeError):
    pass


def alembic_config(script_location: str, database_url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", script_location)
    config.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))
    return config


def upgrade(script_location: str, engine: Engine) -> None:
    """Upgrade the database behind `engine` to the newest revision."""
    config = alembic_config(script_location, engine.url.render_as_string(hide_password=False))
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, "head")


def check_current(script_location: str, engine: Engine, migrate_command: str) -> None:
    """Raise SchemaNotCurrent, naming the command to run, unless the schema is at head."""
    script = ScriptDirectory.from_config(alembic_config(script_location, str(engine.url)))
    heads = set(script.get_heads())
    with engine.connect() as connection:
        current = set(MigrationContext.configure(connection).get_current_heads())
    if current != heads:
        have = ", ".join(sorted(current)) or "empty"
        raise SchemaNotCurrent(
            f"the database schema is at {have} but this version needs {', '.join(sorted(heads))}; "
            f"run `{migrate_command}` first"
        )
