"""The outbox of deliveries to the grant service: plain values and rules, no I/O.

A delivery is one revision of one aggregate (a subscription or a credit
currency), serialized as the grant service's Apply request, written in the same
transaction as the change it describes and sent later by the dispatcher
(catalog_service.service_layer.dispatcher).

Ordering rule: the deliveries of one aggregate are sent in revision order; the
dispatcher only ever sends an aggregate's lowest *pending* revision. A parked
(failed) revision does not block later ones: each revision carries the complete
state of the aggregate and the grant service keeps the highest revision it has
applied, so revision n+1, once delivered, supersedes a parked revision n.

A STALE answer (the grant service holds a newer revision) counts as delivered
only when that newer revision is one the catalog queued itself; a revision
above every one the catalog issued was never the catalog's, so the delivery is
parked for an operator (`judge_stale`).
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

KIND_SUBSCRIPTION = "subscription"
KIND_CREDIT_CURRENCY = "credit_currency"
KINDS = (KIND_SUBSCRIPTION, KIND_CREDIT_CURRENCY)

STATUS_PENDING = "pending"
STATUS_DELIVERED = "delivered"
STATUS_FAILED = "failed"


class OutcomeKind(enum.Enum):
    DELIVERED = "delivered"  # APPLIED, ALREADY_APPLIED or STALE: the grant service has it (or newer)
    RETRY = "retry"  # a transient failure: send again after a backoff
    PARKED = "parked"  # a permanent rejection: never sent again unless requeued


@dataclass(frozen=True, slots=True)
class DeliveryOutcome:
    kind: OutcomeKind
    detail: str = ""  # e.g. "APPLIED current_revision=3" or "INVALID_ARGUMENT: ... [reason=X]"
    code: str = ""  # gRPC status name of a failed call ("UNAVAILABLE"), "OK", or "" when not sent
    held_revision: int | None = None  # a STALE answer's current_revision: what the grant service holds

    @classmethod
    def delivered(cls, detail: str, *, held_revision: int | None = None) -> DeliveryOutcome:
        return cls(OutcomeKind.DELIVERED, detail, "OK", held_revision)

    @classmethod
    def retry(cls, detail: str, code: str = "") -> DeliveryOutcome:
        return cls(OutcomeKind.RETRY, detail, code)

    @classmethod
    def parked(cls, detail: str, code: str = "") -> DeliveryOutcome:
        return cls(OutcomeKind.PARKED, detail, code)


@dataclass(frozen=True, slots=True)
class ClaimedDelivery:
    """A pending delivery leased to one dispatcher until `lease_until`. The lease
    instant is also the fencing token of the claim: outcomes are recorded only
    while the row still carries it (see ports.DeliveryQueue)."""

    id: int
    kind: str
    aggregate_key: str
    revision: int
    payload: bytes
    attempts: int  # the number of this attempt, counting it (1 for the first)
    lease_until: datetime
    latest_revision: int  # the highest revision of the aggregate the catalog had queued when claimed
    trace_context: str | None = None  # the W3C traceparent of the call that queued it, if traced


def judge_stale(claim: ClaimedDelivery, outcome: DeliveryOutcome) -> DeliveryOutcome:
    """The outcome to record for a claim. A STALE answer names the revision the grant service holds:
    one the catalog queued (it superseded this one itself) makes the claim delivered; one above the
    catalog's latest was never issued by the catalog (a caller that reached the grant service's Apply
    methods), so the claim is parked with that reason instead of counting as delivered."""
    held = outcome.held_revision
    if outcome.kind is not OutcomeKind.DELIVERED or held is None or held <= claim.latest_revision:
        return outcome
    return DeliveryOutcome(
        OutcomeKind.PARKED,
        f"STALE: the grant service holds revision {held}, above the catalog's latest revision "
        f"{claim.latest_revision}: a revision the catalog never issued [reason=UNKNOWN_REVISION_HELD]",
        "OK",
        held,
    )


@dataclass(frozen=True, slots=True)
class DeliveryRecord:
    """What the handoff state is computed from: one outbox row without its payload."""

    revision: int
    status: str
    attempts: int
    last_error: str | None
    next_attempt_at: datetime
    delivered_at: datetime | None


@dataclass(frozen=True, slots=True)
class OutboxEntry:
    """One delivery as an operator sees it (ListHandoffs): the row without its payload."""

    id: int
    kind: str
    aggregate_key: str
    revision: int
    status: str
    attempts: int
    last_error: str | None
    next_attempt_at: datetime
    created_at: datetime
    delivered_at: datetime | None


class HandoffStatus(enum.Enum):
    NONE = "none"  # nothing was ever queued for the aggregate
    PENDING = "pending"  # some revision is still to be delivered (maybe retrying: see `reason`)
    DELIVERED = "delivered"  # the latest revision reached the grant service
    FAILED = "failed"  # the latest revision was rejected and parked: see `reason`


@dataclass(frozen=True, slots=True)
class LateChange:
    """A change of a delivered revision that the grant service applied at its "now" (`applied_time`)
    instead of the instant the catalog dated it (`requested_time`; None: an end time removed).
    `entitlement_key` is empty for the end time."""

    revision: int
    entitlement_key: str
    requested_time: datetime | None
    applied_time: datetime


@dataclass(frozen=True, slots=True)
class HandoffState:
    status: HandoffStatus
    latest_revision: int | None = None  # highest revision queued
    latest_delivered_revision: int | None = None  # highest revision delivered, None if none yet
    reason: str | None = None  # the last error of the revision that decides the status
    attempts: int = 0  # attempts of that revision
    next_attempt_at: datetime | None = None  # when a pending revision is tried next
    delivered_at: datetime | None = None  # when the latest delivered revision was delivered
    late_changes: tuple[LateChange, ...] = ()  # changes the grant service applied later than dated


def summarize(records: Iterable[DeliveryRecord]) -> HandoffState:
    """The handoff state of one aggregate from all its deliveries.

    PENDING if any revision is pending (reported for the lowest one, which is the
    one being sent); otherwise the status of the highest revision: DELIVERED, or
    FAILED when it was parked (even if an older one was delivered, since the
    grant service then holds an older state than the catalog).
    """
    rows = sorted(records, key=lambda r: r.revision)
    if not rows:
        return HandoffState(HandoffStatus.NONE)
    delivered = [r for r in rows if r.status == STATUS_DELIVERED]
    last_delivered = delivered[-1] if delivered else None
    common = {
        "latest_revision": rows[-1].revision,
        "latest_delivered_revision": last_delivered.revision if last_delivered else None,
        "delivered_at": last_delivered.delivered_at if last_delivered else None,
    }
    pending = [r for r in rows if r.status == STATUS_PENDING]
    if pending:
        head = pending[0]
        return HandoffState(
            HandoffStatus.PENDING,
            reason=head.last_error,
            attempts=head.attempts,
            next_attempt_at=head.next_attempt_at,
            **common,
        )
    latest = rows[-1]
    if latest.status == STATUS_FAILED:
        return HandoffState(HandoffStatus.FAILED, reason=latest.last_error, attempts=latest.attempts, **common)
    return HandoffState(HandoffStatus.DELIVERED, attempts=latest.attempts, **common)


@dataclass(frozen=True, slots=True)
class Resolution:
    """What to write back for a claimed delivery once its send is over."""

    claim: ClaimedDelivery
    status: str  # STATUS_PENDING (retry), STATUS_DELIVERED or STATUS_FAILED (parked)
    attempts: int  # attempts so far, this one included (counted when claimed)
    next_attempt_at: datetime
    last_error: str | None
    delivered_at: datetime | None = None
