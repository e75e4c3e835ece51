"""TLS and mTLS on both listeners, and the catalog's TLS channel to the grant service, over real
servers on port 0 with certificates made by `trustme` for each test module."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
import trustme
from grpc_health.v1 import health_pb2, health_pb2_grpc

from catalog_service.entrypoints import app as catalog_app
from catalog_service.v1 import catalog_service_pb2 as pb
from catalog_service.v1 import catalog_service_pb2_grpc as pb_grpc
from credit_common.auth.keys import SYNC
from grant_service.entrypoints import app as grant_app
from grant_service.v1 import grant_service_pb2 as grant_pb2
from grant_service.v1 import grant_service_pb2_grpc as grant_pb2_grpc
from tests.e2e.handoff.conftest import provision_many, setup_catalog, wait_for
from tests.support.auth import create_key_at
from tests.support.processes import ServiceProcess
from tests.support.servers import serving

DEADLINE_S = 5.0


@dataclass(frozen=True)
class Pki:
    ca: Path  # the CA that signs the servers' and the good clients' certificates
    server_cert: Path  # for 127.0.0.1 and localhost
    server_key: Path
    client_cert: Path  # signed by `ca`
    client_key: Path
    stranger_cert: Path  # a client certificate signed by another CA
    stranger_key: Path

    def credentials(self, *, client: str | None = None) -> grpc.ChannelCredentials:
        """Channel credentials trusting `ca`; with `client="client"` or `"stranger"`, presenting that cert."""
        key = getattr(self, f"{client}_key").read_bytes() if client else None
        cert = getattr(self, f"{client}_cert").read_bytes() if client else None
        return grpc.ssl_channel_credentials(self.ca.read_bytes(), private_key=key, certificate_chain=cert)


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> Pki:
    folder = tmp_path_factory.mktemp("pki")
    ca, other_ca = trustme.CA(), trustme.CA()
    ca.cert_pem.write_to_path(str(folder / "ca.pem"))
    files = {}
    for name, issuer, identities in (
        ("server", ca, ("127.0.0.1", "localhost")),
        ("client", ca, ("catalog.internal",)),
        ("stranger", other_ca, ("catalog.internal",)),
    ):
        cert = issuer.issue_cert(*identities)
        cert.private_key_pem.write_to_path(str(folder / f"{name}.key"))
        for i, blob in enumerate(cert.cert_chain_pems):
            blob.write_to_path(str(folder / f"{name}.pem"), append=i > 0)
        files[f"{name}_cert"], files[f"{name}_key"] = folder / f"{name}.pem", folder / f"{name}.key"
    return Pki(ca=folder / "ca.pem", **files)


def tls_args(pki: Pki, *, mtls: bool = False) -> list[str]:
    args = ["--tls-cert", str(pki.server_cert), "--tls-key", str(pki.server_key)]
    return [*args, "--tls-client-ca", str(pki.ca)] if mtls else args


def healthy(channel: grpc.Channel) -> bool:
    reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=DEADLINE_S)
    return reply.status == health_pb2.HealthCheckResponse.SERVING


def refused(channel: grpc.Channel) -> grpc.StatusCode:
    """The code of a health check on a channel the server does not accept (the handshake fails)."""
    with pytest.raises(grpc.RpcError) as caught:
        health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=DEADLINE_S)
    return caught.value.code()


@pytest.fixture
def grant_tls(pki, tmp_path) -> Iterator[tuple[int, grpc.Channel]]:
    with serving(
        grant_app.DEFINITION,
        grant_app.build,
        f"sqlite:///{tmp_path / 'grant.db'}",
        args=[*tls_args(pki), "--catch-up-interval", "0"],
        credentials=pki.credentials(),
    ) as (running, channel):
        yield running.port, channel


@pytest.fixture
def grant_mtls(pki, tmp_path) -> Iterator[tuple[int, grpc.Channel]]:
    with serving(
        grant_app.DEFINITION,
        grant_app.build,
        f"sqlite:///{tmp_path / 'grant.db'}",
        args=[*tls_args(pki, mtls=True), "--catch-up-interval", "0.2"],
        credentials=pki.credentials(client="client"),
    ) as (running, channel):
        yield running.port, channel


def test_grant_service_over_tls(grant_tls, pki):
    port, channel = grant_tls
    assert healthy(channel)
    stub = grant_pb2_grpc.GrantServiceStub(channel)
    with pytest.raises(grpc.RpcError) as caught:  # the RPC reached the servicer
        stub.GetSubscription(grant_pb2.GetSubscriptionRequest(subscription_id="sub_nope"), timeout=DEADLINE_S)
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    with grpc.insecure_channel(f"127.0.0.1:{port}") as plaintext:
        assert refused(plaintext) == grpc.StatusCode.UNAVAILABLE
    # TLS alone asks no client certificate: one that presents a certificate is served too.
    with grpc.secure_channel(f"127.0.0.1:{port}", pki.credentials(client="stranger")) as other:
        assert healthy(other)


def test_catalog_over_tls(pki, tmp_path):
    with (
        serving(
            catalog_app.DEFINITION,
            catalog_app.build,
            f"sqlite:///{tmp_path / 'catalog.db'}",
            args=[*tls_args(pki), "--grant-service-address", "127.0.0.1:1"],
            credentials=pki.credentials(),
        ) as (running, channel),
    ):
        assert healthy(channel)
        reply = pb_grpc.CatalogServiceStub(channel).ListFeatures(pb.ListFeaturesRequest(), timeout=DEADLINE_S)
        assert list(reply.features) == []
        with grpc.insecure_channel(f"127.0.0.1:{running.port}") as plaintext:
            assert refused(plaintext) == grpc.StatusCode.UNAVAILABLE


def test_mtls_refuses_clients_without_a_good_certificate(grant_mtls, pki):
    port, channel = grant_mtls
    assert healthy(channel)  # the client certificate signed by the CA
    target = f"127.0.0.1:{port}"
    with grpc.secure_channel(target, pki.credentials()) as no_cert:
        assert refused(no_cert) == grpc.StatusCode.UNAVAILABLE
    with grpc.secure_channel(target, pki.credentials(client="stranger")) as other_ca:
        assert refused(other_ca) == grpc.StatusCode.UNAVAILABLE
    with grpc.insecure_channel(target) as plaintext:
        assert refused(plaintext) == grpc.StatusCode.UNAVAILABLE


def test_catalog_delivers_to_a_grant_service_that_requires_mtls(grant_mtls, pki, tmp_path):
    port, grant_channel = grant_mtls
    sync_key = create_key_at(grant_app.DEFINITION, f"sqlite:///{tmp_path / 'grant.db'}", (SYNC,), label="catalog")
    client_args = [
        "--grant-service-address",
        f"127.0.0.1:{port}",
        "--grant-service-api-key",
        sync_key,
        "--grant-tls-ca",
        str(pki.ca),
        "--grant-tls-cert",
        str(pki.client_cert),
        "--grant-tls-key",
        str(pki.client_key),
        "--grant-tls-server-name",
        "localhost",
    ]
    with serving(
        catalog_app.DEFINITION,
        catalog_app.build,
        f"sqlite:///{tmp_path / 'catalog.db'}",
        args=[*tls_args(pki, mtls=True), *client_args],
        credentials=pki.credentials(client="client"),
    ) as (_running, channel):
        stub = pb_grpc.CatalogServiceStub(channel)
        setup_catalog(stub)
        [subscription] = provision_many(stub, 1)
        grants = grant_pb2_grpc.GrantServiceStub(grant_channel)

        def granted():
            try:
                request = grant_pb2.ListGrantsRequest(customer_key=subscription.customer_key)
                return grants.ListGrants(request, timeout=DEADLINE_S).grants
            except grpc.RpcError as error:  # NOT_FOUND until the subscription arrives
                assert error.code() == grpc.StatusCode.NOT_FOUND
                return None

        [grant] = wait_for(granted, "the first grant", timeout_s=30)
        assert (grant.subscription_id, grant.amount, grant.period_index) == (subscription.subscription_id, "50000", 0)
        reply = stub.GetSubscription(
            pb.GetSubscriptionRequest(subscription_id=subscription.subscription_id), timeout=DEADLINE_S
        )
        assert reply.subscription.handoff.status == pb.HANDOFF_STATUS_DELIVERED


def test_catalog_without_its_client_certificate_does_not_deliver(grant_mtls, pki, tmp_path):
    """The channel really is TLS with the configured client certificate: without it the delivery
    stays pending with UNAVAILABLE (the handshake fails), and nothing reaches the grant service."""
    port, _grant_channel = grant_mtls
    args = ["--grant-service-address", f"127.0.0.1:{port}", "--grant-tls-ca", str(pki.ca)]
    with serving(catalog_app.DEFINITION, catalog_app.build, f"sqlite:///{tmp_path / 'catalog.db'}", args=args) as (
        _running,
        channel,
    ):
        stub = pb_grpc.CatalogServiceStub(channel)
        setup_catalog(stub)
        [subscription] = provision_many(stub, 1)

        def failed_once():
            reply = stub.GetSubscription(
                pb.GetSubscriptionRequest(subscription_id=subscription.subscription_id), timeout=DEADLINE_S
            )
            return reply.subscription.handoff.failure_reason

        assert "UNAVAILABLE" in wait_for(failed_once, "a failed delivery", timeout_s=30)


@pytest.mark.slow
def test_every_server_process_of_a_service_serves_mtls(pki, tmp_path):
    """`--processes 2`: the supervisor hands the TLS settings to each server process it spawns."""
    grant = ServiceProcess.grant(
        f"sqlite:///{tmp_path / 'grant.db'}",
        log_dir=tmp_path,
        args=["--processes", "2", *tls_args(pki, mtls=True)],
        credentials=pki.credentials(client="client"),
    )
    with grant:
        wait_for(
            lambda: len([r for r in grant.log_records() if r["message"] == "serving"]) == 2,
            "both server processes serving",
            (grant,),
        )
        serving_records = [r for r in grant.log_records() if r["message"] == "serving"]
        assert sorted((r["server_process"], r["transport"]) for r in serving_records) == [(0, "mtls"), (1, "mtls")]
        # Connections of their own, spread by the kernel over both processes: each is TLS only.
        own = [("grpc.use_local_subchannel_pool", 1)]
        for _ in range(8):
            with grpc.secure_channel(grant.address, pki.credentials(client="client"), options=own) as good:
                assert healthy(good)
            with grpc.insecure_channel(grant.address, options=own) as plaintext:
                assert refused(plaintext) == grpc.StatusCode.UNAVAILABLE
            with grpc.secure_channel(grant.address, pki.credentials(), options=own) as no_cert:
                assert refused(no_cert) == grpc.StatusCode.UNAVAILABLE
