"""Traces: one trace from ProvisionSubscription (and AmendSubscription, CancelSubscription) at the
catalog through the outbox to ApplySubscription at the grant service, also when the delivery is
retried by a restarted catalog; log records carry the trace; the OTLP wire format against a real
TraceService receiver; nothing set up without the OTEL_* variables."""

from __future__ import annotations

import logging
import time
from concurrent import futures

import grpc
import pytest
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from catalog_service.entrypoints import app as catalog_app
from catalog_service.v1 import catalog_service_pb2 as cpb
from catalog_service.v1 import catalog_service_pb2_grpc
from credit_common import tracing
from grant_service.entrypoints import app as grant_app
from grant_service.v1 import grant_service_pb2 as pb
from grant_service.v1 import grant_service_pb2_grpc
from tests.e2e.handoff.conftest import setup_catalog
from tests.support.servers import serving

APPLY = "/grant_service.v1.GrantService/ApplySubscription"


@pytest.fixture
def spans():
    exporter = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": "credit-grants-test"}))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing.install(provider)
    try:
        yield exporter
    finally:
        tracing.install(None)
        provider.shutdown()


def _wait(predicate, what: str, timeout_s: float = 30.0):
    give_up = time.monotonic() + timeout_s
    while True:
        result = predicate()
        if result:
            return result
        assert time.monotonic() < give_up, f"timed out waiting for {what}"
        time.sleep(0.02)


def _server_span(exporter, method: str, trace_id: int | None = None):
    for span in exporter.get_finished_spans():
        if (span.name, span.kind) == (method, SpanKind.SERVER) and trace_id in (None, span.context.trace_id):
            return span
    return None


def _catalog(url: str, grant_port: int):
    args = ["--grant-service-address", f"127.0.0.1:{grant_port}", "--outbox-poll-interval-ms", "50"]
    return serving(catalog_app.DEFINITION, catalog_app.build, url, args=args)


def _delivered(stub, subscription_id: str, revision: int):
    def check():
        handoff = stub.GetSubscription(cpb.GetSubscriptionRequest(subscription_id=subscription_id)).subscription.handoff
        return handoff.delivered_revision >= revision

    return check


def test_one_trace_from_the_catalog_through_the_outbox_to_the_grant_service(spans, database_url_factory):
    grant_args = ["--auth", "off", "--catch-up-interval", "0"]
    with (
        serving(grant_app.DEFINITION, grant_app.build, database_url_factory("grant"), args=grant_args) as (
            grant,
            _,
        ),
        _catalog(database_url_factory("catalog"), grant.port) as (_, channel),
    ):
        stub = catalog_service_pb2_grpc.CatalogServiceStub(channel)
        setup_catalog(stub)
        stub.CreateCustomer(cpb.CreateCustomerRequest(request_id="c", customer=cpb.Customer(key="acme")))
        provisioned = stub.ProvisionSubscription(
            cpb.ProvisionSubscriptionRequest(
                request_id="ps",
                customer_key="acme",
                plan_key="enterprise",
                entitlement_values={"ai-credits-monthly": "50000"},
            )
        ).subscription
        _wait(_delivered(stub, provisioned.subscription_id, 1), "the provisioning's delivery")
        stub.AmendSubscription(
            cpb.AmendSubscriptionRequest(
                subscription_id=provisioned.subscription_id,
                entitlement_values={"ai-credits-monthly": "60000"},
                request_id="a",
            )
        )
        _wait(_delivered(stub, provisioned.subscription_id, 2), "the amendment's delivery")
        stub.CancelSubscription(
            cpb.CancelSubscriptionRequest(
                subscription_id=provisioned.subscription_id, mode=cpb.CANCEL_MODE_AT_PERIOD_END, request_id="x"
            )
        )
        _wait(_delivered(stub, provisioned.subscription_id, 3), "the cancellation's delivery")

    for method in ("ProvisionSubscription", "AmendSubscription", "CancelSubscription"):
        origin = _server_span(spans, f"/catalog_service.v1.CatalogService/{method}")
        assert origin is not None, method
        trace_id = origin.context.trace_id
        applied = _wait(lambda trace_id=trace_id: _server_span(spans, APPLY, trace_id), f"{method}'s ApplySubscription")
        in_trace = [s for s in spans.get_finished_spans() if s.context.trace_id == trace_id]
        names = {(s.name, s.kind) for s in in_trace}
        assert ("outbox deliver subscription", SpanKind.CONSUMER) in names, names
        assert (APPLY, SpanKind.CLIENT) in names, names  # the catalog's client span
        assert applied.resource.attributes["service.name"] == "credit-grants-test"


def test_the_trace_survives_a_retry_and_a_restart(spans, database_url_factory):
    catalog_url = database_url_factory("catalog")
    grant_args = ["--auth", "off", "--catch-up-interval", "0"]
    # First a catalog whose grant service is unreachable: the delivery fails and waits for a retry.
    with _catalog(catalog_url, 1) as (_, channel):
        stub = catalog_service_pb2_grpc.CatalogServiceStub(channel)
        setup_catalog(stub)
        stub.CreateCustomer(cpb.CreateCustomerRequest(request_id="c", customer=cpb.Customer(key="acme")))
        provisioned = stub.ProvisionSubscription(
            cpb.ProvisionSubscriptionRequest(
                request_id="ps",
                customer_key="acme",
                plan_key="enterprise",
                entitlement_values={"ai-credits-monthly": "5000"},
            )
        ).subscription

        def attempted():
            handoff = stub.GetSubscription(
                cpb.GetSubscriptionRequest(subscription_id=provisioned.subscription_id)
            ).subscription.handoff
            return handoff.attempts >= 1

        _wait(attempted, "a failed attempt")
    origin = _server_span(spans, "/catalog_service.v1.CatalogService/ProvisionSubscription")
    assert origin is not None
    # Then the grant service, and a new catalog process over the same database delivers it.
    with serving(grant_app.DEFINITION, grant_app.build, database_url_factory("grant"), args=grant_args) as (grant, _):
        args = [
            "--grant-service-address",
            f"127.0.0.1:{grant.port}",
            "--outbox-poll-interval-ms",
            "50",
            "--outbox-backoff-base-ms",
            "10",
        ]
        with serving(catalog_app.DEFINITION, catalog_app.build, catalog_url, args=args) as (_, channel):
            stub = catalog_service_pb2_grpc.CatalogServiceStub(channel)
            _wait(_delivered(stub, provisioned.subscription_id, 1), "the delivery after the restart", timeout_s=60)
    applied = _server_span(spans, APPLY, origin.context.trace_id)
    assert applied is not None, [(s.name, s.context.trace_id) for s in spans.get_finished_spans()]


def test_log_records_carry_the_trace(spans, database_url_factory, caplog):
    url = database_url_factory("grant")
    with serving(grant_app.DEFINITION, grant_app.build, url) as (_, channel), caplog.at_level(logging.INFO):
        _get_balance(channel)
    span = _server_span(spans, "/grant_service.v1.GrantService/GetBalance")
    records = [r for r in caplog.records if getattr(r, "method", "").endswith("/GetBalance")]
    assert span.attributes["rpc.grpc.status_code"] == grpc.StatusCode.NOT_FOUND.value[0]
    assert records and records[0].trace_id == format(span.context.trace_id, "032x")
    assert records[0].span_id == format(span.context.span_id, "016x")


def _get_balance(channel) -> None:
    with pytest.raises(grpc.RpcError) as unknown:  # no such customer: a traced call all the same
        grant_service_pb2_grpc.GrantServiceStub(channel).GetBalance(
            pb.GetBalanceRequest(customer_key="nobody", currency_key="ai")
        )
    assert unknown.value.code() == grpc.StatusCode.NOT_FOUND


class Receiver(trace_service_pb2_grpc.TraceServiceServicer):
    def __init__(self) -> None:
        self.requests: list[trace_service_pb2.ExportTraceServiceRequest] = []

    def Export(self, request, context):
        self.requests.append(request)
        return trace_service_pb2.ExportTraceServiceResponse()


def test_spans_reach_a_real_otlp_receiver(database_url_factory, monkeypatch):
    receiver = Receiver()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(receiver, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_INSECURE", "true")
    monkeypatch.setenv("OTEL_SERVICE_NAME", "grant-under-test")
    provider = TracerProvider(resource=Resource.create({"service.name": "grant-under-test"}))
    provider.add_span_processor(SimpleSpanProcessor(OTLPSpanExporter()))
    tracing.install(provider)
    try:
        with serving(grant_app.DEFINITION, grant_app.build, database_url_factory("grant")) as (_, channel):
            _get_balance(channel)
        provider.force_flush()
        exported = [
            (resource.resource, span)
            for request in receiver.requests
            for resource in request.resource_spans
            for scope in resource.scope_spans
            for span in scope.spans
        ]
        names = {span.name for _, span in exported}
        assert "/grant_service.v1.GrantService/GetBalance" in names, names
        resource, span = next((r, s) for r, s in exported if s.name.endswith("/GetBalance"))
        service_names = [a.value.string_value for a in resource.attributes if a.key == "service.name"]
        assert service_names == ["grant-under-test"]
        assert len(span.trace_id) == 16 and len(span.span_id) == 8
    finally:
        tracing.install(None)
        provider.shutdown()
        server.stop(0)


def test_nothing_is_set_up_without_the_otel_variables(monkeypatch):
    for name in ("OTEL_TRACES_EXPORTER", "OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"):
        monkeypatch.delenv(name, raising=False)
    assert tracing.configure_from_env("grant_service") is None
    assert tracing.server_interceptor() is None and tracing.current_traceparent() is None
    assert not tracing.enabled_by_env({"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://x"})
    assert tracing.enabled_by_env({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4317"})
    assert not tracing.enabled_by_env({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://x", "OTEL_SDK_DISABLED": "true"})
