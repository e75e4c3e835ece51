"""The one interceptor over a real server: domain errors become their status
with ErrorInfo and BadRequest; database outages become UNAVAILABLE; anything
unexpected becomes a generic INTERNAL whose message has no traceback."""

from __future__ import annotations

import contextlib

import grpc
import pytest
from sqlalchemy.exc import OperationalError

from credit_common.db.engine import translate_db_error
from credit_common.errors import FieldViolation, InvalidArgument, NotFound, ResourceExhausted
from credit_common.grpc.errors import error_details
from credit_common.grpc.interceptors import ServiceInterceptor
from credit_common.grpc.server import start_server

RAISERS = {
    "invalid": lambda: (_ for _ in ()).throw(
        InvalidArgument(
            "bad", reason="BAD_THING", violations=[FieldViolation("a.b", "is bad"), FieldViolation("c", "is worse")]
        )
    ),
    "missing": lambda: (_ for _ in ()).throw(NotFound("no such plan", reason="PLAN_NOT_FOUND", metadata={"key": "p"})),
    "exhausted": lambda: (_ for _ in ()).throw(
        ResourceExhausted("not enough", reason="INSUFFICIENT_CREDITS", metadata={"available": "1.5"})
    ),
    "db_down": lambda: (_ for _ in ()).throw(
        OperationalError("SELECT 1", {}, Exception("connection refused: could not connect to server"))
    ),
    "bug": lambda: (_ for _ in ()).throw(KeyError("secret-internal-detail")),
    "ok": lambda: b"fine",
}


@pytest.fixture(scope="module")
def channel():
    def handler(name):
        return grpc.unary_unary_rpc_method_handler(
            lambda request, context: RAISERS[name](),
            request_deserializer=lambda b: b,
            response_serializer=lambda b: b,
        )

    def register(server):
        server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler("test.v1.TestService", {n: handler(n) for n in RAISERS}),)
        )

    running = start_server(
        address="127.0.0.1:0",
        service_names=["test.v1.TestService"],
        register=register,
        interceptor=ServiceInterceptor("test.credit-grants", translate=translate_db_error),
    )
    channel = grpc.insecure_channel(f"127.0.0.1:{running.port}")
    yield channel
    channel.close()
    running.stop(0)


def call(channel, name):
    return channel.unary_unary(f"/test.v1.TestService/{name}")(b"", timeout=5)


def test_ok_passes_through(channel):
    assert call(channel, "ok") == b"fine"


def test_invalid_argument_has_error_info_and_every_violation(channel):
    with pytest.raises(grpc.RpcError) as error:
        call(channel, "invalid")
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    info, violations = error_details(error.value)
    assert (info.reason, info.domain) == ("BAD_THING", "test.credit-grants")
    assert [(v.field, v.description) for v in violations] == [("a.b", "is bad"), ("c", "is worse")]


@pytest.mark.parametrize(
    ("name", "code", "reason", "metadata"),
    [
        ("missing", grpc.StatusCode.NOT_FOUND, "PLAN_NOT_FOUND", {"key": "p"}),
        ("exhausted", grpc.StatusCode.RESOURCE_EXHAUSTED, "INSUFFICIENT_CREDITS", {"available": "1.5"}),
        ("db_down", grpc.StatusCode.UNAVAILABLE, "DATABASE_UNAVAILABLE", {}),
    ],
)
def test_status_and_reason(channel, name, code, reason, metadata):
    with pytest.raises(grpc.RpcError) as error:
        call(channel, name)
    assert error.value.code() == code
    info, _ = error_details(error.value)
    assert info.reason == reason
    assert dict(info.metadata) == metadata


def test_unexpected_error_is_generic_internal(channel, caplog):
    with pytest.raises(grpc.RpcError) as error:
        call(channel, "bug")
    assert error.value.code() == grpc.StatusCode.INTERNAL
    assert "secret-internal-detail" not in error.value.details()
    assert "Traceback" not in error.value.details()
    assert any(record.exc_info for record in caplog.records if record.name == "credit_grants.rpc")


@pytest.mark.parametrize(
    ("name", "code", "reason"),
    [("ok", "OK", ""), ("missing", "NOT_FOUND", "PLAN_NOT_FOUND"), ("bug", "INTERNAL", "INTERNAL")],
)
def test_each_rpc_leaves_one_access_line(channel, caplog, name, code, reason):
    caplog.set_level("INFO", logger="credit_grants.rpc")
    with contextlib.suppress(grpc.RpcError):
        call(channel, name)
    (line,) = [r for r in caplog.records if r.name == "credit_grants.rpc" and r.getMessage() == "rpc"]
    assert (line.method, line.code, line.reason) == (f"/test.v1.TestService/{name}", code, reason)
    assert isinstance(line.duration_ms, float) and line.duration_ms >= 0
