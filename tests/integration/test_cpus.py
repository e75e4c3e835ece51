"""A service started with --cpus runs every one of its threads on those CPUs, and one that cannot
be pinned as asked says so and exits."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.processes import ServiceProcess

pytestmark = pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="Linux CPU affinity")


def _allowed(pid: int) -> dict[int, str]:
    """Each thread of `pid`: the CPUs it may run on, as /proc lists them."""
    allowed = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        for line in (task / "status").read_text().splitlines():
            if line.startswith("Cpus_allowed_list:"):
                allowed[int(task.name)] = line.split(":", 1)[1].strip()
    return allowed


def test_every_thread_of_a_pinned_service_runs_on_its_cpu(database_url_factory, tmp_path):
    cpu = min(os.sched_getaffinity(0))
    with ServiceProcess.grant(database_url_factory("pinned"), log_dir=tmp_path, args=["--cpus", str(cpu)]) as grant:
        from grpc_health.v1 import health_pb2, health_pb2_grpc

        with grant.channel() as channel:  # serving: RPC, timer and log threads have all started
            health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
        allowed = _allowed(grant.process.pid)
    assert len(allowed) > 5
    assert set(allowed.values()) == {str(cpu)}


def test_a_cpu_the_machine_does_not_have_is_refused(database_url_factory):
    missing = max(os.sched_getaffinity(0)) + 1000
    url = database_url_factory("unpinned")
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "grant_service",
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--cpus",
            str(missing),
            "--database-url",
            url,
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert f"grant_service: cannot pin to CPUs [{missing}]" in done.stderr
    assert "Traceback" not in done.stderr
