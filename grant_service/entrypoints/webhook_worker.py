"""Wiring of the webhook dispatcher into the grant process (used by `app.build`; its settings:
`WebhookSettings`): its own HTTP client and threads; the database engine is the process's."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import Engine

from credit_common.clock import Clock
from credit_common.db.engine import session_factories
from grant_service.adapters.webhook_http import HttpWebhookSender
from grant_service.adapters.webhooks import SqlWebhookQueue
from grant_service.entrypoints.event_json import event_body
from grant_service.entrypoints.settings import WebhookSettings
from grant_service.service_layer.unit_of_work import UnitsOfWork
from grant_service.service_layer.webhook_dispatcher import WebhookDispatcher
from grant_service.service_layer.webhooks import fan_out


def webhook_dispatcher(
    engine: Engine, uows: UnitsOfWork, clock: Clock, settings: WebhookSettings
) -> tuple[WebhookDispatcher, HttpWebhookSender]:
    """A dispatcher (not started) over the process's database and a sender of its own."""
    sender = HttpWebhookSender(
        settings.policy,
        connect_timeout_s=settings.connect_timeout_s,
        timeout_s=settings.timeout_s,
        max_connections=max(settings.workers, 1) * 2,
    )
    dispatcher = WebhookDispatcher(
        SqlWebhookQueue(session_factories(engine)),
        sender,
        clock=clock,
        fan_out=lambda now: fan_out(uows, now, event_body),
        lanes=max(settings.workers, 1),
        batch=settings.batch_size,
        lease=timedelta(seconds=settings.lease_s),
        poll_interval=timedelta(seconds=settings.poll_interval_s),
        disable_after=settings.disable_after,
    )
    return dispatcher, sender
