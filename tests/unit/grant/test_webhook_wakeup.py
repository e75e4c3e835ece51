"""The webhook dispatcher's wake-up (entrypoints/webhook_worker.py `wake_on_events`): a commit
that wrote events nudges the dispatcher at once; the commits that follow within the gap make one
more nudge when it has passed, none is lost, and an idle process nudges nothing."""

from __future__ import annotations

import threading
import time
from datetime import timedelta

from grant_service.adapters.events import EventSignal
from grant_service.entrypoints.webhook_worker import wake_on_events


class _Transactions:
    def __init__(self) -> None:
        self.signal = EventSignal()

    def event_generation(self) -> int:
        return self.signal.generation

    def wait_for_events(self, generation: int, timeout_s: float) -> None:
        self.signal.wait(generation, timeout_s)


class _Dispatcher:
    def __init__(self) -> None:
        self.nudges: list[float] = []
        self.nudged = threading.Semaphore(0)

    def nudge(self) -> None:
        self.nudges.append(time.monotonic())
        self.nudged.release()


def test_commits_within_the_gap_make_one_nudge_after_it_and_none_is_lost():
    transactions, dispatcher = _Transactions(), _Dispatcher()
    gap = timedelta(milliseconds=300)
    stop = wake_on_events(transactions, dispatcher, gap)  # type: ignore[arg-type]
    try:
        transactions.signal.committed()
        assert dispatcher.nudged.acquire(timeout=5)
        for _ in range(20):  # a storm's commits, inside the gap
            transactions.signal.committed()
        assert dispatcher.nudged.acquire(timeout=5)
        assert len(dispatcher.nudges) == 2
        assert dispatcher.nudges[1] - dispatcher.nudges[0] >= gap.total_seconds()
        # Nothing more committed: no further nudge (the next one would come right after the gap).
        assert not dispatcher.nudged.acquire(timeout=2 * gap.total_seconds())
        transactions.signal.committed()
        assert dispatcher.nudged.acquire(timeout=5)
        assert len(dispatcher.nudges) == 3
    finally:
        stop()
