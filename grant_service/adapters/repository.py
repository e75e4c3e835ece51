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

from sqlalchemy import Boolean, Connection, Integer, Row, Select, and_, bindparam, exists, func, or_, select, text
from sqlalchemy.dialects import sqlite
from sqlalchemy.orm import Session

from credit_common.db.types import UtcDateTime
from credit_common.periods import Cadence
from grant_service.adapters.orm import CustomerRow, GrantRow, LedgerEntryRow, RateRow, RateSetRow, ScheduleRow
from grant_service.domain.balances import GrantView, exact_sum
from grant_service.domain.schedules import Schedule, ScheduledAmount


def is_postgres(session: Session) -> bool:
    return session.get_bind().dialect.name == "postgresql"


def insert_ignoring_conflicts(session: Session, model: type, rows: Sequence[dict[str, Any]], key: str) -> set[Any]:
    """Insert `rows` (in bulk), skipping any that violates a unique constraint; returns the values
    of column `key` of the rows actually inserted."""
    if not rows:
        return set()
    table = model.__table__
    if is_postgres(session):
        return _insert_unnest(session, table, rows, key)
    statement = sqlite.insert(table).on_conflict_do_nothing().returning(table.c[key])
    inserted: set[Any] = set()
    for start in range(0, len(rows), 1000):
        inserted.update(session.execute(statement, list(rows[start : start + 1000])).scalars())
    return inserted


def _pg_array_type(column) -> str:
    type_ = column.type
    impl = getattr(type_, "impl", type_)
    if type_.__class__.__name__ == "ExactDecimal":
        return "numeric[]"
    if type_.__class__.__name__ == "UtcDateTime":
        return "timestamptz[]"
    if isinstance(impl, Boolean):
        return "boolean[]"
    if isinstance(impl, Integer):  # BigInteger included
        return "bigint[]"
    return "text[]"


def _insert_unnest(session: Session, table, rows: Sequence[dict[str, Any]], key: str) -> set[Any]:
    """PostgreSQL: one INSERT ... SELECT FROM unnest(array per column) per 5,000 rows. A multi-row
    VALUES of 18 columns x 1,000 rows made psycopg re-parse 18,000 placeholders in Python for every
    batch (39% of a catch-up batch, py-spy, bench renewal storm); here the query text is constant."""
    columns = [c for c in table.columns if c.key in rows[0]]
    names = ", ".join(f'"{c.name}"' for c in columns)
    arrays = ", ".join(f"CAST(:{c.key} AS {_pg_array_type(c)})" for c in columns)
    statement = text(
        f'INSERT INTO "{table.name}" ({names}) SELECT * FROM unnest({arrays}) '
        f'ON CONFLICT DO NOTHING RETURNING "{table.c[key].name}"'
    )
    inserted: set[Any] = set()
    for start in range(0, len(rows), 5000):
        chunk = rows[start : start + 5000]
        params = {c.key: [row[c.key] for row in chunk] for c in columns}
        inserted.update(session.execute(statement, params).scalars())
    return inserted


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


def view_of(row: GrantRow | Row, used: Decimal) -> GrantView:
    """A grant (an ORM row or a Core row of `grants`) with `used` credits debited."""
    return GrantView(row.grant_id, row.amount, used, row.priority, row.effective_time, row.expire_time, row.void_time)


def views_at(session: Session, rows: Sequence[GrantRow], at: datetime, *, current: bool = False) -> list[GrantView]:
    """The grants as seen at `at`; `current` (at the customer's now) takes their running totals
    instead of summing the ledger."""
    used = {r.grant_id: r.used for r in rows} if current else debits_by_grant(session, [r.grant_id for r in rows], at)
    return [view_of(r, used.get(r.grant_id, Decimal(0))) for r in rows]


def _current_grants_statement() -> Select:
    customers, grants, schedules = CustomerRow.__table__, GrantRow.__table__, ScheduleRow.__table__
    expiring = grants.alias("expiring")
    now = bindparam("now", type_=UtcDateTime())
    schedule_due = (
        exists()
        .where(schedules.c.customer_key == customers.c.customer_key, schedules.c.next_period_start <= now)
        .correlate(customers)
    )
    expiry_due = (
        exists()
        .where(
            expiring.c.customer_key == customers.c.customer_key,
            expiring.c.closed.is_(False),
            expiring.c.expire_time <= now,
        )
        .correlate(customers)
    )
    return (
        select(
            customers.c.clock_key.label("customer_clock_key"),
            schedule_due.label("schedule_due"),
            expiry_due.label("expiry_due"),
            *grants.c,
        )
        .select_from(
            customers.outerjoin(
                grants,
                and_(
                    grants.c.customer_key == customers.c.customer_key,
                    grants.c.currency_key == bindparam("currency_key"),
                    grants.c.effective_time <= now,
                    or_(grants.c.expire_time.is_(None), grants.c.expire_time > now),
                    or_(grants.c.void_time.is_(None), grants.c.void_time > now),
                ),
            )
        )
        .where(customers.c.customer_key == bindparam("customer_key"))
        .order_by(grants.c.grant_id)
    )


# Built once: executing the same statement object reuses its cache key and compiled form.
_CURRENT_GRANTS = _current_grants_statement()


def current_grants(connection: Connection, customer_key: str, currency_key: str, now: datetime) -> list[Row]:
    """In one statement: the customer's clock, whether anything of it is due at `now` (a period to
    issue, a grant to expire), and its grants in `currency_key` active at `now` (columns of `grants`).
    No row: no such customer. One row with grant_id None: no active grant."""
    return list(
        connection.execute(_CURRENT_GRANTS, {"customer_key": customer_key, "currency_key": currency_key, "now": now})
    )


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
