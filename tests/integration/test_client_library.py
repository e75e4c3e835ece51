"""credit_client over real gRPC servers on port 0: retries of UNAVAILABLE with one request_id, no
retry of anything else, a deadline on every call, the API key sent, TLS and mTLS from settings,
and the server's ErrorInfo and field violations on the raised exception (a real catalog)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent import futures
from datetime import UTC, datetime
from decimal import Decimal

import grpc
import pytest
import trustme

from catalog_service.entrypoints import app as catalog_app
from credit_client import CatalogClient, ClientSettings, GrantClient
from credit_client import errors as client_errors
from credit_client.clients import timestamp
from credit_common.auth.keys import ADMIN, USAGE
from grant_service.entrypoints import app as grant_app
from grant_service.v1 import grant_service_pb2 as gpb
from grant_service.v1 import grant_service_pb2_grpc as gpb_grpc
from tests.support.auth import create_key_at
from tests.support.servers import serving


class FlakyGrantService(gpb_grpc.GrantServiceServicer):
    """ReportUsage fails with `codes` in turn, then answers; it records what each call carried."""

    def __init__(self, codes: list[grpc.StatusCode]) -> None:
        self.codes = list(codes)
        self.request_ids: list[str] = []
        self.remaining: list[float | None] = []
        self.keys: list[str] = []
        self._lock = threading.Lock()

    def ReportUsage(self, request, context):
        with self._lock:
            self.request_ids.append(request.request_id)
            self.remaining.append(context.time_remaining())
            self.keys.append(dict(context.invocation_metadata()).get("authorization", ""))
            code = self.codes.pop(0) if self.codes else None
        if code is not None:
            context.abort(code, f"injected {code.name}")
        return gpb.ReportUsageResponse(usage=gpb.Usage(request_id=request.request_id, credits="2.5"))


def start(servicer, credentials: grpc.ServerCredentials | None = None) -> tuple[grpc.Server, int]:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    gpb_grpc.add_GrantServiceServicer_to_server(servicer, server)
    port = (
        server.add_secure_port("127.0.0.1:0", credentials) if credentials else server.add_insecure_port("127.0.0.1:0")
    )
    server.start()
    return server, port


@pytest.fixture
def flaky() -> Iterator[callable]:
    servers = []

    def make(codes, credentials=None):
        servicer = FlakyGrantService(codes)
        server, port = start(servicer, credentials)
        servers.append(server)
        return servicer, port

    yield make
    for server in servers:
        server.stop(0)


def client(port: int, **settings) -> GrantClient:
    return GrantClient(ClientSettings(address=f"127.0.0.1:{port}", retry_backoff_s=0.01, **settings))


def test_unavailable_is_retried_with_the_same_generated_request_id(flaky):
    servicer, port = flaky([grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.UNAVAILABLE])
    with client(port, api_key="cgk_k_s", deadline_s=7) as grants:
        usage = grants.report_usage("acme", "gpt-calls", Decimal("1"))
    assert len(servicer.request_ids) == 3 and len(set(servicer.request_ids)) == 1 and servicer.request_ids[0]
    assert usage.request_id == servicer.request_ids[0]
    assert all(r is not None and 0 < r <= 7.01 for r in servicer.remaining), servicer.remaining  # a deadline each time
    assert servicer.keys == ["Bearer cgk_k_s"] * 3


def test_a_given_request_id_is_kept_and_retries_stop_at_the_limit(flaky):
    servicer, port = flaky([grpc.StatusCode.UNAVAILABLE] * 5)
    with client(port, retries=2) as grants, pytest.raises(client_errors.Unavailable) as caught:
        grants.report_usage("acme", "gpt-calls", "1", request_id="mine")
    assert servicer.request_ids == ["mine"] * 3
    assert caught.value.request_id == "mine" and caught.value.method == "ReportUsage"


def test_other_codes_are_not_retried(flaky):
    servicer, port = flaky([grpc.StatusCode.INTERNAL, grpc.StatusCode.DEADLINE_EXCEEDED])
    with client(port) as grants:
        with pytest.raises(client_errors.ApiError) as caught:
            grants.report_usage("acme", "gpt-calls", "1")
        assert caught.value.code == grpc.StatusCode.INTERNAL and len(servicer.request_ids) == 1
        with pytest.raises(client_errors.DeadlineExceeded):
            grants.report_usage("acme", "gpt-calls", "1")
    assert len(servicer.request_ids) == 2


def test_floats_and_naive_times_are_refused(flaky):
    _servicer, port = flaky([])
    with client(port) as grants:
        with pytest.raises(TypeError, match="never a float"):
            grants.report_usage("acme", "gpt-calls", 2.5)
        with pytest.raises(ValueError, match="timezone-aware"):
            from datetime import datetime

            grants.get_balance("acme", "ai-credits", as_of=datetime(2026, 1, 1))


def test_tls_and_mtls_from_settings_and_environment(flaky, tmp_path):
    ca = trustme.CA()
    server_cert = ca.issue_cert("127.0.0.1", "localhost")
    client_cert = ca.issue_cert("client.internal")
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    client_cert.private_key_pem.write_to_path(str(tmp_path / "client.key"))
    (tmp_path / "client.pem").write_bytes(b"".join(p.bytes() for p in client_cert.cert_chain_pems))
    credentials = grpc.ssl_server_credentials(
        [(server_cert.private_key_pem.bytes(), b"".join(p.bytes() for p in server_cert.cert_chain_pems))],
        root_certificates=ca.cert_pem.bytes(),
        require_client_auth=True,
    )
    servicer, port = flaky([], credentials)
    env = {
        "CREDIT_GRANTS_GRANT_ADDRESS": f"127.0.0.1:{port}",
        "CREDIT_GRANTS_GRANT_TLS_CA": str(tmp_path / "ca.pem"),
        "CREDIT_GRANTS_GRANT_TLS_CERT": str(tmp_path / "client.pem"),
        "CREDIT_GRANTS_GRANT_TLS_KEY": str(tmp_path / "client.key"),
        "CREDIT_GRANTS_GRANT_API_KEY_FILE": str(tmp_path / "key"),
    }
    (tmp_path / "key").write_text("cgk_from_file\n")
    with GrantClient(ClientSettings.from_env("grant", env)) as grants:
        assert grants.report_usage("acme", "gpt-calls", "1").credits == "2.5"
    assert servicer.keys == ["Bearer cgk_from_file"]
    without_cert = ClientSettings.from_env("grant", env, tls_cert_file="", tls_key_file="")
    with GrantClient(without_cert.with_(retries=0)) as grants, pytest.raises(client_errors.Unavailable):
        grants.report_usage("acme", "gpt-calls", "1")


def test_settings_defaults_and_checks():
    settings = ClientSettings.from_env("catalog", {})
    assert (settings.address, settings.api_key, settings.uses_tls, settings.deadline_s) == (
        "127.0.0.1:50051",
        None,
        False,
        10.0,
    )
    assert ClientSettings.from_env("grant", {"CREDIT_GRANTS_GRANT_TLS": "true"}).uses_tls
    with pytest.raises(ValueError, match="both"):
        ClientSettings(address="x", tls_cert_file="c.pem")
    with pytest.raises(ValueError, match="catalog' or 'grant'"):
        ClientSettings.from_env("billing", {})


def test_errors_carry_reason_metadata_and_field_violations(tmp_path):
    url = f"sqlite:///{tmp_path / 'catalog.db'}"
    with serving(catalog_app.DEFINITION, catalog_app.build, url, args=["--grant-service-address", "127.0.0.1:9"]) as (
        running,
        _channel,
    ):
        key = create_key_at(catalog_app.DEFINITION, url, (ADMIN,), migrate=False)
        with CatalogClient(address=f"127.0.0.1:{running.port}", api_key=key) as catalog:
            with pytest.raises(client_errors.NotFound) as missing:
                catalog.get_feature("nope")
            assert missing.value.reason == "FEATURE_NOT_FOUND" and missing.value.metadata == {"key": "nope"}
            assert missing.value.domain == "catalog.credit-grants"
            with pytest.raises(client_errors.InvalidArgument) as invalid:
                catalog.create_feature("Bad Key!", "x", "metered", "call")
            assert [v.field for v in invalid.value.violations] == ["feature.key"]
            assert "feature.key:" in str(invalid.value)
            feature = catalog.create_feature("calls", "Calls", "metered", "call")
            assert catalog.get_feature("calls") == feature
            assert [f.key for f in catalog.list_features()] == ["calls"]
        with CatalogClient(address=f"127.0.0.1:{running.port}") as anonymous:
            with pytest.raises(client_errors.Unauthenticated) as caught:
                anonymous.get_feature("calls")
            assert caught.value.reason == "API_KEY_MISSING"


def test_report_usage_batch_against_a_real_grant_server(tmp_path):
    """One result per usage in order: accepted, refused with its reason, replayed; a usage sent
    without a request_id gets one of its own."""
    url = f"sqlite:///{tmp_path / 'grant.db'}"
    start = datetime(2026, 1, 1, tzinfo=UTC)
    with serving(grant_app.DEFINITION, grant_app.build, url) as (running, channel):
        stub = gpb_grpc.GrantServiceStub(channel)
        rates = [gpb.CreditRate(feature_key="gpt-calls", credits_per_unit="2.5")]
        stub.ApplyCreditCurrency(gpb.ApplyCreditCurrencyRequest(currency_key="ai-credits", revision=1, rates=rates))
        schedule = gpb.CreditSchedule(
            entitlement_key="credits",
            currency_key="ai-credits",
            cadence=gpb.CADENCE_MONTHLY,
            amounts=[gpb.ScheduledAmount(amount="10")],
        )
        stub.ApplySubscription(
            gpb.ApplySubscriptionRequest(
                subscription_id="sub_acme",
                customer_key="acme",
                revision=1,
                start_time=timestamp(start),
                credit_schedules=[schedule],
            )
        )
        key = create_key_at(grant_app.DEFINITION, url, (USAGE,), migrate=False)
        with GrantClient(address=f"127.0.0.1:{running.port}", api_key=key) as grants:
            first = grants.report_usage_batch(
                [
                    {"customer_key": "acme", "feature_key": "gpt-calls", "quantity": Decimal(2), "request_id": "u-1"},
                    {"customer_key": "acme", "feature_key": "gpt-calls", "quantity": "3"},  # 7.5 > 5 left
                    gpb.ReportUsageRequest(customer_key="acme", feature_key="gpt-calls", quantity="1"),
                ]
            )
            again = grants.report_usage_batch(
                [{"customer_key": "acme", "feature_key": "gpt-calls", "quantity": 2, "request_id": "u-1"}]
            )
            with pytest.raises(TypeError):  # a float is not exact
                grants.report_usage_batch([{"customer_key": "acme", "feature_key": "gpt-calls", "quantity": 1.5}])
    assert [r.outcome for r in first] == [
        gpb.USAGE_OUTCOME_ACCEPTED,
        gpb.USAGE_OUTCOME_REJECTED,
        gpb.USAGE_OUTCOME_ACCEPTED,
    ]
    assert first[0].usage.request_id == "u-1" and first[0].usage.credits == "5" and first[0].usage.balance_after == "5"
    assert first[1].rejection.reason == "INSUFFICIENT_CREDITS"
    assert first[2].usage.request_id and first[2].usage.balance_after == "2.5"  # its generated request_id
    assert [r.outcome for r in again] == [gpb.USAGE_OUTCOME_REPLAYED]
    assert again[0].usage.usage_id == first[0].usage.usage_id
