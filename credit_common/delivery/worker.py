"""The loop of a background delivery worker, shared by the catalog's outbox dispatcher and the
grant service's webhook dispatcher.

`PollingWorker` runs passes (`run_pass() -> bool`: True when the pass did something, so the next
may find more at once) in a daemon thread: a new pass every `poll_interval`, at once after a pass
that did something, or at once when `nudge()`d (call it right after committing a transaction that
queued work). A pass that raises is logged and the next waits a backoff (the database is down:
no busy loop). `stop()` wakes the thread, lets the pass in progress finish and joins it.

With a `backlog` function, the loop reads it every `backlog_every` and logs the rows due and the
lag of the oldest (`last_backlog` keeps the last reading for metrics).

A thread and not an APScheduler job: the nudge needs a wake-up event, and a sub-second interval
job would fill APScheduler's logs and misfire under load.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable
from datetime import timedelta

from credit_common.backoff import BackoffPolicy, RandomSource
from credit_common.db.engine import log_failure
from credit_common.delivery.leases import Backlog

log = logging.getLogger("credit_grants.delivery")


class PollingWorker:
    def __init__(
        self,
        run_pass: Callable[[], bool],
        *,
        name: str,
        label: str,
        failure_message: str,
        poll_interval: timedelta,
        backoff: BackoffPolicy | None = None,
        rng: RandomSource | None = None,
        logger: logging.Logger = log,
        backlog: Callable[[], Backlog] | None = None,
        backlog_every: timedelta = timedelta(seconds=30),
    ) -> None:
        self._run_pass = run_pass
        self._name = name
        self._label = label  # "outbox dispatcher": the start and stop log lines name it
        self._failure_message = failure_message  # the log line of a pass that raised
        self._poll_interval = poll_interval
        self._backoff = backoff or BackoffPolicy()
        self._rng: RandomSource = rng or random.SystemRandom()
        self._log = logger
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._lifecycle = threading.Lock()
        self._passes = 0
        self._backlog = backlog
        self._backlog_every_s = backlog_every.total_seconds()
        self._backlog_checked = 0.0
        self.last_backlog: Backlog | None = None  # as of the last report (for metrics)

    def start(self) -> None:
        with self._lifecycle:
            if self._thread is not None:
                raise RuntimeError(f"the {self._label} is already started")
            self._stopping.clear()
            self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
            self._thread.start()
        self._log.info(f"{self._label} started", extra={"dispatcher": self._name})

    def nudge(self) -> None:
        """Run a pass now instead of at the next poll (cheap; safe from any thread)."""
        self._wake.set()

    def stop(self, timeout: float | None = None) -> bool:
        """Stop the loop: the pass in progress finishes, then the thread is joined. Idempotent;
        True if a running loop was stopped."""
        with self._lifecycle:
            thread, self._thread = self._thread, None
        if thread is None:
            return False
        self._stopping.set()
        self._wake.set()
        thread.join(timeout)
        self._log.info(f"{self._label} stopped", extra={"dispatcher": self._name})
        return True

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    @property
    def running(self) -> bool:
        thread = self._thread
        return thread is not None and thread.is_alive()

    @property
    def completed_passes(self) -> int:
        return self._passes

    def _run(self) -> None:
        failures = 0
        wait = timedelta(0)
        while not self._stopping.is_set():
            if wait > timedelta(0):
                self._wake.wait(wait.total_seconds())
            self._wake.clear()
            if self._stopping.is_set():
                return
            try:
                busy = self._run_pass()
            except Exception:
                failures += 1
                wait = max(self._poll_interval, self._backoff.delay(failures, self._rng))
                log_failure(
                    self._log,
                    self._failure_message,
                    {"dispatcher": self._name, "failures": failures, "retry_in_s": wait.total_seconds()},
                )
                continue
            failures = 0
            self._passes += 1
            wait = timedelta(0) if busy else self._poll_interval
            self._report_backlog()

    def _report_backlog(self) -> None:
        """Every `backlog_every`, read the backlog and log it when something is due (a warning once
        the oldest due row has waited longer than that interval)."""
        if self._backlog is None or time.monotonic() - self._backlog_checked < self._backlog_every_s:
            return
        self._backlog_checked = time.monotonic()
        try:
            self.last_backlog = backlog = self._backlog()
        except Exception:
            self._log.warning(f"{self._label} backlog unreadable", exc_info=True, extra={"dispatcher": self._name})
            return
        if backlog.due:
            level = logging.WARNING if backlog.lag_s > self._backlog_every_s else logging.INFO
            self._log.log(
                level,
                f"{self._label} backlog",
                extra={"dispatcher": self._name, "due": backlog.due, "lag_s": round(backlog.lag_s, 3)},
            )
