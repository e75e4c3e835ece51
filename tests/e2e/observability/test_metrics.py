"""/metrics of both services over a real server on each backend: the go-grpc-prometheus RPC metrics,
the grant service's ledger counters and catch-up lag, the catalog's outbox, auth failures, pools."""

from __future__ import annotations

from datetime import UTC, datetime

import grpc
import pytest
from sqlalchemy import update

from catalog_service.adapters.orm import OutboxDeliveryRow
from catalog_service.entrypoints import app as catalog_app
from catalog_service.v1 import catalog_service_pb2 as cpb
from catalog_service.v1 import catalog_service_pb2_grpc
from credit_common.clock import ManualClock
from credit_common.db.engine import DatabaseSettings, create_db_engine
from credit_common.metrics import start_metrics, watch_pool
from grant_service.entrypoints import app as grant_app
from grant_service.v1 import grant_service_pb2 as pb
from grant_service.v1 import grant_service_pb2_grpc
from tests.e2e.grant.conftest import REAL_NOW, subscription, utc
from tests.support.metrics import scrape, value
from tests.support.servers import serving

START = utc(2026, 5, 20)


@pytest.fixture
def grant_with_metrics(database_url_factory):
    url = database_url_factory("grant")
    clock = ManualClock(REAL_NOW)
    args = ["--catch-up-interval", "0", "--metrics-listen", "127.0.0.1:0"]
    with serving(grant_app.DEFINITION, grant_app.build, url, clock=clock, args=args) as (running, channel):
        server, engine = start_metrics("127.0.0.1:0", DatabaseSettings(url=url), grant_app.DEFINITION.gauges, cache_s=0)
        try:
            yield running, channel, server.port
        finally:
            server.stop()
            engine.dispose()


def test_grant_service_metrics(grant_with_metrics):
    running, channel, port = grant_with_metrics
    stub = grant_service_pb2_grpc.GrantServiceStub(channel)
    before = scrape(port)
    stub.ApplyCreditCurrency(
        pb.ApplyCreditCurrencyRequest(
            currency_key="ai-credits", revision=1, rates=[pb.CreditRate(feature_key="gpt-call", credits_per_unit="2.5")]
        )
    )
    stub.ApplySubscription(subscription("sub_m", "acme", START, [("100", None)]))
    stub.ReportUsage(pb.ReportUsageRequest(request_id="u1", customer_key="acme", feature_key="gpt-call", quantity="10"))
    with pytest.raises(grpc.RpcError) as refused:
        stub.ReportUsage(
            pb.ReportUsageRequest(request_id="u2", customer_key="acme", feature_key="gpt-call", quantity="1000")
        )
    assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    anonymous = grant_service_pb2_grpc.GrantServiceStub(grpc.insecure_channel(f"127.0.0.1:{running.port}"))
    with pytest.raises(grpc.RpcError) as unauthenticated:
        anonymous.GetBalance(pb.GetBalanceRequest(customer_key="acme", currency_key="ai-credits"))
    assert unauthenticated.value.code() == grpc.StatusCode.UNAUTHENTICATED
    after = scrape(port)

    def delta(name, **labels):
        return value(after, name, **labels) - value(before, name, **labels)

    usage = {"grpc_service": "grant_service.v1.GrantService", "grpc_method": "ReportUsage", "grpc_type": "unary"}
    assert delta("grpc_server_started_total", **usage) == 2
    assert delta("grpc_server_handled_total", grpc_code="OK", **usage) == 1
    assert delta("grpc_server_handled_total", grpc_code="ResourceExhausted", **usage) == 1
    assert delta("grpc_server_handling_seconds_count", **usage) == 2
    assert delta("grpc_server_handling_seconds_bucket", le="+Inf", **usage) == 2
    assert delta("grpc_server_handled_total", grpc_method="GetBalance", grpc_code="Unauthenticated") == 1
    assert delta("credit_grants_auth_failures_total", reason="API_KEY_MISSING") == 1
    assert delta("credit_grants_usage_insufficient_credits_total") == 1
    assert delta("credit_grants_grants_issued_total", currency="ai-credits") == 1
    assert delta("credit_grants_credits_issued_total", currency="ai-credits") == 100
    assert delta("credit_grants_credits_debited_total", currency="ai-credits") == 25
    # The next period (2026-06-20) is due in real time and no catch-up ran (the interval is 0).
    lag = value(after, "credit_grants_catch_up_lag_seconds", work="issue")
    assert lag >= (datetime.now(UTC) - utc(2026, 6, 20)).total_seconds() - 60
    assert value(after, "credit_grants_metrics_database_up") == 1
    # No customer key or id is ever a label value.
    assert not any("acme" in v or "sub_m" in v for _, labels in after for _, v in labels)


def test_pool_gauges(database_url_factory):
    url = database_url_factory("pool")
    engine = create_db_engine(DatabaseSettings(url=url, pool_size=2, max_overflow=1))
    server, scrape_engine = start_metrics("127.0.0.1:0", DatabaseSettings(url=url), ())
    try:
        watch_pool(engine, "test-pool")
        with engine.connect(), engine.connect():
            watch_pool(engine, "test-pool")  # samples at once
            samples = scrape(server.port)
            assert value(samples, "credit_grants_db_pool_in_use", pool="test-pool") == 2
            assert value(samples, "credit_grants_db_pool_capacity", pool="test-pool") == 3
            assert value(samples, "credit_grants_db_pool_waiting", pool="test-pool") == 0
    finally:
        server.stop()
        scrape_engine.dispose()
        engine.dispose()


def test_catalog_outbox_metrics(database_url_factory):
    url = database_url_factory("catalog")
    args = [
        "--grant-service-address",
        "127.0.0.1:1",
        "--outbox-poll-interval-ms",
        "50",
        "--metrics-listen",
        "127.0.0.1:0",
    ]
    with serving(catalog_app.DEFINITION, catalog_app.build, url, args=args) as (running, channel):
        server, scrape_engine = start_metrics(
            "127.0.0.1:0", DatabaseSettings(url=url), catalog_app.DEFINITION.gauges, cache_s=0
        )
        try:
            before = scrape(server.port)
            stub = catalog_service_pb2_grpc.CatalogServiceStub(channel)
            stub.CreateFeature(
                cpb.CreateFeatureRequest(
                    feature=cpb.Feature(key="calls", display_name="Calls", type=cpb.FEATURE_TYPE_METERED, unit_name="c")
                )
            )
            stub.CreateCreditCurrency(
                cpb.CreateCreditCurrencyRequest(
                    credit_currency=cpb.CreditCurrency(
                        key="ai",
                        display_name="AI",
                        unit_name="credit",
                        rates=[cpb.CreditRate(feature_key="calls", credits_per_unit="1")],
                    )
                )
            )
            # The grant service is unreachable: the dispatcher tries, and the delivery stays pending.
            deadline = datetime.now(UTC).timestamp() + 30
            while True:
                samples = scrape(server.port)
                attempts = value(samples, "credit_grants_outbox_delivery_attempts_total", kind="credit_currency")
                if attempts > value(before, "credit_grants_outbox_delivery_attempts_total", kind="credit_currency"):
                    break
                assert datetime.now(UTC).timestamp() < deadline, "the dispatcher never attempted the delivery"
                running.drain.wait(0.05)
            assert (
                value(samples, "credit_grants_outbox_delivery_outcomes_total", kind="credit_currency", outcome="retry")
                >= 1
            )
            assert value(samples, "credit_grants_outbox_pending", kind="credit_currency") == 1
            assert value(samples, "credit_grants_outbox_parked", kind="credit_currency") == 0
            assert value(samples, "credit_grants_outbox_oldest_pending_age_seconds") >= 0

            with scrape_engine.begin() as connection:
                connection.execute(update(OutboxDeliveryRow.__table__).values(status="failed"))
            samples = scrape(server.port)
            assert value(samples, "credit_grants_outbox_parked", kind="credit_currency") == 1
            assert value(samples, "credit_grants_outbox_pending", kind="credit_currency") == 0
            assert value(samples, "credit_grants_outbox_oldest_pending_age_seconds") == 0
        finally:
            server.stop()
            scrape_engine.dispose()
