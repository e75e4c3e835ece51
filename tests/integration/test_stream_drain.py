"""The shared drain mechanism for streaming servicers (credit_common.drain), over a real server with
the observing interceptor: a generator stream that observes the drain ends with UNAVAILABLE, sees its
call bound (credit_common.calls), and a stream started after the drain began is refused."""

from __future__ import annotations

import threading
from concurrent import futures

import grpc
import pytest

from credit_common import calls
from credit_common.drain import Drain
from credit_common.grpc.observe import ObservingInterceptor

METHOD = "/test.Events/Follow"


def _server(drain: Drain, seen: dict):
    def follow(request: bytes, context: grpc.ServicerContext):
        call = calls.current()
        seen["method"] = call.method if call else None
        n = 0
        while True:
            yield str(n).encode()
            n += 1
            # The way a streaming servicer waits for its next item: woken by the drain.
            if call.drain.wait(0.05):
                call.drain.end_stream(context)
                return

    handler = grpc.method_handlers_generic_handler(
        "test.Events", {"Follow": grpc.unary_stream_rpc_method_handler(follow)}
    )
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4), interceptors=[ObservingInterceptor(drain)])
    server.add_generic_rpc_handlers((handler,))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    return server, port


def test_a_stream_ends_with_unavailable_when_the_drain_begins():
    drain = Drain()
    seen: dict = {}
    server, port = _server(drain, seen)
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            follow = channel.unary_stream(METHOD)
            stream = follow(b"", timeout=30)
            first = next(stream)
            assert first == b"0" and seen["method"] == METHOD
            threading.Timer(0.1, drain.begin).start()
            with pytest.raises(grpc.RpcError) as ended:
                for _ in stream:
                    pass
            assert ended.value.code() == grpc.StatusCode.UNAVAILABLE
            with pytest.raises(grpc.RpcError) as refused:
                next(follow(b"", timeout=5))
            assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
    finally:
        server.stop(0)
