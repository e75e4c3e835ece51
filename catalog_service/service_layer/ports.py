"""What the service layer needs from the outside world, as protocols."""

from __future__ import annotations

from datetime import datetime
from typing import Protocol


class TestClockReader(Protocol):
    """Reads test clocks (a resource of the grant service)."""

    def now_of(self, test_clock_id: str) -> datetime:
        """The clock's current time; raises NotFound for an unknown clock,
        Unavailable when the grant service cannot be reached."""
        ...
