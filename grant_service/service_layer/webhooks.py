"""Webhook endpoints (create, read, change, rotate their secret, delete), the attempts made, resend
and replay, and the fan-out that queues each new event of the log for the endpoints that want it.
Delivery itself is the dispatcher's (webhook_dispatcher.py)."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from credit_common.errors import FieldViolation, InvalidArgument, NotFound, Violations, not_found
from credit_common.fields import check_text
from credit_common.idempotency import fingerprint, remember, replay
from credit_common.ids import new_id
from credit_common.pagination import PageRequest
from grant_service.domain.events import EventPosition, EventType, StoredEvent
from grant_service.domain.webhooks import (
    DEFAULT_PREVIOUS_SECRET_TTL,
    DESCRIPTION_MAX_LENGTH,
    MAX_PREVIOUS_SECRET_TTL,
    DeliveryAttempt,
    DisabledReason,
    NewDelivery,
    Trigger,
    UrlPolicy,
    WebhookEndpoint,
    new_secret,
)
from grant_service.service_layer.context import GrantContext
from grant_service.service_layer.unit_of_work import GrantUnitOfWork, Transactions

log = logging.getLogger("grant_service.webhooks")

# An event as a webhook body (the canonical JSON of its CreditEvent), given the log's id.
EventBody = Callable[[StoredEvent, str], bytes]

REPLAY_MAX = 1000
FAN_OUT_BATCH = 500


def endpoint_not_found(endpoint_id: str) -> NotFound:
    return not_found("webhook endpoint", endpoint_id, "WEBHOOK_ENDPOINT_NOT_FOUND", key_name="endpoint_id")


def check_endpoint_fields(
    policy: UrlPolicy, url: str | None, description: str | None, prefix: str = ""
) -> list[FieldViolation]:
    violations = Violations()
    if url is not None:
        violations.extend(FieldViolation(f"{prefix}url", p.description, p.reason) for p in policy.problems(url))
    if description is not None:
        check_text(description, f"{prefix}description", violations, DESCRIPTION_MAX_LENGTH)
    return list(violations)


def _raise(violations: Sequence[FieldViolation]) -> None:
    if violations:
        raise InvalidArgument("the request has invalid fields", violations=violations)


def _get(uow: GrantUnitOfWork, endpoint_id: str, *, for_update: bool = False) -> WebhookEndpoint:
    endpoint = uow.webhooks.get(endpoint_id, for_update=for_update)
    if endpoint is None:
        raise endpoint_not_found(endpoint_id)
    return endpoint


def create_endpoint(
    ctx: GrantContext, url: str, event_types: Sequence[EventType], description: str, request_id: str
) -> tuple[WebhookEndpoint, str]:
    _raise(check_endpoint_fields(ctx.webhook_policy, url, description))
    types = tuple(dict.fromkeys(t.value for t in event_types))
    print_ = fingerprint(url, types, description)

    def work(uow: GrantUnitOfWork) -> tuple[WebhookEndpoint, str]:
        seen = replay(uow.request_ids, "CreateWebhookEndpoint", request_id, print_)
        if seen is not None:
            endpoint = _get(uow, seen)
            return endpoint, endpoint.secret
        now = ctx.clock.now()
        endpoint = WebhookEndpoint(
            endpoint_id=new_id("whe"),
            url=url,
            event_types=types,
            description=description,
            disabled_reason=DisabledReason.NONE,
            secret=new_secret(),
            previous_secret=None,
            previous_secret_expire_time=None,
            create_time=now,
            update_time=now,
        )
        uow.webhooks.add(endpoint)
        remember(uow.request_ids, "CreateWebhookEndpoint", request_id, print_, endpoint.endpoint_id, now)
        return endpoint, endpoint.secret

    return ctx.transactions.write(work)


def get_endpoint(ctx: GrantContext, endpoint_id: str) -> WebhookEndpoint:
    return ctx.transactions.read(lambda uow: _get(uow, endpoint_id))


def list_endpoints(ctx: GrantContext, page: PageRequest) -> tuple[list[WebhookEndpoint], str]:
    endpoints = ctx.transactions.read(lambda uow: uow.webhooks.list(page.after, page.size + 1))
    return page.cut(endpoints, lambda e: (e.create_time, e.endpoint_id))


@dataclass(frozen=True)
class EndpointChanges:
    """The fields an update sets (None: unchanged)."""

    url: str | None = None
    event_types: tuple[EventType, ...] | None = None
    description: str | None = None
    enabled: bool | None = None


def update_endpoint(ctx: GrantContext, endpoint_id: str, changes: EndpointChanges) -> WebhookEndpoint:
    _raise(check_endpoint_fields(ctx.webhook_policy, changes.url, changes.description, "endpoint."))

    def work(uow: GrantUnitOfWork) -> WebhookEndpoint:
        endpoint = _get(uow, endpoint_id, for_update=True)
        now = ctx.clock.now()
        updated = replace(
            endpoint,
            url=endpoint.url if changes.url is None else changes.url,
            event_types=endpoint.event_types
            if changes.event_types is None
            else tuple(dict.fromkeys(t.value for t in changes.event_types)),
            description=endpoint.description if changes.description is None else changes.description,
        )
        if changes.enabled is not None:
            updated = _enabled(updated, changes.enabled)
        if updated != endpoint:
            updated = replace(updated, update_time=now)
            uow.webhooks.save(updated)
        return updated

    return ctx.transactions.write(work)


def _enabled(endpoint: WebhookEndpoint, enabled: bool) -> WebhookEndpoint:
    if enabled:
        return replace(endpoint, disabled_reason=DisabledReason.NONE, failing_since=None)
    if endpoint.enabled:
        return replace(endpoint, disabled_reason=DisabledReason.BY_CALLER)
    return endpoint  # already disabled (by a caller, or for failing): keep the reason


def set_enabled(ctx: GrantContext, endpoint_id: str, enabled: bool) -> WebhookEndpoint:
    return update_endpoint(ctx, endpoint_id, EndpointChanges(enabled=enabled))


def delete_endpoint(ctx: GrantContext, endpoint_id: str) -> None:
    def work(uow: GrantUnitOfWork) -> None:
        _get(uow, endpoint_id, for_update=True)
        uow.webhooks.delete(endpoint_id)

    ctx.transactions.write(work)


def rotate_secret(
    ctx: GrantContext, endpoint_id: str, previous_ttl: timedelta | None, request_id: str
) -> tuple[WebhookEndpoint, str]:
    ttl = DEFAULT_PREVIOUS_SECRET_TTL if previous_ttl is None else previous_ttl
    if ttl < timedelta(0) or ttl > MAX_PREVIOUS_SECRET_TTL:
        _raise([FieldViolation("previous_secret_ttl", "must be between 0 and 7 days", "OUT_OF_RANGE")])
    print_ = fingerprint(endpoint_id, ttl)

    def work(uow: GrantUnitOfWork) -> tuple[WebhookEndpoint, str]:
        endpoint = _get(uow, endpoint_id, for_update=True)
        if replay(uow.request_ids, "RotateWebhookSecret", request_id, print_) is not None:
            return endpoint, endpoint.secret
        now = ctx.clock.now()
        rotated = replace(
            endpoint,
            secret=new_secret(),
            previous_secret=endpoint.secret if ttl > timedelta(0) else None,
            previous_secret_expire_time=now + ttl if ttl > timedelta(0) else None,
            update_time=now,
        )
        uow.webhooks.save(rotated)
        remember(uow.request_ids, "RotateWebhookSecret", request_id, print_, endpoint_id, now)
        return rotated, rotated.secret

    return ctx.transactions.write(work)


def list_attempts(
    ctx: GrantContext, endpoint_id: str, event_id: str, page: PageRequest
) -> tuple[list[DeliveryAttempt], str]:
    def work(uow: GrantUnitOfWork) -> list[DeliveryAttempt]:
        if endpoint_id:
            _get(uow, endpoint_id)
        return uow.webhook_deliveries.attempts(endpoint_id, event_id, page.after, page.size + 1)

    attempts = ctx.transactions.read(work)
    return page.cut(attempts, lambda a: (a.attempt_time, a.attempt_id))


def _delivery(
    endpoint_id: str, stored: StoredEvent, body: bytes, trigger: Trigger, key: str, now: datetime
) -> NewDelivery:
    return NewDelivery(
        endpoint_id=endpoint_id,
        event_id=stored.event.event_id,
        event_seq=stored.position.seq,
        event_type=stored.event.type.value,
        body=body,
        trigger=trigger,
        trigger_key=key,
        created_at=now,
    )


def resend_event(ctx: GrantContext, endpoint_id: str, event_id: str, request_id: str) -> str:
    print_ = fingerprint(endpoint_id, event_id)
    body_of = ctx.event_body
    assert body_of is not None, "the wiring sets GrantContext.event_body"

    def work(uow: GrantUnitOfWork) -> str:
        seen = replay(uow.request_ids, "ResendWebhookEvent", request_id, print_)
        if seen is not None:
            return seen
        _get(uow, endpoint_id, for_update=True)
        stored = uow.webhook_deliveries.event(event_id)
        if stored is None:
            raise not_found("event", event_id, "EVENT_NOT_FOUND", key_name="event_id")
        now = ctx.clock.now()
        key = new_id("rsd")
        body = body_of(stored, uow.events.log_id())
        ids = uow.webhook_deliveries.add([_delivery(endpoint_id, stored, body, Trigger.RESEND, key, now)])
        delivery_id = str(ids[0])
        remember(uow.request_ids, "ResendWebhookEvent", request_id, print_, delivery_id, now)
        return delivery_id

    return ctx.transactions.write(work)


@dataclass(frozen=True)
class ReplayResult:
    queued: int
    last: EventPosition | None  # the last event looked at (None: none)
    more: bool


def replay_events(
    ctx: GrantContext, endpoint_id: str, after: EventPosition | None, max_events: int, request_id: str
) -> ReplayResult:
    """Queue for the endpoint the events after `after` it subscribes to, up to `max_events`
    looked at."""
    limit = min(max_events or REPLAY_MAX, REPLAY_MAX)
    print_ = fingerprint(endpoint_id, after.txid if after else None, after.seq if after else None, limit)
    body_of = ctx.event_body
    assert body_of is not None, "the wiring sets GrantContext.event_body"

    def work(uow: GrantUnitOfWork) -> ReplayResult:
        seen = replay(uow.request_ids, "ReplayWebhookEvents", request_id, print_)
        if seen is not None:
            first = json.loads(seen)
            last = EventPosition(*first["last"]) if first["last"] else None
            return ReplayResult(first["queued"], last, first["more"])
        endpoint = _get(uow, endpoint_id, for_update=True)
        events = uow.events.after(after, limit + 1)
        more = len(events) > limit
        events = events[:limit]
        now = ctx.clock.now()
        key = new_id("rpl")
        log_id = uow.events.log_id()
        wanted = [e for e in events if endpoint.wants(e.event.type.value)]
        uow.webhook_deliveries.add(
            [_delivery(endpoint_id, e, body_of(e, log_id), Trigger.REPLAY, key, now) for e in wanted]
        )
        last = events[-1].position if events else after
        result = ReplayResult(len(wanted), last, more)
        record = {"queued": result.queued, "last": [last.txid, last.seq] if last else None, "more": more}
        remember(uow.request_ids, "ReplayWebhookEvents", request_id, print_, json.dumps(record), now)
        return result

    return ctx.transactions.write(work)


def fan_out(
    transactions: Transactions, now: datetime, body_of: EventBody, limit: int = FAN_OUT_BATCH
) -> tuple[int, int]:
    """Queue the events after the fan-out's cursor for every enabled endpoint that wants them (and
    that existed when the event was recorded), and move the cursor; one transaction, one fan-out at
    a time (the cursor's lock). Returns (events read, deliveries queued)."""

    def anything_new(uow: GrantUnitOfWork) -> bool:
        # Without an enabled endpoint nothing is queued and the cursor may wait: an endpoint gets
        # only events recorded after it was created, so the fan-out then skips what it missed.
        if not uow.webhooks.any_enabled():
            return False
        return bool(uow.events.after(uow.webhook_deliveries.cursor(), 1))

    if not transactions.read(anything_new):  # most passes: no write transaction, no lock
        return 0, 0

    def work(uow: GrantUnitOfWork) -> tuple[int, int]:
        position = uow.webhook_deliveries.lock_cursor()
        events = uow.events.after(position, limit)
        if not events:
            return 0, 0
        endpoints = uow.webhooks.enabled()
        deliveries: list[NewDelivery] = []
        if endpoints:
            log_id = uow.events.log_id()
            for stored in events:
                targets = [
                    e for e in endpoints if e.wants(stored.event.type.value) and e.create_time <= stored.recorded_time
                ]
                if not targets:
                    continue
                try:
                    body = body_of(stored, log_id)
                except Exception:  # a bug in the encoding must not stop every later event
                    log.exception(
                        "event not encodable as a webhook body; skipped", extra={"event_id": stored.event.event_id}
                    )
                    continue
                deliveries += [_delivery(e.endpoint_id, stored, body, Trigger.EVENT, "", now) for e in targets]
        uow.webhook_deliveries.add(deliveries)
        uow.webhook_deliveries.set_cursor(events[-1].position)
        return len(events), len(deliveries)

    return transactions.write(work)
