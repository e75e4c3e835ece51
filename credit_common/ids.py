"""Identifiers: caller-chosen keys and server-assigned, time-ordered ids."""

from __future__ import annotations

import base64
import hashlib
import os
import re
import time

KEY_PATTERN = re.compile(r"^[a-z][a-z0-9_-]{0,62}$")
KEY_RULE = "must be 1 to 63 lowercase letters, digits, '-' or '_', starting with a letter"
REQUEST_ID_MAX_LENGTH = 128

_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
# RFC 4648 base32 (what the C encoder writes) to Crockford's alphabet, digit for digit.
_TO_CROCKFORD = bytes.maketrans(b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567", _CROCKFORD.encode())
# A random byte to a random digit: its low 5 bits (256 is a multiple of 32: each digit equally likely).
_RANDOM_DIGIT = bytes(ord(_CROCKFORD[byte & 31]) for byte in range(256))


_heads: dict[str, tuple[int, str]] = {}  # prefix -> (millisecond, its ids' time digits), the last made


def is_valid_key(key: str) -> bool:
    return bool(KEY_PATTERN.match(key))


def new_id(prefix: str) -> str:
    """A ULID-style id with a prefix, e.g. "sub_01JBX3Q...": sortable by creation time, 128 bits."""
    return new_ids(prefix, 1)[0]


def new_ids(prefix: str, n: int) -> list[str]:
    """n ids as `new_id` makes them: 26 Crockford base32 digits of (milliseconds << 80 | 80 random
    bits), i.e. 10 digits of the time then 16 of randomness. Made in one go for a batch: the catch-up
    makes two ids per grant, and one at a time was a visible share of a batch (docs/performance.md).
    The random digits are random bytes mapped to digits by `bytes.translate` (in C), 5 bits each:
    base64's base32 encoder is Python code, several times slower (docs/performance.md)."""
    if n <= 0:
        return []
    millis = time.time_ns() // 1_000_000
    last = _heads.get(prefix)
    if last is not None and last[0] == millis:  # a debit makes several ids a millisecond: encoded once
        head = last[1]
    else:
        # 10 bytes of the time encode to 16 digits, of which the last 10 hold its 50 low bits.
        head = f"{prefix}_{base64.b32encode(millis.to_bytes(10, 'big')).translate(_TO_CROCKFORD)[-10:].decode()}"
        _heads[prefix] = (millis, head)
    tails = os.urandom(16 * n).translate(_RANDOM_DIGIT).decode()
    return [head + tails[i : i + 16] for i in range(0, 16 * n, 16)]


_OUR_ID = re.compile(rf"^[a-z]+_[{_CROCKFORD}]{{26}}$")  # what new_ids makes


def derived_id(prefix: str, key: str, *, ordered_by: str = "") -> str:
    """The id of the thing that `key` names uniquely: the same key always gives the same id, two keys
    practically never one. With `ordered_by` an id of ours (`new_id`'s), the id starts with that id's
    ten time digits, then 16 hexadecimal digits (64 bits) of the SHA-256 of the key: ids of things
    made about the same time sort together, and a unique index on them grows at a few places instead
    of at a random one per insert (an insert at a random place of a large B-tree cost SQLite twice as
    much: docs/performance.md). Otherwise 26 hexadecimal digits (104 bits) of the hash. Hexadecimal
    digits are Crockford digits too (the ids look like the others); base64's base32 encoder is Python
    code. A collision needs two keys with the same time digits (things made in the same millisecond)
    and the same 64 bits: about 1 in 10^11 for ten thousand of them."""
    digest = hashlib.sha256(key.encode()).hexdigest()
    if _OUR_ID.match(ordered_by):
        start = ordered_by.index("_") + 1
        return f"{prefix}_{ordered_by[start : start + 10]}{digest[:16].upper()}"
    return f"{prefix}_{digest[:26].upper()}"
