"""The in-memory fakes of the grant ports (tests/support/grant_fakes.py) keep the contract the SQL
adapters keep: the same use cases, run over the fakes and over a real database, leave the same
ledger, grants, balances, subscriptions and events. What the unit tests of the use cases learn over
the fakes therefore holds over SQL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

from credit_common.clock import ManualClock
from credit_common.db.engine import DatabaseSettings, create_db_engine, session_factories
from credit_common.db.migrations import upgrade
from credit_common.pagination import PageRequest
from credit_common.periods import Cadence
from grant_service.domain.alerts import AlertLevel
from grant_service.domain.clocks import REAL_TIME
from grant_service.domain.schedules import ScheduledAmount
from grant_service.service_layer import alerts, balances, operators, simulated_clocks
from grant_service.service_layer.context import GrantContext
from grant_service.service_layer.issuance import catch_up
from grant_service.service_layer.subscriptions import (
    ScheduleSpec,
    SubscriptionSpec,
    apply_credit_currency,
    apply_subscription,
    get_subscription,
)
from tests.support.grant_context import sql_context
from tests.support.grant_fakes import fake_context

NOW = datetime(2026, 6, 1, 12, tzinfo=UTC)
ANCHOR = datetime(2026, 1, 31, 9, tzinfo=UTC)


def _spec(revision: int, customer_key: str, amounts, *, end=None, test_clock_id: str = "") -> SubscriptionSpec:
    scheduled = tuple(ScheduledAmount(Decimal(a), t) for a, t in amounts)
    return SubscriptionSpec(
        f"sub_{customer_key}",
        customer_key,
        revision,
        ANCHOR,
        end,
        (ScheduleSpec("monthly", "ai-credits", Cadence.MONTHLY, scheduled),),
        test_clock_id,
    )


def _observe(ctx: GrantContext, customer_key: str) -> dict:
    everything = PageRequest(1000, None)
    entries, _ = balances.list_ledger_entries(ctx, customer_key, "", None, None, None, everything)
    grants, _, now = balances.list_grants(ctx, customer_key, "", "", everything)
    balance = balances.get_balance(ctx, customer_key, "ai-credits", None, True)
    sub = get_subscription(ctx, f"sub_{customer_key}")
    events = ctx.transactions.read(lambda uow: uow.events.after(None, 1000))
    return {
        "ledger": [(e.type, e.effective_time, e.amount, e.description) for e in entries],
        "grants": [
            (g.effective_time, g.expire_time, g.amount, g.void_time, g.status_at(now), g.remaining_at(now))
            for g in grants
        ],
        "balance": (balance.as_of, balance.available, [g.remaining_at(balance.as_of) for g in balance.grants]),
        "subscription": (sub.revision, sub.end_time, [s.amounts for s in sub.credit_schedules]),
        "events": [
            (e.event.type, e.event.customer_key, e.event.occurred_time)
            for e in events
            if e.event.customer_key == customer_key
        ],
    }


def _story(ctx: GrantContext, clock: ManualClock) -> dict:
    """Amendments, a cancel, one-off grants (one for later), a void, alert levels and a test clock."""
    apply_credit_currency(ctx, "ai-credits", 1, {"gpt": Decimal("2.5")}, None)
    alerts.set_balance_alerts(ctx, "", "ai-credits", [AlertLevel("amount", Decimal(150))])
    apply_subscription(ctx, _spec(1, "a", [("100", ANCHOR)]))
    catch_up(ctx.transactions, clock_key=REAL_TIME, now=NOW, batch_size=2)
    apply_subscription(ctx, _spec(2, "a", [("100", ANCHOR), ("250", NOW - timedelta(days=3))]))
    extra, _ = operators.create_grant(ctx, "r1", "a", "ai-credits", Decimal(40), None, None, 5, "goodwill")
    operators.create_grant(ctx, "r2", "a", "ai-credits", Decimal(7), NOW + timedelta(days=1), None, None, "")
    operators.void_grant(ctx, extra.grant_id, "mistake", "v1")
    clock.set(NOW + timedelta(days=2))
    apply_subscription(ctx, _spec(3, "a", [("100", ANCHOR), ("250", NOW)], end=NOW + timedelta(days=20)))

    test_clock = simulated_clocks.create_test_clock(ctx, "trial", ANCHOR, "k1")
    apply_subscription(ctx, _spec(1, "b", [("30", ANCHOR)], test_clock_id=test_clock.test_clock_id))
    simulated_clocks.advance_test_clock(ctx, test_clock.test_clock_id, ANCHOR + timedelta(days=75), "k2")

    clock.set(NOW + timedelta(days=45))
    return {"a": _observe(ctx, "a"), "b": _observe(ctx, "b")}


def test_the_use_cases_leave_the_same_state_over_the_fakes_and_over_sql(database_url_factory):
    engine = create_db_engine(DatabaseSettings(url=database_url_factory("fakes")))
    upgrade("grant_service.adapters:migrations", engine)
    sql_clock, fake_clock = ManualClock(NOW), ManualClock(NOW)
    try:
        over_sql = _story(sql_context(session_factories(engine), sql_clock, test_clocks_enabled=True), sql_clock)
    finally:
        engine.dispose()
    over_fakes = _story(fake_context(fake_clock, test_clocks_enabled=True), fake_clock)

    assert over_fakes == over_sql
    assert len(over_sql["a"]["ledger"]) > 8 and len(over_sql["b"]["ledger"]) == 5  # the story happened
