"""Server reflection serves the protos' comments: `grpcurl describe` (the dev extra's binary) over
a real server shows the documentation of a service, a method and a field, and a reflection client
gets file descriptors with their source info."""

from __future__ import annotations

import subprocess
from pathlib import Path

import grpc
import pytest
from google.protobuf import descriptor_pb2
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from catalog_service.entrypoints import app as catalog_app
from credit_common.auth.client import with_api_key
from grant_service.entrypoints import app as grant_app
from tests.support.auth import create_key_at
from tests.support.servers import serving

ROOT = Path(__file__).resolve().parents[2]
GRPCURL = ROOT / ".venv" / "bin" / "grpcurl"


@pytest.fixture(scope="module")
def servers(tmp_path_factory):
    folder = tmp_path_factory.mktemp("reflection")
    with (
        serving(grant_app.DEFINITION, grant_app.build, f"sqlite:///{folder / 'grant.db'}") as (grant, _),
        serving(
            catalog_app.DEFINITION,
            catalog_app.build,
            f"sqlite:///{folder / 'catalog.db'}",
            args=["--grant-service-address", f"127.0.0.1:{grant.port}"],
        ) as (catalog, _),
    ):
        keys = {
            "grant": create_key_at(grant_app.DEFINITION, f"sqlite:///{folder / 'grant.db'}", ("reader",)),
            "catalog": create_key_at(catalog_app.DEFINITION, f"sqlite:///{folder / 'catalog.db'}", ("reader",)),
        }
        yield {
            "grant": (f"127.0.0.1:{grant.port}", keys["grant"]),
            "catalog": (f"127.0.0.1:{catalog.port}", keys["catalog"]),
        }


def describe(server: tuple[str, str], symbol: str) -> str:
    """grpcurl's describe, with a key (reflection needs one of any role by default)."""
    address, key = server
    done = subprocess.run(
        [str(GRPCURL), "-plaintext", "-H", f"authorization: Bearer {key}", address, "describe", symbol],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.mark.parametrize(
    ("service", "symbol", "comment"),
    [
        (
            "catalog",
            "catalog_service.v1.CatalogService",
            "// CatalogService manages what a vendor sells and who bought it.",
        ),
        (
            "catalog",
            "catalog_service.v1.CatalogService.ListHandoffs",
            "// Operator action: lists the catalog's handoffs",
        ),
        ("catalog", "catalog_service.v1.VariableValue", "// Smallest allowed value (inclusive), a decimal"),
        ("grant", "grant_service.v1.GrantService.ReportUsage", "// Reports usage of a metered feature"),
        ("grant", "grant_service.v1.LedgerEntryType", "// Not set"),
        ("grant", "grant_service.v1.GetBalanceRequest.as_of_time", "// Instant of evaluation; unset for now"),
    ],
)
def test_grpcurl_describe_shows_the_comments(servers, service, symbol, comment):
    assert comment in describe(servers[service], symbol)


def test_describe_shows_the_roles_a_method_needs(servers):
    described = describe(servers["catalog"], "catalog_service.v1.CatalogService.RequeueHandoffs")
    assert 'option (.credit_grants.v1.required_roles) = "operator";' in described
    assert "// The roles that allow a method" in describe(servers["grant"], "credit_grants.v1.required_roles")


def test_reflection_gives_files_with_source_info(servers):
    address, key = servers["grant"]
    with with_api_key(grpc.insecure_channel(address), key) as channel:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        request = reflection_pb2.ServerReflectionRequest(file_containing_symbol="grant_service.v1.GrantService")
        [response] = list(stub.ServerReflectionInfo(iter([request]), timeout=10))
    files = [
        descriptor_pb2.FileDescriptorProto.FromString(b)
        for b in response.file_descriptor_response.file_descriptor_proto
    ]
    documented = {f.name: len(f.source_code_info.location) for f in files}
    assert documented["grant_service/v1/grant_service.proto"] > 100
    assert "google/protobuf/timestamp.proto" in documented  # the imports are served too
