"""ReportUsage over a real server: the errors a caller gets (status, reason, field), concurrent
debits that never overdraw, the same usage from many threads debited once, test clocks. The rules of
a debit (burn-down order, insufficiency, idempotency, a pending grant's start) are tested at unit
speed over the fakes (tests/unit/grant/test_use_cases.py)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal

import grpc

from credit_common.grpc.errors import error_details
from grant_service.v1 import grant_service_pb2 as pb
from tests.e2e.grant.conftest import REAL_NOW, all_entries, expect_error, subscription, ts, utc

START = utc(2026, 5, 20)


def _setup(stub, amount="100"):
    stub.ApplyCreditCurrency(
        pb.ApplyCreditCurrencyRequest(
            currency_key="ai-credits",
            revision=1,
            rates=[
                pb.CreditRate(feature_key="gpt-call", credits_per_unit="2.5"),
                pb.CreditRate(feature_key="shared", credits_per_unit="1"),
            ],
        )
    )
    stub.ApplyCreditCurrency(
        pb.ApplyCreditCurrencyRequest(
            currency_key="gpu-credits", revision=1, rates=[pb.CreditRate(feature_key="shared", credits_per_unit="3")]
        )
    )
    stub.ApplySubscription(subscription("sub_u", "acme", START, [(amount, None)]))


def _usage(request_id, quantity, feature="gpt-call", customer="acme", currency=""):
    return pb.ReportUsageRequest(
        request_id=request_id, customer_key=customer, feature_key=feature, quantity=quantity, currency_key=currency
    )


def test_usage_errors(grant):
    stub = grant.stub
    _setup(stub)
    expect_error(
        lambda: stub.ReportUsage(_usage("a", "1", customer="nobody")), grpc.StatusCode.NOT_FOUND, "CUSTOMER_NOT_FOUND"
    )
    expect_error(
        lambda: stub.ReportUsage(_usage("b", "1", feature="nope")), grpc.StatusCode.NOT_FOUND, "FEATURE_NOT_FOUND"
    )
    expect_error(
        lambda: stub.ReportUsage(_usage("c", "1", currency="zzz")), grpc.StatusCode.NOT_FOUND, "CURRENCY_NOT_FOUND"
    )
    _, violations = expect_error(
        lambda: stub.ReportUsage(_usage("d", "1", feature="shared")),
        grpc.StatusCode.INVALID_ARGUMENT,
        "AMBIGUOUS_CURRENCY",
    )
    assert [v.field for v in violations] == ["currency_key"]
    assert stub.ReportUsage(_usage("e", "2", feature="shared", currency="ai-credits")).usage.credits == "2"
    expect_error(
        lambda: stub.ReportUsage(_usage("f", "1", currency="gpu-credits")),
        grpc.StatusCode.FAILED_PRECONDITION,
        "FEATURE_NOT_BURNING_CURRENCY",
    )
    stub.ApplyCreditCurrency(
        pb.ApplyCreditCurrencyRequest(
            currency_key="ai-credits", revision=2, rates=[pb.CreditRate(feature_key="shared", credits_per_unit="1")]
        )
    )
    expect_error(
        lambda: stub.ReportUsage(_usage("g", "1")), grpc.StatusCode.FAILED_PRECONDITION, "FEATURE_BURNS_NO_CURRENCY"
    )
    _, violations = expect_error(
        lambda: stub.ReportUsage(
            pb.ReportUsageRequest(customer_key="acme", feature_key="gpt-call", quantity="0.0000001")
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
        "INVALID_ARGUMENT",
    )
    assert {v.field for v in violations} == {"request_id", "quantity"}


def test_concurrent_debits_never_overdraw(grant):
    stub = grant.stub
    _setup(stub, amount="1000")
    requests = [_usage(f"c-{i}", "7") for i in range(80)]  # 17.5 credits each; 57 fit in 1000

    def report(request):
        try:
            return stub.ReportUsage(request, timeout=60).usage
        except grpc.RpcError as error:
            info, _ = error_details(error)
            assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and info.reason == "INSUFFICIENT_CREDITS"
            return None

    with ThreadPoolExecutor(16) as pool:
        results = list(pool.map(report, requests))
    accepted = [u for u in results if u is not None]
    assert len(accepted) == 57
    debits = all_entries(stub, "acme", type=pb.LEDGER_ENTRY_TYPE_DEBIT)
    assert sum(-Decimal(e.amount) for e in debits) == sum(Decimal(u.credits) for u in accepted) == Decimal("997.5")
    balance = stub.GetBalance(pb.GetBalanceRequest(customer_key="acme", currency_key="ai-credits")).balance
    assert Decimal(balance.available) == Decimal("2.5") >= 0
    # The running total a void uses agrees with the ledger's sum of debits.
    (recurring,) = stub.ListGrants(pb.ListGrantsRequest(customer_key="acme")).grants
    assert (recurring.used, recurring.remaining) == ("997.5", "2.5")
    voided = stub.VoidGrant(pb.VoidGrantRequest(grant_id=recurring.grant_id, reason="check")).grant
    assert all_entries(stub, "acme", type=pb.LEDGER_ENTRY_TYPE_VOID)[0].amount == "-2.5"
    assert voided.status == pb.GRANT_STATUS_VOIDED


def test_usage_time_and_rate_follow_the_test_clock(grant):
    stub = grant.stub
    _setup(stub)
    clock = stub.CreateTestClock(pb.CreateTestClockRequest(frozen_time=ts(utc(2024, 1, 1)))).test_clock.test_clock_id
    stub.ApplySubscription(subscription("sub_t", "tester", utc(2024, 1, 1), [("10", None)], clock_id=clock))
    usage = stub.ReportUsage(_usage("t1", "2", customer="tester")).usage
    assert usage.usage_time.ToDatetime() == utc(2024, 1, 1).replace(tzinfo=None)
    assert usage.usage_time.ToDatetime() != REAL_NOW.replace(tzinfo=None)


def test_the_same_usage_from_many_threads_debits_once(grant):
    stub = grant.stub
    _setup(stub)
    with ThreadPoolExecutor(16) as pool:
        usages = list(pool.map(lambda _: stub.ReportUsage(_usage("same", "3"), timeout=60).usage, range(32)))
    assert len({u.usage_id for u in usages}) == 1
    assert len(all_entries(stub, "acme", type=pb.LEDGER_ENTRY_TYPE_DEBIT)) == 1
    assert stub.GetBalance(pb.GetBalanceRequest(customer_key="acme", currency_key="ai-credits")).balance.available == (
        "92.5"
    )
