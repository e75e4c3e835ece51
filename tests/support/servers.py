"""Real servers on port 0 for tests and benchmarks, in this process."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

import grpc
from sqlalchemy import Engine

from credit_common.auth.client import with_api_key
from credit_common.clock import Clock
from credit_common.config import ServiceSettings, parse_service_args
from credit_common.grpc.server import RunningServer
from credit_common.runtime import ServiceDefinition, open_engine
from tests.support.auth import create_key


@contextmanager
def serving(
    definition: ServiceDefinition,
    build: Callable[..., RunningServer],
    database_url: str,
    *,
    clock: Clock | None = None,
    args: Sequence[str] = (),
    migrate: bool = True,
    credentials: grpc.ChannelCredentials | None = None,
) -> Iterator[tuple[RunningServer, grpc.Channel]]:
    """Start `definition`'s server on 127.0.0.1:0 over `database_url` (migrated
    first) and yield it with a channel to it, which sends an admin API key (plaintext, or secure
    with `credentials`: a server started with `--tls-cert`); stop both afterwards."""
    settings: ServiceSettings = parse_service_args(
        service=definition.name,
        env_prefix="UNUSED_IN_TESTS",
        default_port=0,
        database_file="unused.db",
        argv=["--listen", "127.0.0.1:0", "--database-url", database_url, "--max-workers", "16", *args],
        flags=definition.flags,
    )
    engine: Engine = open_engine(definition, settings, migrate=migrate)
    running = build(settings, engine, clock) if clock is not None else build(settings, engine)
    target = f"127.0.0.1:{running.port}"
    channel = grpc.insecure_channel(target) if credentials is None else grpc.secure_channel(target, credentials)
    channel = with_api_key(channel, create_key(definition, engine))
    try:
        grpc.channel_ready_future(channel).result(timeout=10)
        yield running, channel
    finally:
        channel.close()
        running.stop(grace=1)
        engine.dispose()
