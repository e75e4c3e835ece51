"""Both servers: health per service name, reflection, NOT_SERVING on shutdown."""

from __future__ import annotations

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from catalog_service.entrypoints import app as catalog_app
from grant_service.entrypoints import app as grant_app
from tests.support.servers import serving

SERVICES = [
    pytest.param(catalog_app, "catalog_service.v1.CatalogService", id="catalog"),
    pytest.param(grant_app, "grant_service.v1.GrantService", id="grant"),
]


@pytest.mark.parametrize(("app", "service_name"), SERVICES)
def test_health_and_reflection(app, service_name, database_url_factory):
    with serving(app.DEFINITION, app.build, database_url_factory("db")) as (running, channel):
        health = health_pb2_grpc.HealthStub(channel)
        for name in (service_name, ""):
            reply = health.Check(health_pb2.HealthCheckRequest(service=name), timeout=5)
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
        with pytest.raises(grpc.RpcError) as unknown:
            health.Check(health_pb2.HealthCheckRequest(service="no.such.Service"), timeout=5)
        assert unknown.value.code() == grpc.StatusCode.NOT_FOUND

        reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
        replies = reflection.ServerReflectionInfo(
            iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=5
        )
        names = {s.name for reply in replies for s in reply.list_services_response.service}
        assert {service_name, "grpc.health.v1.Health", "grpc.reflection.v1alpha.ServerReflection"} <= names

        running.health.enter_graceful_shutdown()
        reply = health.Check(health_pb2.HealthCheckRequest(service=service_name), timeout=5)
        assert reply.status == health_pb2.HealthCheckResponse.NOT_SERVING
