"""A revision far ahead is refused (REVISION_TOO_FAR_AHEAD), for subscriptions alone and in a batch,
and for credit currencies; a gap within the bound is applied (the catalog parks or supersedes
revisions, so its deliveries have gaps). The bound holds in total: within a window (a day) a revision
rises at most STEP above the one held when the window opened, however the rises are split across the
items of a batch and across calls; a new window opens once the last one has passed."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

import grpc
import pytest

from credit_common.clock import ManualClock
from grant_service.entrypoints import app
from grant_service.v1 import grant_service_pb2 as pb
from grant_service.v1 import grant_service_pb2_grpc
from tests.e2e.grant.conftest import REAL_NOW, expect_error, subscription, utc
from tests.support.servers import serving

START = utc(2026, 1, 15, 8)
STEP = 10
INVALID = grpc.StatusCode.INVALID_ARGUMENT


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(REAL_NOW)


@pytest.fixture
def stub(database_url_factory, clock) -> Iterator[grant_service_pb2_grpc.GrantServiceStub]:
    args = ["--catch-up-interval", "0", "--max-revision-step", str(STEP)]
    with serving(app.DEFINITION, app.build, database_url_factory("grant"), clock=clock, args=args) as (
        _running,
        channel,
    ):
        yield grant_service_pb2_grpc.GrantServiceStub(channel)


def held_revision(stub, sub_id: str) -> int:
    return stub.GetSubscription(pb.GetSubscriptionRequest(subscription_id=sub_id), timeout=30).subscription.revision


def test_a_subscription_revision_far_ahead_is_refused(stub, clock):
    def apply(revision: int):
        return stub.ApplySubscription(subscription("sub_a", "acme", START, [("10", None)], revision=revision))

    info, violations = expect_error(lambda: apply(2**63 - 1), INVALID, "REVISION_TOO_FAR_AHEAD")  # a first one
    assert info.metadata["current_revision"] == "0" and info.metadata["max_revision_step"] == str(STEP)
    assert [(v.field, v.description) for v in violations] == [("revision", f"must be at most {STEP}")]
    expect_error(lambda: apply(STEP + 1), INVALID, "REVISION_TOO_FAR_AHEAD")
    assert apply(STEP).outcome == pb.APPLY_OUTCOME_APPLIED  # the first revision may be up to the bound
    # within the window opened by the first revision (at base 0), nothing above STEP
    info, _ = expect_error(lambda: apply(STEP + 1), INVALID, "REVISION_TOO_FAR_AHEAD")
    assert (info.metadata["current_revision"], info.metadata["window_base_revision"]) == (str(STEP), "0")
    assert held_revision(stub, "sub_a") == STEP  # nothing of the refused ones was applied
    clock.advance(timedelta(days=1))  # the next window opens at the revision held: STEP
    expect_error(lambda: apply(2 * STEP + 1), INVALID, "REVISION_TOO_FAR_AHEAD")
    assert apply(2 * STEP).outcome == pb.APPLY_OUTCOME_APPLIED  # a gap of STEP is legitimate
    assert apply(3).outcome == pb.APPLY_OUTCOME_STALE  # older ones are unaffected
    assert held_revision(stub, "sub_a") == 2 * STEP


def test_the_bound_holds_in_total_across_the_items_of_a_batch(stub, clock):
    """200 items of one subscription, each one revision above the last: only the first STEP apply."""
    items = [subscription("sub_m", "acme", START, [("10", None)], revision=r) for r in range(1, 201)]
    results = stub.ApplySubscriptions(pb.ApplySubscriptionsRequest(requests=items), timeout=60).results
    applied = [r.current_revision for r in results if r.outcome == pb.APPLY_OUTCOME_APPLIED]
    assert applied == list(range(1, STEP + 1))
    assert {r.rejection.reason for r in results[STEP:]} == {"REVISION_TOO_FAR_AHEAD"}
    assert held_revision(stub, "sub_m") == STEP


def test_the_bound_holds_in_total_across_calls(stub, clock):
    """Eleven calls of 20 items each, one revision apart: STEP in the day, STEP more the next day."""
    revision = 0
    for _call in range(11):
        items = [subscription("sub_n", "acme", START, [("10", None)], revision=revision + k) for k in range(1, 21)]
        results = stub.ApplySubscriptions(pb.ApplySubscriptionsRequest(requests=items), timeout=60).results
        revision = max([revision, *(r.current_revision for r in results if r.outcome == pb.APPLY_OUTCOME_APPLIED)])
    assert held_revision(stub, "sub_n") == STEP
    clock.advance(timedelta(hours=23, minutes=59))  # still the first window
    one = stub.ApplySubscriptions(
        pb.ApplySubscriptionsRequest(requests=[subscription("sub_n", "acme", START, [("10", None)], revision=STEP + 1)])
    )
    assert one.results[0].rejection.reason == "REVISION_TOO_FAR_AHEAD"
    clock.advance(timedelta(minutes=1))
    for r in range(STEP + 1, 2 * STEP + 5):
        stub.ApplySubscriptions(
            pb.ApplySubscriptionsRequest(requests=[subscription("sub_n", "acme", START, [("10", None)], revision=r)])
        )
    assert held_revision(stub, "sub_n") == 2 * STEP


def test_a_revision_far_ahead_in_a_batch_is_refused_alone(stub):
    results = stub.ApplySubscriptions(
        pb.ApplySubscriptionsRequest(
            requests=[
                subscription("sub_b", "acme", START, [("10", None)], revision=2**62),
                subscription("sub_c", "acme", START, [("10", None)], revision=2),
            ]
        ),
        timeout=30,
    ).results
    rejection = results[0].rejection
    assert (rejection.code, rejection.reason) == ("INVALID_ARGUMENT", "REVISION_TOO_FAR_AHEAD")
    assert [v.field for v in rejection.field_violations] == ["revision"]
    assert (results[1].outcome, results[1].current_revision) == (pb.APPLY_OUTCOME_APPLIED, 2)
    with pytest.raises(grpc.RpcError) as missing:
        held_revision(stub, "sub_b")
    assert missing.value.code() == grpc.StatusCode.NOT_FOUND


def test_a_currency_revision_far_ahead_is_refused(stub):
    rates = [pb.CreditRate(feature_key="gpt-calls", credits_per_unit="2.5")]

    def apply(revision: int):
        return stub.ApplyCreditCurrency(
            pb.ApplyCreditCurrencyRequest(currency_key="ai-credits", revision=revision, rates=rates), timeout=30
        )

    info, violations = expect_error(lambda: apply(2**63 - 1), INVALID, "REVISION_TOO_FAR_AHEAD")
    assert [v.field for v in violations] == ["revision"]
    assert apply(1).outcome == pb.APPLY_OUTCOME_APPLIED
    info, _ = expect_error(lambda: apply(STEP + 1), INVALID, "REVISION_TOO_FAR_AHEAD")
    assert info.metadata["current_revision"] == "1" and info.metadata["window_base_revision"] == "0"
    reply = apply(STEP)
    assert (reply.outcome, reply.current_revision) == (pb.APPLY_OUTCOME_APPLIED, STEP)
    for revision in range(STEP + 1, STEP + 4):  # one at a time is no way around the bound either
        expect_error(lambda r=revision: apply(r), INVALID, "REVISION_TOO_FAR_AHEAD")


def test_amounts_above_the_ceiling_are_refused(database_url_factory):
    """--max-applied-amount bounds what an Apply may schedule (what a leaked sync key can mint)."""
    args = ["--catch-up-interval", "0", "--max-applied-amount", "1000"]
    url = database_url_factory("grant")
    with serving(app.DEFINITION, app.build, url, clock=ManualClock(REAL_NOW), args=args) as (_running, channel):
        stub = grant_service_pb2_grpc.GrantServiceStub(channel)
        request = subscription("sub_x", "acme", START, [("1000", None), ("1000.01", utc(2026, 3, 1))])
        info, violations = expect_error(lambda: stub.ApplySubscription(request), INVALID, "AMOUNT_ABOVE_CEILING")
        assert info.metadata["max_applied_amount"] == "1000"
        assert [v.field for v in violations] == ["credit_schedules[0].amounts[1].amount"]
        ok = subscription("sub_x", "acme", START, [("1000", None)])
        assert stub.ApplySubscription(ok).outcome == pb.APPLY_OUTCOME_APPLIED
