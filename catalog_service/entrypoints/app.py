"""Wiring of the catalog service: database, service layer, the outbox
dispatcher, gRPC servicer, server."""

from __future__ import annotations

import logging

from sqlalchemy import Engine

from catalog_service.adapters.grant_client import GrantServiceClient
from catalog_service.adapters.orm import API_KEYS, OutboxDeliveryRow
from catalog_service.adapters.outbox_sql import outbox_gauges
from catalog_service.adapters.unit_of_work import SqlCatalogUnitsOfWork
from catalog_service.entrypoints.outbox_worker import start_outbox_worker
from catalog_service.entrypoints.roles import METHOD_ROLES, READ_METHODS, SERVICE
from catalog_service.entrypoints.servicer import CatalogServicer
from catalog_service.entrypoints.settings import FLAGS, CatalogSettings
from catalog_service.service_layer.context import CatalogContext
from catalog_service.v1 import catalog_service_pb2_grpc
from credit_common.clock import Clock, SystemClock
from credit_common.grpc.server import RunningServer
from credit_common.runtime import ServiceDefinition, start

log = logging.getLogger("catalog_service.app")

DEFINITION = ServiceDefinition(
    name="catalog_service",
    error_domain="catalog.credit-grants",
    service_names=(SERVICE.full_name,),
    migrations="catalog_service.adapters:migrations",
    method_roles=METHOD_ROLES,
    read_methods=READ_METHODS,
    api_keys=API_KEYS,
    flags=FLAGS,
    gauges=(outbox_gauges(OutboxDeliveryRow.__table__),),
)


def build(settings: CatalogSettings, engine: Engine, clock: Clock | None = None) -> RunningServer:
    """Start the catalog: its server and its outbox dispatcher, over one channel
    to the grant service. Shutdown (`running.stop`): health NOT_SERVING, the
    server drains, then the dispatcher stops, then the channel closes."""
    clock = clock or SystemClock()
    grant = settings.grant_service
    if not grant.api_key:
        log.warning(
            "no API key for the grant service (--grant-service-api-key, CATALOG_GRANT_SERVICE_API_KEY): "
            "a grant service with authentication on refuses the handoff"
        )
    grant_client = GrantServiceClient(grant.address, deadline=grant.deadline, tls=grant.tls, api_key=grant.api_key)
    try:
        worker = start_outbox_worker(
            engine,
            OutboxDeliveryRow.__table__,
            clock,
            channel=grant_client.channel,
            deadline=grant.deadline,
            settings=settings.outbox,
        )
    except Exception:
        grant_client.close()
        raise
    ctx = CatalogContext(SqlCatalogUnitsOfWork(engine), clock, test_clocks=grant_client, on_queued=worker.nudge)

    def register(server) -> None:
        catalog_service_pb2_grpc.add_CatalogServiceServicer_to_server(CatalogServicer(ctx), server)

    try:
        running = start(DEFINITION, settings, register, engine=engine, clock=clock)
    except Exception:
        worker.stop()
        grant_client.close()
        raise
    # on_stop runs in reverse order after the server drained: the worker stops before the channel closes.
    running.on_stop.append(grant_client.close)
    running.on_stop.append(worker.stop)
    return running
