"""The webhook dispatcher's lane over a fake queue and sender (no database, no HTTP): what it
records for each answer, an unreachable endpoint holding back the rest of its lane, the schedule
moved by the injected clock, and a stop giving back what was not sent."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from credit_common.backoff import RetrySchedule
from credit_common.clock import ManualClock
from credit_common.delivery.leases import Backlog, LeaseToken
from grant_service.domain.webhooks import AttemptResult, DisabledReason, Trigger, WebhookEndpoint
from grant_service.service_layer.webhook_dispatcher import WebhookDispatcher

T0 = datetime(2026, 6, 1, tzinfo=UTC)
SCHEDULE = RetrySchedule((timedelta(seconds=5), timedelta(minutes=5)), jitter=0)
ENDPOINT = WebhookEndpoint(
    "whe_1", "https://example.com", (), "", DisabledReason.NONE, "whsec_AAAA", None, None, T0, T0
)


@dataclass(frozen=True)
class Claim:
    token: LeaseToken
    endpoint_id: str
    event_id: str
    event_type: str
    body: bytes
    trigger: Trigger


@dataclass
class Lane:
    endpoint: WebhookEndpoint
    claims: list


@dataclass
class FakeQueue:
    lanes: list = field(default_factory=list)
    records: list = field(default_factory=list)
    released: list = field(default_factory=list)

    def claim_lanes(self, now, lease_until, endpoints, batch, busy=()):
        lanes, self.lanes = self.lanes, []
        return lanes

    def record(self, endpoint_id, records, *, now, disable_after):
        self.records.extend(records)
        return [True] * len(records), False

    renewed: list = field(default_factory=list)

    def renew(self, tokens, until):
        self.renewed.append(([t.id for t in tokens], until))
        return [LeaseToken(t.id, until, t.attempts) for t in tokens]

    def release(self, tokens, due_at):
        self.released.extend((t.id, due_at) for t in tokens)
        return len(tokens)

    def backlog(self, now):
        return Backlog(0, 0.0)


class FakeSender:
    timeout = timedelta(seconds=1)

    def __init__(self, answers, gate: threading.Event | None = None) -> None:
        self.answers = list(answers)
        self.sent: list[tuple[str, dict]] = []
        self.gate = gate
        self.entered = threading.Event()

    def send(self, url, headers, body):
        self.sent.append((headers["webhook-id"], headers))
        self.entered.set()
        if self.gate is not None:
            self.gate.wait(10)
        return self.answers.pop(0) if self.answers else AttemptResult(True, 204)


def _lane(n: int) -> Lane:
    until = T0 + timedelta(seconds=60)
    return Lane(
        ENDPOINT, [Claim(LeaseToken(i, until, 1), "whe_1", f"evt_{i}", "X", b"{}", Trigger.EVENT) for i in range(n)]
    )


def _dispatcher(queue, sender, clock) -> WebhookDispatcher:
    return WebhookDispatcher(queue, sender, clock=clock, schedule=SCHEDULE, lanes=1, flush_every=2)


def test_an_answer_fails_only_its_event_no_answer_holds_the_rest_back():
    clock = ManualClock(T0)
    queue = FakeQueue(lanes=[_lane(4)])
    sender = FakeSender(
        [AttemptResult(False, 500, "HTTP 500"), AttemptResult(True, 204), AttemptResult(False, 0, "timeout")]
    )
    dispatcher = _dispatcher(queue, sender, clock)
    dispatcher.run_once(wait=True)
    assert [event for event, _ in sender.sent] == ["evt_0", "evt_1", "evt_2"]
    assert [(r.claim.event_id, r.status, r.next_attempt_at) for r in queue.records] == [
        ("evt_0", "pending", T0 + timedelta(seconds=5)),
        ("evt_1", "delivered", None),
        ("evt_2", "pending", T0 + timedelta(seconds=5)),
    ]
    assert queue.released == [(3, T0 + timedelta(seconds=5))]  # held back until evt_2's next attempt
    assert all(h["webhook-signature"].startswith("v1,") for _, h in sender.sent)
    dispatcher.stop()


def test_the_last_attempt_of_the_schedule_gives_up():
    clock = ManualClock(T0)
    lane = _lane(1)
    lane.claims[0] = Claim(LeaseToken(0, T0 + timedelta(seconds=60), 3), "whe_1", "evt_0", "X", b"{}", Trigger.EVENT)
    queue = FakeQueue(lanes=[lane])
    dispatcher = _dispatcher(queue, FakeSender([AttemptResult(False, 503, "HTTP 503")]), clock)
    dispatcher.run_once(wait=True)
    [record] = queue.records
    assert (record.status, record.next_attempt_at, record.attempt.next_attempt_time) == ("failed", None, None)
    dispatcher.stop()


def test_stop_finishes_the_attempt_in_flight_and_gives_back_the_rest():
    clock = ManualClock(T0)
    gate = threading.Event()
    queue = FakeQueue(lanes=[_lane(5)])
    sender = FakeSender([], gate)
    dispatcher = _dispatcher(queue, sender, clock)
    dispatcher.run_once()
    assert sender.entered.wait(10)
    stopper = threading.Thread(target=dispatcher.stop)
    stopper.start()
    gate.set()
    stopper.join(10)
    assert [r.claim.event_id for r in queue.records] == ["evt_0"]
    assert queue.released == [(i, T0) for i in range(1, 5)]


class SlowSender(FakeSender):
    """Each attempt takes 40 s of the injected clock."""

    def __init__(self, clock: ManualClock) -> None:
        super().__init__([])
        self.clock = clock

    def send(self, url, headers, body):
        self.clock.advance(timedelta(seconds=40))
        return super().send(url, headers, body)


def test_a_long_lane_renews_the_leases_of_what_it_has_not_sent():
    clock = ManualClock(T0)
    queue = FakeQueue(lanes=[_lane(3)])
    dispatcher = _dispatcher(queue, SlowSender(clock), clock)
    dispatcher.run_once(wait=True)
    # the lease (60 s) is half gone after the first attempt: the two left are renewed, and again after the next
    assert queue.renewed == [([1, 2], T0 + timedelta(seconds=100)), ([2], T0 + timedelta(seconds=140))]
    assert [r.claim.token.lease_until for r in queue.records] == [
        T0 + timedelta(seconds=60),
        T0 + timedelta(seconds=100),
        T0 + timedelta(seconds=140),
    ]
    dispatcher.stop()
