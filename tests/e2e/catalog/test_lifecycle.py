"""CancelSubscription and AmendSubscription through the catalog's gRPC API:
validation (one field violation per problem), preconditions, the new revision
and its outbox payload, idempotency. Subscriptions live on a test clock of the
fake grant service, so "now" is known."""

from __future__ import annotations

from datetime import UTC, datetime

import grpc
import pytest

from catalog_service.v1 import catalog_service_pb2 as pb
from credit_common.grpc.timestamps import to_timestamp
from grant_service.v1 import grant_service_pb2 as grant_pb2
from tests.e2e.catalog.conftest import currency, metered_feature, outbox_rows, rpc_error, wait_for

INVALID = grpc.StatusCode.INVALID_ARGUMENT
PRECONDITION = grpc.StatusCode.FAILED_PRECONDITION
START = datetime(2026, 1, 31, 12, tzinfo=UTC)


def utc(*args) -> datetime:
    return datetime(*args, tzinfo=UTC)


@pytest.fixture(scope="module")
def plan(catalog) -> str:
    """A custom plan: a variable monthly amount (1,000 to 100,000), a fixed yearly one, a variable seat limit."""
    calls = metered_feature(catalog)
    seats = metered_feature(catalog)
    credits = currency(catalog, calls)
    key = catalog.unique("contract")
    catalog.stub.CreatePlan(
        pb.CreatePlanRequest(
            plan=pb.Plan(
                key=key,
                custom=True,
                credit_entitlements=[
                    pb.CreditEntitlement(
                        key="monthly",
                        currency_key=credits,
                        cadence=pb.CADENCE_MONTHLY,
                        variable_amount=pb.VariableValue(min="1000", max="100000"),
                    ),
                    pb.CreditEntitlement(
                        key="yearly", currency_key=credits, cadence=pb.CADENCE_YEARLY, fixed_amount="7"
                    ),
                ],
                feature_entitlements=[
                    pb.FeatureEntitlement(
                        key="seats", feature_key=seats, variable_limit=pb.VariableValue(default_value="5")
                    )
                ],
            )
        )
    )
    catalog.stub.PublishPlan(pb.PublishPlanRequest(key=key))
    return key


@pytest.fixture
def on_clock(catalog, plan):
    """`make(now)`: a subscription of a new customer on a new test clock set to START,
    and a function that moves the clock."""
    clock_id = catalog.unique("clk")
    catalog.grant.clocks[clock_id] = START
    key = catalog.unique("acme")
    catalog.stub.CreateCustomer(pb.CreateCustomerRequest(customer=pb.Customer(key=key, test_clock_id=clock_id)))
    sub = catalog.stub.ProvisionSubscription(
        pb.ProvisionSubscriptionRequest(customer_key=key, plan_key=plan, entitlement_values={"monthly": "50000"})
    ).subscription

    def move(to: datetime) -> None:
        catalog.grant.clocks[clock_id] = to

    return sub, move


def amend(catalog, sub_id, values, timing=pb.AMENDMENT_TIMING_UNSPECIFIED, request_id=""):
    return catalog.stub.AmendSubscription(
        pb.AmendSubscriptionRequest(
            subscription_id=sub_id, entitlement_values=values, timing=timing, request_id=request_id
        )
    ).subscription


def cancel(catalog, sub_id, mode, request_id=""):
    return catalog.stub.CancelSubscription(
        pb.CancelSubscriptionRequest(subscription_id=sub_id, mode=mode, request_id=request_id)
    ).subscription


def test_amendment_values_are_checked_like_provisioning(catalog, on_clock):
    sub, _ = on_clock
    info, fields = rpc_error(
        lambda: amend(catalog, sub.subscription_id, {"monthly": "100001", "yearly": "8", "seats": "3", "ghost": "1"}),
        INVALID,
    )
    assert info.reason == "INVALID_ENTITLEMENT_VALUES"
    assert set(fields) == {
        "entitlement_values[monthly]",
        "entitlement_values[yearly]",
        "entitlement_values[seats]",
        "entitlement_values[ghost]",
    }
    for bad in ("abc", "0", "-1", "1e5", "1.0000001"):
        _, fields = rpc_error(lambda bad=bad: amend(catalog, sub.subscription_id, {"monthly": bad}), INVALID)
        assert set(fields) == {"entitlement_values[monthly]"}, bad
    _, fields = rpc_error(lambda: amend(catalog, sub.subscription_id, {}), INVALID)
    assert set(fields) == {"entitlement_values"}
    info, _ = rpc_error(lambda: amend(catalog, "sub_nope", {"monthly": "2000"}), grpc.StatusCode.NOT_FOUND)
    assert info.reason == "SUBSCRIPTION_NOT_FOUND"
    got = catalog.stub.GetSubscription(pb.GetSubscriptionRequest(subscription_id=sub.subscription_id)).subscription
    assert got.revision == 1  # nothing changed


def test_amend_next_period_then_immediately(catalog, on_clock):
    sub, move = on_clock
    move(utc(2026, 2, 10))
    amended = amend(catalog, sub.subscription_id, {"monthly": "80000"}, request_id=f"a-{sub.subscription_id}")
    assert amended.revision == 2
    (monthly, yearly) = amended.credit_entitlements
    assert monthly.amount == "50000"  # still in force until the next period
    assert [(a.amount, a.effective_time) for a in monthly.amount_history] == [
        ("50000", to_timestamp(START)),
        ("80000", to_timestamp(utc(2026, 2, 28, 12))),
    ]
    assert [(a.amount, a.effective_time) for a in yearly.amount_history] == [("7", to_timestamp(START))]
    assert amended.handoff.status == pb.HANDOFF_STATUS_PENDING
    # the same request_id replays the first response, the amendment is not applied twice
    assert amend(catalog, sub.subscription_id, {"monthly": "80000"}, request_id=f"a-{sub.subscription_id}") == amended

    move(utc(2026, 3, 5))
    now = amend(catalog, sub.subscription_id, {"monthly": "20000"}, pb.AMENDMENT_TIMING_IMMEDIATELY)
    assert now.revision == 3 and now.credit_entitlements[0].amount == "20000"
    rows = outbox_rows(catalog, "subscription", sub.subscription_id)
    assert [r.revision for r in rows] == [1, 2, 3]
    payload = grant_pb2.ApplySubscriptionRequest.FromString(rows[-1].payload)
    schedules = {s.entitlement_key: [(a.amount, a.effective_time) for a in s.amounts] for s in payload.credit_schedules}
    assert schedules == {
        "monthly": [
            ("50000", to_timestamp(START)),
            ("80000", to_timestamp(utc(2026, 2, 28, 12))),
            ("20000", to_timestamp(utc(2026, 3, 5))),
        ],
        "yearly": [("7", to_timestamp(START))],
    }
    wait_for(lambda: catalog.grant.applied[sub.subscription_id].revision == 3, "revision 3 delivered")
    assert catalog.grant.applied[sub.subscription_id] == payload


def test_cancel_at_period_end_then_immediately(catalog, on_clock):
    sub, move = on_clock
    _, fields = rpc_error(lambda: cancel(catalog, sub.subscription_id, pb.CANCEL_MODE_UNSPECIFIED), INVALID)
    assert set(fields) == {"mode"}
    move(utc(2026, 3, 10))
    at_end = cancel(catalog, sub.subscription_id, pb.CANCEL_MODE_AT_PERIOD_END)
    # a yearly entitlement makes the current period the year
    assert at_end.end_time == to_timestamp(utc(2027, 1, 31, 12))
    assert (at_end.cancel_time, at_end.cancel_mode) == (to_timestamp(utc(2026, 3, 10)), pb.CANCEL_MODE_AT_PERIOD_END)
    assert (at_end.revision, at_end.status) == (2, pb.SUBSCRIPTION_STATUS_ACTIVE)
    info, _ = rpc_error(lambda: cancel(catalog, sub.subscription_id, pb.CANCEL_MODE_AT_PERIOD_END), PRECONDITION)
    assert info.reason == "ALREADY_CANCELLED"
    info, _ = rpc_error(lambda: amend(catalog, sub.subscription_id, {"monthly": "2000"}), PRECONDITION)
    assert info.reason == "SUBSCRIPTION_ENDED"

    move(utc(2026, 4, 1))
    now = cancel(catalog, sub.subscription_id, pb.CANCEL_MODE_IMMEDIATELY)
    assert (now.end_time, now.cancel_mode, now.revision) == (
        to_timestamp(utc(2026, 4, 1)),
        pb.CANCEL_MODE_IMMEDIATELY,
        3,
    )
    assert now.status == pb.SUBSCRIPTION_STATUS_ENDED
    info, _ = rpc_error(lambda: cancel(catalog, sub.subscription_id, pb.CANCEL_MODE_IMMEDIATELY), PRECONDITION)
    assert info.reason == "SUBSCRIPTION_ENDED"
    payload = grant_pb2.ApplySubscriptionRequest.FromString(
        outbox_rows(catalog, "subscription", sub.subscription_id)[-1].payload
    )
    assert (payload.revision, payload.end_time) == (3, to_timestamp(utc(2026, 4, 1)))
