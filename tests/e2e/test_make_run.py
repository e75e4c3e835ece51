"""`make run` in a terminal, stopped with Ctrl-C: both services stop and make reports no error
(it used to end in `make: *** [Makefile:..: run] Error 2`, from a `kill` without jobs under
`set -e` in the EXIT trap). The databases, keys and ports are the test's own (`DATA=`, the
services' variables); `-o setup` keeps make from touching the virtualenv."""

from __future__ import annotations

import contextlib
import os
import pty
import select
import signal
import socket
import time
from pathlib import Path

import pytest

from tests.support.postgres import free_port

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


def read_until(fd: int, done, timeout_s: float) -> bytes:
    out = b""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and not done(out):
        ready, _, _ = select.select([fd], [], [], 0.5)
        if not ready:
            continue
        try:
            chunk = os.read(fd, 65536)
        except OSError:  # the terminal closed: everything exited
            break
        if not chunk:
            break
        out += chunk
    return out


def listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def test_ctrl_c_stops_both_services_without_an_error(tmp_path):
    grant_port, catalog_port = free_port(), free_port()
    env = {
        **os.environ,
        "GRANT_LISTEN": f"127.0.0.1:{grant_port}",
        "CATALOG_LISTEN": f"127.0.0.1:{catalog_port}",
        "CATALOG_GRANT_SERVICE_ADDRESS": f"127.0.0.1:{grant_port}",
        "GRANT_DATABASE_URL": f"sqlite:///{tmp_path / 'grant.db'}",
        "CATALOG_DATABASE_URL": f"sqlite:///{tmp_path / 'catalog.db'}",
    }
    pid, fd = pty.fork()
    if pid == 0:  # the child: make in a terminal of its own, as a user runs it
        os.execvpe("make", ["make", "-C", str(ROOT), "-o", "setup", "run", f"DATA={tmp_path / 'data'}"], env)
    try:
        started = read_until(fd, lambda out: out.count(b'"message": "serving"') >= 2, 120)
        assert started.count(b'"message": "serving"') >= 2, started.decode(errors="replace")
        assert (tmp_path / "data/grant-admin.key").read_text().startswith("cgk_")
        os.write(fd, b"\x03")  # Ctrl-C: SIGINT to the terminal's foreground process group
        stopped = read_until(fd, lambda out: False, 60)
    finally:
        _, status = os.waitpid(pid, 0)
        os.close(fd)
        with contextlib.suppress(ProcessLookupError):  # whatever the terminal's session left running
            os.killpg(pid, signal.SIGKILL)
    text = stopped.decode(errors="replace")
    assert "Error" not in text, text
    assert text.count('"message": "stopped"') == 2, text
    assert os.waitstatus_to_exitcode(status) in (0, -2)  # make itself ends by the SIGINT it got, or cleanly
    assert not listening(grant_port) and not listening(catalog_port)
