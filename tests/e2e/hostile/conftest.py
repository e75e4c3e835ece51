"""Both real servers on port 0, the catalog calling the real grant service (test
clocks enabled), over fresh databases of one backend per test module."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime

import grpc
import pytest

from catalog_service.entrypoints import app as catalog_app
from catalog_service.v1 import catalog_service_pb2_grpc
from credit_common.auth.keys import SYNC
from credit_common.clock import ManualClock
from grant_service.entrypoints import app as grant_app
from grant_service.v1 import grant_service_pb2_grpc
from tests.conftest import BACKENDS
from tests.support.auth import create_key_at
from tests.support.servers import serving

REAL_NOW = datetime(2026, 6, 1, 12, tzinfo=UTC)


@dataclass
class Services:
    backend: str
    catalog_channel: grpc.Channel
    grant_channel: grpc.Channel
    catalog: catalog_service_pb2_grpc.CatalogServiceStub
    grant: grant_service_pb2_grpc.GrantServiceStub


@pytest.fixture(scope="module", params=BACKENDS)
def services(request: pytest.FixtureRequest, tmp_path_factory) -> Iterator[Services]:
    def url(name: str) -> str:
        if request.param == "sqlite":
            return f"sqlite:///{tmp_path_factory.mktemp(name) / f'{name}.db'}"
        return request.getfixturevalue("postgres_server").create_database(f"{name}_{uuid.uuid4().hex[:12]}")

    # A stream (WatchEvents) sends its first message within a heartbeat interval at the latest.
    grant_args = ["--enable-test-clocks", "--catch-up-interval", "0", "--events-heartbeat-interval", "1"]
    grant_url = url("grant")
    sync_key = create_key_at(grant_app.DEFINITION, grant_url, (SYNC,), label="catalog")
    with serving(grant_app.DEFINITION, grant_app.build, grant_url, clock=ManualClock(REAL_NOW), args=grant_args) as (
        grant_running,
        grant_channel,
    ):
        catalog_args = [
            "--grant-service-address",
            f"127.0.0.1:{grant_running.port}",
            "--grant-service-api-key",
            sync_key,
        ]
        with serving(catalog_app.DEFINITION, catalog_app.build, url("catalog"), args=catalog_args) as (
            _running,
            catalog_channel,
        ):
            yield Services(
                request.param,
                catalog_channel,
                grant_channel,
                catalog_service_pb2_grpc.CatalogServiceStub(catalog_channel),
                grant_service_pb2_grpc.GrantServiceStub(grant_channel),
            )


def tracebacks(records: list[logging.LogRecord]) -> list[str]:
    """The log records that carry a traceback or are errors (a caller mistake must cause none)."""
    return [f"{r.name}: {r.getMessage()}" for r in records if r.exc_info or r.exc_text or r.levelno >= logging.ERROR]
