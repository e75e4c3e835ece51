"""Wiring of the grant service: database, service layer, gRPC servicer, server."""

from __future__ import annotations

from sqlalchemy import Engine

from credit_common.clock import Clock, SystemClock
from credit_common.config import ServiceSettings
from credit_common.grpc.server import RunningServer
from credit_common.runtime import ServiceDefinition, start
from grant_service.v1 import grant_service_pb2, grant_service_pb2_grpc

DEFINITION = ServiceDefinition(
    name="grant_service",
    error_domain="grant.credit-grants",
    service_names=(grant_service_pb2.DESCRIPTOR.services_by_name["GrantService"].full_name,),
    migrations="grant_service.adapters:migrations",
)


def build(settings: ServiceSettings, engine: Engine, clock: Clock | None = None) -> RunningServer:
    clock = clock or SystemClock()

    def register(server) -> None:
        grant_service_pb2_grpc.add_GrantServiceServicer_to_server(grant_service_pb2_grpc.GrantServiceServicer(), server)

    return start(DEFINITION, listen=settings.listen, register=register, max_workers=settings.max_workers)
