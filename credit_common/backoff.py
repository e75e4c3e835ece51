"""Retry policies of background deliveries (the catalog's outbox, the grant service's webhooks).

`BackoffPolicy`: capped exponential backoff with full jitter, retried forever (the outbox: the
grant service will come back). `RetrySchedule`: a fixed list of delays with proportional jitter and
an end (webhooks: Svix's schedule over about a day, then the delivery is given up).

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


@dataclass(frozen=True, slots=True)
class RetrySchedule:
    """The wait before each retry, attempt by attempt, then none: `delays[n-1]` follows the n-th
    failed attempt; after `len(delays)` failed attempts `delay` is None (give up). Each wait is
    jittered by up to +/- `jitter` of itself (a fraction), drawn in whole microseconds from the
    injected random source, so deliveries that failed together do not retry in lockstep."""

    delays: tuple[timedelta, ...]
    jitter: float = 0.1

    def __post_init__(self) -> None:
        if not self.delays:
            raise ValueError("a retry schedule needs at least one delay")
        if any(d < timedelta(0) for d in self.delays):
            raise ValueError("retry delays must not be negative")
        if not 0 <= self.jitter < 1:
            raise ValueError("jitter is a fraction in [0, 1)")

    @property
    def max_attempts(self) -> int:
        """Attempts in all: the first and one per delay."""
        return len(self.delays) + 1

    @property
    def span(self) -> timedelta:
        """From the first attempt to the last, without jitter."""
        return sum(self.delays, timedelta(0))

    def delay(self, attempt: int, rng: RandomSource) -> timedelta | None:
        """The wait after the `attempt`-th failed attempt (from 1), None when it was the last."""
        if attempt < 1:
            raise ValueError("attempt counts from 1")
        if attempt > len(self.delays):
            return None
        base_us = self.delays[attempt - 1] // _MICROSECOND
        spread = int(base_us * self.jitter)
        return timedelta(microseconds=base_us + rng.randint(-spread, spread))


# Svix's schedule (docs.svix.com, "Retries"): at once, then 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h.
SVIX_SCHEDULE = RetrySchedule(
    (
        timedelta(seconds=5),
        timedelta(minutes=5),
        timedelta(minutes=30),
        timedelta(hours=2),
        timedelta(hours=5),
        timedelta(hours=10),
        timedelta(hours=10),
    )
)


def seeded(seed: int) -> random.Random:
    """A deterministic random source for tests and reproducible runs."""
    return random.Random(seed)
