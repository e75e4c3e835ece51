"""The grant service's plain objects: subscriptions and their credit schedules,
grants, ledger entries, usages, test clocks. No gRPC, no SQL; amounts are exact
decimals, times aware UTC."""

from __future__ import annotations

import enum
from dataclasses import dataclass, replace
from datetime import datetime
from decimal import Decimal

from credit_common.idempotency import SeenRequest
from credit_common.periods import Cadence
from grant_service.domain.balances import GrantStatus as GrantStatus  # re-exported: its home is domain.balances
from grant_service.domain.balances import GrantTerms, GrantView
from grant_service.domain.clocks import REAL_TIME as REAL_TIME  # re-exported: its home is domain.clocks
from grant_service.domain.clocks import ClockKey, api_test_clock_id
from grant_service.domain.revisions import NO_WINDOW, RevisionWindow
from grant_service.domain.schedules import GrantSegment, Pending, Schedule, ScheduledAmount

# The values a debit makes (Usage, LedgerEntry, DebitHead, GrantView) are not frozen dataclasses,
# though nothing changes them once made: a frozen dataclass's constructor sets each field through
# object.__setattr__, and a ReportUsageBatch makes several of these per usage inside its write
# transaction (docs/performance.md). Changes go through dataclasses.replace or a new value all the same.


@dataclass(frozen=True, slots=True)
class Customer:
    customer_key: str
    clock_key: ClockKey  # real time, or the test clock it is attached to


class GrantSource(enum.Enum):
    RECURRING = "RECURRING"
    ONE_OFF = "ONE_OFF"


class EntryType(enum.Enum):
    GRANT = "GRANT"
    DEBIT = "DEBIT"
    EXPIRE = "EXPIRE"
    VOID = "VOID"
    ADJUST = "ADJUST"


@dataclass(frozen=True, slots=True)
class Grant(GrantTerms):
    """A grant as stored: every field of it, and its stored state. What the use cases read, change and
    answer with; its status and what remains of it at an instant are `status_at` and `remaining_at`
    (GrantTerms). `used` is the running total of its debits; a grant answered for a past instant
    carries the debits until then instead (`with_used`). The catch-up issues recurring grants as
    `NewGrant` and a debit reads open grants as `GrantView`: lighter shapes, for speed."""

    grant_id: str
    customer_key: str
    currency_key: str
    clock_key: ClockKey
    source: GrantSource
    subscription_id: str | None
    entitlement_key: str | None
    period_index: int | None
    amount: Decimal
    effective_time: datetime
    expire_time: datetime | None
    priority: int
    void_time: datetime | None
    reason: str
    # Its stored state: the schedule period segment it was issued for (none: one-off), the running
    # total of its debits, whether its EXPIRE or VOID is recorded, and, while it is pending (stored
    # before it is effective, its GRANT entry not yet written), the instant it opens.
    schedule_id: str | None = None
    segment: int | None = None
    used: Decimal = Decimal(0)
    closed: bool = False
    opens_at: datetime | None = None

    @property
    def opened(self) -> bool:
        """Its GRANT entry is written (it is not pending)."""
        return self.opens_at is None

    @property
    def debited(self) -> bool:
        """Something was debited from it."""
        return self.used != 0

    def with_used(self, used: Decimal) -> Grant:
        """The grant as it stood when `used` credits of it were debited (itself if that is its `used`)."""
        return self if used == self.used else replace(self, used=used)


@dataclass(frozen=True, slots=True)
class CustomerNow:
    """What GetBalance's hot path reads of a customer at one instant: its clock, what a catch-up
    owes it, and its grants in one currency active then (their `used`: running totals)."""

    clock_key: ClockKey
    pending: Pending
    grants: tuple[Grant, ...]


@dataclass(slots=True)  # not frozen: a debit's value (see the note at the top)
class LedgerEntry:
    """An entry of the append-only ledger, written by the use cases and read back. `opens`: the
    grant's GRANT (a grant has at most one), `closes`: its EXPIRE or VOID (at most one); the storage
    skips an opening or closing entry that the grant already has. Never changed once made, but not
    frozen: a frozen dataclass's constructor sets each field through object.__setattr__, and the
    catch-up makes one of these per grant of a renewal storm."""

    entry_id: str
    customer_key: str
    currency_key: str
    type: EntryType
    amount: Decimal
    grant_id: str
    effective_time: datetime
    usage_id: str | None
    subscription_id: str | None
    description: str
    opens: bool = False
    closes: bool = False
    seq: int | None = None  # its place in the ledger (the order of entries at one instant; None: not written yet)


@dataclass(slots=True)  # not frozen: a debit's value (see the note at the top)
class Usage:
    usage_id: str
    request_id: str
    customer_key: str
    feature_key: str
    quantity: Decimal
    currency_key: str
    credits_per_unit: Decimal
    credits: Decimal
    usage_time: datetime
    balance_after: Decimal


@dataclass(frozen=True, slots=True)
class SimulatedClock:
    """A test clock (the API's TestClock): a frozen "now" for the customers attached to it, moved
    only by AdvanceTestClock."""

    test_clock_id: str
    name: str
    frozen_time: datetime
    create_time: datetime


@dataclass(frozen=True, slots=True)
class CreditSchedule:
    """A subscription's credit schedule as it was applied (its amounts clamped to what happened)."""

    entitlement_key: str
    currency_key: str
    cadence: Cadence
    amounts: tuple[ScheduledAmount, ...]


@dataclass(frozen=True, slots=True)
class Subscription:
    subscription_id: str
    customer_key: str
    revision: int
    start_time: datetime
    end_time: datetime | None
    clock_key: ClockKey
    update_time: datetime
    credit_schedules: tuple[CreditSchedule, ...]

    @property
    def test_clock_id(self) -> str:
        return api_test_clock_id(self.clock_key)


@dataclass(slots=True)
class StoredSchedule:
    """A credit schedule as stored: whose it is, its terms (`schedule`), its place in the
    subscription, and its issuance cursor: the first period not yet issued. Not frozen: a frozen
    dataclass's constructor sets each field through object.__setattr__, and the catch-up makes one
    of these per due schedule of a renewal storm; changes go through dataclasses.replace all the same."""

    schedule_id: str
    subscription_id: str
    customer_key: str
    clock_key: ClockKey
    entitlement_key: str
    currency_key: str
    schedule: Schedule
    next_period_index: int
    position: int = 0
    removed: bool = False  # dropped by a later revision: ends at its end time, issues nothing more

    @property
    def next_period_start(self) -> datetime | None:
        """When the cursor's period starts (None: the schedule issues no further period)."""
        k = self.next_period_index
        if self.removed or not self.schedule.has_period(k):
            return None
        return self.schedule.period_start(k)


class NewGrant:
    """A recurring grant the catch-up is issuing: segment `segment` of a period of `schedule`, pending
    until `opens_at` if it starts later. What the ledger entries and the expiry of a grant read of it
    (the fields of `Grant`), taken from the schedule and the segment. Light on purpose: the catch-up
    makes one per grant of a renewal storm, and a `Grant` (19 fields, frozen) costs several times
    more to build."""

    __slots__ = ("grant_id", "opens_at", "schedule", "segment")

    def __init__(self, grant_id: str, schedule: StoredSchedule, segment: GrantSegment, opens_at: datetime | None):
        self.grant_id = grant_id
        self.schedule = schedule
        self.segment = segment
        self.opens_at = opens_at

    @property
    def customer_key(self) -> str:
        return self.schedule.customer_key

    @property
    def clock_key(self) -> str:
        return self.schedule.clock_key

    @property
    def source(self) -> GrantSource:
        return GrantSource.RECURRING

    @property
    def currency_key(self) -> str:
        return self.schedule.currency_key

    @property
    def subscription_id(self) -> str:
        return self.schedule.subscription_id

    @property
    def entitlement_key(self) -> str:
        return self.schedule.entitlement_key

    @property
    def period_index(self) -> int:
        return self.segment.period_index

    @property
    def amount(self) -> Decimal:
        return self.segment.amount

    @property
    def used(self) -> Decimal:
        return _ZERO

    @property
    def effective_time(self) -> datetime:
        return self.segment.effective_time

    @property
    def expire_time(self) -> datetime:
        return self.segment.expire_time


_ZERO = Decimal(0)


@dataclass(slots=True)  # not frozen: a debit's value (see the note at the top)
class DebitHead:
    """What a debit needs to know, read with the customer's lock held: its clock (and that clock's
    frozen time), the request id's record if any, what a catch-up owes the customer (so the caller
    tells at its "now" whether one is due), and its open grants of every currency, in id order."""

    clock_key: ClockKey
    frozen_time: datetime | None
    seen: SeenRequest[str] | None
    pending: Pending
    open_grants: list[GrantView]
    alerts_version: int = 0  # the version of the balance alert levels (0: none was ever set)


@dataclass(frozen=True, slots=True)
class StoredSubscription:
    """A subscription as stored, without its credit schedules (StoredSchedule): the revision in force,
    the end time and update time that revision left, and the window that bounds its revisions."""

    subscription_id: str
    customer_key: str
    revision: int
    start_time: datetime
    end_time: datetime | None
    clock_key: ClockKey
    update_time: datetime
    revision_window: RevisionWindow = NO_WINDOW

    def with_schedules(self, schedules: tuple[CreditSchedule, ...]) -> Subscription:
        fields = {name: getattr(self, name) for name in self.__slots__ if name != "revision_window"}
        return Subscription(**fields, credit_schedules=schedules)
