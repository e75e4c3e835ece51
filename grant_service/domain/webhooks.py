"""Webhook endpoints and their deliveries: plain values and rules, no I/O.

- Secrets: `whsec_<base64 of 24 random bytes>` (Standard Webhooks); the HMAC key is the decoded
  part after the prefix.
- Signatures (`sign`, `signature_header`): `v1,<base64 HMAC-SHA256 of "<id>.<timestamp>.<body>">`;
  while a rotated secret is in its grace period, the header holds one signature per secret,
  space-separated (the spec allows several; a receiver accepts the message if one verifies).
- Target URLs (`UrlPolicy`): absolute http(s) URLs without user info or fragment; https only
  unless http is allowed; the host must match the allowed patterns when there are any; an
  address that is loopback, private, link-local, multicast, reserved or unspecified is refused
  unless private targets are allowed (checked on the URL's literal IP here, on the resolved
  addresses before each send by the HTTP adapter).
- Failing endpoints (`should_disable`): an endpoint is disabled once its attempts have all
  failed for `disable_after` (default 5 days), counted from the first failure after a success.
"""

from __future__ import annotations

import base64
import enum
import fnmatch
import hashlib
import hmac
import ipaddress
import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from urllib.parse import urlsplit

SECRET_PREFIX = "whsec_"
SECRET_BYTES = 24
URL_MAX_LENGTH = 2048
DESCRIPTION_MAX_LENGTH = 512
EVENT_TYPES_MAX = 64
DEFAULT_PREVIOUS_SECRET_TTL = timedelta(hours=24)
MAX_PREVIOUS_SECRET_TTL = timedelta(days=7)
DEFAULT_DISABLE_AFTER = timedelta(days=5)

STATUS_PENDING = "pending"
STATUS_DELIVERED = "delivered"
STATUS_FAILED = "failed"  # every attempt of the schedule failed: given up


class DisabledReason(enum.Enum):
    NONE = ""
    BY_CALLER = "by_caller"
    FAILING = "failing"


class Trigger(enum.Enum):
    EVENT = "event"
    RESEND = "resend"
    REPLAY = "replay"


def new_secret() -> str:
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode("ascii")


def secret_key(secret: str) -> bytes:
    """The HMAC key of a `whsec_` secret."""
    return base64.b64decode(secret.removeprefix(SECRET_PREFIX))


def sign(secret: str, message_id: str, timestamp: int, body: bytes) -> str:
    """One Standard Webhooks signature: `v1,<base64 HMAC-SHA256 of "id.timestamp.body">`."""
    signed = f"{message_id}.{timestamp}.".encode() + body
    digest = hmac.new(secret_key(secret), signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode("ascii")


def signature_header(secrets_: Sequence[str], message_id: str, timestamp: int, body: bytes) -> str:
    """The `webhook-signature` header: one signature per secret (the current one first)."""
    return " ".join(sign(s, message_id, timestamp, body) for s in secrets_)


@dataclass(frozen=True, slots=True)
class WebhookEndpoint:
    endpoint_id: str
    url: str
    event_types: tuple[str, ...]  # empty: every type
    description: str
    disabled_reason: DisabledReason
    secret: str
    previous_secret: str | None
    previous_secret_expire_time: datetime | None
    create_time: datetime
    update_time: datetime
    failing_since: datetime | None = None

    @property
    def enabled(self) -> bool:
        return self.disabled_reason is DisabledReason.NONE

    def wants(self, event_type: str) -> bool:
        return not self.event_types or event_type in self.event_types

    def signing_secrets(self, now: datetime) -> list[str]:
        """The secrets that sign a delivery at `now`: the current one, and the previous one during
        its grace period."""
        keep_previous = (
            self.previous_secret is not None
            and self.previous_secret_expire_time is not None
            and now < self.previous_secret_expire_time
        )
        return [self.secret, self.previous_secret] if keep_previous else [self.secret]  # type: ignore[list-item]


def should_disable(failing_since: datetime | None, now: datetime, disable_after: timedelta) -> bool:
    """Whether an endpoint whose attempts have all failed since `failing_since` is disabled at `now`."""
    return failing_since is not None and now - failing_since >= disable_after


# ---------------------------------------------------------------------- target URLs


@dataclass(frozen=True, slots=True)
class UrlProblem:
    reason: str  # UPPER_SNAKE, the field violation's reason
    description: str


@dataclass(frozen=True, slots=True)
class UrlPolicy:
    """Where deliveries may go. `allowed_hosts`: fnmatch patterns of host names or IP literals
    ("hooks.example.com", "*.example.com", "10.1.2.*"); empty: any host. `allow_private`: allow
    loopback, private, link-local and other non-public addresses (tests, an internal receiver)."""

    allow_http: bool = False
    allowed_hosts: tuple[str, ...] = ()
    allow_private: bool = False
    schemes: frozenset[str] = field(default=frozenset({"http", "https"}))

    def problems(self, url: str) -> list[UrlProblem]:
        """Everything wrong with `url` as a target (empty: fine)."""
        if not url:
            return [UrlProblem("REQUIRED", "is required")]
        if len(url) > URL_MAX_LENGTH:
            return [UrlProblem("URL_TOO_LONG", f"must be at most {URL_MAX_LENGTH} characters")]
        if any(c.isspace() or ord(c) < 0x20 for c in url):
            return [UrlProblem("INVALID_URL", "must not contain spaces or control characters")]
        try:
            parts = urlsplit(url)
            port = parts.port
        except ValueError as error:
            return [UrlProblem("INVALID_URL", f"is not a valid URL ({error})")]
        scheme = parts.scheme.lower()
        if scheme not in self.schemes or not parts.netloc:
            return [
                UrlProblem("INVALID_URL", "must be an absolute http or https URL such as https://example.com/hooks")
            ]
        problems: list[UrlProblem] = []
        if scheme == "http" and not self.allow_http:
            problems.append(UrlProblem("HTTPS_REQUIRED", "must use https (http is not allowed on this server)"))
        if parts.username is not None or parts.password is not None:
            problems.append(UrlProblem("INVALID_URL", "must not carry a user name or password"))
        if parts.fragment:
            problems.append(UrlProblem("INVALID_URL", "must not have a #fragment"))
        host = (parts.hostname or "").rstrip(".")
        if not host:
            problems.append(UrlProblem("INVALID_URL", "must name a host"))
            return problems
        if port == 0:
            problems.append(UrlProblem("INVALID_URL", "must not use port 0"))
        problem = self.host_problem(host)
        if problem is not None:
            problems.append(problem)
        return problems

    def host_problem(self, host: str) -> UrlProblem | None:
        host = host.lower()
        if self.allowed_hosts and not any(fnmatch.fnmatchcase(host, p.lower()) for p in self.allowed_hosts):
            return UrlProblem("HOST_NOT_ALLOWED", f"host {host!r} is not in this server's allowed webhook hosts")
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            if host == "localhost" or host.endswith(".localhost"):
                return self.address_problem(ipaddress.ip_address("127.0.0.1"))
            return None
        return self.address_problem(address)

    def address_problem(self, address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> UrlProblem | None:
        """A resolved or literal address the policy refuses (None: allowed)."""
        if self.allow_private:
            return None
        mapped = getattr(address, "ipv4_mapped", None)
        if mapped is not None:
            address = mapped
        if not address.is_global or address.is_multicast:
            return UrlProblem("PRIVATE_ADDRESS_NOT_ALLOWED", f"{address} is not a public address")
        return None

    def addresses_problem(self, addresses: Iterable[str]) -> UrlProblem | None:
        for text in addresses:
            problem = self.address_problem(ipaddress.ip_address(text.split("%", 1)[0]))
            if problem is not None:
                return problem
        return None


# ---------------------------------------------------------------------- deliveries


@dataclass(frozen=True, slots=True)
class WebhookMessage:
    """One event as sent: its id (the `webhook-id`), type, and JSON body."""

    event_id: str
    event_type: str
    body: bytes


@dataclass(frozen=True, slots=True)
class AttemptResult:
    """What one HTTP attempt gave: delivered (a 2xx), or the status / the error."""

    delivered: bool
    http_status: int = 0
    error: str = ""
    duration: timedelta = timedelta(0)


@dataclass(frozen=True, slots=True)
class DeliveryAttempt:
    attempt_id: str
    delivery_id: int
    endpoint_id: str
    event_id: str
    attempt: int
    attempt_time: datetime
    duration: timedelta
    http_status: int
    error: str
    next_attempt_time: datetime | None
    trigger: Trigger


@dataclass(frozen=True, slots=True)
class NewDelivery:
    """An event to queue for an endpoint."""

    endpoint_id: str
    event_id: str
    event_seq: int
    event_type: str
    body: bytes
    trigger: Trigger
    trigger_key: str  # "" for the event's own delivery; the resend's or replay's id
    created_at: datetime
