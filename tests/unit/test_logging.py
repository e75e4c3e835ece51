"""The JSON log: RPC threads only enqueue; one writer thread formats and writes batches,
and nothing queued is lost when it stops."""

from __future__ import annotations

import io
import json
import logging
import threading

from credit_common.logging import BatchingWriter, JsonFormatter, _Enqueue


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
