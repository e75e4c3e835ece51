"""Opaque page tokens (AIP-158): a page token carries the sort key of the last
item returned and a fingerprint of the method and of the filters, so a token
is accepted only by the list method that issued it, with the same filters.

A token comes from the caller, so everything in it is checked: its sort key
must have the shape the method declares (`key`: str, int or datetime per
element); a forged, truncated or foreign token is INVALID_ARGUMENT
(INVALID_PAGE_TOKEN), never an error deeper down."""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

from credit_common.errors import FieldViolation, InvalidArgument

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 1000
MAX_TOKEN_CHARS = 2048
_MAX_KEY_TEXT = 512
_INT64 = range(-(2**63), 2**63)

KeyType = type[str] | type[int] | type[datetime]
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class PageRequest:
    size: int
    after: tuple[Any, ...] | None  # sort key of the last item of the previous page (decoded: datetimes are datetimes)
    method: str = ""
    filters: tuple[Any, ...] = ()

    def token_after(self, last_key: Sequence[Any] | None) -> str:
        """The next page's token: after the item whose sort key is `last_key` ('' when there is none)."""
        return next_page_token(last_key, self.filters, method=self.method)

    def cut(self, items: Sequence[T], sort_key: Callable[[T], Sequence[Any]]) -> tuple[list[T], str]:
        """The page of `items`, read with one more than the page size (`size + 1`) to learn whether
        another page follows, and the next page's token ('' on the last page)."""
        if len(items) > self.size:
            return list(items[: self.size]), self.token_after(sort_key(items[self.size - 1]))
        return list(items), ""


def _fingerprint(method: str, filters: Sequence[Any]) -> str:
    return hashlib.sha256(json.dumps([method, *filters], default=str).encode()).hexdigest()[:16]


def _invalid(description: str) -> InvalidArgument:
    return InvalidArgument(
        f"page_token {description}",
        reason="INVALID_PAGE_TOKEN",
        violations=[FieldViolation("page_token", description)],
    )


def page_request(
    page_size: int, page_token: str, filters: Sequence[Any] = (), *, method: str, key: Sequence[KeyType]
) -> PageRequest:
    """Validate `page_size`/`page_token` of a List request of `method` (its full
    gRPC name), whose sort key has the element types `key`."""
    if page_size < 0:
        raise InvalidArgument(
            "page_size must not be negative",
            violations=[FieldViolation("page_size", "must be between 0 and 1000 (0 means the default, 50)")],
        )
    size = min(page_size or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)
    filters = tuple(filters)
    if not page_token:
        return PageRequest(size, None, method, filters)
    not_ours = "is not a next_page_token returned by this method"
    if len(page_token) > MAX_TOKEN_CHARS:
        raise _invalid(not_ours)
    try:
        payload = json.loads(base64.urlsafe_b64decode(page_token.encode() + b"==="))
    except (ValueError, binascii.Error, RecursionError):  # UnicodeError and JSONDecodeError are ValueErrors
        raise _invalid(not_ours) from None
    if not isinstance(payload, dict) or not isinstance(payload.get("a"), list) or not isinstance(payload.get("f"), str):
        raise _invalid(not_ours)
    if payload["f"] != _fingerprint(method, filters):
        raise _invalid("was issued by another method or for a request with other filters")
    after = _decode_key(payload["a"], key)
    if after is None:
        raise _invalid(not_ours)
    return PageRequest(size, after, method, filters)


def _decode_key(values: list[Any], types: Sequence[KeyType]) -> tuple[Any, ...] | None:
    if len(values) != len(types):
        return None
    decoded: list[Any] = []
    for value, type_ in zip(values, types, strict=True):
        if type_ is int:
            if type(value) is not int or value not in _INT64:
                return None
            decoded.append(value)
            continue
        if type(value) is not str or len(value) > _MAX_KEY_TEXT or "\x00" in value:
            return None
        if type_ is datetime:
            try:
                instant = datetime.fromisoformat(value)
                if instant.tzinfo is None:
                    return None
                decoded.append(instant.astimezone(UTC))
            except (ValueError, OverflowError):
                return None
        else:
            decoded.append(value)
    return tuple(decoded)


def next_page_token(last_key: Sequence[Any] | None, filters: Sequence[Any] = (), *, method: str) -> str:
    """Token of the page after the item whose sort key is `last_key` ('' when there is none)."""
    if last_key is None:
        return ""
    encoded = [v.isoformat() if isinstance(v, datetime) else v for v in last_key]
    payload = json.dumps({"a": encoded, "f": _fingerprint(method, filters)}, default=str)
    return base64.urlsafe_b64encode(payload.encode()).decode().rstrip("=")
