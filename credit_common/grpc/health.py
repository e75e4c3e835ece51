"""The gRPC health service (grpc.health.v1.Health: Check and Watch) of both services.

Ours rather than grpcio-health-checking's `HealthServicer`, which sends every watcher its update while
holding the lock that a closing Watch needs: a Watch cancelled while the status changes (at every
shutdown, where all statuses turn NOT_SERVING) leaves the server's event thread waiting for that lock
and the sender waiting for the event thread, and the server never stops (seen under load in
tests/e2e/test_stream_budget.py; upstream grpc/grpc#43403 splits the lock). Here the status table's lock
is never held while sending: each watcher sends the latest status under its own lock, so updates
reach it in order and end at the current status, and a watcher that goes away only takes the table's
lock to leave it.

Watch streams end with UNAVAILABLE when the drain begins (after their NOT_SERVING update), so that a
watching client moves to another replica; they hold no thread while open."""

from __future__ import annotations

import threading
from collections.abc import Callable

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from credit_common.drain import Drain

Status = int  # health_pb2.HealthCheckResponse.ServingStatus
SERVING: Status = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING: Status = health_pb2.HealthCheckResponse.NOT_SERVING
SERVICE_UNKNOWN: Status = health_pb2.HealthCheckResponse.SERVICE_UNKNOWN


class _Watcher:
    """One Watch stream: sends the service's current status when it differs from what it last sent."""

    def __init__(self, service: str, send: Callable[[health_pb2.HealthCheckResponse | None], None]) -> None:
        self.service = service
        self._send = send
        self._sending = threading.Lock()  # never taken by gRPC's own threads
        self._sent: Status | None = None

    def refresh(self, current: Callable[[str], Status]) -> None:
        with self._sending:
            status = current(self.service)
            if status != self._sent:
                self._sent = status
                self._send(health_pb2.HealthCheckResponse(status=status))


class HealthServicer(health_pb2_grpc.HealthServicer):
    def __init__(self, drain: Drain) -> None:
        self._lock = threading.Lock()  # the table below; never held while sending
        self._statuses: dict[str, Status] = {"": SERVING}
        self._watchers: dict[str, set[_Watcher]] = {}
        self._shutting_down = False
        self._drain = drain

    def _current(self, service: str) -> Status:
        with self._lock:
            return self._statuses.get(service, SERVICE_UNKNOWN)

    def set(self, service: str, status: Status) -> None:
        """Set a service's status (ignored once the graceful shutdown began) and tell its watchers."""
        with self._lock:
            if self._shutting_down:
                return
            self._statuses[service] = status
            watchers = list(self._watchers.get(service, ()))
        for watcher in watchers:
            watcher.refresh(self._current)

    def enter_graceful_shutdown(self) -> None:
        """Every status NOT_SERVING, for good; every watcher told."""
        with self._lock:
            if self._shutting_down:
                return
            self._shutting_down = True
            self._statuses = dict.fromkeys(self._statuses, NOT_SERVING)
            watchers = [watcher for group in self._watchers.values() for watcher in group]
        for watcher in watchers:
            watcher.refresh(self._current)

    def Check(self, request: health_pb2.HealthCheckRequest, context: grpc.ServicerContext):
        with self._lock:
            status = self._statuses.get(request.service)
        if status is None:
            context.abort(grpc.StatusCode.NOT_FOUND, f"unknown service {request.service!r}")
        return health_pb2.HealthCheckResponse(status=status)

    def Watch(self, request: health_pb2.HealthCheckRequest, context: grpc.ServicerContext, send_response_callback=None):
        watcher = _Watcher(request.service, send_response_callback)
        with self._lock:
            self._watchers.setdefault(request.service, set()).add(watcher)

        def leave() -> None:  # on gRPC's event thread, once the stream ended for any reason
            with self._lock:
                group = self._watchers.get(request.service)
                if group is not None:
                    group.discard(watcher)
                    if not group:
                        del self._watchers[request.service]

        def end_on_drain() -> None:
            Drain.end_stream(context)
            send_response_callback(None)

        if not context.add_callback(leave):  # already ended
            leave()
            return
        watcher.refresh(self._current)
        context.add_callback(self._drain.on_drain(end_on_drain))

    Watch.experimental_non_blocking = True  # type: ignore[attr-defined]  # gRPC passes send_response_callback
    Watch.experimental_thread_pool = None  # type: ignore[attr-defined]
