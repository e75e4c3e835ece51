"""A prebuilt Core statement run straight on the database driver, for the hottest paths
(GetBalance's read, a debit's statements).

SQLAlchemy's execution path (execution context, parameter and result processing, result
objects) costs more than the indexed statement it runs: for GetBalance under 32 callers it
was most of the gap to a no-op RPC. `DriverStatement` compiles its statement once per
dialect with SQLAlchemy, then runs the SQL on the DBAPI cursor of a SQLAlchemy `Connection`,
converting parameters and results with the same column types (so an ExactDecimal is still
a Decimal, a UtcDateTime an aware UTC datetime) and raising the same `DBAPIError`s (a lost
connection is invalidated and reported as such, as SQLAlchemy itself does)."""

from __future__ import annotations

from collections import namedtuple
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Executable
from sqlalchemy.engine import Dialect
from sqlalchemy.exc import DBAPIError


@dataclass(frozen=True)
class _Compiled:
    sql: str
    positions: tuple[str, ...] | None  # the order of the parameters, for a positional paramstyle
    binds: dict[str, Callable[[Any], Any] | None]


class DriverStatement:
    """A SELECT (`rows`), or an INSERT/UPDATE (`execute`; an INSERT takes every column it sets, in
    each row: no Python-side column default is applied here)."""

    def __init__(self, statement: Executable) -> None:
        self._statement = statement
        columns = list(getattr(statement, "selected_columns", ()))
        self._types = [column.type for column in columns]
        self.Row = namedtuple("Row", [str(column.key) for column in columns], rename=True)
        self._compiled: dict[tuple, _Compiled] = {}
        self._results: dict[str, list[Callable[[Any], Any] | None]] = {}

    def _compile(self, dialect: Dialect, keys: tuple[str, ...] = ()) -> _Compiled:
        compiled = self._statement.compile(dialect=dialect, column_keys=list(keys) or None)
        binds = {name: bind.type.dialect_impl(dialect).bind_processor(dialect) for name, bind in compiled.binds.items()}
        positions = tuple(compiled.positiontup) if compiled.positional else None
        entry = _Compiled(compiled.string, positions, binds)
        self._compiled[(dialect.name, keys)] = entry
        return entry

    @staticmethod
    def _args(compiled: _Compiled, params: Mapping[str, Any]) -> Any:
        values = {}
        for name, process in compiled.binds.items():
            values[name] = process(params[name]) if process is not None else params[name]
        return tuple(values[name] for name in compiled.positions) if compiled.positions is not None else values

    def execute(self, connection: Connection, rows: list[Mapping[str, Any]]) -> None:
        """Run the statement once per row of parameters (all rows with the same keys)."""
        if not rows:
            return
        dialect = connection.dialect
        keys = tuple(rows[0])
        compiled = self._compiled.get((dialect.name, keys)) or self._compile(dialect, keys)
        args = [self._args(compiled, row) for row in rows]
        with self._driver_errors(connection, compiled.sql, args) as cursor:
            if len(args) == 1:
                cursor.execute(compiled.sql, args[0])
            else:
                cursor.executemany(compiled.sql, args)

    @contextmanager
    def _driver_errors(self, connection: Connection, sql: str, args: Any) -> Iterator[Any]:
        """A cursor of `connection`'s driver connection; the driver's errors as SQLAlchemy raises them."""
        dialect = connection.dialect
        dbapi_connection = connection.connection.dbapi_connection
        cursor = dbapi_connection.cursor()
        try:
            yield cursor
        except dialect.loaded_dbapi.Error as error:
            invalidated = dialect.is_disconnect(error, dbapi_connection, cursor)
            if invalidated:
                connection.invalidate(error)
            raise DBAPIError.instance(
                sql, args, error, dialect.loaded_dbapi.Error, connection_invalidated=invalidated, dialect=dialect
            ) from error
        finally:
            cursor.close()

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
        compiled = self._compiled.get((dialect.name, ())) or self._compile(dialect)
        args = self._args(compiled, params)
        with self._driver_errors(connection, compiled.sql, args) as cursor:
            cursor.execute(compiled.sql, args)
            raw = cursor.fetchall()
            processors = self._results.get(dialect.name) or self._processors(dialect, cursor.description)
        make = self.Row._make
        return [
            make([value if process is None else process(value) for value, process in zip(row, processors, strict=True)])
            for row in raw
        ]
