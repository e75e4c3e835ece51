"""The catalog's client of the grant service for outbox deliveries.

`GrantDelivery.deliver(kind, payload)` sends one serialized Apply request with a
deadline and classifies the result (see `classify`):

- delivered: OK with outcome APPLIED, ALREADY_APPLIED or STALE. The grant
  service is idempotent by (key, revision), so a repeated or older revision is
  as good as delivered. A STALE outcome carries the revision the grant service
  holds, for the dispatcher to check it is one the catalog issued
  (catalog_service.domain.outbox.judge_stale).
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
import time
from collections.abc import Callable, Sequence
from datetime import UTC, timedelta
from typing import Any, cast

import grpc
from google.protobuf.message import DecodeError

from catalog_service.domain.outbox import (
    KIND_CREDIT_CURRENCY,
    KIND_SUBSCRIPTION,
    DeliveryOutcome,
    LateChange,
    OutcomeKind,
)
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
APPLY_BATCH_MAX = 500  # the grant service's limit of items per ApplySubscriptions call
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
    try:
        info, violations = error_details(error)
    except Exception:  # a status without parsable details: the code and message are enough
        info, violations = None, []
    message = error.details() if callable(getattr(error, "details", None)) else str(error)
    return _failed(code, message, info.reason if info is not None else "", violations)


def classify_rejection(rejection: grant_service_pb2.ApplyRejection) -> DeliveryOutcome:
    """The outcome of an item that ApplySubscriptions rejected: as `classify` for the same error
    (an unknown code is retried, like UNKNOWN)."""
    code = grpc.StatusCode.__members__.get(rejection.code, grpc.StatusCode.UNKNOWN)
    return _failed(code, rejection.message, rejection.reason, rejection.field_violations)


def _failed(code: grpc.StatusCode, message: str, reason: str, violations: Sequence[Any]) -> DeliveryOutcome:
    detail = f"{code.name}: {message}"
    if reason:
        detail += f" [reason={reason}]"
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
        on_late: Callable[[str, list[LateChange]], None] | None = None,
    ) -> None:
        """`on_late(subscription_id, changes)`: told of the changes the grant service applied later
        than dated (e.g. to record them for the handoff state), before the outcome is returned."""
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
        self._on_late = on_late
        self._senders: dict[str, Callable[[bytes, float], DeliveryOutcome]] = {
            KIND_SUBSCRIPTION: self._apply_subscription,
            KIND_CREDIT_CURRENCY: self._apply_credit_currency,
        }

    def deliver(self, kind: str, payload: bytes) -> DeliveryOutcome:
        return self._deliver_one(kind, payload, self._timeout())

    def deliver_many(self, kind: str, payloads: Sequence[bytes]) -> list[DeliveryOutcome]:
        """The outcome of each payload, in order, within one `deadline` in all. Subscriptions go
        in one ApplySubscriptions call (at most APPLY_BATCH_MAX payloads); other kinds one call
        each. A failed batch call is retried as a whole when its code is retryable; otherwise
        (UNIMPLEMENTED: a grant service without ApplySubscriptions; a rejected batch) each payload
        is sent alone with what is left of the deadline, and gets its own outcome."""
        started = time.monotonic()
        if kind != KIND_SUBSCRIPTION or len(payloads) == 1:
            return self._one_by_one(kind, payloads, started)
        if len(payloads) > APPLY_BATCH_MAX:
            raise ValueError(f"at most {APPLY_BATCH_MAX} subscriptions per call, got {len(payloads)}")
        outcomes: list[DeliveryOutcome | None] = [None] * len(payloads)
        sent: list[int] = []
        requests = []
        for i, payload in enumerate(payloads):
            try:
                requests.append(grant_service_pb2.ApplySubscriptionRequest.FromString(payload))
                sent.append(i)
            except DecodeError as error:
                outcomes[i] = _unparsable(kind, error)
        if requests:
            try:
                response = self._stub.ApplySubscriptions(
                    grant_service_pb2.ApplySubscriptionsRequest(requests=requests), timeout=self._timeout()
                )
            except grpc.RpcError as error:
                failed = classify(error)
                if failed.kind is OutcomeKind.RETRY and failed.code != grpc.StatusCode.UNIMPLEMENTED.name:
                    answers = [failed] * len(sent)
                else:
                    answers = self._one_by_one(kind, [payloads[i] for i in sent], started)
            else:
                answers = _batch_outcomes(response, len(requests))
                for request, result in zip(requests, response.results, strict=False):
                    self._late(request, result.clamped_changes)
            for i, answer in zip(sent, answers, strict=True):
                outcomes[i] = answer
        assert all(o is not None for o in outcomes)
        return cast(list[DeliveryOutcome], outcomes)

    def _one_by_one(self, kind: str, payloads: Sequence[bytes], started: float) -> list[DeliveryOutcome]:
        outcomes = []
        for payload in payloads:
            left = self._timeout() - (time.monotonic() - started)
            if left <= 0:
                outcomes.append(DeliveryOutcome.retry("not sent: the deadline of its batch ran out"))
            else:
                outcomes.append(self._deliver_one(kind, payload, left))
        return outcomes

    def _deliver_one(self, kind: str, payload: bytes, timeout: float) -> DeliveryOutcome:
        sender = self._senders.get(kind)
        if sender is None:
            return DeliveryOutcome.parked(f"unknown delivery kind {kind!r}")
        try:
            return sender(payload, timeout)
        except DecodeError as error:
            return _unparsable(kind, error)
        except grpc.RpcError as error:
            return classify(error)

    def _apply_subscription(self, payload: bytes, timeout: float) -> DeliveryOutcome:
        request = grant_service_pb2.ApplySubscriptionRequest.FromString(payload)
        response = self._stub.ApplySubscription(request, timeout=timeout)
        self._late(request, response.clamped_changes)
        return _outcome(response.outcome, response.current_revision)

    def _apply_credit_currency(self, payload: bytes, timeout: float) -> DeliveryOutcome:
        request = grant_service_pb2.ApplyCreditCurrencyRequest.FromString(payload)
        response = self._stub.ApplyCreditCurrency(request, timeout=timeout)
        return _outcome(response.outcome, response.current_revision)

    def _late(
        self, request: grant_service_pb2.ApplySubscriptionRequest, changes: Sequence[grant_service_pb2.ClampedChange]
    ) -> None:
        log_clamped(request, changes)
        if not changes or self._on_late is None:
            return
        try:
            self._on_late(
                request.subscription_id,
                [
                    LateChange(
                        request.revision,
                        c.entitlement_key,
                        c.requested_time.ToDatetime(tzinfo=UTC) if c.HasField("requested_time") else None,
                        c.applied_time.ToDatetime(tzinfo=UTC),
                    )
                    for c in changes
                ],
            )
        except Exception as error:  # the delivery itself succeeded: its outcome must still be recorded
            log.warning(
                "late changes not recorded",
                extra={"subscription_id": request.subscription_id, "error": str(error).splitlines()[0]},
            )

    def _timeout(self) -> float:
        return self.deadline.total_seconds()

    def close(self) -> None:
        if self._owns_channel:
            self._channel.close()


def _batch_outcomes(response: grant_service_pb2.ApplySubscriptionsResponse, sent: int) -> list[DeliveryOutcome]:
    if len(response.results) != sent:
        detail = f"unexpected reply from the grant service: {len(response.results)} results for {sent} requests"
        return [DeliveryOutcome.retry(detail, "OK")] * sent
    return [
        classify_rejection(r.rejection) if r.HasField("rejection") else _outcome(r.outcome, r.current_revision)
        for r in response.results
    ]


def log_clamped(
    request: grant_service_pb2.ApplySubscriptionRequest, changes: Sequence[grant_service_pb2.ClampedChange]
) -> None:
    """Log each change the grant service applied at its "now" instead of the requested (earlier) time,
    e.g. an IMMEDIATELY amendment delivered a few ms late. Nothing else is to be done: it was applied."""
    for change in changes:
        log.info(
            "late change applied from the grant service's now",
            extra={
                "subscription_id": request.subscription_id,
                "revision": request.revision,
                "entitlement_key": change.entitlement_key or "(end_time)",
                "requested_time": change.requested_time.ToJsonString() if change.HasField("requested_time") else "",
                "applied_time": change.applied_time.ToJsonString(),
            },
        )


def _unparsable(kind: str, error: DecodeError) -> DeliveryOutcome:
    return DeliveryOutcome.parked(f"payload of kind {kind!r} does not parse: {error}")


def _outcome(outcome: int, current_revision: int) -> DeliveryOutcome:
    name = (
        grant_service_pb2.ApplyOutcome.Name(outcome)
        if outcome in grant_service_pb2.ApplyOutcome.values()
        else str(outcome)
    )
    detail = f"{name.removeprefix('APPLY_OUTCOME_')} current_revision={current_revision}"
    if outcome == grant_service_pb2.APPLY_OUTCOME_STALE:
        return DeliveryOutcome.delivered(detail, held_revision=current_revision)
    if outcome in DELIVERED_OUTCOMES:
        return DeliveryOutcome.delivered(detail)
    return DeliveryOutcome.retry(f"unexpected reply from the grant service: {detail}", "OK")
