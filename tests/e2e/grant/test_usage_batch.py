"""ReportUsageBatch over a real server: each usage its own result (accepted, replayed, rejected as
ReportUsage would reject it), the ledger exact (each usage against the balance its customer's
predecessors left), the batch limit, and the events ReportUsage writes. The order within a customer,
hard limits and the catch-up between rounds are tested at unit speed over the fakes
(tests/unit/grant/test_use_cases.py)."""

from __future__ import annotations

import random
from decimal import Decimal

import grpc

from grant_service.v1 import grant_service_pb2 as pb
from tests.e2e.grant.conftest import all_entries, expect_error, subscription, utc
from tests.e2e.grant.test_events import all_events

START = utc(2026, 5, 20)
ACCEPTED, REPLAYED, REJECTED = pb.USAGE_OUTCOME_ACCEPTED, pb.USAGE_OUTCOME_REPLAYED, pb.USAGE_OUTCOME_REJECTED


def _setup(stub, customers=("acme",), amount="100"):
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
    for customer in customers:
        stub.ApplySubscription(subscription(f"sub_{customer}", customer, START, [(amount, None)]))


def _usage(request_id, quantity, customer="acme", feature="gpt-call", currency=""):
    return pb.ReportUsageRequest(
        request_id=request_id, customer_key=customer, feature_key=feature, quantity=quantity, currency_key=currency
    )


def _batch(stub, *usages) -> list[pb.ReportUsageResult]:
    results = list(stub.ReportUsageBatch(pb.ReportUsageBatchRequest(usages=usages), timeout=60).results)
    assert len(results) == len(usages)
    return results


def _available(stub, customer="acme") -> str:
    reply = stub.GetBalance(pb.GetBalanceRequest(customer_key=customer, currency_key="ai-credits"))
    return reply.balance.available


def _reason(result: pb.ReportUsageResult) -> tuple[str, str]:
    assert result.outcome == REJECTED and not result.HasField("usage")
    return result.rejection.code, result.rejection.reason


def test_a_mixed_batch_answers_each_usage_as_report_usage_would(grant):
    stub = grant.stub
    _setup(stub)
    first = stub.ReportUsage(_usage("before", "2")).usage  # 5 credits, before the batch
    results = _batch(
        stub,
        _usage("a1", "4"),  # 10 credits
        _usage("before", "2"),  # replayed: the first result
        _usage("before", "3"),  # the same request id with another payload
        _usage("big", "40"),  # 100 credits: 85 left
        _usage("ghost", "1", feature="no-such-feature"),
        _usage("nobody", "1", customer="no-such-customer"),
        _usage("bad", "-1"),
        _usage("nul\x00", "1"),
        _usage("amb", "1", feature="shared"),
        _usage("a1", "4"),  # a1 again in the same batch: replayed
        _usage("a2", "2"),  # 5 credits: still accepted after the refusals
    )
    outcomes = [r.outcome for r in results]
    assert outcomes == [ACCEPTED, REPLAYED] + [REJECTED] * 7 + [REPLAYED, ACCEPTED]
    a1, replayed, reused, big, ghost, nobody, bad, nul, amb, a1_again, a2 = results
    assert a1.usage.credits == "10" and a1.usage.balance_after == "85" and a1.usage.request_id == "a1"
    assert [d.amount for d in a1.usage.debits] == ["10"]
    assert replayed.usage == first
    assert _reason(reused) == ("ALREADY_EXISTS", "REQUEST_ID_REUSED")
    assert _reason(big) == ("RESOURCE_EXHAUSTED", "INSUFFICIENT_CREDITS")
    assert dict(big.rejection.metadata) == {"available": "85", "required": "100", "currency_key": "ai-credits"}
    assert _reason(ghost) == ("NOT_FOUND", "FEATURE_NOT_FOUND")
    assert _reason(nobody) == ("NOT_FOUND", "CUSTOMER_NOT_FOUND")
    assert _reason(bad)[0] == "INVALID_ARGUMENT"
    assert [v.field for v in bad.rejection.field_violations] == ["quantity"]
    assert _reason(nul) == ("INVALID_ARGUMENT", "INVALID_ARGUMENT")
    assert [v.field for v in nul.rejection.field_violations] == ["request_id"]
    assert _reason(amb) == ("INVALID_ARGUMENT", "AMBIGUOUS_CURRENCY")
    assert a1_again.usage == a1.usage
    assert a2.usage.balance_after == "80"
    # Exactly the accepted usages are in the ledger, and a rejected request id is a fresh attempt later.
    debits = all_entries(stub, "acme", type=pb.LEDGER_ENTRY_TYPE_DEBIT)
    assert sorted(Decimal(e.amount) for e in debits) == [Decimal(-10), Decimal(-5), Decimal(-5)]
    assert _available(stub) == "80"
    assert stub.ReportUsage(_usage("big", "1")).usage.credits == "2.5"
    # The whole batch again: the accepted ones replay, nothing more is debited.
    again = _batch(stub, _usage("a1", "4"), _usage("a2", "2"))
    assert [r.outcome for r in again] == [REPLAYED, REPLAYED]
    assert [r.usage for r in again] == [a1.usage, a2.usage]
    assert _available(stub) == "77.5"


def test_the_ledger_is_exact_after_a_batch(grant):
    stub = grant.stub
    customers = ("c1", "c2", "c3")
    _setup(stub, customers=customers, amount="500")
    pick = random.Random(22)
    usages = [
        _usage(f"r{i}", str(Decimal(pick.randint(1, 400)) / 10), customer=pick.choice(customers)) for i in range(300)
    ]
    results = _batch(stub, *usages)
    assert {r.outcome for r in results} == {ACCEPTED, REJECTED}  # some drained their customer
    for customer in customers:
        accepted = [r.usage for r in results if r.outcome == ACCEPTED and r.usage.customer_key == customer]
        credits = sum((Decimal(u.credits) for u in accepted), Decimal(0))
        debits = all_entries(stub, customer, type=pb.LEDGER_ENTRY_TYPE_DEBIT)
        assert -sum((Decimal(e.amount) for e in debits), Decimal(0)) == credits
        assert Decimal(_available(stub, customer)) == Decimal(500) - credits >= 0
        # In order: each accepted usage's balance_after is what its predecessors left.
        left = Decimal(500)
        for usage, result in zip(usages, results, strict=True):
            if usage.customer_key != customer:
                continue
            required = Decimal(usage.quantity) * Decimal("2.5")
            if result.outcome == ACCEPTED:
                left -= required
                assert Decimal(result.usage.balance_after) == left
            else:
                assert required > left and Decimal(result.rejection.metadata["available"]) == left


def test_the_batch_limit(grant):
    stub = grant.stub
    _setup(stub)
    for count in (0, 1001):
        usages = [_usage(f"r{i}", "1") for i in range(count)]
        _, violations = expect_error(
            lambda usages=usages: stub.ReportUsageBatch(pb.ReportUsageBatchRequest(usages=usages)),
            grpc.StatusCode.INVALID_ARGUMENT,
            "INVALID_ARGUMENT",
        )
        assert [v.field for v in violations] == ["usages"]
    assert all_entries(stub, "acme", type=pb.LEDGER_ENTRY_TYPE_DEBIT) == []
    results = _batch(stub, *[_usage(f"r{i}", "0.01") for i in range(1000)])  # 0.025 credits each
    assert {r.outcome for r in results} == {ACCEPTED}
    assert _available(stub) == "75"


def test_the_events_of_a_batch_are_those_report_usage_writes(grant):
    stub = grant.stub
    _setup(stub)
    levels = [pb.BalanceAlertLevel(percent="50")]
    stub.SetBalanceAlerts(pb.SetBalanceAlertsRequest(customer_key="acme", currency_key="ai-credits", levels=levels))
    before = len(all_events(stub))
    results = _batch(stub, _usage("u1", "24"), _usage("u2", "20"), _usage("u3", "1"))  # 60, then 50 of 40 left
    assert [r.outcome for r in results] == [ACCEPTED, REJECTED, ACCEPTED]
    # (The period's CREDITS_GRANTED is written when the batch catches the customer up.)
    events = [e for e in all_events(stub)[before:] if e.type != pb.CREDIT_EVENT_TYPE_CREDITS_GRANTED]
    types = [pb.CreditEventType.Name(e.type).removeprefix("CREDIT_EVENT_TYPE_") for e in events]
    assert types == ["BALANCE_LOW", "USAGE_REJECTED"]
    rejected = events[1].usage_rejected
    assert (rejected.request_id, rejected.quantity, rejected.requested_credits, rejected.available_credits) == (
        "u2",
        "20",
        "50",
        "40",
    )
    # Draining the grant writes GRANT_DEPLETED with the usage that did it.
    last = _batch(stub, _usage("u4", "15"))[0]  # 37.5 credits: all that is left
    assert last.usage.balance_after == "0"
    depleted = [e for e in all_events(stub) if e.type == pb.CREDIT_EVENT_TYPE_GRANT_DEPLETED]
    assert [e.grant_depleted.usage_id for e in depleted] == [last.usage.usage_id]
