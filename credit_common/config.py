"""Command line and environment configuration shared by both services.

Every flag has an environment variable, `<PREFIX>_<FLAG>` (e.g. CATALOG_LISTEN,
GRANT_DATABASE_URL); a flag given on the command line wins over the variable.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Generic, TypeVar, overload

from credit_common.db.engine import DatabaseSettings


@dataclass(frozen=True)
class TlsSettings:
    """The listener's TLS: a certificate chain and its key (PEM files); with `client_ca_file`, every
    client must present a certificate signed by that CA (mTLS). No certificate: plaintext."""

    cert_file: str | None = None
    key_file: str | None = None
    client_ca_file: str | None = None

    @property
    def enabled(self) -> bool:
        return self.cert_file is not None


@dataclass(frozen=True)
class ServerLimits:
    """What one server process accepts from its clients (see docs/security.md)."""

    max_concurrent_rpcs: int | None = 256  # RPCs in flight at once; past it RESOURCE_EXHAUSTED. None: no limit
    max_connection_idle_s: float = 300.0  # a connection without RPCs this long is closed (GOAWAY)
    max_connection_age_s: float = 3600.0  # a connection is asked to go away at this age (+/- 10% jitter) ...
    max_connection_age_grace_s: float = 30.0  # ... and closed this long after, in-flight RPCs finished or not
    keepalive_time_s: float = 60.0  # the server pings a connection silent this long; no answer in 20 s: closed
    keepalive_min_ping_interval_s: float = 60.0  # clients pinging more often (without data) are sent away
    max_receive_message_bytes: int = 4 * 1024 * 1024
    max_streams: int = 32  # streaming RPCs open at once, on their own threads (credit_common.grpc.streams)
    max_streams_per_caller: int = 8  # ... of them for one API key; every caller without a key counts as one

    def __post_init__(self) -> None:
        if not 1 <= self.max_streams_per_caller <= self.max_streams:
            raise ValueError("--max-streams-per-caller must be between 1 and --max-streams")


@dataclass(frozen=True)
class ServiceSettings:
    command: str  # "serve" or "migrate"
    listen: str
    database: DatabaseSettings
    log_level: str
    shutdown_grace_s: float
    migrate_on_start: bool
    max_workers: int
    cpus: frozenset[int] | None = None  # pin the process to these CPUs; None: wherever the OS puts it
    processes: int = 1  # server processes sharing the port (credit_common.processes)
    process_index: int | None = None  # which of them this one is; None: the only one
    tls: TlsSettings = TlsSettings()
    limits: ServerLimits = ServerLimits()
    auth: bool = True  # every RPC but health and reflection needs an API key with a role that allows it
    auth_cache_ttl: timedelta = timedelta(seconds=5)  # how long a key looked up is trusted (revocation bound)
    reflection: str = "authenticated"  # server reflection: on (open to anyone), authenticated (any valid key), off
    metrics_listen: str | None = None  # host:port of the Prometheus /metrics listener; None: no metrics served

    def extended(self, settings_type: type[SettingsT], **own: object) -> SettingsT:
        """The common fields of these settings in a service's own settings type (a subclass), with its
        own fields `own`."""
        common = {name: getattr(self, name) for name in ServiceSettings.__dataclass_fields__}
        return settings_type(**common, **own)


SettingsT = TypeVar("SettingsT", bound=ServiceSettings)

# env(NAME, default): the value of the variable <PREFIX>_NAME, else `default`.
Env = Callable[[str, str | None], str | None]


@dataclass(frozen=True)
class ServiceFlags(Generic[SettingsT]):
    """A service's own flags: `add` adds them to the parser (their defaults from `env`); `settings`
    makes the service's typed settings of the common settings and the parsed flags, and raises
    ValueError for a value or a combination it refuses (the parser reports it and exits with 2)."""

    add: Callable[[argparse.ArgumentParser, Env], object]
    settings: Callable[[ServiceSettings, argparse.Namespace], SettingsT]


def env_flag(value: str | None) -> bool:
    """A boolean environment variable: 1, true, yes or on (any case) mean true."""
    return (value or "").lower() in ("1", "true", "yes", "on")


def cpu_list(text: str) -> frozenset[int]:
    """A set of CPU numbers written as Linux does (taskset -c, cpuset): "0", "0,2", "2-3", "0-1,4"."""
    cpus: set[int] = set()
    try:
        for part in text.split(","):
            first, dash, last = part.strip().partition("-")
            low = int(first)
            high = int(last) if dash else low
            if low < 0 or high < low:
                raise ValueError
            cpus.update(range(low, high + 1))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a list of CPUs such as 0 or 0,2 or 2-3") from None
    return frozenset(cpus)


def split_address(address: str) -> tuple[str, int]:
    """("host", port) of a listen address: "host:port", "[v6 host]:port"."""
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"{address!r} is not host:port")
    return host.strip("[]"), int(port)


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of at least 1")
    return value


def non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of at least 0")
    return value


def positive_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive number of seconds")
    return value


def readable_file(text: str) -> str | None:
    """A path to a file this process can read (checked now, so that a typo fails at start); "" is None."""
    if not text:
        return None
    try:
        with open(text, "rb"):
            pass
    except OSError as error:
        raise argparse.ArgumentTypeError(f"cannot read {text!r}: {error.strerror}") from None
    return text


def read_file(path: str | None) -> bytes | None:
    """The bytes of a file given by a `readable_file` flag (a PEM certificate or key); None for None."""
    if path is None:
        return None
    with open(path, "rb") as file:
        return file.read()


def _env(prefix: str, name: str, default: str | None) -> str | None:
    return os.environ.get(f"{prefix}_{name}", default)


def on_off(text: str) -> bool:
    value = text.lower()
    if value in ("on", "true", "1", "yes"):
        return True
    if value in ("off", "false", "0", "no"):
        return False
    raise argparse.ArgumentTypeError(f"{text!r} is neither on nor off")


def add_database_url_argument(parser: argparse.ArgumentParser, env: Env, database_file: str) -> None:
    data_dir = os.environ.get("CREDIT_GRANTS_DATA_DIR", "data")
    parser.add_argument(
        "--database-url",
        default=env("DATABASE_URL", f"sqlite:///{os.path.join(data_dir, database_file)}"),
        help="SQLAlchemy URL: sqlite:///path.db (default: under $CREDIT_GRANTS_DATA_DIR, "
        "./data) or postgresql://user:pass@host:5432/db",
    )


@overload
def parse_service_args(
    *,
    service: str,
    env_prefix: str,
    default_port: int,
    database_file: str,
    argv: list[str] | None = None,
    flags: ServiceFlags[SettingsT],
) -> SettingsT: ...


@overload
def parse_service_args(
    *,
    service: str,
    env_prefix: str,
    default_port: int,
    database_file: str,
    argv: list[str] | None = None,
    flags: None = None,
) -> ServiceSettings: ...


def parse_service_args(
    *,
    service: str,
    env_prefix: str,
    default_port: int,
    database_file: str,
    argv: list[str] | None = None,
    flags: ServiceFlags | None = None,
) -> ServiceSettings:
    """The settings of the command line `argv` and the environment: the service's own type (`flags`),
    or the common ServiceSettings. A flag or a combination refused exits with 2 and a usage line."""

    def env(name: str, default: str | None) -> str | None:
        return _env(env_prefix, name, default)

    parser = argparse.ArgumentParser(
        prog=f"python -m {service}",
        description=f"The credit-grants {service}. Every flag can also be set by the environment "
        f"variable {env_prefix}_<FLAG> (e.g. {env_prefix}_DATABASE_URL).",
    )
    parser.add_argument(
        "command",
        nargs="?",
        choices=["serve", "migrate"],
        default="serve",
        help="serve (default): run the server; migrate: upgrade the database schema and exit. "
        f"API keys: `python -m {service} keys --help`",
    )
    parser.add_argument(
        "--listen",
        default=env("LISTEN", f"127.0.0.1:{default_port}"),
        help=f"host:port to listen on (default 127.0.0.1:{default_port}; port 0 picks one)",
    )
    add_database_url_argument(parser, env, database_file)
    parser.add_argument(
        "--db-pool-size",
        type=int,
        default=int(env("DB_POOL_SIZE", "10")),
        help="connections kept open to the database (default 10)",
    )
    parser.add_argument(
        "--db-max-overflow",
        type=int,
        default=int(env("DB_MAX_OVERFLOW", "10")),
        help="extra connections allowed under load (default 10)",
    )
    parser.add_argument(
        "--db-statement-timeout-ms",
        type=int,
        default=int(env("DB_STATEMENT_TIMEOUT_MS", "30000")),
        help="PostgreSQL statement and lock timeout (default 30000)",
    )
    parser.add_argument(
        "--max-workers", type=int, default=int(env("MAX_WORKERS", "16")), help="RPC worker threads (default 16)"
    )
    parser.add_argument(
        "--cpus",
        type=cpu_list,
        default=env("CPUS", None),
        help="pin the process to these CPUs (e.g. 0, or 2-3; default: not pinned). The process runs Python "
        "under one GIL: pinned to one CPU its threads no longer hand the GIL from core to core. With "
        "--processes N, server process i runs on the i-th CPU of the list (see docs/operations.md, Configuration)",
    )
    parser.add_argument(
        "--processes",
        type=positive_int,
        default=env("PROCESSES", "1"),
        help="server processes sharing the port (default 1): each uses about one core (GIL); with --cpus, "
        "process i runs on the i-th CPU of the list. See README, Configuration",
    )
    parser.add_argument("--log-level", default=env("LOG_LEVEL", "INFO"), help="DEBUG, INFO (default), WARNING")
    parser.add_argument(
        "--shutdown-grace",
        type=float,
        default=float(env("SHUTDOWN_GRACE", "10")),
        help="seconds in-flight RPCs get to finish on SIGTERM (default 10)",
    )
    parser.add_argument(
        "--migrate",
        action="store_true",
        default=env_flag(env("MIGRATE", "false")),
        help="upgrade the schema before serving (development; production runs `migrate`)",
    )
    parser.add_argument(
        "--auth",
        type=on_off,
        default=env("AUTH", "on"),
        help="on (default): every RPC but health and reflection needs an API key (`python -m "
        f"{service} keys --help`); off: anyone may call anything, for local experiments only",
    )
    parser.add_argument(
        "--auth-cache-ttl-ms",
        type=positive_int,
        default=env("AUTH_CACHE_TTL_MS", "5000"),
        help="how long a looked-up API key is trusted (default 5000): a revoked key stops working within this time",
    )
    parser.add_argument(
        "--reflection",
        choices=("on", "authenticated", "off"),
        default=env("REFLECTION", "authenticated"),
        help="server reflection (what grpcurl list/describe use): authenticated (default): any valid API key, "
        "sent by grpcurl with -H; on: open to anyone; off: not served. With --auth off it is open unless off",
    )
    parser.add_argument(
        "--metrics-listen",
        default=env("METRICS_LISTEN", ""),
        help="host:port to serve Prometheus metrics on, over HTTP at /metrics (default: off; e.g. "
        "127.0.0.1:9464; with --processes N the supervisor serves the sum of every server process). "
        "See docs/operations.md, Metrics",
    )
    _add_transport_arguments(parser, env)
    if flags is not None:
        flags.add(parser, env)
    args = parser.parse_args(argv)
    tls = TlsSettings(cert_file=args.tls_cert, key_file=args.tls_key, client_ca_file=args.tls_client_ca)
    if (tls.cert_file is None) != (tls.key_file is None):
        parser.error("--tls-cert and --tls-key go together")
    if tls.client_ca_file is not None and not tls.enabled:
        parser.error("--tls-client-ca needs --tls-cert and --tls-key (mTLS is TLS with client certificates)")
    try:
        limits = ServerLimits(
            max_concurrent_rpcs=args.max_concurrent_rpcs or None,
            max_connection_idle_s=args.max_connection_idle_s,
            max_connection_age_s=args.max_connection_age_s,
            max_connection_age_grace_s=args.max_connection_age_grace_s,
            keepalive_time_s=args.keepalive_time_s,
            keepalive_min_ping_interval_s=args.keepalive_min_ping_interval_s,
            max_receive_message_bytes=args.max_receive_message_bytes,
            max_streams=args.max_streams,
            max_streams_per_caller=args.max_streams_per_caller,
        )
    except ValueError as error:
        parser.error(str(error))
    if limits.max_concurrent_rpcs is not None and limits.max_streams >= limits.max_concurrent_rpcs:
        parser.error("--max-streams must be below --max-concurrent-rpcs: streams must leave room for unary calls")
    common = ServiceSettings(
        command=args.command,
        listen=args.listen,
        database=DatabaseSettings(
            url=args.database_url,
            pool_size=args.db_pool_size,
            max_overflow=args.db_max_overflow,
            statement_timeout_ms=args.db_statement_timeout_ms,
        ),
        log_level=args.log_level,
        shutdown_grace_s=args.shutdown_grace,
        migrate_on_start=args.migrate,
        max_workers=args.max_workers,
        cpus=args.cpus,
        processes=args.processes,
        tls=tls,
        limits=limits,
        auth=args.auth,
        reflection=args.reflection,
        auth_cache_ttl=timedelta(milliseconds=args.auth_cache_ttl_ms),
        metrics_listen=args.metrics_listen or None,
    )
    if flags is None:
        return common
    try:
        return flags.settings(common, args)
    except ValueError as error:
        parser.error(str(error))


def _add_transport_arguments(parser: argparse.ArgumentParser, env: Env) -> None:
    """TLS and the limits of the listener (see docs/security.md, Transport and hardening)."""
    tls = parser.add_argument_group("TLS (default: plaintext)")
    tls.add_argument(
        "--tls-cert",
        type=readable_file,
        default=env("TLS_CERT", None),
        help="PEM file of the server's certificate chain: serve TLS instead of plaintext (with --tls-key)",
    )
    tls.add_argument(
        "--tls-key", type=readable_file, default=env("TLS_KEY", None), help="PEM file of the private key of --tls-cert"
    )
    tls.add_argument(
        "--tls-client-ca",
        type=readable_file,
        default=env("TLS_CLIENT_CA", None),
        help="PEM file of the CA(s) that sign client certificates: every client must present one (mTLS)",
    )
    limits = parser.add_argument_group("limits")
    defaults = ServerLimits()
    limits.add_argument(
        "--max-concurrent-rpcs",
        type=non_negative_int,
        default=env("MAX_CONCURRENT_RPCS", str(defaults.max_concurrent_rpcs)),
        help=f"RPCs in flight at once; more are refused with RESOURCE_EXHAUSTED (default "
        f"{defaults.max_concurrent_rpcs}; 0: no limit)",
    )
    for flag, name, value, what in (
        (
            "--max-connection-idle-s",
            "MAX_CONNECTION_IDLE_S",
            defaults.max_connection_idle_s,
            "a connection without RPCs for this long is closed",
        ),
        (
            "--max-connection-age-s",
            "MAX_CONNECTION_AGE_S",
            defaults.max_connection_age_s,
            "a connection is asked to go away at this age (clients reconnect at once)",
        ),
        (
            "--max-connection-age-grace-s",
            "MAX_CONNECTION_AGE_GRACE_S",
            defaults.max_connection_age_grace_s,
            "RPCs in flight on a connection past its age get this long",
        ),
        (
            "--keepalive-time-s",
            "KEEPALIVE_TIME_S",
            defaults.keepalive_time_s,
            "ping a connection silent this long; one that does not answer in 20 s is closed",
        ),
        (
            "--keepalive-min-ping-interval-s",
            "KEEPALIVE_MIN_PING_INTERVAL_S",
            defaults.keepalive_min_ping_interval_s,
            "clients that ping more often than this are sent away (GOAWAY too_many_pings)",
        ),
    ):
        limits.add_argument(
            flag, type=positive_seconds, default=env(name, f"{value:g}"), help=f"{what} (default {value:g})"
        )
    limits.add_argument(
        "--max-receive-message-bytes",
        type=positive_int,
        default=env("MAX_RECEIVE_MESSAGE_BYTES", str(defaults.max_receive_message_bytes)),
        help=f"largest request accepted (default {defaults.max_receive_message_bytes}); larger: RESOURCE_EXHAUSTED",
    )
    limits.add_argument(
        "--max-streams",
        type=positive_int,
        default=env("MAX_STREAMS", str(defaults.max_streams)),
        help=f"streaming RPCs (reflection, health Watch, event streams) open at once, served on their own threads; "
        f"more are refused with RESOURCE_EXHAUSTED STREAM_LIMIT_REACHED (default {defaults.max_streams})",
    )
    limits.add_argument(
        "--max-streams-per-caller",
        type=positive_int,
        default=env("MAX_STREAMS_PER_CALLER", str(defaults.max_streams_per_caller)),
        help=f"of those, the most one API key may hold; every caller without a key counts as one caller "
        f"(default {defaults.max_streams_per_caller})",
    )
