"""Fixtures for the whole suite.

Every test that asks for `database_url_factory` runs twice: on SQLite and on a
real PostgreSQL server that the session starts itself (see
credit_common.testing.postgres). PostgreSQL is never skipped silently: if it
cannot start, those tests fail.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator

import pytest

from credit_common.testing.postgres import PostgresServer

BACKENDS = [
    pytest.param("sqlite", id="sqlite"),
    pytest.param("postgresql", id="postgresql", marks=pytest.mark.postgres),
]


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    server = PostgresServer()
    server.start()
    yield server
    server.destroy()


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def database_url_factory(backend: str, tmp_path, request: pytest.FixtureRequest) -> Callable[[str], str]:
    """`make(name)` returns the URL of a new, empty database for this test."""

    def make(name: str) -> str:
        if backend == "sqlite":
            return f"sqlite:///{tmp_path / f'{name}.db'}"
        server: PostgresServer = request.getfixturevalue("postgres_server")
        return server.create_database(f"{name}_{uuid.uuid4().hex[:12]}")

    return make
