"""Balance alerts: levels of a customer's available balance in a currency, and the crossings
that are events (docs/grant-semantics.md#balance-alerts).

A level is an absolute amount or a percentage of what the customer was granted for the current
period: the sum of the amounts of its grants of the currency active at the instant (a voided or
expired grant no longer counts, a one-off grant counts while active). A balance is "below" a level
when it is strictly less than the level's amount at that instant. The alert state of a customer
and currency is the set of levels its balance is below (and whether it is depleted); alerts compare
the state last stored with the state now (taken once every change at its instant is applied), so a
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

from credit_common.decimals import format_decimal
from grant_service.domain.balances import exact_difference, exact_product, exact_sum
from grant_service.domain.clocks import ClockKey
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


DEPLETED = "depleted"  # the flag of the depletion among the levels' keys


def level_key(level: AlertLevel) -> str:
    return f"{level.kind}:{format_decimal(level.value)}"


def below(levels: Sequence[AlertLevel], state: BalanceState) -> frozenset[str]:
    """The alert state of `state`: the keys of the levels it is below, and DEPLETED if it is."""
    keys = {level_key(lv) for lv in levels if state.balance < lv.threshold(state.granted)}
    if state.depleted:
        keys.add(DEPLETED)
    return frozenset(keys)


@dataclass(frozen=True, slots=True)
class Crossing:
    type: EventType
    level: AlertLevel
    threshold: Decimal


def crossings(levels: Sequence[AlertLevel], before: frozenset[str] | None, after: BalanceState) -> list[Crossing]:
    """The alert events of going from the alert state `before` (what was last evaluated; None: never,
    as if above every level and not depleted) to `after`, in the order a balance moving that way
    meets them: when it rises, out of the depletion first, then each level from the lowest; when it
    falls, each level from the highest, then the depletion. A key of `before` that is no longer a
    level (the levels were changed) is dropped without an event."""
    was = before or frozenset()
    now = below(levels, after)
    rising: list[Crossing] = []
    falling: list[Crossing] = []
    if DEPLETED in was and DEPLETED not in now:
        rising.append(Crossing(EventType.BALANCE_RECOVERED, DEPLETION, _ZERO))
    for level in sorted(levels, key=lambda lv: lv.threshold(after.granted)):
        key, threshold = level_key(level), level.threshold(after.granted)
        if key in now and key not in was:
            falling.append(Crossing(EventType.BALANCE_LOW, level, threshold))
        elif key in was and key not in now:
            rising.append(Crossing(EventType.BALANCE_RECOVERED, level, threshold))
    falling.reverse()
    if DEPLETED in now and DEPLETED not in was:
        falling.append(Crossing(EventType.BALANCE_DEPLETED, DEPLETION, _ZERO))
    return rising + falling


def state_of(grants: Sequence[tuple[Decimal, Decimal]]) -> BalanceState:
    """The state of active grants given as (amount, used)."""
    return BalanceState(exact_sum(exact_difference(a, u) for a, u in grants), exact_sum(a for a, _ in grants))


def alert_event(
    crossing: Crossing,
    customer_key: str,
    currency_key: str,
    clock_key: ClockKey,
    occurred: datetime,
    after: BalanceState,
    event_id: str,
    previous_balance: Decimal | None = None,
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
            "previous_balance": previous_balance if previous_balance is not None else "",
            "granted_amount": after.granted,
        },
    )
