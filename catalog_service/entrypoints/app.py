"""Wiring of the catalog service: database, service layer, gRPC servicer, server."""

from __future__ import annotations

from sqlalchemy import Engine

from catalog_service.v1 import catalog_service_pb2, catalog_service_pb2_grpc
from credit_common.clock import Clock, SystemClock
from credit_common.config import ServiceSettings
from credit_common.grpc.server import RunningServer
from credit_common.runtime import ServiceDefinition, start

DEFINITION = ServiceDefinition(
    name="catalog_service",
    error_domain="catalog.credit-grants",
    service_names=(catalog_service_pb2.DESCRIPTOR.services_by_name["CatalogService"].full_name,),
    migrations="catalog_service.adapters:migrations",
)


def build(settings: ServiceSettings, engine: Engine, clock: Clock | None = None) -> RunningServer:
    clock = clock or SystemClock()

    def register(server) -> None:
        catalog_service_pb2_grpc.add_CatalogServiceServicer_to_server(
            catalog_service_pb2_grpc.CatalogServiceServicer(), server
        )

    return start(DEFINITION, listen=settings.listen, register=register, max_workers=settings.max_workers)
