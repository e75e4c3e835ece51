"""The outbox table in SQL: claiming due deliveries, recording outcomes, and
the handoff state of a subscription.

The repository works on any `Table` with the agreed columns (see
`outbox_table`), so the catalog passes its own model's table
(`OutboxDelivery.__table__`) and its migration owns the schema. `outbox_table`
defines the same table for tests and as the reference of the contract; nothing
here creates tables.

Leases, their claim and fencing are the shared ones (credit_common.delivery.leases).
Claiming: one write transaction selects a bounded batch of due pending rows,
only the lowest pending revision of each (kind, aggregate_key), each with the
highest revision queued for its aggregate (to judge a STALE answer), and leases them
by moving `next_attempt_at` to the end of the lease; `attempts` counts claims, so
an attempt that never recorded an outcome (its dispatcher crashed) is counted too. On PostgreSQL the select
is FOR UPDATE SKIP LOCKED, so dispatchers in several replicas claim disjoint
rows without waiting on each other; on SQLite the write transaction (BEGIN
IMMEDIATE) serialises claimers. A dispatcher that dies after claiming leaves
its rows leased: they become due again when the lease ends.

Fencing: the lease end is also the claim's token. A retry or a park is written
only while the row is still pending with the same `next_attempt_at` and
`attempts` as when claimed, so a dispatcher whose lease ran out (and whose rows
were claimed again by another) cannot overwrite the newer claim. "Delivered" is
written whenever the row is still pending: it is true whoever holds the lease.

Every transaction here runs on the shared runner (credit_common.db.transactions) with its retry
policy: a claim or a record of outcomes that loses a race (a deadlock, a serialization failure)
runs again from scratch. Recording outcomes again is safe: they are fenced by the claim's token,
and "delivered" is written only over a row still pending.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime

from sqlalchemy import (
    BigInteger,
    Column,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    and_,
    func,
    insert,
    literal,
    select,
    update,
)
from sqlalchemy.orm import Session

from catalog_service.domain.outbox import (
    KIND_CREDIT_CURRENCY,
    KIND_SUBSCRIPTION,
    STATUS_DELIVERED,
    STATUS_FAILED,
    STATUS_PENDING,
    ClaimedDelivery,
    DeliveryRecord,
    HandoffState,
    OutboxEntry,
    Resolution,
    summarize,
)
from credit_common.db.engine import SessionFactories
from credit_common.db.transactions import RETRY, RetryPolicy, Transactions
from credit_common.db.types import UtcDateTime
from credit_common.delivery import leases
from credit_common.delivery.leases import Backlog, LeaseToken
from credit_common.metrics import GaugeSource
from credit_common.tracing import current_traceparent
from grant_service.v1 import grant_service_pb2

TABLE_NAME = "outbox_deliveries"


def outbox_table(metadata: MetaData, name: str = TABLE_NAME) -> Table:
    """The agreed outbox table, defined in `metadata` (tests create it with
    `metadata.create_all`; production uses the catalog's model and migration)."""
    return Table(
        name,
        metadata,
        Column("id", Integer, primary_key=True, autoincrement=True),
        Column("kind", String(32), nullable=False),
        Column("aggregate_key", String(128), nullable=False),
        Column("revision", BigInteger, nullable=False),
        Column("payload", LargeBinary, nullable=False),
        Column("status", String(16), nullable=False, default=STATUS_PENDING),
        Column("attempts", Integer, nullable=False, default=0),
        Column("next_attempt_at", UtcDateTime, nullable=False),
        Column("last_error", Text, nullable=True),
        Column("created_at", UtcDateTime, nullable=False),
        Column("delivered_at", UtcDateTime, nullable=True),
        Column("trace_context", String(512), nullable=True),
        UniqueConstraint("kind", "aggregate_key", "revision"),
        Index(f"ix_{name}_status_next_attempt_at", "status", "next_attempt_at"),
    )


def add_pending(
    session: Session,
    table: Table,
    *,
    kind: str,
    aggregate_key: str,
    revision: int,
    payload: bytes,
    now: datetime,
) -> DeliveryRecord:
    """Queue one delivery in the caller's transaction (the one that changes the
    aggregate), due at once; returns the row as the handoff state reads it. The
    unique (kind, aggregate_key, revision) makes a second insert of the same
    revision fail with the transaction. With tracing on, the row keeps the current
    trace's traceparent, which its delivery continues (credit_common.tracing)."""
    values = dict(
        kind=kind,
        aggregate_key=aggregate_key,
        revision=revision,
        payload=payload,
        status=STATUS_PENDING,
        attempts=0,
        next_attempt_at=now,
        created_at=now,
    )
    traceparent = current_traceparent()
    if traceparent is not None and "trace_context" in table.c:
        values["trace_context"] = traceparent
    session.execute(insert(table).values(**values))
    return DeliveryRecord(
        revision=revision, status=STATUS_PENDING, attempts=0, last_error=None, next_attempt_at=now, delivered_at=None
    )


def add_apply_request(
    session: Session,
    table: Table,
    request: grant_service_pb2.ApplySubscriptionRequest | grant_service_pb2.ApplyCreditCurrencyRequest,
    *,
    now: datetime,
) -> DeliveryRecord:
    """Queue an Apply request, with the kind, key and revision taken from the
    request itself so that the row can never disagree with its payload."""
    if isinstance(request, grant_service_pb2.ApplySubscriptionRequest):
        kind, key = KIND_SUBSCRIPTION, request.subscription_id
    elif isinstance(request, grant_service_pb2.ApplyCreditCurrencyRequest):
        kind, key = KIND_CREDIT_CURRENCY, request.currency_key
    else:
        raise TypeError(f"not an Apply request: {type(request).__name__}")
    if not key or request.revision < 1:
        raise ValueError(f"an Apply request needs a key and a revision >= 1, got {key!r} revision {request.revision}")
    return add_pending(
        session,
        table,
        kind=kind,
        aggregate_key=key,
        revision=request.revision,
        payload=request.SerializeToString(deterministic=True),
        now=now,
    )


class SqlOutboxRepository:
    """The dispatcher's `DeliveryQueue` (service_layer/ports.py) and the handoff-state queries, over `table`."""

    def __init__(self, sessions: SessionFactories, table: Table, retry: RetryPolicy = RETRY) -> None:
        self._transactions = Transactions.of(sessions, retry)
        self._table = table
        leases.check_queue_table(
            table, ("kind", "aggregate_key", "revision", "payload", "last_error", "created_at", "delivered_at")
        )

    @property
    def table(self) -> Table:
        return self._table

    # -- the dispatcher's side ------------------------------------------------------------------

    def claim_due(self, now: datetime, lease_until: datetime, limit: int) -> list[ClaimedDelivery]:
        t = self._table
        earlier = t.alias("earlier")
        lower_pending = (
            select(literal(1))
            .where(
                earlier.c.kind == t.c.kind,
                earlier.c.aggregate_key == t.c.aggregate_key,
                earlier.c.status == STATUS_PENDING,
                earlier.c.revision < t.c.revision,
            )
            .exists()
        )
        every = t.alias("every")
        latest = (
            select(func.max(every.c.revision))
            .where(every.c.kind == t.c.kind, every.c.aggregate_key == t.c.aggregate_key)
            .scalar_subquery()
        )
        trace_context = t.c.trace_context if "trace_context" in t.c else literal(None).label("trace_context")
        query = (
            select(
                t.c.id,
                t.c.kind,
                t.c.aggregate_key,
                t.c.revision,
                t.c.payload,
                t.c.attempts,
                latest.label("latest"),
                trace_context,
            )
            .where(leases.due(t, now), ~lower_pending)
            .order_by(t.c.next_attempt_at, t.c.id)
            .limit(limit)
        )
        rows = leases.claim(self._transactions, t, query, now=now, lease_until=lease_until)
        return [
            ClaimedDelivery(
                id=r.id,
                kind=r.kind,
                aggregate_key=r.aggregate_key,
                revision=r.revision,
                payload=bytes(r.payload),
                attempts=r.attempts + 1,
                lease_until=lease_until,
                latest_revision=r.latest,
                trace_context=r.trace_context,
            )
            for r in rows
        ]

    def record(self, resolutions: Sequence[Resolution]) -> list[bool]:
        """Write the outcomes in one transaction; for each, whether it was applied
        (False: the claim was fenced out, see the module docstring). The deliveries of a
        pass (same status and times) are written by one statement."""
        t = self._table

        def write(session: Session) -> list[bool]:
            applied = [False] * len(resolutions)
            leases.lock_in_id_order(session, t, [r.claim.id for r in resolutions])
            delivered: dict[tuple[datetime, datetime | None], list[int]] = {}
            for i, r in enumerate(resolutions):
                if r.status == STATUS_DELIVERED:
                    delivered.setdefault((r.next_attempt_at, r.delivered_at), []).append(i)
                    continue
                condition = leases.held(t, LeaseToken(r.claim.id, r.claim.lease_until, r.claim.attempts))
                result = session.execute(
                    update(t)
                    .where(condition)
                    .values(
                        status=r.status,
                        next_attempt_at=r.next_attempt_at,
                        last_error=r.last_error,
                        delivered_at=r.delivered_at,
                    )
                )
                applied[i] = result.rowcount == 1
            for (next_attempt_at, delivered_at), indices in delivered.items():
                ids = [resolutions[i].claim.id for i in indices]
                written = set(
                    session.scalars(
                        update(t)
                        .where(t.c.id.in_(ids), t.c.status == STATUS_PENDING)
                        .values(
                            status=STATUS_DELIVERED,
                            next_attempt_at=next_attempt_at,
                            last_error=None,
                            delivered_at=delivered_at,
                        )
                        .returning(t.c.id)
                    )
                )
                for i in indices:
                    applied[i] = resolutions[i].claim.id in written
            return applied

        return self._transactions.write(write)

    def backlog(self, now: datetime) -> Backlog:
        """Deliveries due now and how long the oldest has waited (for logs and metrics)."""
        return leases.backlog(self._transactions, self._table, now)

    # -- operators ------------------------------------------------------------------------------

    def requeue_failed(self, kind: str, aggregate_key: str, now: datetime) -> int:
        """Put the parked deliveries of one aggregate back in the queue, due now
        (after the cause was fixed). Returns how many."""
        return self._transactions.write(lambda session: requeue_failed(session, self._table, kind, aggregate_key, now))

    # -- the catalog's Get/List ------------------------------------------------------------------

    def handoff_state(self, subscription_id: str) -> HandoffState:
        """Pending, delivered or failed (with the reason) and the latest delivered
        revision of one subscription."""
        return self.handoff_states([subscription_id])[subscription_id]

    def handoff_states(self, subscription_ids: Iterable[str], kind: str = KIND_SUBSCRIPTION) -> dict[str, HandoffState]:
        """The handoff state of each of several aggregates in one query (for List)."""
        keys = list(subscription_ids)
        return self._transactions.read(lambda session: handoff_states(session, self._table, keys, kind))


def handoff_states(
    session: Session, table: Table, aggregate_keys: Iterable[str], kind: str = KIND_SUBSCRIPTION
) -> dict[str, HandoffState]:
    """The handoff state of each of several aggregates, in one query over `session`
    (the catalog's unit of work uses it inside its transaction, so a mutation's
    response already shows the revision it queued)."""
    keys = list(dict.fromkeys(aggregate_keys))
    t = table
    records: dict[str, list[DeliveryRecord]] = {key: [] for key in keys}
    if keys:
        rows = session.execute(
            select(
                t.c.aggregate_key,
                t.c.revision,
                t.c.status,
                t.c.attempts,
                t.c.last_error,
                t.c.next_attempt_at,
                t.c.delivered_at,
            ).where(t.c.kind == kind, t.c.aggregate_key.in_(keys))
        ).all()
        for r in rows:
            records[r.aggregate_key].append(
                DeliveryRecord(
                    revision=r.revision,
                    status=r.status,
                    attempts=r.attempts,
                    last_error=r.last_error,
                    next_attempt_at=r.next_attempt_at,
                    delivered_at=r.delivered_at,
                )
            )
    return {key: summarize(rows) for key, rows in records.items()}


def requeue_failed(session: Session, table: Table, kind: str | None, aggregate_key: str | None, now: datetime) -> int:
    """Put parked deliveries back in the queue, due `now`, in the caller's transaction: those of
    one aggregate, or with `kind` and `aggregate_key` None every parked one. Returns how many."""
    t = table
    condition = t.c.status == STATUS_FAILED
    if kind is not None:
        condition = and_(condition, t.c.kind == kind)
    if aggregate_key is not None:
        condition = and_(condition, t.c.aggregate_key == aggregate_key)
    return session.execute(update(t).where(condition).values(status=STATUS_PENDING, next_attempt_at=now)).rowcount


def list_entries(
    session: Session,
    table: Table,
    *,
    status: str | None,
    kind: str | None,
    aggregate_key: str | None,
    after_id: int | None,
    limit: int,
) -> list[OutboxEntry]:
    """Deliveries in id order (the order they were queued), after `after_id`, optionally filtered."""
    t = table
    query = select(
        t.c.id,
        t.c.kind,
        t.c.aggregate_key,
        t.c.revision,
        t.c.status,
        t.c.attempts,
        t.c.last_error,
        t.c.next_attempt_at,
        t.c.created_at,
        t.c.delivered_at,
    )
    if status is not None:
        query = query.where(t.c.status == status)
    if kind is not None:
        query = query.where(t.c.kind == kind)
    if aggregate_key is not None:
        query = query.where(t.c.aggregate_key == aggregate_key)
    if after_id is not None:
        query = query.where(t.c.id > after_id)
    rows = session.execute(query.order_by(t.c.id).limit(limit)).all()
    return [OutboxEntry(**r._asdict()) for r in rows]


def outbox_gauges(table: Table) -> GaugeSource:
    """The outbox's depth for /metrics (credit_common.metrics.DatabaseGauges): deliveries pending and
    parked, by kind, and the age of the oldest pending one (0 when none is pending)."""
    from prometheus_client.core import GaugeMetricFamily

    def collect(connection, now: datetime):
        t = table
        pending = GaugeMetricFamily(
            "credit_grants_outbox_pending", "Outbox deliveries not yet delivered (due or backing off).", labels=["kind"]
        )
        parked = GaugeMetricFamily(
            "credit_grants_outbox_parked",
            "Outbox deliveries parked (failed permanently): never sent again until an operator requeues them.",
            labels=["kind"],
        )
        oldest = GaugeMetricFamily(
            "credit_grants_outbox_oldest_pending_age_seconds",
            "Age of the oldest pending outbox delivery (0 when none is pending): how late the handoff runs.",
        )
        counts = {(kind, status): 0 for kind in (KIND_SUBSCRIPTION, KIND_CREDIT_CURRENCY) for status in ("p", "f")}
        rows = connection.execute(
            select(t.c.kind, t.c.status, func.count(), func.min(t.c.created_at))
            .where(t.c.status.in_([STATUS_PENDING, STATUS_FAILED]))
            .group_by(t.c.kind, t.c.status)
        ).all()
        first: datetime | None = None
        for kind, status, count, created in rows:
            counts[(kind, "p" if status == STATUS_PENDING else "f")] = count
            if status == STATUS_PENDING and created is not None:
                first = created if first is None or created < first else first
        for (kind, status), count in sorted(counts.items()):
            (pending if status == "p" else parked).add_metric([kind], count)
        oldest.add_metric([], max((now - first).total_seconds(), 0.0) if first is not None else 0.0)
        return [pending, parked, oldest]

    return collect
