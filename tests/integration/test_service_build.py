"""credit_common.runtime.build, the one start of both services: the service's own parts
(`ServiceDefinition.assemble`) are started around a real server on port 0; what they started is stopped
after the server drained, the last started first; and when the start fails, what was already started
is stopped at once, nothing left running."""

from __future__ import annotations

from dataclasses import replace

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from sqlalchemy.orm import Session

from credit_common import metrics
from credit_common.config import parse_service_args
from credit_common.db.engine import DatabaseSettings, create_db_engine
from credit_common.runtime import build
from credit_common.service import ServiceDefinition, ServiceParts

SERVICE = "test.v1.NothingService"


def _definition(assemble) -> ServiceDefinition:
    return ServiceDefinition(
        name="test_service",
        error_domain="test.credit-grants",
        service_names=(SERVICE,),
        migrations="unused",
        assemble=assemble,
    )


def _settings(tmp_path):
    return parse_service_args(
        service="test_service",
        env_prefix="UNUSED_IN_TESTS",
        default_port=0,
        database_file="unused.db",
        argv=["--listen", "127.0.0.1:0", "--database-url", f"sqlite:///{tmp_path / 't.db'}", "--auth", "off"],
    )


def test_the_parts_start_around_the_server_and_stop_after_it_in_reverse(tmp_path):
    events: list[str] = []
    servers: list[grpc.Server] = []

    def assemble(settings, engine, clock, on_stop):
        events.append("assembled")
        on_stop(lambda: events.append("client closed"))
        on_stop(lambda: events.append("worker stopped"))

        def started(running):
            events.append(f"started on {running.port}")
            return [lambda: events.append("timer stopped")]

        return ServiceParts(register=servers.append, started=started)

    engine = create_db_engine(DatabaseSettings(url=f"sqlite:///{tmp_path / 't.db'}"))
    running = build(_definition(assemble), _settings(tmp_path), engine)
    try:
        assert events == ["assembled", f"started on {running.port}"]
        assert servers == [running.server]
        with grpc.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            answer = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=SERVICE), timeout=10
            )
        assert answer.status == health_pb2.HealthCheckResponse.SERVING
    finally:
        running.stop(grace=1)
        engine.dispose()
    assert events[2:] == ["timer stopped", "worker stopped", "client closed"]


def test_a_failed_start_stops_what_was_already_started(tmp_path):
    events: list[str] = []

    def assemble(settings, engine, clock, on_stop):
        on_stop(lambda: events.append("client closed"))
        on_stop(lambda: events.append("worker stopped"))

        def register(server):
            raise RuntimeError("cannot register")

        return ServiceParts(register=register)

    engine = create_db_engine(DatabaseSettings(url=f"sqlite:///{tmp_path / 't.db'}"))
    with pytest.raises(RuntimeError, match="cannot register"):
        build(_definition(assemble), _settings(tmp_path), engine)
    assert events == ["worker stopped", "client closed"]
    engine.dispose()


def test_a_failure_while_assembling_stops_what_the_service_had_started(tmp_path):
    events: list[str] = []

    def assemble(settings, engine, clock, on_stop):
        on_stop(lambda: events.append("client closed"))
        raise OSError("the worker cannot start")

    engine = create_db_engine(DatabaseSettings(url=f"sqlite:///{tmp_path / 't.db'}"))
    with pytest.raises(OSError, match="cannot start"):
        build(_definition(assemble), _settings(tmp_path), engine)
    assert events == ["client closed"]
    engine.dispose()


@pytest.mark.parametrize("metrics_listen", [None, "127.0.0.1:0"], ids=["metrics-off", "metrics-on"])
def test_a_service_counts_its_ledger_only_when_its_metrics_can_be_read(tmp_path, monkeypatch, metrics_listen):
    """The ledger tally (credit_common.metrics.tally_entries) costs every debit and grant: a process
    whose metrics nobody can read (no --metrics-listen, no supervisor's) skips it, as the RPC metrics."""
    monkeypatch.setattr(metrics, "_counting_ledger", not metrics_listen)  # the other way round first
    settings = _settings(tmp_path)
    if metrics_listen:
        settings = replace(settings, metrics_listen=metrics_listen)
    engine = create_db_engine(DatabaseSettings(url=f"sqlite:///{tmp_path / 't.db'}"))
    running = build(_definition(lambda *_: ServiceParts(register=lambda server: None)), settings, engine)
    try:
        session = Session()
        metrics.tally_entries(session, [("DEBIT", "ai-credits", 5)])
        assert bool(session.info) == bool(metrics_listen)
    finally:
        running.stop(0)
        engine.dispose()
