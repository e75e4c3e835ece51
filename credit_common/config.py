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

from credit_common.db.engine import DatabaseSettings


@dataclass(frozen=True)
class ServiceSettings:
    command: str  # "serve" or "migrate"
    listen: str
    database: DatabaseSettings
    log_level: str
    shutdown_grace_s: float
    migrate_on_start: bool
    max_workers: int
    extra: argparse.Namespace
    cpus: frozenset[int] | None = None  # pin the process to these CPUs; None: wherever the OS puts it
    processes: int = 1  # server processes sharing the port (credit_common.processes)
    process_index: int | None = None  # which of them this one is; None: the only one
    auth: bool = True  # every RPC but health and reflection needs an API key with a role that allows it
    auth_cache_ttl: timedelta = timedelta(seconds=5)  # how long a key looked up is trusted (revocation bound)


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


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of at least 1")
    return value


def _env(prefix: str, name: str, default: str | None) -> str | None:
    return os.environ.get(f"{prefix}_{name}", default)


def on_off(text: str) -> bool:
    value = text.lower()
    if value in ("on", "true", "1", "yes"):
        return True
    if value in ("off", "false", "0", "no"):
        return False
    raise argparse.ArgumentTypeError(f"{text!r} is neither on nor off")


def add_database_url_argument(
    parser: argparse.ArgumentParser, env: Callable[[str, str | None], str | None], database_file: str
) -> None:
    data_dir = os.environ.get("CREDIT_GRANTS_DATA_DIR", "data")
    parser.add_argument(
        "--database-url",
        default=env("DATABASE_URL", f"sqlite:///{os.path.join(data_dir, database_file)}"),
        help="SQLAlchemy URL: sqlite:///path.db (default: under $CREDIT_GRANTS_DATA_DIR, "
        "./data) or postgresql://user:pass@host:5432/db",
    )


def parse_service_args(
    *,
    service: str,
    env_prefix: str,
    default_port: int,
    database_file: str,
    argv: list[str] | None = None,
    add_arguments: Callable[[argparse.ArgumentParser, Callable[[str, str | None], str | None]], None] | None = None,
) -> ServiceSettings:
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
        "--processes N, server process i runs on the i-th CPU of the list (see README, Configuration)",
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
    if add_arguments:
        add_arguments(parser, env)
    args = parser.parse_args(argv)
    return ServiceSettings(
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
        extra=args,
        cpus=args.cpus,
        processes=args.processes,
        auth=args.auth,
        auth_cache_ttl=timedelta(milliseconds=args.auth_cache_ttl_ms),
    )
