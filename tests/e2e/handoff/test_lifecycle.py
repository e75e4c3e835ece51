"""Lifecycle changes made in the catalog, seen in the grant service's ledger,
with both services as real processes: amendments (next period, immediately)
and a cancel at period end on a test clock, and a credit rate change."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from catalog_service.v1 import catalog_service_pb2 as pb
from credit_common.grpc.timestamps import to_timestamp
from grant_service.v1 import grant_service_pb2 as grant_pb2
from tests.e2e.handoff.conftest import DEADLINE_S, applied_revision, call, setup_catalog, wait_for

pytestmark = pytest.mark.slow

GRANT, EXPIRE, DEBIT = (
    grant_pb2.LEDGER_ENTRY_TYPE_GRANT,
    grant_pb2.LEDGER_ENTRY_TYPE_EXPIRE,
    grant_pb2.LEDGER_ENTRY_TYPE_DEBIT,
)


def utc(*args) -> datetime:
    return datetime(*args, tzinfo=UTC)


def test_amend_next_period_then_immediately_then_cancel_at_period_end_on_a_test_clock(deployment):
    d = deployment()
    d.grant.start()
    d.catalog.start()
    catalog, grant = d.catalog_stub, d.grant_stub
    setup_catalog(catalog)
    clock = grant.CreateTestClock(
        grant_pb2.CreateTestClockRequest(name="lifecycle", frozen_time=to_timestamp(utc(2026, 1, 31, 12))),
        timeout=DEADLINE_S,
    ).test_clock.test_clock_id

    def advance(to: datetime) -> None:
        grant.AdvanceTestClock(
            grant_pb2.AdvanceTestClockRequest(test_clock_id=clock, frozen_time=to_timestamp(to)), timeout=DEADLINE_S
        )

    def delivered(revision: int) -> None:
        wait_for(lambda: applied_revision(grant, sub_id) == revision, f"revision {revision}", (d.catalog, d.grant))

    call(catalog.CreateCustomer, pb.CreateCustomerRequest(customer=pb.Customer(key="acme", test_clock_id=clock)))
    sub = call(
        catalog.ProvisionSubscription,
        pb.ProvisionSubscriptionRequest(
            request_id="provision",
            customer_key="acme",
            plan_key="enterprise",
            entitlement_values={"ai-credits-monthly": "50000"},
        ),
    ).subscription
    sub_id = sub.subscription_id
    assert sub.start_time == to_timestamp(utc(2026, 1, 31, 12))  # the clock's time
    delivered(1)

    advance(utc(2026, 2, 10))
    grant.ReportUsage(
        grant_pb2.ReportUsageRequest(request_id="u1", customer_key="acme", feature_key="gpt-calls", quantity="100"),
        timeout=DEADLINE_S,
    )  # 250 credits at 2.5 per call
    next_period = catalog.AmendSubscription(
        pb.AmendSubscriptionRequest(
            subscription_id=sub_id, entitlement_values={"ai-credits-monthly": "80000"}, request_id="amend-1"
        ),
        timeout=DEADLINE_S,
    ).subscription
    (e,) = next_period.credit_entitlements
    assert (next_period.revision, e.amount) == (2, "50000")  # in force now: still 50,000
    assert [(a.amount, a.effective_time) for a in e.amount_history] == [
        ("50000", to_timestamp(utc(2026, 1, 31, 12))),
        ("80000", to_timestamp(utc(2026, 2, 28, 12))),  # Jan 31 anchor: the next period starts Feb 28
    ]
    delivered(2)

    advance(utc(2026, 3, 5))
    immediately = catalog.AmendSubscription(
        pb.AmendSubscriptionRequest(
            subscription_id=sub_id,
            entitlement_values={"ai-credits-monthly": "20000"},
            timing=pb.AMENDMENT_TIMING_IMMEDIATELY,
            request_id="amend-2",
        ),
        timeout=DEADLINE_S,
    ).subscription
    assert (immediately.revision, immediately.credit_entitlements[0].amount) == (3, "20000")
    delivered(3)

    advance(utc(2026, 3, 10))
    cancelled = catalog.CancelSubscription(
        pb.CancelSubscriptionRequest(subscription_id=sub_id, mode=pb.CANCEL_MODE_AT_PERIOD_END, request_id="cancel"),
        timeout=DEADLINE_S,
    ).subscription
    assert cancelled.revision == 4 and cancelled.cancel_mode == pb.CANCEL_MODE_AT_PERIOD_END
    assert cancelled.end_time == to_timestamp(utc(2026, 3, 31, 12))
    assert cancelled.cancel_time == to_timestamp(utc(2026, 3, 10))
    assert cancelled.status == pb.SUBSCRIPTION_STATUS_ACTIVE  # until the period end
    delivered(4)

    advance(utc(2026, 5, 15))
    entries = grant.ListLedgerEntries(
        grant_pb2.ListLedgerEntriesRequest(customer_key="acme", page_size=100), timeout=DEADLINE_S
    ).entries

    # Entry by entry, exactly in the order the ledger lists them: at an instant where one grant ends
    # and another begins (a period boundary, an immediate amendment) the EXPIRE comes first.
    assert [(x.type, x.amount, x.effective_time.ToDatetime(tzinfo=UTC)) for x in entries] == (
        [
            (GRANT, "50000", utc(2026, 1, 31, 12)),
            (DEBIT, "-250", utc(2026, 2, 10)),
            (EXPIRE, "-49750", utc(2026, 2, 28, 12)),  # no rollover: the remainder expires at the period end
            (GRANT, "80000", utc(2026, 2, 28, 12)),  # the amended amount from the next period
            (EXPIRE, "-80000", utc(2026, 3, 5)),  # immediately: the remainder expires at the amendment
            (GRANT, "20000", utc(2026, 3, 5)),  # and the new amount runs to the same period end
            (EXPIRE, "-20000", utc(2026, 3, 31, 12)),  # cancelled at period end: no grant after it
        ]
    )
    grants = grant.ListGrants(
        grant_pb2.ListGrantsRequest(customer_key="acme", subscription_id=sub_id), timeout=DEADLINE_S
    ).grants
    assert [(g.period_index, g.amount, g.expire_time.ToDatetime(tzinfo=UTC)) for g in grants] == [
        (0, "50000", utc(2026, 2, 28, 12)),
        (1, "80000", utc(2026, 3, 5)),
        (1, "20000", utc(2026, 3, 31, 12)),
    ]
    got = catalog.GetSubscription(pb.GetSubscriptionRequest(subscription_id=sub_id), timeout=DEADLINE_S).subscription
    assert got.status == pb.SUBSCRIPTION_STATUS_ENDED
    assert (got.handoff.status, got.handoff.delivered_revision) == (pb.HANDOFF_STATUS_DELIVERED, 4)
    assert [(a.amount, a.effective_time.ToDatetime(tzinfo=UTC)) for a in got.credit_entitlements[0].amount_history] == [
        ("50000", utc(2026, 1, 31, 12)),
        ("80000", utc(2026, 2, 28, 12)),
        ("20000", utc(2026, 3, 5)),
    ]


def test_a_rate_change_in_the_catalog_prices_later_usage_in_the_grant_service(deployment):
    d = deployment()
    d.grant.start()
    d.catalog.start()
    catalog, grant = d.catalog_stub, d.grant_stub
    setup_catalog(catalog, rate="2.5")
    call(catalog.CreateCustomer, pb.CreateCustomerRequest(customer=pb.Customer(key="acme")))  # real time
    sub = call(
        catalog.ProvisionSubscription,
        pb.ProvisionSubscriptionRequest(
            request_id="provision",
            customer_key="acme",
            plan_key="enterprise",
            entitlement_values={"ai-credits-monthly": "50000"},
        ),
    ).subscription
    wait_for(lambda: applied_revision(grant, sub.subscription_id) == 1, "the subscription", (d.catalog, d.grant))

    def usage(request_id: str) -> grant_pb2.Usage:
        return grant.ReportUsage(
            grant_pb2.ReportUsageRequest(
                request_id=request_id, customer_key="acme", feature_key="gpt-calls", quantity="10"
            ),
            timeout=DEADLINE_S,
        ).usage

    before = usage("before")
    assert (before.credits_per_unit, before.credits) == ("2.5", "25")

    updated = catalog.UpdateCreditCurrency(
        pb.UpdateCreditCurrencyRequest(
            credit_currency=pb.CreditCurrency(
                key="ai-credits", rates=[pb.CreditRate(feature_key="gpt-calls", credits_per_unit="3.25")]
            ),
            update_mask={"paths": ["rates"]},
            request_id="rate-change",
        ),
        timeout=DEADLINE_S,
    ).credit_currency
    assert updated.revision == 2

    def new_rate_in_force():
        check = grant.CheckUsage(
            grant_pb2.CheckUsageRequest(customer_key="acme", feature_key="gpt-calls", quantity="10"),
            timeout=DEADLINE_S,
        )
        return check.credits_per_unit == "3.25"

    wait_for(new_rate_in_force, "the new rate in the grant service", (d.catalog, d.grant))
    after = usage("after")
    assert (after.credits_per_unit, after.credits, after.balance_after) == ("3.25", "32.5", "49942.5")
    replayed = usage("before")  # a replayed report keeps its first price
    assert (replayed.usage_id, replayed.credits) == (before.usage_id, "25")


def test_immediate_amendment_then_cancel_exactly_at_an_issued_period_start(deployment):
    """Issue 13, items 1 and 2, through the catalog: IMMEDIATELY is dated at the clock's now, here
    exactly the start of a period already issued. The amendment replaces that period's grant (one
    grant of the new amount, no +old/-old pair), then an immediate cancel leaves it nothing."""
    d = deployment()
    d.grant.start()
    d.catalog.start()
    catalog, grant = d.catalog_stub, d.grant_stub
    setup_catalog(catalog)
    anchor, period_1 = utc(2024, 1, 31, 12), utc(2024, 2, 29, 12)
    clock = grant.CreateTestClock(
        grant_pb2.CreateTestClockRequest(name="boundary", frozen_time=to_timestamp(anchor)), timeout=DEADLINE_S
    ).test_clock.test_clock_id
    call(catalog.CreateCustomer, pb.CreateCustomerRequest(customer=pb.Customer(key="edge", test_clock_id=clock)))
    sub_id = call(
        catalog.ProvisionSubscription,
        pb.ProvisionSubscriptionRequest(
            request_id="provision",
            customer_key="edge",
            plan_key="enterprise",
            entitlement_values={"ai-credits-monthly": "1000"},
        ),
    ).subscription.subscription_id

    def delivered(revision: int) -> None:
        wait_for(lambda: applied_revision(grant, sub_id) == revision, f"revision {revision}", (d.catalog, d.grant))

    def ledger() -> list[tuple]:
        entries = grant.ListLedgerEntries(
            grant_pb2.ListLedgerEntriesRequest(customer_key="edge", page_size=100), timeout=DEADLINE_S
        ).entries
        return [(x.type, x.amount, x.effective_time.ToDatetime(tzinfo=UTC)) for x in entries]

    delivered(1)
    grant.AdvanceTestClock(
        grant_pb2.AdvanceTestClockRequest(test_clock_id=clock, frozen_time=to_timestamp(period_1)), timeout=DEADLINE_S
    )
    assert ledger()[-1] == (GRANT, "1000", period_1)  # period 1 is issued
    catalog.AmendSubscription(
        pb.AmendSubscriptionRequest(
            subscription_id=sub_id,
            entitlement_values={"ai-credits-monthly": "2000"},
            timing=pb.AMENDMENT_TIMING_IMMEDIATELY,
            request_id="amend",
        ),
        timeout=DEADLINE_S,
    )
    delivered(2)
    assert ledger() == [(GRANT, "1000", anchor), (EXPIRE, "-1000", period_1), (GRANT, "2000", period_1)]
    catalog.CancelSubscription(
        pb.CancelSubscriptionRequest(subscription_id=sub_id, mode=pb.CANCEL_MODE_IMMEDIATELY, request_id="cancel"),
        timeout=DEADLINE_S,
    )
    delivered(3)
    assert ledger() == [(GRANT, "1000", anchor), (EXPIRE, "-1000", period_1)]
    balance = grant.GetBalance(grant_pb2.GetBalanceRequest(customer_key="edge", currency_key="ai-credits"))
    assert balance.balance.available == "0"


def test_a_cancel_applied_late_is_in_the_handoff_state_and_the_event_log(deployment):
    """Issue 20: a cancel the grant service receives after the instant the catalog dated it (here
    after its outage) ends the subscription at the delivery time there; the catalog's handoff state
    shows it (requested and applied instants), and so does the grant service's SUBSCRIPTION_CHANGED."""
    d = deployment()
    d.grant.start()
    d.catalog.start()
    catalog, grant = d.catalog_stub, d.grant_stub
    setup_catalog(catalog)
    call(catalog.CreateCustomer, pb.CreateCustomerRequest(customer=pb.Customer(key="late")))
    sub_id = call(
        catalog.ProvisionSubscription,
        pb.ProvisionSubscriptionRequest(
            request_id="provision",
            customer_key="late",
            plan_key="enterprise",
            entitlement_values={"ai-credits-monthly": "1000"},
        ),
    ).subscription.subscription_id
    wait_for(lambda: applied_revision(grant, sub_id) == 1, "revision 1", (d.catalog, d.grant))
    d.grant.stop()
    cancelled = call(
        catalog.CancelSubscription,
        pb.CancelSubscriptionRequest(subscription_id=sub_id, mode=pb.CANCEL_MODE_IMMEDIATELY, request_id="cancel"),
    ).subscription
    d.grant.start()
    wait_for(lambda: applied_revision(grant, sub_id) == 2, "revision 2", (d.catalog, d.grant))

    def late() -> list:
        handoff = catalog.GetSubscription(pb.GetSubscriptionRequest(subscription_id=sub_id), timeout=DEADLINE_S)
        return list(handoff.subscription.handoff.late_changes)

    changes = wait_for(late, "the late change in the handoff state", (d.catalog, d.grant))
    assert [(c.revision, c.entitlement_key, c.requested_time) for c in changes] == [(2, "", cancelled.end_time)]
    assert changes[0].applied_time.ToDatetime() > changes[0].requested_time.ToDatetime()
    events = grant.ListEvents(
        grant_pb2.ListEventsRequest(customer_key="late", types=[grant_pb2.CREDIT_EVENT_TYPE_SUBSCRIPTION_CHANGED]),
        timeout=DEADLINE_S,
    ).events
    clamped = events[-1].subscription_changed.clamped_changes
    assert [(c.requested_time, c.applied_time) for c in clamped] == [(cancelled.end_time, changes[0].applied_time)]
