"""Opaque page tokens (AIP-158): a page token carries the sort key of the last
item returned and a fingerprint of the filters, so a token cannot be replayed
with other filters."""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from credit_common.errors import FieldViolation, InvalidArgument

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 1000


@dataclass(frozen=True, slots=True)
class PageRequest:
    size: int
    after: tuple[Any, ...] | None  # sort key of the last item of the previous page


def _fingerprint(filters: Sequence[Any]) -> str:
    return hashlib.sha256(json.dumps(list(filters), default=str).encode()).hexdigest()[:16]


def page_request(page_size: int, page_token: str, filters: Sequence[Any] = ()) -> PageRequest:
    """Validate `page_size`/`page_token` of a List request."""
    if page_size < 0:
        raise InvalidArgument(
            "page_size must not be negative",
            violations=[FieldViolation("page_size", "must be between 0 and 1000 (0 means the default, 50)")],
        )
    size = min(page_size or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)
    if not page_token:
        return PageRequest(size, None)
    try:
        payload = json.loads(base64.urlsafe_b64decode(page_token.encode() + b"==="))
        after, fingerprint = payload["a"], payload["f"]
        if not isinstance(after, list):
            raise ValueError
    except (ValueError, KeyError, TypeError):
        raise InvalidArgument(
            "page_token is not a token returned by this method",
            reason="INVALID_PAGE_TOKEN",
            violations=[FieldViolation("page_token", "is not a next_page_token returned by this method")],
        ) from None
    if fingerprint != _fingerprint(filters):
        raise InvalidArgument(
            "page_token was issued for other filters",
            reason="INVALID_PAGE_TOKEN",
            violations=[FieldViolation("page_token", "was issued for a request with other filters")],
        )
    return PageRequest(size, tuple(after))


def next_page_token(last_key: Sequence[Any] | None, filters: Sequence[Any] = ()) -> str:
    """Token of the page after the item whose sort key is `last_key` ('' when there is none)."""
    if last_key is None:
        return ""
    payload = json.dumps({"a": list(last_key), "f": _fingerprint(filters)}, default=str)
    return base64.urlsafe_b64encode(payload.encode()).decode().rstrip("=")
