"""Wiring of the webhook dispatcher into the grant process (used by `app.build`; its settings:
`WebhookSettings`): its own HTTP client and threads; the database engine is the process's."""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import timedelta

from sqlalchemy import Engine

from credit_common.clock import Clock
from credit_common.db.engine import session_factories
from grant_service.adapters.webhook_http import HttpWebhookSender
from grant_service.adapters.webhooks import SqlWebhookQueue
from grant_service.entrypoints.event_json import event_body
from grant_service.entrypoints.settings import WebhookSettings
from grant_service.service_layer.unit_of_work import Transactions
from grant_service.service_layer.webhook_dispatcher import WebhookDispatcher
from grant_service.service_layer.webhooks import fan_out


def webhook_dispatcher(
    engine: Engine, transactions: Transactions, clock: Clock, settings: WebhookSettings
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
        fan_out=lambda now: fan_out(transactions, now, event_body),
        lanes=max(settings.workers, 1),
        batch=settings.batch_size,
        lease=timedelta(seconds=settings.lease_s),
        poll_interval=timedelta(seconds=settings.poll_interval_s),
        disable_after=settings.disable_after,
    )
    return dispatcher, sender


# The least time between two nudges: commits that write events come tens to hundreds a second under
# load (a renewal storm's batches, debits), and a pass per commit (two reads) cost a storm about 4%
# of its rate (docs/performance.md); the commits of one gap are fanned out by one pass.
NUDGE_GAP = timedelta(milliseconds=100)


def wake_on_events(
    transactions: Transactions, dispatcher: WebhookDispatcher, gap: timedelta = NUDGE_GAP
) -> Callable[[], None]:
    """Nudge the dispatcher when transactions that wrote events commit (this process's, and on
    PostgreSQL every process's, through the event listener), at most once per `gap`, so a webhook
    leaves within about `gap` of its event's commit rather than at the next poll. Returns the
    function that stops it."""
    stopping = threading.Event()

    def run() -> None:
        generation = transactions.event_generation()
        while not stopping.is_set():
            transactions.wait_for_events(generation, 1.0)
            current = transactions.event_generation()
            if current != generation:
                generation = current
                dispatcher.nudge()
                stopping.wait(gap.total_seconds())  # what commits meanwhile: the next nudge

    thread = threading.Thread(target=run, name="webhook-wakeup", daemon=True)
    thread.start()

    def stop() -> None:
        stopping.set()
        thread.join(2.0)

    return stop
