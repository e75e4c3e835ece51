"""What the service layer needs from the outside world, as protocols."""

from __future__ import annotations

from datetime import datetime
from typing import Protocol


class TestClockReader(Protocol):
    """Reads test clocks (a resource of the grant service)."""

    def now_of(self, test_clock_id: str, field: str = "test_clock_id") -> datetime:
        """The clock's current time; raises NotFound for an unknown clock,
        InvalidArgument (on `field`, the caller's name of the id) for an invalid
        id, FailedPrecondition when the grant service refuses (e.g. test clocks
        disabled), Unavailable when it cannot be reached."""
        ...
