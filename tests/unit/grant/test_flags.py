"""The grant service's own flags, their environment variables, and the typed settings they make."""

from __future__ import annotations

from dataclasses import replace

import pytest

from credit_common.config import ServiceSettings, parse_service_args
from grant_service.entrypoints.app import DEFINITION
from grant_service.entrypoints.settings import FLAGS, GrantSettings

OWN_VARIABLES = (
    "GRANT_CATCH_UP_INTERVAL",
    "GRANT_CATCH_UP_BATCH_SIZE",
    "GRANT_BATCH_LINGER_MS",
    "GRANT_MAX_REVISION_STEP",
    "GRANT_ENABLE_TEST_CLOCKS",
)


def _parse(argv, monkeypatch, **env) -> GrantSettings:
    for name in OWN_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return parse_service_args(
        service="grant_service",
        env_prefix="GRANT",
        default_port=50052,
        database_file="grant.db",
        argv=argv,
        flags=FLAGS,
    )


def test_defaults(monkeypatch):
    settings = _parse([], monkeypatch)
    assert type(settings) is GrantSettings and isinstance(settings, ServiceSettings)
    assert (settings.catch_up_interval_s, settings.catch_up_batch_size, settings.test_clocks_enabled) == (
        1.0,
        500,
        False,
    )
    assert DEFINITION.flags is FLAGS  # what `python -m grant_service` and the test servers parse


def test_environment_and_flags(monkeypatch):
    settings = _parse([], monkeypatch, GRANT_ENABLE_TEST_CLOCKS="true", GRANT_CATCH_UP_BATCH_SIZE="20")
    assert settings.test_clocks_enabled is True and settings.catch_up_batch_size == 20
    settings = _parse(["--catch-up-interval", "0.5", "--catch-up-batch-size", "7", "--enable-test-clocks"], monkeypatch)
    assert (settings.catch_up_interval_s, settings.catch_up_batch_size, settings.test_clocks_enabled) == (0.5, 7, True)
    assert _parse([], monkeypatch, GRANT_CATCH_UP_INTERVAL="0").catch_up_interval_s == 0  # no timer


def test_batch_linger(monkeypatch):
    assert _parse([], monkeypatch).batch_linger_s == 0.008
    assert _parse(["--batch-linger-ms", "0"], monkeypatch).batch_linger_s == 0
    assert _parse([], monkeypatch, GRANT_BATCH_LINGER_MS="1.5").batch_linger_s == 0.0015


def test_max_revision_step(monkeypatch):
    assert _parse([], monkeypatch).max_revision_step == 1000
    assert _parse(["--max-revision-step", "5"], monkeypatch).max_revision_step == 5
    assert _parse([], monkeypatch, GRANT_MAX_REVISION_STEP="7").max_revision_step == 7


def test_the_common_settings_are_kept(monkeypatch):
    settings = _parse(["--listen", "127.0.0.1:7", "--max-workers", "3", "--auth", "off"], monkeypatch)
    assert (settings.listen, settings.max_workers, settings.auth) == ("127.0.0.1:7", 3, False)
    child = replace(settings, listen="127.0.0.1:8", process_index=1)  # what a server process of --processes gets
    assert type(child) is GrantSettings and child.catch_up_batch_size == settings.catch_up_batch_size


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--catch-up-interval", "-1"], "--catch-up-interval must be 0 (no timer) or a positive number"),
        (["--catch-up-interval", "nan"], "--catch-up-interval must be 0 (no timer) or a positive number"),
        (["--catch-up-batch-size", "0"], "--catch-up-batch-size must be at least 1"),
        (["--batch-linger-ms", "-0.5"], "--batch-linger-ms must be 0 or a positive number"),
        (["--max-revision-step", "0"], "is not a whole number of at least 1"),
    ],
)
def test_refused_values_exit_with_a_usage_error(argv, message, monkeypatch, capsys):
    with pytest.raises(SystemExit) as exited:
        _parse(argv, monkeypatch)
    assert exited.value.code == 2
    assert message in capsys.readouterr().err


def test_settings_made_in_code_are_checked_too(monkeypatch):
    settings = _parse([], monkeypatch)
    with pytest.raises(ValueError, match="--catch-up-batch-size"):
        replace(settings, catch_up_batch_size=0)
