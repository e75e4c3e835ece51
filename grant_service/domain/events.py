"""Credit events: the facts of the grant service's durable event log (grants that became
effective, expiries, voids, depletions, balance alerts, rejected usage, subscription changes).

An event is made by the use case whose change it reports and written in that change's
transaction. Its payload is a plain mapping in the field names of its proto message
(grant_service.v1 CreditsGranted, CreditsExpired ...: decimals as exact strings, instants as
aware datetimes), so the entrypoints turn it into the one schema that the stream, the list and
the webhooks share. Its `dedupe_key` is unique in the log: the same fact written again (by a
replica, a retry, a catch-up after a crash) is skipped, never recorded twice."""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from credit_common.ids import derived_id
from grant_service.domain.clocks import ClockKey


class EventType(enum.Enum):
    """The kinds of event; the value is the proto enum's suffix (CREDIT_EVENT_TYPE_<value>)."""

    CREDITS_GRANTED = "CREDITS_GRANTED"
    CREDITS_EXPIRED = "CREDITS_EXPIRED"
    GRANT_VOIDED = "GRANT_VOIDED"
    GRANT_DEPLETED = "GRANT_DEPLETED"
    BALANCE_LOW = "BALANCE_LOW"
    BALANCE_DEPLETED = "BALANCE_DEPLETED"
    BALANCE_RECOVERED = "BALANCE_RECOVERED"
    USAGE_REJECTED = "USAGE_REJECTED"
    SUBSCRIPTION_CHANGED = "SUBSCRIPTION_CHANGED"
    SUBSCRIPTION_ENDED = "SUBSCRIPTION_ENDED"


# The payload field of CreditEvent that each type sets.
PAYLOAD_OF: dict[EventType, str] = {
    EventType.CREDITS_GRANTED: "credits_granted",
    EventType.CREDITS_EXPIRED: "credits_expired",
    EventType.GRANT_VOIDED: "grant_voided",
    EventType.GRANT_DEPLETED: "grant_depleted",
    EventType.BALANCE_LOW: "balance_alert",
    EventType.BALANCE_DEPLETED: "balance_alert",
    EventType.BALANCE_RECOVERED: "balance_alert",
    EventType.USAGE_REJECTED: "usage_rejected",
    EventType.SUBSCRIPTION_CHANGED: "subscription_changed",
    EventType.SUBSCRIPTION_ENDED: "subscription_changed",
}


@dataclass(slots=True)
class NewEvent:
    """An event to append to the log, in the transaction of the change it reports. Not frozen (as
    StoredSchedule): a frozen dataclass's constructor sets each field through object.__setattr__,
    and a renewal storm makes two of these per grant; nothing changes one once made."""

    event_id: str
    type: EventType
    customer_key: str
    currency_key: str
    clock_key: ClockKey
    occurred_time: datetime
    # Unique in the log: the same fact has the same key (e.g. "CREDITS_GRANTED:grt_...").
    dedupe_key: str
    payload: Mapping[str, Any]


@dataclass(frozen=True, slots=True, order=True)
class EventPosition:
    """Where an event is in the log: the log is read in (txid, seq) order. `txid` is the id of the
    writing transaction on PostgreSQL (0 on SQLite, whose single writer commits in seq order);
    `seq` is the row's number, taken at insert. See docs/architecture.md#the-event-log."""

    txid: int
    seq: int


@dataclass(frozen=True, slots=True)
class StoredEvent:
    """An event as the log holds it: its position and when it was recorded (real time)."""

    position: EventPosition
    recorded_time: datetime
    event: NewEvent


@dataclass(frozen=True, slots=True)
class EventFilter:
    """Which events a reader wants: empty fields are no filter; `start`/`end` bound occurred_time
    ([start, end))."""

    customer_key: str = ""
    currency_key: str = ""
    types: frozenset[EventType] = frozenset()
    start: datetime | None = None
    end: datetime | None = None

    @property
    def indexed(self) -> bool:
        """Whether the log has an index for the whole filter (none, or only a customer): otherwise a
        read examines the rows in log order and keeps those that match, and must bound how many."""
        return not (self.currency_key or self.types or self.start is not None or self.end is not None)

    def matches(self, event: NewEvent) -> bool:
        return (
            (not self.customer_key or event.customer_key == self.customer_key)
            and (not self.currency_key or event.currency_key == self.currency_key)
            and (not self.types or event.type in self.types)
            and (self.start is None or event.occurred_time >= self.start)
            and (self.end is None or event.occurred_time < self.end)
        )


@dataclass(frozen=True, slots=True)
class EventScan:
    """What one read of the log found: the matching events in log order, and the last position it
    examined (None: the log holds nothing after the read's start). A read whose filter the log
    cannot look up by index examines a bounded number of rows; `complete` is False when it stopped
    there, with more of the log to examine after `examined`."""

    events: list[StoredEvent]
    examined: EventPosition | None
    complete: bool


# ------------------------------------------------------------------------------ the events' makers
# Each takes what the change knows (a grant as the ledger sees it: grant_id, customer_key,
# currency_key, subscription_id, entitlement_key, period_index, amount, effective_time,
# expire_time; a NewGrant or a Grant). A fact that happens once (a grant issued, expired, voided or
# depleted; a subscription's revision or end) has its id derived from its dedupe key, so that the
# log's unique event id is its dedupe as well; one that may happen any number of times (a refusal,
# a balance crossing) takes a fresh id from the caller and its key is made of it.


def fact(
    type_: EventType,
    about: str,
    customer_key: str,
    currency_key: str,
    clock_key: ClockKey,
    occurred: datetime,
    payload: Mapping[str, Any],
    *,
    qualifier: str = "",
) -> NewEvent:
    """An event of a fact that happens once, about the thing whose id is `about` (a grant, a
    subscription; `qualifier` tells apart the facts of one type about it, e.g. ":<revision>"): its
    dedupe key is "TYPE:<about><qualifier>" and its id is derived from that key, in the time order
    of what it is about (credit_common.ids.derived_id)."""
    dedupe_key = f"{type_._value_}:{about}{qualifier}"  # _value_: .value is a property, slow in a storm
    event_id = derived_id("evt", dedupe_key, ordered_by=about)
    return NewEvent(event_id, type_, customer_key, currency_key, clock_key, occurred, dedupe_key, payload)


def credits_granted(grant: Any, clock_key: ClockKey, source: str) -> NewEvent:
    one_off = source == "ONE_OFF"
    return fact(
        EventType.CREDITS_GRANTED,
        grant.grant_id,
        grant.customer_key,
        grant.currency_key,
        clock_key,
        grant.effective_time,
        {
            "grant_id": grant.grant_id,
            "source": f"GRANT_SOURCE_{source}",
            "subscription_id": grant.subscription_id or "",
            "entitlement_key": "" if one_off else grant.entitlement_key or "",
            "period_index": 0 if one_off else grant.period_index or 0,
            "amount": grant.amount,
            "effective_time": grant.effective_time,
            "expire_time": grant.expire_time,
        },
    )


def credits_expired(grant: Any, clock_key: ClockKey, remainder: Any) -> NewEvent:
    return fact(
        EventType.CREDITS_EXPIRED,
        grant.grant_id,
        grant.customer_key,
        grant.currency_key,
        clock_key,
        grant.expire_time,
        {
            "grant_id": grant.grant_id,
            "subscription_id": grant.subscription_id or "",
            "entitlement_key": grant.entitlement_key or "",
            "amount": grant.amount,
            "expired_amount": remainder,
            "expire_time": grant.expire_time,
        },
    )


def grant_voided(grant: Any, clock_key: ClockKey, remainder: Any, now: datetime, reason: str) -> NewEvent:
    return fact(
        EventType.GRANT_VOIDED,
        grant.grant_id,
        grant.customer_key,
        grant.currency_key,
        clock_key,
        now,
        {
            "grant_id": grant.grant_id,
            "subscription_id": grant.subscription_id or "",
            "voided_amount": remainder,
            "reason": reason,
        },
    )


def grant_depleted(
    grant_id: str,
    customer_key: str,
    currency_key: str,
    subscription_id: str | None,
    amount: Any,
    clock_key: ClockKey,
    now: datetime,
    usage_id: str,
) -> NewEvent:
    return fact(
        EventType.GRANT_DEPLETED,
        grant_id,
        customer_key,
        currency_key,
        clock_key,
        now,
        {"grant_id": grant_id, "subscription_id": subscription_id or "", "amount": amount, "usage_id": usage_id},
    )


def usage_rejected(
    customer_key: str,
    currency_key: str,
    clock_key: ClockKey,
    now: datetime,
    request_id: str,
    feature_key: str,
    quantity: Any,
    requested: Any,
    available: Any,
    event_id: str,
) -> NewEvent:
    return NewEvent(
        event_id,
        EventType.USAGE_REJECTED,
        customer_key,
        currency_key,
        clock_key,
        now,
        f"USAGE_REJECTED:{event_id}",  # each refusal is a fact of its own
        {
            "request_id": request_id,
            "feature_key": feature_key,
            "quantity": quantity,
            "requested_credits": requested,
            "available_credits": available,
        },
    )


@dataclass(frozen=True, slots=True)
class LateChange:
    """A change applied late (ClampedChange): `entitlement_key` empty for the end time."""

    entitlement_key: str
    requested_time: datetime | None
    applied_time: datetime


def subscription_changed(
    type_: EventType,
    subscription_id: str,
    customer_key: str,
    clock_key: ClockKey,
    occurred: datetime,
    revision: int,
    previous_revision: int,
    end_time: datetime | None,
    late: Sequence[LateChange],
    withdrawn: Sequence[str],
) -> NewEvent:
    return fact(
        type_,
        subscription_id,
        customer_key,
        "",
        clock_key,
        occurred,
        {
            "subscription_id": subscription_id,
            "revision": revision,
            "previous_revision": previous_revision,
            "end_time": end_time,
            "clamped_changes": [
                {
                    "entitlement_key": change.entitlement_key,
                    "requested_time": change.requested_time,
                    "applied_time": change.applied_time,
                }
                for change in late
            ],
            "withdrawn_grant_ids": list(withdrawn),
        },
        qualifier=f":{revision}" if type_ is EventType.SUBSCRIPTION_CHANGED else "",
    )
