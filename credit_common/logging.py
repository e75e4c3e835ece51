"""Structured logs: one JSON object per line on stderr.

RPC threads only append records to a queue; one writer thread, every 50 ms, formats them
and writes whatever has piled up with a single write. The access line of each RPC (AccessLog)
does not even build a LogRecord. Writing from the RPC threads cost each
RPC a system call and a wait to get the GIL back after it, which under many busy threads
cut the throughput (docs/performance.md). The writer is
drained at exit, so a clean shutdown or a crash with a traceback loses no line; a
SIGKILL loses at most the lines of the last 50 ms."""

from __future__ import annotations

import atexit
import json
import logging
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from datetime import UTC, datetime
from logging.handlers import QueueHandler
from typing import TextIO

# An AccessLog line on the writer's queue: (created, logger name, message, fields).
_Line = tuple[float, str, str, dict]

# Set by credit_common.tracing while tracing is on: the current trace_id and span_id ({} outside a
# span), added to every record in the thread that logs it, so that logs and traces join.
trace_fields: Callable[[], dict[str, str]] | None = None

_STANDARD = set(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    def __init__(self, service: str) -> None:
        super().__init__()
        self._service = service

    def format(self, record: logging.LogRecord) -> str:
        fields = {k: v for k, v in record.__dict__.items() if k not in _STANDARD and not k.startswith("_")}
        exception = None
        if record.exc_info:
            exception = self.formatException(record.exc_info)
        elif record.exc_text:
            exception = record.exc_text
        return self.line(record.created, record.levelname, record.name, record.getMessage(), fields, exception)

    def line(
        self, created: float, level: str, logger: str, message: str, fields: dict, exception: str | None = None
    ) -> str:
        entry = {
            "time": datetime.fromtimestamp(created, UTC).isoformat(timespec="milliseconds"),
            "level": level.lower(),
            "service": self._service,
            "logger": logger,
            "message": message,
            **fields,
        }
        if exception is not None:
            entry["exception"] = exception
        return json.dumps(entry, default=str)


class _Enqueue(QueueHandler):
    """Puts the record itself on the queue: formatting happens in the writer thread. The
    traceback, if any, is rendered here (the frames are gone by the time the writer runs)."""

    def prepare(self, record: logging.LogRecord) -> logging.LogRecord:
        if trace_fields is not None:
            record.__dict__.update(trace_fields())
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        record.exc_info = None
        return record


# PIPE_BUF on Linux; the lines are JSON with ASCII escapes, so characters are bytes.
_ATOMIC_WRITE = 4096


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

    def _write(self, batch: list[logging.LogRecord | _Line]) -> None:
        lines = []
        for record in batch:
            try:
                if type(record) is tuple:  # an AccessLog line: (created, logger, message, fields)
                    lines.append(self._formatter.line(record[0], "INFO", record[1], record[2], record[3]))
                else:
                    lines.append(self._formatter.format(record))
            except Exception:  # a record that cannot be formatted must not stop the writer
                lines.append(json.dumps({"level": "error", "message": "unformattable log record"}))
        try:
            # Whole lines, at most PIPE_BUF bytes a write: a write that size to a pipe is never
            # interleaved with another process's (the server processes of --processes share stderr).
            chunk: list[str] = []
            size = 0
            for line in lines:
                if chunk and size + len(line) + 1 > _ATOMIC_WRITE:
                    self._stream.write("\n".join(chunk) + "\n")
                    self._stream.flush()
                    chunk, size = [], 0
                chunk.append(line)
                size += len(line) + 1
            self._stream.write("\n".join(chunk) + "\n")
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
        self.records: deque[logging.LogRecord | _Line] = deque()

    def put_nowait(self, record: logging.LogRecord) -> None:
        self.records.append(record)


_writer: BatchingWriter | None = None
_handler: _Enqueue | None = None


class AccessLog:
    """The line an RPC leaves at INFO, one per call: the hottest log line of a serving process, so
    it skips what `logging` does per call (a LogRecord of twenty-odd attributes, a walk up the stack
    for the caller, the handler chain). The RPC thread appends a tuple to the writer's queue; the
    writer thread formats it into the same JSON line `logger.info(message, extra=fields)` would
    write (what it saves: docs/performance.md).

    Where the JSON writer is not the logger's only destination (configure_logging did not run, or
    a test capture or another handler is attached) it is that ordinary logging call."""

    def __init__(self, logger: str, message: str) -> None:
        self._logger = logging.getLogger(logger)
        self._message = message

    def write(self, fields: dict[str, object]) -> None:
        logger = self._logger
        if not logger.isEnabledFor(logging.INFO):
            return
        if trace_fields is not None:
            fields.update(trace_fields())
        if _writer is None or not self._only_to(_handler):
            logger.info(self._message, extra=fields)
            return
        _writer.queue.records.append((time.time(), logger.name, self._message, fields))

    def _only_to(self, handler: logging.Handler | None) -> bool:
        """Whether the logger's records reach `handler` and nothing else."""
        logger: logging.Logger | None = self._logger
        while logger is not None and logger is not logging.root:
            if logger.handlers or not logger.propagate:
                return False
            logger = logger.parent
        handlers = logging.root.handlers
        return len(handlers) == 1 and handlers[0] is handler


def configure_logging(service: str, level: str = "INFO", stream: TextIO | None = None) -> None:
    """JSON lines on `stream` (standard error by default), through the batching writer."""
    global _writer, _handler
    if _writer is not None:
        _writer.stop()
    _writer = BatchingWriter(JsonFormatter(service), stream or sys.stderr)
    _handler = _Enqueue(_writer.queue)
    root = logging.getLogger()
    root.handlers[:] = [_handler]
    root.setLevel(level.upper())
    logging.getLogger("apscheduler").setLevel(logging.WARNING)
    atexit.register(_writer.stop)
