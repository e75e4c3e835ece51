"""Two real catalog processes (`python -m catalog_service serve --migrate`) on one PostgreSQL
catalog database, each with its own outbox dispatcher, in front of the real grant service. Each
catalog calls the grant service through its own counting proxy, so every subscription revision
sent (ApplySubscription, or an item of ApplySubscriptions) is recorded with the catalog that
sent it, in arrival order, with the grant service's outcome.

Subscriptions are provisioned and amended through both catalogs (revisions 1 to 3), and both
dispatchers poll the shared outbox: every (subscription, revision) is applied exactly once and
the revisions of a subscription arrive in order; both catalogs deliver some. With one catalog
SIGKILLed while it has a batch in flight (the grant side held back, a backlog queued), the
survivor delivers everything once the dead one's lease ends: nothing lost, and nothing sent twice
but the dead one's batch (answered ALREADY_APPLIED)."""

from __future__ import annotations

import threading
import uuid
from collections import Counter, defaultdict
from collections.abc import Iterator
from concurrent import futures
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import pytest
from sqlalchemy import select

from catalog_service.adapters.orm import OutboxDeliveryRow
from catalog_service.v1 import catalog_service_pb2 as pb
from catalog_service.v1 import catalog_service_pb2_grpc as pb_grpc
from credit_common.db.engine import DatabaseSettings, create_db_engine
from grant_service.v1 import grant_service_pb2 as gpb
from grant_service.v1 import grant_service_pb2_grpc as gpb_grpc
from tests.e2e.handoff.conftest import FAST_RETRIES, call, setup_catalog
from tests.e2e.replicas.conftest import wait_until
from tests.support.auth import caller_credentials
from tests.support.processes import ServiceProcess

pytestmark = [pytest.mark.slow, pytest.mark.postgres]

SUBSCRIPTIONS = 100
BATCH_SIZE = 4  # claimed 4 at a time, sent in one ApplySubscriptions call per pass
LEASE_S = 5  # the dispatcher wants at least twice a pass's worst case (one 2 s deadline)
FORWARD_DEADLINE_S = 10.0
CATALOG_ARGS = [
    *FAST_RETRIES,
    "--outbox-batch-size",
    str(BATCH_SIZE),
    "--outbox-lease-s",
    str(LEASE_S),
    "--outbox-poll-interval-ms",
    "100",
    "--grant-deadline-ms",
    "2000",
]


@dataclass
class Call:
    catalog: str
    subscription_id: str
    revision: int
    outcome: int | None = None  # the grant service's ApplyOutcome, None until it answered


@dataclass
class Recorder:
    """Every ApplySubscription forwarded to the grant service, in arrival order."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    calls: list[Call] = field(default_factory=list)
    rejected: Counter[str] = field(default_factory=Counter)  # refused while the grant side was "down"

    def snapshot(self) -> list[Call]:
        with self.lock:
            return list(self.calls)


class CountingProxy(gpb_grpc.GrantServiceServicer):
    """A gRPC server in front of the real grant service for one catalog. `mode`: "forward";
    "down" (ApplySubscription fails UNAVAILABLE, as if the grant service were stopped); "hold"
    (ApplySubscription waits until the mode changes, then is forwarded, even if its caller died:
    the request was on the wire)."""

    def __init__(self, name: str, target: str, recorder: Recorder) -> None:
        self.name = name
        self.recorder = recorder
        self.mode = "forward"
        self.held = 0
        self._changed = threading.Condition()
        self._channel = grpc.insecure_channel(target)
        self._stub = gpb_grpc.GrantServiceStub(self._channel)
        self._server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
        gpb_grpc.add_GrantServiceServicer_to_server(self, self._server)
        self.port = self._server.add_insecure_port("127.0.0.1:0")
        self._server.start()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def set_mode(self, mode: str) -> None:
        with self._changed:
            self.mode = mode
            self._changed.notify_all()

    def _gate(self, context) -> None:
        with self._changed:
            if self.mode == "down":
                with self.recorder.lock:
                    self.recorder.rejected[self.name] += 1
                context.abort(grpc.StatusCode.UNAVAILABLE, "proxy: the grant service is down")
            self.held += self.mode == "hold"
            self._changed.wait_for(lambda: self.mode != "hold")

    def ApplySubscription(self, request, context):
        self._gate(context)
        record = Call(self.name, request.subscription_id, request.revision)
        with self.recorder.lock:
            self.recorder.calls.append(record)
        reply = self._stub.ApplySubscription(request, timeout=FORWARD_DEADLINE_S, metadata=caller_credentials(context))
        with self.recorder.lock:
            record.outcome = reply.outcome
        return reply

    def ApplySubscriptions(self, request, context):
        """The batch call (what the dispatcher sends): one recorded call per item."""
        self._gate(context)
        records = [Call(self.name, r.subscription_id, r.revision) for r in request.requests]
        with self.recorder.lock:
            self.recorder.calls.extend(records)
        reply = self._stub.ApplySubscriptions(request, timeout=FORWARD_DEADLINE_S, metadata=caller_credentials(context))
        with self.recorder.lock:
            for record, result in zip(records, reply.results, strict=True):
                record.outcome = result.outcome
        return reply

    def ApplyCreditCurrency(self, request, context):
        return self._stub.ApplyCreditCurrency(request, timeout=FORWARD_DEADLINE_S, metadata=caller_credentials(context))

    def GetTestClock(self, request, context):
        return self._stub.GetTestClock(request, timeout=FORWARD_DEADLINE_S, metadata=caller_credentials(context))

    def close(self) -> None:
        self.set_mode("forward")
        self._server.stop(0)
        self._channel.close()


@dataclass
class Replicas:
    grant: ServiceProcess
    catalogs: list[ServiceProcess]
    proxies: list[CountingProxy]
    recorder: Recorder
    catalog_url: str
    stubs: list[pb_grpc.CatalogServiceStub] = field(default_factory=list)


@pytest.fixture
def replicas(postgres_server, tmp_path: Path) -> Iterator[Replicas]:
    """The grant service, two counting proxies to it and two catalog processes (A and B, each
    through its own proxy) on one catalog database; everything stopped after the test."""
    suffix = uuid.uuid4().hex[:8]
    catalog_url = postgres_server.create_database(f"catalog_replicas_{suffix}")
    grant = ServiceProcess.grant(
        postgres_server.create_database(f"catalog_replicas_grant_{suffix}"),
        log_dir=tmp_path,
        args=["--catch-up-interval", "0.5", "--log-level", "WARNING"],
    )
    recorder = Recorder()
    proxies: list[CountingProxy] = []
    catalogs: list[ServiceProcess] = []
    channels: list[grpc.Channel] = []
    try:
        grant.start()
        for name in ("A", "B"):
            proxies.append(CountingProxy(name, grant.address, recorder))
            catalog = ServiceProcess.catalog(
                catalog_url,
                grant_address=proxies[-1].address,
                grant_api_key=grant.sync_key(),  # forwarded by the proxy
                log_dir=tmp_path,
                name=f"catalog-{name}",
                args=CATALOG_ARGS,  # log level INFO: each delivery is logged
            )
            catalogs.append(catalog.start())  # one after the other: the second one's --migrate is a no-op
            channels.append(catalog.channel())
        yield Replicas(
            grant, catalogs, proxies, recorder, catalog_url, [pb_grpc.CatalogServiceStub(c) for c in channels]
        )
    finally:
        for proxy in proxies:
            proxy.set_mode("forward")  # nothing left held: the catalogs stop promptly
        for channel in channels:
            channel.close()
        for catalog in catalogs:
            catalog.stop()
        grant.stop()
        for proxy in proxies:
            proxy.close()


def _customer(i: int) -> str:
    return f"cust-{i:03d}"


def provision_and_amend(stubs: list[pb_grpc.CatalogServiceStub]) -> dict[str, int]:
    """SUBSCRIPTIONS subscriptions, provisioned alternately through each catalog; every third one
    amended once through the other catalog, every sixth a second time (revisions 1 to 3).
    Returns the last revision of each subscription, by id."""
    setup_catalog(stubs[0])
    last: dict[str, int] = {}
    for i in range(SUBSCRIPTIONS):
        key = _customer(i)
        stub, other = stubs[i % 2], stubs[(i + 1) % 2]
        call(stub.CreateCustomer, pb.CreateCustomerRequest(request_id=f"cc-{key}", customer=pb.Customer(key=key)))
        subscription = call(
            stub.ProvisionSubscription,
            pb.ProvisionSubscriptionRequest(
                request_id=f"ps-{key}",
                customer_key=key,
                plan_key="enterprise",
                entitlement_values={"ai-credits-monthly": "50000"},
            ),
        ).subscription
        last[subscription.subscription_id] = subscription.revision
        for amendment in range(2 if i % 6 == 0 else 1 if i % 3 == 0 else 0):
            amended = call(
                (other if amendment == 0 else stub).AmendSubscription,
                pb.AmendSubscriptionRequest(
                    request_id=f"am-{key}-{amendment}",
                    subscription_id=subscription.subscription_id,
                    entitlement_values={"ai-credits-monthly": str(60000 + 10000 * amendment)},
                ),
            ).subscription
            last[subscription.subscription_id] = amended.revision
    return last


def outbox_rows(url: str) -> list[tuple[str, str, int, str]]:
    engine = create_db_engine(DatabaseSettings(url=url, pool_size=1, max_overflow=0))
    try:
        with engine.connect() as connection:
            return [
                tuple(r)
                for r in connection.execute(
                    select(
                        OutboxDeliveryRow.kind,
                        OutboxDeliveryRow.aggregate_key,
                        OutboxDeliveryRow.revision,
                        OutboxDeliveryRow.status,
                    )
                ).all()
            ]
    finally:
        engine.dispose()


def all_delivered(url: str, expected: int) -> bool:
    rows = [r for r in outbox_rows(url) if r[0] == "subscription"]
    return len(rows) == expected and all(r[3] == "delivered" for r in rows)


def delivered_by(catalog: ServiceProcess) -> int:
    """Subscription revisions the catalog logged as delivered (recorded as such in the outbox)."""
    return sum(
        1
        for r in catalog.log_records()
        if r.get("message") == "outbox delivery delivered" and r.get("kind") == "subscription"
    )


def assert_each_revision_applied_once_in_order(recorder: Recorder, last: dict[str, int]) -> list[Call]:
    """Row by row: every (subscription, revision) was APPLIED exactly once, the calls for a
    subscription arrived in non-decreasing revision order and were applied as 1, 2, ... its last
    revision; nothing was STALE. Returns the calls answered ALREADY_APPLIED (resends)."""
    calls = recorder.snapshot()
    assert [c for c in calls if c.outcome is None] == [], "a forwarded call got no answer"
    applied = Counter((c.subscription_id, c.revision) for c in calls if c.outcome == gpb.APPLY_OUTCOME_APPLIED)
    expected = {(s, r) for s, n in last.items() for r in range(1, n + 1)}
    assert set(applied) == expected, (
        f"missing: {sorted(expected - set(applied))[:5]}, unexpected: {sorted(set(applied) - expected)[:5]}"
    )
    assert {pair: n for pair, n in applied.items() if n != 1} == {}, "a revision was applied twice"
    arrivals: dict[str, list[int]] = defaultdict(list)
    for c in calls:
        arrivals[c.subscription_id].append(c.revision)
    assert {s: revs for s, revs in arrivals.items() if revs != sorted(revs)} == {}, "revisions arrived out of order"
    assert [c for c in calls if c.outcome == gpb.APPLY_OUTCOME_STALE] == []
    resends = [c for c in calls if c.outcome != gpb.APPLY_OUTCOME_APPLIED]
    assert {c.outcome for c in resends} <= {gpb.APPLY_OUTCOME_ALREADY_APPLIED}
    return resends


def test_two_catalog_processes_deliver_each_revision_once_and_in_order(replicas: Replicas):
    last = provision_and_amend(replicas.stubs)
    expected = sum(last.values())
    assert expected > SUBSCRIPTIONS and set(last.values()) == {1, 2, 3}
    wait_until(lambda: all_delivered(replicas.catalog_url, expected), "every delivery", processes=replicas.catalogs)
    resends = assert_each_revision_applied_once_in_order(replicas.recorder, last)
    assert resends == [], "a revision was sent twice with no replica failing"
    assert {r[3] for r in outbox_rows(replicas.catalog_url)} == {"delivered"}
    sent = Counter(c.catalog for c in replicas.recorder.snapshot())
    assert sent["A"] > 0 and sent["B"] > 0, sent
    for catalog in replicas.catalogs:
        assert catalog.stop() == 0, catalog.log_tail()
    # Read once the processes have stopped: a log line is written up to 50 ms after its event
    # (credit_common.logging), and a clean stop writes every line still queued.
    logged = [delivered_by(c) for c in replicas.catalogs]
    assert [sent["A"], sent["B"]] == logged, (sent, logged)


def test_a_catalog_sigkilled_with_a_batch_in_flight_loses_nothing(replicas: Replicas):
    victim, survivor = replicas.catalogs
    victim_proxy = replicas.proxies[0]
    for proxy in replicas.proxies:
        proxy.set_mode("down")  # the grant service "stops": a backlog builds
    last = provision_and_amend(replicas.stubs)
    expected = sum(last.values())
    wait_until(
        lambda: replicas.recorder.rejected["A"] > 0 and replicas.recorder.rejected["B"] > 0,
        "both dispatchers to try and fail",
        processes=replicas.catalogs,
    )
    victim_proxy.set_mode("hold")  # the victim's next call hangs, its batch claimed
    wait_until(lambda: victim_proxy.held > 0, "the victim to have a call in flight", processes=replicas.catalogs)
    victim.kill()
    for proxy in replicas.proxies:
        proxy.set_mode("forward")  # the grant service is back; the victim's call in flight goes through
    assert not all_delivered(replicas.catalog_url, expected), "too late: nothing was left for the survivor"
    wait_until(lambda: all_delivered(replicas.catalog_url, expected), "the survivor to finish", processes=[survivor])
    resends = assert_each_revision_applied_once_in_order(replicas.recorder, last)
    # the victim's call in flight was applied, but its outcome never recorded: the survivor sends it
    # again once the lease ends, and the grant service answers ALREADY_APPLIED
    assert 1 <= len(resends) <= BATCH_SIZE, f"{len(resends)} sent twice; at most the victim's batch may be"
    victim_calls = {(c.subscription_id, c.revision) for c in replicas.recorder.snapshot() if c.catalog == "A"}
    assert {(c.subscription_id, c.revision) for c in resends} <= victim_calls
    assert {c.catalog for c in resends} <= {"B"}
    assert {r[3] for r in outbox_rows(replicas.catalog_url)} == {"delivered"}
    assert survivor.stop() == 0, survivor.log_tail()
