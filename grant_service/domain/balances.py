"""Grants at an instant: which count, what remains of them, their status, the burn-down
order, and how a debit is spread over them. Pure: no I/O. All arithmetic is exact."""

from __future__ import annotations

import decimal
import enum
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import TypeVar

# Enough digits for any sum or product of stored amounts (38 digits, 12 after the point): never rounds.
_EXACT = decimal.Context(prec=120, traps=[decimal.Inexact, decimal.InvalidOperation, decimal.Overflow])

RECURRING_PRIORITY = 100

G = TypeVar("G", bound="GrantTerms")


def exact_sum(values: Iterable[Decimal]) -> Decimal:
    total = Decimal(0)
    for value in values:
        total = _EXACT.add(total, value)
    return total


def exact_add(a: Decimal, b: Decimal) -> Decimal:
    return _EXACT.add(a, b)


def exact_product(a: Decimal, b: Decimal) -> Decimal:
    return _EXACT.multiply(a, b)


def exact_difference(a: Decimal, b: Decimal) -> Decimal:
    return _EXACT.subtract(a, b)


class GrantStatus(enum.Enum):
    PENDING = 1
    ACTIVE = 2
    EXPIRED = 3
    VOIDED = 4


_COUNTING = (GrantStatus.ACTIVE, GrantStatus.PENDING)


class GrantTerms:
    """What a grant is at an instant, from its terms (`amount`, `priority`, `effective_time`,
    `expire_time`, `void_time`) and the credits debited from it (`used`): the rules shared by the two
    shapes of a grant that have them, `Grant` (domain/model.py: the grant as stored) and `GrantView`
    (below: the grant as a debit reads it). No fields of its own."""

    __slots__ = ()

    grant_id: str
    amount: Decimal
    used: Decimal
    priority: int
    effective_time: datetime
    expire_time: datetime | None
    void_time: datetime | None

    @property
    def remaining(self) -> Decimal:
        """amount - used: what is left of it while it counts."""
        return exact_difference(self.amount, self.used)

    def is_active_at(self, t: datetime) -> bool:
        return (
            self.effective_time <= t
            and (self.expire_time is None or t < self.expire_time)
            and (self.void_time is None or t < self.void_time)
        )

    def status_at(self, t: datetime) -> GrantStatus:
        if self.void_time is not None and self.void_time <= t:
            return GrantStatus.VOIDED
        if self.effective_time > t:
            return GrantStatus.PENDING
        if self.expire_time is not None and self.expire_time <= t:
            return GrantStatus.EXPIRED
        return GrantStatus.ACTIVE

    def remaining_at(self, t: datetime) -> Decimal:
        """What is left of it at `t` as an answer shows it: `remaining` while it is active or pending,
        nothing once it has expired or been voided."""
        return self.remaining if self.status_at(t) in _COUNTING else Decimal(0)


@dataclass(slots=True)
class GrantView(GrantTerms):
    """An open grant as a debit reads it, with its customer locked: its terms, `used` (its running
    total: debits at or before the debit's instant), and what the debit's ledger entries and events
    repeat of it (customer, currency, subscription). Separate from `Grant` for speed: a debit reads
    every open grant of its customer, of every currency, and makes one of these per grant from the
    ten columns it reads (`Grant` has 19 fields, frozen: several times the cost to build). Not frozen
    either: a debit group keeps its customers' views current by setting `used` (adapters/debits.py)."""

    grant_id: str
    amount: Decimal
    used: Decimal
    priority: int
    effective_time: datetime
    expire_time: datetime | None
    void_time: datetime | None
    customer_key: str
    currency_key: str
    subscription_id: str | None
    opens_at: datetime | None = None  # a pending grant's: when its GRANT entry is due


def burn_order_key(grant: GrantTerms) -> tuple:
    """Lower priority first, then soonest expiry (never-expiring last), then oldest."""
    return (
        grant.priority,
        grant.expire_time is None,
        grant.expire_time or grant.effective_time,
        grant.effective_time,
        grant.grant_id,
    )


def active_in_burn_order(grants: Iterable[G], t: datetime) -> list[G]:
    active = [grant for grant in grants if grant.is_active_at(t)]
    if len(active) > 1:  # most debits see one grant: no key to make
        active.sort(key=burn_order_key)
    return active


def available(grants: Iterable[GrantTerms], t: datetime) -> Decimal:
    return exact_sum(g.remaining for g in grants if g.is_active_at(t))


class InsufficientCredits(Exception):
    def __init__(self, available: Decimal, required: Decimal) -> None:
        super().__init__(f"{available} available, {required} required")
        self.available = available
        self.required = required


def allocate(grants: Sequence[G], credits: Decimal, t: datetime) -> tuple[list[tuple[G, Decimal]], Decimal]:
    """The grants active at t that a debit of `credits` takes from, in burn-down order, each with the
    amount taken, and what they had before it (`available` at t); InsufficientCredits (nothing
    taken) if they do not cover it."""
    ordered = active_in_burn_order(grants, t)
    remaining = [grant.remaining for grant in ordered]
    total = exact_sum(remaining)
    if total < credits:
        raise InsufficientCredits(total, credits)
    taken: list[tuple[G, Decimal]] = []
    left = credits
    for grant, has in zip(ordered, remaining, strict=True):
        if left <= 0:
            break
        take = min(has, left)
        if take > 0:
            taken.append((grant, take))
            left = exact_difference(left, take)
    return taken, total
