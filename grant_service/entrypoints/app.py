"""The grant service as it declares itself (DEFINITION): its own parts are the units of work and the
use-case context over the database, the gRPC servicer, the event listener, the webhook dispatcher
and the catch-up timer; credit_common.runtime does the rest."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from functools import partial

from sqlalchemy import Engine

from credit_common import runtime
from credit_common.clock import Clock
from credit_common.db.engine import create_db_engine, read_engine_settings, session_factories
from credit_common.grpc.server import RunningServer
from credit_common.metrics import recorded, watch_pool
from credit_common.service import ServiceDefinition, ServiceParts, Stop
from grant_service.adapters.balance_reads import SqlBalanceReads
from grant_service.adapters.catch_up import catch_up_gauges
from grant_service.adapters.orm import API_KEYS
from grant_service.adapters.unit_of_work import SqlTransactions
from grant_service.adapters.webhooks import webhook_gauges
from grant_service.entrypoints.event_json import event_body
from grant_service.entrypoints.roles import METHOD_ROLES, READ_METHODS, SERVICE
from grant_service.entrypoints.servicer import GrantServicer
from grant_service.entrypoints.settings import FLAGS, GrantSettings
from grant_service.entrypoints.timer import start_catch_up_timer
from grant_service.entrypoints.webhook_worker import wake_on_events, webhook_dispatcher
from grant_service.service_layer.context import GrantContext
from grant_service.v1 import grant_service_pb2_grpc


def assemble(settings: GrantSettings, engine: Engine, clock: Clock, on_stop: Callable[[Stop], None]) -> ServiceParts:
    """The grant service's own parts: its units of work and use-case context, its servicer; once the
    server started, the event listener, the webhook dispatcher and the catch-up timer."""
    # GetBalance's hot path reads on a connection per RPC thread, from a pool of its own.
    read_engine = create_db_engine(read_engine_settings(settings.database, settings.max_workers))
    on_stop(read_engine.dispose)
    factories = session_factories(engine, read_engine)
    transactions = SqlTransactions(
        factories,
        clock,
        linger_s=settings.batch_linger_s,
        events=settings.events_enabled,
    )
    ctx = GrantContext(
        transactions=transactions,
        balance_reads=SqlBalanceReads(factories, clock, linger_s=settings.batch_linger_s),
        clock=clock,
        test_clocks_enabled=settings.test_clocks_enabled,
        batch_size=settings.catch_up_batch_size,
        max_revision_step=settings.max_revision_step,
        events_heartbeat_s=settings.events_heartbeat_s,
        events_poll_s=settings.events_poll_s,
        max_revision_step_window=timedelta(seconds=settings.max_revision_step_window_s),
        max_applied_amount=settings.max_applied_amount,
        webhook_policy=settings.webhooks.policy,
        event_body=event_body,
    )
    servicer = GrantServicer(ctx)

    def register(server) -> None:
        grant_service_pb2_grpc.add_GrantServiceServicer_to_server(servicer, server)

    def started(running: RunningServer) -> list[Stop]:
        stops: list[Stop] = []
        if recorded(settings):
            watch_pool(read_engine, "read")
        stops.append(transactions.listen_for_events(engine))
        if settings.webhooks.workers > 0:
            dispatcher, sender = webhook_dispatcher(engine, ctx.transactions, clock, settings.webhooks)
            dispatcher.start()
            running.webhooks = dispatcher  # type: ignore[attr-defined]
            stops += [sender.close, dispatcher.stop, wake_on_events(transactions, dispatcher)]
        if settings.catch_up_interval_s > 0:
            stops.append(start_catch_up_timer(ctx, settings.catch_up_interval_s))
        return stops

    return ServiceParts(register, started)


DEFINITION = ServiceDefinition(
    name="grant_service",
    error_domain="grant.credit-grants",
    service_names=(SERVICE.full_name,),
    migrations="grant_service.adapters:migrations",
    method_roles=METHOD_ROLES,
    read_methods=READ_METHODS,
    api_keys=API_KEYS,
    flags=FLAGS,
    gauges=(catch_up_gauges, webhook_gauges),
    env_prefix="GRANT",
    default_port=50052,
    database_file="grant.db",
    assemble=assemble,
)
build = partial(runtime.build, DEFINITION)  # (settings, engine, clock=None) -> RunningServer
