"""The outbox retry policy: capped exponential backoff with full jitter."""

from __future__ import annotations

import random
from datetime import timedelta

import pytest

from catalog_service.domain.backoff import BackoffPolicy, seeded

POLICY = BackoffPolicy(base=timedelta(milliseconds=100), cap=timedelta(seconds=10))


def test_ceiling_doubles_from_the_base_then_stays_at_the_cap():
    ceilings = [POLICY.ceiling(n) for n in range(1, 10)]
    assert ceilings == [
        timedelta(milliseconds=100),
        timedelta(milliseconds=200),
        timedelta(milliseconds=400),
        timedelta(milliseconds=800),
        timedelta(milliseconds=1600),
        timedelta(milliseconds=3200),
        timedelta(milliseconds=6400),
        timedelta(seconds=10),
        timedelta(seconds=10),
    ]


def test_a_huge_attempt_count_is_capped_without_overflow():
    assert POLICY.ceiling(10**9) == timedelta(seconds=10)
    assert timedelta(0) <= POLICY.delay(10**9, seeded(1)) <= timedelta(seconds=10)


@pytest.mark.parametrize("attempt", [1, 2, 5, 8, 50])
def test_delays_are_within_zero_and_the_ceiling(attempt):
    rng = seeded(attempt)
    delays = [POLICY.delay(attempt, rng) for _ in range(500)]
    assert all(timedelta(0) <= d <= POLICY.ceiling(attempt) for d in delays)
    # Full jitter spreads over the whole window, not around its middle only.
    ceiling = POLICY.ceiling(attempt)
    assert min(delays) < ceiling / 10
    assert max(delays) > ceiling * 9 / 10


def test_same_seed_same_delays_and_different_seed_different_delays():
    def run(seed: int) -> list[timedelta]:
        rng = seeded(seed)
        return [POLICY.delay(n, rng) for n in range(1, 20)]

    assert run(42) == run(42)
    assert run(42) != run(43)


def test_delay_uses_the_injected_source_in_whole_microseconds():
    class Fixed:
        def __init__(self) -> None:
            self.calls: list[tuple[int, int]] = []

        def randint(self, a: int, b: int) -> int:
            self.calls.append((a, b))
            return b

    source = Fixed()
    assert POLICY.delay(3, source) == timedelta(milliseconds=400)
    assert source.calls == [(0, 400_000)]


def test_rejects_bad_parameters():
    with pytest.raises(ValueError):
        BackoffPolicy(base=timedelta(0))
    with pytest.raises(ValueError):
        BackoffPolicy(base=timedelta(seconds=2), cap=timedelta(seconds=1))
    with pytest.raises(ValueError):
        POLICY.ceiling(0)


def test_default_policy_is_half_a_second_capped_at_a_minute():
    policy = BackoffPolicy()
    assert policy.ceiling(1) == timedelta(milliseconds=500)
    assert policy.ceiling(100) == timedelta(minutes=1)
    assert isinstance(seeded(0), random.Random)
