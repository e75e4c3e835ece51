"""credit_common.grpc.health: the health service's table and its watchers, without a server.

The fake send behaves as gRPC's does for a non-blocking server stream: a send returns once gRPC's
event thread has processed it, and that thread runs the callbacks of streams that ended first. With
grpcio-health-checking's servicer (which sends while holding the lock those callbacks take) the first
test deadlocks: the server never finished stopping under load."""

from __future__ import annotations

import threading

import grpc
import pytest
from grpc_health.v1 import health_pb2

from credit_common.drain import Drain
from credit_common.grpc.health import NOT_SERVING, SERVICE_UNKNOWN, SERVING, HealthServicer


class FakeContext:
    def __init__(self) -> None:
        self.callbacks: list = []
        self.code = None

    def add_callback(self, callback) -> bool:
        self.callbacks.append(callback)
        return True

    def end(self) -> None:  # gRPC's event thread, when the stream ends
        for callback in self.callbacks:
            callback()

    def set_code(self, code) -> None:
        self.code = code

    def set_details(self, _details) -> None:
        pass

    def abort(self, code, details):
        raise grpc.RpcError(code, details)


def watch(health: HealthServicer, service: str = "", send=None) -> tuple[FakeContext, list]:
    context, received = FakeContext(), []
    health.Watch(health_pb2.HealthCheckRequest(service=service), context, send or received.append)
    return context, received


def test_a_watch_ending_while_the_status_changes_does_not_deadlock():
    health = HealthServicer(Drain())
    event_thread_done = []
    context: FakeContext

    def send(response):
        if response is not None and response.status == NOT_SERVING:  # the client went away meanwhile
            event_thread = threading.Thread(target=context.end)
            event_thread.start()
            event_thread.join(10)
            event_thread_done.append(not event_thread.is_alive())

    context, _ = watch(health, send=send)
    health.enter_graceful_shutdown()
    assert event_thread_done == [True]
    assert health._watchers == {}  # the ended stream left the table


def test_watchers_get_each_change_of_their_service_once_and_in_order():
    health = HealthServicer(Drain())
    _, everything = watch(health, "")
    _, unknown_first = watch(health, "billing.v1.Billing")
    health.set("billing.v1.Billing", SERVING)
    health.set("billing.v1.Billing", SERVING)  # no change: nothing sent
    health.set("", NOT_SERVING)
    assert [r.status for r in unknown_first] == [SERVICE_UNKNOWN, SERVING]
    assert [r.status for r in everything] == [SERVING, NOT_SERVING]


def test_graceful_shutdown_is_final_and_watchers_end_with_the_drain():
    drain = Drain()
    health = HealthServicer(drain)
    health.set("billing.v1.Billing", SERVING)
    context, received = watch(health, "billing.v1.Billing")
    health.enter_graceful_shutdown()
    health.set("billing.v1.Billing", SERVING)  # ignored from now on
    drain.begin()
    assert [r.status if r is not None else None for r in received] == [SERVING, NOT_SERVING, None]
    assert context.code == grpc.StatusCode.UNAVAILABLE


def test_check_answers_the_status_or_not_found():
    health = HealthServicer(Drain())
    assert health.Check(health_pb2.HealthCheckRequest(), FakeContext()).status == SERVING
    with pytest.raises(grpc.RpcError):
        health.Check(health_pb2.HealthCheckRequest(service="nope"), FakeContext())
