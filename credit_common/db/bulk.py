"""Inserts in bulk that skip what a concurrent transaction already wrote: writes that must happen
at most once (a period's grant, a grant's GRANT and closing entries, an event), so that two
processes racing on the same work cannot both succeed and neither crashes. The renewal storm's
catch-up runs on it (docs/performance.md): keep it as fast when changing it. On PostgreSQL they are
`unnest_insert`s, with `array_parameter`s, which the debits' writes (grant_service/adapters/debits.py)
use as well."""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import BigInteger, Boolean, Integer, String, Table, select
from sqlalchemy.orm import Session
from sqlalchemy.types import TypeEngine

from credit_common.db.chunks import chunks
from credit_common.db.types import ExactDecimal, UtcDateTime


def insert_ignoring_conflicts(session: Session, model: type, rows: Sequence[dict[str, Any]], key: str) -> set[Any]:
    """Insert `rows` (in bulk, all with the same keys) into the table of the mapped class `model`,
    skipping any that violates a unique constraint; returns the values of column `key` of the rows
    actually inserted. `key` must be a fresh id of each row (an id made for this insert): a row found
    with it was inserted here."""
    if not rows:
        return set()
    columns = {name: [row[name] for row in rows] for name in rows[0]}
    return insert_columns_ignoring_conflicts(session, model, columns, key)


def insert_columns_ignoring_conflicts(
    session: Session, model: type, columns: Mapping[str, Sequence[Any]], key: str
) -> set[Any]:
    """`insert_ignoring_conflicts` of rows given a column at a time (column name -> its value in each
    row, every column as long): what both drivers bind, and what a caller that builds its rows a
    field at a time (the event log's batches) passes without making a mapping per row.

    The database counts the rows inserted; only when a conflict skipped some does a query find
    which (RETURNING every key cost the storm's catch-up a row fetch per grant)."""
    keys = columns[key]
    if not keys:
        return set()
    table: Table = model.__table__  # type: ignore[attr-defined]
    insert = _insert_unnest if session.get_bind().dialect.name == "postgresql" else _insert_executemany
    count = insert(session, table, columns)
    if count == len(keys):
        return set(keys)
    inserted: set[Any] = set()
    column = table.c[key]
    for chunk in chunks(keys):
        inserted.update(session.execute(select(column).where(column.in_(chunk))).scalars())
    return inserted


def _insert_executemany(session: Session, table: Table, given: Mapping[str, Sequence[Any]]) -> int:
    """SQLite: one prepared INSERT ... ON CONFLICT DO NOTHING run by the driver's executemany over
    plain tuples; returns the rows inserted. SQLAlchemy's multi-row INSERT ... RETURNING built and
    type-processed every value of every row in Python (docs/performance.md); here each column's
    distinct values go through its bind processor once (a storm's rows share their times and
    amounts)."""
    dialect = session.get_bind().dialect
    columns = [c for c in table.columns if c.key in given]
    values = []
    for column in columns:
        process = column.type.dialect_impl(dialect).bind_processor(dialect)
        raw = given[column.key]
        if process is None:
            values.append(raw)
            continue
        done: dict[tuple[type, Any], Any] = {}  # by type too: 1 == Decimal(1) == True
        values.append([done[k] if (k := (v.__class__, v)) in done else done.setdefault(k, process(v)) for v in raw])
    names = ", ".join(f'"{c.name}"' for c in columns)
    marks = ", ".join("?" for _ in columns)
    statement = f'INSERT INTO "{table.name}" ({names}) VALUES ({marks}) ON CONFLICT DO NOTHING'
    return session.connection().exec_driver_sql(statement, list(zip(*values, strict=True))).rowcount


# PostgreSQL's name of each column type the unnest insert binds, most specific first (a BigInteger
# is an Integer). The exact types of credit_common.db.types are bound as what they store.
_PG_TYPES: tuple[tuple[type[TypeEngine], str], ...] = (
    (ExactDecimal, "numeric"),
    (UtcDateTime, "timestamptz"),
    (Boolean, "boolean"),
    (BigInteger, "bigint"),
    (Integer, "bigint"),
    (String, "text"),  # Text and Unicode included
)


def pg_type(type_: TypeEngine) -> str:
    """The PostgreSQL type a value of a column of type `type_` is cast to in the unnest insert."""
    for kind, name in _PG_TYPES:
        if isinstance(type_, kind):
            return name
    raise TypeError(f"insert_ignoring_conflicts cannot bind a column of type {type_!r}")


def _insert_unnest(session: Session, table: Table, given: Mapping[str, Sequence[Any]]) -> int:
    """PostgreSQL: `unnest_insert` ... ON CONFLICT DO NOTHING per 5,000 rows; returns the rows
    inserted. A multi-row VALUES of 18 columns x 1,000 rows made psycopg re-parse 18,000 placeholders
    in Python for every batch; here the query text is the same from batch to batch."""
    keys = [c.key for c in table.columns if c.key in given]
    total = len(given[keys[0]])
    count = 0
    for start in range(0, total, 5000):
        chunk = {key: list(given[key][start : start + 5000]) for key in keys}
        statement, params = unnest_insert(table, chunk, skip_conflicts=True)
        count += session.connection().exec_driver_sql(statement, params).rowcount
    return count


def unnest_insert(
    table: Table, columns: Mapping[str, list[Any]], *, skip_conflicts: bool = False
) -> tuple[str, dict[str, Any]]:
    """PostgreSQL: the statement and parameters (for the driver) that insert rows given a column at a
    time (column key -> its value in each row, every column as long) as one INSERT ... SELECT FROM
    unnest(an array per column): one statement for all the rows instead of one per row, each its own
    trip through the server's executor. A column whose value is the same in every row (a batch's
    instants, amounts, feature) is bound once, not as an array (`array_parameter`: psycopg dumps a
    list element by element in Python). The first column is always an array: unnest gives the rows."""
    keys = tuple(columns)
    same = tuple(i > 0 and (values := columns[key]).count(values[0]) == len(values) for i, key in enumerate(keys))
    statement, types = _unnest_statement(table, keys, same, skip_conflicts)
    params = {
        f"p{i}": columns[key][0] if same[i] else array_parameter(columns[key], types[i]) for i, key in enumerate(keys)
    }
    return statement, params


@functools.cache
def _unnest_statement(
    table: Table, keys: tuple[str, ...], same: tuple[bool, ...], skip_conflicts: bool
) -> tuple[str, tuple[str, ...]]:
    columns = [table.c[key] for key in keys]
    types = tuple(pg_type(column.type) for column in columns)
    selected = [f"CAST(%(p{i})s AS {types[i]})" if same[i] else f"u.a{i}" for i in range(len(keys))]
    arrays = [(f"a{i}", array_placeholder(f"p{i}", types[i])) for i in range(len(keys)) if not same[i]]
    names = ", ".join(f'"{column.name}"' for column in columns)
    statement = (
        f'INSERT INTO "{table.name}" ({names}) SELECT {", ".join(selected)} '
        f"FROM unnest({', '.join(a for _, a in arrays)}) AS u({', '.join(alias for alias, _ in arrays)})"
    )
    return statement + (" ON CONFLICT DO NOTHING" if skip_conflicts else ""), types


# An array parameter of a statement for the driver (PostgreSQL). psycopg dumps a list element by
# element in Python; text and numeric arrays (nearly every array of a write) go instead as one string
# in PostgreSQL's array syntax, made by one join, which PostgreSQL parses for a little more than the
# binary (docs/performance.md, "Array parameters as text"). Arrays of other types (instants, integers,
# booleans) stay lists, sent in binary.
_AS_TEXT = frozenset({"text", "numeric"})


def array_placeholder(name: str, type_name: str) -> str:
    """The placeholder of array parameter `name` of `type_name` values, cast to its array type."""
    return f"CAST(%({name}){'s' if type_name in _AS_TEXT else 'b'} AS {type_name}[])"


def array_parameter(values: Sequence[Any], type_name: str) -> Any:
    """What to bind to `array_placeholder(name, type_name)` for `values` (None: NULL)."""
    if type_name == "text":
        return text_array(values)
    if type_name == "numeric":
        if None in values:
            return "{" + ",".join("NULL" if value is None else str(value) for value in values) + "}"
        return "{" + ",".join(map(str, values)) + "}"  # Decimal's str is exact and numeric's input
    return list(values)


def text_array(values: Sequence[str | None]) -> str:
    """`values` in PostgreSQL's array syntax for text[]: each element double-quoted, so that commas,
    braces, spaces and the word NULL are text; a double quote or a backslash in one is escaped."""
    if not values:
        return "{}"
    if None not in values:
        joined = '","'.join(values)  # type: ignore[arg-type]
        # Quotes only where the join put them: no element has one (or a backslash) to escape.
        if "\\" not in joined and joined.count('"') == 2 * (len(values) - 1):
            return '{"' + joined + '"}'
    return "{" + ",".join("NULL" if value is None else _quoted(value) for value in values) + "}"


def _quoted(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
