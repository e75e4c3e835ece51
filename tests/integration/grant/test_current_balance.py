"""GetBalance's hot path (one statement on the thread's own connection, real-time customers with
nothing due) answers exactly what the general path answers, and steps aside when it does not apply."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from sqlalchemy import text

from credit_common.clock import ManualClock
from credit_common.db.engine import DatabaseSettings, ThreadConnections, create_db_engine, session_factories
from credit_common.db.migrations import upgrade
from credit_common.errors import NotFound
from credit_common.periods import Cadence
from grant_service.adapters.balance_reads import current_grants
from grant_service.domain.schedules import ScheduledAmount
from grant_service.service_layer.balances import current_balance, get_balance
from grant_service.service_layer.context import GrantContext
from grant_service.service_layer.simulated_clocks import create_test_clock
from grant_service.service_layer.subscriptions import (
    ScheduleSpec,
    SubscriptionSpec,
    apply_credit_currency,
    apply_subscription,
)
from grant_service.service_layer.usage import report_usage
from tests.support.grant_context import sql_context

ANCHOR = datetime(2026, 1, 31, 10, tzinfo=UTC)


def _context(url: str, clock: ManualClock) -> GrantContext:
    engine = create_db_engine(DatabaseSettings(url=url))
    upgrade("grant_service.adapters:migrations", engine)
    return sql_context(session_factories(engine), clock, test_clocks_enabled=True)


def _subscribe(ctx: GrantContext, customer: str, clock_key: str = "") -> None:
    monthly = ScheduleSpec("monthly", "ai-credits", Cadence.MONTHLY, (ScheduledAmount(Decimal("100.5"), ANCHOR),))
    yearly = ScheduleSpec("yearly", "ai-credits", Cadence.YEARLY, (ScheduledAmount(Decimal("1000"), ANCHOR),))
    spec = SubscriptionSpec(f"sub-{customer}", customer, 1, ANCHOR, None, (monthly, yearly), clock_key)
    apply_subscription(ctx, spec)


def _same(a, b) -> None:
    assert (a.available, a.as_of) == (b.available, b.as_of)
    assert [(g.grant_id, g.used, g.remaining_at(a.as_of), g.status_at(a.as_of)) for g in a.grants] == [
        (g.grant_id, g.used, g.remaining_at(b.as_of), g.status_at(b.as_of)) for g in b.grants
    ]


def test_the_hot_path_answers_what_the_general_path_answers(database_url_factory):
    clock = ManualClock(ANCHOR)
    ctx = _context(database_url_factory("hot"), clock)
    apply_credit_currency(ctx, "ai-credits", 1, {"calls": Decimal("0.25")}, None)
    _subscribe(ctx, "acme")
    checked = 0
    for day in range(0, 400, 9):
        clock.set(ANCHOR + timedelta(days=day, hours=day % 24))
        get_balance(ctx, "acme", "ai-credits", None, True)  # catches up whatever is due
        report_usage(ctx, f"u{day}", "acme", "calls", Decimal(day % 7 + 1), "")
        hot = current_balance(ctx, "acme", "ai-credits", True)
        assert hot is not None  # real time, nothing due: the hot path answers
        general = get_balance(ctx, "acme", "ai-credits", clock.now(), True)  # as_of: the ledger is summed
        _same(hot, general)
        assert hot.grants and hot.available > 0
        checked += 1
    assert checked > 40


def test_the_hot_path_steps_aside_when_a_period_or_an_expiry_is_due(database_url_factory):
    clock = ManualClock(ANCHOR + timedelta(days=1))
    ctx = _context(database_url_factory("due"), clock)
    _subscribe(ctx, "acme")
    assert current_balance(ctx, "acme", "ai-credits", False) is None  # period 0 not issued yet
    assert get_balance(ctx, "acme", "ai-credits", None, False).available == Decimal("1100.5")
    assert current_balance(ctx, "acme", "ai-credits", False).available == Decimal("1100.5")
    clock.set(datetime(2026, 2, 28, 10, tzinfo=UTC))  # February's period starts (clamped to the 28th)
    assert current_balance(ctx, "acme", "ai-credits", False) is None
    info = get_balance(ctx, "acme", "ai-credits", None, True)
    assert info.available == Decimal("1100.5") and len(info.grants) == 2
    assert current_balance(ctx, "acme", "ai-credits", True).available == Decimal("1100.5")


def test_test_clock_customers_and_unknown_customers(database_url_factory):
    clock = ManualClock(ANCHOR + timedelta(days=1))
    ctx = _context(database_url_factory("clocks"), clock)
    test_clock = create_test_clock(ctx, "frozen", ANCHOR + timedelta(hours=1), "clock-1")
    _subscribe(ctx, "sim", test_clock.test_clock_id)
    get_balance(ctx, "sim", "ai-credits", None, False)
    assert current_balance(ctx, "sim", "ai-credits", False) is None  # its "now" is the test clock's
    with pytest.raises(NotFound) as raised:
        current_balance(ctx, "nobody", "ai-credits", False)
    assert raised.value.reason == "CUSTOMER_NOT_FOUND"
    assert current_balance(ctx, "sim", "other-credits", False) is None  # no grant: the general path says why


def _in_transaction(connection) -> bool:
    raw = connection.connection.dbapi_connection
    if connection.dialect.name == "postgresql":
        return raw.info.transaction_status != 0  # psycopg TransactionStatus.IDLE
    return raw.in_transaction


def test_thread_connections_are_kept_per_thread_and_hold_no_transaction(database_url_factory):
    engine = create_db_engine(DatabaseSettings(url=database_url_factory("threads")))
    reads = ThreadConnections(engine)
    seen: list[tuple[int, bool]] = []

    def read() -> None:
        for _ in range(2):
            seen.append(reads.run(lambda c: (id(c.connection.dbapi_connection), c.scalar(text("SELECT 1")) == 1)))
            assert not reads.run(_in_transaction)

    threads = [threading.Thread(target=read) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(seen) == 6 and all(ok for _, ok in seen)
    assert len({connection for connection, _ in seen}) == 3  # one per thread, kept between reads
    engine.dispose()


@pytest.mark.postgres
@pytest.mark.parametrize("backend", ["postgresql"])
def test_a_kept_connection_that_went_stale_is_replaced_and_the_read_run_again(database_url_factory, backend):
    engine = create_db_engine(DatabaseSettings(url=database_url_factory("stale"), pre_ping=False))
    reads = ThreadConnections(engine)
    first = reads.run(lambda c: c.scalar(text("SELECT pg_backend_pid()")))
    with engine.connect() as other:
        other.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": first})
    second = reads.run(lambda c: c.scalar(text("SELECT pg_backend_pid()")))
    assert second != first
    assert reads.run(lambda c: c.scalar(text("SELECT pg_backend_pid()"))) == second
    engine.dispose()


def test_the_reads_of_concurrent_callers_answer_each_its_own_customer_and_currency(database_url_factory):
    """GetBalance's hot-path reads of concurrent callers run as one statement (credit_common.batching):
    each caller still gets exactly what a read of its own customer and currency alone gives."""
    clock = ManualClock(ANCHOR + timedelta(days=40))
    ctx = _context(database_url_factory("batched"), clock)
    apply_credit_currency(ctx, "ai-credits", 1, {"calls": Decimal("0.25")}, None)
    apply_credit_currency(ctx, "gpu-credits", 1, {"render": Decimal("1")}, None)
    customers = [f"c{i}" for i in range(6)]
    for i, customer in enumerate(customers):
        _subscribe(ctx, customer)
        report_usage(ctx, f"u{i}", customer, "calls", Decimal(i + 1), "")
    asks = [(customer, currency) for customer in (*customers, "nobody") for currency in ("ai-credits", "gpu-credits")]
    expected = {ask: _alone(ctx, *ask) for ask in asks}
    wrong: list = []

    def caller(k: int) -> None:
        for n in range(60):
            ask = asks[(k * 7 + n) % len(asks)]
            if _answer(lambda ask=ask: get_balance(ctx, *ask, None, True)) != expected[ask]:
                wrong.append(ask)

    threads = [threading.Thread(target=caller, args=(k,)) for k in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert wrong == []
    assert expected[("c3", "ai-credits")][0] == Decimal("100.5") + 1000 - 1  # 4 calls at 0.25
    # One statement for several customers: each one's rows (two active grants each), none for "nobody".
    read = ctx.transactions.factories.single_statement.run(
        lambda c: current_grants(c, ["c1", "nobody", "c4"], "ai-credits", clock.now())
    )
    assert sorted(read) == ["c1", "c4"]
    assert all(len(rows) == 2 and {r.customer_key for r in rows} == {k} for k, rows in read.items())
    assert expected[("nobody", "ai-credits")] == "CUSTOMER_NOT_FOUND"


def _answer(read) -> object:
    try:
        info = read()
    except NotFound as error:
        return error.reason
    if info is None:
        return None
    return info.available, [
        (g.grant_id, g.used, g.remaining_at(info.as_of), g.status_at(info.as_of)) for g in info.grants
    ]


def _alone(ctx: GrantContext, customer: str, currency: str) -> object:
    """The answer of the general path (asked "as of" the customer's now, it reads in a transaction)."""
    return _answer(lambda: get_balance(ctx, customer, currency, ctx.clock.now(), True))
