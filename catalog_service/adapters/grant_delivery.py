"""The catalog's client of the grant service for outbox deliveries.

`GrantDelivery.deliver(kind, payload)` sends one serialized Apply request with a
deadline and classifies the result (see `classify`):

- delivered: OK with outcome APPLIED, ALREADY_APPLIED or STALE. The grant
  service is idempotent by (key, revision), so a repeated or older revision is
  as good as delivered.
- retry: codes that describe the grant service or the network at the moment,
  not the request: UNAVAILABLE, DEADLINE_EXCEEDED, RESOURCE_EXHAUSTED, ABORTED,
  CANCELLED, INTERNAL, UNKNOWN, DATA_LOSS, UNIMPLEMENTED (a grant service
  mid-deploy), UNAUTHENTICATED and PERMISSION_DENIED (a configuration fault that
  an operator fixes: parking would strand every delivery). Retrying INTERNAL and
  UNKNOWN is safe because Apply is idempotent; the capped backoff keeps a
  persistent failure slow, and the row's last_error shows it. Also an OK reply
  with an unspecified outcome (a grant service that does not honour the contract).
- parked: the request itself is wrong and sending it again cannot help:
  INVALID_ARGUMENT, FAILED_PRECONDITION, NOT_FOUND, ALREADY_EXISTS, OUT_OF_RANGE;
  also an unknown kind or a payload that does not parse.

The channel is created once and reused: gRPC reconnects by itself, so a
restarted grant service is found again within `max_reconnect_backoff`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from datetime import timedelta
from typing import Any

import grpc
from google.protobuf.message import DecodeError

from catalog_service.domain.outbox import KIND_CREDIT_CURRENCY, KIND_SUBSCRIPTION, DeliveryOutcome
from credit_common.grpc.errors import error_details
from grant_service.v1 import grant_service_pb2, grant_service_pb2_grpc

log = logging.getLogger("catalog_service.grant_delivery")

RETRYABLE_CODES = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.ABORTED,
        grpc.StatusCode.CANCELLED,
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.UNKNOWN,
        grpc.StatusCode.DATA_LOSS,
        grpc.StatusCode.UNIMPLEMENTED,
        grpc.StatusCode.UNAUTHENTICATED,
        grpc.StatusCode.PERMISSION_DENIED,
    }
)
PERMANENT_CODES = frozenset(
    {
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.FAILED_PRECONDITION,
        grpc.StatusCode.NOT_FOUND,
        grpc.StatusCode.ALREADY_EXISTS,
        grpc.StatusCode.OUT_OF_RANGE,
    }
)
DELIVERED_OUTCOMES = frozenset(
    {
        grant_service_pb2.APPLY_OUTCOME_APPLIED,
        grant_service_pb2.APPLY_OUTCOME_ALREADY_APPLIED,
        grant_service_pb2.APPLY_OUTCOME_STALE,
    }
)


def is_retryable(code: grpc.StatusCode) -> bool:
    """True for a code worth retrying; every code is in exactly one of the two sets."""
    return code in RETRYABLE_CODES


def classify(error: grpc.RpcError) -> DeliveryOutcome:
    """The outcome of a failed call: retry or park, with the code, message and ErrorInfo reason."""
    code = error.code() if callable(getattr(error, "code", None)) else grpc.StatusCode.UNKNOWN
    detail = f"{code.name}: {error.details() if callable(getattr(error, 'details', None)) else error}"
    try:
        info, violations = error_details(error)
    except Exception:  # a status without parsable details: the code and message are enough
        info, violations = None, []
    if info is not None and info.reason:
        detail += f" [reason={info.reason}]"
    if violations:
        detail += " [" + "; ".join(f"{v.field}: {v.description}" for v in violations) + "]"
    if is_retryable(code):
        return DeliveryOutcome.retry(detail, code.name)
    return DeliveryOutcome.parked(detail, code.name)


def channel_options(max_reconnect_backoff: timedelta, keepalive: timedelta) -> list[tuple[str, Any]]:
    """Options for a long-lived channel: keepalive pings only while calls are in
    flight (no more often than servers accept by default: 5 minutes, else they
    answer GOAWAY too_many_pings), and a short reconnect backoff so that a
    restarted grant service is reached again quickly (gRPC's default grows to 120 s)."""
    return [
        ("grpc.keepalive_time_ms", int(keepalive // timedelta(milliseconds=1))),
        ("grpc.keepalive_timeout_ms", 20_000),
        ("grpc.keepalive_permit_without_calls", 0),
        ("grpc.initial_reconnect_backoff_ms", 100),
        ("grpc.min_reconnect_backoff_ms", 100),
        ("grpc.max_reconnect_backoff_ms", int(max_reconnect_backoff // timedelta(milliseconds=1))),
    ]


class GrantDelivery:
    """Sends outbox payloads to the grant service. Thread-safe; `close()` when done."""

    def __init__(
        self,
        target: str | None = None,
        *,
        channel: grpc.Channel | None = None,
        deadline: timedelta = timedelta(seconds=5),
        max_reconnect_backoff: timedelta = timedelta(seconds=5),
        keepalive: timedelta = timedelta(minutes=5),
        extra_options: Sequence[tuple[str, Any]] = (),
    ) -> None:
        if (target is None) == (channel is None):
            raise ValueError("give either a target address or a channel")
        if deadline <= timedelta(0):
            raise ValueError("the deadline must be positive")
        self._owns_channel = channel is None
        self._channel = channel or grpc.insecure_channel(
            target, options=[*channel_options(max_reconnect_backoff, keepalive), *extra_options]
        )
        self._stub = grant_service_pb2_grpc.GrantServiceStub(self._channel)
        self.deadline = deadline
        self._senders: dict[str, Callable[[bytes], DeliveryOutcome]] = {
            KIND_SUBSCRIPTION: self._apply_subscription,
            KIND_CREDIT_CURRENCY: self._apply_credit_currency,
        }

    def deliver(self, kind: str, payload: bytes) -> DeliveryOutcome:
        sender = self._senders.get(kind)
        if sender is None:
            return DeliveryOutcome.parked(f"unknown delivery kind {kind!r}")
        try:
            return sender(payload)
        except DecodeError as error:
            return DeliveryOutcome.parked(f"payload of kind {kind!r} does not parse: {error}")
        except grpc.RpcError as error:
            return classify(error)

    def _apply_subscription(self, payload: bytes) -> DeliveryOutcome:
        request = grant_service_pb2.ApplySubscriptionRequest.FromString(payload)
        response = self._stub.ApplySubscription(request, timeout=self._timeout())
        return _outcome(response.outcome, response.current_revision)

    def _apply_credit_currency(self, payload: bytes) -> DeliveryOutcome:
        request = grant_service_pb2.ApplyCreditCurrencyRequest.FromString(payload)
        response = self._stub.ApplyCreditCurrency(request, timeout=self._timeout())
        return _outcome(response.outcome, response.current_revision)

    def _timeout(self) -> float:
        return self.deadline.total_seconds()

    def close(self) -> None:
        if self._owns_channel:
            self._channel.close()


def _outcome(outcome: int, current_revision: int) -> DeliveryOutcome:
    name = (
        grant_service_pb2.ApplyOutcome.Name(outcome)
        if outcome in grant_service_pb2.ApplyOutcome.values()
        else str(outcome)
    )
    detail = f"{name.removeprefix('APPLY_OUTCOME_')} current_revision={current_revision}"
    if outcome in DELIVERED_OUTCOMES:
        return DeliveryOutcome.delivered(detail)
    return DeliveryOutcome.retry(f"unexpected reply from the grant service: {detail}", "OK")
