"""SIGTERM and SIGINT, caught from the first moment a process means to serve.

A signal that arrives while the process is still starting (migrating, opening its pools, binding its
port) is kept, not lost and not turned into a KeyboardInterrupt half way through the start: the process
finishes starting what it must, then stops as it would once serving. Ctrl-C on `make run` reaches
every process of the terminal at once, whatever each one is doing."""

from __future__ import annotations

import logging
import signal
import threading
import time

log = logging.getLogger("credit_grants.server")

WAKE_S = 0.25  # how long a stop signal received by another thread can wait for its handler


class StopSignals:
    def __init__(self) -> None:
        self._received = threading.Event()
        self.name: str | None = None

    @classmethod
    def catch(cls) -> StopSignals:
        """Install the handlers (main thread only) and return what they record."""
        signals = cls()
        signal.signal(signal.SIGTERM, signals._handle)
        signal.signal(signal.SIGINT, signals._handle)
        return signals

    def _handle(self, signum: int, _frame: object) -> None:
        if self.name is None:
            self.name = signal.Signals(signum).name
            log.info("shutting down", extra={"signal": self.name})
        self._received.set()

    def received(self) -> bool:
        return self._received.is_set()

    def wait(self, timeout_s: float | None = None) -> bool:
        """Whether a stop signal came within `timeout_s` (None: wait for one). The waiting main thread
        wakes every WAKE_S: a signal that the kernel hands another thread (gRPC's, the log writer's)
        runs its Python handler only when the main thread next runs, and a main thread blocked on a
        lock with no timeout never does (CPython issue 85300: `make run` stopped with Ctrl-C left
        the catalog serving)."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while not self._received.is_set():
            left = WAKE_S if deadline is None else min(WAKE_S, deadline - time.monotonic())
            if left <= 0:
                return False
            self._received.wait(left)
        return True
