"""Queries and writes of the grant service, over one SQLAlchemy session.

Writes that must happen at most once (a period's grant, a grant's GRANT and
closing entries) are inserts that skip on a unique-constraint conflict, so two
processes racing on the same work cannot both succeed and neither crashes."""

from __future__ import annotations

import functools
import json
from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    Boolean,
    Connection,
    Integer,
    Select,
    String,
    Table,
    and_,
    any_,
    bindparam,
    func,
    insert,
    literal_column,
    or_,
    select,
    true,
    update,
)
from sqlalchemy.dialects import postgresql
from sqlalchemy.orm import Session

from credit_common.db.driver import DriverStatement, deferred_writes, rows_of
from credit_common.db.types import UtcDateTime
from credit_common.idempotency import SeenRequest
from credit_common.periods import Cadence
from grant_service.adapters.orm import (
    ClockRow,
    CustomerRow,
    GrantRow,
    LedgerEntryRow,
    RateRow,
    RateSetRow,
    RequestIdRow,
    ScheduleRow,
    UsageRow,
)
from grant_service.domain.balances import GrantView, exact_sum
from grant_service.domain.model import (
    CustomerNow,
    EntryType,
    Grant,
    GrantSource,
    LedgerEntry,
    StoredSchedule,
    TestClock,
    Usage,
)
from grant_service.domain.schedules import Pending, Schedule, ScheduledAmount

# The tables, for the Core statements built once below.
_CUSTOMERS = CustomerRow.__table__
_GRANTS = GrantRow.__table__
_SCHEDULES = ScheduleRow.__table__
_CLOCKS = ClockRow.__table__
_REQUEST_IDS = RequestIdRow.__table__
_RATE_SETS = RateSetRow.__table__
_RATES = RateRow.__table__


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


_ADVANCE = update(_SCHEDULES).values(next_period_index=bindparam("b_index"), next_period_start=bindparam("b_start"))
_ADVANCE_IN = _ADVANCE.where(_SCHEDULES.c.schedule_id.in_(bindparam("ids", expanding=True)))
_ADVANCE_ANY = _ADVANCE.where(_SCHEDULES.c.schedule_id == any_(bindparam("ids", type_=postgresql.ARRAY(String))))


def advance_cursors(
    session: Session, schedule_ids: Sequence[str], next_index: int, next_start: datetime | None
) -> None:
    """Move the issuance cursor of every schedule in `schedule_ids` to period `next_index` starting
    at `next_start`: one statement for them all (an ORM bulk UPDATE by primary key spends its time
    building per-row parameters: docs/performance.md). PostgreSQL takes the
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


def schedule_of(row: Any) -> Schedule:
    """The terms of a `ScheduleRow` or of a row with the columns of `schedules`."""
    return Schedule(row.anchor_time, Cadence(row.cadence), decode_amounts(row.amounts), row.end_time)


def stored_schedule_of(row: Any, schedule: Schedule | None = None) -> StoredSchedule:
    """The schedule of a `ScheduleRow` or of a row with the columns of `schedules` (its terms:
    `schedule` if given)."""
    return StoredSchedule(
        schedule_id=row.schedule_id,
        subscription_id=row.subscription_id,
        customer_key=row.customer_key,
        clock_key=row.clock_key,
        entitlement_key=row.entitlement_key,
        currency_key=row.currency_key,
        schedule=schedule_of(row) if schedule is None else schedule,
        next_period_index=row.next_period_index,
        position=row.position,
        removed=row.removed,
    )


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


def grants_active_at(session: Session, customer_key: str, currency_key: str, at: datetime) -> list[GrantRow]:
    """Grants active at `at`, in id order. (A debit reads its grants with `debit_head`.)"""
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
    return list(session.scalars(query))


def view_of(row: Any, used: Decimal) -> GrantView:
    """A grant (an ORM row, or any row with the columns of `grants`) with `used` credits debited."""
    return GrantView(row.grant_id, row.amount, used, row.priority, row.effective_time, row.expire_time, row.void_time)


def views_at(session: Session, rows: Sequence[GrantRow], at: datetime, *, current: bool = False) -> list[GrantView]:
    """The grants as seen at `at`; `current` (at the customer's now) takes their running totals
    instead of summing the ledger."""
    used = {r.grant_id: r.used for r in rows} if current else debits_by_grant(session, [r.grant_id for r in rows], at)
    return [view_of(r, used.get(r.grant_id, Decimal(0))) for r in rows]


def _pending_columns(customer_key) -> tuple:
    """A customer's `Pending` (its earliest period to issue, its earliest open grant to expire, its
    earliest pending grant to open) as three scalar subqueries correlated to `customer_key`: the one
    definition of what a catch-up is owed."""
    schedules, expiring, opening = _SCHEDULES, _GRANTS.alias("expiring"), _GRANTS.alias("opening")
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


def pending(session: Session, customer_key: str) -> Pending:
    columns = _pending_columns(_CUSTOMERS.c.customer_key)
    row = session.execute(select(*columns).where(_CUSTOMERS.c.customer_key == customer_key)).one()
    return Pending(row.next_issue, row.next_expiry, row.next_open)


def _current_grants_statement(customers_count: int) -> Select:
    customers, grants = _CUSTOMERS, _GRANTS
    now = bindparam("now", type_=UtcDateTime())
    keys = [bindparam(f"c{i}", type_=customers.c.customer_key.type) for i in range(customers_count)]
    return (
        select(
            customers.c.customer_key.label("of_customer"),
            customers.c.clock_key.label("customer_clock_key"),
            *_pending_columns(customers.c.customer_key),
            *grants.c,
        )
        .select_from(
            customers.outerjoin(
                grants,
                and_(
                    grants.c.customer_key == customers.c.customer_key,
                    # Implied by the rest (an EXPIRE is recorded at or after the expiry, a VOID at the
                    # instant it applies), and it lets the index (customer, closed, expire) skip the
                    # customer's past grants: one heap page per read instead of one per past period.
                    grants.c.closed.is_(False),
                    grants.c.currency_key == bindparam("currency_key"),
                    grants.c.effective_time <= now,
                    or_(grants.c.expire_time.is_(None), grants.c.expire_time > now),
                    or_(grants.c.void_time.is_(None), grants.c.void_time > now),
                ),
            )
        )
        .where(customers.c.customer_key.in_(keys))
    )


@functools.cache
def _current_grants(customers_count: int) -> DriverStatement:
    """Built once per number of customers (at most a batch's size); run on the driver: GetBalance's hot
    path (see credit_common.db.driver)."""
    return DriverStatement(_current_grants_statement(customers_count))


def current_grants(
    connection: Connection, customer_keys: Sequence[str], currency_key: str, now: datetime
) -> dict[str, list[tuple]]:
    """In one statement, for each of `customer_keys` that exists: its clock, its `Pending` (next_issue,
    next_expiry), and its grants in `currency_key` active at `now` (columns of `grants`, in no
    particular order), by customer. A customer with no active grant has one row, with grant_id None."""
    params: dict[str, Any] = {f"c{i}": key for i, key in enumerate(customer_keys)}
    params.update(currency_key=currency_key, now=now)
    by_customer: dict[str, list[tuple]] = defaultdict(list)
    for row in _current_grants(len(customer_keys)).rows(connection, params):
        by_customer[row.of_customer].append(row)
    return by_customer


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


# ------------------------------------------------------------------------------ debits
# A debit runs under many concurrent callers: its statements are built once here (building a select() per
# call costs its cache key each time) and run on the session's connection as Core.


@dataclass(frozen=True, slots=True)
class DebitHead:
    """What a debit needs to know, read with the customer's lock held: its clock (and that clock's frozen
    time), the request id's record if any, the earliest issuance and expiry still pending (so the caller
    tells at its "now" whether a catch-up is due), the version of the rate sets (see RatesCache), and
    its open grants."""

    clock_key: str
    frozen_time: datetime | None
    seen: SeenRequest[str] | None
    pending: Pending
    rates_version: int
    # The customer's open grants (of every currency, locked, in id order), read once its lock was held.
    open_grants: list[DebitableGrant]


def _head_columns() -> tuple:
    """A DebitHead's columns of a customer (of `customers` in FROM), but its request id's record."""
    return (
        _CUSTOMERS.c.clock_key,
        select(_CLOCKS.c.frozen_time).where(_CLOCKS.c.test_clock_id == _CUSTOMERS.c.clock_key).scalar_subquery(),
        *_pending_columns(_CUSTOMERS.c.customer_key),
        select(func.count()).select_from(_RATE_SETS).scalar_subquery(),
    )


def _debit_head_statement(for_update: bool) -> Select:
    customer = _CUSTOMERS.c.customer_key == bindparam("customer_key")
    request = (_REQUEST_IDS.c.scope == bindparam("scope")) & (_REQUEST_IDS.c.request_id == bindparam("request_id"))
    statement = select(
        *_head_columns(),
        select(_REQUEST_IDS.c.fingerprint).where(request).scalar_subquery(),
        select(_REQUEST_IDS.c.resource_id).where(request).scalar_subquery(),
    ).where(customer)
    # FOR UPDATE locks the customers row only (the subqueries are not in FROM).
    return statement.with_for_update() if for_update else statement


_DEBIT_HEAD = {False: DriverStatement(_debit_head_statement(False)), True: DriverStatement(_debit_head_statement(True))}


def debit_head(session: Session, customer_key: str, scope: str, request_id: str) -> DebitHead | None:
    """Lock the customer (FOR UPDATE on PostgreSQL; SQLite's write transaction holds the database) and
    read its DebitHead; None if there is no such customer. Its open grants are read (and locked) by a
    second statement, run once the first holds the lock: one round trip for both on PostgreSQL."""
    prefetched = session.info.get(_PREFETCHED)
    if prefetched and (entry := prefetched.pop(customer_key, None)) is not None:
        head, seen, grants = entry
        return _head(head, seen.get(request_id), grants)
    for_update = is_postgres(session)
    heads, grants = rows_of(
        session.connection(),
        (_DEBIT_HEAD[for_update], {"customer_key": customer_key, "scope": scope, "request_id": request_id}),
        (_OPEN_GRANTS[for_update], {"customer_key": customer_key}),
    )
    if not heads:
        return None
    *head, fingerprint, resource_id = heads[0]
    return _head(head, None if fingerprint is None else SeenRequest(fingerprint, resource_id), _debitable(grants))


def _head(columns: Sequence[Any], seen: SeenRequest[str] | None, grants: list[DebitableGrant]) -> DebitHead:
    clock_key, frozen, next_start, next_expiry, next_open, version = columns
    return DebitHead(clock_key, frozen, seen, Pending(next_start, next_expiry, next_open), version, grants)


@dataclass(frozen=True, slots=True)
class DebitableGrant:
    """A grant open to debits, with what its ledger entries repeat."""

    view: GrantView
    customer_key: str
    currency_key: str
    subscription_id: str | None

    @property
    def grant_id(self) -> str:
        return self.view.grant_id


def _open_grants_statement(for_update: bool, customers: Any = None) -> Select:
    """Open grants of one customer (`customer_key`), or of those `customers` selects, in id order."""
    if customers is None:
        customers = _GRANTS.c.customer_key == bindparam("customer_key")
    statement = (
        select(
            _GRANTS.c.grant_id,
            _GRANTS.c.amount,
            _GRANTS.c.used,
            _GRANTS.c.priority,
            _GRANTS.c.effective_time,
            _GRANTS.c.expire_time,
            _GRANTS.c.void_time,
            _GRANTS.c.customer_key,
            _GRANTS.c.currency_key,
            _GRANTS.c.subscription_id,
        )
        .where(customers, _GRANTS.c.closed.is_(False))
        .order_by(_GRANTS.c.grant_id)
    )
    return statement.with_for_update() if for_update else statement


_OPEN_GRANTS = {
    False: DriverStatement(_open_grants_statement(False)),
    True: DriverStatement(_open_grants_statement(True)),
}


def _debitable(rows: Sequence[Any]) -> list[DebitableGrant]:
    return [DebitableGrant(view_of(r, r.used), r.customer_key, r.currency_key, r.subscription_id) for r in rows]


def open_grants(session: Session, customer_key: str) -> list[DebitableGrant]:
    """The customer's open grants, of every currency, locked in id order, with their running totals:
    those of them active at the customer's "now" are what a debit burns."""
    return _debitable(_OPEN_GRANTS[is_postgres(session)].rows(session.connection(), {"customer_key": customer_key}))


# A group of debits (credit_common.db.group_commit) on PostgreSQL: their customers locked in key order
# and their DebitHeads read, for all of them in one round trip; `debit_head` answers from these.
_KEYS = bindparam("keys", type_=postgresql.ARRAY(String))
_GROUP_HEADS = DriverStatement(
    select(_CUSTOMERS.c.customer_key, *_head_columns())
    .where(_CUSTOMERS.c.customer_key == any_(_KEYS))
    .order_by(_CUSTOMERS.c.customer_key)
    .with_for_update()
)
_GROUP_GRANTS = DriverStatement(_open_grants_statement(True, _GRANTS.c.customer_key == any_(_KEYS)))
# Each request id looked up by the whole primary key, in a LATERAL subquery (its LIMIT keeps PostgreSQL
# from flattening it into a join), not `request_id = ANY(:request_ids)`: request_id is the key's second
# column, and the generic plan of the prepared statement (psycopg prepares it after 5 runs) used only
# `scope` in the index and filtered every request id of the scope, a cost that grows with the scope's
# request ids (docs/performance.md).
_REQUEST_KEYS = (
    func.unnest(bindparam("request_ids", type_=postgresql.ARRAY(String)))
    .table_valued("request_id")
    .render_derived("keys")
)
_REQUEST_FOUND = (
    select(_REQUEST_IDS.c.request_id, _REQUEST_IDS.c.fingerprint, _REQUEST_IDS.c.resource_id)
    .where(_REQUEST_IDS.c.scope == bindparam("scope"), _REQUEST_IDS.c.request_id == _REQUEST_KEYS.c.request_id)
    .limit(literal_column("1"))  # a literal: the driver statement binds only the caller's parameters
    .lateral("found")
)
_GROUP_REQUESTS = DriverStatement(
    select(_REQUEST_FOUND.c.request_id, _REQUEST_FOUND.c.fingerprint, _REQUEST_FOUND.c.resource_id)
    .select_from(_REQUEST_KEYS)
    .join(_REQUEST_FOUND, true())
)
_PREFETCHED = "credit_grants.debit_heads"


@contextmanager
def debit_group(session: Session, debits: Sequence[tuple[str, str, str]]) -> Iterator[None]:
    """What a group of debits (credit_common.db.group_commit), each (customer_key, scope, request_id),
    runs in. On PostgreSQL: their customers locked in key order and their DebitHeads read first, in one
    round trip for the group (each customer's first `debit_head` in the transaction answers from it; a
    later one, after that debit's writes, reads again); and their writes sent together at the end
    (credit_common.db.driver.deferred_writes). Elsewhere nothing: SQLite's statements cost no round
    trip, and its write transaction already holds the database."""
    if not is_postgres(session) or not debits:
        yield
        return
    _prefetch_debit_heads(session, debits)
    with deferred_writes(session.connection()):
        yield


def _prefetch_debit_heads(session: Session, debits: Sequence[tuple[str, str, str]]) -> None:
    scopes = {scope for _, scope, _ in debits}
    if len(scopes) != 1:
        raise ValueError("one scope per group")
    customers = sorted({customer for customer, _, _ in debits})
    heads, grants, requests = rows_of(
        session.connection(),
        (_GROUP_HEADS, {"keys": customers}),
        (_GROUP_GRANTS, {"keys": customers}),
        (_GROUP_REQUESTS, {"scope": scopes.pop(), "request_ids": sorted({r for _, _, r in debits if r})}),
    )
    by_customer: dict[str, list[Any]] = defaultdict(list)
    for row in grants:
        by_customer[row.customer_key].append(row)
    seen = {request_id: SeenRequest(fingerprint, resource_id) for request_id, fingerprint, resource_id in requests}
    session.info[_PREFETCHED] = {customer: (head, seen, _debitable(by_customer[customer])) for customer, *head in heads}


# Run on the driver (see credit_common.db.driver): each row gives every column.
_INSERT_USAGE = DriverStatement(insert(UsageRow.__table__))
_INSERT_LEDGER = DriverStatement(insert(LedgerEntryRow.__table__))
_INSERT_REQUEST_ID = DriverStatement(insert(_REQUEST_IDS))
_SET_USED = DriverStatement(
    update(_GRANTS).where(_GRANTS.c.grant_id == bindparam("b_grant_id")).values(used=bindparam("b_used"))
)


def record_debit(
    session: Session,
    usage: dict[str, Any],
    used: Sequence[tuple[str, Decimal]],
    entries: Sequence[dict[str, Any]],
    request: dict[str, Any] | None,
) -> None:
    """Write one debit: its usage (a unique-constraint conflict on its request_id means a concurrent
    twin won), the grants' new running totals (grant id, used), its DEBIT entries and the record of its
    request id (if any). On PostgreSQL all of it is one statement (data-modifying CTEs)."""
    conn = session.connection()
    if is_postgres(session):
        params = {f"u_{name}": value for name, value in usage.items()}
        for i, (grant_id, value) in enumerate(used):
            params[f"g{i}_id"], params[f"g{i}_used"] = grant_id, value
        for i, entry in enumerate(entries):
            params.update({f"l{i}_{name}": value for name, value in entry.items()})
        if request is not None:
            params.update({f"r_{name}": value for name, value in request.items()})
        _debit_writes(len(used), len(entries), request is not None).execute(conn, [params])
        return
    _INSERT_USAGE.execute(conn, [usage])
    _SET_USED.execute(conn, [{"b_grant_id": grant_id, "b_used": value} for grant_id, value in used])
    _INSERT_LEDGER.execute(conn, list(entries))
    if request is not None:
        insert_request_id(session, request)


@functools.cache
def _debit_writes(grants: int, entries: int, request: bool) -> DriverStatement:
    """record_debit's one statement on PostgreSQL, for a debit of `grants` grants: the usage's INSERT, with
    the grants' UPDATEs and the INSERTs of the entries and the request id as CTEs (PostgreSQL runs each
    data-modifying CTE exactly once, whether the statement reads it or not)."""

    def values(table: Table, prefix: str) -> dict[str, Any]:
        return {c.name: bindparam(f"{prefix}{c.name}", type_=c.type) for c in table.columns if c.name != "seq"}

    statement = insert(UsageRow.__table__).values(values(UsageRow.__table__, "u_"))
    for i in range(grants):
        set_used = (
            update(_GRANTS)
            .where(_GRANTS.c.grant_id == bindparam(f"g{i}_id", type_=_GRANTS.c.grant_id.type))
            .values(used=bindparam(f"g{i}_used", type_=_GRANTS.c.used.type))
        )
        statement = statement.add_cte(set_used.cte(f"used_{i}"))
    ledger = LedgerEntryRow.__table__
    statement = statement.add_cte(
        insert(ledger).values([values(ledger, f"l{i}_") for i in range(entries)]).cte("ledger")
    )
    if request:
        statement = statement.add_cte(insert(_REQUEST_IDS).values(values(_REQUEST_IDS, "r_")).cte("request"))
    return DriverStatement(statement)


def insert_request_id(session: Session, record: dict[str, Any]) -> None:
    _INSERT_REQUEST_ID.execute(session.connection(), [record])


# ------------------------------------------------------------------------------ rates cache


@dataclass(frozen=True)
class _RateBook:
    version: int
    # currency -> its rate sets (rate_set_id, effective_time), latest first (ties: higher revision first)
    sets: dict[str, list[tuple[int, datetime]]]
    # feature -> rate_set_id -> credits per unit
    rates: dict[str, dict[int, Decimal]]

    def in_force(self, feature_key: str, at: datetime) -> dict[str, Decimal]:
        of_feature = self.rates.get(feature_key)
        if not of_feature:
            return {}
        result: dict[str, Decimal] = {}
        for currency_key, sets in self.sets.items():
            for rate_set_id, effective_time in sets:
                if effective_time <= at:
                    if rate_set_id in of_feature:
                        result[currency_key] = of_feature[rate_set_id]
                    break
        return result


_RATE_BOOK = (
    select(
        _RATE_SETS.c.rate_set_id,
        _RATE_SETS.c.currency_key,
        _RATE_SETS.c.revision,
        _RATE_SETS.c.effective_time,
        _RATES.c.feature_key,
        _RATES.c.credits_per_unit,
        select(func.count()).select_from(_RATE_SETS).scalar_subquery(),
    )
    .select_from(_RATE_SETS)
    .outerjoin(_RATES, _RATES.c.rate_set_id == _RATE_SETS.c.rate_set_id)
)


class RatesCache:
    """All rate sets and rates, kept in memory by one process. Rate sets are append-only (a new revision
    is a new rate set with its rates, in one transaction; none is ever changed or deleted), so the number
    of rate sets a transaction sees identifies what it sees: the cache is used only when that number,
    read by the caller in its own transaction (DebitHead.rates_version), equals the one read with the
    cached content in one statement. So it answers what the caller's own queries would, in any number of
    processes (on PostgreSQL, as of the snapshot of the statement that read DebitHead)."""

    def __init__(self) -> None:
        self._book: _RateBook | None = None

    def rates_in_force(self, session: Session, feature_key: str, at: datetime, version: int) -> dict[str, Decimal]:
        """As `rates_in_force`, for a transaction that sees `version` rate sets."""
        book = self._book
        if book is None or book.version != version:
            book = self._load(session)
            if book.version != version:  # rate sets committed between the caller's statement and ours
                return rates_in_force(session, feature_key, at)
        return book.in_force(feature_key, at)

    def _load(self, session: Session) -> _RateBook:
        sets: dict[str, dict[int, tuple[datetime, int]]] = defaultdict(dict)
        rates: dict[str, dict[int, Decimal]] = defaultdict(dict)
        version = 0
        for (
            rate_set_id,
            currency_key,
            revision,
            effective_time,
            feature_key,
            rate,
            count,
        ) in session.connection().execute(_RATE_BOOK):
            version = count
            sets[currency_key][rate_set_id] = (effective_time, revision)
            if feature_key is not None:
                rates[feature_key][rate_set_id] = rate
        ordered = {
            currency_key: [
                (rate_set_id, t)
                for rate_set_id, (t, _) in sorted(by_id.items(), key=lambda item: item[1], reverse=True)
            ]
            for currency_key, by_id in sets.items()
        }
        book = _RateBook(version, ordered, dict(rates))
        self._book = book
        return book


# ------------------------------------------------------------------------------ domain objects of rows


def grant_of(row: Any) -> Grant:
    """The grant of a `GrantRow`, or of a row of a statement that selects the columns of `grants`."""
    return Grant(
        grant_id=row.grant_id,
        customer_key=row.customer_key,
        currency_key=row.currency_key,
        clock_key=row.clock_key,
        source=GrantSource(row.source),
        subscription_id=row.subscription_id,
        entitlement_key=row.entitlement_key,
        period_index=row.period_index,
        amount=row.amount,
        effective_time=row.effective_time,
        expire_time=row.expire_time,
        priority=row.priority,
        void_time=row.void_time,
        reason=row.reason,
        schedule_id=row.schedule_id,
        segment=row.segment,
        used=row.used,
        closed=row.closed,
        opens_at=row.opens_at,
    )


def entry_of(row: LedgerEntryRow) -> LedgerEntry:
    return LedgerEntry(
        entry_id=row.entry_id,
        customer_key=row.customer_key,
        currency_key=row.currency_key,
        type=EntryType(row.type),
        amount=row.amount,
        grant_id=row.grant_id,
        effective_time=row.effective_time,
        usage_id=row.usage_id,
        subscription_id=row.subscription_id,
        description=row.description,
        seq=row.seq,
    )


def usage_of(row: Any) -> Usage:
    """The usage of a `UsageRow` or of the dict of its columns."""
    values = row if isinstance(row, dict) else {name: getattr(row, name) for name in Usage.__slots__}
    return Usage(**{name: values[name] for name in Usage.__slots__})


def clock_of(row: ClockRow) -> TestClock:
    return TestClock(row.test_clock_id, row.name, row.frozen_time, row.create_time)


def customer_now_of(rows: Sequence[Any]) -> CustomerNow | None:
    """The customer of the rows `current_grants` read of it (none: no such customer)."""
    if not rows:
        return None
    first = rows[0]
    return CustomerNow(
        first.customer_clock_key,
        Pending(first.next_issue, first.next_expiry, first.next_open),
        tuple(grant_of(row) for row in rows if row.grant_id is not None),
    )
