"""The listener's limits over a real server: RPCs past `max_concurrent_rpcs` are refused with
RESOURCE_EXHAUSTED while the others run, and a request larger than `max_receive_message_bytes`
is refused. No timing: a call is held inside the server until the test lets it go."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import grpc
import pytest

from credit_common.config import ServerLimits
from credit_common.db.engine import translate_db_error
from credit_common.grpc.interceptors import ServiceInterceptor
from credit_common.grpc.server import start_server
from grant_service.entrypoints import app as grant_app
from grant_service.v1 import grant_service_pb2 as grant_pb2
from grant_service.v1 import grant_service_pb2_grpc as grant_pb2_grpc
from tests.support.servers import serving as services_serving

SERVICE = "test.v1.LimitsService"


@dataclass
class Held:
    inside: threading.Event  # set once a Hold call is running in the server
    release: threading.Event  # Hold calls return once set


@contextmanager
def serving(limits: ServerLimits) -> Iterator[tuple[grpc.Channel, Held]]:
    """A server with the given limits, its Hold and Echo methods, and a channel to it."""
    held = Held(threading.Event(), threading.Event())

    def hold(request, context):
        held.inside.set()
        held.release.wait(30)
        return b"held"

    handlers = {
        "Hold": grpc.unary_unary_rpc_method_handler(hold),
        "Echo": grpc.unary_unary_rpc_method_handler(lambda request, context: request),
    }

    def register(server):
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))

    running = start_server(
        address="127.0.0.1:0",
        service_names=[SERVICE],
        register=register,
        interceptor=ServiceInterceptor("test.credit-grants", translate=translate_db_error),
        max_workers=4,
        limits=limits,
    )

    try:
        with grpc.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            yield channel, held
    finally:
        held.release.set()
        running.stop(0)


def test_a_call_past_max_concurrent_rpcs_is_resource_exhausted():
    with serving(ServerLimits(max_concurrent_rpcs=1)) as (channel, held):
        _one_at_a_time(channel, held)


def _one_at_a_time(channel: grpc.Channel, held: Held) -> None:
    first = channel.unary_unary(f"/{SERVICE}/Hold").future(b"", timeout=30)
    assert held.inside.wait(30)
    with pytest.raises(grpc.RpcError) as refused:
        channel.unary_unary(f"/{SERVICE}/Echo")(b"second", timeout=30)
    assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    held.release.set()
    assert first.result() == b"held"  # the call in flight was not disturbed
    # and once it is over, the next one is served
    assert channel.unary_unary(f"/{SERVICE}/Echo")(b"third", timeout=30) == b"third"


def test_a_request_past_max_receive_message_bytes_is_refused():
    with serving(ServerLimits(max_receive_message_bytes=1024)) as (channel, _held):
        echo = channel.unary_unary(f"/{SERVICE}/Echo")
        assert echo(b"x" * 1000, timeout=30) == b"x" * 1000
        with pytest.raises(grpc.RpcError) as refused:
            echo(b"x" * 2000, timeout=30)
        assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


def test_the_services_take_their_limits_from_their_settings(tmp_path):
    """The settings reach the listener of a real service (here the grant service's message size)."""
    with services_serving(
        grant_app.DEFINITION,
        grant_app.build,
        f"sqlite:///{tmp_path / 'grant.db'}",
        args=["--max-receive-message-bytes", "1024", "--catch-up-interval", "0"],
    ) as (_running, channel):
        stub = grant_pb2_grpc.GrantServiceStub(channel)
        with pytest.raises(grpc.RpcError) as refused:
            stub.GetSubscription(grant_pb2.GetSubscriptionRequest(subscription_id="s" * 2000), timeout=30)
        assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        with pytest.raises(grpc.RpcError) as answered:
            stub.GetSubscription(grant_pb2.GetSubscriptionRequest(subscription_id="sub_" + "s" * 20), timeout=30)
        assert answered.value.code() == grpc.StatusCode.NOT_FOUND
