"""SIGTERM and SIGINT, caught from the first moment a process means to serve.

A signal that arrives while the process is still starting (migrating, opening its pools, binding its
port) is kept, not lost and not turned into a KeyboardInterrupt half way through the start: the process
finishes starting what it must, then stops as it would once serving. Ctrl-C on `make run` reaches
every process of the terminal at once, whatever each one is doing."""

from __future__ import annotations

import logging
import signal
import threading

log = logging.getLogger("credit_grants.server")


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
        return self._received.wait(timeout_s)
