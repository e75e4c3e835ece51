"""Webhooks in SQL: the endpoints' and deliveries' repositories of the unit of work, and the delivery
workers' queue (`SqlWebhookQueue`), a leased queue on the shared machinery of
credit_common.delivery.leases (the catalog's outbox uses the same).

The queue hands out *lanes*: one endpoint and a batch of its due deliveries, lowest event first.
An endpoint has at most one lane at a time across every worker and replica: a claim locks the
endpoint row (SKIP LOCKED on PostgreSQL; SQLite's write transaction serialises claims) and takes
only endpoints with no delivery in flight (leased, lease not over). So the first attempts of an
endpoint's deliveries start in event order, one at a time; a delivery retried later comes back
among the due ones, in event order with them.

The queue's transactions run on the shared runner (credit_common.db.transactions) with its retry
policy: a claim or a record that loses a race (a deadlock, a serialization failure) runs again from
scratch. Safe: a claim run again selects what is due as the winner left it; a record run again writes
its outcomes under the same lease tokens, and the attempt rows of the rolled-back try are gone with it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from prometheus_client.metrics_core import Metric
from sqlalchemy import Connection, delete, exists, func, insert, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from credit_common.db.chunks import chunks
from credit_common.db.engine import SessionFactories
from credit_common.db.keyset import keyset_after
from credit_common.db.transactions import RETRY, RetryPolicy, Transactions
from credit_common.delivery import leases
from credit_common.delivery.leases import Backlog, LeaseToken
from credit_common.ids import new_ids
from grant_service.adapters.events import _event_of as event_of
from grant_service.adapters.locking import is_postgres, locked
from grant_service.adapters.orm import (
    EVENTS,
    WEBHOOK_ATTEMPTS,
    WEBHOOK_CURSOR,
    WEBHOOK_DELIVERIES,
    WEBHOOK_ENDPOINTS,
)
from grant_service.domain.events import EventPosition, StoredEvent
from grant_service.domain.webhooks import (
    STATUS_DELIVERED,
    STATUS_FAILED,
    STATUS_PENDING,
    DeliveryAttempt,
    DisabledReason,
    NewDelivery,
    Trigger,
    WebhookEndpoint,
)

E, D, A = WEBHOOK_ENDPOINTS, WEBHOOK_DELIVERIES, WEBHOOK_ATTEMPTS


def _endpoint_of(row) -> WebhookEndpoint:
    return WebhookEndpoint(
        endpoint_id=row.endpoint_id,
        url=row.url,
        event_types=tuple(row.event_types.split()) if row.event_types else (),
        description=row.description,
        disabled_reason=DisabledReason(row.disabled_reason),
        secret=row.secret,
        previous_secret=row.previous_secret,
        previous_secret_expire_time=row.previous_secret_expire_time,
        create_time=row.create_time,
        update_time=row.update_time,
        failing_since=row.failing_since,
    )


def _endpoint_values(endpoint: WebhookEndpoint) -> dict[str, object]:
    return {
        "url": endpoint.url,
        "event_types": " ".join(endpoint.event_types),
        "description": endpoint.description,
        "disabled_reason": endpoint.disabled_reason.value,
        "secret": endpoint.secret,
        "previous_secret": endpoint.previous_secret,
        "previous_secret_expire_time": endpoint.previous_secret_expire_time,
        "failing_since": endpoint.failing_since,
        "create_time": endpoint.create_time,
        "update_time": endpoint.update_time,
    }


def _attempt_of(row) -> DeliveryAttempt:
    return DeliveryAttempt(
        attempt_id=row.attempt_id,
        delivery_id=row.delivery_id,
        endpoint_id=row.endpoint_id,
        event_id=row.event_id,
        attempt=row.attempt,
        attempt_time=row.attempt_time,
        duration=timedelta(microseconds=row.duration_us),
        http_status=row.http_status,
        error=row.error,
        next_attempt_time=row.next_attempt_time,
        trigger=Trigger(row.trigger),
    )


class SqlWebhookEndpointRepository:
    def __init__(self, session: Session) -> None:
        self.session = session

    def add(self, endpoint: WebhookEndpoint) -> None:
        self.session.execute(insert(E).values(endpoint_id=endpoint.endpoint_id, **_endpoint_values(endpoint)))

    def get(self, endpoint_id: str, *, for_update: bool = False) -> WebhookEndpoint | None:
        query = select(E).where(E.c.endpoint_id == endpoint_id)
        row = self.session.execute(locked(self.session, query) if for_update else query).first()
        return None if row is None else _endpoint_of(row)

    def list(self, after: tuple[datetime, str] | None, limit: int) -> list[WebhookEndpoint]:
        query = (
            select(E)
            .where(keyset_after((E.c.create_time, E.c.endpoint_id), after, descending=True))
            .order_by(E.c.create_time.desc(), E.c.endpoint_id.desc())
            .limit(limit)
        )
        return [_endpoint_of(row) for row in self.session.execute(query)]

    def enabled(self) -> list[WebhookEndpoint]:
        query = select(E).where(E.c.disabled_reason == "").order_by(E.c.create_time, E.c.endpoint_id)
        return [_endpoint_of(row) for row in self.session.execute(query)]

    def any_enabled(self) -> bool:
        query = select(E.c.endpoint_id).where(E.c.disabled_reason == "").limit(1)
        return self.session.execute(query).first() is not None

    def save(self, endpoint: WebhookEndpoint) -> None:
        self.session.execute(
            update(E).where(E.c.endpoint_id == endpoint.endpoint_id).values(**_endpoint_values(endpoint))
        )

    def delete(self, endpoint_id: str) -> None:
        self.session.execute(delete(A).where(A.c.endpoint_id == endpoint_id))
        self.session.execute(delete(D).where(D.c.endpoint_id == endpoint_id))
        self.session.execute(delete(E).where(E.c.endpoint_id == endpoint_id))


class SqlWebhookDeliveryRepository:
    def __init__(self, session: Session) -> None:
        self.session = session

    def add(self, deliveries: Sequence[NewDelivery]) -> list[int]:
        if not deliveries:
            return []
        dialect = postgresql if is_postgres(self.session) else sqlite
        rows = [
            {
                "endpoint_id": d.endpoint_id,
                "event_id": d.event_id,
                "event_seq": d.event_seq,
                "event_type": d.event_type,
                "body": d.body,
                "trigger": d.trigger.value,
                "trigger_key": d.trigger_key,
                "status": STATUS_PENDING,
                "attempts": 0,
                "next_attempt_at": d.created_at,
                "leased": False,
                "created_at": d.created_at,
            }
            for d in deliveries
        ]
        ids: list[int] = []
        for chunk in chunks(rows):
            statement = dialect.insert(D).values(list(chunk)).on_conflict_do_nothing().returning(D.c.id)
            ids.extend(self.session.scalars(statement))
        return ids

    def attempts(
        self, endpoint_id: str, event_id: str, after: tuple[datetime, str] | None, limit: int
    ) -> list[DeliveryAttempt]:
        query = select(A).where(keyset_after((A.c.attempt_time, A.c.attempt_id), after, descending=True))
        if endpoint_id:
            query = query.where(A.c.endpoint_id == endpoint_id)
        if event_id:
            query = query.where(A.c.event_id == event_id)
        query = query.order_by(A.c.attempt_time.desc(), A.c.attempt_id.desc()).limit(limit)
        return [_attempt_of(row) for row in self.session.execute(query)]

    def cursor(self) -> EventPosition | None:
        c = WEBHOOK_CURSOR.c
        row = self.session.execute(select(c.txid, c.seq).where(c.name == "events")).first()
        return None if row is None or (row.txid, row.seq) == (0, 0) else EventPosition(row.txid, row.seq)

    def lock_cursor(self) -> EventPosition | None:
        c = WEBHOOK_CURSOR.c
        query = select(c.txid, c.seq).where(c.name == "events")
        row = self.session.execute(locked(self.session, query)).first()
        if row is None:
            dialect = postgresql if is_postgres(self.session) else sqlite
            first = dialect.insert(WEBHOOK_CURSOR).values(name="events", txid=0, seq=0).on_conflict_do_nothing()
            self.session.execute(first)
            row = self.session.execute(locked(self.session, query)).one()
        return None if (row.txid, row.seq) == (0, 0) else EventPosition(row.txid, row.seq)

    def set_cursor(self, position: EventPosition) -> None:
        c = WEBHOOK_CURSOR.c
        moved = update(WEBHOOK_CURSOR).where(c.name == "events").values(txid=position.txid, seq=position.seq)
        self.session.execute(moved)

    def event(self, event_id: str) -> StoredEvent | None:
        row = self.session.execute(select(EVENTS).where(EVENTS.c.event_id == event_id)).first()
        return None if row is None else event_of(row)


# ---------------------------------------------------------------------- the workers' queue


@dataclass(frozen=True, slots=True)
class ClaimedWebhook:
    """A delivery leased to a worker: what to send, and the lease that fences its outcome."""

    token: LeaseToken  # id, lease end, attempts counting this one
    endpoint_id: str
    event_id: str
    event_type: str
    body: bytes
    trigger: Trigger


@dataclass(frozen=True, slots=True)
class Lane:
    endpoint: WebhookEndpoint
    claims: list[ClaimedWebhook]


class SqlWebhookQueue:
    """The delivery workers' side of `webhook_deliveries` (see the module docstring)."""

    def __init__(self, sessions: SessionFactories, retry: RetryPolicy = RETRY) -> None:
        self._transactions = Transactions.of(sessions, retry)
        leases.check_queue_table(D)

    def _in_flight(self, now: datetime):
        other = D.alias("in_flight")
        return exists().where(
            other.c.endpoint_id == E.c.endpoint_id,
            other.c.status == STATUS_PENDING,
            other.c.leased.is_(True),
            other.c.next_attempt_at > now,
        )

    def claim_lanes(
        self, now: datetime, lease_until: datetime, endpoints: int, batch: int, busy: Sequence[str] = ()
    ) -> list[Lane]:
        """Up to `endpoints` lanes (endpoints not in `busy`, enabled, with due deliveries and none in
        flight), each with up to `batch` due deliveries, leased until `lease_until`."""
        enabled = exists().where(E.c.endpoint_id == D.c.endpoint_id, E.c.disabled_reason == "")
        if endpoints < 1 or not leases.any_due(self._transactions, D, now, enabled):
            return []

        def claim(session: Session) -> list[Lane]:
            lanes: list[Lane] = []
            due_here = exists().where(D.c.endpoint_id == E.c.endpoint_id, leases.due(D, now))
            query = select(E).where(E.c.disabled_reason == "", due_here, ~self._in_flight(now))
            if busy:
                query = query.where(E.c.endpoint_id.not_in(list(busy)))
            query = query.order_by(E.c.endpoint_id).limit(endpoints)
            for row in session.execute(leases.skip_locked(session, query, E)).all():
                # Looked at again under the endpoint's lock: on PostgreSQL the select above may have
                # seen the endpoint idle just before another worker's claim of it committed.
                other = D.alias("other")
                busy_now = exists().where(
                    other.c.endpoint_id == row.endpoint_id,
                    other.c.status == STATUS_PENDING,
                    other.c.leased.is_(True),
                    other.c.next_attempt_at > now,
                )
                if session.execute(select(busy_now)).scalar():
                    continue
                rows = session.execute(
                    select(D.c.id, D.c.attempts, D.c.event_id, D.c.event_type, D.c.body, D.c.trigger)
                    .where(D.c.endpoint_id == row.endpoint_id, leases.due(D, now))
                    .order_by(D.c.id)
                    .limit(batch)
                ).all()
                if not rows:
                    continue
                leases.lease_rows(session, D, [r.id for r in rows], lease_until, leased=True)
                claims = [
                    ClaimedWebhook(
                        LeaseToken(r.id, lease_until, r.attempts + 1),
                        row.endpoint_id,
                        r.event_id,
                        r.event_type,
                        bytes(r.body),
                        Trigger(r.trigger),
                    )
                    for r in rows
                ]
                lanes.append(Lane(_endpoint_of(row), claims))
            return lanes

        return self._transactions.write(claim)

    def record(
        self, endpoint_id: str, records: Sequence[Any], *, now: datetime, disable_after: timedelta
    ) -> tuple[list[bool], bool]:
        """Write the attempts (the dispatcher's Records: claim, status, next_attempt_at, attempt,
        delivered_at) and the deliveries' new states (fenced: see leases.held; an attempt
        row is written either way, it happened), and the endpoint's health: `failing_since` cleared
        by a success, set by a failure, and the endpoint disabled (FAILING) once its attempts have
        all failed for `disable_after`. For each record whether it applied, and whether the
        endpoint was disabled now."""
        if not records:
            return [], False

        def write(session: Session) -> tuple[list[bool], bool]:
            applied: list[bool] = []
            disabled = False
            # The endpoint first, then its deliveries: the order of a claim and of the endpoint's
            # own changes, so none of them waits on another in a cycle. A deleted endpoint took
            # its deliveries and attempts with it: nothing to write.
            owner = session.execute(locked(session, select(E.c.endpoint_id).where(E.c.endpoint_id == endpoint_id)))
            if owner.first() is None:
                return [False] * len(records), False
            leases.lock_in_id_order(session, D, [r.claim.token.id for r in records])
            # Delivered ones in one statement (true whoever holds the lease: the receiver has it);
            # the others each under its own lease token (fenced).
            delivered = [r.claim.token.id for r in records if r.status == STATUS_DELIVERED]
            written: set[int] = set()
            if delivered:
                written = set(
                    session.scalars(
                        update(D)
                        .where(D.c.id.in_(delivered), D.c.status == STATUS_PENDING)
                        .values(status=STATUS_DELIVERED, leased=False, last_error=None, delivered_at=now)
                        .returning(D.c.id)
                    )
                )
            for r in records:
                if r.status == STATUS_DELIVERED:
                    applied.append(r.claim.token.id in written)
                    continue
                values: dict[str, object] = {"status": r.status, "leased": False, "last_error": r.attempt.error or None}
                if r.status == STATUS_PENDING:
                    values["next_attempt_at"] = r.next_attempt_at
                result = session.execute(update(D).where(leases.held(D, r.claim.token)).values(**values))
                applied.append(result.rowcount == 1)
            session.execute(
                insert(A),
                [
                    {
                        "attempt_id": attempt_id,
                        "delivery_id": r.attempt.delivery_id,
                        "endpoint_id": r.attempt.endpoint_id,
                        "event_id": r.attempt.event_id,
                        "attempt": r.attempt.attempt,
                        "attempt_time": r.attempt.attempt_time,
                        "duration_us": r.attempt.duration // timedelta(microseconds=1),
                        "http_status": r.attempt.http_status,
                        "error": r.attempt.error,
                        "next_attempt_time": r.attempt.next_attempt_time,
                        "trigger": r.attempt.trigger.value,
                    }
                    for r, attempt_id in zip(records, new_ids("wha", len(records)), strict=True)
                ],
            )
            oks = [i for i, r in enumerate(records) if r.status == STATUS_DELIVERED]
            endpoint = E.c.endpoint_id == endpoint_id
            if oks and oks[-1] == len(records) - 1:
                session.execute(update(E).where(endpoint).values(failing_since=None))
            else:
                if oks:  # failing since the first failure after the last success
                    failing = update(E).where(endpoint).values(failing_since=records[oks[-1] + 1].attempt.attempt_time)
                else:
                    failing = (
                        update(E)
                        .where(endpoint, E.c.failing_since.is_(None))
                        .values(failing_since=records[0].attempt.attempt_time)
                    )
                session.execute(failing)
                result = session.execute(
                    update(E)
                    .where(
                        E.c.endpoint_id == endpoint_id,
                        E.c.disabled_reason == "",
                        E.c.failing_since <= now - disable_after,
                    )
                    .values(disabled_reason=DisabledReason.FAILING.value, update_time=now)
                )
                disabled = result.rowcount == 1
            return applied, disabled

        return self._transactions.write(write)

    def renew(self, tokens: Sequence[LeaseToken], until: datetime) -> list[LeaseToken]:
        return leases.renew(self._transactions, D, tokens, until)

    def release(self, tokens: Sequence[LeaseToken], due_at: datetime) -> int:
        """Give back claims never sent (a worker stopping, an endpoint that stopped answering), due
        at `due_at`, not counted as attempts."""
        return leases.release(self._transactions, D, tokens, due_at, leased=False)

    def backlog(self, now: datetime) -> Backlog:
        """Deliveries due now to enabled endpoints, and how long the oldest has waited."""
        enabled = exists().where(E.c.endpoint_id == D.c.endpoint_id, E.c.disabled_reason == "")
        return leases.backlog(self._transactions, D, now, enabled)

    def statuses(self) -> dict[str, int]:
        """How many deliveries are in each status (tests, operators)."""
        query = select(D.c.status, func.count()).group_by(D.c.status)
        return self._transactions.read(lambda session: dict(session.execute(query).all()))


__all__ = [
    "STATUS_DELIVERED",
    "STATUS_FAILED",
    "ClaimedWebhook",
    "Lane",
    "SqlWebhookDeliveryRepository",
    "SqlWebhookEndpointRepository",
    "SqlWebhookQueue",
]


def webhook_gauges(connection: Connection, now: datetime) -> list[Metric]:
    """Webhook delivery for /metrics (credit_common.metrics.DatabaseGauges): deliveries not yet
    delivered, the age of the oldest of them, and the enabled endpoints failing without a success."""
    from prometheus_client.core import GaugeMetricFamily

    pending, oldest = connection.execute(
        select(func.count(), func.min(D.c.created_at)).where(D.c.status == STATUS_PENDING)
    ).one()
    failing = connection.execute(
        select(func.count()).where(E.c.failing_since.is_not(None), E.c.disabled_reason == "")
    ).scalar()
    backlog = GaugeMetricFamily(
        "credit_grants_webhook_backlog", "Webhook deliveries not yet delivered (due or backing off)."
    )
    backlog.add_metric([], pending)
    lag = GaugeMetricFamily(
        "credit_grants_webhook_lag_seconds",
        "Age of the oldest webhook delivery not yet delivered (0 when none is pending): how late delivery runs.",
    )
    lag.add_metric([], max((now - oldest).total_seconds(), 0.0) if oldest is not None else 0.0)
    endpoints = GaugeMetricFamily(
        "credit_grants_webhook_endpoints_failing",
        "Enabled webhook endpoints whose deliveries have been failing since their last success.",
    )
    endpoints.add_metric([], failing or 0)
    return [backlog, lag, endpoints]
