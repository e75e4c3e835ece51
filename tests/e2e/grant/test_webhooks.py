"""Webhook endpoints over a real grant server (port 0) on both backends, delivering to a local
receiver (tests/support/webhook_receiver.py): signatures that `standardwebhooks` verifies, retries
on the schedule moved by the injected clock (never by sleeping), the endpoint disabled after its
limit, attempts listed, resend and replay, secret rotation, bad input, and a receiver that hangs
while usage keeps being answered. Events are appended to the log directly (the event log's own
tests cover how use cases write them)."""

from __future__ import annotations

import base64
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import grpc
import pytest
from google.protobuf import duration_pb2, field_mask_pb2, json_format
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from credit_common.clock import ManualClock
from credit_common.db.engine import DatabaseSettings, create_db_engine, session_factories
from credit_common.ids import new_id
from grant_service.adapters.unit_of_work import SqlGrantUnitOfWork
from grant_service.domain.events import EventType, NewEvent
from grant_service.domain.webhooks import DisabledReason, WebhookEndpoint, new_secret, sign
from grant_service.entrypoints import app
from grant_service.v1 import grant_service_pb2 as pb
from grant_service.v1 import grant_service_pb2_grpc
from grant_service.v1 import webhooks_pb2 as wpb
from tests.e2e.grant.conftest import expect_error, subscription, ts, utc
from tests.support.servers import serving
from tests.support.webhook_receiver import Receiver, receiving, wait_for

REAL_NOW = datetime(2026, 6, 1, 12, tzinfo=UTC)
GRANTED = "CREDIT_EVENT_TYPE_CREDITS_GRANTED"
EXPIRED = "CREDIT_EVENT_TYPE_CREDITS_EXPIRED"
TEST_ARGS = [
    "--enable-test-clocks",
    "--catch-up-interval",
    "0",
    "--webhook-allow-http",
    "--webhook-allow-private",
    "--webhook-poll-interval-ms",
    "20",
    "--webhook-timeout-ms",
    "500",
]


@dataclass
class Server:
    stub: grant_service_pb2_grpc.GrantServiceStub
    clock: ManualClock
    running: object
    url: str

    @property
    def dispatcher(self):
        return self.running.webhooks

    def add_events(self, count: int, type_: EventType = EventType.CREDITS_GRANTED, customer: str = "acme") -> list[str]:
        """Append `count` events to the log (recorded now on the server's clock); their ids in order."""
        engine = create_db_engine(DatabaseSettings(url=self.url, pool_size=1, max_overflow=0))
        ids = [new_id("evt") for _ in range(count)]
        try:
            with session_factories(engine).write() as session, session.begin():
                SqlGrantUnitOfWork(session, clock=self.clock).events.add(
                    [
                        NewEvent(
                            event_id,
                            type_,
                            customer,
                            "ai-credits",
                            "",
                            self.clock.now(),
                            f"test:{event_id}",
                            _payload(type_, i, self.clock.now()),
                        )
                        for i, event_id in enumerate(ids)
                    ]
                )
        finally:
            engine.dispose()
        self.dispatcher.nudge()
        return ids

    def create(self, url: str, types=(), **fields) -> wpb.CreateWebhookEndpointResponse:
        return self.stub.CreateWebhookEndpoint(
            wpb.CreateWebhookEndpointRequest(url=url, event_types=list(types), **fields), timeout=30
        )

    def attempts(self, endpoint_id: str = "", event_id: str = "") -> list[wpb.WebhookDeliveryAttempt]:
        reply = self.stub.ListWebhookDeliveryAttempts(
            wpb.ListWebhookDeliveryAttemptsRequest(endpoint_id=endpoint_id, event_id=event_id, page_size=1000),
            timeout=30,
        )
        return list(reply.attempts)

    def recorded(self, count: int, endpoint_id: str = "", event_id: str = "") -> None:
        """Wait until `count` attempts are recorded (before moving the clock: an attempt's next time
        counts from when its outcome was taken)."""
        wait_for(lambda: len(self.attempts(endpoint_id, event_id)) >= count, f"{count} attempts recorded")

    def advance(self, delta: timedelta) -> None:
        self.clock.advance(delta)
        self.dispatcher.nudge()


def _payload(type_: EventType, i: int, now: datetime) -> dict:
    if type_ is EventType.CREDITS_EXPIRED:
        return {"grant_id": f"grt_{i}", "amount": Decimal("100.5"), "expired_amount": Decimal(0), "expire_time": now}
    return {"grant_id": f"grt_{i}", "amount": Decimal("100.5"), "effective_time": now}


def _server(database_url_factory, *extra: str) -> Iterator[Server]:
    clock = ManualClock(REAL_NOW)
    url = database_url_factory("grant")
    with serving(app.DEFINITION, app.build, url, clock=clock, args=[*TEST_ARGS, *extra]) as (running, channel):
        yield Server(grant_service_pb2_grpc.GrantServiceStub(channel), clock, running, url)


@pytest.fixture
def server(database_url_factory) -> Iterator[Server]:
    yield from _server(database_url_factory)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with receiving() as r:
        yield r


def verify(secret: str, received) -> dict:
    return Webhook(secret).verify(received.body, received.headers)


# --------------------------------------------------------------------------- signatures


def test_deliveries_verify_with_standardwebhooks_and_tampering_does_not(server, receiver):
    created = server.create(receiver.url, description="billing")
    secret = created.signing_secret
    assert secret.startswith("whsec_") and len(base64.b64decode(secret[6:])) == 24
    [event_id] = server.add_events(1)
    wait_for(lambda: receiver.count() == 1, "the delivery")
    received = receiver.received[0]
    assert received.headers["webhook-id"] == event_id
    body = verify(secret, received)
    assert body["eventId"] == event_id and body["type"] == GRANTED
    assert body["creditsGranted"] == {"grantId": "grt_0", "amount": "100.5", "effectiveTime": "2026-06-01T12:00:00Z"}
    assert body["cursor"] and body["customerKey"] == "acme"
    tampered = received.body.replace(b"100.5", b"999.5")
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(tampered, received.headers)
    with pytest.raises(WebhookVerificationError):  # another endpoint's secret
        Webhook(server.create(receiver.url).signing_secret).verify(received.body, received.headers)
    # the same message signed ten minutes ago: the signature is right, the timestamp too old
    old = int(time.time()) - 600
    stale = {
        **received.headers,
        "webhook-timestamp": str(old),
        "webhook-signature": sign(secret, event_id, old, received.body),
    }
    with pytest.raises(WebhookVerificationError, match="too old"):
        Webhook(secret).verify(received.body, stale)
    # and a timestamp moved without re-signing fails too
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(received.body, {**received.headers, "webhook-timestamp": str(old)})


def test_rotated_secret_both_sign_during_the_grace_then_only_the_new(server, receiver):
    created = server.create(receiver.url)
    old_secret = created.signing_secret
    rotated = server.stub.RotateWebhookSecret(
        wpb.RotateWebhookSecretRequest(
            endpoint_id=created.endpoint.endpoint_id, previous_secret_ttl=duration_pb2.Duration(seconds=3600)
        ),
        timeout=30,
    )
    assert rotated.signing_secret != old_secret
    assert rotated.endpoint.previous_secret_expire_time.ToDatetime(UTC) == REAL_NOW + timedelta(hours=1)
    server.add_events(1)
    wait_for(lambda: receiver.count() == 1, "the first delivery")
    first = receiver.received[0]
    assert len(first.headers["webhook-signature"].split(" ")) == 2
    verify(old_secret, first)
    verify(rotated.signing_secret, first)
    server.advance(timedelta(hours=1))
    server.add_events(1)
    wait_for(lambda: receiver.count() == 2, "the second delivery")
    second = receiver.received[1]
    verify(rotated.signing_secret, second)
    with pytest.raises(WebhookVerificationError):
        verify(old_secret, second)


# --------------------------------------------------------------------------- delivery


def test_events_arrive_in_order_and_only_the_types_asked_for(server, receiver):
    with receiving() as expired_only:
        server.create(receiver.url)
        server.create(expired_only.url, types=[EXPIRED])
        granted = server.add_events(30)
        expired = server.add_events(3, EventType.CREDITS_EXPIRED)
        wait_for(lambda: receiver.count() == 33 and expired_only.count() == 3, "every delivery")
        assert receiver.ids() == granted + expired
        assert expired_only.ids() == expired


def test_an_endpoint_gets_only_events_recorded_after_it_was_created(server, receiver):
    server.add_events(2)
    server.advance(timedelta(seconds=1))
    server.create(receiver.url)
    later = server.add_events(1)
    wait_for(lambda: receiver.count() >= 1, "the delivery")
    server.dispatcher.drain()
    assert receiver.ids() == later


def test_a_500_is_retried_on_the_schedule_as_the_clock_moves(server, receiver):
    receiver.statuses = [500, 503]
    endpoint = server.create(receiver.url).endpoint
    [event_id] = server.add_events(1)
    wait_for(lambda: receiver.count() == 1, "the first attempt")
    wait_for(lambda: len(server.attempts(event_id=event_id)) == 1, "the first attempt recorded")
    first = server.attempts(event_id=event_id)[0]
    assert (first.attempt, first.http_status, first.error) == (1, 500, "HTTP 500")
    next_time = first.next_attempt_time.ToDatetime(UTC)
    assert REAL_NOW + timedelta(seconds=4.5) <= next_time <= REAL_NOW + timedelta(seconds=5.5)
    failing = server.stub.GetWebhookEndpoint(wpb.GetWebhookEndpointRequest(endpoint_id=endpoint.endpoint_id))
    assert failing.endpoint.failing_since.ToDatetime(UTC) == REAL_NOW
    server.dispatcher.drain()
    assert receiver.count() == 1, "retried before it was due"
    server.advance(timedelta(seconds=6))
    wait_for(lambda: receiver.count() == 2, "the second attempt")
    server.recorded(2, event_id=event_id)
    server.advance(timedelta(minutes=6))
    wait_for(lambda: receiver.count() == 3, "the third attempt")
    wait_for(lambda: len(server.attempts(event_id=event_id)) == 3, "three attempts recorded")
    attempts = server.attempts(endpoint_id=endpoint.endpoint_id)  # newest first
    assert [(a.attempt, a.http_status) for a in attempts] == [(3, 204), (2, 503), (1, 500)]
    assert not attempts[0].HasField("next_attempt_time") and attempts[0].error == ""
    assert all(a.trigger == wpb.WEBHOOK_DELIVERY_TRIGGER_EVENT for a in attempts)
    healthy = server.stub.GetWebhookEndpoint(wpb.GetWebhookEndpointRequest(endpoint_id=endpoint.endpoint_id))
    assert not healthy.endpoint.HasField("failing_since")
    assert receiver.ok_ids() == [event_id]


def test_a_receiver_that_times_out_gets_the_event_again_later(server):
    release = threading.Event()
    with receiving(hold=release) as receiver:
        server.create(receiver.url)
        [event_id] = server.add_events(1)
        wait_for(lambda: len(server.attempts(event_id=event_id)) == 1, "the attempt to time out")
        assert server.attempts(event_id=event_id)[0].error.startswith("timeout")
        release.set()
        receiver.hold = None
        server.advance(timedelta(seconds=6))
        wait_for(lambda: event_id in receiver.ok_ids(), "the retry")


def test_an_unreachable_endpoint_costs_one_attempt_per_step_not_one_per_event(server):
    with receiving() as closed:
        url = closed.url
    endpoint = server.create(url).endpoint
    events = server.add_events(5)
    wait_for(lambda: len(server.attempts(endpoint_id=endpoint.endpoint_id)) == 1, "the first attempt")
    server.dispatcher.drain()
    [attempt] = server.attempts(endpoint_id=endpoint.endpoint_id)
    assert attempt.event_id == events[0] and attempt.http_status == 0 and attempt.error
    with receiving() as receiver:  # the endpoint comes back (on another port: moved there)
        server.stub.UpdateWebhookEndpoint(
            wpb.UpdateWebhookEndpointRequest(
                endpoint=wpb.WebhookEndpoint(endpoint_id=endpoint.endpoint_id, url=receiver.url),
                update_mask=field_mask_pb2.FieldMask(paths=["url"]),
            ),
            timeout=30,
        )
        server.advance(timedelta(seconds=6))
        wait_for(lambda: receiver.count() == 5, "the held-back deliveries")
        assert receiver.ids() == events


def test_redirects_are_not_followed(server):
    with receiving() as elsewhere, receiving(status=302) as receiver:
        receiver.location = elsewhere.url
        server.create(receiver.url)
        [event_id] = server.add_events(1)
        server.recorded(1, event_id=event_id)
        [attempt] = server.attempts(event_id=event_id)
        assert (attempt.http_status, attempt.error) == (302, "HTTP 302 (redirect not followed)")
        assert attempt.HasField("next_attempt_time")
        assert elsewhere.count() == 0


def test_a_certificate_nobody_trusts_is_refused(server):
    with receiving(tls=True) as receiver:
        server.create(receiver.url)
        [event_id] = server.add_events(1)
        server.recorded(1, event_id=event_id)
        [attempt] = server.attempts(event_id=event_id)
        assert attempt.http_status == 0 and "CERTIFICATE_VERIFY_FAILED" in attempt.error, attempt.error
        assert receiver.count() == 0


def test_an_endpoint_failing_past_the_limit_is_disabled(database_url_factory):
    for server in _server(database_url_factory, "--webhook-disable-after-hours", "1"):
        with receiving(status=500) as receiver:
            endpoint = server.create(receiver.url).endpoint
            server.add_events(1)
            wait_for(lambda: receiver.count() == 1, "the first attempt")
            for step in (timedelta(seconds=6), timedelta(minutes=6), timedelta(minutes=33)):
                count = receiver.count()
                server.recorded(count, endpoint_id=endpoint.endpoint_id)
                server.advance(step)
                wait_for(lambda c=count: receiver.count() == c + 1, "the next attempt")
            still = server.stub.GetWebhookEndpoint(wpb.GetWebhookEndpointRequest(endpoint_id=endpoint.endpoint_id))
            assert still.endpoint.enabled  # failing for 44 minutes: under the limit
            server.recorded(4, endpoint_id=endpoint.endpoint_id)
            server.advance(timedelta(hours=2, minutes=15))
            wait_for(lambda: receiver.count() == 5, "the fifth attempt")

            def disabled(server=server, endpoint=endpoint):
                request = wpb.GetWebhookEndpointRequest(endpoint_id=endpoint.endpoint_id)
                reply = server.stub.GetWebhookEndpoint(request)
                return reply.endpoint.disabled_reason == wpb.WEBHOOK_DISABLED_REASON_FAILING

            wait_for(disabled, "the endpoint to be disabled")
            server.add_events(1)  # not queued for a disabled endpoint
            server.advance(timedelta(hours=6))
            server.dispatcher.drain()
            assert receiver.count() == 5
            enabled = server.stub.EnableWebhookEndpoint(
                wpb.EnableWebhookEndpointRequest(endpoint_id=endpoint.endpoint_id), timeout=30
            )
            assert enabled.endpoint.enabled and not enabled.endpoint.HasField("failing_since")


def test_given_up_after_the_last_attempt_of_the_schedule(server):
    with receiving(status=500) as receiver:
        server.create(receiver.url)
        [event_id] = server.add_events(1)
        for n, step in enumerate([0, 5, 300, 1800, 7200, 18000, 36000, 36000], start=1):
            server.recorded(n - 1, event_id=event_id)
            server.advance(timedelta(seconds=step * 1.2))
            wait_for(lambda n=n: receiver.count() == n, f"attempt {n}")
        wait_for(lambda: len(server.attempts(event_id=event_id)) == 8, "eight attempts recorded")
        server.advance(timedelta(days=2))
        server.dispatcher.drain()
        assert receiver.count() == 8
        last = server.attempts(event_id=event_id)[0]
        assert last.attempt == 8 and not last.HasField("next_attempt_time")


def test_resend_and_replay(server, receiver):
    endpoint_id = server.create(receiver.url, types=[GRANTED]).endpoint.endpoint_id
    events = server.add_events(3)
    expired = server.add_events(1, EventType.CREDITS_EXPIRED)
    wait_for(lambda: receiver.count() == 3, "the first deliveries")
    resent = server.stub.ResendWebhookEvent(
        wpb.ResendWebhookEventRequest(endpoint_id=endpoint_id, event_id=events[1], request_id="r1"), timeout=30
    )
    again = server.stub.ResendWebhookEvent(
        wpb.ResendWebhookEventRequest(endpoint_id=endpoint_id, event_id=events[1], request_id="r1"), timeout=30
    )
    assert resent.delivery_id == again.delivery_id
    wait_for(lambda: receiver.count() == 4, "the resend")
    assert receiver.ids()[3] == events[1]
    first_cursor = json.loads(receiver.received[0].body)["cursor"]
    replayed = server.stub.ReplayWebhookEvents(
        wpb.ReplayWebhookEventsRequest(endpoint_id=endpoint_id, after_cursor=first_cursor, max_events=2), timeout=30
    )
    assert (replayed.queued, replayed.more) == (2, True)
    wait_for(lambda: receiver.count() == 6, "the replay")
    assert receiver.ids()[4:] == events[1:]
    rest = server.stub.ReplayWebhookEvents(
        wpb.ReplayWebhookEventsRequest(endpoint_id=endpoint_id, after_cursor=replayed.last_cursor), timeout=30
    )
    assert (rest.queued, rest.more) == (0, False)  # only the expiry is left, a type it does not want
    server.dispatcher.drain()
    assert expired[0] not in receiver.ids()
    every_trigger = {
        wpb.WEBHOOK_DELIVERY_TRIGGER_EVENT,
        wpb.WEBHOOK_DELIVERY_TRIGGER_RESEND,
        wpb.WEBHOOK_DELIVERY_TRIGGER_REPLAY,
    }
    # received first, recorded when the lane flushes
    wait_for(lambda: {a.trigger for a in server.attempts(event_id=events[1])} == every_trigger, "the attempts")
    expect_error(
        lambda: server.stub.ResendWebhookEvent(
            wpb.ResendWebhookEventRequest(endpoint_id=endpoint_id, event_id="evt_x")
        ),
        grpc.StatusCode.NOT_FOUND,
        "EVENT_NOT_FOUND",
    )
    _, violations = expect_error(
        lambda: server.stub.ReplayWebhookEvents(
            wpb.ReplayWebhookEventsRequest(endpoint_id=endpoint_id, after_cursor="bm90LWEtY3Vyc29y")
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
        "INVALID_CURSOR",
    )
    assert [v.field for v in violations] == ["after_cursor"]


# --------------------------------------------------------------------------- endpoints


def test_endpoint_lifecycle(server, receiver):
    created = server.create(receiver.url, types=[GRANTED], description="ops", request_id="c1")
    endpoint = created.endpoint
    assert endpoint.endpoint_id.startswith("whe_") and endpoint.enabled and list(endpoint.event_types) == [GRANTED]
    retried = server.create(receiver.url, types=[GRANTED], description="ops", request_id="c1")
    assert retried.endpoint.endpoint_id == endpoint.endpoint_id and retried.signing_secret == created.signing_secret
    got = server.stub.GetWebhookEndpoint(wpb.GetWebhookEndpointRequest(endpoint_id=endpoint.endpoint_id)).endpoint
    assert got == endpoint
    assert created.signing_secret not in str(got)
    second = server.create(receiver.url).endpoint
    page = server.stub.ListWebhookEndpoints(wpb.ListWebhookEndpointsRequest(page_size=1))
    assert [e.endpoint_id for e in page.endpoints] == [second.endpoint_id] and page.next_page_token
    page2 = server.stub.ListWebhookEndpoints(
        wpb.ListWebhookEndpointsRequest(page_size=1, page_token=page.next_page_token)
    )
    assert [e.endpoint_id for e in page2.endpoints] == [endpoint.endpoint_id]
    updated = server.stub.UpdateWebhookEndpoint(
        wpb.UpdateWebhookEndpointRequest(
            endpoint=wpb.WebhookEndpoint(endpoint_id=endpoint.endpoint_id, description="new", event_types=[]),
            update_mask=field_mask_pb2.FieldMask(paths=["description", "event_types"]),
        )
    ).endpoint
    assert (updated.description, list(updated.event_types), updated.url) == ("new", [], receiver.url)
    disabled = server.stub.DisableWebhookEndpoint(wpb.DisableWebhookEndpointRequest(endpoint_id=endpoint.endpoint_id))
    assert not disabled.endpoint.enabled
    assert disabled.endpoint.disabled_reason == wpb.WEBHOOK_DISABLED_REASON_BY_CALLER
    server.stub.DeleteWebhookEndpoint(wpb.DeleteWebhookEndpointRequest(endpoint_id=second.endpoint_id))
    server.stub.DeleteWebhookEndpoint(wpb.DeleteWebhookEndpointRequest(endpoint_id=endpoint.endpoint_id))
    server.add_events(1)
    server.dispatcher.drain()
    assert receiver.count() == 0
    expect_error(
        lambda: server.stub.GetWebhookEndpoint(wpb.GetWebhookEndpointRequest(endpoint_id=endpoint.endpoint_id)),
        grpc.StatusCode.NOT_FOUND,
        "WEBHOOK_ENDPOINT_NOT_FOUND",
    )


@pytest.mark.parametrize(
    "request_fields, field, reason",
    [
        ({"url": "not a url"}, "url", "INVALID_URL"),
        ({"url": "ftp://example.com/x"}, "url", "INVALID_URL"),
        ({"url": ""}, "url", "REQUIRED"),
        ({"url": "https://user:pw@example.com/x"}, "url", "INVALID_URL"),
        ({"url": "https://example.com/" + "x" * 2100}, "url", "URL_TOO_LONG"),
        ({"url": "https://example.com/x", "event_types": ["credits.granted"]}, "event_types[0]", "UNKNOWN_EVENT_TYPE"),
        ({"url": "https://example.com/x", "description": "d" * 600}, "description", "TOO_LONG"),
    ],
)
def test_bad_endpoints_are_invalid_argument_with_the_field_and_reason(server, request_fields, field, reason):
    _, violations = expect_error(
        lambda: server.stub.CreateWebhookEndpoint(wpb.CreateWebhookEndpointRequest(**request_fields)),
        grpc.StatusCode.INVALID_ARGUMENT,
        "INVALID_ARGUMENT",
    )
    assert [(v.field, v.reason) for v in violations] == [(field, reason)]


@pytest.fixture
def strict_server(database_url_factory) -> Iterator[Server]:
    """Default webhook policy: https only, public addresses only, hosts of example.com only."""
    clock = ManualClock(REAL_NOW)
    url = database_url_factory("grant")
    args = ["--catch-up-interval", "0", "--webhook-allowed-hosts", "*.example.com,example.com"]
    with serving(app.DEFINITION, app.build, url, clock=clock, args=args) as (running, channel):
        yield Server(grant_service_pb2_grpc.GrantServiceStub(channel), clock, running, url)


@pytest.mark.parametrize(
    "url, reason",
    [
        ("http://hooks.example.com/x", "HTTPS_REQUIRED"),
        ("https://127.0.0.1/x", "HOST_NOT_ALLOWED"),
        ("https://other.org/x", "HOST_NOT_ALLOWED"),
    ],
)
def test_the_server_policy_refuses_targets(strict_server, url, reason):
    _, violations = expect_error(
        lambda: strict_server.stub.CreateWebhookEndpoint(wpb.CreateWebhookEndpointRequest(url=url)),
        grpc.StatusCode.INVALID_ARGUMENT,
        "INVALID_ARGUMENT",
    )
    assert [(v.field, v.reason) for v in violations] == [("url", reason)]
    ok = strict_server.stub.CreateWebhookEndpoint(wpb.CreateWebhookEndpointRequest(url="https://hooks.example.com/x"))
    assert ok.endpoint.enabled


def test_update_mask_and_ids_are_checked(server):
    _, violations = expect_error(
        lambda: server.stub.UpdateWebhookEndpoint(
            wpb.UpdateWebhookEndpointRequest(
                endpoint=wpb.WebhookEndpoint(endpoint_id="whe_x"),
                update_mask=field_mask_pb2.FieldMask(paths=["secret"]),
            )
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
        "INVALID_ARGUMENT",
    )
    assert [(v.field, v.reason) for v in violations] == [("update_mask", "UNKNOWN_FIELD")]
    _, violations = expect_error(
        lambda: server.stub.ListWebhookDeliveryAttempts(wpb.ListWebhookDeliveryAttemptsRequest()),
        grpc.StatusCode.INVALID_ARGUMENT,
        "INVALID_ARGUMENT",
    )
    assert [v.reason for v in violations] == ["REQUIRED"]
    _, violations = expect_error(
        lambda: server.stub.RotateWebhookSecret(
            wpb.RotateWebhookSecretRequest(endpoint_id="whe_x", previous_secret_ttl=duration_pb2.Duration(seconds=-1))
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
        "INVALID_ARGUMENT",
    )
    assert [(v.field, v.reason) for v in violations] == [("previous_secret_ttl", "OUT_OF_RANGE")]


# --------------------------------------------------------------------------- isolation


def test_a_hanging_receiver_never_holds_up_usage_or_the_catch_up(database_url_factory):
    """Every delivery lane is held by a receiver that does not answer; ReportUsage, GetBalance and
    a test clock's catch-up over three periods (which writes events for those endpoints) keep being
    answered meanwhile (behaviour, not timings)."""
    for server in _server(database_url_factory, "--webhook-timeout-ms", "60000", "--webhook-lease-s", "300"):
        release = threading.Event()
        with receiving(hold=release) as receiver:
            for _ in range(3):
                server.create(receiver.url)
            server.stub.ApplyCreditCurrency(
                pb.ApplyCreditCurrencyRequest(
                    currency_key="ai-credits", revision=1, rates=[pb.CreditRate(feature_key="f", credits_per_unit="1")]
                ),
                timeout=30,
            )
            server.stub.ApplySubscription(
                subscription("sub_1", "acme", utc(2026, 5, 1, 12), [("1000", None)]), timeout=30
            )
            added = server.add_events(20)
            wait_for(lambda: receiver.holding == 3, "every endpoint's lane to be held by the receiver")
            for n in range(20):
                reply = server.stub.ReportUsage(
                    pb.ReportUsageRequest(
                        request_id=f"u{n}",
                        customer_key="acme",
                        feature_key="f",
                        quantity="1",
                        currency_key="ai-credits",
                    ),
                    timeout=30,
                )
                assert reply.usage.credits
            balance = server.stub.GetBalance(pb.GetBalanceRequest(customer_key="acme", currency_key="ai-credits"))
            assert Decimal(balance.balance.available) == Decimal(980)
            clock = server.stub.CreateTestClock(
                pb.CreateTestClockRequest(name="c", frozen_time=ts(utc(2026, 1, 1))), timeout=30
            ).test_clock
            server.stub.ApplySubscription(
                subscription("sub_2", "beta", utc(2026, 1, 1), [("50", None)], clock_id=clock.test_clock_id), timeout=30
            )
            server.stub.AdvanceTestClock(
                pb.AdvanceTestClockRequest(test_clock_id=clock.test_clock_id, frozen_time=ts(utc(2026, 4, 1))),
                timeout=30,
            )
            grants = server.stub.ListGrants(pb.ListGrantsRequest(customer_key="beta"), timeout=30).grants
            assert len(grants) == 4  # January to April: the catch-up ran
            assert receiver.holding == 3 and receiver.count() == 0, "the receiver answered: the test proves nothing"
            release.set()
            receiver.hold = None
            wait_for(lambda: set(added) <= set(receiver.ok_ids()), "every event once released")  # noqa: B023


# --------------------------------------------------------------------------- one schema


def test_a_use_cases_event_arrives_as_the_same_credit_event_list_events_returns(server, receiver):
    """Events written by the RPCs themselves (a subscription applied, a one-off grant) reach the
    endpoint, and each body is the canonical JSON of the very CreditEvent ListEvents returns."""
    secret = server.create(receiver.url).signing_secret
    server.stub.ApplyCreditCurrency(
        pb.ApplyCreditCurrencyRequest(
            currency_key="ai-credits", revision=1, rates=[pb.CreditRate(feature_key="f", credits_per_unit="1")]
        ),
        timeout=30,
    )
    server.stub.ApplySubscription(subscription("sub_1", "acme", utc(2026, 5, 1, 12), [("1000", None)]), timeout=30)
    grant = server.stub.CreateGrant(
        pb.CreateGrantRequest(request_id="g1", customer_key="acme", currency_key="ai-credits", amount="25"),
        timeout=30,
    ).grant
    listed = server.stub.ListEvents(pb.ListEventsRequest(customer_key="acme", page_size=100), timeout=30).events
    assert grant.grant_id in {e.credits_granted.grant_id for e in listed}
    server.dispatcher.nudge()
    wait_for(lambda: receiver.count() >= len(listed), "every event of the log")
    bodies = {r.headers["webhook-id"]: verify(secret, r) for r in receiver.received}
    for event in listed:
        assert bodies[event.event_id] == json_format.MessageToDict(event)


def test_a_target_the_policy_refuses_now_is_not_reached(strict_server):
    """An endpoint stored before the policy got stricter (written here straight to the database) is
    checked again before every attempt: a failed attempt, nothing sent."""
    with receiving() as receiver:
        engine = create_db_engine(DatabaseSettings(url=strict_server.url, pool_size=1, max_overflow=0))
        T = REAL_NOW
        try:
            with session_factories(engine).write() as session, session.begin():
                SqlGrantUnitOfWork(session).webhooks.add(
                    WebhookEndpoint(
                        "whe_old", receiver.url, (), "", DisabledReason.NONE, new_secret(), None, None, T, T
                    )
                )
        finally:
            engine.dispose()
        [event_id] = strict_server.add_events(1)
        strict_server.recorded(1, event_id=event_id)
        [attempt] = strict_server.attempts(event_id=event_id)
        assert attempt.error.startswith("target refused") and "[HTTPS_REQUIRED]" in attempt.error, attempt.error
        assert receiver.count() == 0
