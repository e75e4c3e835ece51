"""Client of the grant service. It owns the process's one channel to the grant
service (`channel`, shared with the outbox's GrantDelivery); every call has a
deadline; UNAVAILABLE and DEADLINE_EXCEEDED become the domain's Unavailable,
NOT_FOUND its NotFound, a refused catalog key (UNAUTHENTICATED, PERMISSION_DENIED) an
Unavailable with reason GRANT_SERVICE_REFUSED_CATALOG_KEY."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import grpc

from catalog_service.adapters.grant_delivery import channel_options
from credit_common.auth.client import with_api_key
from credit_common.errors import DomainError, NotFound, Unavailable
from grant_service.v1 import grant_service_pb2 as grant_pb2
from grant_service.v1 import grant_service_pb2_grpc as grant_pb2_grpc

DEFAULT_DEADLINE = timedelta(seconds=5)


class GrantServiceClient:
    """The catalog's view of the grant service (also its TestClockReader)."""

    def __init__(
        self,
        address: str,
        *,
        deadline: timedelta = DEFAULT_DEADLINE,
        max_reconnect_backoff: timedelta = timedelta(seconds=5),
        keepalive: timedelta = timedelta(minutes=5),
        api_key: str | None = None,
    ) -> None:
        """`api_key`: the catalog's own key of the grant service (role sync), sent with every call."""
        if deadline <= timedelta(0):
            raise ValueError("the deadline must be positive")
        self.address = address
        self.deadline = deadline
        self.channel = with_api_key(
            grpc.insecure_channel(address, options=channel_options(max_reconnect_backoff, keepalive)), api_key
        )
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
    if code in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED):
        # the catalog's own key (--grant-service-api-key) is missing, revoked or lacks the role sync:
        # not the caller's fault, and fixed by an operator, not by the caller retrying at once
        return Unavailable(
            f"the grant service refused the catalog's API key ({what}): {code.name}",
            reason="GRANT_SERVICE_REFUSED_CATALOG_KEY",
        )
    return None
