"""request_id idempotency (AIP-155): the one rule both services follow.

The first call with a request_id runs its effect and records, in the same
transaction, (scope, request_id, fingerprint of the request, its result). A
later call with the same request_id and fingerprint changes nothing and gets
that first result back; with another fingerprint it is ALREADY_EXISTS (reason
REQUEST_ID_REUSED). Each service keeps the records in its own database behind
a `RequestStore`; what a result is (a response, a resource id) is its own affair.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Generic, Protocol, TypeVar

from credit_common import fields
from credit_common.errors import AlreadyExists, Violations

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class SeenRequest(Generic[T]):
    fingerprint: str
    result: T


class RequestStore(Protocol[T]):
    def get(self, scope: str, request_id: str) -> SeenRequest[T] | None: ...

    def add(self, scope: str, request_id: str, fingerprint: str, result: T, now: datetime) -> None: ...


_PLAIN = re.compile(r'[ -!#-\[\]-~]*')  # printable ASCII but '"' and '\\': JSON writes them as they are


def fingerprint(*values: Any) -> str:
    """A stable digest of the values that make a request what it is (everything but its request_id):
    the SHA-256 of their JSON. Stored with each request id, so it never changes: a request sent
    again after an upgrade must match. Strings that JSON writes as they are (keys, amounts) are
    joined here as `json.dumps` joins them, faster (a batched usage makes one: docs/performance.md)."""
    if values and all(type(value) is str for value in values) and _PLAIN.fullmatch("".join(values)):
        text = '["' + '", "'.join(values) + '"]'
    else:
        text = json.dumps(values, default=str, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()


def check_request_id(request_id: str, field: str = "request_id") -> None:
    """INVALID_ARGUMENT if `request_id` is too long (credit_common.fields.check_request_id)."""
    violations = Violations()
    fields.check_request_id(request_id, field, violations)
    violations.raise_if_any(f"{field} is too long")


def replay(store: RequestStore[T], scope: str, request_id: str, print_: str) -> T | None:
    """The first result for `request_id` in `scope`, None if the request is new (or has no request_id);
    ALREADY_EXISTS (REQUEST_ID_REUSED) if the request_id came with another request."""
    if not request_id:
        return None
    seen = store.get(scope, request_id)
    if seen is None:
        return None
    if seen.fingerprint != print_:
        raise AlreadyExists(
            f"request_id {request_id!r} was already used for a different {scope} request",
            reason="REQUEST_ID_REUSED",
            metadata={"request_id": request_id, "method": scope},
        )
    return seen.result


def remember(store: RequestStore[T], scope: str, request_id: str, print_: str, result: T, now: datetime) -> None:
    """Record `request_id` in the transaction of the effect it guards (nothing without a request_id)."""
    if request_id:
        store.add(scope, request_id, print_, result, now)
