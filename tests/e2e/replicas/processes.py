"""A service as a real subprocess (`python -m <module> serve ...`) on a free loopback port, for
the replica tests: started, waited for (health SERVING), its JSON log lines read back, stopped
with SIGTERM or killed with SIGKILL. (Kept next to these tests: the issue-4 branch adds a fuller
`credit_common.testing.processes`; once both are merged these tests can move onto it.)"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from credit_common.testing.postgres import free_port


class ProcessFailed(RuntimeError):
    pass


@dataclass
class ServiceProcess:
    process: subprocess.Popen[bytes]
    port: int
    log_path: Path

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def channel(self) -> grpc.Channel:
        return grpc.insecure_channel(self.address)

    def alive(self) -> bool:
        return self.process.poll() is None

    def log_tail(self, chars: int = 3000) -> str:
        return self.log_path.read_text(errors="replace")[-chars:] if self.log_path.exists() else ""

    def log_records(self) -> list[dict]:
        """The JSON log lines written so far (a line cut short by a kill is skipped)."""
        records = []
        for line in self.log_path.read_text(errors="replace").splitlines():
            try:
                records.append(json.loads(line))
            except ValueError:
                continue
        return records

    def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM (graceful shutdown) and wait; returns the exit code."""
        if self.alive():
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode

    def kill(self) -> None:
        """SIGKILL: no shutdown at all, like a crashed host."""
        if self.alive():
            self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=30)


def health_status(channel: grpc.Channel, service: str = "", timeout: float = 2.0) -> int:
    stub = health_pb2_grpc.HealthStub(channel)
    return stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=timeout).status


def start_service(
    module: str,
    args: Sequence[str],
    *,
    log_path: Path,
    env: dict[str, str] | None = None,
    timeout: float = 30.0,
) -> ServiceProcess:
    """Run `python -m <module> serve --listen 127.0.0.1:<free port> <args>` with its stderr (the
    JSON logs) in `log_path`, and return once its health check answers SERVING."""
    port = free_port()
    log = open(log_path, "ab")  # noqa: SIM115 - the child writes to it for its whole life
    try:
        process = subprocess.Popen(
            [sys.executable, "-m", module, "serve", "--listen", f"127.0.0.1:{port}", *args],
            stdout=subprocess.DEVNULL,
            stderr=log,
            env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
        )
    finally:
        log.close()
    service = ServiceProcess(process, port, log_path)
    deadline = time.monotonic() + timeout
    with service.channel() as channel:
        while True:
            if not service.alive():
                raise ProcessFailed(f"{module} exited with {process.returncode}: {service.log_tail()}")
            try:
                if health_status(channel, timeout=1.0) == health_pb2.HealthCheckResponse.SERVING:
                    return service
            except grpc.RpcError:
                pass
            if time.monotonic() > deadline:
                service.kill()
                raise ProcessFailed(f"{module} did not become healthy in {timeout} s: {service.log_tail()}")
            time.sleep(0.1)
