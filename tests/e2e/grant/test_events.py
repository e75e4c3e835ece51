"""The credit event log over gRPC: one test-clock story that produces every kind of event, in
order, with its amounts, stamped with the clock's time; ListEvents and WatchEvents agree; bad
filters and cursors are INVALID_ARGUMENT."""

from __future__ import annotations

import threading

import grpc
from google.protobuf import json_format

from grant_service.v1 import grant_service_pb2 as pb
from tests.e2e.grant.conftest import expect_error, subscription, ts, utc

T0 = utc(2026, 1, 31, 10)
E = pb.CreditEventType


def all_events(stub, **filters) -> list[pb.CreditEvent]:
    events, token = [], ""
    while True:
        reply = stub.ListEvents(pb.ListEventsRequest(page_size=3, page_token=token, **filters), timeout=30)
        events.extend(reply.events)
        token = reply.next_page_token
        if not token:
            return events


def watch(stub, count: int, cursor: str = "", **filters) -> list[pb.CreditEvent]:
    """The first `count` events a WatchEvents stream sends (heartbeats skipped)."""
    stream = stub.WatchEvents(pb.WatchEventsRequest(cursor=cursor, **filters), timeout=60)
    got = []
    for message in stream:
        if message.HasField("event"):
            got.append(message.event)
            if len(got) == count:
                stream.cancel()
                break
    return got


def summary(event: pb.CreditEvent) -> tuple:
    payload = json_format.MessageToDict(getattr(event, event.WhichOneof("payload")), preserving_proto_field_name=True)
    return (
        E.Name(event.type).removeprefix("CREDIT_EVENT_TYPE_"),
        event.occurred_time.ToDatetime().isoformat(),
        payload,
    )


def _story(stub) -> str:
    clock = stub.CreateTestClock(pb.CreateTestClockRequest(name="story", frozen_time=ts(T0))).test_clock
    rates = [pb.CreditRate(feature_key="gpt-call", credits_per_unit="2.5")]
    stub.ApplyCreditCurrency(pb.ApplyCreditCurrencyRequest(currency_key="ai-credits", revision=1, rates=rates))
    levels = [pb.BalanceAlertLevel(percent="50"), pb.BalanceAlertLevel(amount="100")]
    stub.SetBalanceAlerts(pb.SetBalanceAlertsRequest(customer_key="acme", currency_key="ai-credits", levels=levels))
    stub.ApplySubscription(subscription("sub_1", "acme", T0, [("1000", None)], clock_id=clock.test_clock_id))
    usage = pb.ReportUsageRequest(customer_key="acme", feature_key="gpt-call")
    stub.ReportUsage(pb.ReportUsageRequest(**_fields(usage), request_id="u1", quantity="160"))  # 400 credits
    stub.ReportUsage(pb.ReportUsageRequest(**_fields(usage), request_id="u2", quantity="240"))  # 600: all used
    expect_error(
        lambda: stub.ReportUsage(pb.ReportUsageRequest(**_fields(usage), request_id="u3", quantity="1")),
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        "INSUFFICIENT_CREDITS",
    )
    gift = stub.CreateGrant(
        pb.CreateGrantRequest(
            request_id="g1", customer_key="acme", currency_key="ai-credits", amount="50", reason="goodwill"
        )
    ).grant
    stub.VoidGrant(pb.VoidGrantRequest(grant_id=gift.grant_id, reason="mistake", request_id="v1"))
    stub.AdvanceTestClock(
        pb.AdvanceTestClockRequest(test_clock_id=clock.test_clock_id, frozen_time=ts(utc(2026, 3, 5)))
    )
    # Cancelled as of Mar 1, delivered on Mar 5: applied late, at Mar 5.
    late = subscription(
        "sub_1", "acme", T0, [("1000", None)], revision=2, end=utc(2026, 3, 1), clock_id=clock.test_clock_id
    )
    stub.ApplySubscription(late)
    return clock.test_clock_id


def alert(level: dict, threshold: str, balance: str, previous: str, granted: str) -> dict:
    """A balance_alert payload; `previous` only for a debit's crossing ("" otherwise)."""
    payload = {"level": level, "threshold": threshold, "balance": balance, "granted_amount": granted}
    return {**payload, "previous_balance": previous} if previous else payload


def _fields(message) -> dict:
    return {f.name: v for f, v in message.ListFields()}


def test_a_test_clock_story_produces_every_event_in_order(grant):
    stub = grant.stub
    clock_id = _story(stub)
    events = all_events(stub)
    got = [summary(e) for e in events]
    grants = [g for g in stub.ListGrants(pb.ListGrantsRequest(customer_key="acme")).grants]
    p0, gift, p1 = (
        next(g.grant_id for g in grants if g.effective_time == ts(t) and g.source == s)
        for t, s in (
            (T0, pb.GRANT_SOURCE_RECURRING),
            (T0, pb.GRANT_SOURCE_ONE_OFF),
            (utc(2026, 2, 28, 10), pb.GRANT_SOURCE_RECURRING),
        )
    )
    t0, feb28, mar5 = "2026-01-31T10:00:00", "2026-02-28T10:00:00", "2026-03-05T00:00:00"
    usage_id = events[2].grant_depleted.usage_id
    assert got == [
        ("SUBSCRIPTION_CHANGED", t0, {"subscription_id": "sub_1", "revision": "1"}),
        (
            "CREDITS_GRANTED",
            t0,
            {
                "grant_id": p0,
                "source": "GRANT_SOURCE_RECURRING",
                "subscription_id": "sub_1",
                "entitlement_key": "credits",
                "amount": "1000",
                "effective_time": "2026-01-31T10:00:00Z",
                "expire_time": "2026-02-28T10:00:00Z",
            },
        ),
        ("GRANT_DEPLETED", t0, {"grant_id": p0, "subscription_id": "sub_1", "amount": "1000", "usage_id": usage_id}),
        ("BALANCE_LOW", t0, alert({"percent": "50"}, "500", "0", "600", "1000")),
        ("BALANCE_LOW", t0, alert({"amount": "100"}, "100", "0", "600", "1000")),
        ("BALANCE_DEPLETED", t0, alert({"amount": "0"}, "0", "0", "600", "1000")),
        (
            "USAGE_REJECTED",
            t0,
            {
                "request_id": "u3",
                "feature_key": "gpt-call",
                "quantity": "1",
                "requested_credits": "2.5",
                "available_credits": "0",
            },
        ),
        (
            "CREDITS_GRANTED",
            t0,
            {
                "grant_id": gift,
                "source": "GRANT_SOURCE_ONE_OFF",
                "amount": "50",
                "effective_time": "2026-01-31T10:00:00Z",
            },
        ),
        ("BALANCE_RECOVERED", t0, alert({"amount": "0"}, "0", "50", "", "1050")),
        ("GRANT_VOIDED", t0, {"grant_id": gift, "voided_amount": "50", "reason": "mistake"}),
        ("BALANCE_DEPLETED", t0, alert({"amount": "0"}, "0", "0", "", "1000")),
        (
            "CREDITS_EXPIRED",
            feb28,
            {
                "grant_id": p0,
                "subscription_id": "sub_1",
                "entitlement_key": "credits",
                "amount": "1000",
                "expired_amount": "0",
                "expire_time": "2026-02-28T10:00:00Z",
            },
        ),
        (
            "CREDITS_GRANTED",
            feb28,
            {
                "grant_id": p1,
                "source": "GRANT_SOURCE_RECURRING",
                "subscription_id": "sub_1",
                "entitlement_key": "credits",
                "period_index": "1",
                "amount": "1000",
                "effective_time": "2026-02-28T10:00:00Z",
                "expire_time": "2026-03-31T10:00:00Z",
            },
        ),
        # One evaluation once the catch-up is done, at the instant of its last change: the expiry and the
        # new period at one instant are no low-then-recovered pair.
        ("BALANCE_RECOVERED", feb28, alert({"amount": "0"}, "0", "1000", "", "1000")),
        ("BALANCE_RECOVERED", feb28, alert({"amount": "100"}, "100", "1000", "", "1000")),
        ("BALANCE_RECOVERED", feb28, alert({"percent": "50"}, "500", "1000", "", "1000")),
        (
            "CREDITS_EXPIRED",
            mar5,
            {
                "grant_id": p1,
                "subscription_id": "sub_1",
                "entitlement_key": "credits",
                "amount": "1000",
                "expired_amount": "1000",
                "expire_time": "2026-03-05T00:00:00Z",
            },
        ),
        # The subscription's end leaves no active grant: below the absolute level (not "depleted").
        ("BALANCE_LOW", mar5, alert({"amount": "100"}, "100", "0", "", "0")),
        (
            "SUBSCRIPTION_CHANGED",
            mar5,
            {
                "subscription_id": "sub_1",
                "revision": "2",
                "previous_revision": "1",
                "end_time": "2026-03-05T00:00:00Z",
                "clamped_changes": [
                    {
                        "requested_time": "2026-03-01T00:00:00Z",
                        "applied_time": "2026-03-05T00:00:00Z",
                    }
                ],
            },
        ),
        (
            "SUBSCRIPTION_ENDED",
            mar5,
            {
                "subscription_id": "sub_1",
                "revision": "2",
                "previous_revision": "2",
                "end_time": "2026-03-05T00:00:00Z",
            },
        ),
    ]
    assert {e.type for e in events} == set(E.values()) - {E.CREDIT_EVENT_TYPE_UNSPECIFIED}  # every kind
    assert all(e.test_clock_id == clock_id and e.customer_key == "acme" for e in events)
    assert len({e.event_id for e in events}) == len(events)
    # The stream sends the same events, and resumed from any cursor, the rest.
    assert watch(stub, len(events)) == events
    assert watch(stub, 5, cursor=events[-6].cursor) == events[-5:]
    # Filters.
    expired = all_events(stub, types=[E.CREDIT_EVENT_TYPE_CREDITS_EXPIRED])
    assert [e.event_id for e in expired] == [e.event_id for e in events if e.HasField("credits_expired")]
    assert len(expired) == 2
    assert all_events(stub, customer_key="nobody") == []
    assert [e.event_id for e in all_events(stub, start_time=ts(utc(2026, 3, 1)))] == [e.event_id for e in events[-4:]]


def test_watch_sends_live_events_and_heartbeats(grant):
    stub = grant.stub
    stub.ApplyCreditCurrency(
        pb.ApplyCreditCurrencyRequest(
            currency_key="ai-credits", revision=1, rates=[pb.CreditRate(feature_key="gpt-call", credits_per_unit="1")]
        )
    )
    stream = stub.WatchEvents(pb.WatchEventsRequest(), timeout=60)
    first = next(stream)
    assert first.HasField("heartbeat")  # nothing yet: a heartbeat (the test server's interval is short)
    done = threading.Event()

    def apply() -> None:
        stub.ApplySubscription(subscription("sub_live", "live", utc(2026, 5, 1), [("10", None)]))
        done.set()

    threading.Thread(target=apply).start()
    for message in stream:
        if message.HasField("event"):
            assert message.event.subscription_changed.subscription_id == "sub_live"
            break
    stream.cancel()
    assert done.wait(30)


def test_bad_filters_and_cursors_are_invalid_argument(grant):
    stub = grant.stub
    stub.ApplySubscription(subscription("sub_b", "bad", utc(2026, 5, 1), [("10", None)]))
    _, violations = expect_error(
        lambda: stub.ListEvents(pb.ListEventsRequest(types=[E.CREDIT_EVENT_TYPE_UNSPECIFIED, 99])),
        grpc.StatusCode.INVALID_ARGUMENT,
        "INVALID_ARGUMENT",
    )
    assert [v.field for v in violations] == ["types[0]", "types[1]"]
    for cursor in ["nonsense", "bm90LmEuY3Vyc29y", "b3RoZXJsb2cuMS4y"]:  # "not.a.cursor", "otherlog.1.2"
        _, violations = expect_error(
            lambda c=cursor: list(stub.WatchEvents(pb.WatchEventsRequest(cursor=c), timeout=10)),
            grpc.StatusCode.INVALID_ARGUMENT,
            "INVALID_CURSOR",
        )
        assert [v.field for v in violations] == ["cursor"]
    expect_error(
        lambda: stub.ListEvents(pb.ListEventsRequest(page_token="abc")),
        grpc.StatusCode.INVALID_ARGUMENT,
        "INVALID_PAGE_TOKEN",
    )


def test_balance_alert_levels_set_get_clear_and_bad_levels(grant):
    stub = grant.stub
    default = [pb.BalanceAlertLevel(percent="20")]
    own = [pb.BalanceAlertLevel(amount="100.5")]
    got = stub.SetBalanceAlerts(pb.SetBalanceAlertsRequest(currency_key="ai-credits", levels=default)).alerts
    assert (list(got.levels), got.source) == (default, pb.BALANCE_ALERTS_SOURCE_CURRENCY_DEFAULT)
    get = pb.GetBalanceAlertsRequest(customer_key="acme", currency_key="ai-credits")
    assert stub.GetBalanceAlerts(get).alerts.source == pb.BALANCE_ALERTS_SOURCE_CURRENCY_DEFAULT
    stub.SetBalanceAlerts(pb.SetBalanceAlertsRequest(customer_key="acme", currency_key="ai-credits", levels=own))
    got = stub.GetBalanceAlerts(get).alerts
    assert (list(got.levels), got.source) == (own, pb.BALANCE_ALERTS_SOURCE_CUSTOMER)
    clear = pb.ClearBalanceAlertsRequest(customer_key="acme", currency_key="ai-credits")
    assert stub.ClearBalanceAlerts(clear).alerts.source == pb.BALANCE_ALERTS_SOURCE_CURRENCY_DEFAULT
    stub.ClearBalanceAlerts(pb.ClearBalanceAlertsRequest(currency_key="ai-credits"))
    assert stub.GetBalanceAlerts(get).alerts.source == pb.BALANCE_ALERTS_SOURCE_NONE
    bad = [
        pb.BalanceAlertLevel(amount="-1"),
        pb.BalanceAlertLevel(percent="101"),
        pb.BalanceAlertLevel(amount="ten"),
        pb.BalanceAlertLevel(),
    ]
    _, violations = expect_error(
        lambda: stub.SetBalanceAlerts(pb.SetBalanceAlertsRequest(currency_key="ai-credits", levels=bad)),
        grpc.StatusCode.INVALID_ARGUMENT,
        "INVALID_ARGUMENT",
    )
    assert [(v.field, v.reason) for v in violations][:2] == [
        ("levels[0].amount", "NEGATIVE_THRESHOLD"),
        ("levels[1].percent", "PERCENT_OVER_100"),
    ]
    assert [v.field for v in violations][2:] == ["levels[2].amount", "levels[3]"]
    expect_error(
        lambda: stub.SetBalanceAlerts(pb.SetBalanceAlertsRequest(levels=default)),
        grpc.StatusCode.INVALID_ARGUMENT,
        "INVALID_ARGUMENT",
    )


def test_time_driven_events_come_out_when_time_passes_without_any_read(database_url_factory):
    """The timer's catch-up writes a period's events when real time (here a manual clock) passes,
    though nobody reads a balance: ListEvents reads the log only."""
    import time

    from credit_common.clock import ManualClock
    from grant_service.entrypoints import app
    from grant_service.v1 import grant_service_pb2_grpc
    from tests.support.servers import serving

    clock = ManualClock(utc(2026, 6, 1, 12))
    args = ["--catch-up-interval", "0.05"]
    with serving(app.DEFINITION, app.build, database_url_factory("grant"), clock=clock, args=args) as (_, channel):
        stub = grant_service_pb2_grpc.GrantServiceStub(channel)
        sub = subscription("sub_t", "timed", utc(2026, 5, 20), [("10", None)], end=utc(2026, 7, 20))
        stub.ApplySubscription(sub)

        def kinds() -> list[str]:
            return [E.Name(e.type).removeprefix("CREDIT_EVENT_TYPE_") for e in all_events(stub, customer_key="timed")]

        def wait_for(expected: list[str]) -> None:
            deadline = time.monotonic() + 30
            while kinds() != expected:
                assert time.monotonic() < deadline, kinds()
                time.sleep(0.05)

        first = ["SUBSCRIPTION_CHANGED", "CREDITS_GRANTED"]
        wait_for(first)
        clock.set(utc(2026, 6, 20, 12))  # period 1 starts
        renewed = [*first, "CREDITS_EXPIRED", "CREDITS_GRANTED"]
        wait_for(renewed)
        clock.set(utc(2026, 7, 21))  # the subscription ends
        wait_for([*renewed, "CREDITS_EXPIRED", "SUBSCRIPTION_ENDED"])
        ended = all_events(stub, customer_key="timed")[-1]
        assert ended.occurred_time == ts(utc(2026, 7, 20))
