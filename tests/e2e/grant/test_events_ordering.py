"""The event log's order on PostgreSQL under concurrent writers: a sequence number taken at insert
is not commit order, so a stream that has passed N could miss an event numbered below N that
commits later. Writers here commit out of order on purpose (transactions held open for a random
while after their insert, next to CreateGrant RPCs of many threads); a live WatchEvents stream and
one that disconnects and resumes from its last cursor must each see every event exactly once, in
the same order."""

from __future__ import annotations

import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from credit_common.clock import ManualClock
from credit_common.db.engine import DatabaseSettings, create_db_engine, session_factories
from grant_service.adapters.unit_of_work import SqlTransactions
from grant_service.domain.events import EventType, NewEvent
from grant_service.entrypoints import app
from grant_service.v1 import grant_service_pb2 as pb
from grant_service.v1 import grant_service_pb2_grpc
from tests.e2e.grant.conftest import REAL_NOW, subscription, utc
from tests.support.servers import serving

WRITERS = 6
PER_WRITER = 25
RPC_GRANTS = 60


def _collect(stub, total: int, cursor: str = "", stop_after: int | None = None) -> tuple[list[str], str]:
    """Event ids a stream sends from `cursor` until it has `total` (or `stop_after`: then it hangs up)."""
    ids: list[str] = []
    stream = stub.WatchEvents(pb.WatchEventsRequest(cursor=cursor), timeout=120)
    for message in stream:
        if message.HasField("event"):
            ids.append(message.event.event_id)
            cursor = message.event.cursor
            if len(ids) in (total, stop_after):
                break
    stream.cancel()
    return ids, cursor


@pytest.mark.parametrize("backend", ["postgres"], indirect=True)
def test_live_and_resumed_streams_miss_nothing_under_concurrent_writers(database_url_factory):
    url = database_url_factory("grant")
    clock = ManualClock(REAL_NOW)
    args = ["--catch-up-interval", "0", "--events-poll-interval-ms", "20", "--events-heartbeat-interval", "1"]
    with serving(app.DEFINITION, app.build, url, clock=clock, args=args) as (_, channel):
        stub = grant_service_pb2_grpc.GrantServiceStub(channel)
        stub.ApplySubscription(
            subscription("sub_o", "acme", utc(2026, 5, 1), [("10", None)])
        )  # 1 event (no catch-up runs)
        total = 1 + WRITERS * PER_WRITER + RPC_GRANTS
        live: dict[str, list[str]] = {}
        live_thread = threading.Thread(target=lambda: live.setdefault("ids", _collect(stub, total)[0]))
        live_thread.start()

        # A second process's writes (another replica): transactions held open after their insert.
        engine = create_db_engine(DatabaseSettings(url=url))
        transactions = SqlTransactions(session_factories(engine), clock)

        def direct(writer: int) -> None:
            rng = random.Random(writer)
            for n in range(PER_WRITER):

                def work(uow, n=n):
                    event_id = f"evt_w{writer}_{n}"
                    uow.events.add(
                        [NewEvent(event_id, EventType.USAGE_REJECTED, "acme", "ai-credits", "", REAL_NOW, event_id, {})]
                    )
                    time.sleep(rng.random() * 0.01)  # commit late, with an earlier seq than others' commits

                transactions.write(work)

        def one_off(n: int) -> None:
            stub.CreateGrant(
                pb.CreateGrantRequest(request_id=f"g{n}", customer_key="acme", currency_key="ai-credits", amount="1")
            )

        resumed: list[str] = []
        cursor = ""
        with ThreadPoolExecutor(WRITERS + 4) as pool:
            futures = [pool.submit(direct, w) for w in range(WRITERS)]
            futures += [pool.submit(one_off, n) for n in range(RPC_GRANTS)]
            # Meanwhile a client that hangs up every 37 events and resumes from its last cursor.
            while len(resumed) < total:
                ids, cursor = _collect(stub, total - len(resumed), cursor, stop_after=37)
                resumed.extend(ids)
            for future in futures:
                future.result()
        live_thread.join(120)
        engine.dispose()

    assert len(resumed) == total and len(set(resumed)) == total
    assert live["ids"] == resumed  # the same events, once each, in the same order
    assert {f"evt_w{w}_{n}" for w in range(WRITERS) for n in range(PER_WRITER)} <= set(resumed)


@pytest.mark.parametrize("backend", ["postgres"], indirect=True)
def test_a_stream_is_woken_by_another_replicas_commit(database_url_factory):
    """PostgreSQL: a replica's commit of events wakes the streams of every replica (NOTIFY), not at
    their next poll: here the poll is a minute, the stream's deadline 20 s."""
    url = database_url_factory("grant")
    clock = ManualClock(REAL_NOW)
    args = ["--catch-up-interval", "0", "--events-poll-interval-ms", "60000", "--events-heartbeat-interval", "60"]
    with (
        serving(app.DEFINITION, app.build, url, clock=clock, args=args) as (_, watching),
        serving(app.DEFINITION, app.build, url, clock=clock, args=args, migrate=False) as (_, writing),
    ):
        watcher = grant_service_pb2_grpc.GrantServiceStub(watching)
        writer = grant_service_pb2_grpc.GrantServiceStub(writing)
        stream = watcher.WatchEvents(pb.WatchEventsRequest(), timeout=20)
        threading.Timer(
            0.5, lambda: writer.ApplySubscription(subscription("sub_n", "woken", utc(2026, 5, 1), [("10", None)]))
        ).start()
        first = next(message for message in stream if message.HasField("event"))
        stream.cancel()
        assert first.event.subscription_changed.subscription_id == "sub_n"
