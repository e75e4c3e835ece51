"""Identifiers: caller-chosen keys and server-assigned, time-ordered ids."""

from __future__ import annotations

import os
import re
import time

KEY_PATTERN = re.compile(r"^[a-z][a-z0-9_-]{0,62}$")
KEY_RULE = "must be 1 to 63 lowercase letters, digits, '-' or '_', starting with a letter"
REQUEST_ID_MAX_LENGTH = 128

_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


def is_valid_key(key: str) -> bool:
    return bool(KEY_PATTERN.match(key))


def new_id(prefix: str) -> str:
    """A ULID-style id with a prefix, e.g. "sub_01JBX3Q...": sortable by creation time, 128 bits."""
    millis = time.time_ns() // 1_000_000
    value = (millis << 80) | int.from_bytes(os.urandom(10), "big")
    chars = []
    for _ in range(26):
        chars.append(_CROCKFORD[value & 31])
        value >>= 5
    return f"{prefix}_{''.join(reversed(chars))}"
