"""The webhook delivery queue on both backends (the shared leases of credit_common.delivery):
one lane per endpoint at a time, a lease renewed moves the claim's token, an outcome under a lease
taken over is fenced out, claims given back are due again without counting an attempt; and each of
the queue's transactions survives a lost race."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select

from credit_common.db.engine import DatabaseSettings, create_db_engine, session_factories
from credit_common.db.migrations import upgrade
from grant_service.adapters.orm import WEBHOOK_ATTEMPTS
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
from tests.support.lost_race import DEADLOCK, SERIALIZATION_FAILURE, lose_race

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


@pytest.mark.parametrize("sqlstate", [SERIALIZATION_FAILURE, DEADLOCK], ids=["serialization-failure", "deadlock"])
def test_each_transaction_of_the_queue_survives_a_lost_race(database_url_factory, sqlstate):
    """A claim, a renewal, a record and a release that lose a race (a deadlock, a serialization failure)
    run again from scratch on the shared runner (credit_common.db.transactions), as the request paths
    do: the worker's pass goes on instead of failing (a record lost so would have the deliveries sent
    again once their lease ends). Each failure is injected late in its transaction, after its first
    writes, so a try that was not rolled back whole would show."""
    queue, engine = _queue(database_url_factory("grant"))
    try:
        with lose_race(engine, "UPDATE webhook_deliveries SET", sqlstate, after=1) as race:  # the 2nd lane's
            lanes = queue.claim_lanes(T0, T0 + LEASE, endpoints=2, batch=3)
        assert race.count == 1
        assert sorted(lane.endpoint.endpoint_id for lane in lanes) == ["whe_1", "whe_2"]
        assert all([c.token.attempts for c in lane.claims] == [1, 1, 1] for lane in lanes)  # each counted once
        lane = next(lane for lane in lanes if lane.endpoint.endpoint_id == "whe_1")

        with lose_race(engine, "UPDATE webhook_deliveries SET", sqlstate, after=1) as race:  # the 2nd of 3 rows
            renewed = queue.renew([c.token for c in lane.claims], T0 + 2 * LEASE)
        assert race.count == 1
        assert [t.lease_until for t in renewed] == [T0 + 2 * LEASE] * 3  # the 1st row's renewal redone, not fenced

        claims = [replace(c, token=t) for c, t in zip(lane.claims, renewed, strict=True)]
        with lose_race(engine, "INSERT INTO webhook_attempts", sqlstate) as race:  # after the outcome's update
            applied, _ = queue.record(
                lane.endpoint.endpoint_id, [_failed(claims[0], T0)], now=T0, disable_after=timedelta(days=5)
            )
        assert race.count == 1
        assert applied == [True]  # the rolled-back try's outcome did not survive to fence the next
        with engine.connect() as connection:
            assert connection.execute(select(func.count()).select_from(WEBHOOK_ATTEMPTS)).scalar() == 1

        with lose_race(engine, "UPDATE webhook_deliveries SET", sqlstate, after=1) as race:
            assert queue.release([c.token for c in claims[1:]], T0) == 2
        assert race.count == 1
        assert queue.statuses() == {STATUS_PENDING: 10}
        # due: whe_1's two given back and each endpoint's two never claimed (not the failed one, nor whe_2's lane)
        assert queue.backlog(T0).due == 6
    finally:
        engine.dispose()
