"""The catalog's client of the grant service: each status the grant service can answer
GetTestClock with becomes the domain error the catalog's caller should see."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent import futures

import grpc
import pytest
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from catalog_service.adapters.grant_client import GrantServiceClient
from credit_common.errors import FailedPrecondition, InvalidArgument, NotFound, Unavailable
from grant_service.v1 import grant_service_pb2_grpc


class Refusing(grant_service_pb2_grpc.GrantServiceServicer):
    """Answers GetTestClock with `code`, an ErrorInfo `reason` and, for INVALID_ARGUMENT, a violation."""

    code = code_pb2.INVALID_ARGUMENT
    reason = "INVALID_ARGUMENT"

    def GetTestClock(self, request, context):
        details = []
        packed = any_pb2.Any()
        packed.Pack(error_details_pb2.ErrorInfo(reason=self.reason, domain="grant.credit-grants"))
        details.append(packed)
        if self.code == code_pb2.INVALID_ARGUMENT:
            violation = error_details_pb2.BadRequest.FieldViolation(
                field="test_clock_id", description="must be at most 40 characters"
            )
            packed = any_pb2.Any()
            packed.Pack(error_details_pb2.BadRequest(field_violations=[violation]))
            details.append(packed)
        context.abort_with_status(
            rpc_status.to_status(status_pb2.Status(code=self.code, message="refused", details=details))
        )


@pytest.fixture
def refusing() -> Iterator[tuple[Refusing, GrantServiceClient]]:
    servicer = Refusing()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    grant_service_pb2_grpc.add_GrantServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    client = GrantServiceClient(f"127.0.0.1:{port}")
    yield servicer, client
    client.close()
    server.stop(0)


def test_invalid_argument_is_the_callers_on_the_callers_field(refusing):
    _servicer, client = refusing
    with pytest.raises(InvalidArgument) as raised:
        client.now_of("x" * 60, "customer.test_clock_id")
    assert [(v.field, v.description) for v in raised.value.violations] == [
        ("customer.test_clock_id", "must be at most 40 characters")
    ]


def test_failed_precondition_keeps_its_reason(refusing):
    servicer, client = refusing
    servicer.code, servicer.reason = code_pb2.FAILED_PRECONDITION, "TEST_CLOCKS_DISABLED"
    with pytest.raises(FailedPrecondition) as raised:
        client.now_of("clk_1")
    assert raised.value.reason == "TEST_CLOCKS_DISABLED"


def test_not_found(refusing):
    servicer, client = refusing
    servicer.code, servicer.reason = code_pb2.NOT_FOUND, "TEST_CLOCK_NOT_FOUND"
    with pytest.raises(NotFound) as raised:
        client.now_of("clk_1")
    assert raised.value.reason == "TEST_CLOCK_NOT_FOUND"


@pytest.mark.parametrize("code", [code_pb2.UNAVAILABLE, code_pb2.RESOURCE_EXHAUSTED])
def test_retryable_statuses_are_unavailable(refusing, code):
    servicer, client = refusing
    servicer.code = code
    with pytest.raises(Unavailable) as raised:
        client.now_of("clk_1")
    assert raised.value.reason == "GRANT_SERVICE_UNAVAILABLE"


@pytest.mark.parametrize("code", [code_pb2.INTERNAL, code_pb2.UNIMPLEMENTED, code_pb2.DATA_LOSS])
def test_anything_else_is_unexpected(refusing, code):
    servicer, client = refusing
    servicer.code = code
    with pytest.raises(grpc.RpcError):
        client.now_of("clk_1")
