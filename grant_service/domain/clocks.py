"""Which clock a customer's time runs on: real time, or one of the test clocks
(`SimulatedClock`) an operator moves. Everything of a customer (its subscriptions,
schedules, grants, events) carries the key of its clock."""

from __future__ import annotations

from typing import Final, NewType

ClockKey = NewType("ClockKey", str)
"""The clock a customer and everything of it run on: the id of a test clock, or `REAL_TIME`.
Stored as is in every `clock_key` column."""

REAL_TIME: Final = ClockKey("")
"""The key of real time (no test clock). Stored as the empty string, which is also the API's
`test_clock_id` of a customer on real time (proto3's unset string)."""


def clock_key_of(test_clock_id: str) -> ClockKey:
    """The clock named by the API's `test_clock_id` (empty: real time)."""
    return ClockKey(test_clock_id) if test_clock_id else REAL_TIME


def on_real_time(clock_key: ClockKey) -> bool:
    return clock_key == REAL_TIME


def api_test_clock_id(clock_key: ClockKey) -> str:
    """The API's `test_clock_id` of the clock (empty: real time)."""
    return "" if clock_key == REAL_TIME else clock_key


def clock_label(clock_key: ClockKey) -> str:
    """The clock as logs name it: "real", or the test clock's id."""
    return "real" if clock_key == REAL_TIME else clock_key
