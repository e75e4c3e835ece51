"""The event log's SQL (service_layer/ports.py EventRepository): append events skipping those
already written (their dedupe key), and read them in log order below the high-water mark.

The log order is (txid, seq). On PostgreSQL `seq` is taken at insert, which is not commit order:
a transaction that inserted seq 7 may commit after one that inserted seq 9. So each row also
holds its transaction's id (`txid`, the column's server default pg_current_xact_id()), and a
reader reads only rows whose txid is below pg_snapshot_xmin(pg_current_snapshot()): every
transaction below that is over, and every transaction still running or yet to write has a txid
at or above it, hence after anything read. On SQLite one writer at a time commits in seq order,
and txid is always 0. docs/architecture.md#the-event-log."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from decimal import Decimal
from enum import Enum
from typing import Any

import psycopg
from sqlalchemy import BigInteger, Engine, Select, Text, cast, event, func, select, text, tuple_
from sqlalchemy.orm import Session

from credit_common.clock import Clock
from credit_common.db.bulk import insert_columns_ignoring_conflicts
from credit_common.decimals import format_decimal
from grant_service.adapters.locking import is_postgres
from grant_service.adapters.orm import EVENT_LOG, EVENTS, EventRow
from grant_service.domain.events import EventFilter, EventPosition, EventScan, EventType, NewEvent, StoredEvent

WROTE_EVENTS = "credit_grants.wrote_events"  # session.info: this transaction wrote events
NOTIFY_CHANNEL = "credit_grants_events"
# The most rows of the log one read examines for a filter the log has no index for (a type, a
# currency, a time range): such a read costs what one of an indexed filter does, and a stream or a
# page continues after the rows examined (docs/architecture.md#the-event-log).
SCAN_ROWS = 2000
_NOTIFY = text(f"SELECT pg_notify('{NOTIFY_CHANNEL}', '')")


def wrote_events(session: Session) -> None:
    """Note that the session's transaction wrote events: its commit wakes this process's streams
    (EventSignal), and on PostgreSQL every process's (a NOTIFY, delivered at commit: EventListener)."""
    if session.info.get(WROTE_EVENTS):
        return
    session.info[WROTE_EVENTS] = True
    if is_postgres(session):
        session.execute(_NOTIFY)


class EventListener:
    """PostgreSQL: a thread that LISTENs on its own connection and signals this process's streams
    when any process (another replica, another server process) commits events, so that they read
    at once rather than at their next poll. While the database is away it retries every second;
    the streams' poll covers the gap."""

    def __init__(self, engine: Engine, signal: EventSignal) -> None:
        self._conninfo = engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
        self._signal = signal
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name="credit-events-listener", daemon=True)

    def start(self) -> Callable[[], None]:
        self._thread.start()
        return self.stop

    def stop(self) -> None:
        self._stopped.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        while not self._stopped.is_set():
            try:
                with psycopg.connect(self._conninfo, autocommit=True, connect_timeout=5) as connection:
                    connection.execute(f"LISTEN {NOTIFY_CHANNEL}")
                    self._signal.committed()  # what committed while nobody listened: read it now
                    while not self._stopped.is_set():
                        for _ in connection.notifies(timeout=0.5, stop_after=1):
                            self._signal.committed()
            except psycopg.Error:
                self._stopped.wait(1.0)


class EventSignal:
    """Tells this process's WatchEvents streams that a transaction that wrote events has committed
    (the write sessions' after_commit), so that they read at once instead of at their next poll."""

    def __init__(self) -> None:
        self._condition = threading.Condition()
        self._generation = 0

    @property
    def generation(self) -> int:
        return self._generation

    def committed(self) -> None:
        with self._condition:
            self._generation += 1
            self._condition.notify_all()

    def wait(self, generation: int, timeout_s: float) -> None:
        with self._condition:
            self._condition.wait_for(lambda: self._generation != generation, timeout=timeout_s)

    def listen(self, sessions: Any) -> None:
        """Signal after each commit of a session of `sessions` (a sessionmaker) that wrote events."""

        def after_commit(session: Session) -> None:
            if session.info.pop(WROTE_EVENTS, False):
                self.committed()

        def after_rollback(session: Session) -> None:
            session.info.pop(WROTE_EVENTS, None)

        event.listen(sessions, "after_commit", after_commit)
        event.listen(sessions, "after_soft_rollback", lambda session, previous: after_rollback(session))


def _encode(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat().replace("+00:00", "Z")
    if isinstance(value, Decimal):
        return format_decimal(value)
    if isinstance(value, Enum):
        return value.value
    raise TypeError(f"cannot store {type(value).__name__} in an event payload")


def encode_payload(payload: Any) -> str:
    """The payload as JSON: instants as RFC 3339 UTC strings, decimals as exact strings (what the
    proto JSON mapping of the payload message reads)."""
    return json.dumps(payload, default=_encode, separators=(",", ":"))


_JSON = json.JSONEncoder(separators=(",", ":"))
_STRING = json.encoder.encode_basestring_ascii  # what json.dumps writes for a str (ensure_ascii)


def _value_text(value: Any) -> str:
    kind = value.__class__
    if kind is str:
        return _STRING(value)
    if kind is dict or kind is list or kind is tuple:
        return encode_payload(value)
    return _JSON.encode(value if value is None or kind is bool or kind is int else _encode(value))


def _field_texts(values: list[Any]) -> list[str]:
    """One field's values in a batch of payloads, as JSON: by one C-level map where they are all
    strings or all integers, once where they are all the same (a storm's times and amounts)."""
    kinds = set(map(type, values))
    if len(kinds) == 1:
        kind = kinds.pop()
        if kind is str:
            return list(map(_STRING, values))
        if kind is int:
            return list(map(int.__repr__, values))
        if kind is not dict and kind is not list and values.count(values[0]) == len(values):
            return [_value_text(values[0])] * len(values)
    texts: dict[tuple[type, Any], str] = {}  # each distinct instant or decimal converted once
    out = []
    for value in values:
        kind = value.__class__
        if kind is str or kind is dict or kind is list or kind is tuple:  # no conversion to save, or unhashable
            out.append(_value_text(value))
            continue
        key = (kind, value)  # by type too: 1 == Decimal(1) == True
        found = texts.get(key)
        if found is None:
            found = texts[key] = _value_text(value)
        out.append(found)
    return out


def encode_payloads(payloads: Sequence[Mapping[str, Any]]) -> list[str]:
    """Each payload as `encode_payload` writes it (tested), faster for a batch: the payloads of one
    shape (the same field names in the same order: one event type's) are written a field at a time
    (`_field_texts`), then each through one format string of its field names. Encoding a payload at
    a time, a value at a time, was most of what a storm's events cost in Python (docs/performance.md)."""
    shapes = list(map(tuple, payloads))
    groups: dict[tuple[str, ...], list[int]] = {}
    if shapes and shapes.count(shapes[0]) == len(shapes):  # a storm: one shape
        groups[shapes[0]] = list(range(len(payloads)))
    else:
        for i, shape in enumerate(shapes):
            groups.setdefault(shape, []).append(i)
    texts = [""] * len(payloads)
    for names, positions in groups.items():
        group = payloads if len(positions) == len(payloads) else [payloads[i] for i in positions]
        if not names:
            for i in positions:
                texts[i] = "{}"
            continue
        fields = [_field_texts([payload[name] for payload in group]) for name in names]
        template = "{" + ",".join(_STRING(name).replace("%", "%%") + ":%s" for name in names) + "}"
        for i, encoded in zip(positions, map(template.__mod__, zip(*fields, strict=True)), strict=True):
            texts[i] = encoded
    return texts


def event_columns(events: Sequence[NewEvent], recorded_time: datetime) -> dict[str, list[Any]]:
    """The rows of `events` in the log, a column at a time (credit_common.db.bulk)."""
    return {
        "event_id": [e.event_id for e in events],
        "dedupe_key": [e.dedupe_key for e in events],
        "type": [e.type._value_ for e in events],  # (.value is a property: a call per event)
        "customer_key": [e.customer_key for e in events],
        "currency_key": [e.currency_key for e in events],
        "clock_key": [e.clock_key for e in events],
        "occurred_time": [e.occurred_time for e in events],
        "recorded_time": [recorded_time] * len(events),
        "payload": encode_payloads([e.payload for e in events]),
    }


def event_rows(events: Sequence[NewEvent], recorded_time: datetime) -> list[dict[str, Any]]:
    """The rows of `events` in the log, a mapping each (a debit's few events join its group's rows)."""
    columns = event_columns(events, recorded_time)
    return [dict(zip(columns, values, strict=True)) for values in zip(*columns.values(), strict=True)]


def _below_high_water_mark() -> Any:
    """PostgreSQL: rows of transactions that are over and before which nothing can still commit."""
    return EVENTS.c.txid < cast(cast(func.pg_snapshot_xmin(func.pg_current_snapshot()), Text), BigInteger)


def _event_of(row: Any) -> StoredEvent:
    return StoredEvent(
        EventPosition(row.txid, row.seq),
        row.recorded_time,
        NewEvent(
            row.event_id,
            EventType(row.type),
            row.customer_key,
            row.currency_key,
            row.clock_key,
            row.occurred_time,
            row.dedupe_key,
            json.loads(row.payload),
        ),
    )


class SqlEventRepository:
    def __init__(self, session: Session, clock: Clock | None = None, *, enabled: bool = True) -> None:
        self.session = session
        self._clock = clock
        self.enabled = enabled

    def add(self, events: Sequence[NewEvent]) -> None:
        if not events or not self.enabled:
            return
        now = self._clock.now() if self._clock is not None else datetime.now(UTC)
        insert_columns_ignoring_conflicts(self.session, EventRow, event_columns(events, now), "event_id")
        wrote_events(self.session)

    def log_id(self) -> str:
        return self.session.execute(select(EVENT_LOG.c.log_id)).scalar_one()

    def after(self, position: EventPosition | None, limit: int, where: EventFilter | None = None) -> list[StoredEvent]:
        return self._read(position, None, limit, where)

    def scan(self, position: EventPosition | None, limit: int, where: EventFilter) -> EventScan:
        if where.indexed:
            events = self._read(position, None, limit, where)
            return EventScan(events, events[-1].position if events else position, len(events) < limit)
        # The rows to examine first: up to the SCAN_ROWS-th after `position` (of the customer, if
        # the filter names one), else up to the last; read before the events, so that the events
        # read is bounded by a row both reads saw below the high-water mark.
        window = self._window(position, where)
        order = (EVENTS.c.txid, EVENTS.c.seq)
        nth = self.session.execute(
            select(*order).where(*window).order_by(*order).offset(SCAN_ROWS - 1).limit(1)
        ).first()
        complete = nth is None  # fewer rows than SCAN_ROWS left: up to the last
        if complete:
            nth = self.session.execute(
                select(*order).where(*window).order_by(EVENTS.c.txid.desc(), EVENTS.c.seq.desc()).limit(1)
            ).first()
            if nth is None:
                return EventScan([], position, True)
        bound = EventPosition(nth.txid, nth.seq)
        events = self._read(position, bound, limit, where)
        if len(events) == limit:
            return EventScan(events, events[-1].position, False)
        return EventScan(events, bound, complete)

    def _window(self, position: EventPosition | None, where: EventFilter | None) -> list[Any]:
        window = []
        if position is not None:
            window.append(tuple_(EVENTS.c.txid, EVENTS.c.seq) > tuple_(position.txid, position.seq))
        if is_postgres(self.session):
            window.append(_below_high_water_mark())
        if where is not None and where.customer_key:
            window.append(EVENTS.c.customer_key == where.customer_key)
        return window

    def _read(
        self, position: EventPosition | None, bound: EventPosition | None, limit: int, where: EventFilter | None
    ) -> list[StoredEvent]:
        query: Select = select(EVENTS).where(*self._window(position, where))
        if bound is not None:
            query = query.where(tuple_(EVENTS.c.txid, EVENTS.c.seq) <= tuple_(bound.txid, bound.seq))
        if where is not None:
            if where.currency_key:
                query = query.where(EVENTS.c.currency_key == where.currency_key)
            if where.types:
                query = query.where(EVENTS.c.type.in_(sorted(t.value for t in where.types)))
            if where.start is not None:
                query = query.where(EVENTS.c.occurred_time >= where.start)
            if where.end is not None:
                query = query.where(EVENTS.c.occurred_time < where.end)
        query = query.order_by(EVENTS.c.txid, EVENTS.c.seq).limit(limit)
        return [_event_of(row) for row in self.session.execute(query)]
