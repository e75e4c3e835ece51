"""The TLS and limit settings of both listeners, and the catalog's TLS to the grant service:
flags, environment variables, defaults, refusals, and the gRPC options they become."""

from __future__ import annotations

import pytest

from catalog_service.adapters.grant_client import GrantTls
from catalog_service.entrypoints.settings import FLAGS as CATALOG_FLAGS
from credit_common.config import ServerLimits, TlsSettings, parse_service_args
from credit_common.grpc.server import server_options


def _parse(argv, monkeypatch=None, prefix="GRANT", flags=None, **env):
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return parse_service_args(
        service="grant_service",
        env_prefix=prefix,
        default_port=50052,
        database_file="grant.db",
        argv=argv,
        flags=flags,
    )


@pytest.fixture
def pem(tmp_path):
    def make(name: str) -> str:
        path = tmp_path / name
        path.write_text("-----BEGIN CERTIFICATE-----\n")
        return str(path)

    return make


def test_plaintext_and_default_limits_when_nothing_is_configured():
    settings = _parse([])
    assert settings.tls == TlsSettings() and not settings.tls.enabled
    assert settings.limits == ServerLimits()
    assert settings.limits.max_concurrent_rpcs == 256


def test_tls_from_flags_and_environment(pem, monkeypatch):
    cert, key, ca = pem("c.pem"), pem("k.pem"), pem("ca.pem")
    settings = _parse(["--tls-cert", cert, "--tls-key", key, "--tls-client-ca", ca])
    assert settings.tls == TlsSettings(cert, key, ca) and settings.tls.enabled
    settings = _parse([], monkeypatch, GRANT_TLS_CERT=cert, GRANT_TLS_KEY=key)
    assert settings.tls == TlsSettings(cert, key, None)
    settings = _parse([], monkeypatch, prefix="CATALOG", CATALOG_TLS_CERT=cert, CATALOG_TLS_KEY=key)
    assert settings.tls.cert_file == cert


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--tls-cert", "{c}"], "--tls-cert and --tls-key go together"),
        (["--tls-key", "{k}"], "--tls-cert and --tls-key go together"),
        (["--tls-client-ca", "{c}"], "--tls-client-ca needs --tls-cert"),
        (["--tls-cert", "/nonexistent/c.pem", "--tls-key", "{k}"], "cannot read '/nonexistent/c.pem'"),
        (["--max-concurrent-rpcs", "-1"], "at least 0"),
        (["--max-connection-idle-s", "0"], "positive number of seconds"),
        (["--max-receive-message-bytes", "0"], "at least 1"),
    ],
)
def test_refused_settings(argv, message, pem, capsys):
    files = {"c": pem("c.pem"), "k": pem("k.pem")}
    with pytest.raises(SystemExit) as exited:
        _parse([arg.format(**files) for arg in argv])
    assert exited.value.code == 2
    assert message in capsys.readouterr().err


def test_limits_from_flags_and_environment(monkeypatch):
    settings = _parse(
        ["--max-concurrent-rpcs", "0", "--max-connection-idle-s", "30", "--keepalive-time-s", "7.5"],
        monkeypatch,
        GRANT_MAX_CONNECTION_AGE_S="600",
        GRANT_MAX_RECEIVE_MESSAGE_BYTES="1024",
    )
    limits = settings.limits
    assert limits.max_concurrent_rpcs is None  # 0: no limit
    assert (limits.max_connection_idle_s, limits.keepalive_time_s) == (30, 7.5)
    assert (limits.max_connection_age_s, limits.max_receive_message_bytes) == (600, 1024)


def test_server_options_carry_the_limits():
    options = dict(
        server_options(ServerLimits(max_connection_idle_s=1.5, max_receive_message_bytes=9), share_port=True)
    )
    assert options["grpc.so_reuseport"] == 1
    assert options["grpc.max_connection_idle_ms"] == 1500
    assert options["grpc.max_connection_age_ms"] == 3_600_000
    assert options["grpc.max_connection_age_grace_ms"] == 30_000
    assert options["grpc.keepalive_time_ms"] == 60_000
    assert options["grpc.http2.min_recv_ping_interval_without_data_ms"] == 60_000
    assert options["grpc.max_receive_message_length"] == 9
    # gRPC takes C ints: a longer time is "never" (INT_MAX), not an overflow that fails the start
    huge = dict(
        server_options(ServerLimits(max_connection_age_s=1e9, max_receive_message_bytes=2**40), share_port=False)
    )
    assert huge["grpc.max_connection_age_ms"] == huge["grpc.max_receive_message_length"] == 2**31 - 1


def _grant_tls(argv, monkeypatch=None, **env) -> GrantTls:
    return _parse(argv, monkeypatch, prefix="CATALOG", flags=CATALOG_FLAGS, **env).grant_service.tls


def test_catalog_reaches_the_grant_service_in_plaintext_by_default():
    assert _grant_tls([]) == GrantTls()


def test_catalog_tls_to_the_grant_service(pem, monkeypatch):
    ca, cert, key = pem("ca.pem"), pem("c.pem"), pem("k.pem")
    tls = _grant_tls(
        ["--grant-tls-ca", ca, "--grant-tls-cert", cert, "--grant-tls-key", key, "--grant-tls-server-name", "grant"]
    )
    assert tls == GrantTls(True, ca, cert, key, "grant")
    assert _grant_tls([], monkeypatch, CATALOG_GRANT_TLS="true") == GrantTls(enabled=True)
    assert _grant_tls([], monkeypatch, CATALOG_GRANT_TLS_CA=ca).enabled


def test_catalog_tls_flags_are_checked_when_parsed(pem, capsys):
    for argv, message in (
        (["--grant-tls-cert", pem("c.pem")], "--grant-tls-cert and --grant-tls-key go together"),
        (["--grant-tls-key", pem("k.pem")], "--grant-tls-cert and --grant-tls-key go together"),
        (["--grant-tls-ca", "/nonexistent/ca.pem"], "cannot read '/nonexistent/ca.pem'"),
    ):
        with pytest.raises(SystemExit) as exited:
            _grant_tls(argv)
        assert exited.value.code == 2
        assert message in capsys.readouterr().err
    with pytest.raises(SystemExit):
        _grant_tls(["--grant-tls-ca", "/nonexistent/ca.pem"])
