"""SQLAlchemy models of the catalog's database. The schema itself is created
by the Alembic migrations (adapters/migrations), never by create_all."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import JSON, ForeignKey, Index, Integer, LargeBinary, MetaData, String, Text, UniqueConstraint
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from credit_common.auth.store import define_api_keys_table
from credit_common.db.types import NAMING_CONVENTION, ExactDecimal, UtcDateTime


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class FeatureRow(Base):
    __tablename__ = "features"
    key: Mapped[str] = mapped_column(String(63), primary_key=True)
    display_name: Mapped[str] = mapped_column(String(200))
    type: Mapped[str] = mapped_column(String(16))
    unit_name: Mapped[str] = mapped_column(String(200))
    create_time: Mapped[datetime] = mapped_column(UtcDateTime())


class CreditCurrencyRow(Base):
    __tablename__ = "credit_currencies"
    key: Mapped[str] = mapped_column(String(63), primary_key=True)
    display_name: Mapped[str] = mapped_column(String(200))
    unit_name: Mapped[str] = mapped_column(String(200))
    revision: Mapped[int] = mapped_column(Integer)
    rates_revision: Mapped[int] = mapped_column(Integer)  # revision whose rate set is in force
    create_time: Mapped[datetime] = mapped_column(UtcDateTime())
    update_time: Mapped[datetime] = mapped_column(UtcDateTime())


class CreditRateRow(Base):
    """Rate history: every rate set a currency had, with when it took effect."""

    __tablename__ = "credit_rates"
    currency_key: Mapped[str] = mapped_column(ForeignKey("credit_currencies.key"), primary_key=True)
    revision: Mapped[int] = mapped_column(Integer, primary_key=True)
    feature_key: Mapped[str] = mapped_column(ForeignKey("features.key"), primary_key=True)
    credits_per_unit: Mapped[Decimal] = mapped_column(ExactDecimal())
    effective_time: Mapped[datetime] = mapped_column(UtcDateTime())


class PlanRow(Base):
    __tablename__ = "plans"
    key: Mapped[str] = mapped_column(String(63), primary_key=True)
    draft: Mapped[dict[str, Any]] = mapped_column(JSON)
    latest_version: Mapped[int] = mapped_column(Integer)
    create_time: Mapped[datetime] = mapped_column(UtcDateTime())
    update_time: Mapped[datetime] = mapped_column(UtcDateTime())
    archive_time: Mapped[datetime | None] = mapped_column(UtcDateTime(), nullable=True)


class PlanVersionRow(Base):
    """A published version: an immutable snapshot of the draft (decimals as strings)."""

    __tablename__ = "plan_versions"
    plan_key: Mapped[str] = mapped_column(ForeignKey("plans.key"), primary_key=True)
    version: Mapped[int] = mapped_column(Integer, primary_key=True)
    content: Mapped[dict[str, Any]] = mapped_column(JSON)
    publish_time: Mapped[datetime] = mapped_column(UtcDateTime())


class CustomerRow(Base):
    __tablename__ = "customers"
    key: Mapped[str] = mapped_column(String(63), primary_key=True)
    display_name: Mapped[str] = mapped_column(String(200))
    test_clock_id: Mapped[str | None] = mapped_column(String(128), nullable=True)
    create_time: Mapped[datetime] = mapped_column(UtcDateTime())


class SubscriptionRow(Base):
    __tablename__ = "subscriptions"
    __table_args__ = (
        Index("ix_subscriptions_customer_key_create_time", "customer_key", "create_time"),
        Index("ix_subscriptions_plan_key_create_time", "plan_key", "create_time"),
    )
    subscription_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    customer_key: Mapped[str] = mapped_column(ForeignKey("customers.key"))
    plan_key: Mapped[str] = mapped_column(String(63))
    plan_version: Mapped[int] = mapped_column(Integer)
    start_time: Mapped[datetime] = mapped_column(UtcDateTime())
    end_time: Mapped[datetime | None] = mapped_column(UtcDateTime(), nullable=True)
    test_clock_id: Mapped[str | None] = mapped_column(String(128), nullable=True)
    revision: Mapped[int] = mapped_column(Integer)
    entitlements: Mapped[dict[str, Any]] = mapped_column(JSON)  # resolved, with amount history; decimals as strings
    create_time: Mapped[datetime] = mapped_column(UtcDateTime())
    cancel_time: Mapped[datetime | None] = mapped_column(UtcDateTime(), nullable=True)
    cancel_mode: Mapped[str | None] = mapped_column(String(16), nullable=True)  # "IMMEDIATELY", "AT_PERIOD_END"


class IdempotencyRow(Base):
    """One row per (method, request_id) seen: the request's fingerprint and the
    response it got, written in the same transaction as the effect."""

    __tablename__ = "idempotency_keys"
    method: Mapped[str] = mapped_column(String(64), primary_key=True)
    request_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    fingerprint: Mapped[str] = mapped_column(String(64))
    response: Mapped[bytes] = mapped_column(LargeBinary)
    create_time: Mapped[datetime] = mapped_column(UtcDateTime())


class OutboxDeliveryRow(Base):
    """Transactional outbox: a change the grant service must be told about."""

    __tablename__ = "outbox_deliveries"
    __table_args__ = (
        UniqueConstraint("kind", "aggregate_key", "revision"),
        Index("ix_outbox_deliveries_status_next_attempt_at", "status", "next_attempt_at"),
    )
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    kind: Mapped[str] = mapped_column(String(32))  # "subscription" or "credit_currency"
    aggregate_key: Mapped[str] = mapped_column(String(128))
    revision: Mapped[int] = mapped_column(Integer)
    payload: Mapped[bytes] = mapped_column(LargeBinary)
    status: Mapped[str] = mapped_column(String(16))  # "pending", "delivered", "failed"
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(UtcDateTime())
    last_error: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())
    delivered_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), nullable=True)
    # The W3C traceparent of the call that queued it (credit_common.tracing); None with tracing off.
    trace_context: Mapped[str | None] = mapped_column(String(512), nullable=True)


class LateChangeRow(Base):
    """A change of a delivered revision that the grant service applied later than dated (its
    ClampedChange), recorded when the delivery's answer comes back; shown in the handoff state."""

    __tablename__ = "late_changes"
    subscription_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    revision: Mapped[int] = mapped_column(Integer, primary_key=True)
    entitlement_key: Mapped[str] = mapped_column(String(64), primary_key=True)  # '' for the end time
    requested_time: Mapped[datetime | None] = mapped_column(UtcDateTime(), nullable=True)
    applied_time: Mapped[datetime] = mapped_column(UtcDateTime())


# API keys of this service's callers (credit_common.auth): id, hash of the secret, roles, label.
API_KEYS = define_api_keys_table(Base.metadata)
