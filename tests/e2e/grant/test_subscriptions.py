"""ApplySubscription / GetSubscription / ApplyCreditCurrency: revisions, validation, amendments, ends."""

from __future__ import annotations

from datetime import UTC, timedelta

import grpc

from grant_service.v1 import grant_service_pb2 as pb
from tests.e2e.grant.conftest import REAL_NOW, all_entries, expect_error, subscription, ts, utc

START = utc(2026, 1, 15, 8)


def test_revisions_are_idempotent_and_stale_ones_ignored(grant):
    stub = grant.stub
    first = subscription("sub_r", "acme", START, [("100", None)])
    assert stub.ApplySubscription(first).outcome == pb.APPLY_OUTCOME_APPLIED
    assert stub.ApplySubscription(first).outcome == pb.APPLY_OUTCOME_ALREADY_APPLIED
    second = subscription("sub_r", "acme", START, [("100", None), ("300", utc(2026, 3, 15, 8))], revision=2)
    reply = stub.ApplySubscription(second)
    assert (reply.outcome, reply.current_revision) == (pb.APPLY_OUTCOME_APPLIED, 2)
    # Real time is 2026-06-01 12:00: the change dated 2026-03-15 never rewrites the past, it applies from now.
    assert [
        (c.entitlement_key, c.requested_time.ToDatetime(), c.applied_time.ToDatetime()) for c in reply.clamped_changes
    ] == [("credits", utc(2026, 3, 15, 8).replace(tzinfo=None), REAL_NOW.replace(tzinfo=None))]
    stale = stub.ApplySubscription(first)
    assert (stale.outcome, stale.current_revision) == (pb.APPLY_OUTCOME_STALE, 2)
    assert not stale.clamped_changes
    got = stub.GetSubscription(pb.GetSubscriptionRequest(subscription_id="sub_r")).subscription
    assert got.revision == 2 and got.customer_key == "acme"
    assert [(a.amount, a.effective_time.ToDatetime()) for a in got.credit_schedules[0].amounts] == [
        ("100", START.replace(tzinfo=None)),
        ("300", REAL_NOW.replace(tzinfo=None)),
    ]
    assert got.credit_schedules[0].cadence == pb.CADENCE_MONTHLY
    # Periods Jan..May were issued (as history) before the change; May's grant is cut at now.
    grants = stub.ListGrants(pb.ListGrantsRequest(customer_key="acme")).grants
    assert [g.amount for g in grants] == ["100", "100", "100", "100", "100", "300"]
    assert [g.status for g in grants] == [pb.GRANT_STATUS_EXPIRED] * 5 + [pb.GRANT_STATUS_ACTIVE]


def test_validation_reports_every_field(grant):
    request = pb.ApplySubscriptionRequest(
        subscription_id="sub_bad",
        customer_key="Not A Key",
        revision=0,
        credit_schedules=[
            pb.CreditSchedule(
                entitlement_key="credits",
                currency_key="ai-credits",
                cadence=pb.CADENCE_UNSPECIFIED,
                amounts=[pb.ScheduledAmount(amount="1e5"), pb.ScheduledAmount(amount="-3")],
            )
        ],
    )
    _, violations = expect_error(
        lambda: grant.stub.ApplySubscription(request), grpc.StatusCode.INVALID_ARGUMENT, "INVALID_ARGUMENT"
    )
    fields = {v.field for v in violations}
    assert {
        "customer_key",
        "revision",
        "start_time",
        "credit_schedules[0].cadence",
        "credit_schedules[0].amounts[0].amount",
        "credit_schedules[0].amounts[1].amount",
    } <= fields


def test_amounts_must_be_ordered_and_start_at_the_start(grant):
    bad = subscription("sub_o", "acme", START, [("5", START + timedelta(days=1)), ("6", START)])
    _, violations = expect_error(
        lambda: grant.stub.ApplySubscription(bad), grpc.StatusCode.INVALID_ARGUMENT, "INVALID_ARGUMENT"
    )
    assert {v.field for v in violations} == {
        "credit_schedules[0].amounts[0].effective_time",
        "credit_schedules[0].amounts[1].effective_time",
    }


def test_immediate_amendment_splits_the_current_period(grant):
    stub = grant.stub
    stub.ApplySubscription(subscription("sub_a", "acme", START, [("1000", None)]))
    amended_at = REAL_NOW  # 2026-06-01 12:00, inside the period that started 2026-05-15 08:00
    stub.ApplySubscription(subscription("sub_a", "acme", START, [("1000", None), ("4000", amended_at)], revision=2))
    balance = stub.GetBalance(pb.GetBalanceRequest(customer_key="acme", currency_key="ai-credits"))
    assert balance.balance.available == "4000"
    entries = all_entries(stub, "acme", start_time=ts(utc(2026, 5, 15, 8)))
    summary = [(e.type, e.amount, e.effective_time.ToDatetime()) for e in entries]
    at_amendment = [(t, a) for t, a, when in summary if when == amended_at.replace(tzinfo=None)]
    # The old grant's remainder leaves first, then the new amount arrives (as at every period boundary).
    assert at_amendment == [(pb.LEDGER_ENTRY_TYPE_EXPIRE, "-1000"), (pb.LEDGER_ENTRY_TYPE_GRANT, "4000")]
    grants = stub.ListGrants(pb.ListGrantsRequest(customer_key="acme")).grants
    current = [g for g in grants if g.status == pb.GRANT_STATUS_ACTIVE]
    assert len(current) == 1 and current[0].expire_time.ToDatetime() == utc(2026, 6, 15, 8).replace(tzinfo=None)
    # The next period has the new amount.
    grant.clock.set(utc(2026, 6, 15, 8))
    assert stub.GetBalance(pb.GetBalanceRequest(customer_key="acme", currency_key="ai-credits")).balance.available == (
        "4000"
    )
    assert stub.ApplySubscription(
        subscription("sub_a", "acme", START, [("1000", None), ("4000", amended_at)], revision=2)
    ).outcome == (pb.APPLY_OUTCOME_ALREADY_APPLIED)


def test_cancel_immediately_and_at_period_end(grant):
    stub = grant.stub
    stub.ApplySubscription(subscription("sub_now", "now", START, [("10", None)]))
    stub.ApplySubscription(subscription("sub_now", "now", START, [("10", None)], revision=2, end=REAL_NOW))
    assert stub.GetBalance(pb.GetBalanceRequest(customer_key="now", currency_key="ai-credits")).balance.available == "0"
    last = all_entries(stub, "now")[-1]
    assert (last.type, last.amount) == (pb.LEDGER_ENTRY_TYPE_EXPIRE, "-10")
    assert last.effective_time.ToDatetime() == REAL_NOW.replace(tzinfo=None)

    period_end = utc(2026, 6, 15, 8)
    stub.ApplySubscription(subscription("sub_end", "later", START, [("10", None)]))
    stub.ApplySubscription(subscription("sub_end", "later", START, [("10", None)], revision=2, end=period_end))
    assert stub.GetBalance(pb.GetBalanceRequest(customer_key="later", currency_key="ai-credits")).balance.available == (
        "10"
    )
    grant.clock.set(period_end + timedelta(days=40))
    assert stub.GetBalance(pb.GetBalanceRequest(customer_key="later", currency_key="ai-credits")).balance.available == (
        "0"
    )
    grants = all_entries(stub, "later", type=pb.LEDGER_ENTRY_TYPE_GRANT)
    assert len(grants) == 5  # Jan..May periods, none from June 15 on


def test_immutable_fields_and_clock_mismatch(grant):
    stub = grant.stub
    stub.ApplySubscription(subscription("sub_i", "acme", START, [("10", None)]))
    expect_error(
        lambda: stub.ApplySubscription(
            subscription("sub_i", "acme", START + timedelta(days=1), [("10", None)], revision=2)
        ),
        grpc.StatusCode.FAILED_PRECONDITION,
        "IMMUTABLE_FIELD_CHANGED",
    )
    clock = stub.CreateTestClock(pb.CreateTestClockRequest(frozen_time=ts(START))).test_clock.test_clock_id
    expect_error(
        lambda: stub.ApplySubscription(subscription("sub_other", "acme", START, [("10", None)], clock_id=clock)),
        grpc.StatusCode.FAILED_PRECONDITION,
        "TEST_CLOCK_MISMATCH",
    )
    expect_error(
        lambda: stub.ApplySubscription(subscription("sub_x", "bob", START, [("10", None)], clock_id="clk_missing")),
        grpc.StatusCode.NOT_FOUND,
        "TEST_CLOCK_NOT_FOUND",
    )
    expect_error(
        lambda: stub.GetSubscription(pb.GetSubscriptionRequest(subscription_id="sub_none")),
        grpc.StatusCode.NOT_FOUND,
        "SUBSCRIPTION_NOT_FOUND",
    )


def test_credit_currency_revisions_and_rate_history(grant):
    stub = grant.stub
    rates = [pb.CreditRate(feature_key="gpt-call", credits_per_unit="2.5")]
    first = pb.ApplyCreditCurrencyRequest(currency_key="ai-credits", revision=1, rates=rates)
    assert stub.ApplyCreditCurrency(first).outcome == pb.APPLY_OUTCOME_APPLIED
    assert stub.ApplyCreditCurrency(first).outcome == pb.APPLY_OUTCOME_ALREADY_APPLIED
    later = REAL_NOW + timedelta(days=10)
    second = pb.ApplyCreditCurrencyRequest(
        currency_key="ai-credits",
        revision=2,
        rates=[pb.CreditRate(feature_key="gpt-call", credits_per_unit="4")],
        effective_time=ts(later),
    )
    assert stub.ApplyCreditCurrency(second).outcome == pb.APPLY_OUTCOME_APPLIED
    assert stub.ApplyCreditCurrency(first).outcome == pb.APPLY_OUTCOME_STALE
    stub.ApplySubscription(subscription("sub_c", "acme", START, [("1000", None)]))
    check = pb.CheckUsageRequest(customer_key="acme", feature_key="gpt-call", quantity="10")
    assert stub.CheckUsage(check).credits_required == "25"
    grant.clock.set(later)
    assert stub.CheckUsage(check).credits_required == "40"
    _, violations = expect_error(
        lambda: stub.ApplyCreditCurrency(
            pb.ApplyCreditCurrencyRequest(
                currency_key="x", revision=3, rates=[pb.CreditRate(feature_key="f", credits_per_unit="0")]
            )
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
        "INVALID_ARGUMENT",
    )
    assert [v.field for v in violations] == ["rates[0].credits_per_unit"]


def test_test_clocks_disabled_by_default(database_url_factory):
    from grant_service.entrypoints import app
    from grant_service.v1 import grant_service_pb2_grpc
    from tests.support.servers import serving

    with serving(app.DEFINITION, app.build, database_url_factory("off"), args=["--catch-up-interval", "0"]) as (_, ch):
        stub = grant_service_pb2_grpc.GrantServiceStub(ch)
        calls = [
            lambda: stub.CreateTestClock(pb.CreateTestClockRequest(frozen_time=ts(START))),
            lambda: stub.GetTestClock(pb.GetTestClockRequest(test_clock_id="clk_1")),
            lambda: stub.ListTestClocks(pb.ListTestClocksRequest()),
            lambda: stub.AdvanceTestClock(pb.AdvanceTestClockRequest(test_clock_id="clk_1", frozen_time=ts(START))),
            lambda: stub.DeleteTestClock(pb.DeleteTestClockRequest(test_clock_id="clk_1")),
            lambda: stub.ApplySubscription(subscription("s", "c", START, [("1", None)], clock_id="clk_1")),
        ]
        for call in calls:
            expect_error(call, grpc.StatusCode.FAILED_PRECONDITION, "TEST_CLOCKS_DISABLED")


def test_a_retroactive_amendment_never_rewrites_expired_periods(grant):
    stub = grant.stub
    stub.ApplySubscription(subscription("sub_h", "hist", START, [("10", None)]))
    before = all_entries(stub, "hist")
    assert len([e for e in before if e.type == pb.LEDGER_ENTRY_TYPE_GRANT]) == 5
    reply = stub.ApplySubscription(
        subscription("sub_h", "hist", START, [("10", None), ("99", utc(2026, 2, 20))], revision=2)
    )
    assert [c.applied_time.ToDatetime() for c in reply.clamped_changes] == [REAL_NOW.replace(tzinfo=None)]
    after = all_entries(stub, "hist")
    # The past stays as it was; the change applies from now (S3): the current grant is cut, 99 runs to its end.
    assert [e.entry_id for e in after[: len(before)]] == [e.entry_id for e in before]
    assert [(e.type, e.amount, e.effective_time.ToDatetime()) for e in after[len(before) :]] == [
        (pb.LEDGER_ENTRY_TYPE_EXPIRE, "-10", REAL_NOW.replace(tzinfo=None)),
        (pb.LEDGER_ENTRY_TYPE_GRANT, "99", REAL_NOW.replace(tzinfo=None)),
    ]
    grant.clock.set(utc(2026, 6, 15, 8))
    balance = stub.GetBalance(pb.GetBalanceRequest(customer_key="hist", currency_key="ai-credits"))
    assert balance.balance.available == "99"


def test_concurrent_applies_of_a_new_subscription_apply_once(grant):
    from concurrent.futures import ThreadPoolExecutor

    request = subscription("sub_cc", "fresh", START, [("10", None)])
    with ThreadPoolExecutor(8) as pool:
        outcomes = list(pool.map(lambda _: grant.stub.ApplySubscription(request, timeout=60).outcome, range(8)))
    assert sorted(outcomes) == [pb.APPLY_OUTCOME_APPLIED] + [pb.APPLY_OUTCOME_ALREADY_APPLIED] * 7
    assert len(all_entries(grant.stub, "fresh", type=pb.LEDGER_ENTRY_TYPE_GRANT)) == 5


def test_cancelled_before_it_starts_grants_nothing_and_end_before_start_is_invalid(grant):
    stub = grant.stub
    later = REAL_NOW + timedelta(days=10)
    stub.ApplySubscription(subscription("sub_f", "future", later, [("10", None)]))
    stub.ApplySubscription(subscription("sub_f", "future", later, [("10", None)], revision=2, end=later))
    grant.clock.set(later + timedelta(days=100))
    assert all_entries(stub, "future") == []
    _, violations = expect_error(
        lambda: stub.ApplySubscription(
            subscription("sub_f", "future", later, [("10", None)], revision=3, end=later - timedelta(seconds=1))
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
        "INVALID_ARGUMENT",
    )
    assert [v.field for v in violations] == ["end_time"]


def test_an_amendment_later_in_the_current_period_takes_over_at_its_instant(grant):
    stub = grant.stub
    stub.ApplySubscription(subscription("sub_l", "later", START, [("10", None)]))
    switch = REAL_NOW + timedelta(days=3)
    stub.ApplySubscription(subscription("sub_l", "later", START, [("10", None), ("70", switch)], revision=2))
    grants = stub.ListGrants(pb.ListGrantsRequest(customer_key="later")).grants
    assert [(g.amount, g.status) for g in grants[-2:]] == [
        ("10", pb.GRANT_STATUS_ACTIVE),
        ("70", pb.GRANT_STATUS_PENDING),
    ]
    assert stub.GetBalance(pb.GetBalanceRequest(customer_key="later", currency_key="ai-credits")).balance.available == (
        "10"
    )
    grant.clock.set(switch)
    assert stub.GetBalance(pb.GetBalanceRequest(customer_key="later", currency_key="ai-credits")).balance.available == (
        "70"
    )
    expiry = all_entries(stub, "later", type=pb.LEDGER_ENTRY_TYPE_EXPIRE)[-1]
    assert (expiry.amount, expiry.effective_time.ToDatetime()) == ("-10", switch.replace(tzinfo=None))


def test_catch_up_over_several_periods_records_each_boundary_as_expire_then_grant(grant):
    # Started three months before "now" and never issued (the timer is off): one read catches up
    # three periods at once, as after downtime; the ledger still tells the story in order.
    start = utc(2026, 2, 28, 9)
    grant.stub.ApplySubscription(subscription("sub_late", "late", start, [("300", None)]))
    entries = all_entries(grant.stub, "late")
    assert [(e.type, e.amount, e.effective_time.ToDatetime(tzinfo=UTC)) for e in entries] == [
        (pb.LEDGER_ENTRY_TYPE_GRANT, "300", utc(2026, 2, 28, 9)),
        (pb.LEDGER_ENTRY_TYPE_EXPIRE, "-300", utc(2026, 3, 28, 9)),
        (pb.LEDGER_ENTRY_TYPE_GRANT, "300", utc(2026, 3, 28, 9)),
        (pb.LEDGER_ENTRY_TYPE_EXPIRE, "-300", utc(2026, 4, 28, 9)),
        (pb.LEDGER_ENTRY_TYPE_GRANT, "300", utc(2026, 4, 28, 9)),
        (pb.LEDGER_ENTRY_TYPE_EXPIRE, "-300", utc(2026, 5, 28, 9)),
        (pb.LEDGER_ENTRY_TYPE_GRANT, "300", utc(2026, 5, 28, 9)),
    ]
