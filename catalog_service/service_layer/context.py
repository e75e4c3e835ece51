"""What every use case of the catalog needs: its units of work, the clock, the grant service's test
clocks and the outbox dispatcher's nudge; plus the helpers shared by the use cases."""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TypeVar

from catalog_service.service_layer.ports import TestClockReader
from catalog_service.service_layer.unit_of_work import Transactions
from credit_common.clock import Clock
from credit_common.errors import Violations

T = TypeVar("T")

# The page tokens of the List methods are bound to their method (credit_common.pagination).
SERVICE = "/catalog_service.v1.CatalogService/"


def _nothing() -> None:
    pass


@dataclass(frozen=True)
class CatalogContext:
    """Mutations return their result, or `Replayed` (idempotency.py: the stored first response)
    when their request_id was seen before with the same request."""

    transactions: Transactions
    clock: Clock
    test_clocks: TestClockReader
    on_queued: Callable[[], None] = _nothing  # wakes the outbox dispatcher

    def queued(self, result: T) -> T:
        """After a commit that queued a delivery (or its replay): deliver now, not at the next poll."""
        self.on_queued()
        return result

    def now_of(self, test_clock_id: str | None) -> datetime:
        """Real time, or the time of the grant service's test clock `test_clock_id`. Never called
        inside a transaction (on SQLite it would hold the write lock over a call to another service)."""
        return self.test_clocks.now_of(test_clock_id) if test_clock_id else self.clock.now()


def check_mask(mask: Sequence[str], allowed: Collection[str], violations: Violations) -> None:
    if not mask:
        violations.add("update_mask", f"is required: any of {', '.join(allowed)}")
    for path in mask:
        if path not in allowed:
            violations.add("update_mask", f"{path!r} cannot be updated: use any of {', '.join(allowed)}")
