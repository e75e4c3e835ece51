"""Issue 13 at the gRPC level, on a real server, on both backends: changes at and around period
boundaries (withdrawal, cancel, void then change), pending grants written to the ledger only when
they become effective, late changes clamped to now and reported, and the end of representable time."""

from __future__ import annotations

from datetime import datetime, timedelta
from decimal import Decimal

import grpc

from credit_common.periods import MAX_INSTANT
from grant_service.v1 import grant_service_pb2 as pb
from tests.e2e.grant.conftest import REAL_NOW, all_entries, expect_error, subscription, ts, utc

A = utc(2024, 1, 31, 12)  # the issue's anchor
P1, P2, P3 = utc(2024, 2, 29, 12), utc(2024, 3, 31, 12), utc(2024, 4, 30, 12)
GRANT, EXPIRE, VOID = pb.LEDGER_ENTRY_TYPE_GRANT, pb.LEDGER_ENTRY_TYPE_EXPIRE, pb.LEDGER_ENTRY_TYPE_VOID


def _clock(stub, at: datetime) -> str:
    return stub.CreateTestClock(pb.CreateTestClockRequest(name="c", frozen_time=ts(at))).test_clock.test_clock_id


def _advance(stub, clock_id: str, at: datetime) -> None:
    stub.AdvanceTestClock(pb.AdvanceTestClockRequest(test_clock_id=clock_id, frozen_time=ts(at)), timeout=60)


def _naive(t: datetime) -> datetime:
    return t.replace(tzinfo=None)


def _ledger(stub, customer: str) -> list[tuple]:
    return [(e.type, e.amount, e.effective_time.ToDatetime(), e.grant_id) for e in all_entries(stub, customer)]


def _grants(stub, customer: str) -> list[pb.Grant]:
    return list(stub.ListGrants(pb.ListGrantsRequest(customer_key=customer, page_size=1000)).grants)


def _balance(stub, customer: str) -> str:
    return stub.GetBalance(pb.GetBalanceRequest(customer_key=customer, currency_key="ai-credits")).balance.available


def _assert_ledger_is_the_balance(stub, customer: str, now: datetime) -> None:
    """S2: nothing in the ledger after now, and its sum is the balance."""
    entries = all_entries(stub, customer)
    assert all(e.effective_time.ToDatetime() <= _naive(now) for e in entries), "an entry after now"
    assert sum((Decimal(e.amount) for e in entries), Decimal(0)) == Decimal(_balance(stub, customer))


def _on_clock(stub, customer: str, now: datetime, **kwargs):
    clock_id = _clock(stub, A)
    stub.ApplySubscription(subscription(f"sub_{customer}", customer, A, [("100", None)], clock_id=clock_id, **kwargs))
    _advance(stub, clock_id, now)
    return clock_id


def _period_1(stub, customer: str) -> list[pb.Grant]:
    return [g for g in _grants(stub, customer) if g.period_index == 1]


def test_amount_effective_exactly_at_an_issued_period_start_replaces_that_periods_grant(grant):
    stub = grant.stub
    clock_id = _on_clock(stub, "amend", P1)
    assert [g.amount for g in _period_1(stub, "amend")] == ["100"]  # period 1 is issued
    reply = stub.ApplySubscription(
        subscription("sub_amend", "amend", A, [("100", None), ("200", P1)], revision=2, clock_id=clock_id)
    )
    assert reply.outcome == pb.APPLY_OUTCOME_APPLIED and not reply.clamped_changes
    period_1 = _period_1(stub, "amend")
    assert [(g.amount, g.effective_time.ToDatetime(), g.expire_time.ToDatetime()) for g in period_1] == [
        ("200", _naive(P1), _naive(P2))
    ]
    ledger = _ledger(stub, "amend")
    # Period 0's grant and expiry, then period 1's one grant of 200: no +100/-100 pair for period 1.
    assert [(t, a, when) for t, a, when, _ in ledger] == [
        (GRANT, "100", _naive(A)),
        (EXPIRE, "-100", _naive(P1)),
        (GRANT, "200", _naive(P1)),
    ]
    assert _balance(stub, "amend") == "200"
    _assert_ledger_is_the_balance(stub, "amend", P1)
    _advance(stub, clock_id, P2)
    assert [(t, a) for t, a, when, _ in _ledger(stub, "amend") if when == _naive(P2)] == [
        (EXPIRE, "-200"),
        (GRANT, "200"),
    ]


def test_the_same_through_apply_subscriptions_and_a_late_catalog_amendment(grant):
    stub = grant.stub
    clock_id = _on_clock(stub, "batch", P1)
    item = subscription("sub_batch", "batch", A, [("100", None), ("200", P1)], revision=2, clock_id=clock_id)
    result = stub.ApplySubscriptions(pb.ApplySubscriptionsRequest(requests=[item])).results[0]
    assert result.outcome == pb.APPLY_OUTCOME_APPLIED and not result.clamped_changes
    assert [g.amount for g in _period_1(stub, "batch")] == ["200"]

    # The catalog dates an IMMEDIATELY amendment at its own now; delivered 5 ms later, it is clamped
    # to the grant service's now (here the period start), reported, and applied all the same.
    clock_id = _on_clock(stub, "late", P1)
    sent_at = P1 - timedelta(milliseconds=5)
    item = subscription("sub_late", "late", A, [("100", None), ("200", sent_at)], revision=2, clock_id=clock_id)
    result = stub.ApplySubscriptions(pb.ApplySubscriptionsRequest(requests=[item])).results[0]
    assert result.outcome == pb.APPLY_OUTCOME_APPLIED
    assert [
        (c.entitlement_key, c.requested_time.ToDatetime(), c.applied_time.ToDatetime()) for c in result.clamped_changes
    ] == [("credits", _naive(sent_at), _naive(P1))]
    assert [g.amount for g in _period_1(stub, "late")] == ["200"]
    assert [g.amount for g in _grants(stub, "late") if g.period_index == 0] == ["100"]  # the past is untouched
    got = stub.GetSubscription(pb.GetSubscriptionRequest(subscription_id="sub_late")).subscription
    assert [(a.amount, a.effective_time.ToDatetime()) for a in got.credit_schedules[0].amounts] == [
        ("100", _naive(A)),
        ("200", _naive(P1)),
    ]
    _assert_ledger_is_the_balance(stub, "late", P1)


def test_cancel_exactly_at_an_issued_period_start_issues_nothing_for_that_period(grant):
    stub = grant.stub
    clock_id = _on_clock(stub, "cancel", P1)
    reply = stub.ApplySubscription(
        subscription("sub_cancel", "cancel", A, [("100", None)], revision=2, end=P1, clock_id=clock_id)
    )
    assert reply.outcome == pb.APPLY_OUTCOME_APPLIED and not reply.clamped_changes
    assert _period_1(stub, "cancel") == []
    assert [(t, a, when) for t, a, when, _ in _ledger(stub, "cancel")] == [
        (GRANT, "100", _naive(A)),
        (EXPIRE, "-100", _naive(P1)),
    ]
    assert _balance(stub, "cancel") == "0"
    _advance(stub, clock_id, P3)
    assert len(_grants(stub, "cancel")) == 1


def test_void_then_an_immediate_amendment_issues_the_new_amount_to_the_period_end(grant):
    stub = grant.stub
    voided_at, amended_at = P1 + timedelta(days=2), P1 + timedelta(days=5)
    clock_id = _on_clock(stub, "void", voided_at)
    current = _period_1(stub, "void")[0]
    stub.VoidGrant(pb.VoidGrantRequest(grant_id=current.grant_id, reason="ops", request_id="v1"))
    _advance(stub, clock_id, amended_at)
    stub.ApplySubscription(
        subscription("sub_void", "void", A, [("100", None), ("300", amended_at)], revision=2, clock_id=clock_id)
    )
    period_1 = _period_1(stub, "void")
    assert [(g.amount, g.status, g.effective_time.ToDatetime(), g.expire_time.ToDatetime()) for g in period_1] == [
        ("100", pb.GRANT_STATUS_VOIDED, _naive(P1), _naive(P2)),
        ("300", pb.GRANT_STATUS_ACTIVE, _naive(amended_at), _naive(P2)),
    ]
    assert _balance(stub, "void") == "300"
    assert [(t, a, when) for t, a, when, _ in _ledger(stub, "void")][-2:] == [
        (VOID, "-100", _naive(voided_at)),
        (GRANT, "300", _naive(amended_at)),
    ]
    _assert_ledger_is_the_balance(stub, "void", amended_at)
    _advance(stub, clock_id, P2)
    assert [(t, a) for t, a, when, _ in _ledger(stub, "void") if when == _naive(P2)] == [
        (EXPIRE, "-300"),
        (GRANT, "300"),
    ]


def test_a_one_off_grant_for_later_is_pending_until_it_is_effective(grant):
    stub = grant.stub
    now = P1 + timedelta(days=1)
    clock_id = _on_clock(stub, "later", now)
    starts, ends = now + timedelta(days=2), now + timedelta(days=4)
    created = stub.CreateGrant(
        pb.CreateGrantRequest(
            request_id="c1",
            customer_key="later",
            currency_key="ai-credits",
            amount="40",
            effective_time=ts(starts),
            expire_time=ts(ends),
        )
    ).grant
    assert created.status == pb.GRANT_STATUS_PENDING
    assert [g.status for g in _grants(stub, "later") if g.grant_id == created.grant_id] == [pb.GRANT_STATUS_PENDING]
    assert [e for e in _ledger(stub, "later") if e[3] == created.grant_id] == []
    assert _balance(stub, "later") == "100"
    _assert_ledger_is_the_balance(stub, "later", now)
    _advance(stub, clock_id, starts)
    assert [e[:3] for e in _ledger(stub, "later") if e[3] == created.grant_id] == [(GRANT, "40", _naive(starts))]
    assert _balance(stub, "later") == "140"
    _assert_ledger_is_the_balance(stub, "later", starts)
    # A catch-up over its whole life writes its GRANT and EXPIRE at their own instants.
    second = stub.CreateGrant(
        pb.CreateGrantRequest(
            request_id="c2",
            customer_key="later",
            currency_key="ai-credits",
            amount="5",
            effective_time=ts(starts + timedelta(hours=1)),
            expire_time=ts(starts + timedelta(hours=2)),
        )
    ).grant
    _advance(stub, clock_id, ends)
    assert [e[:3] for e in _ledger(stub, "later") if e[3] == second.grant_id] == [
        (GRANT, "5", _naive(starts + timedelta(hours=1))),
        (EXPIRE, "-5", _naive(starts + timedelta(hours=2))),
    ]
    _assert_ledger_is_the_balance(stub, "later", ends)


def test_a_pending_one_off_grant_opens_on_a_read_of_a_real_time_customer_and_a_void_cancels_one(grant):
    stub = grant.stub
    stub.ApplySubscription(subscription("sub_rt", "rt", REAL_NOW - timedelta(days=3), [("10", None)]))
    starts = REAL_NOW + timedelta(hours=1)
    request = pb.CreateGrantRequest(
        request_id="c1", customer_key="rt", currency_key="ai-credits", amount="7", effective_time=ts(starts)
    )
    created = stub.CreateGrant(request).grant
    cancelled = stub.CreateGrant(
        pb.CreateGrantRequest(
            request_id="c2", customer_key="rt", currency_key="ai-credits", amount="8", effective_time=ts(starts)
        )
    ).grant
    voided = stub.VoidGrant(pb.VoidGrantRequest(grant_id=cancelled.grant_id, request_id="v1")).grant
    assert voided.status == pb.GRANT_STATUS_VOIDED
    assert _balance(stub, "rt") == "10"
    _assert_ledger_is_the_balance(stub, "rt", REAL_NOW)
    grant.clock.set(starts)
    assert _balance(stub, "rt") == "17"  # the read opened it
    assert [e[:3] for e in _ledger(stub, "rt") if e[3] == created.grant_id] == [(GRANT, "7", _naive(starts))]
    assert [e for e in _ledger(stub, "rt") if e[3] == cancelled.grant_id] == []
    _assert_ledger_is_the_balance(stub, "rt", starts)


def test_a_future_amendment_inside_an_issued_period_is_pending_until_its_time(grant):
    stub = grant.stub
    now, change = P1 + timedelta(days=1), P1 + timedelta(days=10)
    clock_id = _on_clock(stub, "future", now)
    stub.ApplySubscription(
        subscription("sub_future", "future", A, [("100", None), ("300", change)], revision=2, clock_id=clock_id)
    )
    period_1 = _period_1(stub, "future")
    assert [(g.amount, g.status) for g in period_1] == [
        ("100", pb.GRANT_STATUS_ACTIVE),
        ("300", pb.GRANT_STATUS_PENDING),
    ]
    assert _balance(stub, "future") == "100"
    _assert_ledger_is_the_balance(stub, "future", now)
    # A debit (or any read) at the change instant opens it.
    _advance(stub, clock_id, change - timedelta(days=1))
    _assert_ledger_is_the_balance(stub, "future", change - timedelta(days=1))
    _advance(stub, clock_id, change)
    assert [(t, a) for t, a, when, _ in _ledger(stub, "future") if when == _naive(change)] == [
        (EXPIRE, "-100"),
        (GRANT, "300"),
    ]
    assert _balance(stub, "future") == "300"
    _assert_ledger_is_the_balance(stub, "future", change)
    # A catch-up over several periods with a pending segment keeps every instant's order.
    clock_id = _on_clock(stub, "jump", now)
    stub.ApplySubscription(
        subscription("sub_jump", "jump", A, [("100", None), ("300", change)], revision=2, clock_id=clock_id)
    )
    _advance(stub, clock_id, P3 + timedelta(days=1))
    assert [(t, a, when) for t, a, when, _ in _ledger(stub, "jump")] == [
        (GRANT, "100", _naive(A)),
        (EXPIRE, "-100", _naive(P1)),
        (GRANT, "100", _naive(P1)),
        (EXPIRE, "-100", _naive(change)),
        (GRANT, "300", _naive(change)),
        (EXPIRE, "-300", _naive(P2)),
        (GRANT, "300", _naive(P2)),
        (EXPIRE, "-300", _naive(P3)),
        (GRANT, "300", _naive(P3)),
    ]
    _assert_ledger_is_the_balance(stub, "jump", P3 + timedelta(days=1))


def test_a_subscription_whose_first_period_would_not_end_before_year_10000_is_rejected(grant):
    for start, cadence in ((utc(9999, 12, 15), pb.CADENCE_MONTHLY), (utc(9999, 1, 1), pb.CADENCE_YEARLY)):
        request = subscription("sub_far", "far", start, [("1", None)], cadence=cadence)
        _, violations = expect_error(
            lambda request=request: grant.stub.ApplySubscription(request),
            grpc.StatusCode.INVALID_ARGUMENT,
            "INVALID_ARGUMENT",
        )
        assert [v.field for v in violations] == ["start_time"]
        result = grant.stub.ApplySubscriptions(pb.ApplySubscriptionsRequest(requests=[request])).results[0]
        assert [v.field for v in result.rejection.field_violations] == ["start_time"]


def test_a_schedule_reaching_the_end_of_time_never_breaks_reads(grant):
    stub = grant.stub
    anchor = utc(9999, 10, 31, 12)
    clock_id = _clock(stub, anchor)
    stub.ApplySubscription(subscription("sub_end", "end", anchor, [("5", None)], clock_id=clock_id))
    last = utc(9999, 12, 31, 12)
    for now in (last, MAX_INSTANT):
        _advance(stub, clock_id, now)
        grants = _grants(stub, "end")
        assert [(g.period_index, g.expire_time.ToDatetime()) for g in grants] == [
            (0, _naive(utc(9999, 11, 30, 12))),
            (1, _naive(last)),
            (2, _naive(MAX_INSTANT)),
        ]
        stub.GetSubscription(pb.GetSubscriptionRequest(subscription_id="sub_end"))
        _assert_ledger_is_the_balance(stub, "end", now)
    assert _balance(stub, "end") == "0"  # the last grant expired at the last instant
    # An amendment and a cancel near the end still work.
    reply = stub.ApplySubscription(
        subscription("sub_end", "end", anchor, [("5", None), ("6", MAX_INSTANT)], revision=2, clock_id=clock_id)
    )
    assert reply.outcome == pb.APPLY_OUTCOME_APPLIED
    stub.ApplySubscription(
        subscription("sub_end", "end", anchor, [("5", None)], revision=3, end=MAX_INSTANT, clock_id=clock_id)
    )
    assert len(_grants(stub, "end")) == 3
