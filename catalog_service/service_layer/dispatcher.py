"""The outbox dispatcher: delivers queued subscription and currency revisions
to the grant service, reliably and in revision order per aggregate.

One pass (`Dispatcher.run_once`):
1. claims, in one short write transaction, a bounded batch of due pending
   deliveries, only the lowest pending revision of each aggregate, leased until
   now + `lease`, counting the attempt (see catalog_service.adapters.outbox_sql);
2. sends them outside any transaction, in calls of up to `send_batch_size`
   deliveries of one kind (the grant service applies a batch of subscription
   revisions in one transaction), up to `send_concurrency` calls at a time, each
   call within the delivery client's deadline;
3. records the outcomes in one write transaction: delivered (status, delivered_at);
   retry (next_attempt_at = now + backoff(attempts), last_error); parked
   (status failed, last_error with the status code and message, one warning in
   the log; never claimed again unless requeued by an operator). A STALE answer
   naming a revision above every one the catalog queued is parked too, with an
   error in the log (catalog_service.domain.outbox.judge_stale).

The worker: `start()` runs passes in the shared loop of
credit_common.delivery.worker (a daemon thread, a new pass every
`poll_interval`, at once after a pass that delivered something (the next
revisions of those aggregates may be waiting), or at once when `nudge()`d: call
it right after committing a transaction that queued a delivery). `stop()` wakes
the thread, waits for its pass to finish (bounded by the call deadline) and
joins it. All state is in the database, so a restarted process carries on where the
last one stopped; several processes (replicas) may run dispatchers on one
PostgreSQL database.

Exactly-once, in effect: a revision is sent again only if the dispatcher that
claimed it died (or stalled longer than the lease) before recording the
outcome, or if the call failed in a way that hides whether the grant service
applied it (DEADLINE_EXCEEDED). The grant service is idempotent by (key,
revision), so such a repeat answers ALREADY_APPLIED and changes nothing.
"""

from __future__ import annotations

import logging
import math
import random
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta

from catalog_service.domain.outbox import (
    KINDS,
    STATUS_DELIVERED,
    STATUS_FAILED,
    STATUS_PENDING,
    ClaimedDelivery,
    DeliveryOutcome,
    OutcomeKind,
    Resolution,
    judge_stale,
)
from catalog_service.service_layer.ports import Delivery, DeliveryQueue
from credit_common import tracing
from credit_common.backoff import BackoffPolicy, RandomSource
from credit_common.clock import Clock
from credit_common.delivery.leases import Backlog
from credit_common.delivery.worker import PollingWorker
from credit_common.metrics import OUTBOX_ATTEMPTS, OUTBOX_OUTCOMES

log = logging.getLogger("catalog_service.dispatcher")

DEFAULT_BATCH_SIZE = 200  # deliveries claimed per pass
DEFAULT_SEND_BATCH_SIZE = 100  # deliveries per call to the grant service


@dataclass(frozen=True, slots=True)
class PassReport:
    claimed: int = 0
    delivered: int = 0
    retried: int = 0
    parked: int = 0
    fenced: int = 0  # outcomes not written because another claim took over

    def __add__(self, other: PassReport) -> PassReport:
        return PassReport(
            self.claimed + other.claimed,
            self.delivered + other.delivered,
            self.retried + other.retried,
            self.parked + other.parked,
            self.fenced + other.fenced,
        )


class Dispatcher:
    def __init__(
        self,
        outbox: DeliveryQueue,
        delivery: Delivery,
        *,
        clock: Clock,
        backoff: BackoffPolicy | None = None,
        rng: RandomSource | None = None,
        batch_size: int = DEFAULT_BATCH_SIZE,
        send_batch_size: int = DEFAULT_SEND_BATCH_SIZE,
        send_concurrency: int = 4,
        lease: timedelta = timedelta(seconds=60),
        poll_interval: timedelta = timedelta(milliseconds=200),
        name: str = "outbox-dispatcher",
        backlog: Callable[[], Backlog] | None = None,
    ) -> None:
        if batch_size < 1 or send_batch_size < 1 or send_concurrency < 1:
            raise ValueError("batch_size, send_batch_size and send_concurrency must be at least 1")
        # A healthy dispatcher must finish sending its batch inside the lease, or
        # another one could claim the same rows while the first is still sending.
        # A batch of each kind may need a call of its own.
        calls = math.ceil(batch_size / send_batch_size) + len(KINDS) - 1
        worst_send = delivery.deadline * math.ceil(calls / send_concurrency)
        if lease < worst_send * 2:
            raise ValueError(
                f"lease {lease} is too short: a batch of {batch_size} sent {send_batch_size} per call, "
                f"{send_concurrency} calls at a time, with a {delivery.deadline} deadline may take {worst_send}; "
                "use at least twice that"
            )
        self._outbox = outbox
        self._delivery = delivery
        self._clock = clock
        self._backoff = backoff or BackoffPolicy()
        self._rng: RandomSource = rng or random.SystemRandom()
        self._batch_size = batch_size
        self._lease = lease
        self._poll_interval = poll_interval
        self._name = name
        self._send_batch_size = send_batch_size
        self._send_concurrency = send_concurrency
        self._pool: ThreadPoolExecutor | None = None
        self._totals = PassReport()
        self._lifecycle = threading.Lock()
        self._worker = PollingWorker(
            lambda: self.run_once().delivered > 0,
            name=name,
            label="outbox dispatcher",
            failure_message="outbox dispatch pass failed",
            poll_interval=poll_interval,
            backoff=self._backoff,
            rng=self._rng,
            logger=log,
            backlog=backlog,
        )

    # -- one pass -------------------------------------------------------------------------------

    def run_once(self) -> PassReport:
        """Claim, send and record one batch. Safe to call from several threads or processes."""
        now = self._clock.now()
        claims = self._outbox.claim_due(now, now + self._lease, self._batch_size)
        if not claims:
            return PassReport()
        calls = self._calls(claims)
        if self._send_concurrency > 1 and len(calls) > 1:
            sent = list(self._executor().map(self._send, calls))
        else:
            sent = [self._send(call) for call in calls]
        outcome_of = {
            claim.id: outcome
            for call, outcomes in zip(calls, sent, strict=True)
            for claim, outcome in zip(call, outcomes, strict=True)
        }
        outcomes = [judge_stale(claim, outcome_of[claim.id]) for claim in claims]
        finished = self._clock.now()
        resolutions = [self._resolve(claim, outcome, finished) for claim, outcome in zip(claims, outcomes, strict=True)]
        applied = self._outbox.record(resolutions)
        counts = {OutcomeKind.DELIVERED: 0, OutcomeKind.RETRY: 0, OutcomeKind.PARKED: 0}
        fenced = 0
        for claim, outcome in zip(claims, outcomes, strict=True):
            OUTBOX_ATTEMPTS.labels(claim.kind).inc()
            OUTBOX_OUTCOMES.labels(claim.kind, outcome.kind.value).inc()
        for resolution, outcome, ok in zip(resolutions, outcomes, applied, strict=True):
            if ok:
                counts[outcome.kind] += 1
                self._log(resolution, outcome)
            else:
                fenced += 1
                log.info(
                    "outbox claim was taken over; outcome not recorded",
                    extra=_fields(resolution.claim, outcome=outcome.kind.value, detail=outcome.detail),
                )
        report = PassReport(
            claimed=len(claims),
            delivered=counts[OutcomeKind.DELIVERED],
            retried=counts[OutcomeKind.RETRY],
            parked=counts[OutcomeKind.PARKED],
            fenced=fenced,
        )
        with self._lifecycle:
            self._totals = self._totals + report
        return report

    def _executor(self) -> ThreadPoolExecutor:
        with self._lifecycle:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(
                    max_workers=self._send_concurrency, thread_name_prefix=f"{self._name}-send"
                )
            return self._pool

    @property
    def totals(self) -> PassReport:
        """What this dispatcher has done since it was created (for metrics and tests)."""
        return self._totals

    def _calls(self, claims: Sequence[ClaimedDelivery]) -> list[list[ClaimedDelivery]]:
        """The claims grouped by kind into calls of at most `send_batch_size`. A claim holds an
        aggregate's lowest pending revision only, so no call has two revisions of one aggregate."""
        by_kind: dict[str, list[ClaimedDelivery]] = {}
        for claim in claims:
            by_kind.setdefault(claim.kind, []).append(claim)
        size = self._send_batch_size
        return [group[i : i + size] for group in by_kind.values() for i in range(0, len(group), size)]

    def _send(self, call: Sequence[ClaimedDelivery]) -> list[DeliveryOutcome]:
        try:
            # The trace of the call that queued them goes on (credit_common.tracing): one trace from
            # ProvisionSubscription to ApplySubscription, whichever attempt or process delivers it.
            with tracing.continued(
                [claim.trace_context for claim in call], f"outbox deliver {call[0].kind}", deliveries=len(call)
            ):
                outcomes = self._delivery.deliver_many(call[0].kind, [claim.payload for claim in call])
            if len(outcomes) != len(call):
                raise RuntimeError(f"{len(outcomes)} outcomes for {len(call)} deliveries")
            return outcomes
        except Exception as error:  # a bug in the client must not lose the deliveries: retry them
            log.exception("outbox delivery raised", extra=_fields(call[0], deliveries=len(call)))
            return [DeliveryOutcome.retry(f"{type(error).__name__}: {error}")] * len(call)

    def _resolve(self, claim: ClaimedDelivery, outcome: DeliveryOutcome, now: datetime) -> Resolution:
        attempts = claim.attempts
        if outcome.kind is OutcomeKind.DELIVERED:
            return Resolution(claim, STATUS_DELIVERED, attempts, now, None, delivered_at=now)
        if outcome.kind is OutcomeKind.PARKED:
            return Resolution(claim, STATUS_FAILED, attempts, now, outcome.detail)
        delay = self._backoff.delay(attempts, self._rng)
        return Resolution(claim, STATUS_PENDING, attempts, now + delay, outcome.detail)

    def _log(self, resolution: Resolution, outcome: DeliveryOutcome) -> None:
        claim = resolution.claim
        if outcome.kind is OutcomeKind.DELIVERED:
            log.info(
                "outbox delivery delivered", extra=_fields(claim, attempts=resolution.attempts, detail=outcome.detail)
            )
        elif outcome.kind is OutcomeKind.PARKED and outcome.held_revision is not None:
            log.error(
                "the grant service holds a revision the catalog never issued; parked",
                extra=_fields(
                    claim,
                    attempts=resolution.attempts,
                    held_revision=outcome.held_revision,
                    latest_revision=claim.latest_revision,
                    error=outcome.detail,
                ),
            )
        elif outcome.kind is OutcomeKind.PARKED:
            log.warning(
                "outbox delivery rejected by the grant service; parked",
                extra=_fields(claim, attempts=resolution.attempts, code=outcome.code, error=outcome.detail),
            )
        else:
            log.info(
                "outbox delivery failed; will retry",
                extra=_fields(
                    claim,
                    attempts=resolution.attempts,
                    code=outcome.code,
                    error=outcome.detail,
                    next_attempt_at=resolution.next_attempt_at.isoformat(),
                ),
            )

    # -- the worker -----------------------------------------------------------------------------

    def start(self) -> None:
        """Run passes in a background thread until `stop()` (credit_common.delivery.worker)."""
        self._worker.start()

    def nudge(self) -> None:
        """Run a pass now instead of at the next poll (cheap; safe from any thread)."""
        self._worker.nudge()

    def stop(self, timeout: float | None = None) -> None:
        """Stop the worker: the pass in progress finishes (calls are bounded by the
        deadline), then the thread is joined. Idempotent."""
        self._worker.stop(timeout)
        with self._lifecycle:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True)

    @property
    def running(self) -> bool:
        return self._worker.running

    @property
    def completed_passes(self) -> int:
        """Passes the worker thread has completed (for health checks and tests)."""
        return self._worker.completed_passes


def _fields(claim: ClaimedDelivery, **more: object) -> dict[str, object]:
    return {
        "delivery_id": claim.id,
        "kind": claim.kind,
        "aggregate_key": claim.aggregate_key,
        "revision": claim.revision,
        **more,
    }
