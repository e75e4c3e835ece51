"""Graceful drain, in process where its moments can be held: health NOT_SERVING at once, a call in
flight finishes, a call that arrives after the drain began gets UNAVAILABLE, a health Watch stream
gets NOT_SERVING and then ends with UNAVAILABLE; both services."""

from __future__ import annotations

import threading

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from catalog_service.entrypoints import app as catalog_app
from catalog_service.v1 import catalog_service_pb2 as cpb
from catalog_service.v1 import catalog_service_pb2_grpc
from credit_common import calls
from credit_common.drain import Drain
from grant_service.entrypoints import app as grant_app
from grant_service.v1 import grant_service_pb2 as pb
from grant_service.v1 import grant_service_pb2_grpc
from tests.e2e.grant.conftest import subscription, utc
from tests.support.servers import serving


class HeldCommit:
    """Holds the commit of calls to `method` until released."""

    def __init__(self, method: str) -> None:
        self.method = method
        self.reached = threading.Event()
        self.release = threading.Event()

    def __call__(self) -> None:
        call = calls.current()
        if call is not None and call.method.endswith(self.method):
            self.reached.set()
            assert self.release.wait(30)


def _watch(channel, statuses: list, ended: dict) -> None:
    stream = health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest(service=""), timeout=60)
    try:
        for reply in stream:
            statuses.append(reply.status)
    except grpc.RpcError as error:
        ended["code"] = error.code()
    else:
        ended["code"] = grpc.StatusCode.OK


def _drain_while_a_call_is_in_flight(running, channel, in_flight, new_call, held: HeldCommit):
    statuses: list = []
    ended: dict = {}
    watcher = threading.Thread(target=_watch, args=(channel, statuses, ended))
    watcher.start()
    calls.COMMIT_HOOKS.append(held)
    try:
        result = in_flight()
        assert held.reached.wait(30)
        stopper = threading.Thread(target=running.stop, args=(30,))
        stopper.start()
        assert running.drain.wait(30)
        reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=""), timeout=5)
        assert reply.status == health_pb2.HealthCheckResponse.NOT_SERVING
        with pytest.raises(grpc.RpcError) as refused:
            new_call()
        assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
        watcher.join(30)
        assert statuses[0] == health_pb2.HealthCheckResponse.SERVING
        assert statuses[-1] == health_pb2.HealthCheckResponse.NOT_SERVING
        assert ended["code"] == grpc.StatusCode.UNAVAILABLE
        held.release.set()
        answer = result.result(timeout=30)  # the call in flight finishes
        stopper.join(30)
        assert not stopper.is_alive()
        return answer
    finally:
        held.release.set()
        calls.COMMIT_HOOKS.remove(held)


def test_grant_service_drains(database_url_factory):
    args = ["--catch-up-interval", "0"]
    with serving(grant_app.DEFINITION, grant_app.build, database_url_factory("grant"), args=args) as (running, ch):
        stub = grant_service_pb2_grpc.GrantServiceStub(ch)
        answer = _drain_while_a_call_is_in_flight(
            running,
            ch,
            lambda: stub.ApplySubscription.future(subscription("sub_1", "acme", utc(2026, 5, 20), [("1", None)])),
            lambda: stub.GetBalance(pb.GetBalanceRequest(customer_key="acme", currency_key="x"), timeout=5),
            HeldCommit("/ApplySubscription"),
        )
        assert answer.outcome == pb.APPLY_OUTCOME_APPLIED


def test_catalog_service_drains(database_url_factory):
    args = ["--grant-service-address", "127.0.0.1:1"]
    with serving(catalog_app.DEFINITION, catalog_app.build, database_url_factory("catalog"), args=args) as (
        running,
        ch,
    ):
        stub = catalog_service_pb2_grpc.CatalogServiceStub(ch)
        answer = _drain_while_a_call_is_in_flight(
            running,
            ch,
            lambda: stub.CreateCustomer.future(cpb.CreateCustomerRequest(customer=cpb.Customer(key="acme"))),
            lambda: stub.GetCustomer(cpb.GetCustomerRequest(key="acme"), timeout=5),
            HeldCommit("/CreateCustomer"),
        )
        assert answer.customer.key == "acme"


def test_a_streaming_servicer_observes_the_drain():
    drain = Drain()
    ended = []
    unregister = drain.on_drain(lambda: ended.append("first"))
    drain.on_drain(lambda: ended.append("second"))
    unregister()
    assert not drain.wait(0)
    drain.begin()
    assert drain.draining and drain.wait(0) and ended == ["second"]
    drain.on_drain(lambda: ended.append("late"))  # registered after the drain began: runs at once
    assert ended == ["second", "late"]
