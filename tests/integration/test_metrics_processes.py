"""Metrics with `--processes 2`: the supervisor alone serves /metrics, the sum of both server
processes (the library's multiprocess mode); a server process that ended still counts in the
counters, its live gauges no longer do."""

from __future__ import annotations

import multiprocessing
import signal
import time

import grpc
import pytest

from credit_common import metrics
from grant_service.v1 import grant_service_pb2 as pb
from grant_service.v1 import grant_service_pb2_grpc
from tests.support.metrics import scrape, value
from tests.support.postgres import free_port
from tests.support.processes import ServiceProcess

pytestmark = pytest.mark.slow

CALLS = 48


def test_one_scrape_sums_every_server_process(database_url_factory, tmp_path):
    metrics_dir = tmp_path / "metrics"
    metrics_port = free_port()
    grant = ServiceProcess.grant(
        database_url_factory("grant"),
        log_dir=tmp_path,
        args=["--processes", "2", "--metrics-listen", f"127.0.0.1:{metrics_port}", "--catch-up-interval", "0"],
        env={"PROMETHEUS_MULTIPROC_DIR": str(metrics_dir)},
    )
    with grant:
        channels = [grant.channel() for _ in range(16)]  # connections: the kernel spreads them over both
        try:
            for i in range(CALLS):
                stub = grant_service_pb2_grpc.GrantServiceStub(channels[i % len(channels)])
                with pytest.raises(grpc.RpcError) as unknown:  # no such customer: answered all the same
                    stub.GetBalance(pb.GetBalanceRequest(customer_key="nobody", currency_key="ai"), timeout=10)
                assert unknown.value.code() == grpc.StatusCode.NOT_FOUND
        finally:
            for channel in channels:
                channel.close()
        # Each server process records its RPCs' metrics within half a second (credit_common.grpc.observe).
        # The database gauges are read with a 2 s timeout: on a busy machine a scrape may miss them once.
        give_up = time.monotonic() + 60
        while True:
            samples = scrape(metrics_port)
            handled = value(samples, "grpc_server_handled_total", grpc_method="GetBalance")
            if handled >= CALLS and value(samples, "credit_grants_metrics_database_up") == 1:
                break
            assert time.monotonic() < give_up, f"{handled} calls recorded, database gauges {samples}"
            time.sleep(0.2)
        assert value(samples, "grpc_server_started_total", grpc_method="GetBalance") == CALLS
        assert value(samples, "grpc_server_handled_total", grpc_method="GetBalance", grpc_code="NotFound") == CALLS
        assert value(samples, "credit_grants_metrics_database_up") == 1
        # Both server processes recorded calls: one counter file each.
        writers = {path.name for path in metrics_dir.glob("counter_*.db")}
        assert len(writers) == 2, writers
        assert value(samples, "credit_grants_db_pool_capacity", pool="main") > 0
        assert grant.stop(signal.SIGTERM) == 0


def _record() -> None:  # in a spawned interpreter that inherited PROMETHEUS_MULTIPROC_DIR
    metrics.OUTBOX_ATTEMPTS.labels("subscription").inc(3)
    metrics.POOL_IN_USE.labels("main").set(5)


def test_a_server_process_that_ended_keeps_its_counts_not_its_live_gauges(tmp_path, monkeypatch):
    path = str(tmp_path)
    monkeypatch.setenv(metrics.MULTIPROC_ENV, path)
    exposition = metrics.serve_metrics("127.0.0.1:0", multiprocess_dir=path)
    try:
        context = multiprocessing.get_context("spawn")
        children = [context.Process(target=_record) for _ in range(2)]
        for child in children:
            child.start()
        for child in children:
            child.join(60)
        before = scrape(exposition.port)
        assert value(before, "credit_grants_outbox_delivery_attempts_total", kind="subscription") == 6
        metrics.process_ended(children[0].pid, path)
        after = scrape(exposition.port)
        assert value(after, "credit_grants_outbox_delivery_attempts_total", kind="subscription") == 6
        assert value(after, "credit_grants_db_pool_in_use", pool="main") == 5  # only the live one's
    finally:
        exposition.stop()
