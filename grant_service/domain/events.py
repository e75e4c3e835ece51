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
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any


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


@dataclass(frozen=True, slots=True)
class NewEvent:
    """An event to append to the log, in the transaction of the change it reports."""

    event_id: str
    type: EventType
    customer_key: str
    currency_key: str
    clock_key: str
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

    def matches(self, event: NewEvent) -> bool:
        return (
            (not self.customer_key or event.customer_key == self.customer_key)
            and (not self.currency_key or event.currency_key == self.currency_key)
            and (not self.types or event.type in self.types)
            and (self.start is None or event.occurred_time >= self.start)
            and (self.end is None or event.occurred_time < self.end)
        )
