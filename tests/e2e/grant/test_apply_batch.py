"""ApplySubscriptions: many revisions in one call, each with ApplySubscription's semantics and its own result."""

from __future__ import annotations

import random
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import grpc

from grant_service.v1 import grant_service_pb2 as pb
from tests.e2e.grant.conftest import expect_error, subscription, ts, utc

START = utc(2026, 1, 15, 8)
APPLIED, ALREADY, STALE = pb.APPLY_OUTCOME_APPLIED, pb.APPLY_OUTCOME_ALREADY_APPLIED, pb.APPLY_OUTCOME_STALE


def batch(stub, *items: pb.ApplySubscriptionRequest) -> list[pb.ApplySubscriptionResult]:
    return list(stub.ApplySubscriptions(pb.ApplySubscriptionsRequest(requests=items), timeout=30).results)


def outcomes(results: list[pb.ApplySubscriptionResult]) -> list[tuple[int, int, str]]:
    return [(r.outcome, r.current_revision, r.rejection.reason) for r in results]


def get(stub, sub_id: str) -> pb.Subscription:
    return stub.GetSubscription(pb.GetSubscriptionRequest(subscription_id=sub_id)).subscription


def test_a_batch_applies_every_item_and_a_replay_changes_nothing(grant):
    stub = grant.stub
    items = [subscription(f"sub_{i}", f"cus_{i % 3}", START, [(str(10 + i), None)]) for i in range(7)]
    assert outcomes(batch(stub, *items)) == [(APPLIED, 1, "")] * 7
    assert outcomes(batch(stub, *items)) == [(ALREADY, 1, "")] * 7
    for i in range(7):
        got = get(stub, f"sub_{i}")
        assert (got.customer_key, got.revision) == (f"cus_{i % 3}", 1)
        assert [a.amount for a in got.credit_schedules[0].amounts] == [str(10 + i)]
    # The grants of every item are issued as for ApplySubscription (periods Jan..May by 2026-06-01).
    grants = stub.ListGrants(pb.ListGrantsRequest(customer_key="cus_0")).grants
    assert sorted({g.subscription_id for g in grants}) == ["sub_0", "sub_3", "sub_6"]
    assert len(grants) == 3 * 5


def test_mixed_outcomes_in_one_batch_each_item_with_its_own_result(grant):
    stub = grant.stub
    stub.ApplySubscription(subscription("sub_old", "acme", START, [("10", None)], revision=2))
    stub.ApplySubscription(subscription("sub_same", "acme", START, [("10", None)]))
    invalid = subscription("sub_bad", "acme", START, [("-5", None)])
    invalid.revision = 0
    results = batch(
        stub,
        subscription("sub_new", "acme", START, [("10", None)]),
        subscription("sub_old", "acme", START, [("10", None)], revision=1),  # older than stored: STALE
        invalid,
        subscription("sub_same", "acme", START, [("10", None)]),
        subscription("sub_same", "acme", START + timedelta(days=1), [("10", None)], revision=2),  # start changed
        subscription("sub_clock", "bob", START, [("10", None)], clock_id="clk_missing"),
        subscription("sub_new2", "carol", START, [("20", None)]),
    )
    assert outcomes(results) == [
        (APPLIED, 1, ""),
        (STALE, 2, ""),
        (pb.APPLY_OUTCOME_UNSPECIFIED, 0, "INVALID_ARGUMENT"),
        (ALREADY, 1, ""),
        (pb.APPLY_OUTCOME_UNSPECIFIED, 0, "IMMUTABLE_FIELD_CHANGED"),
        (pb.APPLY_OUTCOME_UNSPECIFIED, 0, "TEST_CLOCK_NOT_FOUND"),
        (APPLIED, 1, ""),
    ]
    rejected = [r.rejection for r in results if r.HasField("rejection")]
    assert [r.code for r in rejected] == ["INVALID_ARGUMENT", "FAILED_PRECONDITION", "NOT_FOUND"]
    # Validation errors carry one field violation per bad field, paths relative to the item.
    assert sorted(v.field for v in rejected[0].field_violations) == [
        "credit_schedules[0].amounts[0].amount",
        "revision",
    ]
    assert rejected[1].metadata["fields"] == "start_time"
    # The accepted items are stored, the rejected ones left no trace.
    assert get(stub, "sub_new").revision == 1 and get(stub, "sub_new2").customer_key == "carol"
    assert get(stub, "sub_same").start_time == ts(START)
    for missing in ("sub_bad", "sub_clock"):
        expect_error(lambda m=missing: get(stub, m), grpc.StatusCode.NOT_FOUND, "SUBSCRIPTION_NOT_FOUND")
    expect_error(
        lambda: stub.ListGrants(pb.ListGrantsRequest(customer_key="bob")),
        grpc.StatusCode.NOT_FOUND,
        "CUSTOMER_NOT_FOUND",
    )


def test_revisions_of_one_subscription_in_one_batch_are_applied_in_order(grant):
    stub = grant.stub
    one = subscription("sub_o", "acme", START, [("10", None)])
    two = subscription("sub_o", "acme", START, [("10", None), ("30", utc(2026, 3, 15, 8))], revision=2)
    three = subscription(
        "sub_o", "acme", START, [("10", None), ("30", utc(2026, 3, 15, 8))], revision=3, end=START + timedelta(days=200)
    )
    assert outcomes(batch(stub, one, two, three)) == [(APPLIED, 1, ""), (APPLIED, 2, ""), (APPLIED, 3, "")]
    got = get(stub, "sub_o")
    assert got.revision == 3 and [a.amount for a in got.credit_schedules[0].amounts] == ["10", "30"]
    assert outcomes(batch(stub, two, three, one)) == [(STALE, 3, ""), (ALREADY, 3, ""), (STALE, 3, "")]
    # Another subscription: the newer revision first makes the older one stale.
    later = subscription("sub_p", "acme", START, [("10", None)], revision=2)
    earlier = subscription("sub_p", "acme", START, [("10", None)])
    assert outcomes(batch(stub, later, earlier)) == [(APPLIED, 2, ""), (STALE, 2, "")]


def test_a_rejected_item_does_not_undo_the_items_of_its_customer(grant):
    stub = grant.stub
    clock = stub.CreateTestClock(pb.CreateTestClockRequest(frozen_time=ts(START))).test_clock.test_clock_id
    results = batch(
        stub,
        subscription("sub_a", "dave", START, [("10", None)]),  # creates customer dave on real time
        subscription("sub_b", "dave", START, [("10", None)], clock_id=clock),  # dave is on real time
        subscription("sub_c", "dave", START, [("15", None)]),
    )
    assert outcomes(results) == [
        (APPLIED, 1, ""),
        (pb.APPLY_OUTCOME_UNSPECIFIED, 0, "TEST_CLOCK_MISMATCH"),
        (APPLIED, 1, ""),
    ]
    grants = stub.ListGrants(pb.ListGrantsRequest(customer_key="dave")).grants
    assert sorted({g.subscription_id for g in grants}) == ["sub_a", "sub_c"]


def test_the_batch_itself_is_validated(grant):
    stub = grant.stub
    _, violations = expect_error(
        lambda: stub.ApplySubscriptions(pb.ApplySubscriptionsRequest()),
        grpc.StatusCode.INVALID_ARGUMENT,
        "INVALID_ARGUMENT",
    )
    assert [(v.field, v.description) for v in violations] == [("requests", "must have at least one item")]
    too_many = [subscription(f"sub_{i}", "acme", START, [("1", None)]) for i in range(501)]
    _, violations = expect_error(
        lambda: stub.ApplySubscriptions(pb.ApplySubscriptionsRequest(requests=too_many)),
        grpc.StatusCode.INVALID_ARGUMENT,
        "INVALID_ARGUMENT",
    )
    assert [v.field for v in violations] == ["requests"]
    expect_error(lambda: get(stub, "sub_0"), grpc.StatusCode.NOT_FOUND, "SUBSCRIPTION_NOT_FOUND")


def test_concurrent_batches_over_the_same_customers_in_any_order_apply_each_item_once(grant):
    items = [subscription(f"sub_k{i}", f"cus_k{i % 10}", START, [("10", None)]) for i in range(30)]

    def send(seed: int) -> list[tuple[str, int]]:
        shuffled = list(items)
        random.Random(seed).shuffle(shuffled)
        return [(r.subscription_id, res.outcome) for r, res in zip(shuffled, batch(grant.stub, *shuffled), strict=True)]

    with ThreadPoolExecutor(max_workers=6) as pool:
        answers = [a for answer in pool.map(send, range(6)) for a in answer]
    applied = Counter(sub for sub, outcome in answers if outcome == APPLIED)
    assert applied == Counter({r.subscription_id: 1 for r in items})
    assert {outcome for _, outcome in answers} == {APPLIED, ALREADY}
