"""Customers and subscriptions: provisioning per DOMAIN.md, idempotency, the
outbox row, test clocks, listing."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import grpc
import pytest

from catalog_service.entrypoints import app
from catalog_service.v1 import catalog_service_pb2 as pb
from catalog_service.v1 import catalog_service_pb2_grpc as pb_grpc
from credit_common.grpc.timestamps import to_timestamp
from grant_service.v1 import grant_service_pb2 as grant_pb2
from tests.e2e.catalog.conftest import boolean_feature, currency, metered_feature, outbox_rows, rpc_error, wait_for
from tests.support.postgres import free_port
from tests.support.servers import serving

INVALID = grpc.StatusCode.INVALID_ARGUMENT
START = datetime(2026, 1, 31, 12, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def world(catalog):
    """A published custom plan: a variable monthly credit amount without a
    default (required), a fixed yearly one, SSO access, and a variable seat
    limit with a default."""
    calls, sso = metered_feature(catalog), boolean_feature(catalog)
    credits = currency(catalog, calls)
    plan_key = catalog.unique("enterprise")
    catalog.stub.CreatePlan(
        pb.CreatePlanRequest(
            plan=pb.Plan(
                key=plan_key,
                custom=True,
                credit_entitlements=[
                    pb.CreditEntitlement(
                        key="ai-credits-monthly",
                        currency_key=credits,
                        cadence=pb.CADENCE_MONTHLY,
                        variable_amount=pb.VariableValue(min="1000", max="1000000"),
                    ),
                    pb.CreditEntitlement(
                        key="bonus-yearly", currency_key=credits, cadence=pb.CADENCE_YEARLY, fixed_amount="500"
                    ),
                ],
                feature_entitlements=[
                    pb.FeatureEntitlement(key="sso", feature_key=sso, access=True),
                    pb.FeatureEntitlement(
                        key="calls-limit",
                        feature_key=calls,
                        variable_limit=pb.VariableValue(min="0", max="100", default_value="25"),
                    ),
                ],
            )
        )
    )
    catalog.stub.PublishPlan(pb.PublishPlanRequest(key=plan_key))
    return {"plan": plan_key, "currency": credits, "calls": calls, "sso": sso}


def customer(catalog, test_clock_id: str = "") -> str:
    key = catalog.unique("acme")
    catalog.stub.CreateCustomer(
        pb.CreateCustomerRequest(customer=pb.Customer(key=key, display_name="Acme", test_clock_id=test_clock_id))
    )
    return key


def provision(catalog, world, customer_key, values, **kwargs):
    return catalog.stub.ProvisionSubscription(
        pb.ProvisionSubscriptionRequest(
            customer_key=customer_key, plan_key=world["plan"], entitlement_values=values, **kwargs
        )
    ).subscription


def outbox(catalog, subscription_id):
    return outbox_rows(catalog, "subscription", subscription_id)


def without_handoff(subscription: pb.Subscription) -> pb.Subscription:
    copy = pb.Subscription()
    copy.CopyFrom(subscription)
    copy.ClearField("handoff")
    return copy


def test_customers(catalog):
    key = customer(catalog)
    got = catalog.stub.GetCustomer(pb.GetCustomerRequest(key=key)).customer
    assert (got.key, got.display_name, got.test_clock_id) == (key, "Acme", "")
    info, _ = rpc_error(
        lambda: catalog.stub.CreateCustomer(pb.CreateCustomerRequest(customer=pb.Customer(key=key))),
        grpc.StatusCode.ALREADY_EXISTS,
    )
    assert info.reason == "KEY_ALREADY_EXISTS"
    info, _ = rpc_error(
        lambda: catalog.stub.GetCustomer(pb.GetCustomerRequest(key="nobody")), grpc.StatusCode.NOT_FOUND
    )
    assert info.reason == "CUSTOMER_NOT_FOUND"
    _, fields = rpc_error(
        lambda: catalog.stub.CreateCustomer(pb.CreateCustomerRequest(customer=pb.Customer(key="-x"))), INVALID
    )
    assert set(fields) == {"customer.key"}
    info, _ = rpc_error(
        lambda: catalog.stub.CreateCustomer(
            pb.CreateCustomerRequest(customer=pb.Customer(key=catalog.unique("c"), test_clock_id="clk_unknown"))
        ),
        grpc.StatusCode.NOT_FOUND,
    )
    assert info.reason == "TEST_CLOCK_NOT_FOUND"
    keys = {customer(catalog) for _ in range(3)}
    seen, token = set(), ""
    while True:
        page = catalog.stub.ListCustomers(pb.ListCustomersRequest(page_size=2, page_token=token))
        seen |= {c.key for c in page.customers}
        token = page.next_page_token
        if not token:
            break
    assert keys <= seen


def test_missing_variable_value_then_negotiated_amount(catalog, world):
    """The "done" test: without the negotiated value provisioning names the
    missing entitlement; with it the subscription carries the amount."""
    acme = customer(catalog)
    info, fields = rpc_error(lambda: provision(catalog, world, acme, {}), INVALID)
    assert info.reason == "INVALID_ENTITLEMENT_VALUES"
    assert info.metadata["missing_entitlements"] == "ai-credits-monthly"
    assert set(fields) == {"entitlement_values[ai-credits-monthly]"}
    assert "ai-credits-monthly" in fields["entitlement_values[ai-credits-monthly]"]

    sub = provision(catalog, world, acme, {"ai-credits-monthly": "50000"}, start_time=to_timestamp(START))
    assert sub.subscription_id.startswith("sub_")
    assert (sub.customer_key, sub.plan_key, sub.plan_version, sub.revision) == (acme, world["plan"], 1, 1)
    assert sub.status == pb.SUBSCRIPTION_STATUS_ACTIVE
    credits = {e.key: (e.amount, e.negotiated, e.cadence) for e in sub.credit_entitlements}
    assert credits == {
        "ai-credits-monthly": ("50000", True, pb.CADENCE_MONTHLY),
        "bonus-yearly": ("500", False, pb.CADENCE_YEARLY),
    }
    features = {e.key: (e.WhichOneof("value"), e.access, e.limit, e.negotiated) for e in sub.feature_entitlements}
    assert features == {"sso": ("access", True, "", False), "calls-limit": ("limit", False, "25", True)}
    assert sub.handoff.status == pb.HANDOFF_STATUS_PENDING and sub.handoff.delivered_revision == 0
    got = catalog.stub.GetSubscription(pb.GetSubscriptionRequest(subscription_id=sub.subscription_id)).subscription
    assert without_handoff(got) == without_handoff(sub)

    (delivery,) = outbox(catalog, sub.subscription_id)
    assert (delivery.kind, delivery.revision) == ("subscription", 1)
    payload = grant_pb2.ApplySubscriptionRequest.FromString(delivery.payload)
    assert (payload.subscription_id, payload.customer_key, payload.revision) == (sub.subscription_id, acme, 1)
    assert payload.start_time == to_timestamp(START) and not payload.HasField("end_time")
    schedules = {
        s.entitlement_key: (s.currency_key, s.cadence, [(a.amount, a.effective_time) for a in s.amounts])
        for s in payload.credit_schedules
    }
    assert schedules == {
        "ai-credits-monthly": (world["currency"], grant_pb2.CADENCE_MONTHLY, [("50000", to_timestamp(START))]),
        "bonus-yearly": (world["currency"], grant_pb2.CADENCE_YEARLY, [("500", to_timestamp(START))]),
    }

    # the dispatcher delivers it (nudged by the commit) and Get shows the handoff state
    def delivered():
        got = catalog.stub.GetSubscription(pb.GetSubscriptionRequest(subscription_id=sub.subscription_id))
        return got.subscription.handoff.status == pb.HANDOFF_STATUS_DELIVERED and got.subscription.handoff

    handoff = wait_for(delivered, "the handoff")
    assert (handoff.delivered_revision, handoff.attempts, handoff.failure_reason) == (1, 1, "")
    assert not handoff.HasField("next_attempt_time")
    assert catalog.grant.applied[sub.subscription_id] == payload
    listed = catalog.stub.ListSubscriptions(pb.ListSubscriptionsRequest(customer_key=acme)).subscriptions
    assert [s.handoff for s in listed] == [handoff]


def test_every_bad_value_is_one_violation(catalog, world):
    acme = customer(catalog)
    info, fields = rpc_error(
        lambda: provision(
            catalog,
            world,
            acme,
            {"ai-credits-monthly": "999", "bonus-yearly": "10", "calls-limit": "-1", "ghost": "1"},
            start_time=to_timestamp(START),
            end_time=to_timestamp(START),
        ),
        INVALID,
    )
    assert info.reason == "INVALID_ENTITLEMENT_VALUES"
    assert set(fields) == {
        "entitlement_values[ai-credits-monthly]",
        "entitlement_values[bonus-yearly]",
        "entitlement_values[calls-limit]",
        "entitlement_values[ghost]",
        "end_time",
    }
    _, fields = rpc_error(lambda: provision(catalog, world, acme, {"ai-credits-monthly": "0"}), INVALID)
    assert set(fields) == {"entitlement_values[ai-credits-monthly]"}
    _, fields = rpc_error(lambda: provision(catalog, world, acme, {"ai-credits-monthly": "5e4"}), INVALID)
    assert set(fields) == {"entitlement_values[ai-credits-monthly]"}
    # a feature limit may be 0
    sub = provision(catalog, world, acme, {"ai-credits-monthly": "1000000", "calls-limit": "0"})
    assert {e.key: e.limit for e in sub.feature_entitlements}["calls-limit"] == "0"


def test_not_found_and_preconditions(catalog, world):
    acme = customer(catalog)
    values = {"ai-credits-monthly": "5000"}
    info, _ = rpc_error(lambda: provision(catalog, world, "nobody", values), grpc.StatusCode.NOT_FOUND)
    assert info.reason == "CUSTOMER_NOT_FOUND"
    info, _ = rpc_error(
        lambda: catalog.stub.ProvisionSubscription(
            pb.ProvisionSubscriptionRequest(customer_key=acme, plan_key="no-plan")
        ),
        grpc.StatusCode.NOT_FOUND,
    )
    assert info.reason == "PLAN_NOT_FOUND"
    info, _ = rpc_error(lambda: provision(catalog, world, acme, values, plan_version=7), grpc.StatusCode.NOT_FOUND)
    assert info.reason == "PLAN_VERSION_NOT_FOUND"

    draft_only = catalog.unique("draft")
    catalog.stub.CreatePlan(pb.CreatePlanRequest(plan=pb.Plan(key=draft_only)))
    info, _ = rpc_error(
        lambda: catalog.stub.ProvisionSubscription(
            pb.ProvisionSubscriptionRequest(customer_key=acme, plan_key=draft_only)
        ),
        grpc.StatusCode.FAILED_PRECONDITION,
    )
    assert info.reason == "PLAN_NOT_PUBLISHED"

    archived = catalog.unique("old")
    catalog.stub.CreatePlan(
        pb.CreatePlanRequest(
            plan=pb.Plan(
                key=archived,
                credit_entitlements=[
                    pb.CreditEntitlement(
                        key="c", currency_key=world["currency"], cadence=pb.CADENCE_MONTHLY, fixed_amount="1"
                    )
                ],
            )
        )
    )
    catalog.stub.PublishPlan(pb.PublishPlanRequest(key=archived))
    fixed = catalog.stub.ProvisionSubscription(
        pb.ProvisionSubscriptionRequest(customer_key=acme, plan_key=archived)
    ).subscription
    catalog.stub.ArchivePlan(pb.ArchivePlanRequest(key=archived))
    info, _ = rpc_error(
        lambda: catalog.stub.ProvisionSubscription(
            pb.ProvisionSubscriptionRequest(customer_key=acme, plan_key=archived)
        ),
        grpc.StatusCode.FAILED_PRECONDITION,
    )
    assert info.reason == "PLAN_ARCHIVED"
    # existing subscriptions are untouched
    got = catalog.stub.GetSubscription(pb.GetSubscriptionRequest(subscription_id=fixed.subscription_id)).subscription
    assert without_handoff(got) == without_handoff(fixed)
    info, _ = rpc_error(
        lambda: catalog.stub.GetSubscription(pb.GetSubscriptionRequest(subscription_id="sub_nope")),
        grpc.StatusCode.NOT_FOUND,
    )
    assert info.reason == "SUBSCRIPTION_NOT_FOUND"


def test_request_id_provisions_once(catalog, world):
    acme = customer(catalog)
    request_id = f"req-{acme}"
    first = provision(catalog, world, acme, {"ai-credits-monthly": "5000"}, request_id=request_id)
    again = provision(catalog, world, acme, {"ai-credits-monthly": "5000"}, request_id=request_id)
    assert again == first
    listed = catalog.stub.ListSubscriptions(pb.ListSubscriptionsRequest(customer_key=acme)).subscriptions
    assert [s.subscription_id for s in listed] == [first.subscription_id]
    assert len(outbox(catalog, first.subscription_id)) == 1
    info, _ = rpc_error(
        lambda: provision(catalog, world, acme, {"ai-credits-monthly": "6000"}, request_id=request_id),
        grpc.StatusCode.ALREADY_EXISTS,
    )
    assert info.reason == "REQUEST_ID_REUSED"
    _, fields = rpc_error(
        lambda: provision(catalog, world, acme, {"ai-credits-monthly": "5000"}, request_id="x" * 129), INVALID
    )
    assert set(fields) == {"request_id"}


def test_status_and_test_clocks(catalog, world):
    values = {"ai-credits-monthly": "5000"}
    clock_id = catalog.unique("clk")
    catalog.grant.clocks[clock_id] = START
    on_clock = customer(catalog, clock_id)
    sub = provision(catalog, world, on_clock, values, end_time=to_timestamp(START + timedelta(days=30)))
    assert sub.test_clock_id == clock_id
    assert sub.start_time == to_timestamp(START)  # "now" is the clock's time
    assert sub.status == pb.SUBSCRIPTION_STATUS_ACTIVE
    catalog.grant.clocks[clock_id] = START + timedelta(days=30)
    got = catalog.stub.GetSubscription(pb.GetSubscriptionRequest(subscription_id=sub.subscription_id)).subscription
    assert got.status == pb.SUBSCRIPTION_STATUS_ENDED
    (delivery,) = outbox(catalog, sub.subscription_id)
    assert grant_pb2.ApplySubscriptionRequest.FromString(delivery.payload).test_clock_id == clock_id

    info, fields = rpc_error(lambda: provision(catalog, world, on_clock, values, test_clock_id="clk_other"), INVALID)
    assert info.reason == "TEST_CLOCK_MISMATCH" and set(fields) == {"test_clock_id"}

    # a customer without a clock can name one; real time otherwise
    plain = customer(catalog)
    named = provision(catalog, world, plain, values, test_clock_id=clock_id)
    assert (named.test_clock_id, named.start_time) == (clock_id, to_timestamp(START + timedelta(days=30)))
    info, _ = rpc_error(
        lambda: provision(catalog, world, plain, values, test_clock_id="clk_unknown"), grpc.StatusCode.NOT_FOUND
    )
    assert info.reason == "TEST_CLOCK_NOT_FOUND"
    past = provision(
        catalog, world, plain, values, start_time=to_timestamp(START), end_time=to_timestamp(START + timedelta(days=1))
    )
    assert past.status == pb.SUBSCRIPTION_STATUS_ENDED


def test_list_subscriptions_newest_first_by_customer_and_plan(catalog, world):
    acme, other = customer(catalog), customer(catalog)
    values = {"ai-credits-monthly": "5000"}
    ids = [provision(catalog, world, acme, values).subscription_id for _ in range(5)]
    provision(catalog, world, other, values)

    seen, token = [], ""
    while True:
        page = catalog.stub.ListSubscriptions(
            pb.ListSubscriptionsRequest(customer_key=acme, page_size=2, page_token=token)
        )
        assert len(page.subscriptions) <= 2
        seen += [s.subscription_id for s in page.subscriptions]
        token = page.next_page_token
        if not token:
            break
    assert seen == list(reversed(ids))
    by_plan = catalog.stub.ListSubscriptions(
        pb.ListSubscriptionsRequest(plan_key=world["plan"], page_size=1000)
    ).subscriptions
    assert set(ids) <= {s.subscription_id for s in by_plan}
    assert all(s.plan_key == world["plan"] for s in by_plan)
    token = catalog.stub.ListSubscriptions(pb.ListSubscriptionsRequest(customer_key=acme, page_size=1)).next_page_token
    info, _ = rpc_error(
        lambda: catalog.stub.ListSubscriptions(pb.ListSubscriptionsRequest(customer_key=other, page_token=token)),
        INVALID,
    )
    assert info.reason == "INVALID_PAGE_TOKEN"


def test_concurrent_retries_with_one_request_id_provision_once(catalog, world):
    acme = customer(catalog)
    request = pb.ProvisionSubscriptionRequest(
        request_id=f"race-{acme}",
        customer_key=acme,
        plan_key=world["plan"],
        entitlement_values={"ai-credits-monthly": "5000"},
    )
    with ThreadPoolExecutor(max_workers=6) as pool:
        results = list(pool.map(lambda _: catalog.stub.ProvisionSubscription(request).subscription, range(6)))
    assert len({s.subscription_id for s in results}) == 1
    listed = catalog.stub.ListSubscriptions(pb.ListSubscriptionsRequest(customer_key=acme)).subscriptions
    assert len(listed) == 1
    assert len(outbox(catalog, listed[0].subscription_id)) == 1


def test_grant_service_down_is_unavailable(tmp_path):
    url = f"sqlite:///{tmp_path / 'catalog.db'}"
    args = ["--grant-service-address", f"127.0.0.1:{free_port()}"]
    with serving(app.DEFINITION, app.build, url, args=args) as (_running, channel):
        stub = pb_grpc.CatalogServiceStub(channel)
        info, _ = rpc_error(
            lambda: stub.CreateCustomer(pb.CreateCustomerRequest(customer=pb.Customer(key="c", test_clock_id="clk_1"))),
            grpc.StatusCode.UNAVAILABLE,
        )
        assert info.reason == "GRANT_SERVICE_UNAVAILABLE"
        # nothing was created
        rpc_error(lambda: stub.GetCustomer(pb.GetCustomerRequest(key="c")), grpc.StatusCode.NOT_FOUND)
