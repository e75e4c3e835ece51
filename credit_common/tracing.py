"""OpenTelemetry traces: server and client spans of every RPC, and one trace through the outbox.

Off unless the standard OTEL_* variables ask for it (`configure_from_env`): without them no SDK is set
up, no interceptor is added and nothing is exported, so tracing costs nothing. With them, the SDK's
TracerProvider reads the sampler (OTEL_TRACES_SAMPLER, OTEL_TRACES_SAMPLER_ARG), the resource
(OTEL_SERVICE_NAME, default the service's name; OTEL_RESOURCE_ATTRIBUTES) and the OTLP exporter its
endpoint, headers and TLS (OTEL_EXPORTER_OTLP_[TRACES_]*); spans leave in batches (BatchSpanProcessor).
docs/operations.md, Traces, has the setup.

The outbox carries the trace across the queue: the W3C `traceparent` of the span that queued a delivery
is stored with its row (`current_traceparent`), and the dispatcher sends it inside a span that
continues that trace (`continued`), also after a retry or a restart; a call that sends several
deliveries of different traces is a span of its own, linked to each.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator, Sequence
from typing import Any

import grpc

from credit_common import logging as json_logging

log = logging.getLogger("credit_grants.tracing")

_provider: Any = None  # the SDK's TracerProvider while tracing is on; None: off
_TRACER = "credit_grants"


def enabled_by_env(environ: dict[str, str] | os._Environ = os.environ) -> bool:
    """Whether the OTEL_* variables ask for traces: an exporter named (other than none) or an OTLP
    endpoint given, and the SDK not disabled."""
    if environ.get("OTEL_SDK_DISABLED", "").lower() == "true":
        return False
    exporter = environ.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    if exporter:
        return exporter != "none"
    return bool(environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"))


def configure_from_env(service: str) -> Any:
    """Set up the SDK as the OTEL_* variables say (see the module's docstring); the TracerProvider, or
    None when they do not ask for traces (nothing is set up)."""
    if not enabled_by_env():
        return None
    from opentelemetry import trace
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter

    resource = Resource.create({"service.name": os.environ.get("OTEL_SERVICE_NAME") or service})
    provider = TracerProvider(resource=resource)
    exporter_name = os.environ.get("OTEL_TRACES_EXPORTER", "otlp").strip().lower() or "otlp"
    if exporter_name == "console":
        exporter: Any = ConsoleSpanExporter()
    else:
        if exporter_name != "otlp":
            log.warning("unsupported OTEL_TRACES_EXPORTER; using otlp", extra={"exporter": exporter_name})
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        exporter = OTLPSpanExporter()
    provider.add_span_processor(BatchSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    install(provider)
    log.info("tracing on", extra={"service_name": resource.attributes.get("service.name"), "exporter": exporter_name})
    return provider


def install(provider: Any) -> None:
    """Trace with `provider` (a TracerProvider of the SDK; tests give one with an in-memory exporter);
    None turns tracing off. Servers and channels made afterwards get the interceptors."""
    global _provider
    _provider = provider
    json_logging.trace_fields = _log_fields if provider is not None else None


def shutdown() -> None:
    """Export what is buffered (at exit)."""
    if _provider is not None:
        _provider.shutdown()


def enabled() -> bool:
    return _provider is not None


def server_interceptor() -> grpc.ServerInterceptor | None:
    """The server spans' interceptor while tracing is on, else None."""
    if _provider is None:
        return None
    from opentelemetry.instrumentation.grpc import server_interceptor as otel_server_interceptor

    return _StatusOfSpans(otel_server_interceptor(tracer_provider=_provider))


# Codes that are the server's failure: its span's status is Error (OpenTelemetry's gRPC conventions).
_SERVER_ERRORS = frozenset(
    {
        grpc.StatusCode.UNKNOWN,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.UNIMPLEMENTED,
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DATA_LOSS,
    }
)


class _StatusOfSpans(grpc.ServerInterceptor):
    """The instrumentation's server interceptor, whose spans also get the status that the error
    mapping sets with `abort_with_status` (which the instrumentation does not see): the attribute
    rpc.grpc.status_code always, the span status Error for the server's own failures."""

    def __init__(self, spans: grpc.ServerInterceptor) -> None:
        self._spans = spans

    def intercept_service(self, continuation, handler_call_details):
        return self._spans.intercept_service(lambda details: _with_status(continuation(details)), handler_call_details)


def _with_status(handler):
    if handler is None or handler.unary_unary is None:
        return handler
    inner = handler.unary_unary

    def behavior(request, context):
        try:
            return inner(request, context)
        finally:
            code = context.code()
            if code is not None and code is not grpc.StatusCode.OK:
                from opentelemetry import trace
                from opentelemetry.trace import Status, StatusCode

                span = trace.get_current_span()
                span.set_attribute("rpc.grpc.status_code", code.value[0])
                if code in _SERVER_ERRORS:
                    span.set_status(Status(StatusCode.ERROR, code.name))

    return grpc.unary_unary_rpc_method_handler(
        behavior, request_deserializer=handler.request_deserializer, response_serializer=handler.response_serializer
    )


def traced_channel(channel: grpc.Channel) -> grpc.Channel:
    """`channel` with client spans (and the trace context sent along) when tracing is on."""
    if _provider is None:
        return channel
    from opentelemetry.instrumentation.grpc import client_interceptor
    from opentelemetry.instrumentation.grpc.grpcext import intercept_channel

    return intercept_channel(channel, client_interceptor(tracer_provider=_provider))


def current_traceparent() -> str | None:
    """The W3C traceparent of the current span, to store with work queued for later; None without one."""
    if _provider is None:
        return None
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    carrier: dict[str, str] = {}
    TraceContextTextMapPropagator().inject(carrier)
    return carrier.get("traceparent")


@contextlib.contextmanager
def continued(traceparents: Sequence[str | None], name: str, **attributes: Any) -> Iterator[None]:
    """A span named `name` for work done on behalf of queued items: the child of their trace when they
    all came from one (`traceparents`: what `current_traceparent` gave when each was queued), else a
    new trace linked to each of theirs. Nothing when tracing is off."""
    if _provider is None:
        yield
        return
    from opentelemetry import trace
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    propagator = TraceContextTextMapPropagator()
    contexts = [propagator.extract({"traceparent": value}) for value in dict.fromkeys(t for t in traceparents if t)]
    span_contexts = [trace.get_current_span(context).get_span_context() for context in contexts]
    valid = [(context, span) for context, span in zip(contexts, span_contexts, strict=True) if span.is_valid]
    tracer = _provider.get_tracer(_TRACER)
    if len(valid) == 1:
        parent, links = valid[0][0], None
    else:
        parent, links = None, [trace.Link(span) for _, span in valid]
    with tracer.start_as_current_span(
        name, context=parent, links=links, kind=trace.SpanKind.CONSUMER, attributes=attributes or None
    ):
        yield


def _log_fields() -> dict[str, str]:
    from opentelemetry import trace

    span = trace.get_current_span().get_span_context()
    if not span.is_valid:
        return {}
    return {"trace_id": format(span.trace_id, "032x"), "span_id": format(span.span_id, "016x")}
