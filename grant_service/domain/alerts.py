"""Balance alerts: levels of a customer's available balance in a currency, and the crossings
that are events (docs/grant-semantics.md#balance-alerts).

A level is an absolute amount or a percentage of what the customer was granted for the current
period: the sum of the amounts of its grants of the currency active at the instant (a voided or
expired grant no longer counts, a one-off grant counts while active). A balance is "below" a level
when it is strictly less than the level's amount at that instant. Alerts compare the state last
evaluated with the state now (both taken once every change at their instant is applied), so a
level fires BALANCE_LOW once per downward crossing, BALANCE_RECOVERED once when the balance is
back at or above it, and nothing while it stays on one side. BALANCE_DEPLETED: the balance reached
0 while the customer has active grants (they are used up or voided down to nothing); leaving that
state is a BALANCE_RECOVERED of the level "0"."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from grant_service.domain.balances import exact_difference, exact_product, exact_sum
from grant_service.domain.events import EventType, NewEvent

MAX_LEVELS = 10
_ZERO = Decimal(0)


@dataclass(frozen=True, slots=True)
class AlertLevel:
    kind: str  # "amount" or "percent"
    value: Decimal

    def threshold(self, granted: Decimal) -> Decimal:
        if self.kind == "amount":
            return self.value
        return exact_product(granted, self.value).scaleb(-2) if granted else _ZERO

    def as_payload(self) -> dict[str, Any]:
        return {self.kind: self.value}


DEPLETION = AlertLevel("amount", _ZERO)


@dataclass(frozen=True, slots=True)
class BalanceState:
    """A customer's available balance in a currency and what it was granted (the amounts of its
    active grants), at an instant once every change at that instant is applied."""

    balance: Decimal
    granted: Decimal

    @property
    def depleted(self) -> bool:
        return self.balance <= 0 and self.granted > 0


@dataclass(frozen=True, slots=True)
class Crossing:
    type: EventType
    level: AlertLevel
    threshold: Decimal


def crossings(levels: Sequence[AlertLevel], before: BalanceState | None, after: BalanceState) -> list[Crossing]:
    """The alert events of a change from `before` (None: never evaluated: as if above every level and
    not depleted) to `after`, in the order a balance moving that way meets them: when it rises, out
    of the depletion first, then each level from the lowest; when it falls, each level from the
    highest, then the depletion."""
    rising: list[Crossing] = []
    falling: list[Crossing] = []
    if before is not None and before.depleted and not after.depleted:
        rising.append(Crossing(EventType.BALANCE_RECOVERED, DEPLETION, _ZERO))
    for level in sorted(levels, key=lambda lv: lv.threshold(after.granted)):
        threshold = level.threshold(after.granted)
        was = before is not None and before.balance < level.threshold(before.granted)
        now = after.balance < threshold
        if now and not was:
            falling.append(Crossing(EventType.BALANCE_LOW, level, threshold))
        elif was and not now:
            rising.append(Crossing(EventType.BALANCE_RECOVERED, level, threshold))
    falling.reverse()
    if after.depleted and (before is None or not before.depleted):
        falling.append(Crossing(EventType.BALANCE_DEPLETED, DEPLETION, _ZERO))
    return rising + falling


def state_of(grants: Sequence[tuple[Decimal, Decimal]]) -> BalanceState:
    """The state of active grants given as (amount, used)."""
    return BalanceState(exact_sum(exact_difference(a, u) for a, u in grants), exact_sum(a for a, _ in grants))


def alert_event(
    crossing: Crossing,
    customer_key: str,
    currency_key: str,
    clock_key: str,
    occurred: datetime,
    before: BalanceState | None,
    after: BalanceState,
    event_id: str,
) -> NewEvent:
    return NewEvent(
        event_id,
        crossing.type,
        customer_key,
        currency_key,
        clock_key,
        occurred,
        f"{crossing.type.value}:{event_id}",  # each crossing is a fact of its own
        {
            "level": crossing.level.as_payload(),
            "threshold": crossing.threshold,
            "balance": after.balance,
            "previous_balance": before.balance if before is not None else after.balance,
            "granted_amount": after.granted,
        },
    )
