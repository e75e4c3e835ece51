"""Server processes for the benchmark: the services run as `python -m <service> serve`
subprocesses on a free loopback port, exactly as deployed; PostgreSQL is started the way the
tests start it (tests.support.postgres)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from credit_common.auth.keys import ADMIN
from tests.support.auth import create_key_at, definition_of
from tests.support.postgres import free_port

REPO = Path(__file__).resolve().parent.parent


@dataclass
class ServiceProcess:
    name: str
    process: subprocess.Popen[bytes]
    port: int
    log_path: Path
    started_at: float = 0.0  # perf_counter when health first answered SERVING
    api_key: str | None = None  # an admin key of the service; None with --auth off
    extra: dict = field(default_factory=dict)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        return self.process.pid

    def peak_rss_mb(self) -> float:
        """Peak resident set size (VmHWM) of the service so far, in MB: of its process, plus those of
        its server processes if it has several (--processes), each at its own peak."""
        return sum(_status_kb(pid, "VmHWM") for pid in self.pids()) / 1024

    def rss_mb(self) -> float:
        return sum(_status_kb(pid, "VmRSS") for pid in self.pids()) / 1024

    def pids(self) -> list[int]:
        """The service's process and every process under it."""
        found, i = [self.pid], 0
        while i < len(found):
            for task in Path(f"/proc/{found[i]}/task").iterdir():
                found += [int(child) for child in (task / "children").read_text().split()]
            i += 1
        return found

    def stop(self) -> None:
        profiler = self.extra.pop("profiler", None)
        if profiler is not None:  # py-spy writes its profile on SIGINT
            profiler.send_signal(signal.SIGINT)
            try:
                profiler.wait(timeout=60)
            except subprocess.TimeoutExpired:
                profiler.kill()
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def _status_kb(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{key}:"):
            return int(line.split()[1])
    raise RuntimeError(f"{key} not in /proc/{pid}/status")


def auth_on() -> bool:
    """Whether the services run with authentication (bench --auth; the services read GRANT_AUTH / CATALOG_AUTH)."""
    return os.environ.get("GRANT_AUTH", "on") != "off"


def service_key(module: str, database_url: str, roles: tuple[str, ...] = (ADMIN,)) -> str | None:
    """A key of `module` with `roles` in its (migrated) database; None with --auth off."""
    return create_key_at(definition_of(module), database_url, roles, migrate=False) if auth_on() else None


def start_service(
    module: str, database_url: str, run_dir: Path, *, args: list[str] = (), env: dict[str, str] | None = None
) -> ServiceProcess:
    """Start `python -m module serve` on a free port over an already migrated database and wait
    until its health service answers SERVING. Its `api_key` is an admin key of it (auth on)."""
    port = free_port()
    log_path = run_dir / f"{module}-{port}.log"
    log = open(log_path, "ab")  # noqa: SIM115 - kept open for the child's life
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            module,
            "serve",
            "--listen",
            f"127.0.0.1:{port}",
            "--database-url",
            database_url,
            *args,
        ],
        stdout=log,
        stderr=log,
        cwd=REPO,
        env={**os.environ, **(env or {})},
    )
    service = ServiceProcess(module, process, port, log_path, api_key=service_key(module, database_url))
    try:
        service.started_at = wait_serving(service)
    except Exception:
        service.stop()
        raise
    profile_dir = os.environ.get("BENCH_PROFILE_DIR")
    if profile_dir:  # sample the server with py-spy (collapsed stacks, one file per server process)
        out = Path(profile_dir) / f"{module}-{port}.collapsed"
        service.extra["profiler"] = subprocess.Popen(
            [
                str(Path(sys.executable).parent / "py-spy"),
                "record",
                "--pid",
                str(process.pid),
                "--format",
                "raw",
                "--rate",
                "50",
                "--nonblocking",
                "--subprocesses",
                "--output",
                str(out),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
    return service


def wait_serving(service: ServiceProcess, timeout: float = 60.0) -> float:
    deadline = time.monotonic() + timeout
    with grpc.insecure_channel(service.address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while time.monotonic() < deadline:
            if service.process.poll() is not None:
                raise RuntimeError(f"{service.name} exited: {service.log_path.read_text()[-3000:]}")
            try:
                reply = stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=1)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return time.perf_counter()
            except grpc.RpcError:
                pass
            time.sleep(0.02)
    raise TimeoutError(f"{service.name} not SERVING after {timeout}s; log: {service.log_path}")
