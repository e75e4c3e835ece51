"""Wiring of the catalog service: database, service layer, gRPC servicer, server."""

from __future__ import annotations

import argparse
from collections.abc import Callable

from sqlalchemy import Engine

from catalog_service.adapters.grant_client import GrantServiceClient
from catalog_service.entrypoints.servicer import CatalogServicer
from catalog_service.service_layer.services import CatalogService
from catalog_service.service_layer.unit_of_work import UnitsOfWork
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

DEFAULT_GRANT_SERVICE_ADDRESS = "127.0.0.1:50052"


def add_arguments(parser: argparse.ArgumentParser, env: Callable[[str, str | None], str | None]) -> None:
    parser.add_argument(
        "--grant-service-address",
        default=env("GRANT_SERVICE_ADDRESS", DEFAULT_GRANT_SERVICE_ADDRESS),
        help=f"host:port of the grant service (default {DEFAULT_GRANT_SERVICE_ADDRESS})",
    )


def build(settings: ServiceSettings, engine: Engine, clock: Clock | None = None) -> RunningServer:
    clock = clock or SystemClock()
    address = getattr(settings.extra, "grant_service_address", None) or DEFAULT_GRANT_SERVICE_ADDRESS
    grant_client = GrantServiceClient(address)
    service = CatalogService(UnitsOfWork(engine), clock, test_clocks=grant_client)

    def register(server) -> None:
        catalog_service_pb2_grpc.add_CatalogServiceServicer_to_server(CatalogServicer(service), server)

    running = start(DEFINITION, listen=settings.listen, register=register, max_workers=settings.max_workers)
    running.on_stop.append(grant_client.close)
    return running


build.add_arguments = add_arguments  # type: ignore[attr-defined]
