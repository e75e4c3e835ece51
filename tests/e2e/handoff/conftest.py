"""Real processes for the handoff tests: `python -m grant_service` and
`python -m catalog_service` (tests.support.processes) on SQLite files or
PostgreSQL databases, optionally with a gRPC proxy in front of the grant
service that fails or slows ApplySubscription calls."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from concurrent import futures
from dataclasses import dataclass, field

import grpc
import pytest

from catalog_service.v1 import catalog_service_pb2 as pb
from catalog_service.v1 import catalog_service_pb2_grpc as pb_grpc
from grant_service.v1 import grant_service_pb2 as grant_pb2
from grant_service.v1 import grant_service_pb2_grpc as grant_pb2_grpc
from tests.support.auth import caller_credentials
from tests.support.processes import ServiceProcess

WAIT_S = 120.0
DEADLINE_S = 5.0


def wait_for(predicate: Callable[[], object], what: str, processes: tuple[ServiceProcess, ...] = (), timeout_s=WAIT_S):
    """Poll `predicate` until it returns something truthy (returned); fail, with
    the processes' logs, if one of them died or it never happens."""
    deadline = time.monotonic() + timeout_s
    while True:
        result = predicate()
        if result:
            return result
        for process in processes:
            if process.process is not None and not process.running:
                pytest.fail(f"{process.name} exited: {process.log_tail()}")
        if time.monotonic() > deadline:
            logs = "\n".join(f"--- {p.name}\n{p.log_tail()}" for p in processes)
            pytest.fail(f"timed out waiting for {what}\n{logs}")
        time.sleep(0.05)


class GrantProxy(grant_pb2_grpc.GrantServiceServicer):
    """A real gRPC server in front of the real grant service. Forwards the
    methods the catalog calls (with the grant service's status on failure);
    ApplySubscription fails with UNAVAILABLE on every `fail_every`-th call (0:
    never) and while `paused`, and waits `delay_s` before forwarding."""

    def __init__(self, target: str, *, fail_every: int = 0, delay_s: float = 0.0, paused: bool = False) -> None:
        self.fail_every = fail_every
        self.delay_s = delay_s
        self.paused = paused
        self.calls = 0
        self.failed = 0
        self.forwarded = 0
        self._lock = threading.Lock()
        self._channel = grpc.insecure_channel(target)
        self._stub = grant_pb2_grpc.GrantServiceStub(self._channel)
        self._server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
        grant_pb2_grpc.add_GrantServiceServicer_to_server(self, self._server)
        self.port = self._server.add_insecure_port("127.0.0.1:0")

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def ApplySubscription(self, request, context):
        with self._lock:
            self.calls += 1
            fail = self.paused or (self.fail_every and self.calls % self.fail_every == 0)
            self.failed += bool(fail)
        if fail:
            context.abort(grpc.StatusCode.UNAVAILABLE, "proxy: injected failure")
        if self.delay_s:
            time.sleep(self.delay_s)
        reply = self._forward(self._stub.ApplySubscription, request, context)
        with self._lock:
            self.forwarded += 1
        return reply

    def ApplyCreditCurrency(self, request, context):
        return self._forward(self._stub.ApplyCreditCurrency, request, context)

    def GetTestClock(self, request, context):
        return self._forward(self._stub.GetTestClock, request, context)

    @staticmethod
    def _forward(method, request, context):
        try:
            return method(request, timeout=DEADLINE_S, metadata=caller_credentials(context))
        except grpc.RpcError as error:
            context.abort(error.code(), error.details())

    def __enter__(self) -> GrantProxy:
        self._server.start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.stop(0)
        self._channel.close()


@dataclass
class Deployment:
    """Both services as processes (not started), stubs to them, and the proxy
    between them if any."""

    grant: ServiceProcess
    catalog: ServiceProcess
    proxy: GrantProxy | None = None
    _channels: list[grpc.Channel] = field(default_factory=list)

    def _stub(self, process: ServiceProcess, stub_type):
        channel = process.channel()
        self._channels.append(channel)
        return stub_type(channel)

    @property
    def catalog_stub(self) -> pb_grpc.CatalogServiceStub:
        return self._stub(self.catalog, pb_grpc.CatalogServiceStub)

    @property
    def grant_stub(self) -> grant_pb2_grpc.GrantServiceStub:
        return self._stub(self.grant, grant_pb2_grpc.GrantServiceStub)

    def close(self) -> None:
        for channel in self._channels:
            channel.close()
        self.catalog.stop()
        self.grant.stop()
        if self.proxy is not None:
            self.proxy.__exit__()


# Fast retries, so that a backlog is delivered soon after the grant service is back.
FAST_RETRIES = ["--outbox-backoff-base-ms", "100", "--outbox-backoff-cap-ms", "1000"]


@pytest.fixture
def deployment(database_url_factory, tmp_path) -> Iterator[Callable[..., Deployment]]:
    """`make(catalog_args=..., proxy=None)`: a grant process and a catalog process
    (neither started), the catalog calling the grant service directly or, with
    `proxy={...}` (GrantProxy options), through a started GrantProxy. Everything
    is stopped at the end of the test."""
    made: list[Deployment] = []

    def make(*, catalog_args=(), proxy: dict | None = None) -> Deployment:
        grant = ServiceProcess.grant(
            database_url_factory("grant"),
            log_dir=tmp_path,
            args=["--enable-test-clocks", "--catch-up-interval", "0.5", "--log-level", "WARNING"],
        )
        between = GrantProxy(grant.address, **proxy).__enter__() if proxy is not None else None
        catalog = ServiceProcess.catalog(
            database_url_factory("catalog"),
            grant_address=between.address if between else grant.address,
            grant_api_key=grant.sync_key(),  # forwarded by the proxy
            log_dir=tmp_path,
            args=["--log-level", "WARNING", *FAST_RETRIES, *catalog_args],
        )
        made.append(Deployment(grant, catalog, between))
        return made[-1]

    yield make
    for d in made:
        d.close()


def call(fn, request, attempts: int = 50):
    """Call a catalog RPC, retrying UNAVAILABLE (only safe with a request_id)."""
    for attempt in range(attempts):
        try:
            return fn(request, timeout=DEADLINE_S)
        except grpc.RpcError as error:
            if error.code() != grpc.StatusCode.UNAVAILABLE or attempt == attempts - 1:
                raise
            time.sleep(0.1)
    raise AssertionError("unreachable")


@dataclass
class World:
    feature: str
    currency: str
    plan: str


def setup_catalog(stub: pb_grpc.CatalogServiceStub, *, rate: str = "2.5") -> World:
    """A metered feature, a currency it burns at `rate`, and a published custom
    plan with a negotiated monthly amount (1,000 to 1,000,000)."""
    call(
        stub.CreateFeature,
        pb.CreateFeatureRequest(
            request_id="f",
            feature=pb.Feature(
                key="gpt-calls", display_name="GPT calls", type=pb.FEATURE_TYPE_METERED, unit_name="call"
            ),
        ),
    )
    call(
        stub.CreateCreditCurrency,
        pb.CreateCreditCurrencyRequest(
            request_id="c",
            credit_currency=pb.CreditCurrency(
                key="ai-credits",
                display_name="AI credits",
                unit_name="credit",
                rates=[pb.CreditRate(feature_key="gpt-calls", credits_per_unit=rate)],
            ),
        ),
    )
    call(
        stub.CreatePlan,
        pb.CreatePlanRequest(
            request_id="p",
            plan=pb.Plan(
                key="enterprise",
                display_name="Enterprise",
                custom=True,
                credit_entitlements=[
                    pb.CreditEntitlement(
                        key="ai-credits-monthly",
                        currency_key="ai-credits",
                        cadence=pb.CADENCE_MONTHLY,
                        variable_amount=pb.VariableValue(min="1000", max="1000000"),
                    )
                ],
            ),
        ),
    )
    call(stub.PublishPlan, pb.PublishPlanRequest(request_id="pp", key="enterprise"))
    return World("gpt-calls", "ai-credits", "enterprise")


def provision_many(stub, count: int, prefix: str = "cust") -> list[pb.Subscription]:
    """`count` customers with one subscription each (50,000 credits a month)."""
    subscriptions = []
    for i in range(count):
        key = f"{prefix}-{i:03d}"
        call(stub.CreateCustomer, pb.CreateCustomerRequest(request_id=f"cc-{key}", customer=pb.Customer(key=key)))
        subscriptions.append(
            call(
                stub.ProvisionSubscription,
                pb.ProvisionSubscriptionRequest(
                    request_id=f"ps-{key}",
                    customer_key=key,
                    plan_key="enterprise",
                    entitlement_values={"ai-credits-monthly": "50000"},
                ),
            ).subscription
        )
    return subscriptions


def handoff_states(stub) -> dict[str, pb.HandoffState]:
    """The handoff state of every subscription, by id (paging through List)."""
    states, token = {}, ""
    while True:
        page = stub.ListSubscriptions(pb.ListSubscriptionsRequest(page_size=200, page_token=token), timeout=DEADLINE_S)
        states.update({s.subscription_id: s.handoff for s in page.subscriptions})
        token = page.next_page_token
        if not token:
            return states


def applied_revision(grant_stub, subscription_id: str) -> int:
    """The revision the grant service holds, 0 if it has never heard of the subscription."""
    try:
        reply = grant_stub.GetSubscription(
            grant_pb2.GetSubscriptionRequest(subscription_id=subscription_id), timeout=DEADLINE_S
        )
    except grpc.RpcError as error:
        if error.code() == grpc.StatusCode.NOT_FOUND:
            return 0
        raise
    return reply.subscription.revision


def assert_delivered_exactly_once(deployment: Deployment, subscriptions: list[pb.Subscription]) -> None:
    """Every subscription is at revision 1 in the grant service with exactly one
    period-0 GRANT, and its handoff state in the catalog is DELIVERED."""
    grant_stub, catalog_stub = deployment.grant_stub, deployment.catalog_stub
    for s in subscriptions:
        assert applied_revision(grant_stub, s.subscription_id) == 1
        grants = grant_stub.ListGrants(
            grant_pb2.ListGrantsRequest(customer_key=s.customer_key, subscription_id=s.subscription_id),
            timeout=DEADLINE_S,
        ).grants
        assert [(g.period_index, g.amount, g.source) for g in grants] == [
            (0, "50000", grant_pb2.GRANT_SOURCE_RECURRING)
        ]
        entries = grant_stub.ListLedgerEntries(
            grant_pb2.ListLedgerEntriesRequest(customer_key=s.customer_key, type=grant_pb2.LEDGER_ENTRY_TYPE_GRANT),
            timeout=DEADLINE_S,
        ).entries
        assert [(e.grant_id, e.amount) for e in entries] == [(grants[0].grant_id, "50000")]
    states = handoff_states(catalog_stub)
    assert {states[s.subscription_id].status for s in subscriptions} == {pb.HANDOFF_STATUS_DELIVERED}
    assert {states[s.subscription_id].delivered_revision for s in subscriptions} == {1}
