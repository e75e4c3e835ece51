"""The outermost server interceptor: what every RPC gets before any other interceptor sees it.

- The drain (credit_common.drain): once it began, a new call (but a health check) is refused with UNAVAILABLE, and a
  response stream ends with UNAVAILABLE after its next item (a blocking iterator with `close()`, such
  as the health service's Watch, is closed at once).
- The call (credit_common.calls): bound to the thread that serves it, so that the transaction
  runners check its deadline and cancellation before they commit, and outbound calls stay within it.
- Metrics (credit_common.metrics): grpc_server_started_total, grpc_server_handled_total{grpc_code},
  grpc_server_handling_seconds; auth failures and usage refused for insufficient credits, by the
  ErrorInfo reason of the status the inner interceptors set.

It only wraps handlers: the interceptors inside it (errors, auth, validation) are unchanged.
"""

from __future__ import annotations

import inspect
import threading
import time
import weakref
from collections import deque
from collections.abc import Iterator
from typing import Any

import grpc
from google.rpc import error_details_pb2, status_pb2

from credit_common import calls
from credit_common import metrics as m
from credit_common.drain import DRAINING_MESSAGE, Drain

_REASON_CODES = {grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.RESOURCE_EXHAUSTED}
_AUTH_REASONS = frozenset({"API_KEY_MISSING", "API_KEY_INVALID", "API_KEY_REVOKED", "ROLE_REQUIRED"})
# Still answered during the drain: a probe must see NOT_SERVING, not a refusal.
_HEALTH_PREFIX = "/grpc.health.v1.Health/"


def go_code_name(code: grpc.StatusCode) -> str:
    """The grpc_code label as go-grpc-prometheus writes it (Go's codes.Code.String()): OK, Canceled,
    InvalidArgument, DeadlineExceeded, ... so that existing dashboards and alerts work unchanged."""
    if code is grpc.StatusCode.OK:
        return "OK"
    if code is grpc.StatusCode.CANCELLED:
        return "Canceled"
    return "".join(part.capitalize() for part in code.name.split("_"))


class _MethodMetrics:
    """The labelled children of one method, looked up once (a `labels()` call costs more than an inc)."""

    __slots__ = ("_handled", "_labels", "seconds", "started")

    def __init__(self, kind: str, method: str, enabled: bool) -> None:
        _, service, name = method.split("/", 2) if method.count("/") >= 2 else ("", "", method)
        self._labels = (kind, service, name)
        self.started = m.RPC_STARTED.labels(*self._labels) if enabled else None
        self.seconds = m.RPC_SECONDS.labels(*self._labels) if enabled else None
        self._handled: dict[grpc.StatusCode, Any] = {}

    def finish(self, code: grpc.StatusCode, seconds: float) -> None:
        if self.seconds is None:
            return
        handled = self._handled.get(code)
        if handled is None:
            handled = self._handled[code] = m.RPC_HANDLED.labels(*self._labels, go_code_name(code))
        handled.inc()
        self.seconds.observe(seconds)


class ObservingInterceptor(grpc.ServerInterceptor):
    """RPC threads do not update the metrics themselves: each appends what happened (a start, an end
    with its code and duration) to a queue, and one thread moves the queue into the metrics every
    `flush_interval_s` and before every scrape of this process (credit_common.metrics.flush_pending).
    An update of a metric takes a lock (in multiprocess mode one lock for every metric of the
    process, and a write to the mmapped file); taken by every RPC thread, it is handed from thread
    to thread under load. An append to a deque takes none."""

    def __init__(self, drain: Drain, *, record_metrics: bool = True, flush_interval_s: float = 0.5) -> None:
        self._drain = drain
        self._record = record_metrics
        self._methods: dict[tuple[str, str], _MethodMetrics] = {}
        self._events: deque[tuple[_MethodMetrics, grpc.StatusCode | None, float]] = deque()
        self._stopping = threading.Event()
        if record_metrics:
            m.flush_before_scrape(self.flush)
            reference = weakref.ref(self)
            threading.Thread(
                target=_flush_every, args=(reference, self._stopping, flush_interval_s), name="rpc-metrics", daemon=True
            ).start()

    def flush(self) -> None:
        """Record the queued starts and ends in the metrics."""
        events = self._events
        while True:
            try:
                metrics, code, seconds = events.popleft()
            except IndexError:
                return
            if code is None:
                metrics.started.inc()
            else:
                metrics.finish(code, seconds)

    def stop(self) -> None:
        """Record what is queued and end the flushing thread (the server stopped)."""
        self._stopping.set()
        self.flush()

    def _metrics(self, kind: str, method: str) -> _MethodMetrics:
        key = (kind, method)
        found = self._methods.get(key)
        if found is None:
            found = self._methods[key] = _MethodMetrics(kind, method, self._record)
        return found

    def intercept_service(self, continuation, handler_call_details):
        handler = continuation(handler_call_details)
        if handler is None:
            return None
        method = handler_call_details.method
        if handler.unary_unary is not None:
            return grpc.unary_unary_rpc_method_handler(
                self._unary(handler.unary_unary, method, self._metrics("unary", method)),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        stream = handler.unary_stream
        if stream is not None and not getattr(stream, "experimental_non_blocking", False):
            behavior = self._server_stream(stream, method, self._metrics("server_stream", method))
            # Streams run on the stream budget's threads (credit_common.grpc.streams), never on the unary
            # workers: the wrapper keeps the pool the inner handler chose.
            pool = getattr(stream, "experimental_thread_pool", None)
            if pool is not None:
                behavior.experimental_thread_pool = pool
            return grpc.unary_stream_rpc_method_handler(
                behavior,
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        return handler  # client streams, and non-blocking streams (which observe the drain themselves)

    def _unary(self, inner, method: str, metrics: _MethodMetrics):
        drain = self._drain
        record = self._record
        refuse = not method.startswith(_HEALTH_PREFIX)

        events = self._events

        def behavior(request: Any, context: grpc.ServicerContext) -> Any:
            if refuse and drain.draining:
                if record:
                    events.append((metrics, None, 0.0))
                    events.append((metrics, grpc.StatusCode.UNAVAILABLE, 0.0))
                context.abort(grpc.StatusCode.UNAVAILABLE, DRAINING_MESSAGE)
            if record:
                events.append((metrics, None, 0.0))
            started = time.perf_counter()
            drain.enter()
            token = calls._current.set(calls.Call(context, method, drain))
            code = grpc.StatusCode.OK
            try:
                response = inner(request, context)
                code = context.code() or grpc.StatusCode.OK
                return response
            except BaseException:
                code = context.code() or grpc.StatusCode.UNKNOWN
                raise
            finally:
                calls._current.reset(token)
                drain.leave()
                if record:
                    events.append((metrics, code, time.perf_counter() - started))
                    if code in _REASON_CODES:
                        _count_reason(context)

        return behavior

    def _server_stream(self, inner, method: str, metrics: _MethodMetrics):
        drain = self._drain
        record = self._record

        events = self._events

        def behavior(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
            if drain.draining:
                if record:
                    events.append((metrics, None, 0.0))
                    events.append((metrics, grpc.StatusCode.UNAVAILABLE, 0.0))
                context.abort(grpc.StatusCode.UNAVAILABLE, DRAINING_MESSAGE)
            if record:
                events.append((metrics, None, 0.0))
            started = time.perf_counter()
            code = grpc.StatusCode.OK
            unregister = None
            call = calls.Call(context, method, drain)
            try:
                # The call stays bound while the stream runs: a generator's body runs as it is iterated.
                with calls.serving(call):
                    responses = inner(request, context)
                    if responses is None:
                        return
                    if not inspect.isgenerator(responses) and callable(getattr(responses, "close", None)):
                        unregister = drain.on_drain(lambda: (Drain.end_stream(context), responses.close()))
                    for response in responses:
                        yield response
                        if drain.draining:
                            Drain.end_stream(context)
                            break
                    else:
                        if drain.draining:
                            Drain.end_stream(context)
                code = context.code() or grpc.StatusCode.OK
            except BaseException:
                code = context.code() or grpc.StatusCode.UNKNOWN
                raise
            finally:
                if unregister is not None:
                    unregister()
                if record:
                    events.append((metrics, code, time.perf_counter() - started))

        return behavior


def _flush_every(reference: weakref.ref, stopping: threading.Event, interval_s: float) -> None:
    while not stopping.wait(interval_s):
        interceptor = reference()
        if interceptor is None:
            return
        interceptor.flush()
        del interceptor


def _count_reason(context: grpc.ServicerContext) -> None:
    """Count an auth failure or an insufficient-credits refusal by the ErrorInfo of the status set."""
    reason = _error_reason(context)
    if reason in _AUTH_REASONS:
        m.AUTH_FAILURES.labels(reason).inc()
    elif reason == "INSUFFICIENT_CREDITS":
        m.USAGE_INSUFFICIENT.inc()


def _error_reason(context: grpc.ServicerContext) -> str:
    try:
        trailers = context.trailing_metadata() or ()
    except Exception:
        return ""
    for key, value in trailers:
        if key != "grpc-status-details-bin":
            continue
        status = status_pb2.Status.FromString(value)
        for detail in status.details:
            info = error_details_pb2.ErrorInfo()
            if detail.Unpack(info):
                return info.reason
    return ""
