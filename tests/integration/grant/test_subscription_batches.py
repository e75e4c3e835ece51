"""ApplySubscriptions' batches against a real database: one read of the batch's customers and
subscriptions, one INSERT per table for what it adds, one UPDATE of the subscriptions it changes;
and the schedule repository stores and reads back a schedule's terms exactly."""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import replace
from datetime import UTC, datetime
from decimal import Decimal

from sqlalchemy import event

from credit_common.clock import ManualClock
from credit_common.db.engine import DatabaseSettings, create_db_engine, session_factories
from credit_common.db.migrations import upgrade
from credit_common.periods import Cadence
from grant_service.domain.schedules import ScheduledAmount
from grant_service.service_layer.subscriptions import (
    ApplyOutcome,
    ScheduleSpec,
    SubscriptionSpec,
    apply_subscriptions,
    get_subscription,
)
from tests.support.grant_context import sql_context

NOW = datetime(2026, 6, 1, 12, tzinfo=UTC)
ANCHOR = datetime(2026, 5, 15, tzinfo=UTC)


def _specs(revision: int, amount: int, n: int = 40) -> list[SubscriptionSpec]:
    amounts = (ScheduledAmount(Decimal(amount), ANCHOR),)
    return [
        SubscriptionSpec(
            f"sub_{i}",
            f"c{i // 2}",  # two subscriptions per customer
            revision,
            ANCHOR,
            None,
            (
                ScheduleSpec("credits", "ai-credits", Cadence.MONTHLY, amounts),
                ScheduleSpec("extra", "ai-credits", Cadence.YEARLY, amounts),
            ),
            "",
        )
        for i in range(n)
    ]


def _statements(engine) -> list[tuple[str, str]]:
    """(verb, table) of each statement the engine runs from now on (an executemany counts once)."""
    seen: list[tuple[str, str]] = []

    def record(conn, cursor, statement, parameters, context, executemany) -> None:
        verb = statement.split()[0].upper()
        table = re.search(r'(?:FROM|INTO|UPDATE)\s+"?(\w+)', statement, re.IGNORECASE)
        seen.append((verb, table.group(1) if table else ""))

    event.listen(engine, "before_cursor_execute", record)
    return seen


def test_a_batch_reads_once_and_writes_one_statement_per_table(database_url_factory):
    engine = create_db_engine(DatabaseSettings(url=database_url_factory("batch")))
    upgrade("grant_service.adapters:migrations", engine)
    ctx = sql_context(session_factories(engine), ManualClock(NOW))
    statements = _statements(engine)

    results = apply_subscriptions(ctx, _specs(1, 5))

    assert {r.outcome for r in results} == {ApplyOutcome.APPLIED}
    expected = {
        ("SELECT", "customers"): 1,
        ("SELECT", "subscriptions"): 1,
        ("INSERT", "customers"): 1,
        ("INSERT", "subscriptions"): 1,
        ("INSERT", "schedules"): 1,
        ("INSERT", "events"): 1,  # one SUBSCRIPTION_CHANGED per revision, in one statement
    }
    if engine.dialect.name == "postgresql":
        expected[("SELECT", "")] = 1  # pg_notify: the streams of every process read the new events
    assert Counter(s for s in statements if s[0] != "BEGIN") == expected

    statements.clear()
    amended = _specs(2, 9)
    results = apply_subscriptions(ctx, amended)

    assert {r.outcome for r in results} == {ApplyOutcome.APPLIED}
    assert statements.count(("UPDATE", "subscriptions")) == 1
    assert statements.count(("SELECT", "customers")) == 1
    assert statements.count(("SELECT", "subscriptions")) == 1
    stored = get_subscription(ctx, "sub_7")
    assert (stored.revision, stored.update_time) == (2, NOW)
    clamped = (ScheduledAmount(Decimal(5), ANCHOR), ScheduledAmount(Decimal(9), NOW))  # 9 from ANCHOR: too late
    assert [s.amounts for s in stored.credit_schedules] == [clamped, clamped]
    assert {c.entitlement_key for c in results[7].clamped} == {"credits", "extra"}
    engine.dispose()


def test_a_schedule_is_stored_and_read_back_exactly(database_url_factory):
    engine = create_db_engine(DatabaseSettings(url=database_url_factory("schedules")))
    upgrade("grant_service.adapters:migrations", engine)
    ctx = sql_context(session_factories(engine), ManualClock(NOW))
    apply_subscriptions(ctx, _specs(1, 5, n=1))
    transactions = ctx.transactions
    stored = transactions.read(lambda uow: uow.schedules.of_subscription("sub_0"))
    assert [s.schedule_id for s in stored] == sorted(s.schedule_id for s in stored)
    first, second = sorted(stored, key=lambda s: s.position)
    assert (first.entitlement_key, second.entitlement_key) == ("credits", "extra")
    assert first.next_period_start == ANCHOR

    amounts = (ScheduledAmount(Decimal("1.5"), ANCHOR), ScheduledAmount(Decimal("2.25"), NOW))
    changed = replace(
        second, schedule=replace(second.schedule, amounts=amounts, end_time=NOW), position=0, removed=True
    )
    transactions.write(lambda uow: uow.schedules.save(changed))

    again = transactions.read(lambda uow: uow.schedules.of_subscription("sub_0", for_update=True))
    assert again == [changed if s == second else s for s in stored]
    engine.dispose()
