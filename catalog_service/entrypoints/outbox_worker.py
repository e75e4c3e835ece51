"""Wiring of the outbox dispatcher into the catalog process (used by
`catalog_service.entrypoints.app.build`; its settings: `OutboxSettings` in
catalog_service.entrypoints.settings).

The worker reuses the process's one channel to the grant service (owned by
`GrantServiceClient`); stopping the worker stops the dispatcher, the channel is
closed by its owner.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

import grpc
from sqlalchemy import Engine, Table

from catalog_service.adapters.grant_delivery import GrantDelivery
from catalog_service.adapters.late_changes import LateChangeRecorder
from catalog_service.adapters.outbox_sql import SqlOutboxRepository
from catalog_service.entrypoints.settings import OutboxSettings
from catalog_service.service_layer.dispatcher import Dispatcher
from credit_common.clock import Clock
from credit_common.db.engine import session_factories
from credit_common.delivery.leases import Backlog


@dataclass
class OutboxWorker:
    """A running dispatcher and its delivery client; `stop()` stops the dispatcher."""

    dispatcher: Dispatcher
    delivery: GrantDelivery
    repository: SqlOutboxRepository
    clock: Clock

    def backlog(self) -> Backlog:
        """Deliveries due now and the lag of the oldest (for metrics)."""
        return self.repository.backlog(self.clock.now())

    def nudge(self) -> None:
        self.dispatcher.nudge()

    def stop(self) -> None:
        self.dispatcher.stop()
        self.delivery.close()  # a no-op for a shared channel: its owner closes it


def start_outbox_worker(
    engine: Engine,
    table: Table,
    clock: Clock,
    *,
    channel: grpc.Channel,
    deadline: timedelta = timedelta(seconds=5),
    settings: OutboxSettings,
) -> OutboxWorker:
    """Start a dispatcher of `table`'s deliveries over `channel`, each call with `deadline`."""
    sessions = session_factories(engine)
    repository = SqlOutboxRepository(sessions, table)
    late = LateChangeRecorder(sessions)
    delivery = GrantDelivery(channel=channel, deadline=deadline, on_late=late.record)
    dispatcher = Dispatcher(
        repository,
        delivery,
        clock=clock,
        batch_size=settings.batch_size,
        send_batch_size=settings.send_batch_size,
        lease=settings.lease,
        poll_interval=settings.poll_interval,
        backoff=settings.backoff,
        backlog=lambda: repository.backlog(clock.now()),
    )
    dispatcher.start()
    return OutboxWorker(dispatcher, delivery, repository, clock)
