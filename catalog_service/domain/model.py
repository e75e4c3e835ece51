"""The catalog's plain objects: features, credit currencies, plans, customers,
subscriptions. No gRPC, no SQL; amounts are exact decimals, times aware UTC."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from credit_common.periods import Cadence  # the one cadence of both services


class FeatureType(enum.Enum):
    METERED = "METERED"
    BOOLEAN = "BOOLEAN"


class PlanStatus(enum.Enum):
    DRAFT = "DRAFT"
    PUBLISHED = "PUBLISHED"
    ARCHIVED = "ARCHIVED"


class SubscriptionStatus(enum.Enum):
    ACTIVE = "ACTIVE"
    ENDED = "ENDED"


class CancelMode(enum.Enum):
    IMMEDIATELY = "IMMEDIATELY"
    AT_PERIOD_END = "AT_PERIOD_END"


class AmendmentTiming(enum.Enum):
    NEXT_PERIOD = "NEXT_PERIOD"
    IMMEDIATELY = "IMMEDIATELY"


@dataclass(frozen=True)
class Feature:
    key: str
    display_name: str
    type: FeatureType
    unit_name: str
    create_time: datetime | None = None


@dataclass(frozen=True)
class CreditRate:
    feature_key: str
    credits_per_unit: Decimal


@dataclass(frozen=True)
class CreditCurrency:
    key: str
    display_name: str
    unit_name: str
    rates: tuple[CreditRate, ...]
    revision: int = 0
    create_time: datetime | None = None
    update_time: datetime | None = None


# ------------------------------------------------------------------ plans


@dataclass(frozen=True)
class VariableValue:
    """Bounds (inclusive) and default of a negotiated value; None where absent."""

    min: Decimal | None = None
    max: Decimal | None = None
    default: Decimal | None = None


@dataclass(frozen=True)
class CreditEntitlement:
    """Exactly one of `fixed_amount` / `variable` is set in a valid entitlement.
    `cadence` is None only while an invalid request is being validated."""

    key: str
    currency_key: str
    cadence: Cadence | None
    fixed_amount: Decimal | None = None
    variable: VariableValue | None = None


@dataclass(frozen=True)
class FeatureEntitlement:
    """Exactly one of `access` / `fixed_limit` / `variable` is set in a valid entitlement."""

    key: str
    feature_key: str
    access: bool | None = None
    fixed_limit: Decimal | None = None
    variable: VariableValue | None = None


@dataclass(frozen=True)
class PlanContent:
    """What a draft holds and a published version freezes."""

    display_name: str = ""
    description: str = ""
    custom: bool = False
    credit_entitlements: tuple[CreditEntitlement, ...] = ()
    feature_entitlements: tuple[FeatureEntitlement, ...] = ()

    @property
    def has_entitlements(self) -> bool:
        return bool(self.credit_entitlements or self.feature_entitlements)


@dataclass(frozen=True)
class Plan:
    """A plan's head: its draft and what is published of it."""

    key: str
    draft: PlanContent
    latest_version: int = 0
    create_time: datetime | None = None
    update_time: datetime | None = None
    archive_time: datetime | None = None

    @property
    def status(self) -> PlanStatus:
        if self.archive_time is not None:
            return PlanStatus.ARCHIVED
        return PlanStatus.PUBLISHED if self.latest_version > 0 else PlanStatus.DRAFT


@dataclass(frozen=True)
class PlanVersion:
    plan_key: str
    version: int
    content: PlanContent
    publish_time: datetime


@dataclass(frozen=True)
class PlanView:
    """One plan as shown: its draft (`version` 0) or one published version."""

    plan: Plan
    version: int
    content: PlanContent
    publish_time: datetime | None


# -------------------------------------------------------------- customers


@dataclass(frozen=True)
class Customer:
    key: str
    display_name: str
    test_clock_id: str | None = None
    create_time: datetime | None = None


# ---------------------------------------------------------- subscriptions


@dataclass(frozen=True)
class AmountChange:
    """An amendment of a credit amount: `amount` per period from `effective_time` on."""

    amount: Decimal
    effective_time: datetime


@dataclass(frozen=True)
class ResolvedCreditEntitlement:
    """`amount` is the amount provisioned (in force from the subscription
    start); `changes` the amendments, ordered by strictly later effective_time."""

    key: str
    currency_key: str
    cadence: Cadence
    amount: Decimal
    negotiated: bool
    changes: tuple[AmountChange, ...] = ()

    def amount_at(self, t: datetime) -> Decimal:
        """The amount in force at `t` (the provisioned one before any change)."""
        amount = self.amount
        for change in self.changes:
            if change.effective_time <= t:
                amount = change.amount
        return amount

    def history(self, start_time: datetime) -> tuple[AmountChange, ...]:
        """The full amount history: the provisioned amount from `start_time`, then every change."""
        return (AmountChange(self.amount, start_time), *self.changes)


@dataclass(frozen=True)
class ResolvedFeatureEntitlement:
    """`access` for a BOOLEAN feature, `limit` for a METERED one."""

    key: str
    feature_key: str
    access: bool | None
    limit: Decimal | None
    negotiated: bool


@dataclass(frozen=True)
class Subscription:
    subscription_id: str
    customer_key: str
    plan_key: str
    plan_version: int
    start_time: datetime
    end_time: datetime | None
    credit_entitlements: tuple[ResolvedCreditEntitlement, ...]
    feature_entitlements: tuple[ResolvedFeatureEntitlement, ...]
    test_clock_id: str | None = None
    revision: int = 1
    create_time: datetime | None = None
    cancel_time: datetime | None = None
    cancel_mode: CancelMode | None = None

    def status_at(self, now: datetime) -> SubscriptionStatus:
        if self.end_time is not None and now >= self.end_time:
            return SubscriptionStatus.ENDED
        return SubscriptionStatus.ACTIVE
