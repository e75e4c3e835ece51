"""A commit slowed until its caller is gone (credit_common.calls.COMMIT_HOOKS), to prove that a call
whose deadline passed, or that its client cancelled, while it worked commits nothing."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

from credit_common import calls


@contextmanager
def commit_held_until_caller_gone(method: str, timeout_s: float = 10.0) -> Iterator[threading.Event]:
    """While in the block, a commit of an RPC whose method ends with `method` waits until its caller is
    gone (its deadline passed, or it cancelled) before the commit's check runs. Yields an event set
    when such a commit is reached (a test then cancels its call)."""
    reached = threading.Event()

    def hold() -> None:
        call = calls.current()
        if call is None or not call.method.endswith(method):
            return
        reached.set()
        give_up = time.monotonic() + timeout_s
        while call.gone() is None and time.monotonic() < give_up:
            time.sleep(0.005)

    calls.COMMIT_HOOKS.append(hold)
    try:
        yield reached
    finally:
        calls.COMMIT_HOOKS.remove(hold)
