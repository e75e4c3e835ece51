"""Two catalog outbox dispatchers in two processes (as in two catalog replicas) draining one outbox
on PostgreSQL, against a grant service that counts every call per (subscription, revision) and is
idempotent by revision like the real one: each revision is delivered once and in revision order;
with one dispatcher SIGKILLed in the middle, nothing is lost, every revision is applied once and in
order, and only the batch the dead one had claimed is sent again (answered ALREADY_APPLIED)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections import Counter, defaultdict
from concurrent import futures
from datetime import UTC, datetime
from pathlib import Path

import grpc
import pytest
from sqlalchemy import func, select

from catalog_service.adapters.orm import OutboxDeliveryRow
from catalog_service.adapters.outbox_sql import add_apply_request
from credit_common.db.engine import DatabaseSettings, create_db_engine, session_factories
from grant_service.v1 import grant_service_pb2 as gpb
from grant_service.v1 import grant_service_pb2_grpc as gpb_grpc
from tests.e2e.replicas.conftest import CATALOG_MIGRATIONS, migrated_database, wait_until
from tests.e2e.replicas.dispatcher_process import BATCH_SIZE

pytestmark = [pytest.mark.slow, pytest.mark.postgres]

REPO = Path(__file__).resolve().parents[3]
SUBSCRIPTIONS, REVISIONS = 200, 5


class CountingGrantService(gpb_grpc.GrantServiceServicer):
    """ApplySubscription only: counts calls per (subscription, revision); applies a revision newer
    than the last applied one (APPLIED), answers ALREADY_APPLIED / STALE otherwise."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.calls: Counter[tuple[str, int]] = Counter()
        self.applied: dict[str, list[int]] = defaultdict(list)  # revisions in the order applied

    def ApplySubscription(self, request, context):
        time.sleep(0.002)  # a little work, so that the dispatchers overlap
        with self.lock:
            key, revision = request.subscription_id, request.revision
            self.calls[key, revision] += 1
            current = self.applied[key][-1] if self.applied[key] else 0
            if revision > current:
                self.applied[key].append(revision)
                outcome, current = gpb.APPLY_OUTCOME_APPLIED, revision
            elif revision == current:
                outcome = gpb.APPLY_OUTCOME_ALREADY_APPLIED
            else:
                outcome = gpb.APPLY_OUTCOME_STALE
        return gpb.ApplySubscriptionResponse(outcome=outcome, current_revision=current)

    def total_calls(self) -> int:
        with self.lock:
            return sum(self.calls.values())


@pytest.fixture
def grant_fake():
    fake = CountingGrantService()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=16))
    gpb_grpc.add_GrantServiceServicer_to_server(fake, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield fake, f"127.0.0.1:{port}"
    server.stop(0)


class DispatcherProcess:
    def __init__(self, url: str, target: str, log_path: Path) -> None:
        self.log_path = log_path
        with open(log_path, "ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "tests.e2e.replicas.dispatcher_process", url, target],
                stdout=subprocess.PIPE,
                stderr=log,
                cwd=REPO,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )

    @property
    def running(self) -> bool:
        return self.process.poll() is None

    def log_tail(self) -> str:
        return self.log_path.read_text(errors="replace")[-3000:]

    def started(self) -> bool:
        return "outbox dispatcher started" in self.log_path.read_text(errors="replace")

    def stop(self) -> dict:
        """SIGTERM; the dispatcher's totals."""
        self.process.terminate()
        out, _ = self.process.communicate(timeout=30)
        assert self.process.returncode == 0, self.log_tail()
        return json.loads(out.decode().strip().splitlines()[-1])

    def kill(self) -> None:
        self.process.kill()
        self.process.communicate(timeout=30)


def _seed_outbox(url: str) -> None:
    """SUBSCRIPTIONS subscriptions with REVISIONS revisions each, all queued at once."""
    engine = create_db_engine(DatabaseSettings(url=url))
    try:
        now = datetime.now(UTC)
        with session_factories(engine).write() as session, session.begin():
            for revision in range(1, REVISIONS + 1):
                for i in range(SUBSCRIPTIONS):
                    request = gpb.ApplySubscriptionRequest(subscription_id=f"sub_{i}", customer_key=f"c{i}")
                    request.revision = revision
                    add_apply_request(session, OutboxDeliveryRow.__table__, request, now=now)
    finally:
        engine.dispose()


def _outbox_status(url: str) -> Counter[str]:
    engine = create_db_engine(DatabaseSettings(url=url, pool_size=1, max_overflow=0))
    try:
        with engine.connect() as connection:
            rows = connection.execute(
                select(OutboxDeliveryRow.status, func.count()).group_by(OutboxDeliveryRow.status)
            ).all()
        return Counter(dict(rows))
    finally:
        engine.dispose()


def _start_two(url: str, target: str, tmp_path: Path) -> list[DispatcherProcess]:
    dispatchers = [DispatcherProcess(url, target, tmp_path / f"dispatcher-{n}.log") for n in range(2)]
    wait_until(lambda: all(d.started() for d in dispatchers), "both dispatchers to start", processes=dispatchers)
    return dispatchers


def _assert_every_revision_applied_once_in_order(fake: CountingGrantService) -> None:
    expected = list(range(1, REVISIONS + 1))
    assert len(fake.applied) == SUBSCRIPTIONS
    wrong = {key: revisions for key, revisions in fake.applied.items() if revisions != expected}
    assert wrong == {}, f"revisions applied out of order or not at all: {dict(list(wrong.items())[:5])}"
    assert set(fake.calls) == {(f"sub_{i}", r) for i in range(SUBSCRIPTIONS) for r in expected}


def test_two_dispatchers_deliver_each_revision_once_and_in_order(postgres_server, grant_fake, tmp_path):
    fake, target = grant_fake
    url = migrated_database(postgres_server, "outbox_replicas", CATALOG_MIGRATIONS)
    dispatchers = _start_two(url, target, tmp_path)
    try:
        _seed_outbox(url)
        total = SUBSCRIPTIONS * REVISIONS
        wait_until(lambda: _outbox_status(url)["delivered"] == total, "every delivery", processes=dispatchers)
    finally:
        totals = [d.stop() for d in dispatchers]
    _assert_every_revision_applied_once_in_order(fake)
    assert set(fake.calls.values()) == {1}, "a revision was sent twice"
    delivered = [t["delivered"] for t in totals]
    assert sum(delivered) == total and all(n > 0 for n in delivered), delivered
    assert [t["fenced"] for t in totals] == [0, 0]


def test_a_dispatcher_sigkilled_mid_drain_loses_nothing(postgres_server, grant_fake, tmp_path):
    fake, target = grant_fake
    url = migrated_database(postgres_server, "outbox_kill", CATALOG_MIGRATIONS)
    victim, survivor = _start_two(url, target, tmp_path)
    try:
        _seed_outbox(url)
        total = SUBSCRIPTIONS * REVISIONS
        wait_until(lambda: fake.total_calls() >= 300, "the drain to be under way", processes=[victim, survivor])
        victim.kill()
        assert _outbox_status(url)["delivered"] < total, "too late: the outbox was drained before the kill"
        # the victim's claims come back when their lease ends; the survivor delivers them
        wait_until(lambda: _outbox_status(url)["delivered"] == total, "the survivor to finish", processes=[survivor])
    finally:
        survivor.stop()
        victim.kill()
    _assert_every_revision_applied_once_in_order(fake)
    resent = fake.total_calls() - total
    assert 0 <= resent <= BATCH_SIZE, f"{resent} deliveries sent again; at most the victim's one batch may be"
    assert _outbox_status(url) == {"delivered": total}
