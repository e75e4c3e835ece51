"""Balance alert crossings (grant_service.domain.alerts): once per crossing, re-armed above, the
depletion, percentages of what is granted, and the order of several crossings."""

from __future__ import annotations

from decimal import Decimal as D

from grant_service.domain.alerts import DEPLETION, AlertLevel, BalanceState, below, crossings
from grant_service.domain.events import EventType

LOW, DEPLETED, RECOVERED = EventType.BALANCE_LOW, EventType.BALANCE_DEPLETED, EventType.BALANCE_RECOVERED
HALF = AlertLevel("percent", D(50))
HUNDRED = AlertLevel("amount", D(100))


def s(balance: str, granted: str = "1000") -> BalanceState:
    return BalanceState(D(balance), D(granted))


def kinds(levels, before, after):
    """The crossings from the alert state of `before` (None: never evaluated) to `after`."""
    flags = None if before is None else below(levels, before)
    return [(c.type, c.level, c.threshold) for c in crossings(levels, flags, after)]


def test_once_per_downward_crossing_and_rearmed_only_above():
    assert kinds([HALF], s("600"), s("499")) == [(LOW, HALF, D(500))]
    assert kinds([HALF], s("499"), s("10")) == []  # still below: nothing more
    assert kinds([HALF], s("10"), s("499.99")) == []
    assert kinds([HALF], s("499.99"), s("500")) == [(RECOVERED, HALF, D(500))]  # at the level is not below
    assert kinds([HALF], s("500"), s("499")) == [(LOW, HALF, D(500))]  # re-armed: fires again


def test_falling_past_several_levels_highest_first_then_depleted_and_back():
    assert kinds([HUNDRED, HALF], s("600"), s("0")) == [
        (LOW, HALF, D(500)),
        (LOW, HUNDRED, D(100)),
        (DEPLETED, DEPLETION, D(0)),
    ]
    assert kinds([HUNDRED, HALF], s("0"), s("1000")) == [
        (RECOVERED, DEPLETION, D(0)),
        (RECOVERED, HUNDRED, D(100)),
        (RECOVERED, HALF, D(500)),
    ]


def test_percentage_of_what_is_granted_and_voids():
    # A void removes the grant from the balance and from what is granted: 300 of 400 is above 50%.
    assert kinds([HALF], s("600", "1000"), s("300", "400")) == []
    # A one-off grant raises both: 450 of 1000 is below 50%, 550 of 1100 is not.
    assert kinds([HALF], s("450", "1000"), s("550", "1100")) == [(RECOVERED, HALF, D(550))]


def test_an_expiry_and_the_next_grant_at_one_instant_are_one_change():
    # Evaluated once both are applied: the balance goes from 30 (below) to a full period: recovered only.
    assert kinds([HUNDRED], s("30"), s("1000")) == [(RECOVERED, HUNDRED, D(100))]
    assert kinds([HUNDRED], s("600"), s("1000")) == []


def test_never_evaluated_counts_as_above_and_no_grants_is_not_depleted():
    assert kinds([HUNDRED], None, s("1000")) == []
    assert kinds([HUNDRED], None, s("50")) == [(LOW, HUNDRED, D(100))]
    assert kinds([], s("10"), s("0", "0")) == []  # the last grant expired: nothing granted, not depleted
    assert kinds([], s("10"), s("0")) == [(DEPLETED, DEPLETION, D(0))]


def test_levels_changed_since_the_state_was_stored():
    stored = below([HALF], s("400"))  # below 50%
    # 50% replaced by 100: the old level is dropped silently, the new one fires if below.
    assert [(c.type, c.level) for c in crossings([HUNDRED], stored, s("50"))] == [(LOW, HUNDRED)]
    assert crossings([HUNDRED], stored, s("400")) == []
