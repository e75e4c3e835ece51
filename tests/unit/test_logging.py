"""The JSON log: RPC threads only enqueue; one writer thread formats and writes batches,
and nothing queued is lost when it stops. The access line of each RPC takes a shorter way
to the same JSON."""

from __future__ import annotations

import io
import json
import logging
import threading
from datetime import UTC, datetime

import pytest

import credit_common.logging as credit_logging
from credit_common.logging import AccessLog, BatchingWriter, JsonFormatter, _Enqueue


def _logger(writer: BatchingWriter, name: str) -> logging.Logger:
    logger = logging.getLogger(name)
    logger.handlers[:] = [_Enqueue(writer.queue)]
    logger.propagate = False
    logger.setLevel(logging.INFO)
    return logger


def test_every_line_of_many_threads_is_written_once_as_json():
    stream = io.StringIO()
    writer = BatchingWriter(JsonFormatter("svc"), stream)
    logger = _logger(writer, "test.batching")

    def emit(thread: int) -> None:
        for i in range(500):
            logger.info("rpc %s", i, extra={"caller": thread, "i": i})

    threads = [threading.Thread(target=emit, args=(t,)) for t in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    writer.stop()
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert len(lines) == 8 * 500
    assert {(line["caller"], line["i"]) for line in lines} == {(t, i) for t in range(8) for i in range(500)}
    assert all(line["service"] == "svc" and line["message"] == f"rpc {line['i']}" for line in lines)


def test_a_traceback_is_rendered_where_it_was_raised():
    stream = io.StringIO()
    writer = BatchingWriter(JsonFormatter("svc"), stream)
    logger = _logger(writer, "test.traceback")
    try:
        raise ValueError("boom")
    except ValueError:
        logger.exception("unexpected error", extra={"method": "/x"})
    writer.stop()
    (line,) = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert line["level"] == "error" and line["method"] == "/x"
    assert "ValueError: boom" in line["exception"] and "test_a_traceback" in line["exception"]


@pytest.fixture
def configured():
    """configure_logging as a serving process has it, undone after the test. Yields a function that
    stops the writer and returns the lines it wrote."""
    root = logging.getLogger()
    saved_handlers, saved_level = root.handlers[:], root.level
    saved_writer, saved_handler = credit_logging._writer, credit_logging._handler
    credit_logging._writer = credit_logging._handler = None
    stream = io.StringIO()
    credit_logging.configure_logging("svc", "INFO", stream)

    def lines() -> list[dict]:
        credit_logging._writer.stop()
        return [json.loads(line) for line in stream.getvalue().splitlines()]

    yield lines
    credit_logging._writer.stop()
    credit_logging._writer, credit_logging._handler = saved_writer, saved_handler
    root.handlers[:] = saved_handlers
    root.setLevel(saved_level)


def _json_only() -> None:
    """The root's only handler the JSON writer's, as in a serving process (pytest adds its own for
    each test)."""
    logging.getLogger().handlers[:] = [credit_logging._handler]


FIELDS = {"method": "/svc.v1.S/M", "code": "NOT_FOUND", "reason": "PLAN_NOT_FOUND", "duration_ms": 1.25}


def test_an_access_line_is_the_line_logging_would_write_without_a_log_record(configured, monkeypatch):
    _json_only()
    logging.getLogger("test.access").info("rpc", extra=FIELDS)  # the ordinary way, for comparison

    def no_record(*args, **kwargs):
        raise AssertionError("the access line built a LogRecord")

    with monkeypatch.context() as patch:
        patch.setattr(logging.Logger, "makeRecord", no_record)
        AccessLog("test.access", "rpc").write(dict(FIELDS))
    ordinary, fast = configured()
    assert fast.pop("time")[:4] == ordinary.pop("time")[:4] == str(datetime.now(UTC).year)
    assert fast == ordinary == {"level": "info", "service": "svc", "logger": "test.access", "message": "rpc", **FIELDS}


def test_an_access_line_follows_the_logger_level(configured):
    _json_only()
    logging.getLogger("test.quiet").setLevel(logging.WARNING)
    try:
        AccessLog("test.quiet", "rpc").write(dict(FIELDS))
    finally:
        logging.getLogger("test.quiet").setLevel(logging.NOTSET)
    assert configured() == []


def test_an_access_line_reaches_every_other_handler_as_an_ordinary_record(configured):
    _json_only()
    seen: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = seen.append
    logging.getLogger().addHandler(handler)
    try:
        AccessLog("test.shared", "rpc").write(dict(FIELDS))
    finally:
        logging.getLogger().removeHandler(handler)
    (record,) = seen
    assert (record.name, record.getMessage(), record.method, record.reason) == (
        "test.shared",
        "rpc",
        "/svc.v1.S/M",
        "PLAN_NOT_FOUND",
    )
    (line,) = configured()
    assert line["logger"] == "test.shared" and line["reason"] == "PLAN_NOT_FOUND"


class _Writes(io.StringIO):
    """A stream that keeps each write apart."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[str] = []

    def write(self, text: str) -> int:
        self.writes.append(text)
        return super().write(text)


def test_a_batch_is_written_as_whole_lines_of_at_most_pipe_buf_bytes_a_write():
    """The server processes of --processes share one stderr: a write to a pipe is kept whole (never
    interleaved with another process's) only up to PIPE_BUF (4096) bytes."""
    stream = _Writes()
    writer = BatchingWriter(JsonFormatter("svc"), stream, interval_s=60)  # one batch, at stop()
    logger = _logger(writer, "test.pipe_buf")
    for i in range(300):
        logger.info("line %s", i, extra={"padding": "x" * (i % 50)})
    writer.stop()
    assert len(stream.writes) > 1
    assert all(len(text.encode()) <= 4096 and text.endswith("\n") for text in stream.writes)
    lines = [json.loads(line) for text in stream.writes for line in text.splitlines()]
    assert [line["message"] for line in lines] == [f"line {i}" for i in range(300)]
