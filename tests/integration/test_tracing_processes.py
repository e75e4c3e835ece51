"""Traces from real processes configured by the OTEL_* variables alone, with `--processes 2`: every
server process exports its spans over OTLP to a real TraceService receiver (flushed at the drain),
and the access lines carry the ids of those spans."""

from __future__ import annotations

import signal
from concurrent import futures

import grpc
import pytest
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

from grant_service.v1 import grant_service_pb2 as pb
from grant_service.v1 import grant_service_pb2_grpc
from tests.support.processes import ServiceProcess

pytestmark = pytest.mark.slow

CALLS = 12
METHOD = "/grant_service.v1.GrantService/GetBalance"


class Receiver(trace_service_pb2_grpc.TraceServiceServicer):
    def __init__(self) -> None:
        self.requests: list[trace_service_pb2.ExportTraceServiceRequest] = []

    def Export(self, request, context):
        self.requests.append(request)
        return trace_service_pb2.ExportTraceServiceResponse()


def test_server_processes_export_their_spans(database_url_factory, tmp_path):
    receiver = Receiver()
    collector = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(receiver, collector)
    port = collector.add_insecure_port("127.0.0.1:0")
    collector.start()
    env = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{port}",
        "OTEL_EXPORTER_OTLP_INSECURE": "true",
        "OTEL_SERVICE_NAME": "grant-under-test",
    }
    grant = ServiceProcess.grant(
        database_url_factory("grant"),
        log_dir=tmp_path,
        args=["--processes", "2", "--catch-up-interval", "0"],
        env=env,
    )
    try:
        grant.start()
        channels = [grant.channel() for _ in range(CALLS)]
        try:
            for channel in channels:
                with pytest.raises(grpc.RpcError) as unknown:
                    grant_service_pb2_grpc.GrantServiceStub(channel).GetBalance(
                        pb.GetBalanceRequest(customer_key="nobody", currency_key="ai"), timeout=10
                    )
                assert unknown.value.code() == grpc.StatusCode.NOT_FOUND
        finally:
            for channel in channels:
                channel.close()
        assert grant.stop(signal.SIGTERM) == 0, grant.log_tail()
    finally:
        grant.stop(signal.SIGKILL)
        collector.stop(0)
    spans = [
        (resource.resource, span)
        for request in receiver.requests
        for resource in request.resource_spans
        for scope in resource.scope_spans
        for span in scope.spans
        if span.name == METHOD
    ]
    assert len(spans) == CALLS
    services = {a.value.string_value for resource, _ in spans for a in resource.attributes if a.key == "service.name"}
    assert services == {"grant-under-test"}
    exported = {span.trace_id.hex() for _, span in spans}
    logged = {r["trace_id"] for r in grant.log_records() if r.get("method") == METHOD and "trace_id" in r}
    assert logged == exported
