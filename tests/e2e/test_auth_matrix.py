"""Every method of both services x every role, over one real server pair (the catalog calling
the grant service with its own sync key), plus no key, bad keys and a revoked key. Requests
are empty (cheap): an allowed call may fail for its content, never with UNAUTHENTICATED or
PERMISSION_DENIED; a denied one is PERMISSION_DENIED with ErrorInfo ROLE_REQUIRED naming the
method and the role it needs. Health and reflection answer without a key."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import grpc
import pytest
from google.protobuf import message_factory
from google.protobuf.descriptor import MethodDescriptor, ServiceDescriptor
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from catalog_service.adapters.grant_client import GrantServiceClient
from catalog_service.entrypoints import app as catalog_app
from catalog_service.entrypoints import roles as catalog_roles
from credit_common.auth.check import roles_of
from credit_common.auth.keys import SYNC
from credit_common.auth.store import SqlApiKeyStore
from credit_common.clock import SystemClock
from credit_common.db.engine import DatabaseSettings, create_db_engine
from credit_common.errors import DomainError
from credit_common.grpc.errors import error_details
from credit_common.runtime import ServiceDefinition
from grant_service.entrypoints import app as grant_app
from grant_service.entrypoints import roles as grant_roles
from tests.conftest import BACKENDS
from tests.support.auth import create_key_at
from tests.support.servers import serving

DEADLINE_S = 10.0
STREAM_DEADLINE_S = 1.0  # a stream that is allowed may stay open: its deadline ends it
AUTH_CODES = (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED)

# method -> the roles that may call it, besides admin. Not read from the services' tables on purpose.
EXPECTED_ROLES: dict[str, dict[str, set[str]]] = {
    "grant": {
        "ApplySubscription": {"sync"},
        "ApplySubscriptions": {"sync"},
        "ApplyCreditCurrency": {"sync"},
        "GetSubscription": {"reader"},
        "GetBalance": {"reader"},
        "ListGrants": {"reader"},
        "ListLedgerEntries": {"reader"},
        "ListEvents": {"reader"},
        "WatchEvents": {"reader"},
        "SetBalanceAlerts": {"operator"},
        "GetBalanceAlerts": {"operator", "reader"},
        "ClearBalanceAlerts": {"operator"},
        "ReportUsage": {"usage"},
        "ReportUsageBatch": {"usage"},
        "CheckUsage": {"usage"},
        "VoidGrant": {"operator"},
        "CreateGrant": {"operator"},
        "CreateTestClock": {"test-clocks"},
        "GetTestClock": {"test-clocks", "sync"},
        "ListTestClocks": {"test-clocks"},
        "AdvanceTestClock": {"test-clocks"},
        "DeleteTestClock": {"test-clocks"},
        "CreateWebhookEndpoint": {"webhooks"},
        "GetWebhookEndpoint": {"webhooks"},
        "ListWebhookEndpoints": {"webhooks"},
        "UpdateWebhookEndpoint": {"webhooks"},
        "DisableWebhookEndpoint": {"webhooks"},
        "EnableWebhookEndpoint": {"webhooks"},
        "DeleteWebhookEndpoint": {"webhooks"},
        "RotateWebhookSecret": {"webhooks"},
        "ListWebhookDeliveryAttempts": {"webhooks"},
        "ResendWebhookEvent": {"webhooks"},
        "ReplayWebhookEvents": {"webhooks"},
    },
    "catalog": {
        "CreateFeature": {"catalog-admin"},
        "GetFeature": {"reader"},
        "ListFeatures": {"reader"},
        "CreateCreditCurrency": {"catalog-admin"},
        "GetCreditCurrency": {"reader"},
        "ListCreditCurrencies": {"reader"},
        "UpdateCreditCurrency": {"catalog-admin"},
        "CreatePlan": {"catalog-admin"},
        "UpdatePlan": {"catalog-admin"},
        "GetPlan": {"reader"},
        "ListPlans": {"reader"},
        "PublishPlan": {"catalog-admin"},
        "ArchivePlan": {"catalog-admin"},
        "CreateCustomer": {"catalog-admin"},
        "GetCustomer": {"reader"},
        "ListCustomers": {"reader"},
        "ProvisionSubscription": {"catalog-admin"},
        "GetSubscription": {"reader"},
        "ListSubscriptions": {"reader"},
        "CancelSubscription": {"catalog-admin"},
        "AmendSubscription": {"catalog-admin"},
        "ListHandoffs": {"operator"},
        "RequeueHandoffs": {"operator"},
    },
}
SERVICE_ROLES = {
    "grant": {"reader", "usage", "operator", "sync", "test-clocks", "webhooks", "admin"},
    "catalog": {"reader", "catalog-admin", "operator", "admin"},
}


@dataclass
class Service:
    name: str
    definition: ServiceDefinition
    descriptor: ServiceDescriptor
    roles: dict[str, tuple[str, ...]]
    channel: grpc.Channel  # sends no key of its own
    keys: dict[str, str]  # role -> a key with that role alone
    revoked_key: str
    other_key: str  # a valid key of the other service
    address: str = ""

    def call(
        self, method: MethodDescriptor, metadata: list[tuple[str, str]], body: bytes | None = None
    ) -> grpc.StatusCode:
        """Call `method` with an empty request (or the raw bytes `body`); the status it ends with.
        A server stream is read to its end or its short deadline."""
        request_type = message_factory.GetMessageClass(method.input_type)
        response_type = message_factory.GetMessageClass(method.output_type)
        path = f"/{self.descriptor.full_name}/{method.name}"
        request = request_type().SerializeToString() if body is None else body
        assert not method.client_streaming, "no client-streaming method is expected"
        try:
            if method.server_streaming:
                stream = self.channel.unary_stream(path, response_deserializer=response_type.FromString)
                for _ in stream(request, timeout=STREAM_DEADLINE_S, metadata=metadata):
                    pass
            else:
                unary = self.channel.unary_unary(path, response_deserializer=response_type.FromString)
                unary(request, timeout=DEADLINE_S, metadata=metadata)
        except grpc.RpcError as error:
            self.last_error = error
            return error.code()
        return grpc.StatusCode.OK


@pytest.fixture(scope="module", params=BACKENDS)
def services(request, tmp_path_factory) -> Iterator[dict[str, Service]]:
    """Both services on one backend: the keys are looked up in each service's database."""
    if request.param == "sqlite":
        folder = tmp_path_factory.mktemp("auth")
        grant_url, catalog_url = f"sqlite:///{folder / 'grant.db'}", f"sqlite:///{folder / 'catalog.db'}"
    else:
        postgres = request.getfixturevalue("postgres_server")
        suffix = uuid.uuid4().hex[:12]
        grant_url = postgres.create_database(f"auth_grant_{suffix}")
        catalog_url = postgres.create_database(f"auth_catalog_{suffix}")
    sync_key = create_key_at(grant_app.DEFINITION, grant_url, (SYNC,), label="catalog")
    grant_args = ["--enable-test-clocks", "--catch-up-interval", "0"]
    with serving(grant_app.DEFINITION, grant_app.build, grant_url, args=grant_args) as (grant_running, _):
        catalog_args = [
            "--grant-service-address",
            f"127.0.0.1:{grant_running.port}",
            "--grant-service-api-key",
            sync_key,
        ]
        with serving(catalog_app.DEFINITION, catalog_app.build, catalog_url, args=catalog_args) as (catalog_running, _):
            made = {}
            channels = []
            for name, app, roles, url, port in (
                ("grant", grant_app, grant_roles, grant_url, grant_running.port),
                ("catalog", catalog_app, catalog_roles, catalog_url, catalog_running.port),
            ):
                keys = {role: create_key_at(app.DEFINITION, url, (role,)) for role in sorted(SERVICE_ROLES[name])}
                revoked = create_key_at(app.DEFINITION, url, ("admin",), label="revoked")
                revoke(app.DEFINITION, url, revoked)
                channels.append(grpc.insecure_channel(f"127.0.0.1:{port}"))
                made[name] = Service(
                    name,
                    app.DEFINITION,
                    roles.SERVICE,
                    roles.ROLES,
                    channels[-1],
                    keys,
                    revoked,
                    "",
                    f"127.0.0.1:{port}",
                )
            made["grant"].other_key = made["catalog"].keys["admin"]
            made["catalog"].other_key = made["grant"].keys["admin"]
            yield made
            for channel in channels:
                channel.close()


def revoke(definition: ServiceDefinition, url: str, token: str) -> None:
    engine = create_db_engine(DatabaseSettings(url=url))
    try:
        SqlApiKeyStore(engine, definition.api_keys).revoke(token.split("_")[1], SystemClock().now())
    finally:
        engine.dispose()


def bearer(key: str) -> list[tuple[str, str]]:
    return [("authorization", f"Bearer {key}")]


def expect_refusal(service: Service, code: grpc.StatusCode, reason: str) -> dict[str, str]:
    info, _ = error_details(service.last_error)
    assert info is not None, service.last_error.details()
    assert (code, info.reason, info.domain) == (service.last_error.code(), reason, service.definition.error_domain)
    return dict(info.metadata)


ROLE_CASES = [(service, role) for service, roles in SERVICE_ROLES.items() for role in sorted(roles)]


@pytest.mark.parametrize("service_name", ["grant", "catalog"])
def test_the_role_tables_are_the_expected_ones(services, service_name):
    """Every method of the service is in the expected table, and the product's table says the same."""
    service = services[service_name]
    expected = EXPECTED_ROLES[service_name]
    assert {m.name for m in service.descriptor.methods} == set(expected)
    assert {name: set(roles) for name, roles in service.roles.items()} == expected
    assert roles_of(service.roles) == SERVICE_ROLES[service_name]


@pytest.mark.parametrize(("service_name", "role"), ROLE_CASES)
def test_each_role_may_call_exactly_the_methods_of_its_table(services, service_name, role):
    service = services[service_name]
    allowed_somewhere = False
    for method in service.descriptor.methods:
        expected = EXPECTED_ROLES[service_name][method.name]
        accepted = service.roles[method.name]
        code = service.call(method, bearer(service.keys[role]))
        if role == "admin" or role in expected:
            allowed_somewhere = True
            assert code not in AUTH_CODES, (method.name, code, service.last_error.details())
        else:
            assert code == grpc.StatusCode.PERMISSION_DENIED, (method.name, code)
            metadata = expect_refusal(service, code, "ROLE_REQUIRED")
            assert metadata["method"] == f"/{service.descriptor.full_name}/{method.name}"
            assert metadata["required_role"] == accepted[0]
            assert metadata["accepted_roles"].split(",") == [*accepted, "admin"]
    assert allowed_somewhere


@pytest.mark.parametrize("service_name", ["grant", "catalog"])
def test_every_method_refuses_a_missing_a_bad_and_a_revoked_key(services, service_name):
    service = services[service_name]
    admin = service.keys["admin"]
    key_id, secret = admin.split("_")[1], admin.split("_")[2]
    wrong_secret = f"cgk_{key_id}_{'a' * len(secret) if secret[0] != 'a' else 'b' * len(secret)}"
    cases = [
        ([], "API_KEY_MISSING"),
        ([("authorization", "Basic YWRtaW46YWRtaW4=")], "API_KEY_MISSING"),
        (bearer("not-a-key"), "API_KEY_INVALID"),
        (bearer(wrong_secret), "API_KEY_INVALID"),
        (bearer("cgk_aaaaaaaaaaaaaaaa_" + secret), "API_KEY_INVALID"),
        (bearer(service.other_key), "API_KEY_INVALID"),  # a key of the other service
        (bearer(service.revoked_key), "API_KEY_REVOKED"),
    ]
    for method in service.descriptor.methods:
        for metadata, reason in cases:
            code = service.call(method, metadata)
            assert code == grpc.StatusCode.UNAUTHENTICATED, (method.name, reason, code)
            expect_refusal(service, code, reason)
        assert "Bearer" not in service.last_error.details() and secret not in service.last_error.details()


@pytest.mark.parametrize("service_name", ["grant", "catalog"])
def test_the_x_api_key_header_is_accepted_too(services, service_name):
    service = services[service_name]
    method = next(m for m in service.descriptor.methods if m.name.startswith("List"))
    assert service.call(method, [("x-api-key", service.keys["reader"])]) not in AUTH_CODES
    assert service.call(method, [("x-api-key", service.revoked_key)]) == grpc.StatusCode.UNAUTHENTICATED


@pytest.mark.parametrize("service_name", ["grant", "catalog"])
def test_health_needs_no_key_and_reflection_needs_any_valid_key(services, service_name):
    service = services[service_name]
    health = health_pb2_grpc.HealthStub(service.channel)
    for name in ("", service.descriptor.full_name):
        reply = health.Check(health_pb2.HealthCheckRequest(service=name), timeout=DEADLINE_S)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
    reflection = reflection_pb2_grpc.ServerReflectionStub(service.channel)

    def list_services(metadata):
        request = reflection_pb2.ServerReflectionRequest(list_services="")
        replies = reflection.ServerReflectionInfo(iter([request]), timeout=DEADLINE_S, metadata=metadata)
        return {s.name for reply in replies for s in reply.list_services_response.service}

    for role in sorted(SERVICE_ROLES[service_name]):  # any role will do
        assert service.descriptor.full_name in list_services(bearer(service.keys[role]))
    for metadata, reason in (([], "API_KEY_MISSING"), (bearer(service.revoked_key), "API_KEY_REVOKED")):
        with pytest.raises(grpc.RpcError) as refused:
            list_services(metadata)
        service.last_error = refused.value
        expect_refusal(service, grpc.StatusCode.UNAUTHENTICATED, reason)


def malformed_body(method: MethodDescriptor) -> bytes:
    """A request of `method`'s type that the request check refuses: a NUL in a string field, or a
    Timestamp out of range, wherever the message (or one it holds) has one."""
    request_type = message_factory.GetMessageClass(method.input_type)

    def spoil(message, depth=0) -> bool:
        for field in message.DESCRIPTOR.fields:
            repeated = field.is_repeated
            if field.type == field.TYPE_STRING and not repeated and not field.containing_oneof:
                setattr(message, field.name, "nul\x00inside")
                return True
            if field.type != field.TYPE_MESSAGE or field.message_type.GetOptions().map_entry:
                continue
            if repeated:
                if depth < 2 and spoil(getattr(message, field.name).add(), depth + 1):
                    return True
            else:
                if field.message_type.full_name == "google.protobuf.Timestamp":
                    getattr(message, field.name).seconds = -(10**13)
                    return True
                if depth < 2 and spoil(getattr(message, field.name), depth + 1):
                    return True
        return False

    request = request_type()
    assert spoil(request), f"{method.full_name} has no field to spoil"
    return request.SerializeToString()


UNDECODABLE = b"\x0f\xff\xff"  # field 1 with wire type 7: no message parses it
BATCHES = {
    "ApplySubscriptions",
    "ReportUsageBatch",
}  # a batch judges its items one by one: a bad item fails alone, in the answer


@pytest.mark.parametrize("service_name", ["grant", "catalog"])
def test_the_key_is_checked_before_the_request_is_read(services, service_name):
    """No key or a bad key: UNAUTHENTICATED for a valid, a malformed and an undecodable body alike,
    so an anonymous caller learns nothing of how requests are parsed. With a good key the malformed
    and undecodable bodies are INVALID_ARGUMENT (the bodies really are bad)."""
    service = services[service_name]
    for method in service.descriptor.methods:
        bodies = {"valid": None, "malformed": malformed_body(method), "undecodable": UNDECODABLE}
        for label, body in bodies.items():
            for metadata, reason in (([], "API_KEY_MISSING"), (bearer("cgk_nope"), "API_KEY_INVALID")):
                code = service.call(method, metadata, body)
                assert code == grpc.StatusCode.UNAUTHENTICATED, (method.name, label, reason, code)
                expect_refusal(service, code, reason)
            if body is not None and not (label == "malformed" and method.name in BATCHES):
                code = service.call(method, bearer(service.keys["admin"]), body)
                assert code == grpc.StatusCode.INVALID_ARGUMENT, (method.name, label, code)


def test_the_catalog_reads_a_test_clock_with_its_sync_key(services):
    """GetTestClock is the one grant method the catalog calls for its callers; a customer on an
    unknown clock is NOT_FOUND from the grant service, not a refused key."""
    catalog = services["catalog"]
    from catalog_service.v1 import catalog_service_pb2 as pb
    from catalog_service.v1 import catalog_service_pb2_grpc as pb_grpc

    stub = pb_grpc.CatalogServiceStub(catalog.channel)
    with pytest.raises(grpc.RpcError) as raised:
        stub.CreateCustomer(
            pb.CreateCustomerRequest(customer=pb.Customer(key="on-a-clock", test_clock_id="clk_nope")),
            timeout=DEADLINE_S,
            metadata=bearer(catalog.keys["catalog-admin"]),
        )
    info, _ = error_details(raised.value)
    assert raised.value.code() == grpc.StatusCode.NOT_FOUND and info.reason == "TEST_CLOCK_NOT_FOUND"


@pytest.mark.parametrize(("key", "refused"), [("sync", False), ("reader", True), ("revoked", True), (None, True)])
def test_the_catalog_client_reports_a_refused_catalog_key_as_unavailable_not_internal(services, key, refused):
    grant = services["grant"]
    token = {"revoked": grant.revoked_key, None: None}.get(key, grant.keys.get(key or ""))
    client = GrantServiceClient(grant.address, api_key=token)
    try:
        with pytest.raises(DomainError) as raised:
            client.now_of("clk_nope")
    finally:
        client.close()
    expected = (
        ("UNAVAILABLE", "GRANT_SERVICE_REFUSED_CATALOG_KEY") if refused else ("NOT_FOUND", "TEST_CLOCK_NOT_FOUND")
    )
    assert (raised.value.code, raised.value.reason) == expected


def test_with_auth_off_no_key_is_asked_for(tmp_path):
    args = ["--auth", "off", "--catch-up-interval", "0"]
    url = f"sqlite:///{tmp_path / 'g.db'}"
    with (
        serving(grant_app.DEFINITION, grant_app.build, url, args=args) as (running, _),
        grpc.insecure_channel(f"127.0.0.1:{running.port}") as channel,
    ):
        service = grant_roles.SERVICE
        probe = Service("grant", grant_app.DEFINITION, service, grant_roles.ROLES, channel, {}, "", "")
        # the empty request is judged (no customer key), not refused
        assert probe.call(service.methods_by_name["GetBalance"], []) == grpc.StatusCode.INVALID_ARGUMENT
