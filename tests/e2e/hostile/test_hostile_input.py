"""Hostile input answered with INVALID_ARGUMENT and field violations, on both
services and both backends, with no traceback logged: NUL characters,
Timestamps no datetime can hold, page tokens of another method or service,
the grant service's verdict on what the catalog forwards, undecodable bytes."""

from __future__ import annotations

import logging

import grpc
import pytest
from google.protobuf import timestamp_pb2

from catalog_service.v1 import catalog_service_pb2 as cpb
from credit_common.grpc.errors import error_details
from grant_service.v1 import grant_service_pb2 as gpb
from tests.e2e.hostile.conftest import Services, tracebacks


@pytest.fixture(autouse=True)
def _no_tracebacks(caplog):
    caplog.set_level(logging.INFO)
    yield
    assert tracebacks(caplog.records) == []


def invalid(call, request, *, reason: str = "INVALID_ARGUMENT") -> dict[str, str]:
    """Call, assert INVALID_ARGUMENT with ErrorInfo `reason`; return {field: violation reason or description}."""
    with pytest.raises(grpc.RpcError) as raised:
        call(request, timeout=30)
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT, raised.value.details()
    info, violations = error_details(raised.value)
    assert info is not None and info.reason == reason, (info, raised.value.details())
    return {v.field: v.reason or v.description for v in violations}


def test_a_nul_character_in_any_string_is_a_field_violation(services: Services):
    customer = cpb.CreateCustomerRequest(customer=cpb.Customer(key="acme", display_name="Acme\x00"))
    assert invalid(services.catalog.CreateCustomer, customer) == {"customer.display_name": "NUL_CHARACTER"}
    usage = gpb.ReportUsageRequest(request_id="r\x00", customer_key="acme", feature_key="calls", quantity="1")
    assert invalid(services.grant.ReportUsage, usage) == {"request_id": "NUL_CHARACTER"}
    lookup = cpb.GetCustomerRequest(key="\x00")
    assert invalid(services.catalog.GetCustomer, lookup) == {"key": "NUL_CHARACTER"}


@pytest.mark.parametrize(
    ("seconds", "nanos"),
    [(253_402_300_800, 0), (-62_135_596_801, 0), (0, -1), (0, 1_000_000_000), (2**63 - 1, 0), (-(2**63), 0)],
)
def test_a_timestamp_out_of_range_is_a_field_violation(services: Services, seconds, nanos):
    bad = timestamp_pb2.Timestamp(seconds=seconds, nanos=nanos)
    ok = timestamp_pb2.Timestamp(seconds=1_700_000_000)
    apply = gpb.ApplySubscriptionRequest(
        subscription_id="sub-1",
        customer_key="acme",
        revision=1,
        start_time=ok,
        credit_schedules=[
            gpb.CreditSchedule(
                entitlement_key="e",
                currency_key="c",
                cadence=gpb.CADENCE_MONTHLY,
                amounts=[
                    gpb.ScheduledAmount(amount="1", effective_time=ok),
                    gpb.ScheduledAmount(amount="2", effective_time=bad),
                ],
            )
        ],
    )
    assert invalid(services.grant.ApplySubscription, apply) == {
        "credit_schedules[0].amounts[1].effective_time": "TIMESTAMP_OUT_OF_RANGE"
    }
    balance = gpb.GetBalanceRequest(customer_key="acme", currency_key="c", as_of_time=bad)
    assert invalid(services.grant.GetBalance, balance) == {"as_of_time": "TIMESTAMP_OUT_OF_RANGE"}
    provision = cpb.ProvisionSubscriptionRequest(customer_key="acme", plan_key="p", start_time=bad)
    assert invalid(services.catalog.ProvisionSubscription, provision) == {"start_time": "TIMESTAMP_OUT_OF_RANGE"}


def _features_token(services: Services) -> str:
    for key in ("hostile-a", "hostile-b"):
        feature = cpb.Feature(key=key, display_name="F", type=cpb.FEATURE_TYPE_BOOLEAN)
        try:
            services.catalog.CreateFeature(cpb.CreateFeatureRequest(feature=feature), timeout=30)
        except grpc.RpcError as error:
            assert error.code() == grpc.StatusCode.ALREADY_EXISTS
    token = services.catalog.ListFeatures(cpb.ListFeaturesRequest(page_size=1), timeout=30).next_page_token
    assert token
    return token


def test_a_page_token_of_another_method_or_service_is_invalid(services: Services):
    token = _features_token(services)
    expected = {"page_token": "is not a next_page_token returned by this method"}
    other = {"page_token": "was issued by another method or for a request with other filters"}
    assert (
        invalid(services.catalog.ListCustomers, cpb.ListCustomersRequest(page_token=token), reason="INVALID_PAGE_TOKEN")
        == other
    )
    assert (
        invalid(
            services.catalog.ListSubscriptions,
            cpb.ListSubscriptionsRequest(page_token=token),
            reason="INVALID_PAGE_TOKEN",
        )
        == other
    )
    for call, request in [
        (services.grant.ListGrants, gpb.ListGrantsRequest(customer_key="acme", page_token=token)),
        (services.grant.ListLedgerEntries, gpb.ListLedgerEntriesRequest(customer_key="acme", page_token=token)),
        (services.grant.ListTestClocks, gpb.ListTestClocksRequest(page_token=token)),
    ]:
        assert invalid(call, request, reason="INVALID_PAGE_TOKEN") in (expected, other)


def test_the_grant_services_verdict_on_a_test_clock_id_reaches_the_catalogs_caller(services: Services):
    # The catalog accepts ids of up to 128 characters; the grant service, 40: its INVALID_ARGUMENT
    # is the caller's, on the catalog's field (it was INTERNAL).
    customer = cpb.Customer(key="clocked", display_name="C", test_clock_id="x" * 60)
    violations = invalid(services.catalog.CreateCustomer, cpb.CreateCustomerRequest(customer=customer))
    assert list(violations) == ["customer.test_clock_id"]
    customer = cpb.Customer(key="clocked", display_name="C", test_clock_id="clk_missing")
    with pytest.raises(grpc.RpcError) as raised:
        services.catalog.CreateCustomer(cpb.CreateCustomerRequest(customer=customer), timeout=30)
    assert raised.value.code() == grpc.StatusCode.NOT_FOUND


@pytest.mark.parametrize("data", [b"\xff\xff\xff", b"\x0a\x02\xc3\x28", b"\x0a\x05ab", b"\x08" * 3])
def test_undecodable_request_bytes_are_invalid_argument(services: Services, data):
    for channel, method in [
        (services.grant_channel, "/grant_service.v1.GrantService/ReportUsage"),
        (services.catalog_channel, "/catalog_service.v1.CatalogService/CreateCustomer"),
    ]:
        call = channel.unary_unary(method, request_serializer=None, response_deserializer=None)
        info_reason = "MALFORMED_REQUEST"
        with pytest.raises(grpc.RpcError) as raised:
            call(data, timeout=30)
        assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT, raised.value.details()
        info, _ = error_details(raised.value)
        assert info is not None and info.reason == info_reason


def test_concurrent_updates_of_one_currency_take_turns(services: Services):
    """Found by the fuzz on PostgreSQL: two updates read the same revision and both wrote the next (INTERNAL)."""
    from concurrent.futures import ThreadPoolExecutor

    from google.protobuf import field_mask_pb2

    feature = cpb.Feature(key="race-calls", display_name="C", type=cpb.FEATURE_TYPE_METERED, unit_name="call")
    services.catalog.CreateFeature(cpb.CreateFeatureRequest(feature=feature), timeout=30)
    currency = cpb.CreditCurrency(
        key="race-credits",
        display_name="C",
        unit_name="credit",
        rates=[cpb.CreditRate(feature_key="race-calls", credits_per_unit="1")],
    )
    services.catalog.CreateCreditCurrency(cpb.CreateCreditCurrencyRequest(credit_currency=currency), timeout=30)

    def update(i: int) -> int:
        request = cpb.UpdateCreditCurrencyRequest(
            credit_currency=cpb.CreditCurrency(key="race-credits", display_name=f"name {i}"),
            update_mask=field_mask_pb2.FieldMask(paths=["display_name"]),
        )
        return services.catalog.UpdateCreditCurrency(request, timeout=30).credit_currency.revision

    with ThreadPoolExecutor(max_workers=8) as pool:
        revisions = list(pool.map(update, range(16)))
    assert sorted(revisions) == list(range(2, 18))


def test_a_bad_item_of_a_batch_is_rejected_alone(services: Services):
    """ApplySubscriptions answers each item on its own: the generic check rejects the bad item, not the call."""
    ok = timestamp_pb2.Timestamp(seconds=1_700_000_000)

    def item(sub_id: str, customer: str, start: timestamp_pb2.Timestamp) -> gpb.ApplySubscriptionRequest:
        return gpb.ApplySubscriptionRequest(
            subscription_id=sub_id,
            customer_key=customer,
            revision=1,
            start_time=start,
            credit_schedules=[
                gpb.CreditSchedule(
                    entitlement_key="e",
                    currency_key="c",
                    cadence=gpb.CADENCE_MONTHLY,
                    amounts=[gpb.ScheduledAmount(amount="1")],
                )
            ],
        )

    reply = services.grant.ApplySubscriptions(
        gpb.ApplySubscriptionsRequest(
            requests=[
                item("batch-1", "batch\x00customer", ok),
                item("batch-2", "batch-customer", timestamp_pb2.Timestamp(seconds=0, nanos=-1)),
                item("batch-3", "batch-customer", ok),
            ]
        ),
        timeout=30,
    )
    first, second, third = reply.results
    assert first.rejection.code == "INVALID_ARGUMENT"
    assert [v.field for v in first.rejection.field_violations] == ["customer_key"]
    assert [v.field for v in second.rejection.field_violations] == ["start_time"]
    assert third.outcome == gpb.APPLY_OUTCOME_APPLIED


def test_a_bad_usage_of_a_usage_batch_is_rejected_alone(services: Services):
    """ReportUsageBatch too: the generic check (a NUL) and the field checks reject the bad usage, not the call."""
    usage = {"customer_key": "nobody-here", "feature_key": "f", "quantity": "1"}
    reply = services.grant.ReportUsageBatch(
        gpb.ReportUsageBatchRequest(
            usages=[
                gpb.ReportUsageRequest(request_id="batch\x00usage", **usage),
                gpb.ReportUsageRequest(request_id="batch-usage-2", **{**usage, "quantity": "1e999999"}),
                gpb.ReportUsageRequest(request_id="batch-usage-3", **usage),
            ]
        ),
        timeout=30,
    )
    first, second, third = reply.results
    assert first.outcome == gpb.USAGE_OUTCOME_REJECTED and first.rejection.code == "INVALID_ARGUMENT"
    assert [v.field for v in first.rejection.field_violations] == ["request_id"]
    assert [v.field for v in second.rejection.field_violations] == ["quantity"]
    assert (third.rejection.code, third.rejection.reason) == ("NOT_FOUND", "CUSTOMER_NOT_FOUND")


def test_a_subscription_whose_first_period_ends_after_year_9999_is_refused_by_the_catalog(services: Services):
    """As the grant service refuses it (S5): else the catalog accepts what its handoff can never deliver."""
    c = services.catalog
    c.CreateFeature(
        cpb.CreateFeatureRequest(
            feature=cpb.Feature(key="late-calls", display_name="C", type=cpb.FEATURE_TYPE_METERED, unit_name="call")
        ),
        timeout=30,
    )
    rate = cpb.CreditRate(feature_key="late-calls", credits_per_unit="1")
    currency = cpb.CreditCurrency(key="late-credits", display_name="C", unit_name="c", rates=[rate])
    c.CreateCreditCurrency(cpb.CreateCreditCurrencyRequest(credit_currency=currency), timeout=30)
    entitlement = cpb.CreditEntitlement(
        key="credits", currency_key="late-credits", cadence=cpb.CADENCE_MONTHLY, fixed_amount="10"
    )
    c.CreatePlan(
        cpb.CreatePlanRequest(plan=cpb.Plan(key="late-plan", display_name="P", credit_entitlements=[entitlement])),
        timeout=30,
    )
    c.PublishPlan(cpb.PublishPlanRequest(key="late-plan"), timeout=30)
    c.CreateCustomer(cpb.CreateCustomerRequest(customer=cpb.Customer(key="late", display_name="L")), timeout=30)

    def provision(seconds: int) -> cpb.ProvisionSubscriptionRequest:
        return cpb.ProvisionSubscriptionRequest(
            customer_key="late", plan_key="late-plan", start_time=timestamp_pb2.Timestamp(seconds=seconds)
        )

    dec_15_9999 = 253_400_832_000
    assert invalid(c.ProvisionSubscription, provision(dec_15_9999)) == {"start_time": "TIMESTAMP_OUT_OF_RANGE"}
    subscription = c.ProvisionSubscription(provision(dec_15_9999 - 31 * 86_400), timeout=30).subscription  # Nov 14
    cancelled = c.CancelSubscription(
        cpb.CancelSubscriptionRequest(subscription_id=subscription.subscription_id, mode=cpb.CANCEL_MODE_AT_PERIOD_END),
        timeout=30,
    ).subscription
    assert cancelled.end_time.ToDatetime().year == 9999
