"""Client of the grant service. It owns the process's one channel to the grant
service (`channel`, shared with the outbox's GrantDelivery), plaintext or TLS
(`GrantTls`), carrying the catalog's own API key; every call has a deadline. A
failed call becomes the domain error the catalog's caller should see
(`_translate`): the grant service's answers about the caller's input
(INVALID_ARGUMENT, NOT_FOUND, FAILED_PRECONDITION) keep their code and reason,
with the field named as in the catalog's request; UNAVAILABLE,
DEADLINE_EXCEEDED and RESOURCE_EXHAUSTED become Unavailable (retryable); a
refused catalog key (UNAUTHENTICATED, PERMISSION_DENIED) an Unavailable with
reason GRANT_SERVICE_REFUSED_CATALOG_KEY; anything else is unexpected
(INTERNAL, logged)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import grpc

from catalog_service.adapters.grant_delivery import channel_options
from credit_common.auth.client import with_api_key
from credit_common.calls import outbound_timeout
from credit_common.config import read_file
from credit_common.errors import (
    DomainError,
    FailedPrecondition,
    FieldViolation,
    InvalidArgument,
    Unavailable,
    test_clock_not_found,
)
from credit_common.grpc.errors import error_details
from credit_common.tracing import traced_channel
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
        api_key: str | None = None,
    ) -> None:
        """`api_key`: the catalog's own key of the grant service (role sync), sent with every call."""
        if deadline <= timedelta(0):
            raise ValueError("the deadline must be positive")
        self.address = address
        self.deadline = deadline
        options = channel_options(max_reconnect_backoff, keepalive)
        credentials = channel_credentials(tls)
        if credentials is None:
            channel = grpc.insecure_channel(address, options=options)
        else:
            if tls.server_name:
                options.append(("grpc.ssl_target_name_override", tls.server_name))
            channel = grpc.secure_channel(address, credentials, options=options)
        self.channel = traced_channel(with_api_key(channel, api_key))
        self._stub = grant_pb2_grpc.GrantServiceStub(self.channel)

    def close(self) -> None:
        self.channel.close()

    def now_of(self, test_clock_id: str, field: str = "test_clock_id") -> datetime:
        """The current time of a test clock; NotFound if the grant service has no such clock,
        InvalidArgument on `field` (the caller's name for it) if it is not a valid id."""
        try:
            reply = self._stub.GetTestClock(
                grant_pb2.GetTestClockRequest(test_clock_id=test_clock_id),
                timeout=outbound_timeout(self.deadline.total_seconds()),  # within the caller's deadline
            )
        except grpc.RpcError as error:
            translated = _translate(error, f"test clock {test_clock_id!r}", field=field, missing=test_clock_id)
            if translated is None:
                raise
            raise translated from error
        return reply.test_clock.frozen_time.ToDatetime(tzinfo=UTC)


_RETRYABLE = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.RESOURCE_EXHAUSTED)


def _translate(error: grpc.RpcError, what: str, *, field: str, missing: str) -> DomainError | None:
    """The domain error for a failed call about the caller's `field` (the test clock `missing` for a
    NOT_FOUND), or None for an unexpected one."""
    code = error.code() if isinstance(error, grpc.Call) else None
    if code in _RETRYABLE:
        return Unavailable(f"the grant service is unavailable ({what}); retry", reason="GRANT_SERVICE_UNAVAILABLE")
    if code in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED):
        # the catalog's own key (--grant-service-api-key) is missing, revoked or lacks the role sync:
        # not the caller's fault, and fixed by an operator, not by the caller retrying at once
        return Unavailable(
            f"the grant service refused the catalog's API key ({what}): {code.name}",
            reason="GRANT_SERVICE_REFUSED_CATALOG_KEY",
        )
    if code not in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.FAILED_PRECONDITION):
        return None
    info, violations = error_details(error) if isinstance(error, grpc.Call) else (None, [])
    metadata = dict(info.metadata) if info is not None else {}
    if code == grpc.StatusCode.NOT_FOUND:
        return test_clock_not_found(missing)
    if code == grpc.StatusCode.INVALID_ARGUMENT:
        descriptions = [v.description for v in violations] or [error.details() or "is not valid"]
        return InvalidArgument(
            f"{what} is not valid: {'; '.join(descriptions)}",
            reason=info.reason if info is not None and info.reason else None,
            metadata=metadata,
            violations=[FieldViolation(field, d) for d in descriptions],
        )
    reason = info.reason if info is not None and info.reason else None
    return FailedPrecondition(
        f"the grant service refused ({what}): {error.details()}", reason=reason, metadata=metadata
    )
