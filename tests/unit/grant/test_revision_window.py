"""The revision bound in total, per window (grant_service.domain.revisions)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from credit_common.errors import InvalidArgument
from grant_service.domain.revisions import NO_WINDOW, RevisionWindow, advance

T0 = datetime(2026, 6, 1, tzinfo=UTC)
DAY = timedelta(days=1)


def step(held, revision, window, now=T0, max_step=10):
    return advance("subscription", "sub", held, revision, window, now, max_step, DAY)


def test_a_first_rise_opens_a_window_at_the_revision_held():
    assert step(0, 10, NO_WINDOW) == RevisionWindow(T0, 0)
    with pytest.raises(InvalidArgument) as raised:
        step(0, 11, NO_WINDOW)
    assert raised.value.reason == "REVISION_TOO_FAR_AHEAD"
    assert raised.value.metadata["window_reopens_at"] == (T0 + DAY).isoformat()


def test_rises_add_up_within_the_window_and_a_new_window_opens_after_it():
    window = step(0, 4, NO_WINDOW)
    window = step(4, 9, window, T0 + timedelta(hours=5))
    assert window == RevisionWindow(T0, 0)
    with pytest.raises(InvalidArgument):
        step(9, 11, window, T0 + DAY - timedelta(microseconds=1))
    assert step(9, 19, window, T0 + DAY) == RevisionWindow(T0 + DAY, 9)


def test_a_revision_not_ahead_changes_nothing():
    window = RevisionWindow(T0, 3)
    assert step(13, 13, window, T0 + 2 * DAY) is window
    assert step(13, 2, window, T0 + 2 * DAY) is window
