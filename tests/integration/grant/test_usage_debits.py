"""ReportUsage's single write transaction against a real database: the catch-up it does first when
something of the customer is due, and its per-process rates cache, which must follow a rate change
made by another replica."""

from __future__ import annotations

import threading
import time
from datetime import timedelta
from decimal import Decimal
from functools import partial

import pytest
from sqlalchemy import event, func, select

from credit_common.clock import ManualClock
from credit_common.db.engine import session_factories
from credit_common.errors import NotFound, ResourceExhausted
from credit_common.idempotency import fingerprint
from credit_common.periods import Cadence
from grant_service.adapters.orm import GrantRow, LedgerEntryRow, RequestIdRow, UsageRow
from grant_service.adapters.unit_of_work import SqlGrantUnitOfWork
from grant_service.domain.schedules import ScheduledAmount
from grant_service.service_layer.context import GrantContext
from grant_service.service_layer.operators import create_grant, void_grant
from grant_service.service_layer.ports import DebitOrder
from grant_service.service_layer.simulated_clocks import create_test_clock, delete_test_clock
from grant_service.service_layer.subscriptions import (
    ScheduleSpec,
    SubscriptionSpec,
    apply_credit_currency,
    apply_subscription,
)
from grant_service.service_layer.usage import SCOPE, UsageRequest, _debit, _Round, report_usage, report_usages
from tests.integration.grant.test_catch_up import NOW, _engine, _subscribe
from tests.integration.grant.test_read_waits_for_timer_batch import _lock_waits
from tests.support.batches import one_batch
from tests.support.grant_context import sql_context


def _ledger(engine, customer_key: str) -> list[tuple[str, Decimal]]:
    with engine.connect() as c:
        return [
            (type_, amount)
            for type_, amount in c.execute(
                select(LedgerEntryRow.type, LedgerEntryRow.amount)
                .where(LedgerEntryRow.customer_key == customer_key)
                .order_by(LedgerEntryRow.seq)
            )
        ]


def test_a_due_period_is_issued_and_an_old_grant_expired_before_the_debit(database_url_factory):
    engine = _engine(database_url_factory("debit_due"))
    clock = ManualClock(NOW)
    ctx = sql_context(session_factories(engine), clock)
    apply_credit_currency(ctx, "ai-credits", 1, {"gpt": Decimal("1")}, None)
    _subscribe(ctx, 1, NOW - timedelta(days=1))  # customer c0: 7 credits a month, the first period not issued
    assert report_usage(ctx, "u1", "c0", "gpt", Decimal(7), "").usage.balance_after == 0
    assert _ledger(engine, "c0") == [("GRANT", Decimal(7)), ("DEBIT", Decimal(-7))]
    with pytest.raises(ResourceExhausted):
        report_usage(ctx, "u2", "c0", "gpt", Decimal(1), "")
    clock.advance(timedelta(days=31))  # the next period has started, nothing has run since
    usage = report_usage(ctx, "u3", "c0", "gpt", Decimal(2), "").usage
    assert usage.balance_after == 5
    assert _ledger(engine, "c0")[2:] == [("EXPIRE", Decimal(0)), ("GRANT", Decimal(7)), ("DEBIT", Decimal(-2))]
    engine.dispose()


def test_a_rate_applied_by_another_replica_is_used_by_the_next_debit(database_url_factory):
    url = database_url_factory("debit_rates")
    engines = [_engine(url), _engine(url)]
    clock = ManualClock(NOW)
    debiting, applying = (sql_context(session_factories(e), clock) for e in engines)
    apply_credit_currency(applying, "ai-credits", 1, {"gpt": Decimal("2")}, NOW - timedelta(days=30))
    _subscribe(debiting, 1, NOW - timedelta(days=1))
    assert report_usage(debiting, "u1", "c0", "gpt", Decimal(1), "").usage.credits_per_unit == 2  # rates now cached
    apply_credit_currency(applying, "ai-credits", 2, {"gpt": Decimal("3")}, None)  # in force from NOW
    assert report_usage(debiting, "u2", "c0", "gpt", Decimal(1), "").usage.credits_per_unit == 3
    clock.advance(timedelta(seconds=-1))  # a debit before NOW still pays the first revision's rate
    assert report_usage(debiting, "u3", "c0", "gpt", Decimal(1), "").usage.credits_per_unit == 2
    for engine in engines:
        engine.dispose()


@pytest.mark.postgres
@pytest.mark.parametrize("backend", ["postgresql"])
def test_a_debit_that_waited_for_its_twin_replays_it_instead_of_failing(database_url_factory, backend):
    """Two replicas get the same request; one debits while the other waits for the customer's lock.
    The waiting one must answer with the first one's usage, even though what it read with the lock
    (in a snapshot taken before the wait) does not show that usage, and the credits are now gone."""
    engine = _engine(database_url_factory("debit_twin"))
    ctx = sql_context(session_factories(engine), ManualClock(NOW))
    apply_credit_currency(ctx, "ai-credits", 1, {"gpt": Decimal("1")}, None)
    _subscribe(ctx, 1, NOW - timedelta(days=1))
    report_usage(ctx, "u0", "c0", "gpt", Decimal(1), "")  # the period issued: 6 credits left
    answers: list = []

    def twin() -> None:
        try:
            answers.append(report_usage(ctx, "r", "c0", "gpt", Decimal(6), "").usage.usage_id)
        except ResourceExhausted as error:
            answers.append(error)

    try:
        with ctx.transactions.factories.write() as first, first.begin():
            assert SqlGrantUnitOfWork(first).customers.lock("c0") is not None
            waiting = threading.Thread(target=twin)
            waiting.start()
            deadline = time.monotonic() + 20
            while not _lock_waits(engine):
                assert time.monotonic() < deadline, f"the twin did not wait for the customer's lock: {answers}"
                time.sleep(0.02)
            order = DebitOrder(SCOPE, "r", fingerprint("c0", "gpt", "6", ""), "c0", "gpt", Decimal(6), "")
            unit = SqlGrantUnitOfWork(first)
            usage_id = _debit(ctx, _Round(ctx, 1), frozenset({"c0"}), unit, order).usage.usage_id  # all taken
        waiting.join(timeout=20)
        assert answers == [usage_id]
    finally:
        engine.dispose()


def test_a_debit_burns_only_open_grants_of_its_currency_active_at_its_instant(database_url_factory):
    """A debit reads all of the customer's open grants with its lock (one round trip on PostgreSQL) and
    burns those of its currency active at its "now": not a grant of another currency, not one that
    starts later, not one that has expired."""
    engine = _engine(database_url_factory("debit_open_grants"))
    clock = ManualClock(NOW)
    ctx = sql_context(session_factories(engine), clock)
    apply_credit_currency(ctx, "ai-credits", 1, {"gpt": Decimal("1")}, None)
    apply_credit_currency(ctx, "gpu-credits", 1, {"render": Decimal("1")}, None)
    _subscribe(ctx, 1, NOW - timedelta(days=1))  # c0: 7 ai-credits this period
    later, soon = NOW + timedelta(days=2), NOW + timedelta(hours=1)
    create_grant(ctx, "g1", "c0", "gpu-credits", Decimal(100), None, None, 0, "other currency")
    create_grant(ctx, "g2", "c0", "ai-credits", Decimal(100), later, None, 0, "starts later")
    create_grant(ctx, "g3", "c0", "ai-credits", Decimal(3), None, soon, 0, "expires soon")
    assert report_usage(ctx, "u1", "c0", "gpt", Decimal(4), "").debits == [
        (_grant_of(engine, "expires soon"), Decimal(3)),  # priority 0 first
        (_grant_of(engine, "the period's"), Decimal(1)),
    ]
    with pytest.raises(ResourceExhausted):
        report_usage(ctx, "u2", "c0", "gpt", Decimal(7), "")  # 6 left now; the 100 start later
    clock.advance(timedelta(hours=2))  # "expires soon" has expired (nothing left in it anyway)
    assert report_usage(ctx, "u3", "c0", "gpt", Decimal(6), "").usage.balance_after == 0
    engine.dispose()


def test_a_debits_pending_from_its_open_grants_is_the_catch_ups_pending(database_url_factory, backend):
    """A debit takes its customer's next expiry and next grant to open from the open grants it reads
    (Pending.of), not from adapters/catch_up.py pending_columns: the two agree, whatever the grants
    (expiring, never expiring, pending, a pending one voided, one expired and closed)."""
    engine = _engine(database_url_factory("debit_pending"))
    clock = ManualClock(NOW)
    ctx = sql_context(session_factories(engine), clock)
    apply_credit_currency(ctx, "ai-credits", 1, {"gpt": Decimal("1")}, None)
    _subscribe(ctx, 1, NOW - timedelta(days=1))

    def both() -> tuple:
        def read(uow):
            head = uow.accounts.head(DebitOrder(SCOPE, "", "", "c0", "gpt", Decimal(1), ""))
            return head.pending, uow.customers.pending("c0")

        return ctx.transactions.write(read)

    first = both()
    assert first[0] == first[1] and first[0].next_issue is not None  # the first period, due
    report_usage(ctx, "u0", "c0", "gpt", Decimal(1), "")  # issued
    day = timedelta(days=1)
    create_grant(ctx, "g1", "c0", "ai-credits", Decimal(5), None, NOW + 3 * day, 0, "expires")
    create_grant(ctx, "g2", "c0", "ai-credits", Decimal(5), None, None, 0, "never expires")
    create_grant(ctx, "g3", "c0", "ai-credits", Decimal(5), NOW + 5 * day, NOW + 9 * day, 0, "pending")
    voided, _ = create_grant(ctx, "g4", "c0", "ai-credits", Decimal(5), NOW + 4 * day, None, 0, "pending, voided")
    void_grant(ctx, voided.grant_id, "changed our minds", "v4")
    create_grant(ctx, "g5", "c0", "ai-credits", Decimal(5), None, NOW + timedelta(hours=1), 0, "expires first")
    seen = []
    for i, step in enumerate((timedelta(0), timedelta(hours=2), 4 * day, 6 * day)):
        clock.set(NOW + step)
        if step:
            report_usage(ctx, f"u{i}", "c0", "gpt", Decimal(1), "")  # caught up first: expiries, the opening
        from_grants, from_columns = both()
        assert from_grants == from_columns
        seen.append(from_columns)
    # what it went through: g5 expiring first, then g1, g3 pending, then opened
    assert [p.next_expiry for p in seen[:3]] == [NOW + timedelta(hours=1), NOW + 3 * day, NOW + 9 * day]
    assert [p.next_open for p in seen] == [NOW + 5 * day] * 3 + [None]
    engine.dispose()


def _grant_of(engine, reason: str) -> str:
    """The id of c0's grant given with `reason` ("the period's": its subscription's)."""
    is_it = GrantRow.subscription_id.is_not(None) if reason == "the period's" else GrantRow.reason == reason
    with engine.connect() as c:
        return c.scalar(select(GrantRow.grant_id).where(GrantRow.customer_key == "c0", is_it))


def test_debits_submitted_together_each_get_their_own_answer_from_one_group(database_url_factory):
    """Debits queued together run as one group (one transaction): two of one customer (the second sees
    the first's writes), a twin of the first (replayed), one of another customer, one of an unknown
    customer and one that the credits left do not cover; each gets exactly its own answer."""
    engine = _engine(database_url_factory("debit_group"))
    ctx = sql_context(session_factories(engine), ManualClock(NOW))
    apply_credit_currency(ctx, "ai-credits", 1, {"gpt": Decimal("1")}, None)
    _subscribe(ctx, 2, NOW - timedelta(days=1))  # c0, c1: 7 credits each
    report_usage(ctx, "warm", "c0", "gpt", Decimal(1), "")  # the periods issued: nothing due in the group
    report_usage(ctx, "warm1", "c1", "gpt", Decimal(1), "")
    commits: list[object] = []
    event.listen(engine, "commit", commits.append)
    debits = [
        ("a", "c0", 2),
        ("b", "c0", 3),
        ("a", "c0", 2),  # the twin of "a"
        ("c", "c1", 6),
        ("d", "nobody", 1),
        ("e", "c1", 1),  # c1 has nothing left after "c"
    ]
    answers = _together(ctx, [partial(report_usage, ctx, r, c, "gpt", Decimal(q), "") for r, c, q in debits])
    assert len(commits) == 2  # the holding unit's, then the six's
    a, b, twin, c, nobody, e = answers
    assert (a.usage.balance_after, b.usage.balance_after, c.usage.balance_after) == (4, 1, 0)
    assert twin.usage.usage_id == a.usage.usage_id
    assert isinstance(nobody, NotFound) and isinstance(e, ResourceExhausted)
    assert [amount for kind, amount in _ledger(engine, "c0") if kind == "DEBIT"] == [-1, -2, -3]
    assert [amount for kind, amount in _ledger(engine, "c1") if kind == "DEBIT"] == [-1, -6]
    engine.dispose()


def _together(ctx: GrantContext, calls: list) -> list:
    """Each call's result or error, the calls' debits having made one group, in this order."""
    return one_batch(
        lambda hold: ctx.transactions.debit_port.group_commit.run(lambda _session: hold()),
        lambda: ctx.transactions.debit_port.group_commit.waiting,
        calls,
    )


def test_a_batch_sent_again_replays_every_usage_from_two_reads_not_two_per_usage(database_url_factory):
    """A ReportUsageBatch sent again after an ambiguous failure: each usage answers as replayed with
    its first answer (usage and debits), and the usages are read together (SqlDebitAccountRepository
    .recorded in a debit group), not with two statements each."""
    engine = _engine(database_url_factory("debit_batch_replay"))
    ctx = sql_context(session_factories(engine), ManualClock(NOW))
    apply_credit_currency(ctx, "ai-credits", 1, {"gpt": Decimal("1")}, None)
    _subscribe(ctx, 5, NOW - timedelta(days=1))  # c0..c4: 7 credits each
    requests = [UsageRequest(f"r{i}", f"c{i % 5}", "gpt", Decimal(1), "") for i in range(30)]
    first = report_usages(ctx, requests[:25])  # c0..c4 five each; the last five are new the second time
    assert all(not r.replayed for r in first)
    statements: list[str] = []
    event.listen(engine, "before_cursor_execute", lambda *args: statements.append(args[2]))
    again = report_usages(ctx, requests)
    replays = [r for r in again if r.replayed]
    assert [(r.usage, r.debits) for r in replays] == [(r.usage, r.debits) for r in first]
    assert [r.usage.balance_after for r in again[25:]] == [1] * 5 and not any(r.replayed for r in again[25:])
    reads = [s for s in statements if s.lstrip().upper().startswith("SELECT")]
    assert len(reads) <= 12, reads  # the group's prefetch, the recorded usages and their debits (25 usages)
    engine.dispose()


AWKWARD_REQUEST_IDS = ['a"b', "a\\b", "\\", '"', "a,b", "{a}", "NULL", "null", " x ", "日本", 'a\\"b', "''"]


def test_a_batch_records_and_replays_request_ids_of_any_text(database_url_factory):
    """A batch's request ids are written and looked up as sets (on PostgreSQL as text arrays: quotes,
    backslashes, commas, braces and the word NULL are the caller's text): each is recorded as given,
    in the batch's one transaction (not by each usage alone after the set failed), and the batch
    sent again replays every usage."""
    engine = _engine(database_url_factory("debit_batch_request_ids"))
    ctx = sql_context(session_factories(engine), ManualClock(NOW))
    apply_credit_currency(ctx, "ai-credits", 1, {"gpt": Decimal("1")}, None)
    _subscribe(ctx, 3, NOW - timedelta(days=1))
    requests = [UsageRequest(r, f"c{i % 3}", "gpt", Decimal(1), "") for i, r in enumerate(AWKWARD_REQUEST_IDS)]
    warmed = report_usages(ctx, [UsageRequest(f"warm{i}", f"c{i}", "gpt", Decimal(1), "") for i in range(3)])
    warm = [(r.usage.request_id, r.usage.usage_id) for r in warmed]  # their periods issued: nothing due below
    commits: list[object] = []
    event.listen(engine, "commit", commits.append)
    first = report_usages(ctx, requests)
    assert [r.usage.request_id for r in first] == AWKWARD_REQUEST_IDS and not any(r.replayed for r in first)
    assert len(commits) == 1
    with engine.connect() as conn:
        recorded = conn.execute(select(UsageRow.request_id, UsageRow.usage_id)).all()
    assert sorted(recorded) == sorted([(r.usage.request_id, r.usage.usage_id) for r in first] + warm)
    again = report_usages(ctx, requests)
    assert all(r.replayed for r in again)
    assert [r.usage.usage_id for r in again] == [r.usage.usage_id for r in first]
    engine.dispose()


class _TickingClock(ManualClock):
    """Moves one millisecond at each reading: every transaction's instant is its own."""

    def now(self):
        return self.advance(timedelta(milliseconds=1))


def _six_left_each(database_url_factory, name: str, customers: int):
    """A context (on a ticking clock) whose customers c0.. have 6 of their 7 credits left, its engine,
    and the list of the commits made from then on."""
    engine = _engine(database_url_factory(name))
    ctx = sql_context(session_factories(engine), _TickingClock(NOW))
    apply_credit_currency(ctx, "ai-credits", 1, {"gpt": Decimal("1")}, None)
    _subscribe(ctx, customers, NOW - timedelta(days=1))
    for i in range(customers):  # the periods issued: nothing due in the batches
        report_usage(ctx, f"warm{i}", f"c{i}", "gpt", Decimal(1), "")
    commits: list[object] = []
    event.listen(engine, "commit", commits.append)
    return ctx, engine, commits


def test_a_batch_is_one_transaction_when_no_other_holds_its_customers(database_url_factory, backend):
    """ReportUsageBatch's debits: each customer's in order, at one instant, its hard limit kept, all
    in one transaction when no other transaction holds any of its customers (on either backend)."""
    ctx, engine, commits = _six_left_each(database_url_factory, "debit_batch", 30)
    requests = [UsageRequest(f"r{i}", f"c{i % 30}", "gpt", Decimal(1), "") for i in range(240)]  # 8 each
    results = report_usages(ctx, requests)
    for k in range(30):
        mine = [result for i, result in enumerate(results) if i % 30 == k]
        assert [isinstance(r, ResourceExhausted) for r in mine] == [False] * 6 + [True] * 2
        assert [r.usage.balance_after for r in mine[:6]] == [5, 4, 3, 2, 1, 0]
    assert len({r.usage.usage_time for r in results if not isinstance(r, Exception)}) == 1
    assert len(commits) == 1
    engine.dispose()


@pytest.mark.postgres
@pytest.mark.parametrize("backend", ["postgresql"])
def test_a_batch_debits_the_customers_no_one_holds_first_then_waits_for_the_others(database_url_factory, backend):
    """On PostgreSQL a batch's first transaction skips the customers that another transaction holds
    (adapters/debits.py skips_held): the others' usages commit while one is held, and the held
    customer's usages are made once it is free, all of them in the next transaction, at its later
    instant."""
    ctx, engine, commits = _six_left_each(database_url_factory, "debit_skip", 5)
    requests = [UsageRequest(f"r{i}", f"c{i % 5}", "gpt", Decimal(1), "") for i in range(40)]  # 8 each
    answers: list = []
    batch = threading.Thread(target=lambda: answers.append(report_usages(ctx, requests)))
    try:
        with ctx.transactions.factories.write() as holder, holder.begin():
            assert SqlGrantUnitOfWork(holder).customers.lock("c3") is not None
            batch.start()
            deadline = time.monotonic() + 20
            while not _lock_waits(engine):  # the batch has made the others' usages and waits for c3
                assert time.monotonic() < deadline, "the batch did not wait for the held customer"
                time.sleep(0.02)
            with engine.connect() as c:
                debited = dict(c.execute(select(GrantRow.customer_key, GrantRow.used)).all())
            assert debited == {"c0": 7, "c1": 7, "c2": 7, "c3": 1, "c4": 7}
            assert len(commits) == 2  # the free customers' transaction, then one that found c3 held
        batch.join(20)
        [results] = answers
        for k in range(5):
            mine = [result for i, result in enumerate(results) if i % 5 == k]
            assert [isinstance(r, ResourceExhausted) for r in mine] == [False] * 6 + [True] * 2
        held = {r.usage.usage_time for i, r in enumerate(results) if i % 5 == 3 and not isinstance(r, Exception)}
        free = {r.usage.usage_time for i, r in enumerate(results) if i % 5 != 3 and not isinstance(r, Exception)}
        assert len(held) == len(free) == 1 and held.pop() > free.pop()
        assert len(commits) == 4  # then the holder's, and c3's
    finally:
        engine.dispose()


def test_concurrent_batches_of_the_same_customers_keep_the_hard_limit_and_time_order(database_url_factory):
    """Two batches at once of the same 30 customers (four usages each per batch, 6 credits left
    each): exactly six of each customer's eight usages are accepted, its grant is spent to the
    last credit, and its DEBIT entries are in time order, whichever batch's part made them."""
    ctx, engine, _ = _six_left_each(database_url_factory, "debit_parts_race", 30)
    answers: dict[str, list] = {}

    def send(tag: str) -> None:
        answers[tag] = report_usages(
            ctx, [UsageRequest(f"{tag}{i}", f"c{i % 30}", "gpt", Decimal(1), "") for i in range(120)]
        )

    threads = [threading.Thread(target=send, args=(tag,)) for tag in "ab"]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    accepted = [r for results in answers.values() for r in results if not isinstance(r, Exception)]
    assert len(accepted) == 30 * 6 and all(
        isinstance(r, ResourceExhausted) for rs in answers.values() for r in rs if isinstance(r, Exception)
    )
    with engine.connect() as c:
        assert set(c.scalars(select(GrantRow.used).where(GrantRow.customer_key.like("c%")))) == {Decimal(7)}
        for k in range(30):
            times = list(
                c.scalars(
                    select(LedgerEntryRow.effective_time)
                    .where(LedgerEntryRow.customer_key == f"c{k}", LedgerEntryRow.type == "DEBIT")
                    .order_by(LedgerEntryRow.seq)
                )
            )
            assert len(times) == 7 and times == sorted(times)
    engine.dispose()


def test_deleting_a_test_clock_deletes_its_customers_usages_and_no_others(database_url_factory, backend):
    """Usages have no index by customer (migration 0010): a test clock's deletion finds its
    customers' usages through their DEBIT entries."""
    engine = _engine(database_url_factory("debit_clock_delete"))
    ctx = sql_context(session_factories(engine), ManualClock(NOW), test_clocks_enabled=True)
    apply_credit_currency(ctx, "ai-credits", 1, {"gpt": Decimal("1")}, None)
    clock = create_test_clock(ctx, "trial", NOW, "k1")
    for i, clock_id in enumerate(("", clock.test_clock_id, clock.test_clock_id)):
        apply_subscription(
            ctx,
            SubscriptionSpec(
                f"sub_{i}",
                f"c{i}",
                1,
                NOW - timedelta(days=1),
                None,
                (ScheduleSpec("credits", "ai-credits", Cadence.MONTHLY, (ScheduledAmount(Decimal(7), NOW),)),),
                clock_id,
            ),
        )
    report_usages(ctx, [UsageRequest(f"r{i}", f"c{i % 3}", "gpt", Decimal(1), "") for i in range(9)])
    report_usage(ctx, "more", "c1", "gpt", Decimal(4), "")
    with engine.connect() as c:
        assert sorted(c.scalars(select(UsageRow.customer_key))) == ["c0"] * 3 + ["c1"] * 4 + ["c2"] * 3
    delete_test_clock(ctx, clock.test_clock_id, "k2")
    with engine.connect() as c:
        assert sorted(c.scalars(select(UsageRow.customer_key))) == ["c0"] * 3
        assert set(c.scalars(select(LedgerEntryRow.customer_key))) == {"c0"}
    engine.dispose()


def test_a_debit_without_a_request_id_records_no_request_id(database_url_factory, backend):
    """Internal callers may debit without a request id (the API requires one): such a usage is
    recorded, and only the others' request ids are, in the same set of writes."""
    ctx, engine, _ = _six_left_each(database_url_factory, "debit_no_request_id", 3)
    requests = [UsageRequest("" if i % 2 else f"r{i}", f"c{i % 3}", "gpt", Decimal(1), "") for i in range(6)]
    results = report_usages(ctx, requests)
    assert not any(isinstance(r, Exception) for r in results)
    with engine.connect() as c:
        recorded = set(c.scalars(select(RequestIdRow.request_id).where(RequestIdRow.request_id.like("r%"))))
        assert recorded == {"r0", "r2", "r4"}
        assert c.scalar(select(func.count()).select_from(UsageRow).where(UsageRow.request_id == "")) == 3
    engine.dispose()
