"""API keys for tests and benchmarks: the one place that creates them in a service's database
and attaches them to channels."""

from __future__ import annotations

import importlib
from collections.abc import Iterable, Sequence
from typing import Any

import grpc
from sqlalchemy import Engine

from credit_common.auth.check import roles_of
from credit_common.auth.client import with_api_key
from credit_common.auth.keys import ADMIN
from credit_common.auth.store import SqlApiKeyStore
from credit_common.clock import SystemClock
from credit_common.db.engine import DatabaseSettings, create_db_engine
from credit_common.db.migrations import upgrade
from credit_common.runtime import ServiceDefinition


def definition_of(module: str) -> ServiceDefinition:
    """The ServiceDefinition of "grant_service" or "catalog_service"."""
    return importlib.import_module(f"{module}.entrypoints.app").DEFINITION


def create_key(
    definition: ServiceDefinition, engine: Engine, roles: Iterable[str] = (ADMIN,), label: str = "tests"
) -> str:
    """A new key with `roles` in the (migrated) database behind `engine`; the whole key."""
    assert definition.api_keys is not None
    store = SqlApiKeyStore(engine, definition.api_keys)
    _key, token = store.create(roles, label, SystemClock().now(), known_roles=roles_of(definition.method_roles))
    return token


def create_key_at(
    definition: ServiceDefinition,
    database_url: str,
    roles: Iterable[str] = (ADMIN,),
    *,
    migrate: bool = True,
    label: str = "tests",
) -> str:
    """`create_key` in the database at `database_url`, upgraded to the current schema first if `migrate`."""
    engine = create_db_engine(DatabaseSettings(url=database_url, pool_size=1, max_overflow=0))
    try:
        if migrate:
            upgrade(definition.migrations, engine)
        return create_key(definition, engine, roles, label)
    finally:
        engine.dispose()


def keyed_channel(
    address: str,
    api_key: str | None,
    options: Sequence[tuple[str, Any]] = (),
    *,
    credentials: grpc.ChannelCredentials | None = None,
) -> grpc.Channel:
    """A channel to `address` (insecure, or secure with `credentials`) sending `api_key` with every
    call (none if None)."""
    if credentials is None:
        return with_api_key(grpc.insecure_channel(address, options=list(options)), api_key)
    return with_api_key(grpc.secure_channel(address, credentials, options=list(options)), api_key)


def caller_credentials(context: grpc.ServicerContext) -> list[tuple[str, str]]:
    """The API key metadata of a call, for a test proxy to forward with it."""
    return [(m.key, m.value) for m in context.invocation_metadata() if m.key in ("authorization", "x-api-key")]
