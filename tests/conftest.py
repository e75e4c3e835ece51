"""Fixtures for the whole suite.

Every test that asks for `database_url_factory` runs twice: on SQLite and on a
real PostgreSQL server that the session starts itself (see
tests.support.postgres). PostgreSQL is never skipped silently: if it
cannot start, those tests fail; and in CI (CI=true) the session fails unless
PostgreSQL tests ran and passed and none of them was skipped.
"""

from __future__ import annotations

import os
import uuid
from collections import Counter
from collections.abc import Callable, Iterator

import pytest

from tests.support.postgres import PostgresServer

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


# -- the CI guard: PostgreSQL must really have been tested -----------------------------------------

_postgres_outcomes: Counter[str] = Counter()


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    """Count the outcomes of PostgreSQL tests (under xdist, the controller sees every worker's)."""
    if "postgres" in report.keywords and (report.when == "call" or report.skipped):
        _postgres_outcomes[report.outcome] += 1


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if hasattr(session.config, "workerinput") or session.config.option.collectonly:
        return  # an xdist worker: the controller decides
    if os.environ.get("CI", "").lower() not in ("1", "true", "yes"):
        return
    problem = None
    if _postgres_outcomes["skipped"]:
        problem = f"{_postgres_outcomes['skipped']} PostgreSQL tests were skipped"
    elif not _postgres_outcomes["passed"]:
        problem = "no PostgreSQL test passed"
    if problem:
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        if reporter is not None:
            reporter.write_line(f"CI=true but {problem}: PostgreSQL must be tested in CI", red=True, bold=True)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
