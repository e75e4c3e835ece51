"""The catalog's own flags, their environment variables, and the typed settings they make."""

from __future__ import annotations

import os
from dataclasses import replace
from datetime import timedelta

import pytest

from catalog_service.adapters.grant_client import GrantTls
from catalog_service.adapters.grant_delivery import APPLY_BATCH_MAX
from catalog_service.domain.backoff import BackoffPolicy
from catalog_service.entrypoints.app import DEFINITION
from catalog_service.entrypoints.settings import FLAGS, CatalogSettings, GrantServiceSettings, OutboxSettings
from credit_common.config import parse_service_args


def _parse(argv, monkeypatch, **env) -> CatalogSettings:
    for name in [name for name in os.environ if name.startswith("CATALOG_")]:
        monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return parse_service_args(
        service="catalog_service",
        env_prefix="CATALOG",
        default_port=50051,
        database_file="catalog.db",
        argv=argv,
        flags=FLAGS,
    )


def test_defaults_are_the_settings_defaults(monkeypatch):
    settings = _parse([], monkeypatch)
    assert type(settings) is CatalogSettings
    assert settings.grant_service == GrantServiceSettings(
        address="127.0.0.1:50052", deadline=timedelta(seconds=5), tls=GrantTls(), api_key=None
    )
    assert settings.outbox == OutboxSettings()
    assert settings.outbox.backoff == BackoffPolicy(timedelta(milliseconds=500), timedelta(minutes=1))
    assert (settings.outbox.poll_interval, settings.outbox.lease) == (timedelta(milliseconds=200), timedelta(minutes=1))
    assert DEFINITION.flags is FLAGS


def test_flags(monkeypatch):
    settings = _parse(
        [
            "--grant-service-address",
            "grant:1",
            "--grant-deadline-ms",
            "250",
            "--outbox-poll-interval-ms",
            "50",
            "--outbox-batch-size",
            "4",
            "--outbox-send-batch-size",
            "3",
            "--outbox-backoff-base-ms",
            "10",
            "--outbox-backoff-cap-ms",
            "20",
            "--outbox-lease-s",
            "7",
        ],
        monkeypatch,
    )
    assert settings.grant_service == GrantServiceSettings("grant:1", timedelta(milliseconds=250))
    assert settings.outbox == OutboxSettings(
        poll_interval=timedelta(milliseconds=50),
        batch_size=4,
        send_batch_size=3,
        lease=timedelta(seconds=7),
        backoff=BackoffPolicy(timedelta(milliseconds=10), timedelta(milliseconds=20)),
    )


def test_environment(monkeypatch):
    settings = _parse(
        [],
        monkeypatch,
        CATALOG_GRANT_SERVICE_API_KEY="cgk_sync",
        CATALOG_GRANT_DEADLINE_MS="900",
        CATALOG_OUTBOX_SEND_BATCH_SIZE="9",
    )
    assert settings.grant_service.api_key == "cgk_sync"
    assert settings.grant_service.deadline == timedelta(milliseconds=900)
    assert settings.outbox.send_batch_size == 9
    assert _parse([], monkeypatch, CATALOG_GRANT_SERVICE_API_KEY="").grant_service.api_key is None


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--outbox-send-batch-size", "0"], f"--outbox-send-batch-size must be 1 to {APPLY_BATCH_MAX}"),
        (["--outbox-send-batch-size", str(APPLY_BATCH_MAX + 1)], f"must be 1 to {APPLY_BATCH_MAX}, got"),
        (["--outbox-batch-size", "0"], "--outbox-batch-size must be at least 1"),
        (["--outbox-poll-interval-ms", "0"], "--outbox-poll-interval-ms must be at least 1"),
        (["--outbox-lease-s", "0"], "--outbox-lease-s must be at least 1"),
        (["--grant-deadline-ms", "0"], "--grant-deadline-ms must be at least 1"),
        (["--outbox-backoff-base-ms", "0"], "backoff base must be positive"),
        (["--outbox-backoff-cap-ms", "100"], "backoff cap must be at least the base"),
    ],
)
def test_refused_values_exit_with_a_usage_error(argv, message, monkeypatch, capsys):
    with pytest.raises(SystemExit) as exited:
        _parse(argv, monkeypatch)
    assert exited.value.code == 2
    assert message in capsys.readouterr().err


def test_settings_made_in_code_are_checked_too():
    with pytest.raises(ValueError, match="--outbox-send-batch-size"):
        replace(OutboxSettings(), send_batch_size=APPLY_BATCH_MAX + 1)
