"""Real service processes for tests and benchmarks: `python -m catalog_service`
or `python -m grant_service` on a fixed free port, started, stopped (SIGTERM),
killed (SIGKILL) and restarted on the same address and database.

    grant = ServiceProcess.grant(database_url, log_dir=tmp_path, args=["--enable-test-clocks"])
    catalog = ServiceProcess.catalog(
        database_url, grant_address=grant.address, grant_api_key=grant.sync_key(), log_dir=tmp_path
    )
    with grant, catalog:            # started and ready (health SERVING); stopped on exit
        catalog.restart(signal.SIGKILL)

Callers' channels (`channel()`) send an admin API key of the service, created in its
database on first use (`api_key`); `sync_key()` makes a key with the role sync (a grant
service's key for a catalog: `ServiceProcess.catalog(..., grant_api_key=grant.sync_key())`).

Each process writes its log (stderr) to `<log_dir>/<name>.log`, appended
across restarts, so a failing test can show it (`log_tail()`) or read its JSON
log lines back (`log_records()`).

With `database_url=None` the database is not passed (give `--database-url` in
`args`), with `migrate=False` the schema is expected to be there already, and
with `shutdown_grace_s=None` the service's own default grace applies; with
`credentials`, `channel()` (and so the readiness check) speaks TLS.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from credit_common.auth.keys import SYNC
from tests.support.auth import create_key_at, definition_of, keyed_channel
from tests.support.postgres import free_port


class ProcessFailed(RuntimeError):
    pass


def health_status(channel: grpc.Channel, service: str = "", timeout: float = 2.0) -> int:
    """The health service's status for `service` (HealthCheckResponse.ServingStatus)."""
    stub = health_pb2_grpc.HealthStub(channel)
    return stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=timeout).status


class ServiceProcess:
    def __init__(
        self,
        module: str,
        database_url: str | None,
        *,
        log_dir: Path,
        args: Sequence[str] = (),
        port: int | None = None,
        name: str | None = None,
        env: dict[str, str] | None = None,
        migrate: bool = True,
        shutdown_grace_s: float | None = 5.0,
        credentials: grpc.ChannelCredentials | None = None,
    ) -> None:
        self.module = module
        self.database_url = database_url
        self.port = port or free_port()
        self.name = name or module
        self.args = list(args)
        self.migrate = migrate
        self.shutdown_grace_s = shutdown_grace_s
        self.env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        self.log_path = Path(log_dir) / f"{self.name}.log"
        self.process: subprocess.Popen | None = None
        self.returncode: int | None = None  # of the last process stopped or killed
        self._api_key: str | None = None
        self.credentials = credentials  # of `channel()`: a service started with --tls-cert

    @classmethod
    def grant(cls, database_url: str, *, log_dir: Path, args: Sequence[str] = (), **kwargs) -> ServiceProcess:
        return cls("grant_service", database_url, log_dir=log_dir, args=args, **kwargs)

    @classmethod
    def catalog(
        cls,
        database_url: str,
        *,
        grant_address: str,
        grant_api_key: str | None,
        log_dir: Path,
        args: Sequence[str] = (),
        **kwargs,
    ) -> ServiceProcess:
        """`grant_api_key`: the catalog's key of the grant service (None: it sends none)."""
        env = dict(kwargs.pop("env", None) or {})
        if grant_api_key:
            env["CATALOG_GRANT_SERVICE_API_KEY"] = grant_api_key
        return cls(
            "catalog_service",
            database_url,
            log_dir=log_dir,
            args=["--grant-service-address", grant_address, *args],
            env=env,
            **kwargs,
        )

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    @property
    def api_key(self) -> str:
        """An admin key of the service, created in its database (schema upgraded first unless
        `migrate=False`) the first time it is asked for; the same one after a restart."""
        if self._api_key is None:
            self._api_key = self._create_key(("admin",))
        return self._api_key

    def sync_key(self) -> str:
        """A new key of the service with the role sync (what a catalog uses for the grant service)."""
        return self._create_key((SYNC,))

    def _create_key(self, roles: tuple[str, ...]) -> str:
        url = self.database_url
        if url is None and "--database-url" in self.args:
            url = self.args[self.args.index("--database-url") + 1]
        if url is None:
            raise RuntimeError(f"{self.name}: no database URL to create an API key in")
        return create_key_at(definition_of(self.module), url, roles, migrate=self.migrate)

    def channel(self, options: Sequence[tuple[str, Any]] = (), *, authenticated: bool = True) -> grpc.Channel:
        """A new channel to the process, insecure or with `credentials`, sending `api_key` unless not
        `authenticated` (the caller closes it)."""
        return keyed_channel(
            self.address, self.api_key if authenticated else None, options, credentials=self.credentials
        )

    def start(self, *, ready_timeout_s: float = 60.0) -> ServiceProcess:
        """Start the process (schema migrated with --migrate unless `migrate=False`) and wait
        until it serves; killed again if it does not."""
        if self.running:
            raise RuntimeError(f"{self.name} is already running")
        command = [sys.executable, "-m", self.module, "serve", "--listen", self.address]
        if self.migrate:
            command.append("--migrate")
        if self.database_url is not None:
            command += ["--database-url", self.database_url]
        if self.shutdown_grace_s is not None:
            command += ["--shutdown-grace", f"{self.shutdown_grace_s:g}"]
        command += self.args
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=self.env)
        try:
            self.wait_ready(ready_timeout_s)
        except ProcessFailed:
            self.kill()
            raise
        return self

    def wait_ready(self, timeout_s: float = 60.0) -> None:
        """Poll the health service until SERVING; fail if the process exits first."""
        deadline = time.monotonic() + timeout_s
        with self.channel(authenticated=False) as channel:
            while True:
                if not self.running:
                    raise ProcessFailed(
                        f"{self.name} exited with {self.process and self.process.returncode}: {self.log_tail()}"
                    )
                try:
                    if health_status(channel, timeout=1.0) == health_pb2.HealthCheckResponse.SERVING:
                        return
                except grpc.RpcError:
                    pass
                if time.monotonic() > deadline:
                    raise ProcessFailed(f"{self.name} did not become ready in {timeout_s} s: {self.log_tail()}")
                time.sleep(0.05)

    def stop(self, sig: signal.Signals = signal.SIGTERM, timeout_s: float = 60.0) -> int | None:
        """Send `sig` (SIGTERM: graceful, SIGKILL: a crash) and wait for the exit; the exit code. The
        bound is above the longest graceful shutdown (a second's notice, --shutdown-grace 10 s, a webhook
        attempt in flight up to its 15 s of timeouts, the background threads' joins) on a loaded machine."""
        process, self.process = self.process, None
        if process is None:
            return None
        if process.poll() is None:
            process.send_signal(sig)
            try:
                process.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=timeout_s)
                self.returncode = process.returncode
                raise ProcessFailed(
                    f"{self.name} did not exit within {timeout_s} s of {sig.name}: {self.log_tail()}"
                ) from None
        self.returncode = process.returncode
        return process.returncode

    def kill(self) -> int | None:
        return self.stop(signal.SIGKILL)

    def restart(self, sig: signal.Signals = signal.SIGTERM) -> ServiceProcess:
        self.stop(sig)
        return self.start()

    def log_tail(self, chars: int = 3000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except FileNotFoundError:
            return ""

    def log_records(self) -> list[dict]:
        """The JSON log lines written so far (other lines, and a line cut short by a kill, skipped)."""
        try:
            lines = self.log_path.read_text(errors="replace").splitlines()
        except FileNotFoundError:
            return []
        records = []
        for line in lines:
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if isinstance(record, dict):
                records.append(record)
        return records

    def __enter__(self) -> ServiceProcess:
        if not self.running:
            self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
