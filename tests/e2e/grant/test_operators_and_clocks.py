"""VoidGrant, CreateGrant, test clocks, pagination: behaviour and every error at the gRPC level."""

from __future__ import annotations

from datetime import timedelta

import grpc

from grant_service.v1 import grant_service_pb2 as pb
from tests.e2e.grant.conftest import REAL_NOW, all_entries, expect_error, subscription, ts, utc

START = utc(2026, 5, 20)


def test_void_grant(grant):
    stub = grant.stub
    stub.ApplySubscription(subscription("sub_v", "acme", START, [("100", None)]))
    created = stub.CreateGrant(
        pb.CreateGrantRequest(
            request_id="c1", customer_key="acme", currency_key="ai-credits", amount="30", reason="gift"
        )
    ).grant
    assert (
        created.source == pb.GRANT_SOURCE_ONE_OFF
        and created.priority == 100
        and created.status == pb.GRANT_STATUS_ACTIVE
    )
    request = pb.VoidGrantRequest(grant_id=created.grant_id, reason="mistake", request_id="v1")
    voided = stub.VoidGrant(request).grant
    assert voided.status == pb.GRANT_STATUS_VOIDED and voided.remaining == "0" and voided.reason == "mistake"
    assert stub.VoidGrant(request).grant.grant_id == created.grant_id  # same request id: first result
    expect_error(
        lambda: stub.VoidGrant(pb.VoidGrantRequest(grant_id=created.grant_id, request_id="v2")),
        grpc.StatusCode.FAILED_PRECONDITION,
        "GRANT_ALREADY_VOIDED",
    )
    expect_error(
        lambda: stub.VoidGrant(pb.VoidGrantRequest(grant_id=created.grant_id, reason="other", request_id="v1")),
        grpc.StatusCode.ALREADY_EXISTS,
        "REQUEST_ID_REUSED",
    )
    expect_error(
        lambda: stub.VoidGrant(pb.VoidGrantRequest(grant_id="grt_none")), grpc.StatusCode.NOT_FOUND, "GRANT_NOT_FOUND"
    )
    voids = all_entries(stub, "acme", type=pb.LEDGER_ENTRY_TYPE_VOID)
    assert [(v.amount, v.grant_id) for v in voids] == [("-30", created.grant_id)]
    assert (
        stub.GetBalance(pb.GetBalanceRequest(customer_key="acme", currency_key="ai-credits")).balance.available == "100"
    )
    old = [
        g
        for g in stub.ListGrants(pb.ListGrantsRequest(customer_key="acme")).grants
        if g.status == pb.GRANT_STATUS_ACTIVE
    ]
    grant.clock.set(utc(2026, 6, 25))
    expect_error(
        lambda: stub.VoidGrant(pb.VoidGrantRequest(grant_id=old[0].grant_id)),
        grpc.StatusCode.FAILED_PRECONDITION,
        "GRANT_EXPIRED",
    )


def test_create_grant(grant):
    stub = grant.stub
    stub.ApplySubscription(subscription("sub_g", "acme", START, [("100", None)]))
    request = pb.CreateGrantRequest(
        request_id="c1",
        customer_key="acme",
        currency_key="ai-credits",
        amount="25.125",
        effective_time=ts(REAL_NOW + timedelta(days=1)),
        expire_time=ts(REAL_NOW + timedelta(days=2)),
        priority=7,
    )
    pending = stub.CreateGrant(request).grant
    assert pending.status == pb.GRANT_STATUS_PENDING and pending.priority == 7
    assert stub.CreateGrant(request).grant.grant_id == pending.grant_id
    assert len(stub.ListGrants(pb.ListGrantsRequest(customer_key="acme")).grants) == 2
    request.amount = "1"
    expect_error(lambda: stub.CreateGrant(request), grpc.StatusCode.ALREADY_EXISTS, "REQUEST_ID_REUSED")
    grant.clock.set(REAL_NOW + timedelta(days=1, hours=1))
    assert stub.GetBalance(pb.GetBalanceRequest(customer_key="acme", currency_key="ai-credits")).balance.available == (
        "125.125"
    )
    grant.clock.set(REAL_NOW + timedelta(days=3))
    entries = all_entries(stub, "acme", type=pb.LEDGER_ENTRY_TYPE_EXPIRE)
    assert [e.amount for e in entries if e.grant_id == pending.grant_id] == ["-25.125"]
    expect_error(
        lambda: stub.CreateGrant(pb.CreateGrantRequest(customer_key="nobody", currency_key="ai-credits", amount="1")),
        grpc.StatusCode.NOT_FOUND,
        "CUSTOMER_NOT_FOUND",
    )
    expect_error(
        lambda: stub.CreateGrant(pb.CreateGrantRequest(customer_key="acme", currency_key="nope", amount="1")),
        grpc.StatusCode.NOT_FOUND,
        "CURRENCY_NOT_FOUND",
    )
    _, violations = expect_error(
        lambda: stub.CreateGrant(pb.CreateGrantRequest(customer_key="acme", currency_key="ai-credits", amount="0")),
        grpc.StatusCode.INVALID_ARGUMENT,
        "INVALID_ARGUMENT",
    )
    assert [v.field for v in violations] == ["amount"]
    _, violations = expect_error(
        lambda: stub.CreateGrant(
            pb.CreateGrantRequest(
                customer_key="acme", currency_key="ai-credits", amount="1", expire_time=ts(REAL_NOW - timedelta(days=1))
            )
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
        "INVALID_ARGUMENT",
    )
    assert [v.field for v in violations] == ["expire_time"]


def test_balance_and_list_errors(grant):
    stub = grant.stub
    stub.ApplySubscription(subscription("sub_b", "acme", START, [("100", None)]))
    expect_error(
        lambda: stub.GetBalance(pb.GetBalanceRequest(customer_key="nobody", currency_key="ai-credits")),
        grpc.StatusCode.NOT_FOUND,
        "CUSTOMER_NOT_FOUND",
    )
    expect_error(
        lambda: stub.GetBalance(pb.GetBalanceRequest(customer_key="acme", currency_key="nope")),
        grpc.StatusCode.NOT_FOUND,
        "CURRENCY_NOT_FOUND",
    )
    expect_error(
        lambda: stub.GetBalance(
            pb.GetBalanceRequest(customer_key="acme", currency_key="ai-credits", as_of_time=ts(REAL_NOW + timedelta(1)))
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
        "AS_OF_TIME_IN_FUTURE",
    )
    expect_error(
        lambda: stub.ListLedgerEntries(pb.ListLedgerEntriesRequest(customer_key="acme", page_token="garbage")),
        grpc.StatusCode.INVALID_ARGUMENT,
        "INVALID_PAGE_TOKEN",
    )
    expect_error(
        lambda: stub.ListGrants(pb.ListGrantsRequest(customer_key="")),
        grpc.StatusCode.INVALID_ARGUMENT,
        "INVALID_ARGUMENT",
    )


def test_ledger_pagination_and_filters(grant):
    stub = grant.stub
    stub.ApplySubscription(subscription("sub_p", "acme", utc(2025, 1, 1), [("10", None)]))
    everything = all_entries(stub, "acme")
    assert len(everything) == 18 * 2 - 1  # 18 GRANTs (Jan 2025 .. Jun 2026), 17 EXPIREs
    pages, token = [], ""
    while True:
        reply = stub.ListLedgerEntries(pb.ListLedgerEntriesRequest(customer_key="acme", page_size=4, page_token=token))
        pages.append(reply.entries)
        token = reply.next_page_token
        if not token:
            break
    assert [e.entry_id for page in pages for e in page] == [e.entry_id for e in everything]
    assert len(pages) == 9
    window = all_entries(stub, "acme", start_time=ts(utc(2025, 3, 1)), end_time=ts(utc(2025, 4, 1)))
    assert [(e.type, e.amount) for e in window] == [  # at 2025-03-01: February's remainder leaves, March's arrives
        (pb.LEDGER_ENTRY_TYPE_EXPIRE, "-10"),
        (pb.LEDGER_ENTRY_TYPE_GRANT, "10"),
    ]
    grants, token = [], ""
    while True:
        reply = stub.ListGrants(pb.ListGrantsRequest(customer_key="acme", page_size=5, page_token=token))
        grants.extend(reply.grants)
        token = reply.next_page_token
        if not token:
            break
    assert [g.period_index for g in grants] == list(range(18))


def test_test_clock_lifecycle(grant):
    stub = grant.stub
    first = stub.CreateTestClock(pb.CreateTestClockRequest(name="a", frozen_time=ts(START), request_id="k1")).test_clock
    assert (
        stub.CreateTestClock(pb.CreateTestClockRequest(name="a", frozen_time=ts(START), request_id="k1")).test_clock
        == first
    )
    second = stub.CreateTestClock(pb.CreateTestClockRequest(name="b", frozen_time=ts(START))).test_clock
    listed = stub.ListTestClocks(pb.ListTestClocksRequest(page_size=1))
    assert [c.test_clock_id for c in listed.test_clocks] == [second.test_clock_id] and listed.next_page_token
    rest = stub.ListTestClocks(pb.ListTestClocksRequest(page_size=1, page_token=listed.next_page_token))
    assert [c.test_clock_id for c in rest.test_clocks] == [first.test_clock_id]
    assert stub.GetTestClock(pb.GetTestClockRequest(test_clock_id=first.test_clock_id)).test_clock == first
    stub.ApplySubscription(subscription("sub_tc", "tc", START, [("5", None)], clock_id=first.test_clock_id))
    expect_error(
        lambda: stub.AdvanceTestClock(
            pb.AdvanceTestClockRequest(test_clock_id=first.test_clock_id, frozen_time=ts(START - timedelta(seconds=1)))
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
        "TEST_CLOCK_BACKWARDS",
    )
    expect_error(
        lambda: stub.AdvanceTestClock(pb.AdvanceTestClockRequest(test_clock_id=first.test_clock_id)),
        grpc.StatusCode.INVALID_ARGUMENT,
        "INVALID_ARGUMENT",
    )
    # Real time does not move a test clock's subscription; only advancing the clock does.
    grant.clock.set(REAL_NOW + timedelta(days=400))
    assert len(all_entries(stub, "tc", type=pb.LEDGER_ENTRY_TYPE_GRANT)) == 1
    stub.AdvanceTestClock(
        pb.AdvanceTestClockRequest(test_clock_id=first.test_clock_id, frozen_time=ts(utc(2026, 8, 21)))
    )
    assert len(all_entries(stub, "tc", type=pb.LEDGER_ENTRY_TYPE_GRANT)) == 4
    stub.DeleteTestClock(pb.DeleteTestClockRequest(test_clock_id=first.test_clock_id))
    expect_error(
        lambda: stub.GetTestClock(pb.GetTestClockRequest(test_clock_id=first.test_clock_id)),
        grpc.StatusCode.NOT_FOUND,
        "TEST_CLOCK_NOT_FOUND",
    )
    expect_error(
        lambda: stub.GetBalance(pb.GetBalanceRequest(customer_key="tc", currency_key="ai-credits")),
        grpc.StatusCode.NOT_FOUND,
        "CUSTOMER_NOT_FOUND",
    )
    expect_error(
        lambda: stub.GetSubscription(pb.GetSubscriptionRequest(subscription_id="sub_tc")),
        grpc.StatusCode.NOT_FOUND,
        "SUBSCRIPTION_NOT_FOUND",
    )


def test_list_filters_by_currency_and_subscription(grant):
    stub = grant.stub
    stub.ApplySubscription(subscription("sub_a", "acme", START, [("1", None)]))
    stub.ApplySubscription(subscription("sub_b", "acme", START, [("2", None)], currency="gpu-credits"))
    by_sub = stub.ListGrants(pb.ListGrantsRequest(customer_key="acme", subscription_id="sub_b")).grants
    assert [(g.subscription_id, g.currency_key, g.amount) for g in by_sub] == [("sub_b", "gpu-credits", "2")]
    by_currency = all_entries(stub, "acme", currency_key="ai-credits")
    assert {e.currency_key for e in by_currency} == {"ai-credits"} and len(by_currency) == 1
    assert (
        stub.GetBalance(pb.GetBalanceRequest(customer_key="acme", currency_key="gpu-credits")).balance.available == "2"
    )
