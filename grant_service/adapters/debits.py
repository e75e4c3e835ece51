"""A debit's statements (ReportUsage): the customer locked and what its debit needs read, its
writes; for a group of debits (credit_common.db.group_commit) on PostgreSQL, all of it in few round
trips. A debit runs under many concurrent callers: its statements are built once here (building a
select() per call costs its cache key each time) and run on the session's connection as Core."""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from decimal import Decimal
from functools import partial
from typing import Any, TypeVar

from sqlalchemy import (
    Connection,
    Select,
    String,
    Table,
    any_,
    bindparam,
    cast,
    func,
    insert,
    literal_column,
    select,
    true,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from credit_common.db.bulk import array_parameter, array_placeholder, text_array, unnest_insert
from credit_common.db.chunks import chunks
from credit_common.db.driver import DriverStatement, deferred_writes, execute_sql, rows_of
from credit_common.db.group_commit import GroupCommit
from credit_common.idempotency import SeenRequest
from credit_common.metrics import tally_entries
from grant_service.adapters.catch_up import next_issue_column
from grant_service.adapters.locking import is_postgres
from grant_service.adapters.mappers import usage_of
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
from grant_service.domain.balances import GrantView
from grant_service.domain.model import DebitHead, LedgerEntry, Usage
from grant_service.domain.schedules import Pending
from grant_service.service_layer.ports import DebitOrder, DebitRecord

T = TypeVar("T")


def _head_columns() -> tuple:
    """A DebitHead's columns of a customer (of `customers` in FROM), but its request id's record and
    its open grants (`_open_grants_statement`), from which `_base` takes the rest of its Pending. The
    rates' version is the fourth (`_RATES_COLUMN`)."""
    return (
        CUSTOMERS.c.clock_key,
        select(CLOCKS.c.frozen_time).where(CLOCKS.c.test_clock_id == CUSTOMERS.c.clock_key).scalar_subquery(),
        next_issue_column(CUSTOMERS.c.customer_key),
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


_RATES_VERSION = "credit_grants.rates_version"
_RATES_COLUMN = 3


def rates_version(session: Session) -> int | None:
    """The number of rate sets that the transaction's last debit head read saw (rate sets are
    append-only: it names what the transaction sees, the key of RatesCache); None: none was read."""
    return session.info.get(_RATES_VERSION)


def debit_head(session: Session, customer_key: str, scope: str, request_id: str) -> DebitHead | None:
    """Lock the customer (FOR UPDATE on PostgreSQL; SQLite's write transaction holds the database) and
    read its DebitHead; None if there is no such customer. Its open grants are read (and locked) by a
    second statement, run once the first holds the lock: one round trip for both on PostgreSQL. In a
    debit group (`debit_group`), a customer's head is read once, and kept current by the group's
    writes."""
    group: _Group | None = session.info.get(_GROUP)
    if group is not None:
        entry = group.heads.get(customer_key)
        if entry is not None and (not request_id or request_id in group.request_ids or request_id in group.seen):
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
    session.info[_RATES_VERSION] = head[_RATES_COLUMN]
    debitable = _debitable(grants)
    base = _base(head, debitable)
    if group is not None:
        group.heads[customer_key] = (base, debitable)
    return _head(base, None if fingerprint is None else SeenRequest(fingerprint, resource_id), debitable)


def _base(columns: Sequence[Any], grants: list[GrantView]) -> tuple[str, Any, Pending, int]:
    """What every DebitHead of a customer in a group shares, from its head columns and open grants."""
    clock_key, frozen, next_issue, _version, alerts_version = columns
    return clock_key, frozen, Pending.of(next_issue, grants), alerts_version or 0


def _head(base: tuple[str, Any, Pending, int], seen: SeenRequest[str] | None, grants: list[GrantView]) -> DebitHead:
    clock_key, frozen, pending, alerts_version = base
    return DebitHead(clock_key, frozen, seen, pending, grants, alerts_version)


def _open_grants_statement(for_update: bool, customers: Any = None) -> Select:
    """Open grants of one customer (`customer_key`), or of those `customers` selects, in id order: the
    columns of a GrantView, in the order of its fields (`_debitable`)."""
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
            GRANTS.c.opens_at,
        )
        .where(customers, GRANTS.c.closed.is_(False))
        .order_by(GRANTS.c.grant_id)
    )
    return statement.with_for_update() if for_update else statement


_OPEN_GRANTS = {
    False: DriverStatement(_open_grants_statement(False)),
    True: DriverStatement(_open_grants_statement(True)),
}


def _debitable(rows: Sequence[Any]) -> list[GrantView]:
    """The views of rows of `_open_grants_statement`, whose columns are GrantView's fields in order."""
    return [GrantView(*row) for row in rows]


def open_grants(session: Session, customer_key: str) -> list[GrantView]:
    """The customer's open grants, of every currency, locked in id order, with their running totals:
    those of them active at the customer's "now" are what a debit burns."""
    grants = _debitable(_OPEN_GRANTS[is_postgres(session)].rows(session.connection(), {"customer_key": customer_key}))
    group: _Group | None = session.info.get(_GROUP)
    if group is not None and customer_key in group.heads:  # grants issued since its head was read
        group.heads[customer_key] = (group.heads[customer_key][0], grants)
    return grants


# A group of debits (credit_common.db.group_commit) on PostgreSQL: their customers locked in key order
# and their DebitHeads read, for all of them in one round trip; `debit_head` answers from these.
# Lists of keys bound as one string each (credit_common.db.bulk `text_array`), cast to an array.
_KEYS = cast(bindparam("keys", type_=String), postgresql.ARRAY(String))
# By skip_held (GroupCommit.run_together): whether the customers that another transaction holds are
# skipped instead of waited for.
_GROUP_HEADS = {
    skip_held: DriverStatement(
        select(CUSTOMERS.c.customer_key, *_head_columns())
        .where(CUSTOMERS.c.customer_key == any_(_KEYS))
        .order_by(CUSTOMERS.c.customer_key)
        .with_for_update(skip_locked=skip_held)
    )
    for skip_held in (False, True)
}
_GROUP_GRANTS = DriverStatement(_open_grants_statement(True, GRANTS.c.customer_key == any_(_KEYS)))
# Each request id looked up by the whole primary key, in a LATERAL subquery (its LIMIT keeps PostgreSQL
# from flattening it into a join), not `request_id = ANY(:request_ids)`: request_id is the key's second
# column, and the generic plan of the prepared statement (psycopg prepares it after 5 runs) used only
# `scope` in the index and filtered every request id of the scope, a cost that grows with the scope's
# request ids (docs/performance.md).
_REQUEST_KEYS = (
    func.unnest(cast(bindparam("request_ids", type_=String), postgresql.ARRAY(String)))
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
_GROUP = "credit_grants.debit_group"


# The same on SQLite, for a group of several debits (a batch call's): no round trips to save, but
# one statement per group instead of two per debit.
def _json_values(name: str) -> Select:
    """The values of a JSON array bound as `name` (SQLite's json_each): a list as one parameter, so
    that the statement is prebuilt and runs on the driver."""
    return select(func.json_each(bindparam(name, type_=String)).table_valued("value").c.value)


_GROUP_HEADS_SQLITE = DriverStatement(
    select(CUSTOMERS.c.customer_key, *_head_columns()).where(CUSTOMERS.c.customer_key.in_(_json_values("keys")))
)
_GROUP_GRANTS_SQLITE = DriverStatement(_open_grants_statement(False, GRANTS.c.customer_key.in_(_json_values("keys"))))
_GROUP_REQUESTS_SQLITE = DriverStatement(
    select(REQUEST_IDS.c.request_id, REQUEST_IDS.c.fingerprint, REQUEST_IDS.c.resource_id).where(
        REQUEST_IDS.c.scope == bindparam("scope"), REQUEST_IDS.c.request_id.in_(_json_values("request_ids"))
    )
)


@dataclass
class _Group:
    """What a group's transaction knows of its debits' customers (the customers locked, the database's
    write lock held on SQLite), kept current by the group's own writes: each customer's DebitHead
    columns and open grants (`debit_head` answers from them: a customer's later debits in the group
    read nothing; `record_debit` sets the grants' new running totals, `open_grants` the grants issued
    meanwhile), the records of the group's request ids (`seen`: those found, and those the group
    recorded), and the rows its debits wrote that are not sent yet (`_Writes`)."""

    scope: str
    request_ids: set[str] = field(default_factory=set)
    heads: dict[str, tuple[tuple[str, Any, Pending, int], list[GrantView]]] = field(default_factory=dict)
    seen: dict[str, SeenRequest[str]] = field(default_factory=dict)
    writes: _Writes = field(default_factory=lambda: _Writes())
    # The usages of the request ids found recorded before the group (`seen` as prefetched), read
    # together at the first replay (`recorded_usage`); a recorded usage never changes.
    found: set[str] = field(default_factory=set)
    recorded: dict[str, tuple[Usage, list[tuple[str, Decimal]]]] = field(default_factory=dict)


@dataclass
class _Writes:
    """A group's debits as sets of rows, sent when the group ends or before its next read: every
    usage, each grant's last running total (one UPDATE per grant, however many debits it took),
    every DEBIT entry, request id record and event, in the order the debits were made. Kept as the
    typed values the debits recorded, turned into columns when sent."""

    usages: list[Usage] = field(default_factory=list)
    totals: dict[str, Decimal] = field(default_factory=dict)
    entries: list[LedgerEntry] = field(default_factory=list)
    scopes: list[str] = field(default_factory=list)  # of each usage's request
    fingerprints: list[str] = field(default_factory=list)  # of each usage's request
    events: list[dict[str, Any]] = field(default_factory=list)

    def queue(self, connection: Connection) -> None:
        """Hand the rows to the connection's deferred writes (credit_common.db.driver), in an order
        that keeps every constraint: usages, grants, entries, request ids, events."""
        if not self.usages and not self.events:
            return
        usages, entries, totals = self.usages, self.entries, self.totals
        postgres = connection.dialect.name == "postgresql"
        write = partial(_write_unnest, connection) if postgres else _write_executemany(connection)
        write(USAGES, {name: [getattr(u, name) for u in usages] for name in _USAGE_COLUMNS})
        if postgres:
            used = {
                "ids": array_parameter(list(totals), "text"),
                "used": array_parameter(list(totals.values()), "numeric"),
            }
            execute_sql(connection, _SET_USED_UNNEST, used)
        else:
            _SET_USED.execute_columns(connection, {"b_grant_id": list(totals), "b_used": list(totals.values())})
        write(
            LEDGER_ENTRIES,
            {
                "entry_id": [e.entry_id for e in entries],
                "customer_key": [e.customer_key for e in entries],
                "currency_key": [e.currency_key for e in entries],
                "type": [e.type.value for e in entries],
                "amount": [e.amount for e in entries],
                "grant_id": [e.grant_id for e in entries],
                "effective_time": [e.effective_time for e in entries],
                "usage_id": [e.usage_id for e in entries],
                "subscription_id": [e.subscription_id for e in entries],
                "description": [e.description for e in entries],
                "opens_grant_id": [None] * len(entries),
                "closes_grant_id": [None] * len(entries),
            },
        )
        # The usages with a request id (in a batch, all of them), and their requests' scopes and fingerprints.
        kept, scopes, prints = usages, self.scopes, self.fingerprints
        if not all(u.request_id for u in usages):
            wanted = [i for i, u in enumerate(usages) if u.request_id]
            kept, scopes, prints = ([column[i] for i in wanted] for column in (usages, scopes, prints))
        write(
            REQUEST_IDS,
            {
                "scope": scopes,
                "request_id": [u.request_id for u in kept],
                "fingerprint": prints,
                "resource_id": [u.usage_id for u in kept],
                "create_time": [u.usage_time for u in kept],
            },
        )
        _INSERT_EVENTS[postgres].execute(connection, self.events)
        self.usages, self.totals, self.entries, self.events = [], {}, [], []
        self.scopes, self.fingerprints = [], []


def _write_executemany(connection: Connection) -> Callable[[Table, dict[str, list[Any]]], None]:
    """SQLite: a table's rows as one INSERT run by `executemany` (no round trips to save)."""
    return lambda table, columns: _INSERTS[table.name].execute_columns(connection, columns)


def _write_unnest(connection: Connection, table: Table, columns: dict[str, list[Any]]) -> None:
    """PostgreSQL: a table's rows as one INSERT ... SELECT FROM unnest (credit_common.db.bulk
    `unnest_insert`): one statement for the group instead of one per row."""
    if columns and next(iter(columns.values())):
        execute_sql(connection, *unnest_insert(table, columns))


_SET_USED_UNNEST = (
    f'UPDATE "grants" SET "used" = v.used FROM unnest({array_placeholder("ids", "text")}, '
    f'{array_placeholder("used", "numeric")}) AS v(grant_id, used) WHERE "grants"."grant_id" = v.grant_id'
)


@contextmanager
def debit_group(
    session: Session, orders: Sequence[DebitOrder | None], skip_held: bool = False
) -> Iterator[frozenset[str]]:
    """What a group of debits (credit_common.db.group_commit) runs in: their customers locked in key
    order and their DebitHeads read first (on PostgreSQL in one round trip; on SQLite for a group of
    several, one statement each for all of them instead of two per debit); their writes kept as sets
    (`_Writes`) and sent together, before the group's next read or at its end
    (credit_common.db.driver.deferred_writes). Yields the customers it did not lock: with `skip_held`,
    on PostgreSQL, those that another transaction holds (or that do not exist), whose debits the group
    leaves for its next transaction; otherwise none."""
    known = [order for order in orders if order is not None]
    scopes = {order.scope for order in known}
    if len(scopes) > 1:
        raise ValueError("one scope per group")
    group = _Group(scopes.pop() if scopes else "")
    skipped: frozenset[str] = frozenset()
    if known and (is_postgres(session) or len(known) > 1):
        skipped = _prefetch_debit_heads(session, group, known, skip_held)
    connection = session.connection()
    session.info[_GROUP] = group
    try:
        with deferred_writes(connection, partial(group.writes.queue, connection)):
            yield skipped
    finally:
        session.info.pop(_GROUP, None)


def _prefetch_debit_heads(
    session: Session, group: _Group, orders: Sequence[DebitOrder], skip_held: bool
) -> frozenset[str]:
    """Lock and read the orders' customers' heads, their open grants and the orders' request ids; the
    customers skipped (`debit_group`)."""
    customers = sorted({order.customer_key for order in orders})
    request_ids = sorted({order.request_id for order in orders if order.request_id})
    scope = group.scope
    skipped: frozenset[str] = frozenset()
    if is_postgres(session) and skip_held:
        # The grants of the customers locked only: a second round trip, once the first has said which.
        heads, requests = rows_of(
            session.connection(),
            (_GROUP_HEADS[True], {"keys": text_array(customers)}),
            (_GROUP_REQUESTS, {"scope": scope, "request_ids": text_array(request_ids)}),
        )
        locked = [head[0] for head in heads]
        skipped = frozenset(customers).difference(locked)
        [grants] = rows_of(session.connection(), (_GROUP_GRANTS, {"keys": text_array(locked)})) if locked else [[]]
    elif is_postgres(session):
        keys = text_array(customers)
        heads, grants, requests = rows_of(
            session.connection(),
            (_GROUP_HEADS[False], {"keys": keys}),
            (_GROUP_GRANTS, {"keys": keys}),
            (_GROUP_REQUESTS, {"scope": scope, "request_ids": text_array(request_ids)}),
        )
    else:
        keys = json.dumps(customers)
        heads, grants, requests = rows_of(
            session.connection(),
            (_GROUP_HEADS_SQLITE, {"keys": keys}),
            (_GROUP_GRANTS_SQLITE, {"keys": keys}),
            (_GROUP_REQUESTS_SQLITE, {"scope": scope, "request_ids": json.dumps(request_ids)}),
        )
    by_customer: dict[str, list[Any]] = defaultdict(list)
    for row in grants:
        by_customer[row.customer_key].append(row)
    group.request_ids = set(request_ids)
    group.heads = {}
    for customer, *head in heads:
        debitable = _debitable(by_customer[customer])
        group.heads[customer] = (_base(head, debitable), debitable)
    group.seen = {
        request_id: SeenRequest(fingerprint, resource_id) for request_id, fingerprint, resource_id in requests
    }
    group.found = {resource_id for _, _, resource_id in requests}
    if heads:
        session.info[_RATES_VERSION] = heads[0][1 + _RATES_COLUMN]
    return skipped


# Run on the driver (see credit_common.db.driver): each row gives every column.
_INSERT_USAGE = DriverStatement(insert(USAGES))
_INSERT_LEDGER = DriverStatement(insert(LEDGER_ENTRIES))
_INSERT_REQUEST_ID = DriverStatement(insert(REQUEST_IDS))
# A debit's events (a grant depleted, balance alerts): skipped if the log has their dedupe key.
_INSERT_EVENTS = {
    False: DriverStatement(sqlite.insert(EVENTS).on_conflict_do_nothing()),
    True: DriverStatement(postgresql.insert(EVENTS).on_conflict_do_nothing()),
}
_INSERTS = {table.name: DriverStatement(insert(table)) for table in (USAGES, LEDGER_ENTRIES, REQUEST_IDS)}
_SET_USED = DriverStatement(
    update(GRANTS).where(GRANTS.c.grant_id == bindparam("b_grant_id")).values(used=bindparam("b_used"))
)
_USAGE_COLUMNS = Usage.__slots__


def record_debit(
    session: Session,
    order: DebitOrder,
    record: DebitRecord,
    events: Sequence[dict[str, Any]] = (),
) -> None:
    """Write one accepted debit (DebitAccountRepository.record), `events` its events' rows. In a debit
    group its rows join the group's sets (`_Writes`); otherwise they are written at once."""
    usage = record.usage
    group: _Group | None = session.info.get(_GROUP)
    tally_entries(session, (("DEBIT", e.currency_key, e.amount) for e in record.entries))
    writes = group.writes if group is not None else _Writes()
    writes.usages.append(usage)
    writes.scopes.append(order.scope)
    writes.fingerprints.append(order.fingerprint)
    writes.totals.update(record.totals)
    writes.entries += record.entries
    writes.events += events
    if group is None:
        writes.queue(session.connection())
        return
    if usage.request_id:
        group.seen[usage.request_id] = SeenRequest(order.fingerprint, usage.usage_id)
    entry = group.heads.get(usage.customer_key)
    if entry is not None:  # its grants' running totals, updated in place
        for grant_id, used in record.totals:
            for grant in entry[1]:
                if grant.grant_id == grant_id:
                    grant.used = used
                    break


def recorded_usage(session: Session, usage_id: str) -> tuple[Usage, list[tuple[str, Decimal]]] | None:
    """A recorded usage and its debits (grant id, amount), for a replay. In a debit group, the usages
    of every request id the group found recorded are read at the first replay, in two statements:
    a batch sent again after an ambiguous failure replays all its usages, and two reads per usage
    made it ten times slower than the first time (docs/performance.md)."""
    group: _Group | None = session.info.get(_GROUP)
    if group is None:
        return _recorded_usages(session, [usage_id]).get(usage_id)
    found = group.recorded.get(usage_id)
    if found is None:
        wanted = (group.found - group.recorded.keys()) | {usage_id}
        group.recorded.update(_recorded_usages(session, sorted(wanted)))
        found = group.recorded.get(usage_id)
    return found


def _recorded_usages(session: Session, usage_ids: Sequence[str]) -> dict[str, tuple[Usage, list[tuple[str, Decimal]]]]:
    recorded: dict[str, tuple[Usage, list[tuple[str, Decimal]]]] = {}
    for chunk in chunks(usage_ids):
        for row in session.execute(select(USAGES).where(USAGES.c.usage_id.in_(chunk))):
            recorded[row.usage_id] = (usage_of(row), [])
        debits = session.execute(
            select(LEDGER_ENTRIES.c.usage_id, LEDGER_ENTRIES.c.grant_id, LEDGER_ENTRIES.c.amount)
            .where(LEDGER_ENTRIES.c.usage_id.in_(chunk), LEDGER_ENTRIES.c.type == "DEBIT")
            .order_by(LEDGER_ENTRIES.c.seq)
        )
        for usage_id, grant_id, amount in debits:
            if usage_id in recorded:
                recorded[usage_id][1].append((grant_id, -amount))
    return recorded


def insert_request_id(connection: Connection, record: dict[str, Any]) -> None:
    _INSERT_REQUEST_ID.execute(connection, [record])


def skips_held(dialect: str) -> bool:
    """Whether a call's orders first skip the customers another transaction holds
    (GroupCommit.run_together's `skip_held`). On PostgreSQL a batch's customers stay locked until its
    transaction commits, and two batches of random customers nearly always share some: whole batches
    waited for each other one after the other, with the machine a third idle. Skipping them, each
    batch first debits the customers no one holds, then waits only for the few it skipped. SQLite has
    no row locks: every write transaction waits for its one write lock (docs/performance.md, "Held
    customers skipped")."""
    return dialect == "postgresql"


class SqlDebitPort:
    """The debit port (service_layer/ports.py DebitPort) over a group commit
    (credit_common.db.group_commit) whose groups run in `debit_group`: one order joins the group
    that other callers' debits make at the same time (ReportUsage); the orders of one call (a
    ReportUsageBatch) make groups of their own, in one transaction, or with `skip_held`
    (`skips_held`) in as many as it takes: each debits the customers no other transaction holds,
    until one finds all the rest held and the next waits for them (a customer's orders always in
    one). `unit(session)`: the unit of work a rule gets, one per transaction."""

    def __init__(self, group_commit: GroupCommit, unit: Callable[[Session], Any], skip_held: bool) -> None:
        self.group_commit = group_commit
        self._unit = unit
        self._skip_held = skip_held

    def make(self, orders: Sequence[DebitOrder], rule: Callable[[Any, DebitOrder], T]) -> list[T | Exception]:
        if len(orders) == 1:
            order = orders[0]
            try:
                return [self.group_commit.run(partial(self._run, rule, order), order.customer_key, order)]
            except Exception as error:
                return [error]
        slots = self.group_commit.run_together(
            [(partial(self._run, rule, order), order.customer_key, order) for order in orders], self._skip_held
        )
        return [slot.result if slot.error is None else slot.error for slot in slots]

    def _run(self, rule: Callable[[Any, DebitOrder], T], order: DebitOrder, session: Session) -> T:
        unit = session.info.get(_UNIT)
        if unit is None:
            unit = session.info[_UNIT] = self._unit(session)
        return rule(unit, order)


_UNIT = "credit_grants.debit_unit"
