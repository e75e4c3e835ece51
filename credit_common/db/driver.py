"""A prebuilt Core SELECT run straight on the database driver, for the hottest reads.

SQLAlchemy's execution path (execution context, parameter and result processing, result
objects) costs more than the indexed statement it runs: for GetBalance under 32 callers it
was most of the gap to a no-op RPC. `DriverStatement` compiles its statement once per
dialect with SQLAlchemy, then runs the SQL on the DBAPI cursor of a SQLAlchemy `Connection`,
converting parameters and results with the same column types (so an ExactDecimal is still
a Decimal, a UtcDateTime an aware UTC datetime) and raising the same `DBAPIError`s (a lost
connection is invalidated and reported as such, as SQLAlchemy itself does)."""

from __future__ import annotations

from collections import namedtuple
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Select
from sqlalchemy.engine import Dialect
from sqlalchemy.exc import DBAPIError


@dataclass(frozen=True)
class _Compiled:
    sql: str
    positions: tuple[str, ...] | None  # the order of the parameters, for a positional paramstyle
    binds: dict[str, Callable[[Any], Any] | None]


class DriverStatement:
    def __init__(self, statement: Select) -> None:
        self._statement = statement
        columns = list(statement.selected_columns)
        self._types = [column.type for column in columns]
        self.Row = namedtuple("Row", [column.key for column in columns])
        self._compiled: dict[str, _Compiled] = {}
        self._results: dict[str, list[Callable[[Any], Any] | None]] = {}

    def _compile(self, dialect: Dialect) -> _Compiled:
        compiled = self._statement.compile(dialect=dialect)
        binds = {name: bind.type.dialect_impl(dialect).bind_processor(dialect) for name, bind in compiled.binds.items()}
        positions = tuple(compiled.positiontup) if compiled.positional else None
        entry = _Compiled(compiled.string, positions, binds)
        self._compiled[dialect.name] = entry
        return entry

    def _processors(self, dialect: Dialect, description) -> list[Callable[[Any], Any] | None]:
        processors = [
            type_.dialect_impl(dialect).result_processor(dialect, column[1])
            for type_, column in zip(self._types, description, strict=True)
        ]
        self._results[dialect.name] = processors
        return processors

    def rows(self, connection: Connection, params: Mapping[str, Any]) -> list[tuple]:
        """The rows of the statement with `params`, as named tuples (`self.Row`)."""
        dialect = connection.dialect
        compiled = self._compiled.get(dialect.name) or self._compile(dialect)
        values = {}
        for name, process in compiled.binds.items():
            values[name] = process(params[name]) if process is not None else params[name]
        args: Any = tuple(values[name] for name in compiled.positions) if compiled.positions is not None else values
        dbapi_connection = connection.connection.dbapi_connection
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute(compiled.sql, args)
            raw = cursor.fetchall()
            processors = self._results.get(dialect.name) or self._processors(dialect, cursor.description)
        except dialect.loaded_dbapi.Error as error:
            invalidated = dialect.is_disconnect(error, dbapi_connection, cursor)
            if invalidated:
                connection.invalidate(error)
            raise DBAPIError.instance(
                compiled.sql,
                args,
                error,
                dialect.loaded_dbapi.Error,
                connection_invalidated=invalidated,
                dialect=dialect,
            ) from error
        finally:
            cursor.close()
        make = self.Row._make
        return [
            make([value if process is None else process(value) for value, process in zip(row, processors, strict=True)])
            for row in raw
        ]
