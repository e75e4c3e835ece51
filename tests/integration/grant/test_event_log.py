"""The event log's repository against a real database: events appended and read back in log order,
a fact written twice kept once, and on PostgreSQL the high-water mark: an event of a transaction
still running (even with a smaller seq than events already committed) is not read until it
commits, and then comes after what was read, so a reader that passed a position misses nothing."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest

from credit_common.db.engine import DatabaseSettings, create_db_engine, session_factories
from credit_common.db.migrations import upgrade
from grant_service.adapters.unit_of_work import SqlGrantUnitOfWork
from grant_service.domain.events import EventFilter, EventType, NewEvent

T0 = datetime(2026, 1, 31, 10, tzinfo=UTC)


def _factories(url: str):
    engine = create_db_engine(DatabaseSettings(url=url))
    upgrade("grant_service.adapters:migrations", engine)
    return engine, session_factories(engine)


def _event(n: int, customer: str = "acme", type_: EventType = EventType.CREDITS_GRANTED) -> NewEvent:
    return NewEvent(
        f"evt_{n:04d}",
        type_,
        customer,
        "ai-credits",
        "",
        T0,
        f"{type_.value}:grt_{n}",
        {"grant_id": f"grt_{n}", "amount": Decimal("50000.5"), "effective_time": T0},
    )


def _write(sessions, events) -> None:
    with sessions.write() as session, session.begin():
        SqlGrantUnitOfWork(session).events.add(events)


def _read(sessions, position=None, where=None):
    with sessions.read() as session, session.begin():
        return SqlGrantUnitOfWork(session).events.after(position, 100, where)


def test_events_read_back_in_log_order_once(database_url_factory):
    engine, sessions = _factories(database_url_factory("grant"))
    _write(sessions, [_event(1), _event(2)])
    _write(sessions, [_event(2), _event(3, "other", EventType.CREDITS_EXPIRED)])  # event 2 again: skipped
    events = _read(sessions)
    assert [e.event.event_id for e in events] == ["evt_0001", "evt_0002", "evt_0003"]
    assert events[0].event.payload == {
        "amount": "50000.5",
        "effective_time": "2026-01-31T10:00:00Z",
        "grant_id": "grt_1",
    }
    assert [e.event.event_id for e in _read(sessions, events[0].position)] == ["evt_0002", "evt_0003"]
    assert [e.event.event_id for e in _read(sessions, where=EventFilter(customer_key="other"))] == ["evt_0003"]
    only = EventFilter(types=frozenset({EventType.CREDITS_EXPIRED}))
    assert [e.event.event_id for e in _read(sessions, where=only)] == ["evt_0003"]
    with sessions.read() as session, session.begin():
        assert len(SqlGrantUnitOfWork(session).events.log_id()) == 16
    engine.dispose()


@pytest.mark.parametrize("backend", ["postgres"], indirect=True)
def test_an_event_committed_late_with_a_smaller_seq_is_not_skipped(database_url_factory):
    engine, sessions = _factories(database_url_factory("grant"))
    slow = sessions.write()
    slow.begin()
    SqlGrantUnitOfWork(slow).events.add([_event(1)])  # takes the smaller seq, commits last
    _write(sessions, [_event(2)])
    assert _read(sessions) == []  # held back: a transaction below it is still running
    slow.commit()
    slow.close()
    first = _read(sessions)
    assert [e.event.event_id for e in first] == ["evt_0001", "evt_0002"]
    assert first[0].position.seq < first[1].position.seq
    # A reader that had read evt_0002 before evt_0001 committed could not exist: and after the last
    # position nothing is left.
    assert _read(sessions, first[-1].position) == []
    engine.dispose()
