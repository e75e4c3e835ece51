"""Making a batch (credit_common.batching) out of chosen calls, deterministically."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable


def one_batch(lead: Callable[[Callable[[], None]], object], waiting: Callable[[], int], calls: list) -> list:
    """Run `calls` so that they make one batch, in this order: `lead(hold)` starts a batch whose work
    calls `hold()`, which blocks until every call has been submitted from a thread of its own (one at a
    time, each queued before the next starts: `waiting()` counts those queued). Each call's result or
    error, in order."""
    holding, release = threading.Event(), threading.Event()

    def hold() -> None:
        holding.set()
        release.wait(20)

    first = threading.Thread(target=lead, args=(hold,))
    first.start()
    assert holding.wait(20), "the first batch did not start"
    answers: list = [None] * len(calls)

    def call(i: int) -> None:
        try:
            answers[i] = calls[i]()
        except Exception as error:
            answers[i] = error

    threads = [threading.Thread(target=call, args=(i,)) for i in range(len(calls))]
    for i, t in enumerate(threads):
        t.start()
        deadline = time.monotonic() + 20
        while waiting() < i + 1:
            assert time.monotonic() < deadline, "the calls did not queue"
            time.sleep(0.002)
    release.set()
    for t in (first, *threads):
        t.join(20)
    return answers
