"""Two grant-service processes (replicas) on one PostgreSQL database delivering webhooks to one
receiver: each endpoint is served by one lane at a time across both, every event reaches every
endpoint, in order while nobody dies; with one replica SIGKILLed mid-delivery, every event still
arrives at least once (the dead one's leased deliveries are taken over when their lease ends), only
what it had claimed may arrive twice, and every delivery ends delivered with its attempts recorded."""

from __future__ import annotations

import threading
import time
from collections import Counter
from datetime import UTC, datetime
from decimal import Decimal

import pytest
from sqlalchemy import func, select

from credit_common.db.engine import DatabaseSettings, create_db_engine, session_factories
from grant_service.adapters.orm import WEBHOOK_ATTEMPTS, WEBHOOK_DELIVERIES
from grant_service.adapters.unit_of_work import SqlGrantUnitOfWork
from grant_service.domain.events import EventType, NewEvent
from grant_service.v1 import grant_service_pb2_grpc as gpb_grpc
from grant_service.v1 import webhooks_pb2 as wpb
from tests.e2e.replicas.conftest import GRANT_MIGRATIONS, migrated_database, wait_until
from tests.support.webhook_receiver import receiving

pytestmark = [pytest.mark.slow, pytest.mark.postgres]

ENDPOINTS, EVENTS, BATCH = 6, 120, 20
GRANTED = EventType.CREDITS_GRANTED


def _replica(services, url: str):
    return services(
        "grant_service",
        "--database-url",
        url,
        "--catch-up-interval",
        "0",
        "--webhook-allow-http",
        "--webhook-allow-private",
        "--webhook-poll-interval-ms",
        "50",
        "--webhook-timeout-ms",
        "2000",
        "--webhook-connect-timeout-ms",
        "1000",
        "--webhook-lease-s",
        "10",
        "--webhook-batch-size",
        str(BATCH),
    )


def _add_events(url: str, count: int) -> list[str]:
    engine = create_db_engine(DatabaseSettings(url=url))
    ids = [f"evt_{n:05d}" for n in range(count)]
    now = datetime.now(UTC)
    try:
        with session_factories(engine).write() as session, session.begin():
            SqlGrantUnitOfWork(session).events.add(
                [
                    NewEvent(
                        i, EventType.CREDITS_GRANTED, "acme", "ai-credits", "", now, f"t:{i}", {"amount": Decimal(1)}
                    )
                    for i in ids
                ]
            )
    finally:
        engine.dispose()
    return ids


def _rows(url: str):
    engine = create_db_engine(DatabaseSettings(url=url, pool_size=1, max_overflow=0))
    try:
        with engine.connect() as connection:
            statuses = Counter(
                dict(connection.execute(select(WEBHOOK_DELIVERIES.c.status, func.count()).group_by("status")).all())
            )
            unattempted = connection.scalar(
                select(func.count())
                .select_from(WEBHOOK_DELIVERIES)
                .where(
                    ~select(WEBHOOK_ATTEMPTS.c.attempt_id)
                    .where(
                        WEBHOOK_ATTEMPTS.c.delivery_id == WEBHOOK_DELIVERIES.c.id,
                        WEBHOOK_ATTEMPTS.c.http_status == 204,
                    )
                    .exists()
                )
            )
        return statuses, unattempted
    finally:
        engine.dispose()


def _setup(services, url, receiver):
    replicas = [_replica(services, url), _replica(services, url)]
    stub = gpb_grpc.GrantServiceStub(replicas[0].channel())
    endpoints = [
        stub.CreateWebhookEndpoint(
            wpb.CreateWebhookEndpointRequest(url=f"{receiver.url}/{n}"), timeout=30
        ).endpoint.endpoint_id
        for n in range(ENDPOINTS)
    ]
    time.sleep(0.01)  # events recorded after the endpoints were created (the fan-out's rule)
    return replicas, endpoints


def _per_endpoint(receiver) -> dict[str, list[str]]:
    with receiver.lock:
        received = list(receiver.received)
    paths: dict[str, list[str]] = {}
    for r in received:
        paths.setdefault(r.path, []).append(r.headers["webhook-id"])
    return paths


class SlowAnswers:
    """Each request takes a few milliseconds, so that deliveries overlap the kill."""

    def __init__(self, receiver) -> None:
        self.gate = threading.Event()
        receiver.hold = self.gate
        threading.Thread(target=self._tick, daemon=True).start()

    def _tick(self) -> None:
        while True:
            self.gate.set()
            time.sleep(0.003)
            self.gate.clear()


def test_two_replicas_deliver_every_event_to_every_endpoint_in_order(postgres_server, services):
    url = migrated_database(postgres_server, "webhook_replicas", GRANT_MIGRATIONS)
    with receiving() as receiver:
        replicas, _ = _setup(services, url, receiver)
        ids = _add_events(url, EVENTS)
        total = ENDPOINTS * EVENTS
        wait_until(lambda: _rows(url)[0]["delivered"] == total, "every delivery", processes=replicas, limit_s=120)
        paths = _per_endpoint(receiver)
        assert sorted(paths) == [f"/hooks/{n}" for n in range(ENDPOINTS)]
        assert all(got == ids for got in paths.values()), "an endpoint got events out of order or twice"
        assert _rows(url) == (Counter({"delivered": total}), 0)
        for replica in replicas:
            assert replica.stop() == 0


def test_a_replica_sigkilled_mid_delivery_loses_nothing(postgres_server, services):
    url = migrated_database(postgres_server, "webhook_kill", GRANT_MIGRATIONS)
    with receiving() as receiver:
        SlowAnswers(receiver)
        (victim, survivor), _ = _setup(services, url, receiver)
        ids = _add_events(url, EVENTS)
        total = ENDPOINTS * EVENTS
        wait_until(lambda: receiver.count() >= total // 4, "delivery to be under way", processes=[victim, survivor])
        victim.kill()
        assert receiver.count() < total, "too late: everything was delivered before the kill"
        wait_until(
            lambda: _rows(url)[0]["delivered"] == total, "the survivor to finish", processes=[survivor], limit_s=120
        )
        paths = _per_endpoint(receiver)
        for got in paths.values():
            assert set(got) == set(ids), "an event never arrived"
        twice = sum(len(got) - len(set(got)) for got in paths.values())
        assert twice <= ENDPOINTS * BATCH, f"{twice} events arrived twice: more than the victim could have claimed"
        assert _rows(url) == (Counter({"delivered": total}), 0)
        assert survivor.stop() == 0
