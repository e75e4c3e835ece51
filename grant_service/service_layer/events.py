"""ListEvents and WatchEvents: the credit event log read in log order, by page or as a stream.

A cursor names a position in one log: "<log id>.<txid>.<seq>" in URL-safe base64, so that a
cursor of another deployment's log (another log id) or a made-up one is refused with
INVALID_ARGUMENT (INVALID_CURSOR), never misread. The stream reads what follows its position,
sends it, then waits for a commit that wrote events (this process's own, notified at once) or at
most the poll interval (other replicas' commits), and sends a heartbeat when nothing else was sent
for a heartbeat interval. It never blocks longer than the poll interval between two checks that
its caller is still there."""

from __future__ import annotations

import base64
import binascii
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime

from credit_common.errors import FieldViolation, InvalidArgument
from credit_common.pagination import PageRequest
from grant_service.domain.events import EventFilter, EventPosition, EventScan, StoredEvent
from grant_service.service_layer.context import GrantContext

READ_BATCH = 500
# After a commit that wrote events, a read may find nothing new: on PostgreSQL its events wait below
# the high-water mark until every older transaction has ended (a few ms under load). The stream looks
# again after these delays, then at its poll: at most two reads more per signal, and its events
# arrive within about 30 ms of the older transactions' end instead of at the next poll.
HELD_BACK_RETRIES_S = (0.01, 0.02)
_MAX_CURSOR_CHARS = 200


@dataclass(frozen=True, slots=True)
class EventWithCursor:
    stored: StoredEvent
    cursor: str


@dataclass(frozen=True, slots=True)
class Heartbeat:
    time: datetime
    cursor: str


def encode_cursor(log_id: str, position: EventPosition) -> str:
    text = f"{log_id}.{position.txid}.{position.seq}"
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


def invalid_cursor(description: str, field: str = "cursor") -> InvalidArgument:
    return InvalidArgument(
        f"{field} {description}",
        reason="INVALID_CURSOR",
        violations=[FieldViolation(field, description, "INVALID_CURSOR")],
    )


def decode_cursor(cursor: str, log_id: str, field: str = "cursor") -> EventPosition | None:
    """The position of `cursor` in the log `log_id` (None for the empty cursor: the log's start)."""
    if not cursor:
        return None
    not_ours = "is not a cursor of this service's event log"
    if len(cursor) > _MAX_CURSOR_CHARS:
        raise invalid_cursor(not_ours, field)
    try:
        text = base64.urlsafe_b64decode(cursor.encode("ascii") + b"===").decode("ascii")
    except (ValueError, binascii.Error):  # UnicodeError is a ValueError
        raise invalid_cursor(not_ours, field) from None
    parts = text.split(".")
    if len(parts) != 3 or not all(p.isdigit() and p.isascii() for p in parts[1:]):
        raise invalid_cursor(not_ours, field)
    if parts[0] != log_id:
        raise invalid_cursor("is a cursor of another event log (another deployment or database)", field)
    txid, seq = int(parts[1]), int(parts[2])
    if txid >= 2**63 or seq >= 2**63:
        raise invalid_cursor(not_ours, field)
    return EventPosition(txid, seq)


def log_id(ctx: GrantContext) -> str:
    return ctx.transactions.read(lambda uow: uow.events.log_id())


def list_events(ctx: GrantContext, where: EventFilter, page: PageRequest) -> tuple[list[EventWithCursor], str]:
    """A page of events. A filter the log has no index for examines a bounded part of the log per
    page (EventFilter.indexed), so a page may hold fewer than `page.size` events, none even, and
    still have a next page: the caller pages on while the token is not empty."""
    after = EventPosition(*page.after) if page.after is not None else None

    def work(uow) -> tuple[str, EventScan]:
        return uow.events.log_id(), uow.events.scan(after, page.size + 1, where)

    log, found = ctx.transactions.read(work)
    shown, token = page.cut(found.events, lambda e: (e.position.txid, e.position.seq))
    if not token and not found.complete and found.examined is not None:
        token = page.token_after((found.examined.txid, found.examined.seq))
    return [EventWithCursor(e, encode_cursor(log, e.position)) for e in shown], token


def check_cursor(ctx: GrantContext, cursor: str) -> tuple[str, EventPosition | None]:
    """The log's id and the position of `cursor` in it (INVALID_CURSOR if it is not one of its)."""
    log = log_id(ctx)
    return log, decode_cursor(cursor, log)


def watch_events(
    ctx: GrantContext,
    log: str,
    position: EventPosition | None,
    where: EventFilter,
    is_active: Callable[[], bool],
    *,
    heartbeat_s: float,
    poll_s: float,
) -> Iterator[EventWithCursor | Heartbeat]:
    """Every event after `position` that matches `where`, then each one as it commits, with a
    heartbeat after `heartbeat_s` without a message; until `is_active()` is false."""
    cursor = encode_cursor(log, position) if position is not None else ""
    last_sent = time.monotonic()
    soon = 0  # looks left after a signal that the read did not answer (HELD_BACK_RETRIES_S)
    while is_active():
        generation = ctx.transactions.event_generation()
        found = ctx.transactions.read(lambda uow, after=position: uow.events.scan(after, READ_BATCH, where))
        for stored in found.events:
            position = stored.position
            cursor = encode_cursor(log, position)
            yield EventWithCursor(stored, cursor)
        if found.events:
            last_sent = time.monotonic()
        if found.examined is not None and found.examined != position:
            position = found.examined  # rows examined that did not match: not read again
            cursor = encode_cursor(log, position)
        quiet = time.monotonic() - last_sent
        if quiet >= heartbeat_s:
            yield Heartbeat(ctx.clock.now(), cursor)
            last_sent, quiet = time.monotonic(), 0.0
        if not found.complete:
            continue  # more of the log to read or examine now
        wait = max(0.0, min(poll_s, heartbeat_s - quiet))
        if found.events:
            soon = 0
        elif soon:
            wait = min(wait, HELD_BACK_RETRIES_S[len(HELD_BACK_RETRIES_S) - soon])
            soon -= 1
        ctx.transactions.wait_for_events(generation, wait)
        if ctx.transactions.event_generation() != generation:
            soon = len(HELD_BACK_RETRIES_S)
