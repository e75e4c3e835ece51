"""The issue's done-when scenarios at the gRPC level, on a real server, on both backends."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

from credit_common.periods import Cadence, period_start
from grant_service.v1 import grant_service_pb2 as pb
from tests.e2e.grant.conftest import all_entries, subscription, ts, utc

CURRENCY = pb.ApplyCreditCurrencyRequest(
    currency_key="ai-credits", revision=1, rates=[pb.CreditRate(feature_key="gpt-call", credits_per_unit="2.5")]
)


def _clock(stub, at):
    return stub.CreateTestClock(pb.CreateTestClockRequest(name="contract", frozen_time=ts(at))).test_clock.test_clock_id


def _advance(stub, clock_id, at):
    stub.AdvanceTestClock(pb.AdvanceTestClockRequest(test_clock_id=clock_id, frozen_time=ts(at)), timeout=60)


def test_fourteen_months_of_month_end_anchored_grants(grant):
    stub = grant.stub
    anchor = utc(2025, 1, 31, 10)
    starts = [period_start(anchor, Cadence.MONTHLY, k) for k in range(16)]
    stub.ApplyCreditCurrency(CURRENCY)
    clock_id = _clock(stub, anchor)
    stub.ApplySubscription(subscription("sub_14", "acme", anchor, [("50000", None)], clock_id=clock_id))
    debited = []
    for k in range(14):
        _advance(stub, clock_id, starts[k] + timedelta(days=1))
        quantity = Decimal(100 * (k + 1)) + Decimal("0.4")
        usage = stub.ReportUsage(
            pb.ReportUsageRequest(
                request_id=f"use-{k}", customer_key="acme", feature_key="gpt-call", quantity=str(quantity)
            )
        ).usage
        assert Decimal(usage.credits) == quantity * Decimal("2.5")
        assert Decimal(usage.balance_after) == 50000 - quantity * Decimal("2.5")
        debited.append(quantity * Decimal("2.5"))
        if k == 13:  # cancel at period end: the 14th grant runs to its expiry, no 15th is issued
            stub.ApplySubscription(
                subscription("sub_14", "acme", anchor, [("50000", None)], clock_id=clock_id, revision=2, end=starts[14])
            )
    _advance(stub, clock_id, starts[15] + timedelta(days=3))

    grants = all_entries(stub, "acme", type=pb.LEDGER_ENTRY_TYPE_GRANT)
    assert [(e.effective_time.ToDatetime().replace(tzinfo=anchor.tzinfo), e.amount) for e in grants] == [
        (starts[k], "50000") for k in range(14)
    ]
    assert [s.day for s in starts[:5]] == [31, 28, 31, 30, 31] and all(s.hour == 10 for s in starts)
    expires = all_entries(stub, "acme", type=pb.LEDGER_ENTRY_TYPE_EXPIRE)
    by_grant = {e.grant_id: e for e in expires}
    assert len(expires) == 14 and set(by_grant) == {g.grant_id for g in grants}
    for k, entry in enumerate(grants):
        expire = by_grant[entry.grant_id]
        assert expire.effective_time.ToDatetime().replace(tzinfo=anchor.tzinfo) == starts[k + 1]
        assert Decimal(expire.amount) == -(50000 - debited[k])
    ledger = all_entries(stub, "acme")
    for k in range(1, 15):  # at each boundary the old remainder leaves before the new grant arrives
        at_boundary = [
            e.type for e in ledger if e.effective_time.ToDatetime().replace(tzinfo=anchor.tzinfo) == starts[k]
        ]
        assert at_boundary == (
            [pb.LEDGER_ENTRY_TYPE_EXPIRE, pb.LEDGER_ENTRY_TYPE_GRANT] if k < 14 else [pb.LEDGER_ENTRY_TYPE_EXPIRE]
        )
    for k in range(14):
        before = stub.GetBalance(
            pb.GetBalanceRequest(
                customer_key="acme", currency_key="ai-credits", as_of_time=ts(starts[k] + timedelta(hours=1))
            )
        )
        assert before.balance.available == "50000"
        inside = stub.GetBalance(
            pb.GetBalanceRequest(
                customer_key="acme",
                currency_key="ai-credits",
                as_of_time=ts(starts[k + 1] - timedelta(microseconds=1)),
                view=pb.BALANCE_VIEW_WITH_GRANTS,
            )
        )
        assert Decimal(inside.balance.available) == 50000 - debited[k]
        assert [g.period_index for g in inside.balance.grants] == [k]
    now = stub.GetBalance(pb.GetBalanceRequest(customer_key="acme", currency_key="ai-credits"))
    assert now.balance.available == "0"
    debits = all_entries(stub, "acme", type=pb.LEDGER_ENTRY_TYPE_DEBIT)
    assert sorted(-Decimal(e.amount) for e in debits) == sorted(debited)


def test_yearly_anchor_on_february_29(grant):
    stub = grant.stub
    anchor = utc(2024, 2, 29, 9, 15)
    clock_id = _clock(stub, anchor)
    stub.ApplySubscription(
        subscription("sub_y", "leap", anchor, [("1200", None)], cadence=pb.CADENCE_YEARLY, clock_id=clock_id)
    )
    _advance(stub, clock_id, utc(2028, 3, 1))
    grants = all_entries(stub, "leap", type=pb.LEDGER_ENTRY_TYPE_GRANT)
    assert [e.effective_time.ToDatetime().replace(tzinfo=anchor.tzinfo) for e in grants] == [
        anchor,
        utc(2025, 2, 28, 9, 15),
        utc(2026, 2, 28, 9, 15),
        utc(2027, 2, 28, 9, 15),
        utc(2028, 2, 29, 9, 15),
    ]
    assert len(all_entries(stub, "leap", type=pb.LEDGER_ENTRY_TYPE_EXPIRE)) == 4
