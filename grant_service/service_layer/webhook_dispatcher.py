"""The webhook dispatcher: fans new events out to the endpoints and delivers them, at least once,
on threads and connections of its own (a slow or dead receiver never holds up an RPC or the
catch-up).

One pass (`run_once`): fan out the events the log gained (one short transaction), then, for each
free lane of this process (`lanes`, the process's delivery concurrency), claim an endpoint and a
batch of its due deliveries (credit_common.delivery.leases: SKIP LOCKED, leases, fencing; at most
one lane per endpoint across every process) and hand it to a lane thread. A lane sends its
deliveries one after the other, in the order they were queued (event order), each signed per
Standard Webhooks, and records the outcomes every few attempts:
- a 2xx: delivered;
- any other answer: retried on the schedule (default Svix's: 5 s, 5 min, 30 min, 2 h, 5 h, 10 h,
  10 h after the first attempt), then given up (failed); the lane goes on with the next delivery;
- no answer (refused, timeout, TLS, a refused target): the same for that delivery, and the rest
  of the lane is held back until that delivery's next attempt (the endpoint is down: one attempt
  per step of the schedule, not one per event);
- an endpoint whose attempts have all failed for `disable_after` (default 5 days) is disabled.
Every attempt is recorded (webhook_attempts). Leases are renewed while a lane runs; on `stop()`
a lane finishes its current attempt and gives back the rest (due at once). A process killed
mid-lane leaves its claims leased: they are due again when the lease ends, and sent again (the
receiver deduplicates by `webhook-id`, the event id).
"""

from __future__ import annotations

import logging
import random
import threading
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Protocol

from credit_common.backoff import SVIX_SCHEDULE, RandomSource, RetrySchedule
from credit_common.clock import Clock, SystemClock
from credit_common.db.engine import log_failure
from credit_common.delivery.leases import Backlog, LeaseToken
from credit_common.delivery.worker import PollingWorker
from credit_common.metrics import WEBHOOK_DELIVERIES
from grant_service.domain.webhooks import (
    DEFAULT_DISABLE_AFTER,
    STATUS_DELIVERED,
    STATUS_FAILED,
    STATUS_PENDING,
    AttemptResult,
    DeliveryAttempt,
    Trigger,
    WebhookEndpoint,
    signature_header,
)

log = logging.getLogger("grant_service.webhooks")


class Claimed(Protocol):
    token: LeaseToken
    endpoint_id: str
    event_id: str
    body: bytes
    trigger: Trigger


class LaneBatch(Protocol):
    endpoint: WebhookEndpoint
    claims: list


class WebhookQueue(Protocol):
    def claim_lanes(
        self, now: datetime, lease_until: datetime, endpoints: int, batch: int, busy: Sequence[str] = ()
    ) -> list: ...

    def record(
        self, endpoint_id: str, records: Sequence, *, now: datetime, disable_after: timedelta
    ) -> tuple[list[bool], bool]: ...

    def renew(self, tokens: Sequence[LeaseToken], until: datetime) -> list[LeaseToken]: ...

    def release(self, tokens: Sequence[LeaseToken], due_at: datetime) -> int: ...

    def backlog(self, now: datetime) -> Backlog: ...


class WebhookSender(Protocol):
    timeout: timedelta  # the longest one attempt may take

    def send(self, url: str, headers: Mapping[str, str], body: bytes) -> AttemptResult: ...


@dataclass(frozen=True, slots=True)
class Record:
    """An attempt's outcome to write: the delivery's new state and the attempt."""

    claim: Claimed
    status: str
    next_attempt_at: datetime | None
    attempt: DeliveryAttempt
    delivered_at: datetime | None = None


@dataclass
class Totals:
    attempts: int = 0
    delivered: int = 0
    retried: int = 0
    given_up: int = 0
    released: int = 0
    disabled: int = 0


class WebhookDispatcher:
    def __init__(
        self,
        queue: WebhookQueue,
        sender: WebhookSender,
        *,
        clock: Clock,
        fan_out: Callable[[datetime], tuple[int, int]] | None = None,
        wall_clock: Clock | None = None,
        schedule: RetrySchedule = SVIX_SCHEDULE,
        rng: RandomSource | None = None,
        lanes: int = 8,
        batch: int = 50,
        flush_every: int = 50,
        lease: timedelta = timedelta(seconds=60),
        poll_interval: timedelta = timedelta(milliseconds=200),
        disable_after: timedelta = DEFAULT_DISABLE_AFTER,
        name: str = "webhook-dispatcher",
    ) -> None:
        if lanes < 1 or batch < 1 or flush_every < 1:
            raise ValueError("lanes, batch and flush_every must be at least 1")
        if lease < sender.timeout * 3:
            raise ValueError(f"lease {lease} is too short for attempts of up to {sender.timeout}: use 3 times that")
        self._queue = queue
        self._sender = sender
        self._clock = clock
        self._wall = wall_clock or SystemClock()  # webhook-timestamp: real time, whatever the clock
        self._fan_out = fan_out
        self._schedule = schedule
        self._rng: RandomSource = rng or random.SystemRandom()
        self._lanes = lanes
        self._batch = batch
        self._flush_every = flush_every
        self._lease = lease
        self._disable_after = disable_after
        self._pool = ThreadPoolExecutor(max_workers=lanes, thread_name_prefix=f"{name}-lane")
        self._busy: dict[str, Future] = {}
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self.totals = Totals()
        self._worker = PollingWorker(
            lambda: self.run_once(),
            name=name,
            label="webhook dispatcher",
            failure_message="webhook dispatch pass failed",
            poll_interval=poll_interval,
            logger=log,
            backlog=lambda: self.backlog(),
        )

    # -- passes ---------------------------------------------------------------------------------

    def run_once(self, *, wait: bool = False) -> bool:
        """Fan out, then start lanes on the free slots; True if it queued or started anything. With
        `wait`, wait for the lanes it started (tests)."""
        now = self._clock.now()
        fanned = self._fan_out(now)[0] if self._fan_out is not None else 0
        with self._lock:
            busy = [e for e, f in self._busy.items() if not f.done()]
            self._busy = {e: self._busy[e] for e in busy}
        free = self._lanes - len(busy)
        lanes = self._queue.claim_lanes(now, now + self._lease, free, self._batch, busy) if free > 0 else []
        started = []
        for lane in lanes:
            future = self._pool.submit(self._run_lane, lane)
            with self._lock:
                self._busy[lane.endpoint.endpoint_id] = future
            future.add_done_callback(lambda _f: self._worker.nudge())
            started.append(future)
        if wait:
            for future in started:
                future.result()
        return bool(fanned or lanes)

    def drain(self, passes: int = 100) -> None:
        """Wait for the lanes in flight (the worker's too), then run passes, waiting for their lanes,
        until one finds nothing to do (tests)."""
        for _ in range(passes):
            with self._lock:
                running = list(self._busy.values())
            for future in running:
                future.result()
            if not self.run_once(wait=True):
                return

    def backlog(self) -> Backlog:
        """Deliveries due now to enabled endpoints and the lag of the oldest (metrics, logs)."""
        return self._queue.backlog(self._clock.now())

    # -- a lane ---------------------------------------------------------------------------------

    def _run_lane(self, lane: LaneBatch) -> None:
        try:
            self._deliver(lane.endpoint, list(lane.claims))
        except Exception:
            log_failure(log, "webhook lane failed", {"endpoint_id": lane.endpoint.endpoint_id})

    def _deliver(self, endpoint: WebhookEndpoint, claims: list) -> None:
        records: list[Record] = []
        pending = list(claims)  # not attempted yet, in order
        while pending:
            if self._stopping.is_set():
                self._flush(endpoint, records)
                self._release(pending, self._clock.now())
                return
            now = self._clock.now()
            if pending[0].token.lease_until - now < self._lease / 2:
                self._flush(endpoint, records)
                records = []
                pending = self._renew(pending, now + self._lease)  # those taken over are dropped
                continue
            claim = pending.pop(0)
            record, unreachable = self._attempt(endpoint, claim)
            records.append(record)
            if unreachable and pending:
                self._flush(endpoint, records)
                self._release(pending, record.next_attempt_at or self._clock.now())
                return
            if len(records) >= self._flush_every:
                self._flush(endpoint, records)
                records = []
        self._flush(endpoint, records)

    def _attempt(self, endpoint: WebhookEndpoint, claim: Claimed) -> tuple[Record, bool]:
        attempt_time = self._clock.now()
        timestamp = int(self._wall.now().timestamp())
        headers = {
            "webhook-id": claim.event_id,
            "webhook-timestamp": str(timestamp),
            "webhook-signature": signature_header(
                endpoint.signing_secrets(attempt_time), claim.event_id, timestamp, claim.body
            ),
        }
        result = self._sender.send(endpoint.url, headers, claim.body)
        finished = self._clock.now()
        number = claim.token.attempts
        if result.delivered:
            status, next_at, delivered_at = STATUS_DELIVERED, None, finished
        else:
            delay = self._schedule.delay(number, self._rng)
            status = STATUS_PENDING if delay is not None else STATUS_FAILED
            next_at = finished + delay if delay is not None else None
            delivered_at = None
        attempt = DeliveryAttempt(
            attempt_id="",
            delivery_id=claim.token.id,
            endpoint_id=endpoint.endpoint_id,
            event_id=claim.event_id,
            attempt=number,
            attempt_time=attempt_time,
            duration=result.duration,
            http_status=result.http_status,
            error=result.error,
            next_attempt_time=next_at,
            trigger=claim.trigger,
        )
        record = Record(claim, status, next_at, attempt, delivered_at)
        unreachable = not result.delivered and result.http_status == 0
        return record, unreachable

    def _flush(self, endpoint: WebhookEndpoint, records: Sequence[Record]) -> None:
        if not records:
            return
        applied, disabled = self._queue.record(
            endpoint.endpoint_id, records, now=self._clock.now(), disable_after=self._disable_after
        )
        with self._lock:
            t = self.totals
            t.attempts += len(records)
            t.delivered += sum(1 for r in records if r.status == STATUS_DELIVERED)
            t.retried += sum(1 for r in records if r.status == STATUS_PENDING)
            t.given_up += sum(1 for r in records if r.status == STATUS_FAILED)
            t.disabled += int(disabled)
        for outcome, status in (
            ("delivered", STATUS_DELIVERED),
            ("retry", STATUS_PENDING),
            ("given_up", STATUS_FAILED),
        ):
            if count := sum(1 for r in records if r.status == status):
                WEBHOOK_DELIVERIES.labels(outcome).inc(count)
        for r, ok in zip(records, applied, strict=True):
            extra = {
                "endpoint_id": endpoint.endpoint_id,
                "event_id": r.claim.event_id,
                "attempt": r.attempt.attempt,
                "http_status": r.attempt.http_status,
            }
            if not ok:
                log.info("webhook claim was taken over; outcome not recorded", extra=extra)
            elif r.status == STATUS_FAILED:
                log.warning("webhook delivery given up", extra={**extra, "error": r.attempt.error})
            elif r.status == STATUS_PENDING:
                log.info(
                    "webhook delivery failed; will retry",
                    extra={**extra, "error": r.attempt.error, "next_attempt_at": r.next_attempt_at.isoformat()},
                )
        if disabled:
            log.warning(
                "webhook endpoint disabled: every attempt failed for too long",
                extra={"endpoint_id": endpoint.endpoint_id, "disable_after_s": self._disable_after.total_seconds()},
            )

    def _renew(self, claims: list, until: datetime) -> list:
        renewed = {t.id: t for t in self._queue.renew([c.token for c in claims], until)}
        return [_with_token(c, renewed[c.token.id]) for c in claims if c.token.id in renewed]

    def _release(self, claims: Sequence[Claimed], due_at: datetime) -> None:
        released = self._queue.release([c.token for c in claims], due_at)
        with self._lock:
            self.totals.released += released

    # -- the worker -----------------------------------------------------------------------------

    def start(self) -> None:
        self._stopping.clear()
        self._worker.start()

    def nudge(self) -> None:
        self._worker.nudge()

    def stop(self, timeout: float | None = None) -> None:
        """Stop claiming; lanes finish their current attempt and give back the rest."""
        self._stopping.set()
        self._worker.stop(timeout)
        self._pool.shutdown(wait=True)

    @property
    def running(self) -> bool:
        return self._worker.running


def _with_token(claim, token: LeaseToken):
    return replace(claim, token=token)
