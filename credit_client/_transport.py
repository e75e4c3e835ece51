"""One channel to one service, and the call path every typed method goes through: a deadline on
every call, a request_id on every mutation (generated when the caller gave none), retries of
UNAVAILABLE with that same request_id, and failures raised as credit_client.errors.ApiError."""

from __future__ import annotations

import random
import threading
import time
import uuid
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any, TypeVar

import grpc
from google.protobuf.message import Message

from credit_client.errors import from_rpc_error
from credit_client.settings import ClientSettings

M = TypeVar("M", bound=Message)
MAX_BACKOFF_S = 5.0


def _read(path: str | None) -> bytes | None:
    return Path(path).read_bytes() if path else None


def open_channel(settings: ClientSettings) -> grpc.Channel:
    """A plaintext or TLS channel to `settings.address` (API keys are sent per call, not here)."""
    if not settings.uses_tls:
        return grpc.insecure_channel(settings.address)
    credentials = grpc.ssl_channel_credentials(
        root_certificates=_read(settings.tls_ca_file),
        private_key=_read(settings.tls_key_file),
        certificate_chain=_read(settings.tls_cert_file),
    )
    options = []
    if settings.tls_server_name:
        options.append(("grpc.ssl_target_name_override", settings.tls_server_name))
    return grpc.secure_channel(settings.address, credentials, options=options)


def decimal_text(value: str | Decimal | int, field: str) -> str:
    """An amount as the decimal string the API wants; floats are refused (they are not exact)."""
    if isinstance(value, bool | float):
        raise TypeError(f"{field} must be a str, Decimal or int, never a float (got {value!r})")
    if isinstance(value, Decimal):
        return format(value, "f")
    return str(value)


class IdleWatchdog:
    """Calls `expire` (e.g. a stream's `cancel`) once `kick` has not been called for `timeout_s`
    seconds of real time: a stream that went quiet, heartbeats included, is dead. `stop()` ends it."""

    def __init__(self, timeout_s: float, expire: Callable[[], Any]) -> None:
        self._timeout_s, self._expire = timeout_s, expire
        self._last = time.monotonic()
        self._stopped = threading.Event()
        self.fired = False
        threading.Thread(target=self._run, name="credit-client-idle-watchdog", daemon=True).start()

    def kick(self) -> None:
        self._last = time.monotonic()

    def stop(self) -> None:
        self._stopped.set()

    def _run(self) -> None:
        while True:
            left = self._last + self._timeout_s - time.monotonic()
            if left <= 0:
                self.fired = True
                self._expire()
                return
            if self._stopped.wait(left):
                return


class Transport:
    """Calls of one service over one channel. `close()` (or `with`) closes the channel."""

    def __init__(self, settings: ClientSettings, stub_type: type, *, sleep: Callable[[float], None] = time.sleep):
        self.settings = settings
        self.channel = open_channel(settings)
        self.stub = stub_type(self.channel)
        self._metadata: tuple[tuple[str, str], ...] = (
            (("authorization", f"Bearer {settings.api_key}"),) if settings.api_key else ()
        )
        self._sleep = sleep

    def close(self) -> None:
        self.channel.close()

    def call(self, method: str, request: M, *, deadline_s: float | None = None) -> Any:
        """Call `method` (e.g. "GetBalance") with `request`: a mutation without a request_id gets a
        new one (kept on the request, so the caller can see and reuse it); UNAVAILABLE is retried
        with it, `settings.retries` times, with a doubling pause (jittered)."""
        request_id = ""
        if "request_id" in request.DESCRIPTOR.fields_by_name:
            if not request.request_id:  # type: ignore[attr-defined]
                request.request_id = str(uuid.uuid4())  # type: ignore[attr-defined]
            request_id = request.request_id  # type: ignore[attr-defined]
        rpc = getattr(self.stub, method)
        timeout = deadline_s or self.settings.deadline_s
        pause = self.settings.retry_backoff_s
        for attempt in range(self.settings.retries + 1):
            try:
                return rpc(request, timeout=timeout, metadata=self._metadata)
            except grpc.RpcError as error:
                retry = error.code() == grpc.StatusCode.UNAVAILABLE and attempt < self.settings.retries
                if not retry:
                    raise from_rpc_error(error, method=method, request_id=request_id) from None
            self._sleep(random.uniform(pause / 2, pause))
            pause = min(pause * 2, MAX_BACKOFF_S)
        raise AssertionError("unreachable")

    def open_stream(self, method: str, request: Message) -> Any:
        """Start the server-streaming `method` (e.g. "WatchEvents"): no deadline (it runs until
        cancelled) and no retry here (the caller resumes where it stopped, e.g. from a cursor). The
        answer iterates over the messages and has `cancel()`; its errors are grpc.RpcError."""
        return getattr(self.stub, method)(request, metadata=self._metadata)

    def pause(self, seconds: float) -> None:
        """The jittered pause before a retry (injectable sleep, as for `call`)."""
        self._sleep(random.uniform(seconds / 2, seconds))
