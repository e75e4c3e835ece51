"""A small webhook receiver for tests: http.server on 127.0.0.1, port 0, in a thread. It records
every request (headers, body) and answers as told: a status per request in turn (then `status`),
or holds requests until released (a hanging receiver)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass(frozen=True)
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    answered: int


@dataclass
class Receiver:
    status: int = 204
    statuses: list[int] = field(default_factory=list)  # answers for the next requests, in turn
    hold: threading.Event | None = None  # while set to an unset Event, requests wait for it
    received: list[Received] = field(default_factory=list)
    holding: int = 0  # requests waiting now
    lock: threading.Lock = field(default_factory=threading.Lock)
    port: int = 0
    location: str | None = None  # sent as Location with every answer (a redirect with a 3xx status)
    tls: bool = False

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}/hooks"

    def answer(self) -> int:
        with self.lock:
            return self.statuses.pop(0) if self.statuses else self.status

    def ids(self) -> list[str]:
        with self.lock:
            return [r.headers["webhook-id"] for r in self.received]

    def ok_ids(self) -> list[str]:
        with self.lock:
            return [r.headers["webhook-id"] for r in self.received if 200 <= r.answered < 300]

    def count(self) -> int:
        with self.lock:
            return len(self.received)


def _handler(receiver: Receiver) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("content-length", "0")))
            hold = receiver.hold
            if hold is not None:
                with receiver.lock:
                    receiver.holding += 1
                hold.wait(60)
                with receiver.lock:
                    receiver.holding -= 1
            status = receiver.answer()
            with receiver.lock:
                receiver.received.append(Received(self.path, dict(self.headers.items()), body, status))
            try:
                answer = b"" if status in (204, 304) else b"ok"
                self.send_response(status)
                if receiver.location is not None:
                    self.send_header("location", receiver.location)
                if status not in (204, 304):
                    self.send_header("content-length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)
            except OSError:
                pass  # the sender gave up (a timeout)

        def log_message(self, format: str, *args) -> None:  # quiet
            pass

    return Handler


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address) -> None:
        pass  # a sender that gave up (a timeout) or went away: nothing to report


@contextmanager
def receiving(**options) -> Iterator[Receiver]:
    """A receiver; with tls=True it serves HTTPS with a certificate of a throwaway CA (trustme) that
    no client trusts."""
    receiver = Receiver(**options)
    server = _Server(("127.0.0.1", 0), _handler(receiver))
    if receiver.tls:
        import ssl

        import trustme

        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        trustme.CA().issue_cert("127.0.0.1").configure_cert(context)
        server.socket = context.wrap_socket(server.socket, server_side=True)
    receiver.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, name="webhook-receiver", daemon=True)
    thread.start()
    try:
        yield receiver
    finally:
        if receiver.hold is not None:
            receiver.hold.set()
        server.shutdown()
        server.server_close()


def wait_for(predicate: Callable[[], object], what: str, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)
