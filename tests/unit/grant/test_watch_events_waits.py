"""How long WatchEvents waits between two reads of the log (service_layer/events.py `watch_events`):
the poll interval when nothing was signalled; after a commit that wrote events whose read found
nothing (on PostgreSQL its events wait below the high-water mark for older transactions to end),
10 ms then 20 ms, then the poll again: at most two reads more per signal."""

from __future__ import annotations

from datetime import UTC, datetime
from types import SimpleNamespace

from grant_service.domain.events import EventFilter, EventPosition, EventScan, EventType, NewEvent, StoredEvent
from grant_service.service_layer import events as use_cases

T0 = datetime(2026, 12, 1, tzinfo=UTC)
POLL = 1.0


def _event(seq: int) -> StoredEvent:
    new = NewEvent(f"evt_{seq}", EventType.CREDITS_GRANTED, "acme", "ai-credits", "", T0, f"k{seq}", {})
    return StoredEvent(EventPosition(0, seq), T0, new)


class _Transactions:
    """Reads answer from `scans` in turn; a wait records its timeout, and signals a commit (the
    generation moves) when its number is in `signals`."""

    def __init__(self, scans: list[list[StoredEvent]], signals: set[int]) -> None:
        self._scans = scans
        self._signals = signals
        self.generation = 0
        self.waits: list[float] = []

    def event_generation(self) -> int:
        return self.generation

    def read(self, work):
        events = self._scans.pop(0)
        return EventScan(events, events[-1].position if events else None, True)

    def wait_for_events(self, generation: int, timeout_s: float) -> None:
        self.waits.append(timeout_s)
        if len(self.waits) in self._signals:
            self.generation += 1


def _watch(transactions: _Transactions, reads: int) -> list[str]:
    ctx = SimpleNamespace(transactions=transactions, clock=SimpleNamespace(now=lambda: T0))
    left = [reads]

    def active() -> bool:
        left[0] -= 1
        return left[0] >= 0

    stream = use_cases.watch_events(ctx, "log", None, EventFilter(), active, heartbeat_s=60.0, poll_s=POLL)
    return [item.stored.event.event_id for item in stream if not isinstance(item, use_cases.Heartbeat)]


def test_a_signal_the_read_does_not_answer_is_looked_at_again_after_10_then_20_ms():
    # Read 1 finds nothing; a commit is signalled during wait 1; reads 2 and 3 find nothing (held
    # back), read 4 finds the event; then nothing more is signalled.
    transactions = _Transactions([[], [], [], [_event(1)], []], signals={1})
    assert _watch(transactions, 5) == ["evt_1"]
    assert transactions.waits == [POLL, 0.01, 0.02, POLL, POLL]


def test_without_a_signal_the_stream_waits_its_poll_and_reads_no_more():
    transactions = _Transactions([[], [], []], signals=set())
    assert _watch(transactions, 3) == []
    assert transactions.waits == [POLL, POLL, POLL]


def test_a_read_that_answers_the_signal_ends_the_quick_looks():
    transactions = _Transactions([[], [_event(1)], []], signals={1})
    assert _watch(transactions, 3) == ["evt_1"]
    assert transactions.waits == [POLL, POLL, POLL]
