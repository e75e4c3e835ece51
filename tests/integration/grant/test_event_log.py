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


# -- a filter the log has no index for: bounded reads (SqlEventRepository.scan) ----------------------

RARE = EventFilter(types=frozenset({EventType.CREDITS_EXPIRED}))


def _scan(sessions, position, where, limit=100):
    with sessions.read() as session, session.begin():
        return SqlGrantUnitOfWork(session).events.scan(position, limit, where)


def _rare_log(sessions) -> None:
    """Events 1-15 of acme, of which 11 and 15 expired; events 16-19 of another customer, 18 expired."""
    kinds = {11: EventType.CREDITS_EXPIRED, 15: EventType.CREDITS_EXPIRED}
    _write(sessions, [_event(n, type_=kinds.get(n, EventType.CREDITS_GRANTED)) for n in range(1, 16)])
    _write(
        sessions,
        [
            _event(n, "other", EventType.CREDITS_EXPIRED if n == 18 else EventType.CREDITS_GRANTED)
            for n in range(16, 20)
        ],
    )


def test_a_filter_without_an_index_examines_a_bounded_part_of_the_log(database_url_factory, monkeypatch):
    monkeypatch.setattr("grant_service.adapters.events.SCAN_ROWS", 4)
    engine, sessions = _factories(database_url_factory("grant"))
    _rare_log(sessions)
    every = _read(sessions)
    first = _scan(sessions, None, RARE)
    assert (first.events, first.examined, first.complete) == ([], every[3].position, False)  # 4 rows, none matched
    found, position, reads = [], None, 0
    while True:
        scan = _scan(sessions, position, RARE)
        found += [e.event.event_id for e in scan.events]
        position, reads = scan.examined, reads + 1
        if scan.complete:
            break
    assert found == ["evt_0011", "evt_0015", "evt_0018"]
    assert (reads, position) == (5, every[-1].position)  # 19 rows, 4 per read; ends at the last row
    assert _scan(sessions, position, RARE) == type(scan)([], position, True)  # nothing after the end
    # With a customer, the rows examined are the customer's.
    acme = EventFilter(customer_key="acme", types=RARE.types)
    assert [e.event.event_id for e in _scan(sessions, every[7].position, acme).events] == ["evt_0011"]
    # A read that fills its limit stops at its last event, whatever it examined.
    two = _scan(sessions, None, EventFilter(currency_key="ai-credits"), limit=2)
    assert ([e.event.event_id for e in two.events], two.examined, two.complete) == (
        ["evt_0001", "evt_0002"],
        every[1].position,
        False,
    )
    # An indexed filter (a customer, or none) is not bounded by the scan: its limit bounds it.
    other = _scan(sessions, None, EventFilter(customer_key="other"))
    assert [e.event.event_id for e in other.events] == ["evt_0016", "evt_0017", "evt_0018", "evt_0019"]
    assert other.complete
    engine.dispose()


def test_pages_and_streams_of_a_rare_type_skip_what_they_examined(database_url_factory, monkeypatch):
    """ListEvents pages on past rows that did not match (a page may be empty and have a next page);
    WatchEvents moves its position past them and its heartbeat's cursor says where it is."""
    from credit_common.clock import ManualClock
    from credit_common.pagination import page_request
    from grant_service.service_layer import events as use_cases
    from tests.support.grant_context import sql_context

    monkeypatch.setattr("grant_service.adapters.events.SCAN_ROWS", 4)
    engine, sessions = _factories(database_url_factory("grant"))
    _rare_log(sessions)
    ctx = sql_context(sessions, ManualClock(T0))
    pages, token = [], ""
    while True:
        page = page_request(10, token, ("rare",), method="ListEvents", key=(int, int))
        found, token = use_cases.list_events(ctx, RARE, page)
        pages.append([e.stored.event.event_id for e in found])
        if not token:
            break
    assert pages == [[], [], ["evt_0011"], ["evt_0015"], ["evt_0018"]]

    log = use_cases.log_id(ctx)
    ids, beats = [], []
    for item in use_cases.watch_events(ctx, log, None, RARE, lambda: True, heartbeat_s=0.0, poll_s=0.0):
        if isinstance(item, use_cases.Heartbeat):
            beats.append(item.cursor)
            if len(ids) == 3:
                break
        else:
            ids.append(item.stored.event.event_id)
    every = _read(sessions)
    assert ids == ["evt_0011", "evt_0015", "evt_0018"]
    # A heartbeat after each read: past the 4 rows examined, the 8, ..., then at the log's last row.
    assert beats[:2] == [
        use_cases.encode_cursor(log, every[3].position),
        use_cases.encode_cursor(log, every[7].position),
    ]
    assert beats[-1] == use_cases.encode_cursor(log, every[-1].position)
    engine.dispose()
