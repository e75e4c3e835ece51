"""Long-lived streams get their own threads and a bounded budget, so no caller can starve the unary calls.

gRPC Python runs each RPC on a thread of the server's pool for as long as the RPC lasts, and counts
it against `maximum_concurrent_rpcs` until it ends. An idle stream (a reflection stream waiting for
its next request, an event stream waiting for events) therefore holds a unary worker: sixteen of
them froze a server. Here, every streaming RPC

- runs on the budget's own thread pool (gRPC's `experimental_thread_pool` attribute of a handler),
  never on the unary workers;
- is admitted only while fewer than `total` streams are open on the server and fewer than
  `per_caller` are open for its caller (an API key id; every caller without a key counts as one
  caller, `anonymous`). Past either limit the stream is refused at once with RESOURCE_EXHAUSTED,
  reason STREAM_LIMIT_REACHED, instead of waiting: a waiting stream would still count against
  `maximum_concurrent_rpcs`.

The pool has a few threads more than `total`, so that refusals (and the non-blocking health Watch,
which holds a slot but no thread) never queue behind the streams that are admitted. A slot is
released by the RPC's termination callback, which gRPC runs however the stream ends (finished,
failed, cancelled by the client, ended by the server's shutdown).
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from credit_common.errors import ResourceExhausted

ANONYMOUS = "anonymous"
SPARE_THREADS = 4


class StreamBudget:
    def __init__(self, total: int, per_caller: int) -> None:
        if total < 1 or not 1 <= per_caller <= total:
            raise ValueError(f"stream limits must satisfy 1 <= per_caller ({per_caller}) <= total ({total})")
        self.total = total
        self.per_caller = per_caller
        self.pool = ThreadPoolExecutor(max_workers=total + SPARE_THREADS, thread_name_prefix="stream")
        self._lock = threading.Lock()
        self._open = 0
        self._by_caller: Counter[str] = Counter()

    @property
    def open(self) -> int:
        return self._open

    def admit(self, caller: str) -> Callable[[], None]:
        """Take a slot for `caller` (an API key id, or ANONYMOUS); the function that gives it back
        (calling it more than once gives it back once). ResourceExhausted past a limit."""
        with self._lock:
            if self._open >= self.total:
                raise _refused(f"the server has {self.total} streams open, its limit", "server", self.total)
            if self._by_caller[caller] >= self.per_caller:
                raise _refused(
                    f"this caller has {self.per_caller} streams open, the limit of one caller",
                    "caller",
                    self.per_caller,
                )
            self._open += 1
            self._by_caller[caller] += 1
        released = threading.Event()

        def release() -> None:
            with self._lock:
                if released.is_set():
                    return
                released.set()
                self._open -= 1
                self._by_caller[caller] -= 1
                if not self._by_caller[caller]:
                    del self._by_caller[caller]

        return release

    def close(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)


def _refused(message: str, scope: str, limit: int) -> ResourceExhausted:
    return ResourceExhausted(
        f"{message}: close a stream or retry later",
        reason="STREAM_LIMIT_REACHED",
        metadata={"scope": scope, "limit": str(limit)},
    )
