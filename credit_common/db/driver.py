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

import contextlib
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
        cursor = connection.connection.dbapi_connection.cursor()
        try:
            with _as_sqlalchemy_errors(connection, sql, args, cursor):
                yield cursor
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
        return rows_of(connection, (self, params))[0]

    def _query(self, dialect: Dialect, params: Mapping[str, Any]) -> tuple[str, Any]:
        compiled = self._compiled.get((dialect.name, ())) or self._compile(dialect)
        return compiled.sql, self._args(compiled, params)

    def _typed(self, dialect: Dialect, cursor: Any) -> list[tuple]:
        raw = cursor.fetchall()
        processors = self._results.get(dialect.name) or self._processors(dialect, cursor.description)
        make = self.Row._make
        return [
            make([value if process is None else process(value) for value, process in zip(row, processors, strict=True)])
            for row in raw
        ]


def rows_of(connection: Connection, *queries: tuple[DriverStatement, Mapping[str, Any]]) -> list[list[tuple]]:
    """The rows of each (SELECT statement, params), run in that order. On PostgreSQL they are sent
    together (psycopg's pipeline mode): one round trip for all. Each still runs after the previous one
    has finished, so a statement sees the rows its predecessors locked (FOR UPDATE) as they are once
    locked."""
    dialect = connection.dialect
    sent = [(statement, *statement._query(dialect, params)) for statement, params in queries]
    dbapi_connection = connection.connection.dbapi_connection
    cursors = [dbapi_connection.cursor() for _ in sent]
    together = (
        dbapi_connection.pipeline() if dialect.name == "postgresql" and len(sent) > 1 else contextlib.nullcontext()
    )
    try:
        with _as_sqlalchemy_errors(connection, sent[0][1], sent[0][2], cursors[0]):
            with together:
                for cursor, (_, sql, args) in zip(cursors, sent, strict=True):
                    cursor.execute(sql, args)
            return [statement._typed(dialect, cursor) for cursor, (statement, _, _) in zip(cursors, sent, strict=True)]
    finally:
        for cursor in cursors:
            cursor.close()


@contextmanager
def _as_sqlalchemy_errors(connection: Connection, sql: str, args: Any, cursor: Any = None) -> Iterator[None]:
    """The driver's errors raised in the block, as SQLAlchemy raises them (a lost connection invalidated)."""
    dialect = connection.dialect
    try:
        yield
    except dialect.loaded_dbapi.Error as error:
        dbapi_connection = connection.connection.dbapi_connection
        invalidated = dialect.is_disconnect(error, dbapi_connection, cursor)
        if invalidated:
            connection.invalidate(error)
        raise DBAPIError.instance(
            sql, args, error, dialect.loaded_dbapi.Error, connection_invalidated=invalidated, dialect=dialect
        ) from error


@contextmanager
def pipelined(connection: Connection) -> Iterator[None]:
    """On PostgreSQL, the `DriverStatement.execute`s of the block are sent without waiting for each
    result (psycopg's pipeline mode) and their results read at its end: one round trip for all of
    them. An error of any of them is raised at the end of the block (the later ones are not run).
    Only `execute`s: nothing in the block may read a result. Elsewhere a plain block."""
    if connection.dialect.name != "postgresql":
        yield
        return
    with _as_sqlalchemy_errors(connection, "(pipeline)", None), connection.connection.dbapi_connection.pipeline():
        yield
