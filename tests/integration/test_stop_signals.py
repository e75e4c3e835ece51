"""Ctrl-C or SIGTERM at any moment of a service's start (credit_common.signals): the signal is kept
and the process stops once it has started what it must, instead of a KeyboardInterrupt half way
through the start that left the server's threads running and the process alive (`make run` stopped
with Ctrl-C right after the catalog said "serving" left it running)."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from catalog_service.entrypoints.app import DEFINITION
from credit_common import runtime
from credit_common.config import parse_service_args
from credit_common.signals import StopSignals

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def restored_handlers():
    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    yield
    for sig, handler in saved.items():
        signal.signal(sig, handler)


def _settings(tmp_path):
    return parse_service_args(
        service=DEFINITION.name,
        env_prefix="UNUSED_IN_TESTS",
        default_port=0,
        database_file="unused.db",
        flags=DEFINITION.flags,
        argv=["serve", "--listen", "127.0.0.1:0", "--database-url", f"sqlite:///{tmp_path / 'c.db'}", "--migrate"],
    )


def _messages(caplog) -> list[str]:
    return [record.getMessage() for record in caplog.records if record.name.startswith("credit_grants.")]


def test_a_caught_signal_is_recorded_not_raised(restored_handlers):
    signals = StopSignals.catch()
    os.kill(os.getpid(), signal.SIGINT)  # no KeyboardInterrupt
    assert signals.wait(10)
    assert signals.received() and signals.name == "SIGINT"
    os.kill(os.getpid(), signal.SIGTERM)  # a second signal changes nothing
    assert signals.name == "SIGINT"


# A process that waits for its stop signal while the kernel hands the signal to another of its threads.
_SIGNAL_ON_ANOTHER_THREAD = """
import signal, threading, time
from credit_common.signals import StopSignals
signals = StopSignals.catch()
other = threading.Thread(target=time.sleep, args=(60,), daemon=True)
other.start()
threading.Timer(0.2, signal.pthread_kill, (other.ident, signal.SIGTERM)).start()
print(signals.wait(), signals.name, flush=True)
"""


def test_a_signal_that_another_thread_receives_still_ends_the_wait():
    """The kernel may hand a process's SIGINT or SIGTERM to any of its threads; its Python handler
    runs in the main thread, which a wait on a lock with no timeout never gave the chance (CPython
    issue 85300): the catalog went on serving after `make run`'s Ctrl-C and the `kill` after it."""
    done = subprocess.run(
        [sys.executable, "-c", _SIGNAL_ON_ANOTHER_THREAD], capture_output=True, text=True, timeout=10, cwd=ROOT
    )
    assert done.stdout.split() == ["True", "SIGTERM"], done.stderr


def test_a_wait_with_a_timeout_ends_without_a_signal():
    signals = StopSignals()
    started = time.monotonic()
    assert not signals.wait(0.3)
    assert time.monotonic() - started >= 0.3


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_signal_while_connecting_stops_before_serving(sig, tmp_path, monkeypatch, caplog, restored_handlers):
    opened = runtime.open_engine

    def open_then_signal(*args, **kwargs):
        engine = opened(*args, **kwargs)
        os.kill(os.getpid(), sig)
        return engine

    def never(*_args, **_kwargs):
        raise AssertionError("built a server after the stop signal")

    monkeypatch.setattr(runtime, "open_engine", open_then_signal)
    monkeypatch.setattr(runtime, "build", never)
    monkeypatch.setattr(runtime, "configure_logging", lambda *_args, **_kwargs: None)
    caplog.set_level(logging.INFO)
    assert runtime.main(DEFINITION, _settings(tmp_path)) == 0
    assert _messages(caplog) == ["shutting down", "stopped"]  # and no "serving"


def test_a_signal_while_building_stops_once_built(tmp_path, monkeypatch, caplog, restored_handlers):
    """The signal arrives while the server and its background work start (the window of the old
    bug): the start completes, then the server drains and stops as on a signal while serving."""
    built = runtime.build
    servers = []

    def build_then_signal(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGINT)
        running = built(*args, **kwargs)
        servers.append(running)
        return running

    monkeypatch.setattr(runtime, "build", build_then_signal)
    monkeypatch.setattr(runtime, "configure_logging", lambda *_args, **_kwargs: None)
    monkeypatch.setattr(runtime, "quiet_garbage_collection", lambda: None)  # process-wide: not in a test
    caplog.set_level(logging.INFO)
    assert runtime.main(DEFINITION, _settings(tmp_path)) == 0
    messages = _messages(caplog)
    assert messages[0] == "shutting down" and messages[-1] == "stopped"
    assert "serving" in messages
    assert messages.count("stopped") == 1
    (running,) = servers
    assert not running.server.wait_for_termination(0)  # False: terminated (no time out), not left serving
