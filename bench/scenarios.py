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
    "tiny": Size(300, 50, 20, 30, 0.5, 4, 2, 5),
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
    rate, rss, baseline = _storm(backend, size, log, "storm")
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


def _storm(
    backend: Backend, size: Size, log, name: str, env: dict[str, str] | None = None
) -> tuple[float, float, float]:
    """A renewal storm of `size.storm` subscriptions due at once: (grants issued/s, peak RSS in MB,
    the baseline INSERT ... SELECT's grants/s)."""
    n = size.storm
    url = backend.new_database(name)
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
    server = start_service("grant_service", url, backend.run_dir, env=env)
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
    return rate, rss, baseline


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
            batch_rows, batch_accepted = _batch_rows(
                server.address, backend.name, size, load, usage, hot, many, one, log
            )
            rows += batch_rows
            accepted = many.accepted + one.accepted + batch_accepted
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


USAGE_BATCH = 1000  # usages per ReportUsageBatch call (its maximum)
BATCH_CALLERS = 4  # metering clients sending batches: few callers, much usage each
BATCH_BAR = 10.0  # usages/s through ReportUsageBatch over ReportUsage's calls/s, same run


def _batch_rows(
    address: str,
    backend: str,
    size: Size,
    load: dict,
    usage: dict,
    hot: str,
    many: LoadResult,
    one: LoadResult,
    log,
) -> tuple[list[Row], Counter]:
    """ReportUsageBatch, USAGE_BATCH usages per call from BATCH_CALLERS callers, for random customers
    then for the hot one: usages/s against ReportUsage's calls/s of the same run (the same customers,
    1 unit each); and what they accepted, for the ledger check."""
    rows: list[Row] = []
    accepted: Counter = Counter()
    batch_load = {**load, "callers": BATCH_CALLERS, "processes": min(BATCH_CALLERS, size.processes)}
    for label, params, single in (
        (f"{size.usage_customers:,} customers", {**usage, "tag": "bmany"}, many),
        ("1 hot customer", {**usage, "tag": "bhot", "hot": hot}, one),
    ):
        result = run_load(address, "usage-batch", params={**params, "batch": USAGE_BATCH}, **batch_load)
        accepted += result.accepted
        ratio = result.units_per_s / single.qps if single.qps else None
        log(
            f"  ReportUsageBatch ({USAGE_BATCH} per call), {label}: {result.units_per_s:,.0f} usages/s "
            f"= {ratio or 0:.1f}x ReportUsage; calls {_describe(result)}"
        )
        note = f"errors {dict(result.errors)}" if result.errors else ""
        rate = Row(
            "usage debits",
            backend,
            f"ReportUsageBatch ({label}) usages/s",
            result.units_per_s,
            "usages/s",
            baseline=single.qps,
            ratio=ratio,
            note=note,
        )
        if single is many:
            rate.bar, rate.verdict = f"ratio >= {BATCH_BAR:g}", _judge((ratio or 0) >= BATCH_BAR and not result.errors)
        rows.append(rate)
        rows.append(Row("usage debits", backend, f"ReportUsageBatch ({label}) call p99", result.percentile(99), "ms"))
    return rows, accepted


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


# ------------------------------------------------------------------------------ 5. credit events


def credit_events(backend: Backend, size: Size, log) -> list[Row]:
    """What the event log costs: the renewal storm with events off and on (twice each); ReportUsage with no
    balance alert levels, then with default levels for every customer (events on both times),
    alternating twice, each next to a caller writing an event 50 times a second (CreateGrant); and,
    during the runs with levels, the time from those events' recording to their arrival on a
    WatchEvents stream."""
    rows: list[Row] = []
    n = size.storm
    # Each mode twice, in the order off, on, on, off (a drift of the machine during the four storms
    # weighs on both alike); a mode's rate is the mean of its two. One storm each swung the ratio
    # by 0.05 from one run to the next (docs/performance.md).
    runs: dict[str, list[float]] = {"off": [], "on": []}
    for i, mode in enumerate(("off", "on", "on", "off")):
        log(f"  renewal storm, events {mode}")
        rate, _, _ = _storm(backend, size, log, f"events_storm_{mode}{i}", env={"GRANT_EVENTS": mode})
        runs[mode].append(rate)
    rates = {mode: sum(found) / len(found) for mode, found in runs.items()}
    ratio = rates["on"] / rates["off"]
    rows.append(
        Row(
            "credit events",
            backend.name,
            f"renewal storm grants/s, events on vs off (N={n:,})",
            rates["on"],
            "grants/s",
            rates["off"],
            ratio,
            "ratio >= 0.8",
            _judge(ratio >= 0.8),
        )
    )
    from grant_service.v1 import grant_service_pb2 as gpb
    from grant_service.v1 import grant_service_pb2_grpc as gpb_grpc

    url = backend.new_database("events_usage")
    engine = seed.migrated_engine(url, GRANT_MIGRATIONS)
    now = _now()
    with engine.begin() as conn:
        seed.seed_rates(conn)
        anchor = seed.anchor_for_periods(now, 1)
        big = Decimal(10) ** 15
        seed.seed_subscriptions(conn, "u", size.usage_customers, anchor, 1, big, now)
        seed.seed_issued_periods(conn, "u", size.usage_customers, anchor, 1, big, Decimal(0))
    if engine.dialect.name == "postgresql":
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.exec_driver_sql(f"VACUUM ANALYZE {', '.join(SEEDED_TABLES)}")
    server = start_service("grant_service", url, backend.run_dir)
    load = {"callers": size.callers, "processes": size.processes, "duration_s": size.duration_s}
    usage = {"prefix": "u", "customers": size.usage_customers, "feature": seed.FEATURE}
    channel = keyed_channel(server.address, server.api_key)
    stub = gpb_grpc.GrantServiceStub(channel)
    results: dict[str, list[LoadResult]] = {"none": [], "levels": []}
    latencies: list[float] = []
    try:
        for round_ in range(2):
            for mode in ("none", "levels"):
                levels = [gpb.BalanceAlertLevel(percent="10"), gpb.BalanceAlertLevel(amount="1000")]
                if mode == "levels":
                    request = gpb.SetBalanceAlertsRequest(currency_key=seed.CURRENCY, levels=levels)
                    stub.SetBalanceAlerts(request, timeout=30)
                else:
                    stub.ClearBalanceAlerts(gpb.ClearBalanceAlertsRequest(currency_key=seed.CURRENCY), timeout=30)
                watch = _StreamLatency(stub, gpb)  # its writer loads both modes alike
                result = run_load(
                    server.address,
                    "usage",
                    params={**usage, "tag": f"{mode}{round_}"},
                    api_key=server.api_key,
                    **load,
                )
                timed = watch.stop()
                if mode == "levels":
                    latencies += timed
                results[mode].append(result)
                log(f"  ReportUsage, alert levels {mode}: {_describe(result)}")
    finally:
        channel.close()
        server.stop()
        engine.dispose()
    plain = sum(r.qps for r in results["none"]) / len(results["none"])
    alerted = sum(r.qps for r in results["levels"]) / len(results["levels"])
    rows.append(
        Row(
            "credit events",
            backend.name,
            f"ReportUsage QPS, alert levels on vs none ({size.usage_customers:,} customers)",
            alerted,
            "calls/s",
            plain,
            alerted / plain if plain else None,
            "ratio >= 0.9",
            _judge(plain > 0 and alerted / plain >= 0.9),
        )
    )
    latencies.sort()
    p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] if latencies else None
    log(f"  commit-to-stream: {len(latencies)} events, p99 {p99} ms")
    rows.append(
        Row(
            "credit events",
            backend.name,
            "recorded -> WatchEvents p99 under the usage load",
            p99,
            "ms",
            bar="< 100 ms",
            verdict=_judge(p99 is not None and p99 < 100) if latencies else "no events",
            note=f"{len(latencies)} events",
        )
    )
    return rows


class _StreamLatency:
    """A WatchEvents stream from the log's end and a writer of one CreateGrant every 20 ms: for each
    event the writer causes, the time from its recorded_time to its arrival (ms)."""

    def __init__(self, stub, gpb) -> None:
        import threading

        self._stop = threading.Event()
        self.latencies: list[float] = []
        cursor = ""
        while True:  # to the end of the log: only the events written from now on are timed
            page = stub.ListEvents(gpb.ListEventsRequest(page_size=1000, page_token=cursor), timeout=30)
            if page.events:
                self._cursor = page.events[-1].cursor
            if not page.next_page_token:
                break
            cursor = page.next_page_token
        self._cursor = getattr(self, "_cursor", "")
        self._stream = stub.WatchEvents(gpb.WatchEventsRequest(cursor=self._cursor, customer_key="u0"))
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._writer = threading.Thread(target=self._write, args=(stub, gpb), daemon=True)
        self._reader.start()
        self._writer.start()

    def _read(self) -> None:
        import grpc

        try:
            for message in self._stream:
                if message.HasField("event"):
                    recorded = message.event.recorded_time.ToNanoseconds() / 1e9
                    self.latencies.append((time.time() - recorded) * 1000)
        except grpc.RpcError:
            pass  # cancelled by stop()

    def _write(self, stub, gpb) -> None:
        n = 0
        while not self._stop.wait(0.02):
            n += 1
            request = gpb.CreateGrantRequest(
                request_id=f"latency-{time.time_ns()}-{n}", customer_key="u0", currency_key=seed.CURRENCY, amount="1"
            )
            stub.CreateGrant(request, timeout=30)

    def stop(self) -> list[float]:
        self._stop.set()
        self._writer.join(30)
        time.sleep(0.5)  # the last events reach the stream
        self._stream.cancel()
        self._reader.join(30)
        return self.latencies


# ------------------------------------------------------------------------------ 5. webhooks


def webhook_delivery(backend: Backend, size: Size, log) -> list[Row]:
    """N events appended to the log at once, delivered by the grant service's dispatcher to one
    local receiver: through one endpoint (one lane: first attempts one at a time, in order), then
    through four endpoints (four lanes). The figure is events delivered per second, from the
    first delivery seen to the last."""
    from credit_common.db.engine import session_factories
    from grant_service.adapters.unit_of_work import SqlGrantUnitOfWork
    from grant_service.domain.events import EventType, NewEvent
    from grant_service.v1 import grant_service_pb2_grpc
    from grant_service.v1 import webhooks_pb2 as wpb
    from tests.support.webhook_receiver import receiving

    n = max(500, size.usage_customers)
    rows: list[Row] = []
    for endpoints in (1, 4):
        url = backend.new_database(f"webhooks{endpoints}")
        engine = seed.migrated_engine(url, GRANT_MIGRATIONS)
        args = ["--catch-up-interval", "0", "--webhook-allow-http", "--webhook-allow-private"]
        server = start_service("grant_service", url, backend.run_dir, args=args)
        try:
            with receiving() as receiver:
                channel = keyed_channel(server.address, server.api_key)
                stub = grant_service_pb2_grpc.GrantServiceStub(channel)
                for e in range(endpoints):
                    stub.CreateWebhookEndpoint(wpb.CreateWebhookEndpointRequest(url=f"{receiver.url}/{e}"), timeout=30)
                channel.close()
                time.sleep(0.01)  # events recorded after the endpoints exist
                now = _now()
                events = [
                    NewEvent(
                        f"evt_{i:07d}",
                        EventType.CREDITS_GRANTED,
                        f"c{i % 100}",
                        "ai-credits",
                        "",
                        now,
                        f"bench:{i}",
                        {"grant_id": f"grt_{i}", "amount": Decimal(1000), "effective_time": now},
                    )
                    for i in range(n)
                ]
                with session_factories(engine).write() as session, session.begin():
                    SqlGrantUnitOfWork(session).events.add(events)
                total = n * endpoints
                limit = time.perf_counter() + max(120.0, total / 50)
                first_at = None
                while receiver.count() < total and time.perf_counter() < limit:
                    if first_at is None and receiver.count():
                        first_at = time.perf_counter()
                    time.sleep(0.01)
                done_at = time.perf_counter()
                got = receiver.count()
        finally:
            server.stop()
            engine.dispose()
        if got < total or first_at is None:
            raise AssertionError(f"webhooks: {got} of {total} deliveries arrived")
        rate = total / (done_at - first_at)
        log(f"  {endpoints} endpoint(s): {total} deliveries in {done_at - first_at:.1f}s ({rate:,.0f}/s)")
        rows.append(
            Row(
                "webhooks",
                backend.name,
                f"deliveries/s to a local receiver ({endpoints} endpoint{'s' if endpoints > 1 else ''}, N={n:,})",
                rate,
                "deliveries/s",
                bar=">= 500/s",
                verdict=_judge(rate >= 500),
            )
        )
    return rows


# ------------------------------------------------------------------------ metrics on and off


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
