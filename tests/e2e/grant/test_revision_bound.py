"""A revision far ahead of the one held is refused (REVISION_TOO_FAR_AHEAD), for subscriptions alone
and in a batch, and for credit currencies; a gap within the bound is applied (the catalog parks or
supersedes revisions, so its deliveries have gaps)."""

from __future__ import annotations

from collections.abc import Iterator

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
def stub(database_url_factory) -> Iterator[grant_service_pb2_grpc.GrantServiceStub]:
    args = ["--catch-up-interval", "0", "--max-revision-step", str(STEP)]
    with serving(app.DEFINITION, app.build, database_url_factory("grant"), clock=ManualClock(REAL_NOW), args=args) as (
        _running,
        channel,
    ):
        yield grant_service_pb2_grpc.GrantServiceStub(channel)


def held_revision(stub, sub_id: str) -> int:
    return stub.GetSubscription(pb.GetSubscriptionRequest(subscription_id=sub_id), timeout=30).subscription.revision


def test_a_subscription_revision_far_ahead_is_refused(stub):
    def apply(revision: int):
        return stub.ApplySubscription(subscription("sub_a", "acme", START, [("10", None)], revision=revision))

    info, violations = expect_error(lambda: apply(2**63 - 1), INVALID, "REVISION_TOO_FAR_AHEAD")  # a first one
    assert info.metadata["current_revision"] == "0" and info.metadata["max_revision_step"] == str(STEP)
    assert [(v.field, v.description) for v in violations] == [("revision", f"must be at most {STEP}")]
    expect_error(lambda: apply(STEP + 1), INVALID, "REVISION_TOO_FAR_AHEAD")
    assert apply(STEP).outcome == pb.APPLY_OUTCOME_APPLIED  # the first revision may be up to the bound
    info, _ = expect_error(lambda: apply(2 * STEP + 1), INVALID, "REVISION_TOO_FAR_AHEAD")
    assert info.metadata["current_revision"] == str(STEP)
    assert held_revision(stub, "sub_a") == STEP  # nothing of the refused ones was applied
    assert apply(2 * STEP).outcome == pb.APPLY_OUTCOME_APPLIED  # a gap of STEP is legitimate
    assert apply(3).outcome == pb.APPLY_OUTCOME_STALE  # older ones are unaffected
    assert held_revision(stub, "sub_a") == 2 * STEP


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
    info, _ = expect_error(lambda: apply(STEP + 2), INVALID, "REVISION_TOO_FAR_AHEAD")
    assert info.metadata["current_revision"] == "1"
    reply = apply(STEP + 1)
    assert (reply.outcome, reply.current_revision) == (pb.APPLY_OUTCOME_APPLIED, STEP + 1)
