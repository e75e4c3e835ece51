"""The webhook delivery queue on both backends (the shared leases of credit_common.delivery):
one lane per endpoint at a time, a lease renewed moves the claim's token, an outcome under a lease
taken over is fenced out, claims given back are due again without counting an attempt."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from credit_common.db.engine import DatabaseSettings, create_db_engine, session_factories
from credit_common.db.migrations import upgrade
from grant_service.adapters.unit_of_work import SqlGrantUnitOfWork
from grant_service.adapters.webhooks import SqlWebhookQueue
from grant_service.domain.webhooks import (
    STATUS_PENDING,
    DeliveryAttempt,
    DisabledReason,
    NewDelivery,
    Trigger,
    WebhookEndpoint,
)
from grant_service.service_layer.webhook_dispatcher import Record

T0 = datetime(2026, 6, 1, 12, tzinfo=UTC)
LEASE = timedelta(seconds=60)


def _queue(url: str) -> tuple[SqlWebhookQueue, object]:
    engine = create_db_engine(DatabaseSettings(url=url))
    upgrade("grant_service.adapters:migrations", engine)
    sessions = session_factories(engine)
    with sessions.write() as session, session.begin():
        uow = SqlGrantUnitOfWork(session)
        for n in (1, 2):
            uow.webhooks.add(
                WebhookEndpoint(
                    f"whe_{n}", "https://example.com", (), "", DisabledReason.NONE, "whsec_x", None, None, T0, T0
                )
            )
        uow.webhook_deliveries.add(
            [
                NewDelivery(f"whe_{n}", f"evt_{i}", i, "CREDITS_GRANTED", b"{}", Trigger.EVENT, "", T0)
                for n in (1, 2)
                for i in range(5)
            ]
        )
    return SqlWebhookQueue(sessions), engine


def _failed(claim, now) -> Record:
    attempt = DeliveryAttempt(
        "",
        claim.token.id,
        claim.endpoint_id,
        claim.event_id,
        claim.token.attempts,
        now,
        timedelta(0),
        500,
        "HTTP 500",
        now + timedelta(seconds=5),
        Trigger.EVENT,
    )
    return Record(claim, STATUS_PENDING, now + timedelta(seconds=5), attempt)


def test_lanes_renewal_fencing_and_release(database_url_factory):
    queue, engine = _queue(database_url_factory("grant"))
    try:
        lanes = queue.claim_lanes(T0, T0 + LEASE, endpoints=5, batch=3)
        assert sorted(lane.endpoint.endpoint_id for lane in lanes) == ["whe_1", "whe_2"]
        assert all([c.event_id for c in lane.claims] == ["evt_0", "evt_1", "evt_2"] for lane in lanes)
        # an endpoint with a lane in flight gets no second one, even with due deliveries left
        assert queue.claim_lanes(T0, T0 + LEASE, endpoints=5, batch=3) == []
        lane = lanes[0]
        renewed = queue.renew([c.token for c in lane.claims], T0 + 2 * LEASE)
        assert [t.lease_until for t in renewed] == [T0 + 2 * LEASE] * 3
        # the old token is fenced out: its outcome is not written (the attempt row still is)
        applied, _ = queue.record(
            lane.endpoint.endpoint_id, [_failed(lane.claims[0], T0)], now=T0, disable_after=timedelta(days=5)
        )
        assert applied == [False]
        # given back: due at once, the attempt not counted
        assert queue.release(renewed, T0) == 3
        again = queue.claim_lanes(T0, T0 + LEASE, endpoints=5, batch=3, busy=["whe_2"])
        assert [(c.event_id, c.token.attempts) for c in again[0].claims] == [("evt_0", 1), ("evt_1", 1), ("evt_2", 1)]
        assert queue.backlog(T0).due == 4  # the rest of both endpoints
    finally:
        engine.dispose()
