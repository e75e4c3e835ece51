"""SQL building blocks shared by the grant service's repositories: locking, inserts that
skip what a concurrent transaction already wrote (writes that must happen at most once: a
period's grant, a grant's GRANT and closing entries; two processes racing on the same work
cannot both succeed and neither crashes), and the one definition of what a catch-up owes a customer."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from prometheus_client.core import Metric
from sqlalchemy import (
    Boolean,
    Connection,
    Integer,
    Select,
    func,
    select,
)
from sqlalchemy.orm import Session

from grant_service.adapters.orm import (
    GRANTS,
    SCHEDULES,
)
from grant_service.domain.model import REAL_TIME


def is_postgres(session: Session) -> bool:
    return session.get_bind().dialect.name == "postgresql"


def insert_ignoring_conflicts(session: Session, model: type, rows: Sequence[dict[str, Any]], key: str) -> set[Any]:
    """Insert `rows` (in bulk, all with the same keys), skipping any that violates a unique
    constraint; returns the values of column `key` of the rows actually inserted. `key` must be a
    fresh id of each row (an id made for this insert): a row found with it was inserted here.

    The database counts the rows inserted; only when a conflict skipped some does a query find
    which (RETURNING every key cost the storm's catch-up a row fetch per grant)."""
    if not rows:
        return set()
    table = model.__table__
    insert = _insert_unnest if is_postgres(session) else _insert_executemany
    count = insert(session, table, rows)
    keys = [row[key] for row in rows]
    if count == len(rows):
        return set(keys)
    inserted: set[Any] = set()
    column = table.c[key]
    for start in range(0, len(keys), 500):
        inserted.update(session.execute(select(column).where(column.in_(keys[start : start + 500]))).scalars())
    return inserted


def _insert_executemany(session: Session, table, rows: Sequence[dict[str, Any]]) -> int:
    """SQLite: one prepared INSERT ... ON CONFLICT DO NOTHING run by the driver's executemany over
    plain tuples; returns the rows inserted. SQLAlchemy's multi-row INSERT ... RETURNING built and
    type-processed every value of every row in Python (docs/performance.md); here each column's
    distinct values go through its bind processor once (a storm's rows share their times and
    amounts)."""
    dialect = session.get_bind().dialect
    columns = [c for c in table.columns if c.key in rows[0]]
    values = []
    for column in columns:
        process = column.type.dialect_impl(dialect).bind_processor(dialect)
        raw = [row[column.key] for row in rows]
        if process is None:
            values.append(raw)
            continue
        done: dict[tuple[type, Any], Any] = {}  # by type too: 1 == Decimal(1) == True
        values.append([done[k] if (k := (v.__class__, v)) in done else done.setdefault(k, process(v)) for v in raw])
    names = ", ".join(f'"{c.name}"' for c in columns)
    marks = ", ".join("?" for _ in columns)
    statement = f'INSERT INTO "{table.name}" ({names}) VALUES ({marks}) ON CONFLICT DO NOTHING'
    return session.connection().exec_driver_sql(statement, list(zip(*values, strict=True))).rowcount


def pg_type(column) -> str:
    """The PostgreSQL type name of a column, for casts of arrays bound in binary."""
    type_ = column.type
    impl = getattr(type_, "impl", type_)
    if type_.__class__.__name__ == "ExactDecimal":
        return "numeric"
    if type_.__class__.__name__ == "UtcDateTime":
        return "timestamptz"
    if isinstance(impl, Boolean):
        return "boolean"
    if isinstance(impl, Integer):  # BigInteger included
        return "bigint"
    return "text"


def _insert_unnest(session: Session, table, rows: Sequence[dict[str, Any]]) -> int:
    """PostgreSQL: one INSERT ... SELECT FROM unnest(array per column) ... ON CONFLICT DO NOTHING
    per 5,000 rows; returns the rows inserted. A multi-row VALUES of 18 columns x 1,000 rows made
    psycopg re-parse 18,000 placeholders in Python for every batch; here the query text is the same
    from batch to batch. psycopg dumps arrays element by element in Python: a column whose value is the same in
    every row (most columns of a storm's grants and entries) is bound once, not as an array, and
    arrays go in binary (%b: the text format checked every element for quoting with a regex)."""
    columns = [c for c in table.columns if c.key in rows[0]]
    names = ", ".join(f'"{c.name}"' for c in columns)
    count = 0
    for start in range(0, len(rows), 5000):
        chunk = rows[start : start + 5000]
        selected, arrays, params = [], [], {}
        for n, column in enumerate(columns):
            values = [row[column.key] for row in chunk]
            # The first column is always an array: unnest gives the rows.
            if n and values.count(values[0]) == len(values):
                selected.append(f"CAST(%(p{n})s AS {pg_type(column)})")
                params[f"p{n}"] = values[0]
            else:
                selected.append(f"u.a{n}")
                arrays.append((f"a{n}", f"CAST(%(p{n})b AS {pg_type(column)}[])"))
                params[f"p{n}"] = values
        statement = (
            f'INSERT INTO "{table.name}" ({names}) SELECT {", ".join(selected)} '
            f"FROM unnest({', '.join(a for _, a in arrays)}) AS u({', '.join(alias for alias, _ in arrays)}) "
            "ON CONFLICT DO NOTHING"
        )
        count += session.connection().exec_driver_sql(statement, params).rowcount
    return count


def locked(session: Session, statement: Select, *, skip_locked: bool = False) -> Select:
    """`statement` with FOR UPDATE on PostgreSQL (SQLite serialises writers with BEGIN IMMEDIATE)."""
    if is_postgres(session):
        return statement.with_for_update(skip_locked=skip_locked)
    return statement


def pending_columns(customer_key) -> tuple:
    """A customer's `Pending` (its earliest period to issue, its earliest open grant to expire, its
    earliest pending grant to open) as three scalar subqueries correlated to `customer_key`: the one
    definition of what a catch-up is owed."""
    schedules, expiring, opening = SCHEDULES, GRANTS.alias("expiring"), GRANTS.alias("opening")
    next_issue = select(func.min(schedules.c.next_period_start)).where(schedules.c.customer_key == customer_key)
    next_expiry = select(func.min(expiring.c.expire_time)).where(
        expiring.c.customer_key == customer_key, expiring.c.closed.is_(False)
    )
    next_open = select(func.min(opening.c.opens_at)).where(opening.c.customer_key == customer_key)
    return (
        next_issue.scalar_subquery().label("next_issue"),
        next_expiry.scalar_subquery().label("next_expiry"),
        next_open.scalar_subquery().label("next_open"),
    )


def catch_up_gauges(connection: Connection, now: datetime) -> list[Metric]:
    """The catch-up's lag for /metrics (credit_common.metrics.DatabaseGauges): the age of the oldest
    period due to be issued or grant due to expire, of real-time customers, that no catch-up has
    processed yet (0 when nothing is due). Test clocks are not counted: their time is not now."""
    from prometheus_client.core import GaugeMetricFamily

    due_issue = select(func.min(SCHEDULES.c.next_period_start)).where(
        SCHEDULES.c.clock_key == REAL_TIME,
        SCHEDULES.c.removed.is_(False),
        SCHEDULES.c.next_period_start.is_not(None),
        SCHEDULES.c.next_period_start <= now,
    )
    due_expiry = select(func.min(GRANTS.c.expire_time)).where(
        GRANTS.c.clock_key == REAL_TIME,
        GRANTS.c.closed.is_(False),
        GRANTS.c.expire_time.is_not(None),
        GRANTS.c.expire_time <= now,
        GRANTS.c.opens_at.is_(None),  # as the catch-up's due expiries: a pending grant is opened first
    )
    lag = GaugeMetricFamily(
        "credit_grants_catch_up_lag_seconds",
        "Age of the oldest period due to be issued or grant due to expire that the catch-up has not processed "
        "(real-time customers; 0 when nothing is due).",
        labels=["work"],
    )
    for work, query in (("issue", due_issue), ("expire", due_expiry)):
        oldest = connection.execute(query).scalar()
        lag.add_metric([work], max((now - oldest).total_seconds(), 0.0) if oldest is not None else 0.0)
    return [lag]
