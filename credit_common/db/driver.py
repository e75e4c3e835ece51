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
        # Per dialect: the (position, result processor) of the columns that have one.
        self._results: dict[str, list[tuple[int, Callable[[Any], Any]]]] = {}

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

    @staticmethod
    def _column_args(compiled: _Compiled, columns: Mapping[str, list[Any]]) -> list[Any]:
        """`_args` of each row, given column by column: each distinct value of a column goes through
        its bind processor once (a batch's rows share their amounts, times and keys)."""
        names = compiled.positions if compiled.positions is not None else tuple(compiled.binds)
        converted = []
        for name in names:
            process = compiled.binds[name]
            values = columns[name]
            if process is not None:
                done: dict[tuple[type, Any], Any] = {}  # by type too: 1 == Decimal(1) == True
                values = [
                    done[k] if (k := (v.__class__, v)) in done else done.setdefault(k, process(v)) for v in values
                ]
            converted.append(values)
        if compiled.positions is not None:
            return list(zip(*converted, strict=True))
        return [dict(zip(names, values, strict=True)) for values in zip(*converted, strict=True)]

    def execute_columns(self, connection: Connection, columns: Mapping[str, list[Any]]) -> None:
        """As `execute`, the rows given as one list of values per column (all of the same length)."""
        if not columns or not next(iter(columns.values())):
            return
        dialect = connection.dialect
        keys = tuple(columns)
        compiled = self._compiled.get((dialect.name, keys)) or self._compile(dialect, keys)
        self._send(connection, compiled, self._column_args(compiled, columns))

    def execute(self, connection: Connection, rows: list[Mapping[str, Any]]) -> None:
        """Run the statement once per row of parameters (all rows with the same keys)."""
        if not rows:
            return
        dialect = connection.dialect
        keys = tuple(rows[0])
        compiled = self._compiled.get((dialect.name, keys)) or self._compile(dialect, keys)
        if len(rows) == 1:
            args = [self._args(compiled, rows[0])]
        else:
            args = self._column_args(compiled, {key: [row[key] for row in rows] for key in keys})
        self._send(connection, compiled, args)

    def _send(self, connection: Connection, compiled: _Compiled, args: list[Any]) -> None:
        deferred = connection.info.get(_DEFERRED)
        if deferred is not None:
            deferred.append((compiled.sql, args))
            return
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

    def _processors(self, dialect: Dialect, description) -> list[tuple[int, Callable[[Any], Any]]]:
        processors = [
            type_.dialect_impl(dialect).result_processor(dialect, column[1])
            for type_, column in zip(self._types, description, strict=True)
        ]
        converted = [(i, process) for i, process in enumerate(processors) if process is not None]
        self._results[dialect.name] = converted
        return converted

    def rows(self, connection: Connection, params: Mapping[str, Any]) -> list[tuple]:
        """The rows of the statement with `params`, as named tuples (`self.Row`)."""
        return rows_of(connection, (self, params))[0]

    def _query(self, dialect: Dialect, params: Mapping[str, Any]) -> tuple[str, Any]:
        compiled = self._compiled.get((dialect.name, ())) or self._compile(dialect)
        return compiled.sql, self._args(compiled, params)

    def _typed(self, dialect: Dialect, cursor: Any) -> list[tuple]:
        raw = cursor.fetchall()
        converted = self._results.get(dialect.name)
        if converted is None:
            converted = self._processors(dialect, cursor.description)
        make = self.Row._make
        if not converted:
            return [make(row) for row in raw]
        rows = []
        for row in raw:  # only the columns that have a processor are visited (on PostgreSQL, a few)
            values = list(row)
            for i, process in converted:
                values[i] = process(values[i])
            rows.append(make(values))
        return rows


def rows_of(connection: Connection, *queries: tuple[DriverStatement, Mapping[str, Any]]) -> list[list[tuple]]:
    """The rows of each (SELECT statement, params), run in that order, after the writes deferred on
    `connection` (see `deferred_writes`). On PostgreSQL they are all sent together (psycopg's pipeline
    mode): one round trip. Each statement still runs after the previous one has finished, so it sees
    what they wrote, and the rows they locked (FOR UPDATE) as they are once locked."""
    dialect = connection.dialect
    queue = connection.info.get(_QUEUE)
    if queue is not None:
        queue()
    writes = connection.info.get(_DEFERRED) or []
    sent = [(statement, *statement._query(dialect, params)) for statement, params in queries]
    if not sent and not writes:
        return []
    dbapi_connection = connection.connection.dbapi_connection
    # One cursor per SELECT, and one for all the writes (if any).
    cursors = [dbapi_connection.cursor() for _ in range(len(sent) + bool(writes))]
    first_sql, first_args = writes[0] if writes else sent[0][1:]
    together = (
        dbapi_connection.pipeline()
        if dialect.name == "postgresql" and len(sent) + len(writes) > 1
        else contextlib.nullcontext()
    )
    try:
        with _as_sqlalchemy_errors(connection, first_sql, first_args, cursors[0]):
            with together:
                for sql, args in _coalesced(writes):
                    if len(args) == 1:
                        cursors[-1].execute(sql, args[0])
                    else:
                        cursors[-1].executemany(sql, args)
                writes.clear()
                for each, (_, sql, args) in zip(cursors, sent, strict=False):
                    each.execute(sql, args)
            return [statement._typed(dialect, each) for each, (statement, _, _) in zip(cursors, sent, strict=False)]
    finally:
        for each in cursors:
            each.close()


_DEFERRED = "credit_grants.deferred_writes"
_QUEUE = "credit_grants.deferred_writes.queue"


def _coalesced(writes: list[tuple[str, list]]) -> list[tuple[str, list]]:
    """The deferred writes, consecutive runs of one statement as one (its rows in order): a batch's
    debits of one shape are one `executemany`, in the same order as one by one."""
    merged: list[tuple[str, list]] = []
    for sql, args in writes:
        if merged and merged[-1][0] == sql:
            merged[-1][1].extend(args)
        else:
            merged.append((sql, list(args)))
    return merged


@contextmanager
def deferred_writes(connection: Connection, queue: Callable[[], None] | None = None) -> Iterator[None]:
    """The `DriverStatement.execute`s of the block on `connection` are not sent at once: they go with
    the next statement run on it (a `rows_of`, or any statement SQLAlchemy runs: see
    `send_deferred_writes`), or at the end of the block; on PostgreSQL all in one round trip,
    consecutive runs of one statement as one `executemany`. An error of one of them is raised there.

    `queue`: called first whenever they are sent, to `execute` (defer) writes its caller has kept
    back until then, e.g. a batch's rows written as sets (a grant's running total updated once for
    all its debits)."""
    connection.info[_DEFERRED] = []
    if queue is not None:
        connection.info[_QUEUE] = queue
    try:
        yield
        send_deferred_writes(connection)
    finally:
        connection.info.pop(_DEFERRED, None)
        connection.info.pop(_QUEUE, None)


def execute_sql(connection: Connection, sql: str, params: Any) -> None:
    """Run one write given as the driver's SQL and parameters (no type processing: the driver adapts
    them), deferred as `DriverStatement.execute` is within `deferred_writes`."""
    deferred = connection.info.get(_DEFERRED)
    if deferred is not None:
        deferred.append((sql, [params]))
        return
    cursor = connection.connection.dbapi_connection.cursor()
    try:
        with _as_sqlalchemy_errors(connection, sql, params, cursor):
            cursor.execute(sql, params)
    finally:
        cursor.close()


def send_deferred_writes(connection: Connection) -> None:
    """Send the writes deferred on `connection` now (the engine runs this before each statement of its
    own, so that a statement never misses a write made before it)."""
    if connection.info.get(_DEFERRED) or _QUEUE in connection.info:
        rows_of(connection)


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
