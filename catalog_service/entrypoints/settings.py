"""The catalog service's settings: the common ones (credit_common.config) and its own, typed: how it
reaches the grant service and how its outbox dispatcher works. Made of the command line and the
CATALOG_<FLAG> variables in one place, `catalog_settings`.

One address and one deadline serve every call the catalog makes to the grant service: deliveries
and test clock reads.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from datetime import timedelta

from catalog_service.adapters.grant_client import GrantTls
from catalog_service.adapters.grant_delivery import APPLY_BATCH_MAX
from catalog_service.service_layer.dispatcher import DEFAULT_BATCH_SIZE, DEFAULT_SEND_BATCH_SIZE
from credit_common.backoff import BackoffPolicy
from credit_common.config import Env, ServiceFlags, ServiceSettings, env_flag, readable_file

DEFAULT_GRANT_SERVICE_ADDRESS = "127.0.0.1:50052"


@dataclass(frozen=True)
class GrantServiceSettings:
    """How the catalog reaches the grant service."""

    address: str = DEFAULT_GRANT_SERVICE_ADDRESS  # host:port
    deadline: timedelta = timedelta(seconds=5)  # of every call
    tls: GrantTls = field(default_factory=GrantTls)
    api_key: str | None = None  # a key with the role sync; None: the calls carry no key

    def __post_init__(self) -> None:
        if self.deadline <= timedelta(0):
            raise ValueError("--grant-deadline-ms must be at least 1")


@dataclass(frozen=True)
class OutboxSettings:
    """How the outbox dispatcher claims, sends and retries deliveries."""

    poll_interval: timedelta = timedelta(milliseconds=200)  # a commit that queues a delivery wakes it at once
    batch_size: int = DEFAULT_BATCH_SIZE  # deliveries claimed per pass
    send_batch_size: int = DEFAULT_SEND_BATCH_SIZE  # subscription revisions per ApplySubscriptions call
    lease: timedelta = timedelta(seconds=60)  # a claimed delivery stays reserved to one dispatcher this long
    backoff: BackoffPolicy = field(default_factory=BackoffPolicy)

    def __post_init__(self) -> None:
        if self.poll_interval <= timedelta(0):
            raise ValueError("--outbox-poll-interval-ms must be at least 1")
        if self.batch_size < 1:
            raise ValueError("--outbox-batch-size must be at least 1")
        if not 1 <= self.send_batch_size <= APPLY_BATCH_MAX:
            raise ValueError(f"--outbox-send-batch-size must be 1 to {APPLY_BATCH_MAX}, got {self.send_batch_size}")
        if self.lease <= timedelta(0):
            raise ValueError("--outbox-lease-s must be at least 1")


@dataclass(frozen=True, kw_only=True)
class CatalogSettings(ServiceSettings):
    grant_service: GrantServiceSettings
    outbox: OutboxSettings


def add_arguments(parser: argparse.ArgumentParser, env: Env) -> None:
    """The catalog's own flags, those of the handoff to the grant service (each also CATALOG_<FLAG>)."""
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


def catalog_settings(common: ServiceSettings, args: argparse.Namespace) -> CatalogSettings:
    """The catalog's settings of the common ones and its parsed flags (ValueError: refused). Any of the
    --grant-tls* flags turns TLS to the grant service on."""
    tls = GrantTls(
        enabled=bool(args.grant_tls or args.grant_tls_ca or args.grant_tls_cert or args.grant_tls_server_name),
        ca_file=args.grant_tls_ca,
        cert_file=args.grant_tls_cert,
        key_file=args.grant_tls_key,
        server_name=args.grant_tls_server_name or None,
    )
    return common.extended(
        CatalogSettings,
        grant_service=GrantServiceSettings(
            address=args.grant_service_address,
            deadline=timedelta(milliseconds=args.grant_deadline_ms),
            tls=tls,
            api_key=args.grant_service_api_key or None,
        ),
        outbox=OutboxSettings(
            poll_interval=timedelta(milliseconds=args.outbox_poll_interval_ms),
            batch_size=args.outbox_batch_size,
            send_batch_size=args.outbox_send_batch_size,
            lease=timedelta(seconds=args.outbox_lease_s),
            backoff=BackoffPolicy(
                base=timedelta(milliseconds=args.outbox_backoff_base_ms),
                cap=timedelta(milliseconds=args.outbox_backoff_cap_ms),
            ),
        ),
    )


FLAGS = ServiceFlags(add=add_arguments, settings=catalog_settings)
