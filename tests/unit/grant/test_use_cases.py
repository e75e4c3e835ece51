"""The grant service's use cases over the in-memory fakes of its ports (tests/support/grant_fakes.py):
applying subscriptions, the catch-up, voids and one-off grants, usage (ReportUsage, ReportUsageBatch,
CheckUsage), balance alerts and test clocks, at unit speed. The SQL repositories behind the same
ports are tested on both backends in tests/integration/grant (and test_fakes_match_sql.py checks that
the fakes and SQL agree); the RPCs over a real server in tests/e2e/grant."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from credit_common.clock import ManualClock
from credit_common.errors import (
    AlreadyExists,
    DomainError,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    ResourceExhausted,
)
from credit_common.pagination import PageRequest
from credit_common.periods import Cadence
from grant_service.domain.alerts import AlertLevel
from grant_service.domain.balances import exact_sum
from grant_service.domain.clocks import REAL_TIME
from grant_service.domain.events import EventFilter, EventType
from grant_service.domain.model import EntryType, GrantStatus
from grant_service.domain.schedules import ScheduledAmount
from grant_service.service_layer import alerts, balances, events, operators, simulated_clocks, usage
from grant_service.service_layer.issuance import catch_up
from grant_service.service_layer.subscriptions import (
    ApplyOutcome,
    ScheduleSpec,
    SubscriptionSpec,
    apply_credit_currency,
    apply_subscription,
    apply_subscriptions,
    get_subscription,
)
from tests.support.grant_fakes import FakeStore, fake_context

NOW = datetime(2026, 6, 1, 12, tzinfo=UTC)
ANCHOR = datetime(2026, 3, 15, tzinfo=UTC)  # periods Mar 15, Apr 15, May 15 have started at NOW


def _spec(
    revision: int = 1,
    *,
    subscription_id: str = "sub_1",
    customer_key: str = "c1",
    start: datetime = ANCHOR,
    end: datetime | None = None,
    amounts: tuple[tuple[str, datetime], ...] = (("100", ANCHOR),),
    test_clock_id: str = "",
) -> SubscriptionSpec:
    scheduled = tuple(ScheduledAmount(Decimal(a), t) for a, t in amounts)
    return SubscriptionSpec(
        subscription_id,
        customer_key,
        revision,
        start,
        end,
        (ScheduleSpec("monthly", "ai-credits", Cadence.MONTHLY, scheduled),),
        test_clock_id,
    )


@pytest.fixture
def store() -> FakeStore:
    return FakeStore()


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(NOW)


@pytest.fixture
def ctx(store, clock):
    return fake_context(clock, store, test_clocks_enabled=True, batch_size=2)


def _entries(store: FakeStore, customer_key: str = "c1") -> list[tuple[str, datetime, Decimal]]:
    return [(e.type.value, e.effective_time, e.amount) for e in store.ledger if e.customer_key == customer_key]


def _events(store: FakeStore, *types: EventType) -> list[EventType]:
    return [e.event.type for e in store.events if not types or e.event.type in types]


# ------------------------------------------------------------------------------ subscriptions


def test_a_new_subscription_is_stored_with_its_customer_and_schedule_and_issues_nothing_yet(ctx, store):
    result = apply_subscription(ctx, _spec())

    assert (result.outcome, result.current_revision) == (ApplyOutcome.APPLIED, 1)
    assert store.customers["c1"].clock_key == REAL_TIME
    sub = get_subscription(ctx, "sub_1")
    assert (sub.revision, sub.start_time, sub.end_time, sub.test_clock_id) == (1, ANCHOR, None, "")
    assert [s.entitlement_key for s in sub.credit_schedules] == ["monthly"]
    assert store.grants == {} and store.ledger == []  # the catch-up issues, not the apply
    assert _events(store) == [EventType.SUBSCRIPTION_CHANGED]


def test_the_same_revision_is_already_applied_and_an_older_one_stale(ctx):
    apply_subscription(ctx, _spec(1))
    apply_subscription(ctx, _spec(2, end=NOW + timedelta(days=30)))

    assert apply_subscription(ctx, _spec(2)).outcome is ApplyOutcome.ALREADY_APPLIED
    stale = apply_subscription(ctx, _spec(1))
    assert (stale.outcome, stale.current_revision) == (ApplyOutcome.STALE, 2)
    assert get_subscription(ctx, "sub_1").end_time == NOW + timedelta(days=30)


def test_a_revision_cannot_move_a_subscription_to_another_customer(ctx):
    apply_subscription(ctx, _spec(1))
    with pytest.raises(FailedPrecondition) as raised:
        apply_subscription(ctx, _spec(2, customer_key="c2"))
    assert raised.value.reason == "IMMUTABLE_FIELD_CHANGED"


def test_a_rejected_item_of_a_batch_leaves_no_trace_and_the_others_are_applied(ctx, store):
    results = apply_subscriptions(
        ctx,
        [_spec(subscription_id="sub_a", customer_key="a"), _spec(test_clock_id="clk_missing"), _spec(customer_key="b")],
    )

    assert [r.outcome for r in results] == [ApplyOutcome.APPLIED, None, ApplyOutcome.APPLIED]
    assert isinstance(results[1].error, NotFound) and results[1].error.reason == "TEST_CLOCK_NOT_FOUND"
    assert sorted(store.customers) == ["a", "b"]
    assert sorted(store.subscriptions) == ["sub_1", "sub_a"]


def test_items_refused_by_their_checks_cost_no_extra_run_and_create_nothing(ctx, store):
    """Refusals found before an item changes anything (a test clock that does not exist, a revision
    too far ahead, an immutable field changed) skip the item and the batch goes on: one write run
    for the batch, however many are refused (each used to roll the batch back and run it again),
    and a refused item's new customer is not created."""
    apply_subscription(ctx, _spec(1))
    runs = []
    write = ctx.transactions.write
    ctx.transactions.write = lambda work: runs.append(1) or write(work)
    results = apply_subscriptions(
        ctx,
        [
            _spec(test_clock_id="clk_missing", subscription_id="sub_x", customer_key="x"),
            _spec(2, customer_key="moved"),  # sub_1 is c1's: its customer cannot change
            _spec(10**9, subscription_id="sub_y", customer_key="y"),  # far beyond the revision bound
            _spec(subscription_id="sub_a", customer_key="a"),
        ],
    )

    assert [r.error.reason if r.error else r.outcome for r in results] == [
        "TEST_CLOCK_NOT_FOUND",
        "IMMUTABLE_FIELD_CHANGED",
        "REVISION_TOO_FAR_AHEAD",
        ApplyOutcome.APPLIED,
    ]
    assert runs == [1]
    assert sorted(store.customers) == ["a", "c1"]
    assert sorted(store.subscriptions) == ["sub_1", "sub_a"]


def test_unknown_subscription_is_not_found(ctx):
    with pytest.raises(NotFound):
        get_subscription(ctx, "sub_nobody")


def test_a_currency_revision_is_applied_once_and_an_older_one_is_stale(ctx, store):
    assert apply_credit_currency(ctx, "ai-credits", 1, {"gpt": Decimal("2.5")}, None) == (ApplyOutcome.APPLIED, 1)
    assert apply_credit_currency(ctx, "ai-credits", 1, {"gpt": Decimal(3)}, None) == (ApplyOutcome.ALREADY_APPLIED, 1)
    assert apply_credit_currency(ctx, "ai-credits", 2, {"gpt": Decimal(3)}, None) == (ApplyOutcome.APPLIED, 2)
    assert apply_credit_currency(ctx, "ai-credits", 1, {}, None) == (ApplyOutcome.STALE, 2)
    assert [(revision, rates) for _, revision, _, rates in store.rate_sets] == [
        (1, {"gpt": Decimal("2.5")}),
        (2, {"gpt": Decimal(3)}),
    ]


# ------------------------------------------------------------------------------ the catch-up


def test_the_catch_up_issues_every_started_period_and_expires_the_past_ones_in_ledger_order(ctx, store):
    apply_subscription(ctx, _spec())
    apr, may, jun = ANCHOR.replace(month=4), ANCHOR.replace(month=5), ANCHOR.replace(month=6)

    result = catch_up(ctx.transactions, clock_key=REAL_TIME, now=NOW, batch_size=2)

    assert (result.issued, result.expired) == (3, 2)
    assert _entries(store) == [
        ("GRANT", ANCHOR, Decimal(100)),
        ("EXPIRE", apr, Decimal(-100)),
        ("GRANT", apr, Decimal(100)),
        ("EXPIRE", may, Decimal(-100)),
        ("GRANT", may, Decimal(100)),
    ]
    assert store.schedules[next(iter(store.schedules))].next_period_start == jun
    assert _events(store, EventType.CREDITS_GRANTED, EventType.CREDITS_EXPIRED).count(EventType.CREDITS_GRANTED) == 3


def test_the_catch_up_run_again_issues_nothing_more(ctx, store):
    apply_subscription(ctx, _spec())
    catch_up(ctx.transactions, clock_key=REAL_TIME, now=NOW, batch_size=2)
    ledger, events = list(store.ledger), list(store.events)

    again = catch_up(ctx.transactions, clock_key=REAL_TIME, now=NOW, batch_size=2)

    assert (again.issued, again.expired, again.opened) == (0, 0, 0)
    assert store.ledger == ledger and store.events == events


def test_a_balance_read_catches_the_customer_up_first(ctx, store):
    apply_subscription(ctx, _spec())

    info = balances.get_balance(ctx, "c1", "ai-credits", None, True)

    assert info.available == Decimal(100)
    assert [g.effective_time for g in info.grants] == [ANCHOR.replace(month=5)]
    assert len(store.grants) == 3  # issued by the read's catch-up


def test_the_balance_fast_path_answers_from_the_read_model_once_nothing_is_due(ctx):
    apply_subscription(ctx, _spec())
    balances.get_balance(ctx, "c1", "ai-credits", None, False)  # catches up
    committed = ctx.transactions.committed

    info = balances.current_balance(ctx, "c1", "ai-credits", with_grants=True)

    assert info is not None and info.available == Decimal(100) and len(info.grants) == 1
    assert ctx.transactions.committed == committed
    with pytest.raises(NotFound):
        balances.current_balance(ctx, "nobody", "ai-credits", with_grants=False)


def test_a_past_balance_counts_what_was_active_then(ctx):
    apply_subscription(ctx, _spec(amounts=(("100", ANCHOR), ("40", ANCHOR.replace(month=5)))))

    past = balances.get_balance(ctx, "c1", "ai-credits", ANCHOR.replace(month=4, day=20), False)
    now = balances.get_balance(ctx, "c1", "ai-credits", None, False)

    assert (past.available, now.available) == (Decimal(100), Decimal(40))
    with pytest.raises(InvalidArgument):
        balances.get_balance(ctx, "c1", "ai-credits", NOW + timedelta(days=1), False)


def test_cancelling_now_cuts_the_current_grant_and_issues_no_later_one(ctx, store, clock):
    apply_subscription(ctx, _spec())
    catch_up(ctx.transactions, clock_key=REAL_TIME, now=NOW, batch_size=2)

    result = apply_subscription(ctx, _spec(2, end=NOW))
    clock.set(NOW + timedelta(days=60))
    catch_up(ctx.transactions, clock_key=REAL_TIME, now=clock.now(), batch_size=2)

    assert result.outcome is ApplyOutcome.APPLIED
    assert _entries(store)[-1] == ("EXPIRE", NOW, Decimal(-100))
    assert len(store.grants) == 3
    assert _events(store, EventType.SUBSCRIPTION_ENDED) == [EventType.SUBSCRIPTION_ENDED]


def test_an_amendment_effective_now_replaces_the_current_grant_from_now(ctx, store):
    apply_subscription(ctx, _spec())
    catch_up(ctx.transactions, clock_key=REAL_TIME, now=NOW, batch_size=2)

    apply_subscription(ctx, _spec(2, amounts=(("100", ANCHOR), ("300", NOW))))

    assert _entries(store)[-2:] == [("EXPIRE", NOW, Decimal(-100)), ("GRANT", NOW, Decimal(300))]
    assert balances.get_balance(ctx, "c1", "ai-credits", None, False).available == Decimal(300)


# ------------------------------------------------------------------------------ voids and one-off grants


def _one_off_at(ctx, request_id: str = "r1", amount: str = "50", **kwargs):
    """The one-off grant created, and the instant it was created at."""
    fields = {"effective_time": None, "expire_time": None, "priority": None, "reason": "goodwill", **kwargs}
    return operators.create_grant(ctx, request_id, "c1", "ai-credits", Decimal(amount), **fields)


def _one_off(ctx, request_id: str = "r1", amount: str = "50", **kwargs):
    return _one_off_at(ctx, request_id, amount, **kwargs)[0]


def test_a_one_off_grant_counts_at_once_and_its_request_id_replays_it(ctx, store):
    apply_subscription(ctx, _spec())

    grant, at = _one_off_at(ctx)
    again = _one_off(ctx)

    assert grant.status_at(at) is GrantStatus.ACTIVE and again.grant_id == grant.grant_id
    assert balances.get_balance(ctx, "c1", "ai-credits", None, False).available == Decimal(150)
    with pytest.raises(AlreadyExists):
        _one_off(ctx, amount="51")
    assert [e.description for e in store.ledger if e.grant_id == grant.grant_id] == ["goodwill"]


def test_a_one_off_grant_for_later_is_pending_until_its_time_comes(ctx, store, clock):
    apply_subscription(ctx, _spec())
    later = NOW + timedelta(days=2)

    grant, at = _one_off_at(ctx, effective_time=later)

    assert grant.status_at(at) is GrantStatus.PENDING
    assert not [e for e in store.ledger if e.grant_id == grant.grant_id]
    clock.set(later)
    assert balances.get_balance(ctx, "c1", "ai-credits", None, False).available == Decimal(150)
    assert [e.type for e in store.ledger if e.grant_id == grant.grant_id] == [EntryType.GRANT]


def test_a_one_off_grant_needs_a_known_customer_and_currency_and_an_expiry_after_its_start(ctx):
    with pytest.raises(NotFound):
        _one_off(ctx)
    apply_subscription(ctx, _spec())
    with pytest.raises(NotFound) as raised:
        operators.create_grant(ctx, "r2", "c1", "other", Decimal(1), None, None, None, "")
    assert raised.value.reason == "CURRENCY_NOT_FOUND"
    with pytest.raises(InvalidArgument):
        _one_off(ctx, "r3", expire_time=NOW)


def test_a_void_records_what_was_left_and_cannot_happen_twice(ctx, store):
    apply_subscription(ctx, _spec())
    grant = _one_off(ctx)

    voided, at = operators.void_grant(ctx, grant.grant_id, "mistake", "v1")

    assert voided.status_at(at) is GrantStatus.VOIDED and voided.void_time == NOW
    assert _entries(store)[-1] == ("VOID", NOW, Decimal(-50))
    assert balances.get_balance(ctx, "c1", "ai-credits", None, False).available == Decimal(100)
    assert operators.void_grant(ctx, grant.grant_id, "mistake", "v1")[0].grant_id == grant.grant_id
    with pytest.raises(FailedPrecondition) as raised:
        operators.void_grant(ctx, grant.grant_id, "mistake", "v2")
    assert raised.value.reason == "GRANT_ALREADY_VOIDED"
    assert _events(store, EventType.GRANT_VOIDED) == [EventType.GRANT_VOIDED]


def test_voiding_a_pending_grant_writes_no_ledger_entry(ctx, store):
    apply_subscription(ctx, _spec())
    grant = _one_off(ctx, effective_time=NOW + timedelta(days=1))

    operators.void_grant(ctx, grant.grant_id, "", "v1")

    assert not [e for e in store.ledger if e.grant_id == grant.grant_id]
    assert store.grants[grant.grant_id].opens_at is None  # never opens


def test_an_expired_or_unknown_grant_cannot_be_voided(ctx, clock):
    apply_subscription(ctx, _spec())
    grant = _one_off(ctx, expire_time=NOW + timedelta(hours=1))
    clock.set(NOW + timedelta(hours=2))

    with pytest.raises(FailedPrecondition) as raised:
        operators.void_grant(ctx, grant.grant_id, "", "v1")
    assert raised.value.reason == "GRANT_EXPIRED"
    with pytest.raises(NotFound):
        operators.void_grant(ctx, "grt_nobody", "", "v2")


# ------------------------------------------------------------------------------ usage

USAGE_START = datetime(2026, 5, 20, tzinfo=UTC)  # one period (to June 20th) has started at NOW
ACCEPTED, REPLAYED, REJECTED = "ACCEPTED", "REPLAYED", "REJECTED"


def _usage_setup(ctx, customers=("acme",), amount="100") -> None:
    """gpt-call burns 2.5 ai-credits; shared burns 1 ai-credit or 3 gpu-credits; each customer has a
    monthly subscription of `amount` ai-credits from USAGE_START, not yet issued."""
    apply_credit_currency(ctx, "ai-credits", 1, {"gpt-call": Decimal("2.5"), "shared": Decimal(1)}, None)
    apply_credit_currency(ctx, "gpu-credits", 1, {"shared": Decimal(3)}, None)
    for customer in customers:
        amounts = ((amount, USAGE_START),)
        apply_subscription(
            ctx, _spec(subscription_id=f"sub_{customer}", customer_key=customer, start=USAGE_START, amounts=amounts)
        )


def _request(request_id: str, quantity: str, customer: str = "acme", feature: str = "gpt-call", currency: str = ""):
    return usage.UsageRequest(request_id, customer, feature, Decimal(quantity), currency)


def _report(ctx, request_id: str, quantity: str, **kwargs) -> usage.UsageResult:
    r = _request(request_id, quantity, **kwargs)
    return usage.report_usage(ctx, r.request_id, r.customer_key, r.feature_key, r.quantity, r.currency_key)


def _outcome(result) -> str:
    if isinstance(result, DomainError):
        return REJECTED
    return REPLAYED if result.replayed else ACCEPTED


def _insufficient(result) -> dict[str, str]:
    assert isinstance(result, ResourceExhausted) and result.reason == "INSUFFICIENT_CREDITS"
    return result.metadata


def _available(ctx, customer: str = "acme") -> Decimal:
    return balances.get_balance(ctx, customer, "ai-credits", None, False).available


def _debits(store: FakeStore, customer: str = "acme") -> list[Decimal]:
    return [e.amount for e in store.ledger if e.customer_key == customer and e.type is EntryType.DEBIT]


def test_burn_down_order_and_idempotency(ctx, store):
    _usage_setup(ctx)
    vip = operators.create_grant(ctx, "g1", "acme", "ai-credits", Decimal(10), None, None, 1, "goodwill")[0]
    forever = operators.create_grant(ctx, "g2", "acme", "ai-credits", Decimal(10), None, None, None, "")[0]

    first = _report(ctx, "u1", "46.2")  # 115.5 credits

    assert (first.usage.credits, first.usage.credits_per_unit) == (Decimal("115.5"), Decimal("2.5"))
    [recurring] = [g for g in store.grants.values() if g.subscription_id]
    assert first.debits == [
        (vip.grant_id, Decimal(10)),
        (recurring.grant_id, Decimal(100)),
        (forever.grant_id, Decimal("5.5")),
    ]
    assert first.usage.balance_after == Decimal("4.5")
    again = _report(ctx, "u1", "46.2")
    assert (again.usage, again.debits, again.replayed) == (first.usage, first.debits, True)
    with pytest.raises(AlreadyExists) as raised:
        _report(ctx, "u1", "1")
    assert raised.value.reason == "REQUEST_ID_REUSED"
    assert len(_debits(store)) == 3
    assert _available(ctx) == Decimal("4.5")


def test_insufficient_credits_debits_nothing(ctx, store):
    _usage_setup(ctx)

    with pytest.raises(ResourceExhausted) as raised:
        _report(ctx, "big", "40.4")

    assert raised.value.reason == "INSUFFICIENT_CREDITS"
    assert (raised.value.metadata["available"], raised.value.metadata["required"]) == ("100", "101")
    assert _debits(store) == []
    check = usage.check_usage(ctx, "acme", "gpt-call", Decimal("40.4"), "")
    assert (check.allowed, check.credits_required, check.available, check.currency_key) == (
        False,
        Decimal(101),
        Decimal(100),
        "ai-credits",
    )
    assert usage.check_usage(ctx, "acme", "gpt-call", Decimal(40), "").allowed


def test_a_request_id_whose_first_attempt_was_rejected_is_a_fresh_attempt(ctx, store):
    _usage_setup(ctx)
    with pytest.raises(ResourceExhausted):
        _report(ctx, "r1", "40.4")
    with pytest.raises(InvalidArgument) as raised:
        _report(ctx, "r1", "1", feature="shared")
    assert raised.value.reason == "AMBIGUOUS_CURRENCY"

    # Nothing was recorded: the same request_id with another payload is not ALREADY_EXISTS ...
    assert _report(ctx, "r1", "2").usage.credits == Decimal(5)
    # ... and once accepted, it is the one recorded.
    with pytest.raises(AlreadyExists) as reused:
        _report(ctx, "r1", "40.4")
    assert reused.value.reason == "REQUEST_ID_REUSED"
    assert len(_debits(store)) == 1


def test_a_debit_at_the_effective_time_of_a_pending_grant_burns_it(ctx, store, clock):
    _usage_setup(ctx, amount="1")
    later = NOW + timedelta(hours=2)
    operators.create_grant(ctx, "g1", "acme", "ai-credits", Decimal(50), later, None, None, "")
    with pytest.raises(ResourceExhausted):
        _report(ctx, "early", "4")

    clock.set(later)

    assert _report(ctx, "early", "4").usage.balance_after == Decimal(41)
    assert exact_sum(e.amount for e in store.ledger if e.customer_key == "acme") == Decimal(41)


def test_a_customers_usages_apply_in_order_and_hard_limits_hold_exactly(ctx):
    _usage_setup(ctx, customers=("acme", "beta"))
    results = usage.report_usages(
        ctx,
        [
            _request("a1", "16"),  # 40 -> 60 left
            _request("b1", "39", customer="beta"),  # 97.5 -> 2.5 left
            _request("a2", "16"),  # 40 -> 20 left
            _request("a3", "10"),  # 25: refused, 20 available
            _request("b2", "2", customer="beta"),  # 5: refused, 2.5 available
            _request("a4", "8"),  # 20: accepted, 0 left
            _request("b3", "1", customer="beta"),  # 2.5: accepted, 0 left
            _request("a5", "0.4"),  # 1: refused, 0 available
        ],
    )
    assert [_outcome(r) for r in results] == [
        ACCEPTED,
        ACCEPTED,
        ACCEPTED,
        REJECTED,
        REJECTED,
        ACCEPTED,
        ACCEPTED,
        REJECTED,
    ]
    a1, b1, a2, a3, b2, a4, b3, a5 = results
    assert [r.usage.balance_after for r in (a1, a2, a4)] == [Decimal(60), Decimal(20), Decimal(0)]
    assert [r.usage.balance_after for r in (b1, b3)] == [Decimal("2.5"), Decimal(0)]
    assert (_insufficient(a3)["available"], _insufficient(a3)["required"]) == ("20", "25")
    assert (_insufficient(b2)["available"], _insufficient(b2)["required"]) == ("2.5", "5")
    assert _insufficient(a5)["available"] == "0"
    assert _available(ctx, "acme") == 0 and _available(ctx, "beta") == 0


def test_one_refused_usage_of_a_batch_fails_no_other_and_a_request_id_replays_in_the_same_batch(ctx, store):
    _usage_setup(ctx)
    first = _report(ctx, "before", "2")  # 5 credits, before the batch
    made = ctx.transactions.debit_port.transactions
    results = usage.report_usages(
        ctx,
        [
            _request("a1", "4"),  # 10 credits
            _request("before", "2"),  # replayed: the first result
            _request("before", "3"),  # the same request id with another payload
            _request("big", "40"),  # 100 credits: 85 left
            _request("ghost", "1", feature="no-such-feature"),
            _request("nobody", "1", customer="no-such-customer"),
            _request("amb", "1", feature="shared"),
            _request("a1", "4"),  # a1 again in the same batch: replayed
            _request("a2", "2"),  # 5 credits: still accepted after the refusals
        ],
    )
    assert [_outcome(r) for r in results] == [ACCEPTED, REPLAYED] + [REJECTED] * 5 + [REPLAYED, ACCEPTED]
    a1, replayed, reused, big, ghost, nobody, amb, a1_again, a2 = results
    assert (a1.usage.credits, a1.usage.balance_after, a1.debits[0][1]) == (Decimal(10), Decimal(85), Decimal(10))
    assert (replayed.usage, replayed.debits) == (first.usage, first.debits)
    assert [(type(e).__name__, e.reason) for e in (reused, ghost, nobody, amb)] == [
        ("AlreadyExists", "REQUEST_ID_REUSED"),
        ("NotFound", "FEATURE_NOT_FOUND"),
        ("NotFound", "CUSTOMER_NOT_FOUND"),
        ("InvalidArgument", "AMBIGUOUS_CURRENCY"),
    ]
    assert _insufficient(big) == {"available": "85", "required": "100", "currency_key": "ai-credits"}
    assert a1_again.usage == a1.usage and a2.usage.balance_after == Decimal(80)
    # Exactly the accepted usages are in the ledger; the refusal for want of credits is an event.
    assert sorted(_debits(store)) == [Decimal(-10), Decimal(-5), Decimal(-5)]
    assert _available(ctx) == Decimal(80)
    assert _events(store, EventType.USAGE_REJECTED) == [EventType.USAGE_REJECTED]
    assert ctx.transactions.debit_port.transactions == made + 1  # the refusals ran none of them again alone


def test_a_customer_with_a_period_due_is_caught_up_then_debited_in_order(ctx, store, clock):
    _usage_setup(ctx, customers=("acme", "beta"))
    assert _report(ctx, "a0", "8").usage.balance_after == Decimal(80)
    # The first period (from May 20th) has ended and the next one is due, but not issued (no sweeper).
    clock.set(NOW + timedelta(days=20))
    results = usage.report_usages(
        ctx,
        [
            _request("b1", "4", customer="beta"),
            _request("a1", "36"),  # 90 of the new period's 100: the old period's 80 expired
            _request("a2", "8"),  # 20: refused, 10 left
            _request("a0", "8"),  # replayed, in any round
            _request("a3", "4"),  # 10: accepted
        ],
    )
    assert [_outcome(r) for r in results] == [ACCEPTED, ACCEPTED, REJECTED, REPLAYED, ACCEPTED]
    assert [results[i].usage.balance_after for i in (0, 1, 4)] == [Decimal(90), Decimal(10), Decimal(0)]
    assert _insufficient(results[2])["available"] == "10"
    assert _available(ctx) == 0
    assert [e.amount for e in store.ledger if e.customer_key == "acme" and e.type is EntryType.EXPIRE] == [Decimal(-80)]


# ------------------------------------------------------------------------------ balance alerts


def test_alert_levels_of_a_customer_override_the_currency_default_until_cleared(ctx):
    default = (AlertLevel("percent", Decimal(20)),)
    own = (AlertLevel("amount", Decimal(10)),)
    alerts.set_balance_alerts(ctx, "", "ai-credits", default)
    alerts.set_balance_alerts(ctx, "c1", "ai-credits", own)

    assert alerts.get_balance_alerts(ctx, "c1", "ai-credits").in_force == own
    cleared = alerts.set_balance_alerts(ctx, "c1", "ai-credits", None)
    assert (cleared.own, cleared.in_force) == (None, default)
    with pytest.raises(InvalidArgument):
        alerts.set_balance_alerts(ctx, "c1", "ai-credits", [AlertLevel("percent", Decimal(101))])


def test_a_void_that_crosses_a_level_fires_once_and_recovery_fires_when_back_above(ctx, store):
    apply_subscription(ctx, _spec())
    balances.get_balance(ctx, "c1", "ai-credits", None, False)  # catch up: 100 available
    alerts.set_balance_alerts(ctx, "c1", "ai-credits", [AlertLevel("amount", Decimal(120))])
    extra = _one_off(ctx, amount="50")  # 150: above the level (nothing was below before)

    alert_types = (EventType.BALANCE_LOW, EventType.BALANCE_RECOVERED, EventType.BALANCE_DEPLETED)
    assert _events(store, *alert_types) == []

    operators.void_grant(ctx, extra.grant_id, "", "v1")  # 100: below 120
    assert _events(store, *alert_types) == [EventType.BALANCE_LOW]
    _one_off(ctx, "r2", amount="10")  # 110: still below, nothing more
    assert _events(store, *alert_types) == [EventType.BALANCE_LOW]
    _one_off(ctx, "r3", amount="20")  # 130: recovered
    assert _events(store, *alert_types) == [EventType.BALANCE_LOW, EventType.BALANCE_RECOVERED]
    assert store.alert_states[("c1", "ai-credits")] == frozenset()


def test_voiding_the_last_credits_is_a_low_balance_not_a_depletion_when_nothing_is_granted_any_more(ctx, store):
    apply_subscription(ctx, _spec(amounts=(("0", ANCHOR),)))
    grant = _one_off(ctx, amount="5")
    alerts.set_balance_alerts(ctx, "", "ai-credits", [AlertLevel("amount", Decimal(1))])

    operators.void_grant(ctx, grant.grant_id, "", "v1")

    assert _events(store, EventType.BALANCE_LOW, EventType.BALANCE_DEPLETED) == [EventType.BALANCE_LOW]


# ------------------------------------------------------------------------------ test clocks


def test_advancing_a_test_clock_issues_what_is_due_at_its_new_time_and_real_time_is_untouched(ctx, store):
    clock = simulated_clocks.create_test_clock(ctx, "trial", ANCHOR, "k1")
    apply_subscription(ctx, _spec(test_clock_id=clock.test_clock_id))
    apply_subscription(ctx, _spec(subscription_id="sub_real", customer_key="real"))

    moved = simulated_clocks.advance_test_clock(ctx, clock.test_clock_id, ANCHOR.replace(month=4), "k2")

    assert moved.frozen_time == ANCHOR.replace(month=4)
    assert [t for t, *_ in _entries(store)] == ["GRANT", "EXPIRE", "GRANT"]
    assert _entries(store, "real") == []
    info = balances.get_balance(ctx, "c1", "ai-credits", None, False)
    assert (info.as_of, info.available) == (ANCHOR.replace(month=4), Decimal(100))


def test_a_test_clock_never_moves_backwards_and_a_request_id_replays_its_advance(ctx):
    clock = simulated_clocks.create_test_clock(ctx, "trial", ANCHOR, "k1")
    assert simulated_clocks.create_test_clock(ctx, "trial", ANCHOR, "k1").test_clock_id == clock.test_clock_id
    simulated_clocks.advance_test_clock(ctx, clock.test_clock_id, NOW, "k2")

    with pytest.raises(InvalidArgument) as raised:
        simulated_clocks.advance_test_clock(ctx, clock.test_clock_id, ANCHOR, "k3")
    assert raised.value.reason == "TEST_CLOCK_BACKWARDS"
    assert simulated_clocks.advance_test_clock(ctx, clock.test_clock_id, NOW, "k2").frozen_time == NOW


def test_deleting_a_test_clock_deletes_everything_attached_to_it(ctx, store):
    clock = simulated_clocks.create_test_clock(ctx, "trial", ANCHOR, "k1")
    apply_subscription(ctx, _spec(test_clock_id=clock.test_clock_id))
    apply_subscription(ctx, _spec(subscription_id="sub_real", customer_key="real"))
    simulated_clocks.advance_test_clock(ctx, clock.test_clock_id, NOW, "k2")

    simulated_clocks.delete_test_clock(ctx, clock.test_clock_id, "k3")

    assert list(store.customers) == ["real"] and list(store.subscriptions) == ["sub_real"]
    assert store.grants == {} and store.ledger == [] and store.clocks == {}
    with pytest.raises(NotFound):
        simulated_clocks.get_test_clock(ctx, clock.test_clock_id)


def test_test_clocks_are_refused_when_the_server_does_not_enable_them(clock, store):
    ctx = fake_context(clock, store)
    with pytest.raises(FailedPrecondition):
        simulated_clocks.create_test_clock(ctx, "trial", ANCHOR, "k1")
    result = apply_subscriptions(ctx, [_spec(test_clock_id="clk_1")])[0]
    assert result.error is not None and result.error.reason == "TEST_CLOCKS_DISABLED"


def test_the_ledger_pages_in_order(ctx):
    apply_subscription(ctx, _spec())
    first, token = balances.list_ledger_entries(ctx, "c1", "", None, None, None, PageRequest(2, None))
    assert token and [e.type for e in first] == [EntryType.GRANT, EntryType.EXPIRE]
    assert len(first) == 2


def test_events_are_listed_in_log_order_filtered_by_type_and_page_on(ctx):
    apply_subscription(ctx, _spec())
    catch_up(ctx.transactions, clock_key=REAL_TIME, now=NOW, batch_size=2)
    where = EventFilter(types=frozenset({EventType.CREDITS_EXPIRED}))

    first, token = events.list_events(ctx, where, PageRequest(1, None))
    last = first[-1].stored.position
    rest, end = events.list_events(ctx, where, PageRequest(1, (last.txid, last.seq)))

    assert [e.stored.event.occurred_time for e in first + rest] == [ANCHOR.replace(month=4), ANCHOR.replace(month=5)]
    assert token and not end
