"""`--processes N`: a supervisor and N server processes on one port. Each server process listens on
it, with its own CPU under --cpus; writes through every connection land once; SIGTERM stops them all;
a server process that dies takes the service down (for systemd or Kubernetes to restart), and so
does the supervisor's death."""

from __future__ import annotations

import os
import signal
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest

from grant_service.v1 import grant_service_pb2 as gpb
from grant_service.v1 import grant_service_pb2_grpc as gpb_grpc
from tests.e2e.grant.conftest import subscription
from tests.support.processes import ServiceProcess

pytestmark = pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="Linux")


def _grant(tmp_path: Path, *args: str) -> ServiceProcess:
    return ServiceProcess.grant(f"sqlite:///{tmp_path / 'grant.db'}", log_dir=tmp_path, args=["--processes", *args])


def _server_pids(service: ServiceProcess) -> list[int]:
    """The server processes' pids, once each of them serves (the first to serve answers health checks
    while the others start)."""
    deadline = time.monotonic() + 60
    while len([r for r in service.log_records() if r["message"] == "serving"]) < 2:
        assert time.monotonic() < deadline, service.log_tail()
        time.sleep(0.05)
    return next(r["processes"] for r in service.log_records() if r["message"] == "supervising")


def _listening_inodes(port: int) -> set[str]:
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if int(fields[1].rsplit(":", 1)[1], 16) == port and fields[3] == "0A":  # LISTEN
                inodes.add(fields[9])
    return inodes


def _listens(pid: int, port: int) -> bool:
    inodes = _listening_inodes(port)
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:[") and target[8:-1] in inodes:
            return True
    return False


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    status = Path(f"/proc/{pid}/status").read_text()
    return "State:\tZ" not in status


def _wait_gone(pids: list[int], limit_s: float = 30) -> None:
    deadline = time.monotonic() + limit_s
    while any(_alive(pid) for pid in pids):
        assert time.monotonic() < deadline, f"still running: {[pid for pid in pids if _alive(pid)]}"
        time.sleep(0.05)


def test_every_server_process_listens_on_the_port_and_every_write_lands_once(tmp_path):
    with _grant(tmp_path, "2") as grant:
        pids = _server_pids(grant)
        assert len(set(pids)) == 2
        assert all(_listens(pid, grant.port) for pid in pids)
        serving = [r for r in grant.log_records() if r["message"] == "serving"]
        assert sorted(r["server_process"] for r in serving) == [0, 1]
        # Connections of their own: the kernel spreads them over the two processes.
        channels = [grant.channel(options=[("grpc.use_local_subchannel_pool", 1)]) for _ in range(16)]
        try:
            stubs = [gpb_grpc.GrantServiceStub(channel) for channel in channels]
            stubs[0].ApplyCreditCurrency(
                gpb.ApplyCreditCurrencyRequest(
                    currency_key="ai", revision=1, rates=[gpb.CreditRate(feature_key="gpt", credits_per_unit="1")]
                ),
                timeout=10,
            )
            stubs[0].ApplySubscription(
                subscription("s", "c", datetime.now(UTC) - timedelta(days=1), [("100", None)], currency="ai"),
                timeout=10,
            )
            for i, stub in enumerate(stubs):
                stub.CreateGrant(
                    gpb.CreateGrantRequest(
                        request_id=f"g{i}", customer_key="c", currency_key="ai", amount="1.5", reason="test"
                    ),
                    timeout=10,
                )
                stub.CreateGrant(  # the same request again, through another connection: a replay
                    gpb.CreateGrantRequest(
                        request_id=f"g{i}", customer_key="c", currency_key="ai", amount="1.5", reason="test"
                    ),
                    timeout=10,
                )
            for i, stub in enumerate(stubs):
                stub.ReportUsage(
                    gpb.ReportUsageRequest(request_id=f"u{i}", customer_key="c", feature_key="gpt", quantity="1"),
                    timeout=10,
                )
            balance = stubs[-1].GetBalance(gpb.GetBalanceRequest(customer_key="c", currency_key="ai"), timeout=10)
        finally:
            for channel in channels:
                channel.close()
        assert Decimal(balance.balance.available) == 100 + Decimal("1.5") * 16 - 16
        assert grant.stop() == 0
    _wait_gone(pids)


def test_with_cpus_each_server_process_runs_on_a_cpu_of_its_own(tmp_path):
    cpus = sorted(os.sched_getaffinity(0))[:2]
    if len(cpus) < 2:
        pytest.skip("one CPU")
    with _grant(tmp_path, "2", "--cpus", ",".join(map(str, cpus))) as grant:
        pids = _server_pids(grant)
        allowed = [
            {
                line.split(":", 1)[1].strip()
                for task in Path(f"/proc/{pid}/task").iterdir()
                for line in (task / "status").read_text().splitlines()
                if line.startswith("Cpus_allowed_list:")
            }
            for pid in pids
        ]
    assert allowed == [{str(cpus[0])}, {str(cpus[1])}]


def test_a_server_process_that_dies_takes_the_service_down(tmp_path):
    grant = _grant(tmp_path, "2").start()
    pids = _server_pids(grant)
    os.kill(pids[0], signal.SIGKILL)
    grant.process.wait(timeout=60)
    assert grant.process.returncode == 1
    _wait_gone(pids)
    failed = [r for r in grant.log_records() if r["message"] == "a server process exited: stopping the others"]
    assert failed and failed[0]["exit_code"] == -signal.SIGKILL
    grant.stop()


def test_server_processes_stop_when_their_supervisor_dies(tmp_path):
    grant = _grant(tmp_path, "2").start()
    pids = _server_pids(grant)
    grant.kill()
    _wait_gone(pids)
