"""Inserts in bulk that skip what a concurrent transaction already wrote: writes that must happen
at most once (a period's grant, a grant's GRANT and closing entries, an event), so that two
processes racing on the same work cannot both succeed and neither crashes. The renewal storm's
catch-up runs on it (docs/performance.md): keep it as fast when changing it."""

from __future__ import annotations

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
    """PostgreSQL: one INSERT ... SELECT FROM unnest(array per column) ... ON CONFLICT DO NOTHING
    per 5,000 rows; returns the rows inserted. A multi-row VALUES of 18 columns x 1,000 rows made
    psycopg re-parse 18,000 placeholders in Python for every batch; here the query text is the same
    from batch to batch. psycopg dumps arrays element by element in Python: a column whose value is the same in
    every row (most columns of a storm's grants and entries) is bound once, not as an array, and
    arrays go in binary (%b: the text format checked every element for quoting with a regex)."""
    columns = [c for c in table.columns if c.key in given]
    types = [pg_type(c.type) for c in columns]
    names = ", ".join(f'"{c.name}"' for c in columns)
    total = len(given[columns[0].key])
    count = 0
    for start in range(0, total, 5000):
        selected, arrays, params = [], [], {}
        for n, column in enumerate(columns):
            values = list(given[column.key][start : start + 5000])
            # The first column is always an array: unnest gives the rows.
            if n and values.count(values[0]) == len(values):
                selected.append(f"CAST(%(p{n})s AS {types[n]})")
                params[f"p{n}"] = values[0]
            else:
                selected.append(f"u.a{n}")
                arrays.append((f"a{n}", f"CAST(%(p{n})b AS {types[n]}[])"))
                params[f"p{n}"] = values
        statement = (
            f'INSERT INTO "{table.name}" ({names}) SELECT {", ".join(selected)} '
            f"FROM unnest({', '.join(a for _, a in arrays)}) AS u({', '.join(alias for alias, _ in arrays)}) "
            "ON CONFLICT DO NOTHING"
        )
        count += session.connection().exec_driver_sql(statement, params).rowcount
    return count
