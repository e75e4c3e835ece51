"""The catalog service as it declares itself (DEFINITION): its own parts are the service layer over
the database, the gRPC servicer and the outbox dispatcher; credit_common.runtime does the rest."""

from __future__ import annotations

import logging
from collections.abc import Callable
from functools import partial

from sqlalchemy import Engine

from catalog_service.adapters.grant_client import GrantServiceClient
from catalog_service.adapters.orm import API_KEYS, OutboxDeliveryRow
from catalog_service.adapters.outbox_sql import outbox_gauges
from catalog_service.adapters.unit_of_work import SqlCatalogTransactions
from catalog_service.entrypoints.outbox_worker import start_outbox_worker
from catalog_service.entrypoints.roles import METHOD_ROLES, READ_METHODS, SERVICE
from catalog_service.entrypoints.servicer import CatalogServicer
from catalog_service.entrypoints.settings import FLAGS, CatalogSettings
from catalog_service.service_layer.context import CatalogContext
from catalog_service.v1 import catalog_service_pb2_grpc
from credit_common import runtime
from credit_common.clock import Clock
from credit_common.service import ServiceDefinition, ServiceParts, Stop

log = logging.getLogger("catalog_service.app")


def assemble(settings: CatalogSettings, engine: Engine, clock: Clock, on_stop: Callable[[Stop], None]) -> ServiceParts:
    """The catalog's own parts: its service layer and servicer, its outbox dispatcher, over one
    channel to the grant service. After the server drained, the dispatcher stops, then the channel
    closes."""
    grant = settings.grant_service
    if not grant.api_key:
        log.warning(
            "no API key for the grant service (--grant-service-api-key, CATALOG_GRANT_SERVICE_API_KEY): "
            "a grant service with authentication on refuses the handoff"
        )
    grant_client = GrantServiceClient(grant.address, deadline=grant.deadline, tls=grant.tls, api_key=grant.api_key)
    on_stop(grant_client.close)
    worker = start_outbox_worker(
        engine,
        OutboxDeliveryRow.__table__,
        clock,
        channel=grant_client.channel,
        deadline=grant.deadline,
        settings=settings.outbox,
    )
    on_stop(worker.stop)
    ctx = CatalogContext(SqlCatalogTransactions(engine), clock, test_clocks=grant_client, on_queued=worker.nudge)

    def register(server) -> None:
        catalog_service_pb2_grpc.add_CatalogServiceServicer_to_server(CatalogServicer(ctx), server)

    return ServiceParts(register)


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
    env_prefix="CATALOG",
    default_port=50051,
    database_file="catalog.db",
    assemble=assemble,
)
build = partial(runtime.build, DEFINITION)  # (settings, engine, clock=None) -> RunningServer
