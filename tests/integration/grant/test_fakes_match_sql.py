"""The in-memory fakes of the grant ports (tests/support/grant_fakes.py) keep the contract the SQL
adapters keep: the same use cases, run over the fakes and over a real database, give the same
answers and leave the same ledger, grants, balances, subscriptions and events; the debit port runs
the same rule the same way (order, a DomainError as one order's answer, any other failure each order
alone). What the unit tests of the use cases learn over the fakes therefore holds over SQL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

from credit_common.clock import ManualClock
from credit_common.db.engine import DatabaseSettings, create_db_engine, session_factories
from credit_common.db.migrations import upgrade
from credit_common.errors import DomainError, NotFound
from credit_common.pagination import PageRequest
from credit_common.periods import Cadence
from grant_service.domain.alerts import AlertLevel
from grant_service.domain.clocks import REAL_TIME
from grant_service.domain.schedules import ScheduledAmount
from grant_service.service_layer import alerts, balances, operators, simulated_clocks
from grant_service.service_layer.context import GrantContext
from grant_service.service_layer.issuance import catch_up
from grant_service.service_layer.ports import DebitOrder
from grant_service.service_layer.subscriptions import (
    ScheduleSpec,
    SubscriptionSpec,
    apply_credit_currency,
    apply_subscription,
    get_subscription,
)
from grant_service.service_layer.usage import UsageRequest, UsageResult, report_usage, report_usages
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


_LAST = datetime.max.replace(tzinfo=UTC)


def _observe(ctx: GrantContext, customer_key: str) -> dict:
    everything = PageRequest(1000, None)
    entries, _ = balances.list_ledger_entries(ctx, customer_key, "", None, None, None, everything)
    grants, _, now = balances.list_grants(ctx, customer_key, "", "", everything)
    balance = balances.get_balance(ctx, customer_key, "ai-credits", None, True)
    sub = get_subscription(ctx, f"sub_{customer_key}")
    events = ctx.transactions.read(lambda uow: uow.events.after(None, 1000))
    return {
        "ledger": [(e.type, e.effective_time, e.amount, e.description) for e in entries],
        # In a canonical order: grants of one effective time are listed by id, and ids differ run to run.
        "grants": sorted(
            (
                (g.effective_time, g.expire_time, g.amount, g.void_time, g.status_at(now), g.remaining_at(now))
                for g in grants
            ),
            key=lambda g: (g[0], g[1] or _LAST, g[2], g[3] or _LAST),
        ),
        "balance": (balance.as_of, balance.available, sorted(g.remaining_at(balance.as_of) for g in balance.grants)),
        "subscription": (sub.revision, sub.end_time, [s.amounts for s in sub.credit_schedules]),
        "events": [
            (e.event.type, e.event.customer_key, e.event.occurred_time)
            for e in events
            if e.event.customer_key == customer_key
        ],
    }


def _answer(result: UsageResult | DomainError) -> tuple:
    """A usage's answer, without its ids (made at random)."""
    if isinstance(result, DomainError):
        return (result.reason, dict(result.metadata))
    u = result.usage
    return (result.replayed, u.credits, u.balance_after, u.usage_time, [amount for _, amount in result.debits])


def _story(ctx: GrantContext, clock: ManualClock) -> dict:
    """Amendments, a cancel, one-off grants (one for later), a void, alert levels, usage (a batch with
    a catch-up first, refusals and a replay; one on a test clock) and a test clock."""
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
    # The one-off grant for later is due to open: the batch catches "a" up first.
    usages = report_usages(
        ctx,
        [
            UsageRequest("u1", "a", "gpt", Decimal(10), ""),  # 25 credits
            UsageRequest("u2", "a", "gpt", Decimal(1000), ""),  # refused: too few credits
            UsageRequest("u1", "a", "gpt", Decimal(10), ""),  # replayed
            UsageRequest("u3", "nobody", "gpt", Decimal(1), ""),  # refused: no such customer
            UsageRequest("u4", "a", "gpt", Decimal(86), ""),  # 215 credits: below the alert level
        ],
    )
    usages.append(report_usage(ctx, "u5", "a", "gpt", Decimal(4), ""))  # uses the period's grant up

    test_clock = simulated_clocks.create_test_clock(ctx, "trial", ANCHOR, "k1")
    apply_subscription(ctx, _spec(1, "b", [("30", ANCHOR)], test_clock_id=test_clock.test_clock_id))
    simulated_clocks.advance_test_clock(ctx, test_clock.test_clock_id, ANCHOR + timedelta(days=75), "k2")
    usages.append(report_usage(ctx, "ub", "b", "gpt", Decimal(1), ""))  # at the test clock's time

    clock.set(NOW + timedelta(days=45))
    return {"a": _observe(ctx, "a"), "b": _observe(ctx, "b"), "usages": [_answer(u) for u in usages]}


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
    assert len(over_sql["a"]["ledger"]) > 8 and len(over_sql["b"]["ledger"]) == 6  # the story happened
    assert [answer[0] for answer in over_sql["usages"]] == [
        False,
        "INSUFFICIENT_CREDITS",
        True,
        "CUSTOMER_NOT_FOUND",
        False,
        False,
        False,
    ]


def _port_story(ctx: GrantContext) -> tuple[list, list, list]:
    """The debit port's rules, with a rule of its own: what each order answers, in which order the
    rule ran (the orders of one call together, a customer's in the order given; after a failure
    that is not a DomainError, each alone), and what was committed."""
    ran: list[str] = []

    def rule(uow, order: DebitOrder) -> str:
        ran.append(order.request_id)
        if order.request_id == "refused":
            raise NotFound("refused before writing anything")
        uow.request_ids.add("port", order.request_id, order.fingerprint, order.customer_key, NOW)
        if order.request_id == "broken":
            raise RuntimeError("a failure that is not the order's own answer")
        return order.request_id

    def orders(*keys: tuple[str, str]) -> list[DebitOrder]:
        return [DebitOrder("port", request_id, "fp", customer, "gpt", Decimal(1), "") for request_id, customer in keys]

    port = ctx.transactions.debit_port
    answers = port.make(orders(("b1", "b"), ("a1", "a"), ("refused", "a"), ("a2", "a")), rule)
    answers += port.make(orders(("c1", "c"), ("broken", "b"), ("c2", "c")), rule)
    names = ["a1", "a2", "b1", "refused", "c1", "broken", "c2"]
    kept = ctx.transactions.read(lambda uow: [n for n in names if uow.request_ids.get("port", n) is not None])
    return [a if isinstance(a, str) else type(a).__name__ for a in answers], ran, kept


def test_the_debit_port_runs_a_rule_the_same_way_over_the_fake_and_over_sql(database_url_factory):
    engine = create_db_engine(DatabaseSettings(url=database_url_factory("fake_port")))
    upgrade("grant_service.adapters:migrations", engine)
    try:
        over_sql = _port_story(sql_context(session_factories(engine), ManualClock(NOW)))
    finally:
        engine.dispose()
    over_fake = _port_story(fake_context(ManualClock(NOW)))

    assert over_fake == over_sql
    answers, ran, kept = over_sql
    assert answers == ["b1", "a1", "NotFound", "a2", "c1", "RuntimeError", "c2"]
    # In customer key order; the second call's group stops at its failure ("broken"), then each order
    # runs alone.
    assert ran == ["a1", "refused", "a2", "b1", "broken", "broken", "c1", "c2"]
    assert kept == ["a1", "a2", "b1", "c1", "c2"]
