"""Client of the grant service. It owns the process's one channel to the grant
service (`channel`, shared with the outbox's GrantDelivery), plaintext or TLS
(`GrantTls`); every call has a deadline; UNAVAILABLE and DEADLINE_EXCEEDED
become the domain's Unavailable, NOT_FOUND its NotFound."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import grpc

from catalog_service.adapters.grant_delivery import channel_options
from credit_common.config import read_file
from credit_common.errors import DomainError, NotFound, Unavailable
from grant_service.v1 import grant_service_pb2 as grant_pb2
from grant_service.v1 import grant_service_pb2_grpc as grant_pb2_grpc

DEFAULT_DEADLINE = timedelta(seconds=5)


@dataclass(frozen=True)
class GrantTls:
    """How the catalog reaches the grant service over TLS. `enabled` False: plaintext. `ca_file`: the
    CA(s) to trust (PEM; None: the system's roots); `cert_file`/`key_file`: the catalog's client
    certificate, for a grant service that requires mTLS; `server_name`: the name to expect in the
    grant service's certificate when it differs from the address's host."""

    enabled: bool = False
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    server_name: str | None = None

    def __post_init__(self) -> None:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("--grant-tls-cert and --grant-tls-key go together")


def channel_credentials(tls: GrantTls) -> grpc.ChannelCredentials | None:
    """The credentials of the channel to the grant service; None for plaintext."""
    if not tls.enabled:
        return None
    return grpc.ssl_channel_credentials(
        root_certificates=read_file(tls.ca_file),
        private_key=read_file(tls.key_file),
        certificate_chain=read_file(tls.cert_file),
    )


class GrantServiceClient:
    """The catalog's view of the grant service (also its TestClockReader)."""

    def __init__(
        self,
        address: str,
        *,
        deadline: timedelta = DEFAULT_DEADLINE,
        max_reconnect_backoff: timedelta = timedelta(seconds=5),
        keepalive: timedelta = timedelta(minutes=5),
        tls: GrantTls = GrantTls(),
    ) -> None:
        if deadline <= timedelta(0):
            raise ValueError("the deadline must be positive")
        self.address = address
        self.deadline = deadline
        options = channel_options(max_reconnect_backoff, keepalive)
        credentials = channel_credentials(tls)
        if credentials is None:
            self.channel = grpc.insecure_channel(address, options=options)
        else:
            if tls.server_name:
                options.append(("grpc.ssl_target_name_override", tls.server_name))
            self.channel = grpc.secure_channel(address, credentials, options=options)
        self._stub = grant_pb2_grpc.GrantServiceStub(self.channel)

    def close(self) -> None:
        self.channel.close()

    def now_of(self, test_clock_id: str) -> datetime:
        """The current time of a test clock; NotFound if the grant service has no such clock."""
        try:
            reply = self._stub.GetTestClock(
                grant_pb2.GetTestClockRequest(test_clock_id=test_clock_id), timeout=self.deadline.total_seconds()
            )
        except grpc.RpcError as error:
            translated = _translate(error, f"test clock {test_clock_id!r}", not_found_reason="TEST_CLOCK_NOT_FOUND")
            if translated is None:
                raise
            raise translated from error
        return reply.test_clock.frozen_time.ToDatetime(tzinfo=UTC)


def _translate(error: grpc.RpcError, what: str, *, not_found_reason: str) -> DomainError | None:
    """The domain error for a failed call, or None for an unexpected one."""
    code = error.code() if isinstance(error, grpc.Call) else None
    if code == grpc.StatusCode.NOT_FOUND:
        return NotFound(f"{what} does not exist", reason=not_found_reason)
    if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
        return Unavailable(f"the grant service is unavailable ({what}); retry", reason="GRANT_SERVICE_UNAVAILABLE")
    return None
