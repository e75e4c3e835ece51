"""A read never misses a grant that a concurrent timer sweep is committing.

The sweep claims due schedules with FOR UPDATE SKIP LOCKED so that replicas share
the work; a read's own catch-up must not skip them too, or it would answer before
the sweep commits and miss the grant. PostgreSQL only: SQLite serialises writers."""

from __future__ import annotations

import threading
import time
from datetime import timedelta

import pytest

from credit_common.clock import ManualClock
from credit_common.db.engine import DatabaseSettings, create_db_engine, session_factories
from credit_common.testing.servers import serving
from grant_service.adapters.orm import REAL_TIME
from grant_service.entrypoints import app
from grant_service.service_layer.issuance import issue_due_batch
from grant_service.v1 import grant_service_pb2 as pb
from grant_service.v1 import grant_service_pb2_grpc
from tests.e2e.grant.conftest import REAL_NOW, subscription


@pytest.mark.parametrize("backend", ["postgresql"], indirect=True)
def test_read_waits_for_a_sweep_that_is_issuing_the_customers_grant(database_url_factory):
    url = database_url_factory("grant")
    clock = ManualClock(REAL_NOW)
    start = REAL_NOW + timedelta(hours=1)
    args = ["--catch-up-interval", "0"]
    with serving(app.DEFINITION, app.build, url, clock=clock, args=args) as (_running, channel):
        stub = grant_service_pb2_grpc.GrantServiceStub(channel)
        stub.ApplySubscription(subscription("sub-1", "acme", start, [("50000", None)]), timeout=10)
        clock.set(start + timedelta(minutes=1))  # period 0 is due; the timer is off, nothing issued it yet

        engine = create_db_engine(DatabaseSettings(url=url))
        sweep = session_factories(engine).write()
        try:
            sweep.begin()
            handled, issued, _ = issue_due_batch(sweep, REAL_TIME, clock.now(), None, 10)
            assert (handled, issued) == (1, 1)  # the sweep holds the schedule, its grant not yet committed

            answers: list[pb.ListGrantsResponse] = []
            reader = threading.Thread(
                target=lambda: answers.append(stub.ListGrants(pb.ListGrantsRequest(customer_key="acme"), timeout=30))
            )
            reader.start()
            time.sleep(0.5)  # let the read reach the locked schedule (not an assertion)
            sweep.commit()
            reader.join(timeout=30)
        finally:
            sweep.close()
            engine.dispose()

        assert len(answers) == 1
        assert [(g.period_index, g.amount) for g in answers[0].grants] == [(0, "50000")]
