"""Benchmark fixtures written straight into the services' databases with set-based SQL
(INSERT ... SELECT over a number series). This is not the system under test: it only builds,
fast, the state a long-running deployment would have, and the servers then start cold on it."""

from __future__ import annotations

import time
from datetime import datetime, timedelta
from decimal import Decimal

from sqlalchemy import (
    Column,
    Connection,
    Engine,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    UniqueConstraint,
    cast,
    delete,
    func,
    insert,
    literal,
    select,
)
from sqlalchemy.sql import Selectable

from catalog_service.adapters import orm as catalog_orm
from credit_common.db.engine import DatabaseSettings, create_db_engine
from credit_common.db.migrations import upgrade
from credit_common.periods import Cadence, add_months, period_start
from grant_service.adapters.mappers import encode_amounts
from grant_service.adapters.orm import (
    REAL_TIME,
    CurrencyRow,
    CustomerRow,
    GrantRow,
    LedgerEntryRow,
    RateRow,
    RateSetRow,
    ScheduleRow,
    SubscriptionRow,
)
from grant_service.domain.balances import RECURRING_PRIORITY
from grant_service.domain.schedules import ScheduledAmount

CURRENCY = "ai-credits"
FEATURE = "gpt-calls"
ENTITLEMENT = "ai-credits-monthly"
PLAN = "bench"
BEGINNING_OF_TIME = datetime.fromisoformat("1970-01-01T00:00:00+00:00")


# Column order of the INSERT ... SELECTs below (seeding and the storm baseline share it).
GRANT_COLUMNS = [
    "grant_id", "customer_key", "currency_key", "clock_key", "source", "subscription_id", "schedule_id",
    "entitlement_key", "period_index", "segment", "amount", "used", "effective_time", "expire_time",
    "priority", "void_time", "reason", "closed",
]  # fmt: skip
ENTRY_COLUMNS = [
    "entry_id", "customer_key", "currency_key", "type", "amount", "grant_id", "effective_time",
    "subscription_id", "description",
]  # fmt: skip


def migrated_engine(url: str, migrations: str) -> Engine:
    engine = create_db_engine(DatabaseSettings(url=url, pool_size=2, max_overflow=2))
    upgrade(migrations, engine)
    return engine


def series(conn: Connection, n: int) -> Selectable:
    """A selectable of one integer column `i` = 0 .. n-1."""
    if conn.dialect.name == "postgresql":
        return select(func.generate_series(0, n - 1).label("i")).subquery("seq")
    seq = select(literal(0, Integer).label("i")).cte("seq", recursive=True)
    return seq.union_all(select(seq.c.i + 1).where(seq.c.i + 1 < n))


def _key(prefix: str, i) -> object:
    return literal(prefix, String) + cast(i, String)


def _typed(value: object, column) -> object:
    return literal(value, type_=column.type)


def seed_rates(conn: Connection) -> None:
    """The currency burnt by the benchmark's metered feature, 1 credit per unit, in force forever."""
    conn.execute(insert(CurrencyRow).values(currency_key=CURRENCY, revision=1))
    rate_set_id = conn.execute(
        insert(RateSetRow)
        .values(currency_key=CURRENCY, revision=1, effective_time=BEGINNING_OF_TIME)
        .returning(RateSetRow.rate_set_id)
    ).scalar_one()
    conn.execute(insert(RateRow).values(rate_set_id=rate_set_id, feature_key=FEATURE, credits_per_unit=Decimal(1)))


def seed_subscriptions(
    conn: Connection, prefix: str, n: int, anchor: datetime, next_index: int, amount: Decimal, now: datetime
) -> None:
    """n customers `<prefix><i>`, each with one subscription of one monthly schedule anchored at
    `anchor` whose cursor is at period `next_index`."""
    s = series(conn, n)
    customer = _key(prefix, s.c.i)
    subscription = _key(f"sub_{prefix}", s.c.i)
    conn.execute(
        insert(CustomerRow).from_select(
            ["customer_key", "clock_key"], select(customer, _typed(REAL_TIME, CustomerRow.clock_key))
        )
    )
    conn.execute(
        insert(SubscriptionRow).from_select(
            ["subscription_id", "customer_key", "revision", "start_time", "end_time", "clock_key", "update_time"],
            select(
                subscription,
                customer,
                literal(1, Integer),
                _typed(anchor, SubscriptionRow.start_time),
                _typed(None, SubscriptionRow.end_time),
                _typed(REAL_TIME, SubscriptionRow.clock_key),
                _typed(now, SubscriptionRow.update_time),
            ),
        )
    )
    amounts = encode_amounts([ScheduledAmount(amount, anchor)])
    conn.execute(
        insert(ScheduleRow).from_select(
            [
                "schedule_id",
                "subscription_id",
                "customer_key",
                "clock_key",
                "entitlement_key",
                "currency_key",
                "cadence",
                "anchor_time",
                "end_time",
                "amounts",
                "position",
                "removed",
                "next_period_index",
                "next_period_start",
            ],
            select(
                _key(f"sch_{prefix}", s.c.i),
                subscription,
                customer,
                _typed(REAL_TIME, ScheduleRow.clock_key),
                _typed(ENTITLEMENT, ScheduleRow.entitlement_key),
                _typed(CURRENCY, ScheduleRow.currency_key),
                _typed(Cadence.MONTHLY.value, ScheduleRow.cadence),
                _typed(anchor, ScheduleRow.anchor_time),
                _typed(None, ScheduleRow.end_time),
                _typed(amounts, ScheduleRow.amounts),
                literal(0, Integer),
                _typed(False, ScheduleRow.removed),
                literal(next_index, Integer),
                _typed(period_start(anchor, Cadence.MONTHLY, next_index), ScheduleRow.next_period_start),
            ),
        )
    )


def seed_issued_periods(
    conn: Connection, prefix: str, n: int, anchor: datetime, periods: int, amount: Decimal, debit: Decimal
) -> None:
    """Periods 0 .. periods-1 of the schedules of `seed_subscriptions(prefix)` as the service would
    have issued them: a grant and its GRANT entry per period, a DEBIT of `debit` in each, and the
    EXPIRE of what was left of every period but the last (which is current)."""
    s = series(conn, n)
    customer = _key(prefix, s.c.i)
    for k in range(periods):
        start, stop = period_start(anchor, Cadence.MONTHLY, k), period_start(anchor, Cadence.MONTHLY, k + 1)
        closed = k < periods - 1
        grant_id = _key(f"grt_{prefix}{k}_", s.c.i)
        conn.execute(
            insert(GrantRow).from_select(
                GRANT_COLUMNS,
                select(
                    grant_id,
                    customer,
                    _typed(CURRENCY, GrantRow.currency_key),
                    _typed(REAL_TIME, GrantRow.clock_key),
                    _typed("RECURRING", GrantRow.source),
                    _key(f"sub_{prefix}", s.c.i),
                    _key(f"sch_{prefix}", s.c.i),
                    _typed(ENTITLEMENT, GrantRow.entitlement_key),
                    literal(k, Integer),
                    literal(0, Integer),
                    _typed(amount, GrantRow.amount),
                    _typed(debit, GrantRow.used),
                    _typed(start, GrantRow.effective_time),
                    _typed(stop, GrantRow.expire_time),
                    literal(RECURRING_PRIORITY, Integer),
                    _typed(None, GrantRow.void_time),
                    _typed("", GrantRow.reason),
                    _typed(closed, GrantRow.closed),
                ),
            )
        )
        entries = [("g", "GRANT", amount, start, "opens_grant_id")]
        if debit:
            entries.append(("d", "DEBIT", -debit, start + timedelta(hours=1), None))
        if closed:
            entries.append(("e", "EXPIRE", -(amount - debit), stop, "closes_grant_id"))
        for tag, type_, value, effective, link in entries:
            columns = list(ENTRY_COLUMNS)
            values = [
                _key(f"led_{prefix}{tag}{k}_", s.c.i),
                customer,
                _typed(CURRENCY, LedgerEntryRow.currency_key),
                _typed(type_, LedgerEntryRow.type),
                _typed(value, LedgerEntryRow.amount),
                grant_id,
                _typed(effective, LedgerEntryRow.effective_time),
                _key(f"sub_{prefix}", s.c.i),
                _typed(f"bench {type_.lower()}", LedgerEntryRow.description),
            ]
            if link:
                columns.append(link)
                values.append(grant_id)
            conn.execute(insert(LedgerEntryRow).from_select(columns, select(*values)))


def seed_catalog_customers(conn: Connection, prefix: str, n: int, now: datetime) -> None:
    s = series(conn, n)
    table = catalog_orm.CustomerRow.__table__
    conn.execute(
        insert(table).from_select(
            ["key", "display_name", "test_clock_id", "create_time"],
            select(
                _key(prefix, s.c.i),
                _key("Bench customer ", s.c.i),
                _typed(None, table.c.test_clock_id),
                _typed(now, table.c.create_time),
            ),
        )
    )


def anchor_for_periods(now: datetime, periods: int) -> datetime:
    """An anchor such that periods-1 periods are over at `now` and period periods-1 is current."""
    anchor = add_months(now - timedelta(days=1), -(periods - 1)).replace(microsecond=0)
    assert period_start(anchor, Cadence.MONTHLY, periods - 1) <= now < period_start(anchor, Cadence.MONTHLY, periods)
    return anchor


# ------------------------------------------------------------------ the renewal-storm baseline


def scratch_copy(table: Table, metadata: MetaData, name: str) -> Table:
    """A table of the same columns, unique constraints and indexes as `table` (no foreign keys)."""
    copy = Table(
        name,
        metadata,
        *[
            Column(c.name, c.type, primary_key=c.primary_key, nullable=c.nullable, autoincrement=c.autoincrement)
            for c in table.columns
        ],
    )
    for number, constraint in enumerate(c for c in table.constraints if isinstance(c, UniqueConstraint)):
        copy.append_constraint(UniqueConstraint(*[c.name for c in constraint.columns], name=f"uq_{name}_{number}"))
    for number, index in enumerate(table.indexes):
        Index(f"ix_{name}_{number}", *[copy.c[c.name] for c in index.columns], unique=index.unique)
    return copy


def storm_baseline(engine: Engine, n: int, now: datetime) -> float:
    """Seconds to INSERT ... SELECT n grants (one per due schedule) and their n GRANT entries, into
    scratch copies of `grants` and `ledger_entries` (same columns, constraints and indexes), in one
    transaction. The scratch tables are dropped afterwards."""
    metadata = MetaData()
    grants = scratch_copy(GrantRow.__table__, metadata, "bench_scratch_grants")
    ledger = scratch_copy(LedgerEntryRow.__table__, metadata, "bench_scratch_ledger")
    metadata.create_all(engine)
    sch = ScheduleRow.__table__
    try:
        with engine.connect() as conn:
            started = time.perf_counter()
            with conn.begin():
                conn.execute(
                    insert(grants).from_select(
                        GRANT_COLUMNS,
                        select(
                            literal("grt_", String) + sch.c.schedule_id,
                            sch.c.customer_key,
                            sch.c.currency_key,
                            sch.c.clock_key,
                            _typed("RECURRING", GrantRow.source),
                            sch.c.subscription_id,
                            sch.c.schedule_id,
                            sch.c.entitlement_key,
                            sch.c.next_period_index,
                            literal(0, Integer),
                            _typed(Decimal(1000), GrantRow.amount),
                            _typed(Decimal(0), GrantRow.used),
                            sch.c.next_period_start,
                            _typed(add_months(now, 1), GrantRow.expire_time),
                            literal(RECURRING_PRIORITY, Integer),
                            _typed(None, GrantRow.void_time),
                            _typed("", GrantRow.reason),
                            _typed(False, GrantRow.closed),
                        ).where(sch.c.next_period_start <= now),
                    )
                )
                conn.execute(
                    insert(ledger).from_select(
                        [*ENTRY_COLUMNS, "opens_grant_id"],
                        select(
                            literal("led_", String) + grants.c.grant_id,
                            grants.c.customer_key,
                            grants.c.currency_key,
                            _typed("GRANT", LedgerEntryRow.type),
                            grants.c.amount,
                            grants.c.grant_id,
                            grants.c.effective_time,
                            grants.c.subscription_id,
                            literal("period ", String) + cast(grants.c.period_index, String),
                            grants.c.grant_id,
                        ),
                    )
                )
            elapsed = time.perf_counter() - started
            count = conn.execute(select(func.count()).select_from(ledger)).scalar_one()
            if count != n:
                raise AssertionError(f"baseline inserted {count} rows, expected {n}")
        return elapsed
    finally:
        metadata.drop_all(engine)


def clear(conn: Connection, *tables) -> None:
    for table in tables:
        conn.execute(delete(table))
