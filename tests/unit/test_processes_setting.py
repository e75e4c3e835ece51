"""--processes / <PREFIX>_PROCESSES: how many server processes share the port, and what each of them
is told (its CPU, its index; the schema is the supervisor's)."""

from __future__ import annotations

import socket

import pytest

from credit_common.config import parse_service_args
from credit_common.processes import reserve_port, server_settings, split_address


def _settings(argv, monkeypatch, **env):
    for name in ("GRANT_PROCESSES", "GRANT_CPUS"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return parse_service_args(
        service="grant_service", env_prefix="GRANT", default_port=50052, database_file="g.db", argv=argv
    )


def test_one_process_unless_asked(monkeypatch):
    settings = _settings([], monkeypatch)
    assert settings.processes == 1 and settings.process_index is None


def test_flag_and_environment(monkeypatch):
    assert _settings([], monkeypatch, GRANT_PROCESSES="3").processes == 3
    assert _settings(["--processes", "2"], monkeypatch, GRANT_PROCESSES="3").processes == 2


@pytest.mark.parametrize("value", ["0", "-1", "two", "1.5"])
def test_what_is_not_a_count_of_processes_is_refused(monkeypatch, capsys, value):
    with pytest.raises(SystemExit):
        _settings(["--processes", value], monkeypatch)
    assert "is not a whole number of at least 1" in capsys.readouterr().err


def test_each_server_process_gets_the_next_cpu_in_turn_and_leaves_the_schema_to_the_supervisor(monkeypatch):
    settings = _settings(["--processes", "3", "--cpus", "2-3", "--migrate"], monkeypatch)
    children = [server_settings(settings, "127.0.0.1:5000", i) for i in range(3)]
    assert [c.cpus for c in children] == [{2}, {3}, {2}]
    assert [c.process_index for c in children] == [0, 1, 2]
    assert all(c.listen == "127.0.0.1:5000" and c.processes == 1 and not c.migrate_on_start for c in children)
    unpinned = server_settings(_settings(["--processes", "2"], monkeypatch), "127.0.0.1:5000", 1)
    assert unpinned.cpus is None


@pytest.mark.parametrize(
    ("address", "parts"),
    [("127.0.0.1:50052", ("127.0.0.1", 50052)), ("[::1]:0", ("::1", 0)), ("localhost:7", ("localhost", 7))],
)
def test_addresses(address, parts):
    assert split_address(address) == parts


@pytest.mark.parametrize("address", ["50052", "host:", ":50052", "host:port"])
def test_what_is_not_an_address_is_refused(address):
    with pytest.raises(ValueError, match="is not host:port"):
        split_address(address)


def test_the_reserved_port_is_free_for_server_processes_only():
    reserved, port = reserve_port("127.0.0.1:0")
    with reserved:
        assert port > 0
        sharing = socket.socket()  # a server process: SO_REUSEPORT, like gRPC's grpc.so_reuseport
        sharing.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sharing.bind(("127.0.0.1", port))
        sharing.close()
        other = socket.socket()  # anything else
        with pytest.raises(OSError):
            other.bind(("127.0.0.1", port))
        other.close()
