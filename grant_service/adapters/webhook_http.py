"""Webhook deliveries over HTTP, through httpx: one POST per attempt, TLS verified, redirects not
followed (a 3xx is a failed attempt), connect and read timeouts, at most 64 KiB of the answer read.

Before each attempt the target is checked against the server's UrlPolicy again (the endpoint may
predate a stricter setting), and its host name is resolved and every address checked (loopback,
private, link-local ... refused unless allowed), so a name that points inside the network is not
reached. The connection resolves the name again: a DNS answer that changes in between (DNS
rebinding) is not caught here; where that matters, send webhooks through an egress proxy
(docs/security.md)."""

from __future__ import annotations

import socket
import time
from collections.abc import Mapping
from datetime import timedelta
from urllib.parse import urlsplit

import httpx

from grant_service.domain.webhooks import AttemptResult, UrlPolicy

ANSWER_READ_LIMIT = 64 * 1024
USER_AGENT = "credit-grants-webhooks/1"


class HttpWebhookSender:
    def __init__(
        self,
        policy: UrlPolicy,
        *,
        connect_timeout_s: float = 5.0,
        timeout_s: float = 10.0,
        max_connections: int = 64,
    ) -> None:
        self._policy = policy
        self._client = httpx.Client(
            follow_redirects=False,
            verify=True,
            trust_env=False,  # no proxy or certificates from the environment by surprise
            timeout=httpx.Timeout(timeout_s, connect=connect_timeout_s),
            limits=httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections),
            headers={"user-agent": USER_AGENT},
        )
        self.timeout = timedelta(seconds=connect_timeout_s + timeout_s)

    def close(self) -> None:
        self._client.close()

    def _refused(self, url: str) -> str | None:
        problems = self._policy.problems(url)
        if problems:
            return f"target refused: {problems[0].description} [{problems[0].reason}]"
        if self._policy.allow_private:
            return None
        parts = urlsplit(url)
        try:
            infos = socket.getaddrinfo(parts.hostname, parts.port or 443, type=socket.SOCK_STREAM)
        except OSError as error:
            return f"cannot resolve host: {error}"
        problem = self._policy.addresses_problem(info[4][0] for info in infos)
        return None if problem is None else f"target refused: {problem.description} [{problem.reason}]"

    def send(self, url: str, headers: Mapping[str, str], body: bytes) -> AttemptResult:
        started = time.monotonic()
        refused = self._refused(url)
        if refused is not None:
            return AttemptResult(False, 0, refused, _since(started))
        try:
            with self._client.stream(
                "POST", url, content=body, headers={**headers, "content-type": "application/json"}
            ) as response:
                read = 0
                for chunk in response.iter_bytes():
                    read += len(chunk)
                    if read >= ANSWER_READ_LIMIT:
                        break
                status = response.status_code
        except httpx.TimeoutException as error:
            return AttemptResult(False, 0, f"timeout ({type(error).__name__})", _since(started))
        except httpx.HTTPError as error:
            return AttemptResult(False, 0, f"{type(error).__name__}: {error}"[:500], _since(started))
        if 200 <= status < 300:
            return AttemptResult(True, status, "", _since(started))
        error = f"HTTP {status}" + (" (redirect not followed)" if 300 <= status < 400 else "")
        return AttemptResult(False, status, error, _since(started))


def _since(started: float) -> timedelta:
    return timedelta(seconds=time.monotonic() - started)
