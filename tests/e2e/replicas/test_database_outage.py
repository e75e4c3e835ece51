"""A PostgreSQL server that goes down and comes back under a running service process: while it
is down every RPC that needs it fails fast with UNAVAILABLE (reason DATABASE_UNAVAILABLE), the
health check stays SERVING and the grant timer logs and carries on; once it is back, the same
process serves again. No service restart."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime, timedelta

import pytest
from grpc_health.v1 import health_pb2

from catalog_service.v1 import catalog_service_pb2 as cpb
from catalog_service.v1 import catalog_service_pb2_grpc as cpb_grpc
from grant_service.v1 import grant_service_pb2 as gpb
from grant_service.v1 import grant_service_pb2_grpc as gpb_grpc
from tests.e2e.grant.conftest import all_entries, subscription
from tests.e2e.replicas.conftest import (
    CATALOG_MIGRATIONS,
    GRANT_MIGRATIONS,
    expect_unavailable,
    migrated_database,
    wait_until,
)
from tests.support.postgres import free_port
from tests.support.processes import health_status

pytestmark = [pytest.mark.slow, pytest.mark.postgres]

TIMEOUT_S = 10  # each RPC's deadline: an outage must be answered well within it


def _balance(stub, customer: str) -> str:
    request = gpb.GetBalanceRequest(customer_key=customer, currency_key="ai-credits")
    return stub.GetBalance(request, timeout=TIMEOUT_S).balance.available


@pytest.mark.parametrize("mode", ["fast", "immediate"])
def test_grant_service_rides_out_a_postgres_restart(own_postgres, services, mode):
    url = migrated_database(own_postgres, "grant", GRANT_MIGRATIONS)
    grant = services("grant_service", "--database-url", url, "--catch-up-interval", "0.2")
    start = datetime.now(UTC) - timedelta(days=3)
    with grant.channel() as channel:
        stub = gpb_grpc.GrantServiceStub(channel)
        stub.ApplySubscription(subscription("sub-1", "acme", start, [("1000", None)]), timeout=TIMEOUT_S)
        assert _balance(stub, "acme") == "1000"

        own_postgres.stop(mode)  # "immediate" is a crash: PostgreSQL recovers from its WAL on start
        expect_unavailable(lambda: _balance(stub, "acme"), "grant.credit-grants")
        expect_unavailable(
            lambda: stub.ApplySubscription(subscription("sub-2", "bolt", start, [("500", None)]), timeout=TIMEOUT_S),
            "grant.credit-grants",
        )
        assert health_status(channel) == health_pb2.HealthCheckResponse.SERVING
        # the timer ran into the outage, logged it (without a traceback) and is still scheduled
        wait_until(
            lambda: any(r["message"] == "catch-up failed; the next run retries" for r in grant.log_records()),
            "the timer to log the outage",
            processes=[grant],
        )
        assert grant.running

        own_postgres.start()
        assert _balance(stub, "acme") == "1000"
        stub.ApplySubscription(subscription("sub-2", "bolt", start, [("500", None)]), timeout=TIMEOUT_S)
        assert _balance(stub, "bolt") == "500"
        grants = [
            e for e in all_entries(stub, "bolt") + all_entries(stub, "acme") if e.type == gpb.LEDGER_ENTRY_TYPE_GRANT
        ]
        assert sorted(e.amount for e in grants) == ["1000", "500"]

    assert grant.running
    assert grant.stop() == 0  # a clean stop writes every log line still queued
    failures = [r for r in grant.log_records() if r["message"] == "catch-up failed; the next run retries"]
    assert all("exception" not in r for r in failures)
    assert not [r for r in grant.log_records() if r["level"] in ("error", "critical")]


def test_catalog_service_rides_out_a_postgres_restart(own_postgres, services):
    url = migrated_database(own_postgres, "catalog", CATALOG_MIGRATIONS)
    catalog = services("catalog_service", "--database-url", url)

    def create(key: str):
        feature = cpb.Feature(key=key, display_name=key, type=cpb.FEATURE_TYPE_METERED, unit_name="call")
        return stub.CreateFeature(cpb.CreateFeatureRequest(feature=feature), timeout=TIMEOUT_S)

    with catalog.channel() as channel:
        stub = cpb_grpc.CatalogServiceStub(channel)
        create("before")

        own_postgres.stop("fast")
        expect_unavailable(lambda: create("during"), "catalog.credit-grants")
        expect_unavailable(
            lambda: stub.ListFeatures(cpb.ListFeaturesRequest(), timeout=TIMEOUT_S), "catalog.credit-grants"
        )
        assert health_status(channel) == health_pb2.HealthCheckResponse.SERVING

        own_postgres.start()
        create("after")
        keys = [f.key for f in stub.ListFeatures(cpb.ListFeaturesRequest(), timeout=TIMEOUT_S).features]
        assert sorted(keys) == ["after", "before"]
    assert catalog.running
    assert catalog.stop() == 0  # a clean stop writes every log line still queued
    # no RPC ended in INTERNAL ("unexpected error"); background work may log its failed passes
    assert not [r for r in catalog.log_records() if r["logger"] == "credit_grants.rpc" and r["level"] == "error"]


@pytest.mark.parametrize("module", ["catalog_service", "grant_service"])
@pytest.mark.parametrize("command", ["serve", "migrate"])
def test_a_database_down_at_start_is_one_clear_line_and_exit_status_3(module, command):
    url = f"postgresql://postgres@127.0.0.1:{free_port()}/nothing_listens_here"
    args = ["--listen", "127.0.0.1:0"] if command == "serve" else []
    result = subprocess.run(
        [sys.executable, "-m", module, command, "--database-url", url, *args],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 3, result.stderr
    assert f"{module}: cannot reach the database: connection failed" in result.stderr
    assert "Traceback" not in result.stderr
