"""Wiring of the outbox dispatcher into the catalog process (used by
`catalog_service.entrypoints.app.build`).

The flags of the handoff to the grant service, each with the variable
CATALOG_<FLAG>: `--grant-service-address`, `--grant-deadline-ms` (one address
and one deadline for every call the catalog makes to the grant service),
`--outbox-poll-interval-ms`, `--outbox-batch-size`, `--outbox-send-batch-size`, `--outbox-backoff-base-ms`,
`--outbox-backoff-cap-ms`, `--outbox-lease-s`.

The worker reuses the process's one channel to the grant service (owned by
`GrantServiceClient`); stopping the worker stops the dispatcher, the channel is
closed by its owner.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta

import grpc
from sqlalchemy import Engine, Table

from catalog_service.adapters.grant_client import GrantTls
from catalog_service.adapters.grant_delivery import APPLY_BATCH_MAX, GrantDelivery
from catalog_service.adapters.outbox_sql import SqlOutboxRepository
from catalog_service.domain.backoff import BackoffPolicy
from catalog_service.service_layer.dispatcher import DEFAULT_BATCH_SIZE, DEFAULT_SEND_BATCH_SIZE, Dispatcher
from credit_common.clock import Clock
from credit_common.config import env_flag, readable_file
from credit_common.db.engine import session_factories

DEFAULT_GRANT_SERVICE_ADDRESS = "127.0.0.1:50052"


def add_outbox_arguments(
    parser: argparse.ArgumentParser, env: Callable[[str, str | None], str | None]
) -> Callable[[argparse.Namespace], object]:
    """The flags of the handoff; returns their check (credit_common.config.parse_service_args runs it)."""
    group = parser.add_argument_group("handoff to the grant service")
    group.add_argument(
        "--grant-service-address",
        default=env("GRANT_SERVICE_ADDRESS", DEFAULT_GRANT_SERVICE_ADDRESS),
        help=f"host:port of the grant service (default {DEFAULT_GRANT_SERVICE_ADDRESS})",
    )
    group.add_argument(
        "--grant-service-api-key",
        default=env("GRANT_SERVICE_API_KEY", None),
        help="the catalog's API key of the grant service (a key with the role sync, created with "
        "`python -m grant_service keys create --role sync`); prefer the variable to the flag, which "
        "other users of the machine can see. Without it the calls carry no key (a grant service with "
        "--auth off)",
    )
    group.add_argument(
        "--grant-deadline-ms",
        type=int,
        default=int(env("GRANT_DEADLINE_MS", "5000") or "5000"),
        help="deadline of each call to the grant service: deliveries and test clock reads (default 5000)",
    )
    group.add_argument(
        "--grant-tls",
        action="store_true",
        default=env_flag(env("GRANT_TLS", "false")),
        help="reach the grant service over TLS (implied by --grant-tls-ca; default plaintext)",
    )
    group.add_argument(
        "--grant-tls-ca",
        type=readable_file,
        default=env("GRANT_TLS_CA", None),
        help="PEM file of the CA(s) that sign the grant service's certificate (default: the system's roots)",
    )
    group.add_argument(
        "--grant-tls-cert",
        type=readable_file,
        default=env("GRANT_TLS_CERT", None),
        help="PEM file of the catalog's client certificate chain, for a grant service that requires mTLS",
    )
    group.add_argument(
        "--grant-tls-key",
        type=readable_file,
        default=env("GRANT_TLS_KEY", None),
        help="PEM file of the key of --grant-tls-cert",
    )
    group.add_argument(
        "--grant-tls-server-name",
        default=env("GRANT_TLS_SERVER_NAME", None),
        help="name expected in the grant service's certificate (default: the host of --grant-service-address)",
    )
    group.add_argument(
        "--outbox-poll-interval-ms",
        type=int,
        default=int(env("OUTBOX_POLL_INTERVAL_MS", "200") or "200"),
        help="how often the dispatcher looks for due deliveries (default 200; a commit that queues one "
        "wakes it at once)",
    )
    group.add_argument(
        "--outbox-batch-size",
        type=int,
        default=int(env("OUTBOX_BATCH_SIZE", str(DEFAULT_BATCH_SIZE)) or DEFAULT_BATCH_SIZE),
        help=f"deliveries claimed per pass (default {DEFAULT_BATCH_SIZE})",
    )
    group.add_argument(
        "--outbox-send-batch-size",
        type=int,
        default=int(env("OUTBOX_SEND_BATCH_SIZE", str(DEFAULT_SEND_BATCH_SIZE)) or DEFAULT_SEND_BATCH_SIZE),
        help="subscription revisions per ApplySubscriptions call to the grant service "
        f"(default {DEFAULT_SEND_BATCH_SIZE}, at most {APPLY_BATCH_MAX})",
    )
    group.add_argument(
        "--outbox-backoff-base-ms",
        type=int,
        default=int(env("OUTBOX_BACKOFF_BASE_MS", "500") or "500"),
        help="retry backoff after the first failed attempt; doubles per attempt, with full jitter (default 500)",
    )
    group.add_argument(
        "--outbox-backoff-cap-ms",
        type=int,
        default=int(env("OUTBOX_BACKOFF_CAP_MS", "60000") or "60000"),
        help="longest retry backoff (default 60000)",
    )
    group.add_argument(
        "--outbox-lease-s",
        type=int,
        default=int(env("OUTBOX_LEASE_S", "60") or "60"),
        help="seconds a claimed delivery stays reserved to one dispatcher (default 60)",
    )
    return grant_tls_from_args


def grant_tls_from_args(args: argparse.Namespace) -> GrantTls:
    """The TLS of the channel to the grant service, from the flags: any of them turns TLS on."""
    return GrantTls(
        enabled=bool(args.grant_tls or args.grant_tls_ca or args.grant_tls_cert or args.grant_tls_server_name),
        ca_file=args.grant_tls_ca,
        cert_file=args.grant_tls_cert,
        key_file=args.grant_tls_key,
        server_name=args.grant_tls_server_name or None,
    )


@dataclass
class OutboxWorker:
    """A running dispatcher and its delivery client; `stop()` stops the dispatcher."""

    dispatcher: Dispatcher
    delivery: GrantDelivery
    repository: SqlOutboxRepository

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
    poll_interval: timedelta = timedelta(milliseconds=200),
    batch_size: int = DEFAULT_BATCH_SIZE,
    send_batch_size: int = DEFAULT_SEND_BATCH_SIZE,
    lease: timedelta = timedelta(seconds=60),
    backoff: BackoffPolicy | None = None,
) -> OutboxWorker:
    if not 1 <= send_batch_size <= APPLY_BATCH_MAX:
        raise ValueError(f"the send batch size must be 1 to {APPLY_BATCH_MAX}, got {send_batch_size}")
    repository = SqlOutboxRepository(session_factories(engine), table)
    delivery = GrantDelivery(channel=channel, deadline=deadline)
    dispatcher = Dispatcher(
        repository,
        delivery,
        clock=clock,
        batch_size=batch_size,
        send_batch_size=send_batch_size,
        lease=lease,
        poll_interval=poll_interval,
        backoff=backoff,
    )
    dispatcher.start()
    return OutboxWorker(dispatcher, delivery, repository)


def start_outbox_worker_from_args(
    args: argparse.Namespace, engine: Engine, table: Table, clock: Clock, channel: grpc.Channel
) -> OutboxWorker:
    return start_outbox_worker(
        engine,
        table,
        clock,
        channel=channel,
        deadline=timedelta(milliseconds=args.grant_deadline_ms),
        poll_interval=timedelta(milliseconds=args.outbox_poll_interval_ms),
        batch_size=args.outbox_batch_size,
        send_batch_size=args.outbox_send_batch_size,
        lease=timedelta(seconds=args.outbox_lease_s),
        backoff=BackoffPolicy(
            base=timedelta(milliseconds=args.outbox_backoff_base_ms),
            cap=timedelta(milliseconds=args.outbox_backoff_cap_ms),
        ),
    )
