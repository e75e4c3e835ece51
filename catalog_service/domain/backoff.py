"""Retry policy of the outbox: capped exponential backoff with full jitter.

After the n-th failed attempt (n >= 1) the next attempt waits a duration drawn
uniformly from [0, min(cap, base * 2**(n-1))], in whole microseconds ("full
jitter", see the AWS Architecture Blog, "Exponential Backoff And Jitter"): many
deliveries failing together (the grant service is down) spread their retries
over the window instead of retrying in lockstep. The random source is injected,
so a seeded `random.Random` gives the same delays every run.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import timedelta
from typing import Protocol

_MICROSECOND = timedelta(microseconds=1)


class RandomSource(Protocol):
    def randint(self, a: int, b: int) -> int:
        """An integer N with a <= N <= b."""
        ...


@dataclass(frozen=True, slots=True)
class BackoffPolicy:
    base: timedelta = timedelta(milliseconds=500)
    cap: timedelta = timedelta(minutes=1)

    def __post_init__(self) -> None:
        if self.base <= timedelta(0):
            raise ValueError("backoff base must be positive")
        if self.cap < self.base:
            raise ValueError("backoff cap must be at least the base")

    def ceiling(self, attempt: int) -> timedelta:
        """The longest wait after the `attempt`-th failure: base * 2**(attempt-1), capped."""
        if attempt < 1:
            raise ValueError("attempt counts from 1")
        base_us = self.base // _MICROSECOND
        cap_us = self.cap // _MICROSECOND
        # Stop doubling once past the cap: no huge integers for a large attempt count.
        doublings = min(attempt - 1, cap_us.bit_length())
        return timedelta(microseconds=min(cap_us, base_us << doublings))

    def delay(self, attempt: int, rng: RandomSource) -> timedelta:
        """The wait before the next attempt after the `attempt`-th failure, drawn from `rng`."""
        return timedelta(microseconds=rng.randint(0, self.ceiling(attempt) // _MICROSECOND))


def seeded(seed: int) -> random.Random:
    """A deterministic random source for tests and reproducible runs."""
    return random.Random(seed)
