"""A debit's statements (ReportUsage): the customer locked and what its debit needs read, its
writes; for a group of debits (credit_common.db.group_commit) on PostgreSQL, all of it in few round
trips. A debit runs under many concurrent callers: its statements are built once here (building a
select() per call costs its cache key each time) and run on the session's connection as Core."""

from __future__ import annotations

import dataclasses
import functools
from collections import defaultdict
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    Connection,
    Select,
    String,
    Table,
    any_,
    bindparam,
    func,
    insert,
    literal_column,
    select,
    true,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from credit_common.db.driver import DriverStatement, deferred_writes, rows_of
from credit_common.idempotency import SeenRequest
from credit_common.metrics import tally_ledger
from grant_service.adapters.catch_up import pending_columns
from grant_service.adapters.locking import is_postgres
from grant_service.adapters.mappers import view_of
from grant_service.adapters.orm import (
    ALERT_SETS,
    CLOCKS,
    CUSTOMERS,
    EVENTS,
    GRANTS,
    LEDGER_ENTRIES,
    RATE_SETS,
    REQUEST_IDS,
    USAGES,
)
from grant_service.domain.model import (
    DebitableGrant,
    DebitHead,
)
from grant_service.domain.schedules import Pending


def _head_columns() -> tuple:
    """A DebitHead's columns of a customer (of `customers` in FROM), but its request id's record."""
    return (
        CUSTOMERS.c.clock_key,
        select(CLOCKS.c.frozen_time).where(CLOCKS.c.test_clock_id == CUSTOMERS.c.clock_key).scalar_subquery(),
        *pending_columns(CUSTOMERS.c.customer_key),
        select(func.count()).select_from(RATE_SETS).scalar_subquery(),
        select(func.max(ALERT_SETS.c.alert_set_id)).scalar_subquery(),  # NULL: none was ever set
    )


def _debit_head_statement(for_update: bool) -> Select:
    customer = CUSTOMERS.c.customer_key == bindparam("customer_key")
    request = (REQUEST_IDS.c.scope == bindparam("scope")) & (REQUEST_IDS.c.request_id == bindparam("request_id"))
    statement = select(
        *_head_columns(),
        select(REQUEST_IDS.c.fingerprint).where(request).scalar_subquery(),
        select(REQUEST_IDS.c.resource_id).where(request).scalar_subquery(),
    ).where(customer)
    # FOR UPDATE locks the customers row only (the subqueries are not in FROM).
    return statement.with_for_update() if for_update else statement


_DEBIT_HEAD = {False: DriverStatement(_debit_head_statement(False)), True: DriverStatement(_debit_head_statement(True))}


def debit_head(session: Session, customer_key: str, scope: str, request_id: str) -> DebitHead | None:
    """Lock the customer (FOR UPDATE on PostgreSQL; SQLite's write transaction holds the database) and
    read its DebitHead; None if there is no such customer. Its open grants are read (and locked) by a
    second statement, run once the first holds the lock: one round trip for both on PostgreSQL."""
    group: _Group | None = session.info.get(_PREFETCHED)
    if group is not None and group.scope == scope and request_id in group.request_ids:
        entry = group.heads.get(customer_key)
        if entry is not None:
            return _head(entry[0], group.seen.get(request_id), entry[1])
    for_update = is_postgres(session)
    heads, grants = rows_of(
        session.connection(),
        (_DEBIT_HEAD[for_update], {"customer_key": customer_key, "scope": scope, "request_id": request_id}),
        (_OPEN_GRANTS[for_update], {"customer_key": customer_key}),
    )
    if not heads:
        return None
    *head, fingerprint, resource_id = heads[0]
    debitable = _debitable(grants)
    if group is not None:
        group.heads[customer_key] = (head, debitable)
    return _head(head, None if fingerprint is None else SeenRequest(fingerprint, resource_id), debitable)


def _head(columns: Sequence[Any], seen: SeenRequest[str] | None, grants: list[DebitableGrant]) -> DebitHead:
    clock_key, frozen, next_start, next_expiry, next_open, version, alerts_version = columns
    pending = Pending(next_start, next_expiry, next_open)
    return DebitHead(clock_key, frozen, seen, pending, version, grants, alerts_version or 0)


def _open_grants_statement(for_update: bool, customers: Any = None) -> Select:
    """Open grants of one customer (`customer_key`), or of those `customers` selects, in id order."""
    if customers is None:
        customers = GRANTS.c.customer_key == bindparam("customer_key")
    statement = (
        select(
            GRANTS.c.grant_id,
            GRANTS.c.amount,
            GRANTS.c.used,
            GRANTS.c.priority,
            GRANTS.c.effective_time,
            GRANTS.c.expire_time,
            GRANTS.c.void_time,
            GRANTS.c.customer_key,
            GRANTS.c.currency_key,
            GRANTS.c.subscription_id,
        )
        .where(customers, GRANTS.c.closed.is_(False))
        .order_by(GRANTS.c.grant_id)
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
    grants = _debitable(_OPEN_GRANTS[is_postgres(session)].rows(session.connection(), {"customer_key": customer_key}))
    group: _Group | None = session.info.get(_PREFETCHED)
    if group is not None and customer_key in group.heads:  # grants issued since its head was read
        group.heads[customer_key] = (group.heads[customer_key][0], grants)
    return grants


# A group of debits (credit_common.db.group_commit) on PostgreSQL: their customers locked in key order
# and their DebitHeads read, for all of them in one round trip; `debit_head` answers from these.
_KEYS = bindparam("keys", type_=postgresql.ARRAY(String))
_GROUP_HEADS = DriverStatement(
    select(CUSTOMERS.c.customer_key, *_head_columns())
    .where(CUSTOMERS.c.customer_key == any_(_KEYS))
    .order_by(CUSTOMERS.c.customer_key)
    .with_for_update()
)
_GROUP_GRANTS = DriverStatement(_open_grants_statement(True, GRANTS.c.customer_key == any_(_KEYS)))
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
    select(REQUEST_IDS.c.request_id, REQUEST_IDS.c.fingerprint, REQUEST_IDS.c.resource_id)
    .where(REQUEST_IDS.c.scope == bindparam("scope"), REQUEST_IDS.c.request_id == _REQUEST_KEYS.c.request_id)
    .limit(literal_column("1"))  # a literal: the driver statement binds only the caller's parameters
    .lateral("found")
)
_GROUP_REQUESTS = DriverStatement(
    select(_REQUEST_FOUND.c.request_id, _REQUEST_FOUND.c.fingerprint, _REQUEST_FOUND.c.resource_id)
    .select_from(_REQUEST_KEYS)
    .join(_REQUEST_FOUND, true())
)
_PREFETCHED = "credit_grants.debit_heads"

# The same on SQLite, for a group of several debits (a batch call's): no round trips to save, but
# one statement per group instead of two per debit.
_KEYS_IN = bindparam("keys", expanding=True)
_GROUP_HEADS_SQLITE = select(CUSTOMERS.c.customer_key, *_head_columns()).where(CUSTOMERS.c.customer_key.in_(_KEYS_IN))
_GROUP_GRANTS_SQLITE = _open_grants_statement(False, GRANTS.c.customer_key.in_(_KEYS_IN))
_GROUP_REQUESTS_SQLITE = select(REQUEST_IDS.c.request_id, REQUEST_IDS.c.fingerprint, REQUEST_IDS.c.resource_id).where(
    REQUEST_IDS.c.scope == bindparam("scope"), REQUEST_IDS.c.request_id.in_(bindparam("request_ids", expanding=True))
)


@dataclass
class _Group:
    """What a group's transaction knows of its debits' customers (the customers locked, the database's
    write lock held on SQLite), kept current by the group's own writes: each customer's DebitHead
    columns and open grants (`debit_head` answers from them: a customer's later debits in the group
    read nothing; `record_debit` sets the grants' new running totals, `open_grants` the grants issued
    meanwhile), and the records of the group's request ids (`seen`: those found, and those the group
    recorded)."""

    scope: str
    request_ids: set[str]
    heads: dict[str, tuple[Sequence[Any], list[DebitableGrant]]]
    seen: dict[str, SeenRequest[str]] = field(default_factory=dict)


@contextmanager
def debit_group(session: Session, debits: Sequence[tuple[str, str, str]]) -> Iterator[None]:
    """What a group of debits (credit_common.db.group_commit), each (customer_key, scope, request_id),
    runs in. On PostgreSQL: their customers locked in key order and their DebitHeads read first, in one
    round trip for the group (each customer's first `debit_head` in the transaction answers from it; a
    later one, after that debit's writes, reads again); and their writes sent together at the end
    (credit_common.db.driver.deferred_writes). Elsewhere nothing: SQLite's statements cost no round
    trip, and its write transaction already holds the database."""
    if not debits or (not is_postgres(session) and len(debits) < 2):
        yield
        return
    _prefetch_debit_heads(session, debits)
    try:
        with deferred_writes(session.connection()):
            yield
    finally:
        session.info.pop(_PREFETCHED, None)


def _prefetch_debit_heads(session: Session, debits: Sequence[tuple[str, str, str]]) -> None:
    scopes = {scope for _, scope, _ in debits}
    if len(scopes) != 1:
        raise ValueError("one scope per group")
    scope = scopes.pop()
    customers = sorted({customer for customer, _, _ in debits})
    request_ids = sorted({r for _, _, r in debits if r})
    if is_postgres(session):
        heads, grants, requests = rows_of(
            session.connection(),
            (_GROUP_HEADS, {"keys": customers}),
            (_GROUP_GRANTS, {"keys": customers}),
            (_GROUP_REQUESTS, {"scope": scope, "request_ids": request_ids}),
        )
    else:
        connection = session.connection()
        heads = connection.execute(_GROUP_HEADS_SQLITE, {"keys": customers}).all()
        grants = connection.execute(_GROUP_GRANTS_SQLITE, {"keys": customers}).all()
        requests = connection.execute(_GROUP_REQUESTS_SQLITE, {"scope": scope, "request_ids": request_ids}).all()
    by_customer: dict[str, list[Any]] = defaultdict(list)
    for row in grants:
        by_customer[row.customer_key].append(row)
    group = _Group(
        scope,
        set(request_ids),
        {customer: (head, _debitable(by_customer[customer])) for customer, *head in heads},
        {request_id: SeenRequest(fingerprint, resource_id) for request_id, fingerprint, resource_id in requests},
    )
    session.info[_PREFETCHED] = group


# Run on the driver (see credit_common.db.driver): each row gives every column.
_INSERT_USAGE = DriverStatement(insert(USAGES))
_INSERT_LEDGER = DriverStatement(insert(LEDGER_ENTRIES))
_INSERT_REQUEST_ID = DriverStatement(insert(REQUEST_IDS))
# A debit's events (a grant depleted, balance alerts): skipped if the log has their dedupe key.
_INSERT_EVENTS = DriverStatement(sqlite.insert(EVENTS).on_conflict_do_nothing())
_EVENT_COLUMNS = [c for c in EVENTS.columns if c.name not in ("seq", "txid")]
_SET_USED = DriverStatement(
    update(GRANTS).where(GRANTS.c.grant_id == bindparam("b_grant_id")).values(used=bindparam("b_used"))
)


def record_debit(
    session: Session,
    usage: dict[str, Any],
    used: Sequence[tuple[str, Decimal]],
    entries: Sequence[dict[str, Any]],
    request: dict[str, Any] | None,
    events: Sequence[dict[str, Any]] = (),
) -> None:
    """Write one debit: its usage (a unique-constraint conflict on its request_id means a concurrent
    twin won), the grants' new running totals (grant id, used), its DEBIT entries, the record of its
    request id (if any) and its events (rows of `events`). On PostgreSQL all of it is one statement
    (data-modifying CTEs)."""
    _written(session, usage["customer_key"], used, request)
    conn = session.connection()
    tally_ledger(session, entries)
    if is_postgres(session):
        params = {f"u_{name}": value for name, value in usage.items()}
        for i, (grant_id, value) in enumerate(used):
            params[f"g{i}_id"], params[f"g{i}_used"] = grant_id, value
        for i, entry in enumerate(entries):
            params.update({f"l{i}_{name}": value for name, value in entry.items()})
        if request is not None:
            params.update({f"r_{name}": value for name, value in request.items()})
        for i, event in enumerate(events):
            params.update({f"e{i}_{name}": value for name, value in event.items()})
        _debit_writes(len(used), len(entries), request is not None, len(events)).execute(conn, [params])
        return
    _INSERT_USAGE.execute(conn, [usage])
    _SET_USED.execute(conn, [{"b_grant_id": grant_id, "b_used": value} for grant_id, value in used])
    _INSERT_LEDGER.execute(conn, list(entries))
    if request is not None:
        insert_request_id(conn, request)
    _INSERT_EVENTS.execute(conn, list(events))


def _written(
    session: Session, customer_key: str, used: Sequence[tuple[str, Decimal]], request: dict[str, Any] | None
) -> None:
    """Keep the group's knowledge (`_Group`) current with a debit's writes."""
    group: _Group | None = session.info.get(_PREFETCHED)
    if group is None:
        return
    if request is not None:
        group.seen[request["request_id"]] = SeenRequest(request["fingerprint"], request["resource_id"])
    entry = group.heads.get(customer_key)
    if entry is not None:
        totals = dict(used)
        grants = [
            grant
            if grant.grant_id not in totals
            else dataclasses.replace(grant, view=dataclasses.replace(grant.view, used=totals[grant.grant_id]))
            for grant in entry[1]
        ]
        group.heads[customer_key] = (entry[0], grants)


@functools.cache
def _debit_writes(grants: int, entries: int, request: bool, events: int = 0) -> DriverStatement:
    """record_debit's one statement on PostgreSQL, for a debit of `grants` grants: the usage's INSERT, with
    the grants' UPDATEs and the INSERTs of the entries and the request id as CTEs (PostgreSQL runs each
    data-modifying CTE exactly once, whether the statement reads it or not)."""

    def values(table: Table, prefix: str) -> dict[str, Any]:
        return {c.name: bindparam(f"{prefix}{c.name}", type_=c.type) for c in table.columns if c.name != "seq"}

    statement = insert(USAGES).values(values(USAGES, "u_"))
    for i in range(grants):
        set_used = (
            update(GRANTS)
            .where(GRANTS.c.grant_id == bindparam(f"g{i}_id", type_=GRANTS.c.grant_id.type))
            .values(used=bindparam(f"g{i}_used", type_=GRANTS.c.used.type))
        )
        statement = statement.add_cte(set_used.cte(f"used_{i}"))
    ledger = LEDGER_ENTRIES
    statement = statement.add_cte(
        insert(ledger).values([values(ledger, f"l{i}_") for i in range(entries)]).cte("ledger")
    )
    if request:
        statement = statement.add_cte(insert(REQUEST_IDS).values(values(REQUEST_IDS, "r_")).cte("request"))
    if events:
        rows = [{c.name: bindparam(f"e{i}_{c.name}", type_=c.type) for c in _EVENT_COLUMNS} for i in range(events)]
        statement = statement.add_cte(postgresql.insert(EVENTS).values(rows).on_conflict_do_nothing().cte("events"))
    return DriverStatement(statement)


def insert_request_id(connection: Connection, record: dict[str, Any]) -> None:
    _INSERT_REQUEST_ID.execute(connection, [record])
