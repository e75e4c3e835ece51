"""Conversions of the webhook methods' requests and responses (webhooks.proto): each request's
fields checked, every problem reported at once."""

from __future__ import annotations

from datetime import datetime, timedelta

from google.protobuf import duration_pb2

from credit_common.errors import Violations
from credit_common.fields import REQUIRED, check_id, check_items, check_length, check_request_id
from credit_common.grpc.timestamps import to_timestamp
from credit_common.pagination import PageRequest, page_request
from grant_service.domain.events import EventType
from grant_service.domain.webhooks import EVENT_TYPES_MAX, DeliveryAttempt, DisabledReason, Trigger, WebhookEndpoint
from grant_service.service_layer.webhooks import EndpointChanges
from grant_service.v1 import grant_service_pb2 as pb
from grant_service.v1 import webhooks_pb2 as wpb

_SERVICE = pb.DESCRIPTOR.services_by_name["GrantService"].full_name
_LIST_ENDPOINTS = f"/{_SERVICE}/ListWebhookEndpoints"
_LIST_ATTEMPTS = f"/{_SERVICE}/ListWebhookDeliveryAttempts"
_TYPE_PREFIX = "CREDIT_EVENT_TYPE_"
UPDATABLE = ("url", "event_types", "description", "enabled")

DISABLED_PB = {
    DisabledReason.NONE: wpb.WEBHOOK_DISABLED_REASON_UNSPECIFIED,
    DisabledReason.BY_CALLER: wpb.WEBHOOK_DISABLED_REASON_BY_CALLER,
    DisabledReason.FAILING: wpb.WEBHOOK_DISABLED_REASON_FAILING,
}
TRIGGER_PB = {
    Trigger.EVENT: wpb.WEBHOOK_DELIVERY_TRIGGER_EVENT,
    Trigger.RESEND: wpb.WEBHOOK_DELIVERY_TRIGGER_RESEND,
    Trigger.REPLAY: wpb.WEBHOOK_DELIVERY_TRIGGER_REPLAY,
}


def event_types(violations: Violations, names, path: str) -> tuple[EventType, ...]:
    """The event types named (CreditEventType names), one violation per unknown name."""
    types = []
    if not check_items(names, path, violations, at_most=EVENT_TYPES_MAX, required=False):
        return ()
    for i, name in enumerate(names):
        try:
            if not name.startswith(_TYPE_PREFIX) or name == f"{_TYPE_PREFIX}UNSPECIFIED":
                raise ValueError
            types.append(EventType(name.removeprefix(_TYPE_PREFIX)))
        except ValueError:
            violations.add(
                f"{path}[{i}]",
                f"{name[:80]!r} is not an event type: use a CreditEventType name such as "
                "CREDIT_EVENT_TYPE_CREDITS_GRANTED",
                "UNKNOWN_EVENT_TYPE",
            )
    return tuple(types)


def _request_id(violations: Violations, value: str) -> None:
    check_request_id(value, "request_id", violations)


def _endpoint_id(violations: Violations, value: str, path: str = "endpoint_id") -> str:
    check_id(value, path, violations, 40)
    return value


def _done(violations: Violations) -> None:
    violations.raise_if_any()


def create_args(request: wpb.CreateWebhookEndpointRequest) -> tuple[EventType, ...]:
    violations = Violations()
    types = event_types(violations, request.event_types, "event_types")
    _request_id(violations, request.request_id)
    _done(violations)
    return types


def check_endpoint_id(request) -> None:
    violations = Violations()
    _endpoint_id(violations, request.endpoint_id)
    _done(violations)


def update_changes(request: wpb.UpdateWebhookEndpointRequest) -> EndpointChanges:
    violations = Violations()
    _endpoint_id(violations, request.endpoint.endpoint_id, "endpoint.endpoint_id")
    paths = list(request.update_mask.paths)
    if not paths:
        violations.add("update_mask", f"is required: name the fields to change ({', '.join(UPDATABLE)})", REQUIRED)
    for path in paths:
        if path not in UPDATABLE:
            violations.add(
                "update_mask", f"{path[:80]!r} cannot be changed: use {', '.join(UPDATABLE)}", "UNKNOWN_FIELD"
            )
    endpoint = request.endpoint
    types = event_types(violations, endpoint.event_types, "endpoint.event_types") if "event_types" in paths else None
    _done(violations)
    return EndpointChanges(
        url=endpoint.url if "url" in paths else None,
        event_types=types,
        description=endpoint.description if "description" in paths else None,
        enabled=endpoint.enabled if "enabled" in paths else None,
    )


def rotate_ttl(request: wpb.RotateWebhookSecretRequest) -> timedelta | None:
    violations = Violations()
    _endpoint_id(violations, request.endpoint_id)
    _request_id(violations, request.request_id)
    ttl = None
    if request.HasField("previous_secret_ttl"):
        d = request.previous_secret_ttl
        if d.seconds < 0 or d.nanos < 0 or d.seconds > 7 * 86400:
            violations.add("previous_secret_ttl", "must be between 0 and 7 days", "OUT_OF_RANGE")
        else:
            ttl = timedelta(seconds=d.seconds, microseconds=d.nanos // 1000)
    _done(violations)
    return ttl


def attempts_page(request: wpb.ListWebhookDeliveryAttemptsRequest) -> PageRequest:
    violations = Violations()
    if not request.endpoint_id and not request.event_id:
        violations.add("endpoint_id", "endpoint_id or event_id is required", REQUIRED)
    for field, value in (("endpoint_id", request.endpoint_id), ("event_id", request.event_id)):
        check_length(value, field, violations, 64)
    _done(violations)
    return page_request(
        request.page_size,
        request.page_token,
        (request.endpoint_id, request.event_id),
        method=_LIST_ATTEMPTS,
        key=(datetime, str),
    )


def endpoints_page(request: wpb.ListWebhookEndpointsRequest) -> PageRequest:
    return page_request(request.page_size, request.page_token, method=_LIST_ENDPOINTS, key=(datetime, str))


def check_resend(request: wpb.ResendWebhookEventRequest) -> None:
    violations = Violations()
    _endpoint_id(violations, request.endpoint_id)
    check_id(request.event_id, "event_id", violations, 64)
    _request_id(violations, request.request_id)
    _done(violations)


def check_replay(request: wpb.ReplayWebhookEventsRequest) -> None:
    violations = Violations()
    _endpoint_id(violations, request.endpoint_id)
    if request.max_events < 0:
        violations.add("max_events", "must not be negative (0: the default, 1000)", "OUT_OF_RANGE")
    _request_id(violations, request.request_id)
    _done(violations)


def endpoint_pb(endpoint: WebhookEndpoint) -> wpb.WebhookEndpoint:
    return wpb.WebhookEndpoint(
        endpoint_id=endpoint.endpoint_id,
        url=endpoint.url,
        event_types=[f"{_TYPE_PREFIX}{t}" for t in endpoint.event_types],
        description=endpoint.description,
        enabled=endpoint.enabled,
        disabled_reason=DISABLED_PB[endpoint.disabled_reason],
        create_time=to_timestamp(endpoint.create_time),
        update_time=to_timestamp(endpoint.update_time),
        failing_since=to_timestamp(endpoint.failing_since),
        previous_secret_expire_time=to_timestamp(endpoint.previous_secret_expire_time),
    )


def attempt_pb(attempt: DeliveryAttempt) -> wpb.WebhookDeliveryAttempt:
    duration = duration_pb2.Duration()
    duration.FromTimedelta(attempt.duration)
    return wpb.WebhookDeliveryAttempt(
        attempt_id=attempt.attempt_id,
        endpoint_id=attempt.endpoint_id,
        event_id=attempt.event_id,
        attempt=attempt.attempt,
        attempt_time=to_timestamp(attempt.attempt_time),
        duration=duration,
        http_status=attempt.http_status,
        error=attempt.error,
        next_attempt_time=to_timestamp(attempt.next_attempt_time),
        trigger=TRIGGER_PB[attempt.trigger],
    )
