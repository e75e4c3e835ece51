"""Server-assigned ids: the batch encoder writes exactly the ULID encoding of the time and of 80
random bits; ids derived from a key are the same for the same key."""

from __future__ import annotations

import os

from credit_common import ids

CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


def reference_id(prefix: str, millis: int, random80: int) -> str:
    """The definition: 26 Crockford digits of (millis << 80 | 80 random bits)."""
    value = (millis << 80) | random80
    digits = []
    for _ in range(26):
        digits.append(CROCKFORD[value & 31])
        value >>= 5
    return f"{prefix}_{''.join(reversed(digits))}"


def random_bits(sixteen: bytes) -> int:
    """The 80 random bits that 16 random bytes give: the low 5 bits of each, in order."""
    value = 0
    for byte in sixteen:
        value = (value << 5) | (byte & 31)
    return value


def test_new_ids_encode_time_and_randomness_as_the_ulid_encoding(monkeypatch):
    randomness = os.urandom(16 * 5)
    for millis in (0, 1, 1_767_225_600_123, (1 << 48) - 1):
        monkeypatch.setattr(ids.time, "time_ns", lambda m=millis: m * 1_000_000 + 999_999)
        monkeypatch.setattr(ids.os, "urandom", lambda n: randomness[:n])
        assert ids.new_ids("grt", 5) == [
            reference_id("grt", millis, random_bits(randomness[16 * i : 16 * i + 16])) for i in range(5)
        ]
        assert ids.new_id("led") == reference_id("led", millis, random_bits(randomness[:16]))


def test_every_random_digit_is_equally_likely():
    """Each byte value gives one digit, and each digit comes from 8 of the 256 byte values."""
    counts = {digit: 0 for digit in CROCKFORD}
    for byte in range(256):
        counts[ids._RANDOM_DIGIT[byte : byte + 1].decode()] += 1
    assert set(counts.values()) == {8}


def test_new_ids_are_distinct_and_sort_by_creation_time():
    batch = ids.new_ids("led", 1000)
    assert len(set(batch)) == 1000
    assert all(len(i) == len("led_") + 26 and set(i[4:]) <= set(CROCKFORD) for i in batch)
    assert ids.new_id("led")[4:14] >= batch[0][4:14]


def test_derived_ids_are_the_same_for_the_same_key_and_look_like_new_ids():
    first = ids.derived_id("evt", "CREDITS_GRANTED:grt_1")
    assert first == ids.derived_id("evt", "CREDITS_GRANTED:grt_1")
    assert len(first) == len("evt_") + 26 and set(first[4:]) <= set(CROCKFORD)
    keys = [f"CREDITS_GRANTED:grt_{i}" for i in range(10_000)]
    assert len({ids.derived_id("evt", key) for key in keys}) == len(keys)


def test_derived_ids_ordered_by_an_id_of_ours_sort_by_its_time_and_stay_distinct():
    grants = ids.new_ids("grt", 5000)  # one millisecond's: the same time digits
    later = ids.new_id("grt")
    made = [ids.derived_id("evt", f"CREDITS_GRANTED:{g}", ordered_by=g) for g in grants]
    assert len(set(made)) == len(made)
    assert all(m[4:14] == g[4:14] for m, g in zip(made, grants, strict=True))  # the grant's time digits lead
    assert ids.derived_id("evt", f"CREDITS_EXPIRED:{later}", ordered_by=later)[4:14] >= made[0][4:14]
    assert len(made[0]) == len(later) and set(made[0][4:]) <= set(CROCKFORD)
    # Not one of our ids: the hash alone.
    assert ids.derived_id("evt", "SUBSCRIPTION_ENDED:acme-42", ordered_by="acme-42") == ids.derived_id(
        "evt", "SUBSCRIPTION_ENDED:acme-42"
    )
