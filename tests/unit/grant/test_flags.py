"""The grant service's own flags and their environment variables."""

from __future__ import annotations

from credit_common.config import parse_service_args
from grant_service.entrypoints.app import add_arguments, build


def _parse(argv, monkeypatch, **env):
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return parse_service_args(
        service="grant_service",
        env_prefix="GRANT",
        default_port=50052,
        database_file="grant.db",
        argv=argv,
        add_arguments=add_arguments,
    ).extra


def test_defaults(monkeypatch):
    monkeypatch.delenv("GRANT_ENABLE_TEST_CLOCKS", raising=False)
    extra = _parse([], monkeypatch)
    assert (extra.catch_up_interval, extra.catch_up_batch_size, extra.enable_test_clocks) == (1.0, 500, False)
    assert build.add_arguments is add_arguments


def test_environment_and_flags(monkeypatch):
    extra = _parse([], monkeypatch, GRANT_ENABLE_TEST_CLOCKS="true", GRANT_CATCH_UP_BATCH_SIZE="20")
    assert extra.enable_test_clocks is True and extra.catch_up_batch_size == 20
    extra = _parse(["--catch-up-interval", "0.5", "--catch-up-batch-size", "7"], monkeypatch)
    assert (extra.catch_up_interval, extra.catch_up_batch_size) == (0.5, 7)


def test_batch_linger(monkeypatch):
    monkeypatch.delenv("GRANT_BATCH_LINGER_MS", raising=False)
    assert _parse([], monkeypatch).batch_linger_ms == 8
    assert _parse(["--batch-linger-ms", "0"], monkeypatch).batch_linger_ms == 0
    assert _parse([], monkeypatch, GRANT_BATCH_LINGER_MS="1.5").batch_linger_ms == 1.5


def test_max_revision_step(monkeypatch):
    monkeypatch.delenv("GRANT_MAX_REVISION_STEP", raising=False)
    assert _parse([], monkeypatch).max_revision_step == 1000
    assert _parse(["--max-revision-step", "5"], monkeypatch).max_revision_step == 5
    assert _parse([], monkeypatch, GRANT_MAX_REVISION_STEP="7").max_revision_step == 7
