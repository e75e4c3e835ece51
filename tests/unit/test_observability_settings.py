"""The switches of observability: metrics recorded only where someone can read them, the grpc_code
label as go-grpc-prometheus writes it, the --metrics-listen flag and its default (off)."""

from __future__ import annotations

import grpc

from credit_common.config import parse_service_args
from credit_common.grpc.observe import go_code_name
from credit_common.metrics import MULTIPROC_ENV, recorded
from credit_common.processes import server_settings


def _settings(*argv: str):
    return parse_service_args(
        service="grant_service", env_prefix="UNUSED_IN_TESTS", default_port=0, database_file="x.db", argv=list(argv)
    )


def test_metrics_are_off_by_default_and_recorded_only_when_served(monkeypatch):
    monkeypatch.delenv(MULTIPROC_ENV, raising=False)
    off = _settings()
    assert off.metrics_listen is None and not recorded(off)
    on = _settings("--metrics-listen", "127.0.0.1:9052")
    assert on.metrics_listen == "127.0.0.1:9052" and recorded(on)
    # A server process of a supervisor: the supervisor serves them; the process records into the directory.
    child = server_settings(_settings("--processes", "2", "--metrics-listen", "127.0.0.1:9052"), "127.0.0.1:1", 0)
    assert child.metrics_listen is None
    assert not recorded(child)
    monkeypatch.setenv(MULTIPROC_ENV, "/tmp/metrics")
    assert recorded(child)


def test_grpc_codes_are_written_as_go_grpc_prometheus_does():
    assert go_code_name(grpc.StatusCode.OK) == "OK"
    assert go_code_name(grpc.StatusCode.CANCELLED) == "Canceled"
    assert go_code_name(grpc.StatusCode.DEADLINE_EXCEEDED) == "DeadlineExceeded"
    assert go_code_name(grpc.StatusCode.INVALID_ARGUMENT) == "InvalidArgument"
    assert go_code_name(grpc.StatusCode.UNAUTHENTICATED) == "Unauthenticated"
