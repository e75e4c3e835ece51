"""Graceful drain: the signal that a server is shutting down, for the code that must react to it.

On SIGTERM the server (credit_common.grpc.server.RunningServer.stop) begins the drain before anything
else: the health service turns NOT_SERVING, calls that arrive from then on are refused with
UNAVAILABLE (credit_common.grpc.observe), calls in flight finish within the grace, and every
long-lived stream ends with UNAVAILABLE so that its client reconnects to another replica.

A streaming servicer observes the drain of the server that serves it (`credit_common.calls.current()
.drain`, or the `Drain` given at wiring): it waits for its next item with `drain.wait(timeout)` (True
once the drain began), and then ends its stream with `drain.end_stream(context)`. A stream that
returns an iterator that blocks (not a generator) and has a thread-safe `close()` is closed by the
observing interceptor at once; a generator is ended after its next item.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

import grpc

log = logging.getLogger("credit_grants.drain")

DRAINING_MESSAGE = "the server is shutting down: reconnect and retry (another replica may serve the call)"


class Drain:
    def __init__(self) -> None:
        self._event = threading.Event()
        self._lock = threading.Lock()
        self._callbacks: dict[int, Callable[[], None]] = {}
        self._next = 0
        self._idle = threading.Condition(threading.Lock())
        self._in_flight = 0

    # -- calls in flight (counted by credit_common.grpc.observe) ---------------------------------------

    def enter(self) -> None:
        with self._idle:
            self._in_flight += 1

    def leave(self) -> None:
        with self._idle:
            self._in_flight -= 1
            if self._in_flight == 0:
                self._idle.notify_all()

    @property
    def in_flight(self) -> int:
        return self._in_flight

    def wait_idle(self, timeout: float | None) -> bool:
        """Block until no unary call is in flight, or `timeout` passes; whether none is."""
        with self._idle:
            return self._idle.wait_for(lambda: self._in_flight == 0, timeout)

    @property
    def draining(self) -> bool:
        return self._event.is_set()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the drain begins or `timeout` passes; whether it began."""
        return self._event.wait(timeout)

    def begin(self) -> None:
        """Begin the drain (idempotent): run every registered callback once."""
        with self._lock:
            if self._event.is_set():
                return
            self._event.set()
            callbacks, self._callbacks = list(self._callbacks.values()), {}
        for callback in callbacks:
            try:
                callback()
            except Exception:
                log.exception("a drain callback failed")

    def on_drain(self, callback: Callable[[], None]) -> Callable[[], None]:
        """Run `callback` when the drain begins (at once if it has); returns the function that
        unregisters it (call it when the stream ends on its own)."""
        with self._lock:
            if not self._event.is_set():
                key = self._next
                self._next += 1
                self._callbacks[key] = callback

                def unregister() -> None:
                    with self._lock:
                        self._callbacks.pop(key, None)

                return unregister
        callback()
        return lambda: None

    @staticmethod
    def end_stream(context: grpc.ServicerContext) -> None:
        """Set the status a stream ends with when it returns because of the drain: UNAVAILABLE."""
        context.set_code(grpc.StatusCode.UNAVAILABLE)
        context.set_details(DRAINING_MESSAGE)
