"""Prometheus metrics of both services (docs/operations.md, Metrics, lists each with its meaning).

Three kinds, by where their value comes from:

- Counters and histograms that the server processes record as things happen: the RPCs (the
  go-grpc-prometheus names, recorded by credit_common.grpc.observe), auth failures, the grant
  service's ledger (grants and credits issued, debited, expired per currency, counted when their
  transaction commits: `tally_ledger`), usage refused for insufficient credits, the outbox's delivery
  attempts, the debit group commit's batch sizes.
- Gauges of each process's database pools (`watch_pool`), sampled once a second by a thread of the
  process (never on the RPC path); in multiprocess mode summed over the live processes.
- Gauges of the database's state (catch-up lag, outbox depth): computed at scrape time by the process
  that serves /metrics, on an engine of its own (one connection, a short statement timeout) under
  its own lock, so that a scrape never waits for, nor holds up, an RPC (`DatabaseGauges`).

Labels are bounded: method names, status codes, reasons, kinds, and the currency key (credit
currencies are created by operators in the catalog: a handful, not one per customer). No customer
key, subscription id or API key id is ever a label value.

With `--processes N` the supervisor (credit_common.processes) points PROMETHEUS_MULTIPROC_DIR at an
empty directory before it starts the server processes; each records its values there (the library's
multiprocess mode), and the supervisor alone serves /metrics: one scrape sees the sum over every
server process, and the files of a process that ended stay counted, so counters never go backwards.
"""

from __future__ import annotations

import glob
import logging
import os
import shutil
import tempfile
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):  # the library writes there from its import on
    os.makedirs(os.environ["PROMETHEUS_MULTIPROC_DIR"], exist_ok=True)

from prometheus_client import REGISTRY, Counter, Gauge, Histogram, start_http_server
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead
from sqlalchemy import Connection, Engine, event
from sqlalchemy.orm import Session

from credit_common.config import split_address

log = logging.getLogger("credit_grants.metrics")

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"

# -- RPCs (go-grpc-prometheus / py-grpc-prometheus names) ------------------------------------------

_RPC_LABELS = ("grpc_type", "grpc_service", "grpc_method")
RPC_STARTED = Counter("grpc_server_started_total", "RPCs started on the server.", _RPC_LABELS)
RPC_HANDLED = Counter(
    "grpc_server_handled_total", "RPCs completed on the server, by status code.", (*_RPC_LABELS, "grpc_code")
)
RPC_SECONDS = Histogram(
    "grpc_server_handling_seconds",
    "Time from the start of an RPC to its status, as the server sees it.",
    _RPC_LABELS,
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
AUTH_FAILURES = Counter(
    "credit_grants_auth_failures_total",
    "Calls refused by the API key check, by reason (API_KEY_MISSING, API_KEY_INVALID, API_KEY_REVOKED, ROLE_REQUIRED).",
    ("reason",),
)
USAGE_INSUFFICIENT = Counter(
    "credit_grants_usage_insufficient_credits_total",
    "ReportUsage calls refused because the balance did not cover them (RESOURCE_EXHAUSTED INSUFFICIENT_CREDITS).",
)

# -- the grant service's ledger --------------------------------------------------------------------

GRANTS_ISSUED = Counter("credit_grants_grants_issued_total", "Grants issued, by currency.", ("currency",))
CREDITS_ISSUED = Counter("credit_grants_credits_issued_total", "Credits granted, by currency.", ("currency",))
CREDITS_DEBITED = Counter(
    "credit_grants_credits_debited_total", "Credits debited by usage, by currency.", ("currency",)
)
CREDITS_EXPIRED = Counter(
    "credit_grants_credits_expired_total", "Unused credits expired at their grant's end, by currency.", ("currency",)
)
_BY_ENTRY_TYPE = {"GRANT": CREDITS_ISSUED, "DEBIT": CREDITS_DEBITED, "EXPIRE": CREDITS_EXPIRED}
_TALLY = "credit_grants_metrics_tally"

# -- the catalog's outbox and the debit group commit ------------------------------------------------

OUTBOX_ATTEMPTS = Counter(
    "credit_grants_outbox_delivery_attempts_total", "Outbox deliveries sent to the grant service, by kind.", ("kind",)
)
WEBHOOK_DELIVERIES = Counter(
    "credit_grants_webhook_deliveries_total",
    "Webhook delivery attempts recorded, by outcome (delivered, retry, given_up).",
    ("outcome",),
)
OUTBOX_OUTCOMES = Counter(
    "credit_grants_outbox_delivery_outcomes_total",
    "Outcomes of outbox delivery attempts, by kind and outcome (delivered, retry, parked).",
    ("kind", "outcome"),
)
GROUP_COMMIT_SIZE = Histogram(
    "credit_grants_debit_group_commit_size",
    "Debits committed together in one transaction (credit_common.db.group_commit).",
    buckets=(1, 2, 4, 8, 16, 32, 64),
)

# -- database pools (per process; livesum: the sum over the live processes) -------------------------

POOL_IN_USE = Gauge(
    "credit_grants_db_pool_in_use",
    "Database connections checked out of the pool.",
    ("pool",),
    multiprocess_mode="livesum",
)
POOL_WAITING = Gauge(
    "credit_grants_db_pool_waiting",
    "Threads waiting for a database connection (the pool is exhausted).",
    ("pool",),
    multiprocess_mode="livesum",
)
POOL_CAPACITY = Gauge(
    "credit_grants_db_pool_capacity",
    "Connections the pool may open (size + overflow).",
    ("pool",),
    multiprocess_mode="livesum",
)


def recorded(settings: Any) -> bool:
    """Whether a server process records the RPC metrics and samples its pools: when it serves them
    (`--metrics-listen`), or when it is a server process of a supervisor that does (its
    PROMETHEUS_MULTIPROC_DIR set). Otherwise nobody could read them, and the RPCs do not pay for them."""
    return bool(settings.metrics_listen) or (settings.process_index is not None and bool(os.environ.get(MULTIPROC_ENV)))


# -- the ledger tally: counted when the transaction commits ----------------------------------------


_counting_ledger = True


def count_ledger(enabled: bool) -> None:
    """Whether the ledger tally counts (`tally_entries`): a server process whose metrics nobody can
    read (`recorded`) skips it, as it skips the RPCs' metrics, instead of paying for each entry."""
    global _counting_ledger
    _counting_ledger = enabled


def tally_ledger(session: Session, entries: Iterable[dict[str, Any]]) -> None:
    """Count ledger entries written in `session`'s transaction (rows with type, currency_key, amount);
    added to the counters only if and when that transaction commits."""
    tally_entries(session, ((entry["type"], entry["currency_key"], entry["amount"]) for entry in entries))


def tally_entries(session: Session, entries: Iterable[tuple[str, str, Decimal]]) -> None:
    """As `tally_ledger`, of entries given as (type, currency_key, amount). Summed per (type,
    currency) as they come: a catch-up batch or a usage batch writes hundreds or thousands, and a
    counter's `labels().inc()` per entry was a tenth of a renewal storm (docs/performance.md)."""
    if not _counting_ledger:
        return
    tally: dict[tuple[str, str], list[Any]] = session.info.setdefault(_TALLY, {})
    for kind, currency, amount in entries:
        total = tally.get((kind, currency))
        if total is None:
            tally[(kind, currency)] = [abs(Decimal(amount)), 1]
        else:
            total[0] += abs(Decimal(amount))
            total[1] += 1


def _flush_tally(session: Session) -> None:
    tally = session.info.pop(_TALLY, None)
    if not tally:
        return
    for (kind, currency), (amount, count) in tally.items():
        counter = _BY_ENTRY_TYPE.get(kind)
        if counter is not None:
            counter.labels(currency).inc(float(amount))
        if kind == "GRANT":
            GRANTS_ISSUED.labels(currency).inc(count)


def _drop_tally(session: Session, *_: object) -> None:
    session.info.pop(_TALLY, None)


event.listen(Session, "after_commit", _flush_tally)
event.listen(Session, "after_rollback", _drop_tally)


# -- database pools ---------------------------------------------------------------------------------


class _PoolWatch:
    """Samples the pools of this process once a second (a daemon thread)."""

    def __init__(self, interval_s: float = 1.0) -> None:
        self._pools: dict[str, weakref.ref[Engine]] = {}
        self._lock = threading.Lock()
        self._interval_s = interval_s
        self._thread: threading.Thread | None = None

    def add(self, engine: Engine, name: str) -> None:
        with self._lock:
            self._pools[name] = weakref.ref(engine)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="pool-metrics", daemon=True)
                self._thread.start()
        self.sample()

    def sample(self) -> None:
        with self._lock:
            pools = list(self._pools.items())
        for name, ref in pools:
            engine = ref()
            if engine is None:
                continue
            pool = engine.pool
            in_use = pool.checkedout() if hasattr(pool, "checkedout") else 0
            capacity = pool.size() + max(getattr(pool, "_max_overflow", 0), 0) if hasattr(pool, "size") else 0
            POOL_IN_USE.labels(name).set(in_use)
            POOL_CAPACITY.labels(name).set(capacity)
            POOL_WAITING.labels(name).set(_waiters(pool))

    def _run(self) -> None:
        while True:
            time.sleep(self._interval_s)
            try:
                self.sample()
            except Exception:  # a sampling failure must never end the thread
                log.exception("sampling the database pools failed")


def _waiters(pool: Any) -> int:
    """Threads blocked waiting for a connection of a QueuePool (SQLAlchemy has no public count)."""
    queue = getattr(pool, "_pool", None)
    condition = getattr(queue, "not_empty", None)
    waiters = getattr(condition, "_waiters", None)
    return len(waiters) if waiters is not None else 0


_POOLS = _PoolWatch()


def watch_pool(engine: Engine, name: str) -> None:
    """Export `engine`'s pool as credit_grants_db_pool_*{pool=name}."""
    _POOLS.add(engine, name)


# -- gauges of the database, computed at scrape time ------------------------------------------------

# A source of gauges: given a connection (in a read transaction) and the time, the metrics it yields.
GaugeSource = Callable[[Connection, datetime], Iterable[Metric]]


class DatabaseGauges:
    """Gauges of the database's state, computed when scraped, on `engine` (the scraping process's own:
    see `scrape_engine`). Scrapes are serialised and their result kept `min_interval_s`, so that many
    scrapers cost the database one query set per interval. A failed query yields
    credit_grants_metrics_database_up 0 instead of failing the scrape."""

    def __init__(self, engine: Engine, sources: Sequence[GaugeSource], min_interval_s: float = 1.0) -> None:
        self._engine = engine
        self._sources = list(sources)
        self._lock = threading.Lock()
        self._min_interval_s = min_interval_s
        self._cached: tuple[float, list[Metric]] | None = None

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            if self._cached is not None and time.monotonic() - self._cached[0] < self._min_interval_s:
                yield from self._cached[1]
                return
            metrics: list[Metric] = []
            up = 1
            try:
                with self._engine.connect() as connection:
                    now = datetime.now(UTC)
                    for source in self._sources:
                        metrics.extend(source(connection, now))
            except Exception as error:
                up = 0
                log.warning("metrics: the database gauges could not be read", extra={"error": str(error)[:300]})
            status = GaugeMetricFamily(
                "credit_grants_metrics_database_up", "1 if the last scrape could read the database gauges."
            )
            status.add_metric([], up)
            metrics.append(status)
            self._cached = (time.monotonic(), metrics)
            yield from metrics


def scrape_engine(settings: Any) -> Engine:
    """An engine for the scrape's queries: one connection, a short statement timeout (PostgreSQL) or busy
    timeout (SQLite), so that a slow database delays a scrape, never an RPC."""
    from dataclasses import replace

    from credit_common.db.engine import create_db_engine

    return create_db_engine(
        replace(
            settings,
            pool_size=1,
            max_overflow=0,
            pool_timeout_s=2.0,
            statement_timeout_ms=2000,
            sqlite_busy_timeout_ms=2000,
        )
    )


# -- what is queued for the metrics, recorded before a scrape -----------------------------------------

_flushes: list[weakref.WeakMethod] = []
_flushes_lock = threading.Lock()


def flush_before_scrape(flush: Callable[[], None]) -> None:
    """Have a scrape of this process call `flush` (a bound method, held weakly) first: a recorder that
    queues its events (credit_common.grpc.observe) then never shows a scrape stale values."""
    with _flushes_lock:
        _flushes[:] = [ref for ref in _flushes if ref() is not None]
        _flushes.append(weakref.WeakMethod(flush))  # type: ignore[arg-type]


def flush_pending() -> None:
    with _flushes_lock:
        flushes = [ref() for ref in _flushes]
    for flush in flushes:
        if flush is not None:
            flush()


# -- serving /metrics --------------------------------------------------------------------------------


class _Exposition:
    """What one scrape collects: this process's metrics, or with a multiprocess directory every
    server process's; then the database gauges."""

    def __init__(self, multiprocess_dir: str | None, extra: Sequence[Any]) -> None:
        self._multiprocess_dir = multiprocess_dir
        self._extra = list(extra)

    def collect(self) -> Iterator[Metric]:
        flush_pending()
        if self._multiprocess_dir is not None:
            yield from MultiProcessCollector(None, path=self._multiprocess_dir).collect()
        else:
            yield from REGISTRY.collect()
        for collector in self._extra:
            yield from collector.collect()


@dataclass
class MetricsServer:
    port: int
    _server: Any
    _thread: threading.Thread

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


def serve_metrics(address: str, *, multiprocess_dir: str | None = None, extra: Sequence[Any] = ()) -> MetricsServer:
    """Serve /metrics over HTTP on `address` ("host:port"; port 0 picks one) in a thread of its own."""
    host, port = split_address(address)
    server, thread = start_http_server(port, addr=host, registry=_Exposition(multiprocess_dir, extra))
    return MetricsServer(server.server_port, server, thread)


# -- multiprocess mode ------------------------------------------------------------------------------


def prepare_multiprocess_dir(service: str) -> tuple[str, bool]:
    """The directory the server processes record their metrics in: $PROMETHEUS_MULTIPROC_DIR emptied of
    the files of a previous run, or a new temporary directory; set in the environment that the server
    processes inherit. Returns it and whether it was created here (to remove at exit)."""
    path = os.environ.get(MULTIPROC_ENV)
    created = not path
    if path:
        os.makedirs(path, exist_ok=True)
        for stale in glob.glob(os.path.join(path, "*.db")):
            os.remove(stale)
    else:
        path = tempfile.mkdtemp(prefix=f"{service}-metrics-")
    os.environ[MULTIPROC_ENV] = path
    return path, created


def process_ended(pid: int, path: str | None) -> None:
    """Bookkeeping for a server process that ended: its live gauges no longer count (its counters
    and histograms still do)."""
    if path is not None:
        mark_process_dead(pid, path)


def remove_multiprocess_dir(path: str) -> None:
    shutil.rmtree(path, ignore_errors=True)


def start_metrics(
    address: str,
    database: Any,
    sources: Sequence[GaugeSource],
    *,
    multiprocess_dir: str | None = None,
    cache_s: float = 5.0,
) -> tuple[MetricsServer, Engine]:
    """Serve /metrics on `address`: this process's metrics (or with `multiprocess_dir`, those of every
    server process) and the database gauges of `sources`, read on an engine of the scrape's own over
    `database` (DatabaseSettings). Returns the server and that engine (stop one, dispose the other)."""
    engine = scrape_engine(database)
    try:
        gauges = [DatabaseGauges(engine, sources, cache_s)] if sources else []
        server = serve_metrics(address, multiprocess_dir=multiprocess_dir, extra=gauges)
    except Exception:
        engine.dispose()
        raise
    return server, engine
