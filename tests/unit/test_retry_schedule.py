"""The webhooks' retry schedule (credit_common.backoff.RetrySchedule): fixed delays with
proportional jitter, then none."""

from __future__ import annotations

from datetime import timedelta

import pytest

from credit_common.backoff import SVIX_SCHEDULE, RetrySchedule, seeded


def test_svix_schedule_attempts_and_span():
    assert SVIX_SCHEDULE.max_attempts == 8
    assert SVIX_SCHEDULE.span == timedelta(hours=27, minutes=35, seconds=5)


def test_each_delay_is_within_its_jitter_then_none():
    rng = seeded(7)
    for attempt, base in enumerate(SVIX_SCHEDULE.delays, start=1):
        delay = SVIX_SCHEDULE.delay(attempt, rng)
        assert delay is not None and base * 0.9 <= delay <= base * 1.1
    assert SVIX_SCHEDULE.delay(len(SVIX_SCHEDULE.delays) + 1, rng) is None


def test_no_jitter_gives_the_delays_exactly():
    schedule = RetrySchedule((timedelta(seconds=1), timedelta(seconds=2)), jitter=0)
    assert [schedule.delay(n, seeded(1)) for n in (1, 2, 3)] == [timedelta(seconds=1), timedelta(seconds=2), None]


@pytest.mark.parametrize("delays, jitter", [((), 0.1), ((timedelta(seconds=-1),), 0.1), ((timedelta(seconds=1),), 1.0)])
def test_bad_schedules_are_refused(delays, jitter):
    with pytest.raises(ValueError):
        RetrySchedule(delays, jitter)
