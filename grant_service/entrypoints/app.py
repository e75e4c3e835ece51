"""Wiring of the grant service: database, service layer, gRPC servicer, server,
and the catch-up timer."""

from __future__ import annotations

import argparse
from collections.abc import Callable

from sqlalchemy import Engine

from credit_common.clock import Clock, SystemClock
from credit_common.config import ServiceSettings, env_flag, positive_int
from credit_common.db.engine import create_db_engine, read_engine_settings, session_factories
from credit_common.grpc.server import RunningServer
from credit_common.runtime import ServiceDefinition, start
from grant_service.adapters.orm import API_KEYS
from grant_service.entrypoints.roles import METHOD_ROLES, SERVICE
from grant_service.entrypoints.servicer import GrantServicer
from grant_service.entrypoints.timer import start_catch_up_timer
from grant_service.service_layer.context import GrantContext
from grant_service.v1 import grant_service_pb2_grpc

DEFINITION = ServiceDefinition(
    name="grant_service",
    error_domain="grant.credit-grants",
    service_names=(SERVICE.full_name,),
    migrations="grant_service.adapters:migrations",
    method_roles=METHOD_ROLES,
    api_keys=API_KEYS,
)


def add_arguments(parser: argparse.ArgumentParser, env: Callable[[str, str | None], str | None]) -> None:
    """The grant service's own flags (each also GRANT_<FLAG> in the environment)."""
    parser.add_argument(
        "--catch-up-interval",
        type=float,
        default=float(env("CATCH_UP_INTERVAL", "1.0")),
        help="seconds between two runs of the issuance/expiry catch-up (default 1.0; 0 disables the timer)",
    )
    parser.add_argument(
        "--catch-up-batch-size",
        type=int,
        default=int(env("CATCH_UP_BATCH_SIZE", "500")),
        help="schedules or grants handled per catch-up transaction (default 500)",
    )
    parser.add_argument(
        "--batch-linger-ms",
        type=float,
        default=float(env("BATCH_LINGER_MS", "8")),
        help="how long the leader of a batch of concurrent reads (GetBalance) or debits (ReportUsage) may "
        "wait for as many callers as the previous batch had (default 8; 0: never waits). See README",
    )
    parser.add_argument(
        "--max-revision-step",
        type=positive_int,
        default=env("MAX_REVISION_STEP", "1000"),
        help="the most a subscription's or currency's applied revision may be ahead of the one held (of none: "
        "0); further is INVALID_ARGUMENT REVISION_TOO_FAR_AHEAD (default 1000; see docs/security.md)",
    )
    parser.add_argument(
        "--enable-test-clocks",
        action="store_true",
        default=env_flag(env("ENABLE_TEST_CLOCKS", "false")),
        help="enable the test clock methods (default false)",
    )


def build(settings: ServiceSettings, engine: Engine, clock: Clock | None = None) -> RunningServer:
    extra = settings.extra
    # GetBalance's hot path reads on a connection per RPC thread, from a pool of its own.
    clock = clock or SystemClock()
    read_engine = create_db_engine(read_engine_settings(settings.database, settings.max_workers))
    ctx = GrantContext(
        factories=session_factories(engine, read_engine),
        clock=clock,
        test_clocks_enabled=bool(getattr(extra, "enable_test_clocks", False)),
        batch_size=int(getattr(extra, "catch_up_batch_size", 500)),
        batch_linger_s=float(getattr(extra, "batch_linger_ms", 0.0)) / 1000,
        max_revision_step=int(getattr(extra, "max_revision_step", 1000)),
    )
    servicer = GrantServicer(ctx)

    def register(server) -> None:
        grant_service_pb2_grpc.add_GrantServiceServicer_to_server(servicer, server)

    running = start(DEFINITION, settings, register, engine=engine, clock=clock)
    running.on_stop.append(read_engine.dispose)
    interval = float(getattr(extra, "catch_up_interval", 1.0))
    if interval > 0:
        stop_timer = start_catch_up_timer(ctx, interval)
        running.on_stop.append(stop_timer)
    return running


build.add_arguments = add_arguments  # type: ignore[attr-defined]
