"""Leases on queue rows in SQL: the claim, its fencing, renewal and release, shared by the
catalog's outbox (catalog_service.adapters.outbox_sql) and the grant service's webhook
deliveries (grant_service.adapters.webhooks).

A queue row has an integer `id`, a `status` ("pending" while it is to be sent), an `attempts`
count and a `next_attempt_at` instant. A row is *due* when pending and `next_attempt_at <= now`.

- **Claim** (`claim`): one write transaction selects a bounded batch of due rows and leases them
  by moving `next_attempt_at` to the end of the lease and counting the attempt, so an attempt
  whose worker died before recording its outcome is counted too. On PostgreSQL the select is
  `FOR UPDATE SKIP LOCKED`, so workers in several replicas claim disjoint rows without waiting
  on each other; on SQLite the write transaction (BEGIN IMMEDIATE) serialises claimers. A
  cheap read first (`any_due`) keeps an idle poll off SQLite's write lock.
- **Expiry**: a worker that dies leaves its rows leased; they are due again when the lease ends
  and another worker claims them (at least once).
- **Fencing** (`held`): the lease end is also the claim's token. An outcome is written only
  while the row is still pending with the lease end and attempt count of the claim, so a worker
  whose lease ran out (its rows claimed again by another) cannot overwrite the newer claim.
- **Renewal** (`renew`): a worker still sending moves its lease end further (a new token).
- **Release** (`release`): a worker stopping gives back the rows it claimed but did not send:
  due at once, the attempt not counted.

Each of them runs on the shared transaction runner (credit_common.db.transactions) and its retry
policy, as the request paths do: a claim, renewal or release that loses a race (a deadlock, a
serialization failure) is rolled back whole and run again from scratch. That is safe: none has an
effect outside its transaction, a claim run again selects what is due as the winner left it, and a
renewal or release run again is fenced by the same tokens.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import ColumnElement, Row, Select, Table, and_, func, select, update
from sqlalchemy.orm import Session

from credit_common.db.transactions import Transactions

STATUS_PENDING = "pending"

QUEUE_COLUMNS = frozenset({"id", "status", "attempts", "next_attempt_at"})


@dataclass(frozen=True, slots=True)
class LeaseToken:
    """What fences a claimed row: its id, its lease end and its attempt count when claimed."""

    id: int
    lease_until: datetime
    attempts: int


def check_queue_table(table: Table, more: Sequence[str] = ()) -> None:
    missing = (QUEUE_COLUMNS | set(more)) - set(table.c.keys())
    if missing:
        raise ValueError(f"table {table.name} lacks the queue columns {sorted(missing)}")


def due(table: Table, now: datetime) -> ColumnElement[bool]:
    return and_(table.c.status == STATUS_PENDING, table.c.next_attempt_at <= now)


def any_due(transactions: Transactions, table: Table, now: datetime, *where: ColumnElement[bool]) -> bool:
    """A cheap read: is any row due? Most polls find nothing, and on SQLite the claim's write
    transaction would take the database's write lock for nothing."""
    query = select(table.c.id).where(due(table, now), *where).limit(1)
    return transactions.read(lambda session: session.execute(query).first() is not None)


def skip_locked(session: Session, query: Select, table: Table) -> Select:
    """`query` locking `table`'s rows with SKIP LOCKED on PostgreSQL (SQLite's write transaction
    already serialises)."""
    if session.get_bind().dialect.name == "postgresql":
        return query.with_for_update(skip_locked=True, of=table)
    return query


def lease_rows(session: Session, table: Table, ids: Sequence[int], lease_until: datetime, **values: object) -> None:
    """Lease the rows `ids` (selected due in this transaction) until `lease_until`, counting the attempt."""
    if ids:
        session.execute(
            update(table)
            .where(table.c.id.in_(list(ids)))
            .values(next_attempt_at=lease_until, attempts=table.c.attempts + 1, **values)
        )


def claim(
    transactions: Transactions,
    table: Table,
    query: Select,
    *,
    now: datetime,
    lease_until: datetime,
    where: Sequence[ColumnElement[bool]] = (),
) -> list[Row]:
    """Claim the rows `query` selects (it selects `table.c.id` and `table.c.attempts` among its
    columns, due rows only, ordered and limited), leased until `lease_until`. Returns the rows as
    selected, with `attempts` as it was before this claim (the claim's attempt is `attempts + 1`)."""
    if not any_due(transactions, table, now, *where):
        return []

    def lease(session: Session) -> list[Row]:
        rows = session.execute(skip_locked(session, query, table)).all()
        lease_rows(session, table, [r.id for r in rows], lease_until)
        return rows

    return transactions.write(lease)


def lock_in_id_order(session: Session, table: Table, ids: Sequence[int]) -> None:
    """On PostgreSQL, lock the rows in id order before writing outcomes, so two workers writing
    overlapping batches (after a lease takeover) cannot deadlock."""
    if ids and session.get_bind().dialect.name == "postgresql":
        session.execute(
            select(table.c.id).where(table.c.id.in_(sorted(set(ids)))).order_by(table.c.id).with_for_update()
        )


def held(table: Table, token: LeaseToken) -> ColumnElement[bool]:
    """The row is still pending under this claim (see the module docstring: fencing)."""
    return and_(
        table.c.id == token.id,
        table.c.status == STATUS_PENDING,
        table.c.next_attempt_at == token.lease_until,
        table.c.attempts == token.attempts,
    )


def renew(transactions: Transactions, table: Table, tokens: Sequence[LeaseToken], until: datetime) -> list[LeaseToken]:
    """Move the leases still held to `until`; the tokens of those renewed (the others were taken over
    or resolved)."""
    if not tokens:
        return []

    def move(session: Session) -> list[LeaseToken]:
        lock_in_id_order(session, table, [t.id for t in tokens])
        renewed: list[LeaseToken] = []
        for token in tokens:
            result = session.execute(update(table).where(held(table, token)).values(next_attempt_at=until))
            if result.rowcount == 1:
                renewed.append(LeaseToken(token.id, until, token.attempts))
        return renewed

    return transactions.write(move)


def release(
    transactions: Transactions, table: Table, tokens: Sequence[LeaseToken], due_at: datetime, **values: object
) -> int:
    """Give back claims never attempted: due at `due_at` (now, or later to hold them back), their
    attempt not counted, and `values` set (a queue's own columns). Returns how many were still held."""
    if not tokens:
        return 0

    def give_back(session: Session) -> int:
        lock_in_id_order(session, table, [t.id for t in tokens])
        released = 0
        for token in tokens:
            result = session.execute(
                update(table)
                .where(held(table, token))
                .values(next_attempt_at=due_at, attempts=table.c.attempts - 1, **values)
            )
            released += result.rowcount
        return released

    return transactions.write(give_back)


@dataclass(frozen=True, slots=True)
class Backlog:
    """How far behind a queue is: rows due now, and how long the oldest of them has been due (the lag;
    zero when nothing is due)."""

    due: int
    lag_s: float


def backlog(transactions: Transactions, table: Table, now: datetime, *where: ColumnElement[bool]) -> Backlog:
    """The queue's backlog at `now` (one aggregate read; rows leased right now are not due)."""
    query = select(func.count(), func.min(table.c.next_attempt_at)).where(due(table, now), *where)
    count, oldest = transactions.read(lambda session: session.execute(query).one())
    return Backlog(count, max(0.0, (now - oldest).total_seconds()) if oldest is not None else 0.0)
