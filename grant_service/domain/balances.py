"""Grants at an instant: which count, what remains of them, the burn-down order,
and how a debit is spread over them. Pure: no I/O. All arithmetic is exact."""

from __future__ import annotations

import decimal
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

# Enough digits for any sum or product of stored amounts (38 digits, 12 after the point): never rounds.
_EXACT = decimal.Context(prec=120, traps=[decimal.Inexact, decimal.InvalidOperation, decimal.Overflow])

RECURRING_PRIORITY = 100


def exact_sum(values: Iterable[Decimal]) -> Decimal:
    total = Decimal(0)
    for value in values:
        total = _EXACT.add(total, value)
    return total


def exact_product(a: Decimal, b: Decimal) -> Decimal:
    return _EXACT.multiply(a, b)


def exact_difference(a: Decimal, b: Decimal) -> Decimal:
    return _EXACT.subtract(a, b)


@dataclass(slots=True)
class GrantView:
    """A grant as seen at one instant: `used` counts debits at or before that instant. Not frozen (a
    frozen dataclass sets each field through object.__setattr__, and reads and debits make one per
    grant): a debit group keeps its customers' views current by setting `used` (adapters/debits.py)."""

    grant_id: str
    amount: Decimal
    used: Decimal
    priority: int
    effective_time: datetime
    expire_time: datetime | None
    void_time: datetime | None

    @property
    def remaining(self) -> Decimal:
        return exact_difference(self.amount, self.used)

    def is_active_at(self, t: datetime) -> bool:
        return (
            self.effective_time <= t
            and (self.expire_time is None or t < self.expire_time)
            and (self.void_time is None or t < self.void_time)
        )


def burn_order_key(grant: GrantView) -> tuple:
    """Lower priority first, then soonest expiry (never-expiring last), then oldest."""
    return (
        grant.priority,
        grant.expire_time is None,
        grant.expire_time or grant.effective_time,
        grant.effective_time,
        grant.grant_id,
    )


def active_in_burn_order(grants: Iterable[GrantView], t: datetime) -> list[GrantView]:
    return sorted((g for g in grants if g.is_active_at(t)), key=burn_order_key)


def available(grants: Iterable[GrantView], t: datetime) -> Decimal:
    return exact_sum(g.remaining for g in grants if g.is_active_at(t))


class InsufficientCredits(Exception):
    def __init__(self, available: Decimal, required: Decimal) -> None:
        super().__init__(f"{available} available, {required} required")
        self.available = available
        self.required = required


def allocate(grants: Sequence[GrantView], credits: Decimal, t: datetime) -> list[tuple[str, Decimal]]:
    """(grant_id, amount) taken from each grant active at t, in burn-down order, for a debit of
    `credits`; InsufficientCredits (nothing taken) if they do not cover it."""
    ordered = active_in_burn_order(grants, t)
    total = exact_sum(g.remaining for g in ordered)
    if total < credits:
        raise InsufficientCredits(total, credits)
    taken: list[tuple[str, Decimal]] = []
    left = credits
    for grant in ordered:
        if left <= 0:
            break
        take = min(grant.remaining, left)
        if take > 0:
            taken.append((grant.grant_id, take))
            left = exact_difference(left, take)
    return taken
