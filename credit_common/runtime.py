"""The life of a service process: `python -m <service>` (its flags, the `keys` command), the database,
the server and what the service starts with it, signals, several server processes. Each service
declares only what is its own (credit_common.service.ServiceDefinition) and gets the rest here."""

from __future__ import annotations

import gc
import logging
import os
import sys
from collections.abc import Callable, Sequence

import grpc
from sqlalchemy import Engine

from credit_common import tracing
from credit_common.auth.check import ApiKeyCheck, KeyCache
from credit_common.auth.cli import keys_main
from credit_common.auth.store import SqlApiKeyStore
from credit_common.clock import Clock, SystemClock
from credit_common.config import ServiceSettings, parse_service_args
from credit_common.db.engine import create_db_engine, translate_db_error
from credit_common.db.migrations import SchemaNotCurrent, check_current, upgrade
from credit_common.grpc.interceptors import ServiceInterceptor
from credit_common.grpc.server import RunningServer, run_until_signal, start_server
from credit_common.grpc.streams import StreamBudget
from credit_common.logging import configure_logging
from credit_common.metrics import count_ledger, recorded, start_metrics, watch_pool
from credit_common.processes import supervise
from credit_common.service import ServiceDefinition, Stop
from credit_common.signals import StopSignals

__all__ = ["ServiceDefinition", "api_key_check", "build", "main", "open_engine", "run", "start"]

log = logging.getLogger("credit_grants.runtime")


def open_engine(definition: ServiceDefinition, settings: ServiceSettings, *, migrate: bool) -> Engine:
    """Engine for the configured database; upgrades the schema if asked, else
    refuses a schema that is behind."""
    engine = create_db_engine(settings.database)
    if migrate:
        upgrade(definition.migrations, engine)
    else:
        check_current(definition.migrations, engine, f"python -m {definition.name} migrate")
    return engine


def start(
    definition: ServiceDefinition,
    settings: ServiceSettings,
    register: Callable[[grpc.Server], None],
    *,
    engine: Engine,
    clock: Clock,
) -> RunningServer:
    interceptor = ServiceInterceptor(
        definition.error_domain,
        translate=translate_db_error,
        auth=api_key_check(definition, settings, engine, clock),
        streams=StreamBudget(settings.limits.max_streams, settings.limits.max_streams_per_caller),
        audited=set(definition.method_roles) - set(definition.read_methods),
    )
    return start_server(
        address=settings.listen,
        service_names=definition.service_names,
        register=register,
        interceptor=interceptor,
        max_workers=settings.max_workers,
        share_port=settings.process_index is not None,
        tls=settings.tls,
        limits=settings.limits,
        reflection=settings.reflection != "off",
        tracing=tracing.server_interceptor(),
        record_metrics=recorded(settings),
    )


def api_key_check(
    definition: ServiceDefinition, settings: ServiceSettings, engine: Engine, clock: Clock
) -> ApiKeyCheck | None:
    """The API key check of `definition`'s methods over its api_keys table; None with `--auth off`."""
    if not settings.auth:
        log.warning("authentication is off: anyone who reaches the port may call every method")
        return None
    if definition.api_keys is None or not definition.method_roles:
        raise ValueError(f"{definition.name} has no api_keys table or no method roles: it cannot check API keys")
    keys = KeyCache(SqlApiKeyStore(engine, definition.api_keys), clock, settings.auth_cache_ttl)
    return ApiKeyCheck(definition.method_roles, keys, reflection=settings.reflection)


def build(
    definition: ServiceDefinition, settings: ServiceSettings, engine: Engine, clock: Clock | None = None
) -> RunningServer:
    """Start `definition`'s server over `engine` with the parts its `assemble` makes. Shutdown
    (`running.stop`): health NOT_SERVING, the server drains, then what the service started stops, the
    last started first. If the start fails, what was already started is stopped."""
    if definition.assemble is None:
        raise ValueError(f"{definition.name} declares no assemble: nothing to serve")
    clock = clock or SystemClock()
    count_ledger(recorded(settings))
    stops: list[Stop] = []
    try:
        parts = definition.assemble(settings, engine, clock, stops.append)
        running = start(definition, settings, parts.register, engine=engine, clock=clock)
    except BaseException:
        _stop_all(stops)
        raise
    running.on_stop.extend(stops)
    if parts.started is not None:
        try:
            running.on_stop.extend(parts.started(running))
        except BaseException:
            running.stop(0)
            raise
    return running


def _stop_all(stops: Sequence[Stop]) -> None:
    for stop in reversed(stops):
        try:
            stop()
        except Exception:
            log.exception("error while stopping after a failed start")


def run(definition: ServiceDefinition, argv: Sequence[str] | None = None) -> int:
    """`python -m <service> [serve|migrate] [flags]` or `python -m <service> keys ...`: see --help."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["keys"]:
        return keys_main(
            definition, env_prefix=definition.env_prefix, database_file=definition.database_file, argv=argv[1:]
        )
    settings = parse_service_args(
        service=definition.name,
        env_prefix=definition.env_prefix,
        default_port=definition.default_port,
        database_file=definition.database_file,
        argv=argv,
        flags=definition.flags,
    )
    return main(definition, settings)


def main(definition: ServiceDefinition, settings: ServiceSettings) -> int:
    """Migrate, or serve until SIGTERM/SIGINT (with `--processes N`, supervise N server processes that
    do: credit_common.processes)."""
    supervisor = settings.command == "serve" and settings.processes > 1
    # A migration keeps Python's own handlers: Ctrl-C interrupts it (its transaction rolls back).
    signals = StopSignals.catch() if settings.command == "serve" else StopSignals()
    if settings.cpus is not None and not supervisor:
        try:
            pin_to_cpus(settings.cpus)
        except OSError as error:
            print(f"{definition.name}: cannot pin to CPUs {sorted(settings.cpus)}: {error.strerror}", file=sys.stderr)
            return 2
    configure_logging(definition.name, settings.log_level)
    try:
        if settings.command == "migrate":
            engine = create_db_engine(settings.database)
            upgrade(definition.migrations, engine)
            engine.dispose()
            log.info("schema upgraded", extra={"database": engine.url.render_as_string(hide_password=True)})
            return 0
        engine = open_engine(definition, settings, migrate=settings.migrate_on_start)
    except SchemaNotCurrent as error:
        log.error(str(error))
        print(f"{definition.name}: {error}", file=sys.stderr)
        return 2
    except Exception as error:
        if translate_db_error(error) is None:
            raise
        # Cannot reach the database at start: say so in one line and exit, so that the supervisor
        # (systemd, Kubernetes) starts the process again later. Once serving, an outage is ridden out.
        message = f"cannot reach the database: {str(getattr(error, 'orig', None) or error).splitlines()[0]}"
        log.error(message)
        print(f"{definition.name}: {message}", file=sys.stderr)
        return 3
    if signals.received():  # stopped while migrating or connecting: nothing to start
        engine.dispose()
        log.info("stopped")
        return 0
    if supervisor:
        engine.dispose()
        return supervise(definition, settings, serve=main, signals=signals)
    tracing.configure_from_env(definition.name)  # nothing unless the OTEL_* variables ask for traces
    running = build(definition, settings, engine)
    running.on_stop.insert(0, tracing.shutdown)  # the last: spans of the drain are exported too
    running.on_stop.insert(0, engine.dispose)
    if recorded(settings):
        watch_pool(engine, "main")
    if settings.metrics_listen:
        try:
            exposition, scrape_engine = start_metrics(settings.metrics_listen, settings.database, definition.gauges)
        except (OSError, ValueError) as error:
            running.stop(0)
            message = f"cannot serve metrics on {settings.metrics_listen}: {getattr(error, 'strerror', None) or error}"
            log.error(message)
            print(f"{definition.name}: {message}", file=sys.stderr)
            return 2
        running.on_stop.insert(0, scrape_engine.dispose)
        running.on_stop.insert(0, exposition.stop)  # the last to stop: a scrape during the drain still works
    quiet_garbage_collection()
    log.info(
        "serving",
        extra={
            "address": settings.listen,
            "port": running.port,
            "database": engine.url.render_as_string(hide_password=True),
            "cpus": sorted(os.sched_getaffinity(0)) if settings.cpus is not None else None,
            "server_process": settings.process_index,
            "transport": ("mtls" if settings.tls.client_ca_file else "tls") if settings.tls.enabled else "plaintext",
        },
    )
    run_until_signal(running, settings.shutdown_grace_s, signals)
    return 0


def pin_to_cpus(cpus: frozenset[int]) -> None:
    """Pin every thread of this process, and so every thread it starts later, to `cpus`."""
    for thread in sorted(int(tid) for tid in os.listdir("/proc/self/task")):
        os.sched_setaffinity(thread, cpus)


# The cyclic garbage collector's thresholds while serving (CPython's defaults: 700, 10, 10).
GC_THRESHOLDS = (50_000, 20, 20)


def quiet_garbage_collection() -> None:
    """Once started, the process holds a few hundred thousand long-lived objects (modules, SQLAlchemy's
    metadata and compiled statements, protobuf descriptors) that every full collection walks again, while
    each RPC allocates hundreds of short-lived ones, so collections run every few RPCs and now and then
    stop every thread for a full one: the tail of the latency (measured in docs/performance.md). The
    objects of the start are frozen out of the collector's sight (gc.freeze) and the youngest generation
    is collected every 50,000 allocations net instead of 700; reference counting still frees everything
    that is not in a cycle at once."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)
