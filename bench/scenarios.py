"""The four scenarios. Each returns rows of the result table: (scenario, backend, figure,
value, baseline, ratio, bar, verdict)."""

from __future__ import annotations

import time
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

from google.protobuf import json_format
from sqlalchemy import Engine, func, select

from bench import seed
from bench.load import LoadResult, run_load
from bench.servers import service_key, start_service
from credit_common.auth.keys import SYNC
from grant_service.adapters.orm import GrantRow, LedgerEntryRow, ScheduleRow, UsageRow
from tests.support.auth import keyed_channel
from tests.support.postgres import PostgresServer

GRANT_MIGRATIONS = "grant_service.adapters:migrations"
CATALOG_MIGRATIONS = "catalog_service.adapters:migrations"
# What bench.seed fills in the grant database.
SEEDED_TABLES = (
    "currencies",
    "customers",
    "subscriptions",
    "schedules",
    "grants",
    "ledger_entries",
    "rate_sets",
    "rates",
)


@dataclass(frozen=True)
class Size:
    storm: int  # subscriptions renewing at the same instant
    balance_customers: int
    usage_customers: int
    provisions: int
    duration_s: float  # of each timed load phase
    callers: int
    processes: int  # load-generator processes the callers are spread over
    handoff_timeout_s: float  # no new first grant for this long: the handoff is reported as stalled


SIZES = {
    "tiny": Size(300, 50, 20, 30, 1.0, 4, 2, 5),
    "small": Size(10_000, 2_000, 1_000, 1_000, 5, 32, 4, 30),
    "default": Size(100_000, 100_000, 10_000, 10_000, 20, 32, 4, 30),
    "full": Size(1_000_000, 100_000, 10_000, 10_000, 20, 32, 4, 60),
}


@dataclass
class Row:
    scenario: str
    backend: str
    figure: str
    value: float | None
    unit: str
    baseline: float | None = None
    ratio: float | None = None
    bar: str = ""
    verdict: str = ""  # "ok", "MISS", "n/a", or what went wrong
    note: str = ""

    def as_dict(self) -> dict:
        return asdict(self)


def _judge(ok: bool) -> str:
    return "ok" if ok else "MISS"


class Backend:
    """Fresh databases on one backend: SQLite files in the run directory, or databases of one
    PostgreSQL server started as the tests start it."""

    def __init__(self, name: str, run_dir: Path) -> None:
        self.name = name
        self.run_dir = run_dir
        self._pg: PostgresServer | None = None

    def new_database(self, name: str) -> str:
        if self.name == "sqlite":
            return f"sqlite:///{self.run_dir / f'{name}.db'}"
        if self._pg is None:
            self._pg = PostgresServer()
            self._pg.start()
        return self._pg.create_database(name)

    def close(self) -> None:
        if self._pg is not None:
            self._pg.destroy()
            self._pg = None


def _now() -> datetime:
    return datetime.now(UTC)


# ------------------------------------------------------------------------------ 1. renewal storm


def renewal_storm(backend: Backend, size: Size, log) -> list[Row]:
    n = size.storm
    url = backend.new_database("storm")
    engine = seed.migrated_engine(url, GRANT_MIGRATIONS)
    now = _now()
    anchor = (now - timedelta(seconds=1)).replace(microsecond=0)
    started = time.perf_counter()
    with engine.begin() as conn:
        seed.seed_rates(conn)
        seed.seed_subscriptions(conn, "s", n, anchor, 0, Decimal(1000), now)
    log(f"  seeded {n} due subscriptions in {time.perf_counter() - started:.1f}s")
    baseline_s = seed.storm_baseline(engine, n, _now())
    baseline = n / baseline_s
    log(f"  baseline INSERT ... SELECT of {n} grants + entries: {baseline_s:.2f}s ({baseline:,.0f}/s)")
    spawned = time.perf_counter()
    server = start_service("grant_service", url, backend.run_dir)
    # The figure is the steady rate: grants committed after the first commit was seen, over the time
    # since then (the first batch can land before the health check answers; imports are not catch-up).
    first_at, first_count, done_at = None, 0, None
    top = select(func.max(LedgerEntryRow.seq))
    exact = select(func.count()).select_from(LedgerEntryRow).where(LedgerEntryRow.type == "GRANT")
    try:
        limit = server.started_at + max(300.0, n / 100)
        with engine.connect() as conn:
            while time.perf_counter() < limit:
                seen = conn.execute(top).scalar() or 0
                conn.rollback()
                if seen and first_at is None:
                    first_at, first_count = time.perf_counter(), seen
                if seen >= n and conn.execute(exact).scalar_one() >= n:
                    done_at = time.perf_counter()
                    conn.rollback()
                    break
                conn.rollback()
                time.sleep(0.05)
        rss = server.peak_rss_mb()
    finally:
        server.stop()
    if done_at is None:
        raise AssertionError(f"renewal storm: not every grant issued after {limit - server.started_at:.0f}s")
    if first_count < n and done_at > first_at:
        issued, elapsed = n - first_count, done_at - first_at
    else:  # all done in the first batch (tiny sizes): count from the process start
        issued, elapsed = n, done_at - spawned
    with engine.connect() as conn:
        grants = conn.execute(select(func.count()).select_from(GrantRow)).scalar_one()
        entries = conn.execute(exact).scalar_one()
        advanced = conn.execute(
            select(func.count()).select_from(ScheduleRow).where(ScheduleRow.next_period_index == 1)
        ).scalar_one()
    engine.dispose()
    if not grants == entries == advanced == n:
        raise AssertionError(f"renewal storm: {grants} grants, {entries} GRANT entries, {advanced} cursors for {n}")
    log(f"  all {n} grants {done_at - spawned:.1f}s after the process started")
    rate = issued / elapsed
    log(f"  issued {issued} grants in {elapsed:.1f}s ({rate:,.0f}/s), peak RSS {rss:.0f} MB")
    return [
        Row(
            "renewal storm",
            backend.name,
            f"grants issued/s (N={n:,})",
            rate,
            "grants/s",
            baseline,
            rate / baseline,
            "ratio >= 0.10",
            _judge(rate / baseline >= 0.10),
        ),
        Row(
            "renewal storm",
            backend.name,
            f"peak RSS grant service (N={n:,})",
            rss,
            "MB",
            bar="< 300 MB at N=1,000,000",
            verdict=_judge(rss < 300) if n >= 1_000_000 else ("n/a" if rss < 300 else "MISS"),
        ),
    ]


# ------------------------------------------------------------------ 2 and 3. reads and debits


def reads_and_debits(backend: Backend, size: Size, log, *, reads: bool, debits: bool) -> list[Row]:
    url = backend.new_database("reads")
    engine = seed.migrated_engine(url, GRANT_MIGRATIONS)
    now = _now()
    started = time.perf_counter()
    hot = f"u{size.usage_customers}"
    with engine.begin() as conn:
        seed.seed_rates(conn)
        if reads:
            anchor = seed.anchor_for_periods(now, 12)
            seed.seed_subscriptions(conn, "b", size.balance_customers, anchor, 12, Decimal(1000), now)
            seed.seed_issued_periods(conn, "b", size.balance_customers, anchor, 12, Decimal(1000), Decimal(400))
        if debits:
            anchor = seed.anchor_for_periods(now, 1)
            big = Decimal(10) ** 15
            seed.seed_subscriptions(conn, "u", size.usage_customers + 1, anchor, 1, big, now)
            seed.seed_issued_periods(conn, "u", size.usage_customers + 1, anchor, 1, big, Decimal(0))
    log(f"  seeded in {time.perf_counter() - started:.1f}s")
    if engine.dialect.name == "postgresql":
        # Vacuumed, as a long-lived database is: hint bits and the visibility map set, statistics taken;
        # otherwise autovacuum works through the millions of rows just loaded during the timed phases.
        # Only the tables the fixture filled: statistics saying that request_ids and usages are empty
        # made the planner scan request_ids for every group of debits (5.6 M rows read in an 8 s run,
        # growing with the table), which a long-lived database's statistics never would (and a new
        # one's are taken by autovacuum at its first rows).
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.exec_driver_sql(f"VACUUM ANALYZE {', '.join(SEEDED_TABLES)}")
    else:
        with engine.begin() as conn:
            conn.exec_driver_sql("ANALYZE")
    rows: list[Row] = []
    server = start_service("grant_service", url, backend.run_dir)
    load = {
        "callers": size.callers,
        "processes": size.processes,
        "duration_s": size.duration_s,
        "api_key": server.api_key,
    }
    try:
        noop = run_load(server.address, "health", **load)
        log(f"  no-op Health/Check: {_describe(noop)}")
        rows += _latency_rows("no-op baseline", backend.name, "Health/Check", noop, None, None)
        if reads:
            params = {"prefix": "b", "customers": size.balance_customers, "currency": seed.CURRENCY}
            balance = run_load(server.address, "balance", params=params, **load)
            log(f"  GetBalance: {_describe(balance)}")
            bar = 0.5 if backend.name == "sqlite" else 0.35
            rows += _latency_rows(
                "balance reads", backend.name, f"GetBalance ({size.balance_customers:,} customers)", balance, noop, bar
            )
        if debits:
            usage = {"prefix": "u", "customers": size.usage_customers, "feature": seed.FEATURE}
            many = run_load(server.address, "usage", params={**usage, "tag": "many"}, **load)
            log(f"  ReportUsage, many customers: {_describe(many)}")
            rows += _latency_rows(
                "usage debits", backend.name, f"ReportUsage ({size.usage_customers:,} customers)", many, noop, 0.3
            )
            one = run_load(server.address, "usage", params={**usage, "tag": "hot", "hot": hot}, **load)
            log(f"  ReportUsage, one hot customer: {_describe(one)}")
            rows += _latency_rows("usage debits", backend.name, "ReportUsage (1 hot customer)", one, noop, None)
            accepted = many.accepted + one.accepted
            verdict = check_debits(engine, accepted)
            log(f"  exactness: {verdict}")
            rows.append(
                Row(
                    "usage debits",
                    backend.name,
                    "ledger debits == accepted usage",
                    float(sum(accepted.values())),
                    "debits",
                    bar="exact, none below zero",
                    verdict="ok",
                    note=verdict,
                )
            )
    finally:
        server.stop()
        engine.dispose()
    return rows


def check_debits(engine: Engine, accepted: Counter) -> str:
    """The ledger's usage debits equal, customer by customer, the usage the callers saw accepted
    (1 credit each): nothing lost, nothing doubled; every grant's running total equals its debits
    and never exceeds its amount. Raises AssertionError otherwise."""
    per_customer: dict[str, Decimal] = defaultdict(Decimal)
    per_grant: dict[str, Decimal] = defaultdict(Decimal)
    with engine.connect() as conn:
        for customer, grant_id, amount in conn.execute(
            select(LedgerEntryRow.customer_key, LedgerEntryRow.grant_id, LedgerEntryRow.amount).where(
                LedgerEntryRow.type == "DEBIT", LedgerEntryRow.usage_id.is_not(None)
            )
        ):
            per_customer[customer] -= amount
            per_grant[grant_id] -= amount
        usages = conn.execute(select(func.count()).select_from(UsageRow)).scalar_one()
        grants = conn.execute(
            select(GrantRow.grant_id, GrantRow.amount, GrantRow.used).where(GrantRow.customer_key.like("u%"))
        ).all()
    expected = {customer: Decimal(count) for customer, count in accepted.items()}
    if dict(per_customer) != expected:
        lost = {c: (expected.get(c), per_customer.get(c)) for c in set(expected) | set(per_customer)}
        lost = {c: v for c, v in lost.items() if v[0] != v[1]}
        raise AssertionError(f"debits differ from accepted usage for {len(lost)} customers: {list(lost.items())[:5]}")
    total = sum(accepted.values())
    if usages != total:
        raise AssertionError(f"{usages} usages recorded, {total} accepted")
    for grant_id, amount, used in grants:
        if used != per_grant.get(grant_id, Decimal(0)):
            raise AssertionError(f"grant {grant_id}: used {used} but debits {per_grant.get(grant_id)}")
        if used > amount:
            raise AssertionError(f"grant {grant_id}: used {used} > amount {amount} (balance below zero)")
    return f"{total} accepted = {total} debited over {len(expected)} customers, no grant below zero"


def _describe(result: LoadResult) -> str:
    extra = f", errors {dict(result.errors)}" if result.errors else ""
    extra += f", {result.retries} retried" if result.retries else ""
    return (
        f"{result.qps:,.0f}/s, p50 {result.percentile(50):.1f} ms, p99 {result.percentile(99):.1f} ms "
        f"({result.ok} calls{extra})"
    )


def _latency_rows(
    scenario: str, backend: str, what: str, result: LoadResult, noop: LoadResult | None, ratio_bar: float | None
) -> list[Row]:
    note = f"errors {dict(result.errors)}" if result.errors else ""
    qps = Row(scenario, backend, f"{what} QPS", result.qps, "calls/s", note=note)
    p50 = Row(scenario, backend, f"{what} p50", result.percentile(50), "ms")
    p99 = Row(scenario, backend, f"{what} p99", result.percentile(99), "ms")
    if noop is not None:
        qps.baseline, qps.ratio = noop.qps, result.qps / noop.qps if noop.qps else None
        p50.baseline = noop.percentile(50)
        p99.baseline = noop.percentile(99)
        if ratio_bar is not None:
            qps.bar, qps.verdict = f"ratio >= {ratio_bar}", _judge((qps.ratio or 0) >= ratio_bar)
            if scenario == "balance reads":
                p99.bar, p99.verdict = "< 20 ms", _judge(p99.value < 20)
        if result.errors:
            qps.verdict = "MISS"
    return [qps, p50, p99]


# ---------------------------------------------------------------------- 4. provisioning end to end


def provisioning(backend: Backend, size: Size, log) -> list[Row]:
    from catalog_service.v1 import catalog_service_pb2 as cpb
    from catalog_service.v1 import catalog_service_pb2_grpc as cgrpc

    n = size.provisions
    grant_url, catalog_url = backend.new_database("prov_grant"), backend.new_database("prov_catalog")
    grant_engine = seed.migrated_engine(grant_url, GRANT_MIGRATIONS)
    catalog_engine = seed.migrated_engine(catalog_url, CATALOG_MIGRATIONS)
    with catalog_engine.begin() as conn:
        seed.seed_catalog_customers(conn, "p", n, _now())
    catalog_engine.dispose()
    grant = start_service("grant_service", grant_url, backend.run_dir)
    sync_key = service_key("grant_service", grant_url, (SYNC,))
    catalog = None
    try:
        catalog = start_service(
            "catalog_service",
            catalog_url,
            backend.run_dir,
            args=["--grant-service-address", grant.address],
            # the outbox dispatcher's target, whatever flag it ends up being wired to
            env={
                "CATALOG_GRANT_SERVICE_ADDRESS": grant.address,
                **({"CATALOG_GRANT_SERVICE_API_KEY": sync_key} if sync_key else {}),
            },
        )
        with keyed_channel(catalog.address, catalog.api_key) as channel:
            stub = cgrpc.CatalogServiceStub(channel)
            for method, request in _catalog_setup(cpb):
                getattr(stub, method)(request, timeout=30)
        work = [f"p{i}" for i in range(n)]
        params = {"plan": seed.PLAN, "values": {seed.ENTITLEMENT: "50000"}}
        result = run_load(
            catalog.address,
            "provision",
            callers=size.callers,
            processes=size.processes,
            work=work,
            params=params,
            api_key=catalog.api_key,
        )
        last_reply = time.time()  # run_load returns when every caller has its last reply
        log(f"  ProvisionSubscription: {_describe(result)}")
        count = select(func.count()).select_from(LedgerEntryRow).where(LedgerEntryRow.type == "GRANT")
        seen, progress_at, delivered_at = -1, time.time(), None
        while time.time() - progress_at < size.handoff_timeout_s:
            with grant_engine.connect() as conn:
                now_seen = conn.execute(count).scalar_one()
            if now_seen >= result.ok:
                delivered_at = time.time()
                break
            if now_seen > seen:
                seen, progress_at = now_seen, time.time()
            time.sleep(0.2)
    finally:
        if catalog is not None:
            catalog.stop()
        grant.stop()
        grant_engine.dispose()
    rows = [
        Row(
            "provisioning",
            backend.name,
            f"provisions/s ({n:,} by {size.callers} callers)",
            result.qps,
            "provisions/s",
            verdict="MISS" if result.errors else "",
            note=f"errors {dict(result.errors)}" if result.errors else "",
        )
    ]
    if delivered_at is not None:
        handoff = max(0.0, delivered_at - last_reply)
        log(f"  every first grant issued {handoff:.1f}s after the last reply")
        rows.append(Row("provisioning", backend.name, "last reply -> every first grant", handoff, "s", verdict="ok"))
    else:
        got = max(seen, 0)
        what = "handoff not delivered" if got == 0 else f"handoff incomplete: {got}/{result.ok} first grants"
        log(f"  {what} (no progress for {size.handoff_timeout_s:.0f}s)")
        rows.append(
            Row(
                "provisioning",
                backend.name,
                "last reply -> every first grant",
                None,
                "s",
                verdict=what,
                note=f"no new first grant for {size.handoff_timeout_s:.0f}s after the last reply",
            )
        )
    return rows


def _catalog_setup(cpb) -> list[tuple[str, object]]:
    def parse(message, data):
        return json_format.ParseDict(data, message())

    return [
        (
            "CreateFeature",
            parse(
                cpb.CreateFeatureRequest,
                {
                    "feature": {
                        "key": seed.FEATURE,
                        "display_name": "GPT calls",
                        "type": "FEATURE_TYPE_METERED",
                        "unit_name": "call",
                    }
                },
            ),
        ),
        (
            "CreateCreditCurrency",
            parse(
                cpb.CreateCreditCurrencyRequest,
                {
                    "credit_currency": {
                        "key": seed.CURRENCY,
                        "display_name": "AI credits",
                        "unit_name": "credit",
                        "rates": [{"feature_key": seed.FEATURE, "credits_per_unit": "1"}],
                    }
                },
            ),
        ),
        (
            "CreatePlan",
            parse(
                cpb.CreatePlanRequest,
                {
                    "plan": {
                        "key": seed.PLAN,
                        "display_name": "Bench",
                        "custom": True,
                        "credit_entitlements": [
                            {
                                "key": seed.ENTITLEMENT,
                                "currency_key": seed.CURRENCY,
                                "cadence": "CADENCE_MONTHLY",
                                "variable_amount": {"min": "10000", "max": "1000000"},
                            }
                        ],
                    }
                },
            ),
        ),
        ("PublishPlan", parse(cpb.PublishPlanRequest, {"key": seed.PLAN})),
    ]


# ------------------------------------------------------------------------ 5. metrics on and off


def metrics_overhead(backend: Backend, size: Size, log, rounds: int = 2) -> list[Row]:
    """GetBalance's throughput with metrics on (--metrics-listen, scraped every second meanwhile: harsher
    than any Prometheus) against off, the servers started alternately (off, on, off, on, ...) so that a
    drift of the machine falls on both. Bar: on >= 0.95 of off."""
    import threading
    import urllib.request

    from tests.support.postgres import free_port

    url = backend.new_database("metrics")
    engine = seed.migrated_engine(url, GRANT_MIGRATIONS)
    now = _now()
    with engine.begin() as conn:
        seed.seed_rates(conn)
        anchor = seed.anchor_for_periods(now, 12)
        seed.seed_subscriptions(conn, "b", size.balance_customers, anchor, 12, Decimal(1000), now)
        seed.seed_issued_periods(conn, "b", size.balance_customers, anchor, 12, Decimal(1000), Decimal(400))
    if engine.dialect.name == "postgresql":
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.exec_driver_sql(f"VACUUM ANALYZE {', '.join(SEEDED_TABLES)}")
    params = {"prefix": "b", "customers": size.balance_customers, "currency": seed.CURRENCY}
    results: dict[bool, list[LoadResult]] = {False: [], True: []}
    scrapes = 0
    try:
        for _ in range(rounds):
            for on in (False, True):
                port = free_port()
                args = ["--metrics-listen", f"127.0.0.1:{port}"] if on else []
                server = start_service("grant_service", url, backend.run_dir, args=args)
                stop = threading.Event()

                def scrape(port=port, stop=stop) -> None:
                    nonlocal scrapes
                    while not stop.wait(1.0):
                        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as reply:
                            reply.read()
                        scrapes += 1

                scraper = threading.Thread(target=scrape, daemon=True) if on else None
                try:
                    if scraper is not None:
                        scraper.start()
                    result = run_load(
                        server.address,
                        "balance",
                        params=params,
                        callers=size.callers,
                        processes=size.processes,
                        duration_s=size.duration_s,
                        api_key=server.api_key,
                    )
                finally:
                    stop.set()
                    if scraper is not None:
                        scraper.join(15)
                    server.stop()
                log(f"  GetBalance, metrics {'on' if on else 'off'}: {_describe(result)}")
                results[on].append(result)
    finally:
        engine.dispose()
    off_qps = sum(r.qps for r in results[False]) / rounds
    on_qps = sum(r.qps for r in results[True]) / rounds
    ratio = on_qps / off_qps if off_qps else None
    errors = sum(sum(r.errors.values()) for rs in results.values() for r in rs)
    return [
        Row(
            "metrics on/off",
            backend.name,
            "GetBalance QPS, metrics on (scraped every second) / off",
            on_qps,
            "calls/s",
            baseline=off_qps,
            ratio=ratio,
            bar="ratio >= 0.95",
            verdict="MISS" if errors or ratio is None or ratio < 0.95 else "ok",
            note=f"{rounds} alternating rounds each; {scrapes} scrapes during the load"
            + (f"; {errors} errors" if errors else ""),
        )
    ]
