"""Long-lived streams cannot freeze a server (docs/security.md, Streams): with many idle streams
open (reflection, health Watch), far more than the server has workers, an authenticated GetBalance
and a health Check still answer, on both services and both backends.

No timing is asserted: a starved call would end in DEADLINE_EXCEEDED at its deadline, which is
generous; a served one answers at once."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from catalog_service.entrypoints import app as catalog_app
from catalog_service.v1 import catalog_service_pb2, catalog_service_pb2_grpc
from credit_common.db.engine import DatabaseSettings, create_db_engine
from credit_common.grpc.errors import error_details
from grant_service.entrypoints import app as grant_app
from grant_service.v1 import grant_service_pb2, grant_service_pb2_grpc
from tests.support.auth import create_key
from tests.support.servers import serving

DEADLINE_S = 15.0  # generous: a starved call waits forever, a served one answers at once
WORKERS = 4
STREAMS = 40  # ten times the workers


def unary_call(service: str, channel: grpc.Channel) -> None:
    """A cheap authenticated call of the service (answers, or fails for its content: never starves)."""
    try:
        if service == "grant":
            grant_service_pb2_grpc.GrantServiceStub(channel).GetBalance(
                grant_service_pb2.GetBalanceRequest(customer_key="nobody", currency_key="credits"), timeout=DEADLINE_S
            )
        else:
            catalog_service_pb2_grpc.CatalogServiceStub(channel).ListFeatures(
                catalog_service_pb2.ListFeaturesRequest(), timeout=DEADLINE_S
            )
    except grpc.RpcError as error:
        assert error.code() not in (grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.RESOURCE_EXHAUSTED), error


def health_check(channel: grpc.Channel) -> None:
    reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=DEADLINE_S)
    assert reply.status == health_pb2.HealthCheckResponse.SERVING


class IdleReflectionStream:
    """A reflection stream that sends one request, reads its answer, then stays open and silent."""

    def __init__(self, channel: grpc.Channel, metadata=()) -> None:
        self._done = threading.Event()

        def requests():
            yield reflection_pb2.ServerReflectionRequest(list_services="")
            self._done.wait()

        self.call = reflection_pb2_grpc.ServerReflectionStub(channel).ServerReflectionInfo(
            requests(), metadata=metadata, timeout=60
        )

    def opened(self) -> bool:
        """True if the server admitted the stream (it answered); False if it refused it for the budget."""
        try:
            next(self.call)
            return True
        except grpc.RpcError as error:
            assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, error
            info, _ = error_details(error)
            assert info.reason == "STREAM_LIMIT_REACHED", info
            return False

    def close(self) -> None:
        self._done.set()
        self.call.cancel()


@contextmanager
def server(service: str, url: str, *args: str) -> Iterator[tuple[grpc.Channel, str]]:
    app = grant_app if service == "grant" else catalog_app
    extra = ["--catch-up-interval", "0"] if service == "grant" else []
    argv = ["--max-workers", str(WORKERS), *extra, *args]
    with serving(app.DEFINITION, app.build, url, args=argv) as (running, keyed):
        anonymous = grpc.insecure_channel(f"127.0.0.1:{running.port}")
        try:
            yield keyed, anonymous
        finally:
            anonymous.close()


@contextmanager
def open_streams(count: int, channel: grpc.Channel, metadata=()) -> Iterator[list[bool]]:
    with ExitStack() as stack:
        streams = []
        for _ in range(count):
            stream = IdleReflectionStream(channel, metadata)
            stack.callback(stream.close)
            streams.append(stream)
        yield [stream.opened() for stream in streams]


@pytest.mark.parametrize("service", ["grant", "catalog"])
def test_anonymous_reflection_streams_cannot_starve_unary_calls(service, database_url_factory):
    """Reflection open to anyone (`--reflection on`): 40 anonymous streams on a 4-worker server. The
    anonymous callers together get the per-caller share (8) and the rest are refused at once; an
    authenticated GetBalance and a health Check answer while they are open."""
    with (
        server(service, database_url_factory("db"), "--reflection", "on") as (keyed, anonymous),
        open_streams(STREAMS, anonymous) as admitted,
    ):
        assert admitted.count(True) == 8
        for _ in range(3):
            unary_call(service, keyed)
            health_check(anonymous)


@pytest.mark.parametrize("service", ["grant", "catalog"])
def test_admitted_streams_run_off_the_unary_workers(service, database_url_factory):
    """With budgets above the worker count, 40 idle streams of one key are all admitted, ten per
    worker, and unary calls are still served: streams have their own threads."""
    args = ("--max-streams", "64", "--max-streams-per-caller", "64")
    with (
        server(service, database_url_factory("db"), *args) as (keyed, anonymous),
        open_streams(STREAMS, keyed) as admitted,
    ):
        assert all(admitted)
        unary_call(service, keyed)
        health_check(anonymous)


@pytest.mark.parametrize("service", ["grant", "catalog"])
def test_one_key_gets_its_share_and_others_still_stream(service, database_url_factory):
    """One key holds its 8 streams; a second key still opens one, anonymous reflection is refused
    (default `--reflection authenticated`), and unary calls answer."""
    url = database_url_factory("db")
    with server(service, url) as (keyed, anonymous):
        app = grant_app if service == "grant" else catalog_app
        engine = create_db_engine(DatabaseSettings(url=url))
        try:
            other = [("authorization", f"Bearer {create_key(app.DEFINITION, engine, roles=('reader',))}")]
        finally:
            engine.dispose()
        with open_streams(12, keyed) as admitted:
            assert admitted.count(True) == 8
            refused = IdleReflectionStream(anonymous)
            with pytest.raises(grpc.RpcError) as raised:
                next(refused.call)
            refused.close()
            assert raised.value.code() == grpc.StatusCode.UNAUTHENTICATED
            with open_streams(2, anonymous, other) as second:
                assert all(second)
            unary_call(service, keyed)
            health_check(anonymous)


@pytest.mark.parametrize("service", ["grant", "catalog"])
def test_health_watch_floods_are_bounded(service, database_url_factory):
    """The health Watch holds no thread, but every open RPC counts against --max-concurrent-rpcs:
    300 anonymous Watch streams would fill it. Past the anonymous share they are refused at once."""
    with server(service, database_url_factory("db")) as (keyed, anonymous):
        health = health_pb2_grpc.HealthStub(anonymous)
        watches = [health.Watch(health_pb2.HealthCheckRequest(), timeout=60) for _ in range(300)]
        try:
            admitted = 0
            for watch in watches:
                try:
                    assert next(watch).status == health_pb2.HealthCheckResponse.SERVING
                    admitted += 1
                except grpc.RpcError as error:
                    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, error
            assert admitted == 8
            unary_call(service, keyed)
            health_check(anonymous)
        finally:
            for watch in watches:
                watch.cancel()


def test_event_streams_run_off_the_unary_workers(database_url_factory):
    """The same for WatchEvents, a server stream wrapped by every interceptor (drain, metrics, keys):
    40 idle event streams of one key on a 4-worker grant server, and unary calls are still served."""
    args = ("--max-streams", "64", "--max-streams-per-caller", "64", "--events-heartbeat-interval", "0.5")
    with server("grant", database_url_factory("db"), *args) as (keyed, anonymous):
        stub = grant_service_pb2_grpc.GrantServiceStub(keyed)
        streams = [
            stub.WatchEvents(grant_service_pb2.WatchEventsRequest(customer_key="nobody"), timeout=60)
            for _ in range(STREAMS)
        ]
        try:
            for stream in streams:  # each stream's handler runs: it sent its first heartbeat
                assert next(stream).HasField("heartbeat")
            for _ in range(3):
                unary_call("grant", keyed)
                health_check(anonymous)
            assert all(stream.is_active() for stream in streams)
        finally:
            for stream in streams:
                stream.cancel()
