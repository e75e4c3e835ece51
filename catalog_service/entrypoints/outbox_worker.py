"""Wiring of the outbox dispatcher into the catalog process.

In `catalog_service.entrypoints.app`:

    build.add_arguments = add_outbox_arguments          # flags, chained with any others
    ...
    worker = start_outbox_worker_from_args(settings.extra, engine, OutboxDelivery.__table__, clock)
    running.on_stop.append(worker.stop)                  # runs after server.stop(grace)
    # pass worker.nudge to the service layer: call it after each commit that queued a delivery

Every flag has the variable CATALOG_<FLAG> (e.g. CATALOG_GRANT_TARGET).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import Engine, Table

from catalog_service.adapters.grant_delivery import GrantDelivery
from catalog_service.adapters.outbox_sql import SqlOutboxRepository
from catalog_service.service_layer.dispatcher import Dispatcher
from credit_common.clock import Clock
from credit_common.db.engine import session_factories


def add_outbox_arguments(parser: argparse.ArgumentParser, env: Callable[[str, str | None], str | None]) -> None:
    group = parser.add_argument_group("handoff to the grant service")
    group.add_argument(
        "--grant-target",
        default=env("GRANT_TARGET", "127.0.0.1:50052"),
        help="host:port of the grant service (default 127.0.0.1:50052)",
    )
    group.add_argument(
        "--grant-deadline-ms",
        type=int,
        default=int(env("GRANT_DEADLINE_MS", "5000") or "5000"),
        help="deadline of each call to the grant service (default 5000)",
    )
    group.add_argument(
        "--outbox-poll-interval-ms",
        type=int,
        default=int(env("OUTBOX_POLL_INTERVAL_MS", "200") or "200"),
        help="how often the dispatcher looks for due deliveries (default 200)",
    )
    group.add_argument(
        "--outbox-batch-size",
        type=int,
        default=int(env("OUTBOX_BATCH_SIZE", "20") or "20"),
        help="deliveries claimed per pass (default 20)",
    )
    group.add_argument(
        "--outbox-lease-s",
        type=int,
        default=int(env("OUTBOX_LEASE_S", "60") or "60"),
        help="seconds a claimed delivery stays reserved to one dispatcher (default 60)",
    )


@dataclass
class OutboxWorker:
    """A running dispatcher and its client; `stop()` stops both."""

    dispatcher: Dispatcher
    delivery: GrantDelivery
    repository: SqlOutboxRepository

    def nudge(self) -> None:
        self.dispatcher.nudge()

    def stop(self) -> None:
        self.dispatcher.stop()
        self.delivery.close()


def start_outbox_worker(
    engine: Engine,
    table: Table,
    clock: Clock,
    *,
    grant_target: str,
    deadline: timedelta = timedelta(seconds=5),
    poll_interval: timedelta = timedelta(milliseconds=200),
    batch_size: int = 20,
    lease: timedelta = timedelta(seconds=60),
) -> OutboxWorker:
    repository = SqlOutboxRepository(session_factories(engine), table)
    delivery = GrantDelivery(grant_target, deadline=deadline)
    try:
        dispatcher = Dispatcher(
            repository,
            delivery,
            clock=clock,
            batch_size=batch_size,
            lease=lease,
            poll_interval=poll_interval,
        )
        dispatcher.start()
    except Exception:
        delivery.close()
        raise
    return OutboxWorker(dispatcher, delivery, repository)


def start_outbox_worker_from_args(args: argparse.Namespace, engine: Engine, table: Table, clock: Clock) -> OutboxWorker:
    return start_outbox_worker(
        engine,
        table,
        clock,
        grant_target=args.grant_target,
        deadline=timedelta(milliseconds=args.grant_deadline_ms),
        poll_interval=timedelta(milliseconds=args.outbox_poll_interval_ms),
        batch_size=args.outbox_batch_size,
        lease=timedelta(seconds=args.outbox_lease_s),
    )
