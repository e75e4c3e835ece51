"""Every method of both services x every role, over one real server pair (the catalog calling
the grant service with its own sync key), plus no key, bad keys and a revoked key. Requests
are empty (cheap): an allowed call may fail for its content, never with UNAUTHENTICATED or
PERMISSION_DENIED; a denied one is PERMISSION_DENIED with ErrorInfo ROLE_REQUIRED naming the
method and the role it needs. Health and reflection answer without a key."""

from __future__ import annotations

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
from credit_common.auth.interceptor import roles_of
from credit_common.auth.keys import SYNC
from credit_common.auth.store import SqlApiKeyStore
from credit_common.clock import SystemClock
from credit_common.db.engine import DatabaseSettings, create_db_engine
from credit_common.errors import DomainError
from credit_common.grpc.errors import error_details
from credit_common.runtime import ServiceDefinition
from grant_service.entrypoints import app as grant_app
from grant_service.entrypoints import roles as grant_roles
from tests.support.auth import create_key_at
from tests.support.servers import serving

DEADLINE_S = 10.0
AUTH_CODES = (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED)


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

    def call(self, method: MethodDescriptor, metadata: list[tuple[str, str]]) -> grpc.StatusCode:
        request_type = message_factory.GetMessageClass(method.input_type)
        response_type = message_factory.GetMessageClass(method.output_type)
        callable_ = self.channel.unary_unary(
            f"/{self.descriptor.full_name}/{method.name}",
            request_serializer=request_type.SerializeToString,
            response_deserializer=response_type.FromString,
        )
        try:
            callable_(request_type(), timeout=DEADLINE_S, metadata=metadata)
        except grpc.RpcError as error:
            self.last_error = error
            return error.code()
        return grpc.StatusCode.OK


@pytest.fixture(scope="module")
def services(tmp_path_factory) -> Iterator[dict[str, Service]]:
    folder = tmp_path_factory.mktemp("auth")
    grant_url, catalog_url = f"sqlite:///{folder / 'grant.db'}", f"sqlite:///{folder / 'catalog.db'}"
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
                keys = {role: create_key_at(app.DEFINITION, url, (role,)) for role in sorted(roles_of(roles.ROLES))}
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


ROLE_CASES = [("grant", role) for role in sorted(roles_of(grant_roles.ROLES))] + [
    ("catalog", role) for role in sorted(roles_of(catalog_roles.ROLES))
]


@pytest.mark.parametrize(("service_name", "role"), ROLE_CASES)
def test_each_role_may_call_exactly_the_methods_of_its_table(services, service_name, role):
    service = services[service_name]
    allowed_somewhere = False
    for method in service.descriptor.methods:
        accepted = service.roles[method.name]
        code = service.call(method, bearer(service.keys[role]))
        if role == "admin" or role in accepted:
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
def test_health_and_reflection_need_no_key(services, service_name):
    service = services[service_name]
    health = health_pb2_grpc.HealthStub(service.channel)
    for name in ("", service.descriptor.full_name):
        reply = health.Check(health_pb2.HealthCheckRequest(service=name), timeout=DEADLINE_S)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
    reflection = reflection_pb2_grpc.ServerReflectionStub(service.channel)
    replies = reflection.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]))
    names = {s.name for reply in replies for s in reply.list_services_response.service}
    assert service.descriptor.full_name in names


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
