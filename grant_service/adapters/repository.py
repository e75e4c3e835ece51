"""Queries and writes of the grant service, over one SQLAlchemy session.

Writes that must happen at most once (a period's grant, a grant's GRANT and
closing entries) are inserts that skip on a unique-constraint conflict, so two
processes racing on the same work cannot both succeed and neither crashes."""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable, Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import Boolean, Integer, Select, String, any_, bindparam, func, select, update
from sqlalchemy.dialects import postgresql
from sqlalchemy.orm import Session

from credit_common.periods import Cadence
from grant_service.adapters.orm import CustomerRow, GrantRow, LedgerEntryRow, RateRow, RateSetRow, ScheduleRow
from grant_service.domain.balances import GrantView, exact_sum
from grant_service.domain.schedules import Schedule, ScheduledAmount


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
    type-processed every value of every row in Python (a third of a catch-up batch, cProfile, bench
    renewal storm); here each column's distinct values go through its bind processor once (a
    storm's rows share their times and amounts)."""
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


def _pg_type(column) -> str:
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
    psycopg re-parse 18,000 placeholders in Python for every batch (39% of a catch-up batch, py-spy,
    bench renewal storm); here the query text is the same from batch to batch. psycopg dumps arrays
    element by element in Python (30% of a batch, cProfile): a column whose value is the same in
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
                selected.append(f"CAST(%(p{n})s AS {_pg_type(column)})")
                params[f"p{n}"] = values[0]
            else:
                selected.append(f"u.a{n}")
                arrays.append((f"a{n}", f"CAST(%(p{n})b AS {_pg_type(column)}[])"))
                params[f"p{n}"] = values
        statement = (
            f'INSERT INTO "{table.name}" ({names}) SELECT {", ".join(selected)} '
            f"FROM unnest({', '.join(a for _, a in arrays)}) AS u({', '.join(alias for alias, _ in arrays)}) "
            "ON CONFLICT DO NOTHING"
        )
        count += session.connection().exec_driver_sql(statement, params).rowcount
    return count


_SCHEDULES = ScheduleRow.__table__
_ADVANCE = update(_SCHEDULES).values(next_period_index=bindparam("b_index"), next_period_start=bindparam("b_start"))
_ADVANCE_IN = _ADVANCE.where(_SCHEDULES.c.schedule_id.in_(bindparam("ids", expanding=True)))
_ADVANCE_ANY = _ADVANCE.where(_SCHEDULES.c.schedule_id == any_(bindparam("ids", type_=postgresql.ARRAY(String))))


def advance_cursors(
    session: Session, schedule_ids: Sequence[str], next_index: int, next_start: datetime | None
) -> None:
    """Move the issuance cursor of every schedule in `schedule_ids` to period `next_index` starting
    at `next_start`: one statement for them all (an ORM bulk UPDATE by primary key spent ~28% of a
    catch-up batch building per-row parameters, py-spy, bench renewal storm). PostgreSQL takes the
    ids as one array (an IN list of 500 placeholders was rendered and parsed for every batch)."""
    if is_postgres(session):
        session.execute(_ADVANCE_ANY, {"ids": list(schedule_ids), "b_index": next_index, "b_start": next_start})
        return
    for start in range(0, len(schedule_ids), 1000):
        session.execute(
            _ADVANCE_IN, {"ids": list(schedule_ids[start : start + 1000]), "b_index": next_index, "b_start": next_start}
        )


def locked(session: Session, statement: Select, *, skip_locked: bool = False) -> Select:
    """`statement` with FOR UPDATE on PostgreSQL (SQLite serialises writers with BEGIN IMMEDIATE)."""
    if is_postgres(session):
        return statement.with_for_update(skip_locked=skip_locked)
    return statement


def lock_customer(session: Session, customer_key: str) -> CustomerRow | None:
    return session.scalars(locked(session, select(CustomerRow).where(CustomerRow.customer_key == customer_key))).first()


# ------------------------------------------------------------------------------ schedules


def encode_amounts(amounts: Iterable[ScheduledAmount]) -> str:
    return json.dumps([[str(a.amount), a.effective_time.isoformat()] for a in amounts])


def decode_amounts(text: str) -> tuple[ScheduledAmount, ...]:
    return tuple(ScheduledAmount(Decimal(amount), datetime.fromisoformat(t)) for amount, t in json.loads(text))


def schedule_of(row: ScheduleRow) -> Schedule:
    return Schedule(row.anchor_time, Cadence(row.cadence), decode_amounts(row.amounts), row.end_time)


# ------------------------------------------------------------------------------ grants


def debits_by_grant(session: Session, grant_ids: Sequence[str], at: datetime | None = None) -> dict[str, Decimal]:
    """Credits debited from each grant (at or before `at`, if given), summed exactly in Python."""
    totals: dict[str, list[Decimal]] = defaultdict(list)
    if not grant_ids:
        return {}
    for start in range(0, len(grant_ids), 500):
        query = select(LedgerEntryRow.grant_id, LedgerEntryRow.amount).where(
            LedgerEntryRow.grant_id.in_(grant_ids[start : start + 500]), LedgerEntryRow.type == "DEBIT"
        )
        if at is not None:
            query = query.where(LedgerEntryRow.effective_time <= at)
        for grant_id, amount in session.execute(query):
            totals[grant_id].append(-amount)
    return {grant_id: exact_sum(values) for grant_id, values in totals.items()}


def grants_active_at(
    session: Session, customer_key: str, currency_key: str, at: datetime, *, for_update: bool = False
) -> list[GrantRow]:
    """Grants active at `at`. With `for_update` (to debit them): only those still open, locked in id order."""
    query = (
        select(GrantRow)
        .where(
            GrantRow.customer_key == customer_key,
            GrantRow.currency_key == currency_key,
            GrantRow.effective_time <= at,
            (GrantRow.expire_time.is_(None)) | (GrantRow.expire_time > at),
            (GrantRow.void_time.is_(None)) | (GrantRow.void_time > at),
        )
        .order_by(GrantRow.grant_id)
    )
    if for_update:
        query = locked(session, query.where(GrantRow.closed.is_(False)))
    return list(session.scalars(query))


def views_at(session: Session, rows: Sequence[GrantRow], at: datetime, *, current: bool = False) -> list[GrantView]:
    """The grants as seen at `at`; `current` (at the customer's now) takes their running totals
    instead of summing the ledger."""
    used = {r.grant_id: r.used for r in rows} if current else debits_by_grant(session, [r.grant_id for r in rows], at)
    return [
        GrantView(
            r.grant_id,
            r.amount,
            used.get(r.grant_id, Decimal(0)),
            r.priority,
            r.effective_time,
            r.expire_time,
            r.void_time,
        )
        for r in rows
    ]


# ------------------------------------------------------------------------------ rates


def rates_in_force(session: Session, feature_key: str, at: datetime) -> dict[str, Decimal]:
    """currency_key -> credits per unit of `feature_key`, for every currency whose rate set in force
    at `at` (the latest effective at or before it; ties to the higher revision) names the feature."""
    latest = (
        select(RateSetRow.currency_key, RateSetRow.rate_set_id)
        .where(RateSetRow.effective_time <= at)
        .order_by(RateSetRow.currency_key, RateSetRow.effective_time.desc(), RateSetRow.revision.desc())
    )
    in_force: dict[str, int] = {}
    for currency_key, rate_set_id in session.execute(latest):
        in_force.setdefault(currency_key, rate_set_id)
    if not in_force:
        return {}
    rows = session.execute(
        select(RateSetRow.currency_key, RateRow.credits_per_unit)
        .join(RateRow, RateRow.rate_set_id == RateSetRow.rate_set_id)
        .where(RateRow.feature_key == feature_key, RateSetRow.rate_set_id.in_(list(in_force.values())))
    )
    return {currency_key: rate for currency_key, rate in rows}


def feature_known(session: Session, feature_key: str) -> bool:
    return session.scalar(select(func.count()).select_from(RateRow).where(RateRow.feature_key == feature_key)) > 0


def currency_exists(session: Session, currency_key: str) -> bool:
    """Known from ApplyCreditCurrency, a credit schedule or a grant."""
    for column in (RateSetRow.currency_key, ScheduleRow.currency_key, GrantRow.currency_key):
        if session.scalar(select(column).where(column == currency_key).limit(1)) is not None:
            return True
    return False
