"""Structured logs: one JSON object per line on stderr.

RPC threads only append records to a queue; one writer thread, every 50 ms, formats them
and writes whatever has piled up with a single write. Writing from the RPC threads cost each
RPC a system call and a wait to get the GIL back after it (with 32 threads busy, the
no-op RPC's throughput was 35% lower with the access log on than off). The writer is
drained at exit, so a clean shutdown or a crash with a traceback loses no line; a
SIGKILL loses at most the lines of the last 50 ms."""

from __future__ import annotations

import atexit
import json
import logging
import sys
import threading
from collections import deque
from datetime import UTC, datetime
from logging.handlers import QueueHandler
from typing import TextIO

_STANDARD = set(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    def __init__(self, service: str) -> None:
        super().__init__()
        self._service = service

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "service": self._service,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            entry["exception"] = record.exc_text
        return json.dumps(entry, default=str)


class _Enqueue(QueueHandler):
    """Puts the record itself on the queue: formatting happens in the writer thread. The
    traceback, if any, is rendered here (the frames are gone by the time the writer runs)."""

    def prepare(self, record: logging.LogRecord) -> logging.LogRecord:
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        record.exc_info = None
        return record


class BatchingWriter:
    """The one thread that formats queued records and writes them, a batch per write. It wakes
    every `interval_s` rather than on each record: a wake-up per record cost the RPC threads
    a GIL hand-off each (as much as the write itself)."""

    def __init__(self, formatter: logging.Formatter, stream: TextIO, interval_s: float = 0.05) -> None:
        self.queue: _Appendable = _Appendable()
        self._formatter = formatter
        self._stream = stream
        self._interval_s = interval_s
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="log-writer", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stopping.wait(self._interval_s):
            self._drain()
        self._drain()

    def _drain(self) -> None:
        records = self.queue.records
        batch = []
        while records:
            batch.append(records.popleft())
            if len(batch) == 1000:
                self._write(batch)
                batch = []
        if batch:
            self._write(batch)

    def _write(self, batch: list[logging.LogRecord]) -> None:
        lines = []
        for record in batch:
            try:
                lines.append(self._formatter.format(record))
            except Exception:  # a record that cannot be formatted must not stop the writer
                lines.append(json.dumps({"level": "error", "message": "unformattable log record"}))
        try:
            self._stream.write("\n".join(lines) + "\n")
            self._stream.flush()
        except (OSError, ValueError):
            pass  # stderr closed: nothing left to tell

    def stop(self) -> None:
        """Write what is queued, then end the thread."""
        self._stopping.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout=5)
        self._drain()


class _Appendable:
    """What QueueHandler needs of a queue (`put_nowait`), over a deque: appending is atomic
    and wakes no one."""

    def __init__(self) -> None:
        self.records: deque[logging.LogRecord] = deque()

    def put_nowait(self, record: logging.LogRecord) -> None:
        self.records.append(record)


_writer: BatchingWriter | None = None


def configure_logging(service: str, level: str = "INFO") -> None:
    global _writer
    if _writer is not None:
        _writer.stop()
    _writer = BatchingWriter(JsonFormatter(service), sys.stderr)
    root = logging.getLogger()
    root.handlers[:] = [_Enqueue(_writer.queue)]
    root.setLevel(level.upper())
    logging.getLogger("apscheduler").setLevel(logging.WARNING)
    atexit.register(_writer.stop)
