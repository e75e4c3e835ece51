"""credit_common.calls: why a call is gone, and the check before a commit."""

from __future__ import annotations

import pytest

from credit_common import calls
from credit_common.errors import Cancelled, DeadlineExceeded


class Context:
    def __init__(self, remaining: float, active: bool) -> None:
        self.remaining, self.active = remaining, active

    def time_remaining(self) -> float:
        return self.remaining

    def is_active(self) -> bool:
        return self.active


@pytest.mark.parametrize(
    ("remaining", "active", "gone"),
    [
        (5.0, True, None),
        (0.0, False, DeadlineExceeded),
        (0.0, True, DeadlineExceeded),
        (0.1, False, DeadlineExceeded),  # ended by gRPC's deadline timer a moment before the wall clock
        (5.0, False, Cancelled),
    ],
)
def test_why_a_call_is_gone(remaining, active, gone):
    call = calls.Call(Context(remaining, active), "/x.Y/Z")
    found = call.gone()
    assert (type(found) if found else None) is gone
    with calls.serving(call):
        if gone is None:
            calls.check_before_commit()
        else:
            with pytest.raises(gone):
                calls.check_before_commit()


def test_no_call_no_check():
    calls.check_before_commit()  # the dispatcher, the timer: nothing to check
