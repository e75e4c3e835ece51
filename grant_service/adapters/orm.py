"""SQLAlchemy models of the grant service's database.

Grants and schedules are rows that change (a schedule's issuance cursor, a
grant's expiry when a subscription is amended, `opens_at` cleared once its GRANT
is recorded, `closed` once its EXPIRE or VOID is); the ledger is append-only,
but for the GRANT entry of a withdrawn grant (docs/grant-semantics.md). Unique constraints make a second
issuance impossible: one grant per (schedule, period, segment), one GRANT entry
and one closing (EXPIRE or VOID) entry per grant."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from sqlalchemy import (
    BigInteger,
    Boolean,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    false,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from credit_common.auth.store import define_api_keys_table
from credit_common.db.types import NAMING_CONVENTION, ExactDecimal, UtcDateTime
from grant_service.domain.clocks import REAL_TIME

# An auto-incrementing 64-bit key (SQLite only auto-increments INTEGER PRIMARY KEY).
BigIntKey = BigInteger().with_variant(Integer, "sqlite")


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class ClockRow(Base):
    __tablename__ = "test_clocks"
    test_clock_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    frozen_time: Mapped[datetime] = mapped_column(UtcDateTime())
    create_time: Mapped[datetime] = mapped_column(UtcDateTime())
    __table_args__ = (Index("ix_test_clocks_create_time", "create_time", "test_clock_id"),)


class CustomerRow(Base):
    __tablename__ = "customers"
    customer_key: Mapped[str] = mapped_column(String(64), primary_key=True)
    clock_key: Mapped[str] = mapped_column(String(40), default=REAL_TIME)


class SubscriptionRow(Base):
    __tablename__ = "subscriptions"
    subscription_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    customer_key: Mapped[str] = mapped_column(ForeignKey("customers.customer_key"), index=True)
    revision: Mapped[int] = mapped_column(BigInteger)
    start_time: Mapped[datetime] = mapped_column(UtcDateTime())
    end_time: Mapped[datetime | None] = mapped_column(UtcDateTime(), nullable=True)
    clock_key: Mapped[str] = mapped_column(String(40), default=REAL_TIME)
    update_time: Mapped[datetime] = mapped_column(UtcDateTime())
    # The window that bounds how far its revision may rise (grant_service.domain.revisions).
    revision_window_start: Mapped[datetime | None] = mapped_column(UtcDateTime(), nullable=True)
    revision_window_base: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    # Its SUBSCRIPTION_ENDED event is written (the catch-up reports the ends that have passed).
    end_reported: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    __table_args__ = (Index("ix_subscriptions_ending", "clock_key", "end_reported", "end_time"),)


class ScheduleRow(Base):
    """One credit schedule and its issuance cursor: the first period not yet issued
    (`next_period_start` is NULL once the schedule has ended)."""

    __tablename__ = "schedules"
    schedule_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    subscription_id: Mapped[str] = mapped_column(ForeignKey("subscriptions.subscription_id"))
    customer_key: Mapped[str] = mapped_column(String(64))
    clock_key: Mapped[str] = mapped_column(String(40), default=REAL_TIME)
    entitlement_key: Mapped[str] = mapped_column(String(64))
    currency_key: Mapped[str] = mapped_column(String(64))
    cadence: Mapped[str] = mapped_column(String(16))
    anchor_time: Mapped[datetime] = mapped_column(UtcDateTime())
    end_time: Mapped[datetime | None] = mapped_column(UtcDateTime(), nullable=True)
    amounts: Mapped[str] = mapped_column(Text)  # JSON [[amount, effective_time iso], ...]
    position: Mapped[int] = mapped_column(Integer, default=0)  # order within the subscription
    removed: Mapped[bool] = mapped_column(Boolean, default=False)
    next_period_index: Mapped[int] = mapped_column(BigInteger, default=0)
    next_period_start: Mapped[datetime | None] = mapped_column(UtcDateTime(), nullable=True)
    __table_args__ = (
        UniqueConstraint("subscription_id", "entitlement_key"),
        Index("ix_schedules_due", "clock_key", "next_period_start"),
        Index("ix_schedules_customer_due", "customer_key", "next_period_start"),
    )


class GrantRow(Base):
    __tablename__ = "grants"
    grant_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    customer_key: Mapped[str] = mapped_column(String(64))
    currency_key: Mapped[str] = mapped_column(String(64))
    clock_key: Mapped[str] = mapped_column(String(40), default=REAL_TIME)
    source: Mapped[str] = mapped_column(String(16))  # RECURRING or ONE_OFF
    subscription_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    schedule_id: Mapped[str | None] = mapped_column(ForeignKey("schedules.schedule_id"), nullable=True)
    entitlement_key: Mapped[str | None] = mapped_column(String(64), nullable=True)
    period_index: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    segment: Mapped[int | None] = mapped_column(Integer, nullable=True)
    amount: Mapped[Decimal] = mapped_column(ExactDecimal())
    # Running total of its DEBIT entries, kept in the same transaction under the customer lock, so that a
    # debit, expiry or void never re-sums the ledger. Balances at past instants sum the ledger instead.
    used: Mapped[Decimal] = mapped_column(ExactDecimal(), default=Decimal(0))
    effective_time: Mapped[datetime] = mapped_column(UtcDateTime())
    expire_time: Mapped[datetime | None] = mapped_column(UtcDateTime(), nullable=True)
    priority: Mapped[int] = mapped_column(Integer)
    void_time: Mapped[datetime | None] = mapped_column(UtcDateTime(), nullable=True)
    reason: Mapped[str] = mapped_column(Text, default="")
    closed: Mapped[bool] = mapped_column(Boolean, default=False)  # its EXPIRE or VOID is recorded
    # A pending grant (stored before it is effective, its GRANT entry not yet written) has its effective_time
    # here, for the catch-up that opens it; NULL once its GRANT entry is written.
    opens_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), nullable=True, default=None)
    __table_args__ = (
        UniqueConstraint("schedule_id", "period_index", "segment"),
        Index("ix_grants_customer", "customer_key", "currency_key", "effective_time"),
        Index("ix_grants_due_expiry", "clock_key", "closed", "expire_time"),
        Index("ix_grants_customer_due_expiry", "customer_key", "closed", "expire_time"),
        Index("ix_grants_due_open", "clock_key", "opens_at"),
        Index("ix_grants_customer_due_open", "customer_key", "opens_at"),
    )


def where_set(column: str) -> dict[str, object]:
    """A partial index's condition: only the rows where `column` is set (both backends)."""
    condition = text(f"{column} IS NOT NULL")
    return {"sqlite_where": condition, "postgresql_where": condition}


class LedgerEntryRow(Base):
    __tablename__ = "ledger_entries"
    seq: Mapped[int] = mapped_column(BigIntKey, primary_key=True, autoincrement=True)
    entry_id: Mapped[str] = mapped_column(String(40), unique=True)
    customer_key: Mapped[str] = mapped_column(String(64))
    currency_key: Mapped[str] = mapped_column(String(64))
    type: Mapped[str] = mapped_column(String(16))
    amount: Mapped[Decimal] = mapped_column(ExactDecimal())
    grant_id: Mapped[str] = mapped_column(ForeignKey("grants.grant_id"), index=True)
    effective_time: Mapped[datetime] = mapped_column(UtcDateTime())
    usage_id: Mapped[str | None] = mapped_column(String(40), nullable=True)  # DEBIT
    subscription_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    description: Mapped[str] = mapped_column(Text, default="")
    opens_grant_id: Mapped[str | None] = mapped_column(String(40), nullable=True)  # GRANT
    closes_grant_id: Mapped[str | None] = mapped_column(String(40), nullable=True)  # EXPIRE, VOID
    # Each of the last three is set in one kind of entry only: indexed where set (migration 0008).
    __table_args__ = (
        Index("ix_ledger_entries_customer", "customer_key", "effective_time", "seq"),
        Index("uq_ledger_entries_opens_grant_id", "opens_grant_id", unique=True, **where_set("opens_grant_id")),
        Index("uq_ledger_entries_closes_grant_id", "closes_grant_id", unique=True, **where_set("closes_grant_id")),
        Index("ix_ledger_entries_usage_id", "usage_id", **where_set("usage_id")),
    )


class UsageRow(Base):
    __tablename__ = "usages"
    usage_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    request_id: Mapped[str] = mapped_column(String(128))  # unique in request_ids (its idempotency record)
    customer_key: Mapped[str] = mapped_column(String(64))  # in no index: found by the ledger's (migration 0010)
    feature_key: Mapped[str] = mapped_column(String(64))
    quantity: Mapped[Decimal] = mapped_column(ExactDecimal())
    currency_key: Mapped[str] = mapped_column(String(64))
    credits_per_unit: Mapped[Decimal] = mapped_column(ExactDecimal())
    credits: Mapped[Decimal] = mapped_column(ExactDecimal())
    usage_time: Mapped[datetime] = mapped_column(UtcDateTime())
    balance_after: Mapped[Decimal] = mapped_column(ExactDecimal())


class RequestIdRow(Base):
    """Idempotency keys: recorded in the transaction of the effect they guard."""

    __tablename__ = "request_ids"
    scope: Mapped[str] = mapped_column(String(40), primary_key=True)
    request_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    fingerprint: Mapped[str] = mapped_column(String(64))
    resource_id: Mapped[str] = mapped_column(String(64))
    create_time: Mapped[datetime] = mapped_column(UtcDateTime())


class CurrencyRow(Base):
    __tablename__ = "currencies"
    currency_key: Mapped[str] = mapped_column(String(64), primary_key=True)
    revision: Mapped[int] = mapped_column(BigInteger)
    revision_window_start: Mapped[datetime | None] = mapped_column(UtcDateTime(), nullable=True)
    revision_window_base: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")


class RateSetRow(Base):
    """The complete rates of one revision of a currency, in force from `effective_time`."""

    __tablename__ = "rate_sets"
    rate_set_id: Mapped[int] = mapped_column(BigIntKey, primary_key=True, autoincrement=True)
    currency_key: Mapped[str] = mapped_column(ForeignKey("currencies.currency_key"))
    revision: Mapped[int] = mapped_column(BigInteger)
    effective_time: Mapped[datetime] = mapped_column(UtcDateTime())
    __table_args__ = (UniqueConstraint("currency_key", "revision"),)


class RateRow(Base):
    __tablename__ = "rates"
    rate_set_id: Mapped[int] = mapped_column(ForeignKey("rate_sets.rate_set_id"), primary_key=True)
    feature_key: Mapped[str] = mapped_column(String(64), primary_key=True, index=True)
    credits_per_unit: Mapped[Decimal] = mapped_column(ExactDecimal())


class EventRow(Base):
    """One credit event of the durable event log (grant_service.domain.events), written in the
    transaction of the change it reports. The log is read in (txid, seq) order, only below the
    oldest transaction still running (docs/architecture.md#the-event-log): `seq` is taken at
    insert, `txid` is the writing transaction's id on PostgreSQL (its server default,
    pg_current_xact_id(); set by migration 0005), 0 on SQLite. `dedupe_key` makes the same fact
    written twice (replicas, retries, a catch-up after a crash) one row."""

    __tablename__ = "events"
    seq: Mapped[int] = mapped_column(BigIntKey, primary_key=True, autoincrement=True)
    txid: Mapped[int] = mapped_column(BigInteger, server_default=text("0"))
    event_id: Mapped[str] = mapped_column(String(40), unique=True)
    dedupe_key: Mapped[str] = mapped_column(String(200))
    type: Mapped[str] = mapped_column(String(32))
    customer_key: Mapped[str] = mapped_column(String(64))
    currency_key: Mapped[str] = mapped_column(String(64), default="")
    clock_key: Mapped[str] = mapped_column(String(40), default=REAL_TIME)
    occurred_time: Mapped[datetime] = mapped_column(UtcDateTime())
    recorded_time: Mapped[datetime] = mapped_column(UtcDateTime())
    payload: Mapped[str] = mapped_column(Text)  # JSON: the payload message's fields (domain.events)
    __table_args__ = (
        Index("ix_events_log", "txid", "seq"),
        Index("ix_events_customer", "customer_key", "txid", "seq"),
    )


class BalanceAlertSetRow(Base):
    """Balance alert levels set over RPC, append-only: the latest row of a (customer, currency) is in
    force; customer_key '' is the currency's default; levels NULL: cleared. Its id is the version
    that a debit reads to know its cached levels are current."""

    __tablename__ = "balance_alert_sets"
    alert_set_id: Mapped[int] = mapped_column(BigIntKey, primary_key=True, autoincrement=True)
    customer_key: Mapped[str] = mapped_column(String(64))
    currency_key: Mapped[str] = mapped_column(String(64))
    levels: Mapped[str | None] = mapped_column(Text, nullable=True)  # JSON [["amount"|"percent", "10"], ...]
    create_time: Mapped[datetime] = mapped_column(UtcDateTime())
    __table_args__ = (Index("ix_balance_alert_sets_key", "customer_key", "currency_key", "alert_set_id"),)


class BalanceAlertStateRow(Base):
    """The alert state last evaluated (of a customer and currency with levels): the levels its
    balance was below, and whether it was depleted (grant_service.domain.alerts.below)."""

    __tablename__ = "balance_alert_states"
    customer_key: Mapped[str] = mapped_column(String(64), primary_key=True)
    currency_key: Mapped[str] = mapped_column(String(64), primary_key=True)
    below: Mapped[str] = mapped_column(Text)  # JSON list of level keys ("amount:100", "percent:50", "depleted")


class EventLogRow(Base):
    """The event log's identity: one row, a random id made when the log was created. Cursors carry
    it, so that a cursor of another deployment's log is refused rather than misread."""

    __tablename__ = "event_log"
    log_id: Mapped[str] = mapped_column(String(40), primary_key=True)


# API keys of this service's callers (credit_common.auth): id, hash of the secret, roles, label.
class WebhookEndpointRow(Base):
    """A webhook endpoint and its signing secrets (stored as they are: signing needs them)."""

    __tablename__ = "webhook_endpoints"
    endpoint_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    url: Mapped[str] = mapped_column(Text)
    event_types: Mapped[str] = mapped_column(Text, default="")  # space-separated; empty: every type
    description: Mapped[str] = mapped_column(String(512), default="")
    disabled_reason: Mapped[str] = mapped_column(String(16), default="")  # "": enabled
    secret: Mapped[str] = mapped_column(String(80))
    previous_secret: Mapped[str | None] = mapped_column(String(80), nullable=True)
    previous_secret_expire_time: Mapped[datetime | None] = mapped_column(UtcDateTime(), nullable=True)
    failing_since: Mapped[datetime | None] = mapped_column(UtcDateTime(), nullable=True)
    create_time: Mapped[datetime] = mapped_column(UtcDateTime())
    update_time: Mapped[datetime] = mapped_column(UtcDateTime())
    __table_args__ = (Index("ix_webhook_endpoints_create_time", "create_time", "endpoint_id"),)


class WebhookDeliveryRow(Base):
    """One event to send to one endpoint: a queue row (credit_common.delivery.leases), leased while
    a worker sends it (`leased` and `next_attempt_at` in the future). Unique per (endpoint, event,
    trigger_key): "" for the event's own delivery, the resend's or replay's id for the others."""

    __tablename__ = "webhook_deliveries"
    id: Mapped[int] = mapped_column(BigIntKey, primary_key=True, autoincrement=True)
    endpoint_id: Mapped[str] = mapped_column(String(40))
    event_id: Mapped[str] = mapped_column(String(64))
    event_seq: Mapped[int] = mapped_column(BigInteger)
    event_type: Mapped[str] = mapped_column(String(64))
    body: Mapped[bytes] = mapped_column(LargeBinary)
    trigger: Mapped[str] = mapped_column(String(16))
    trigger_key: Mapped[str] = mapped_column(String(40), default="")
    status: Mapped[str] = mapped_column(String(16))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(UtcDateTime())
    leased: Mapped[bool] = mapped_column(Boolean, default=False)
    last_error: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())
    delivered_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), nullable=True)
    __table_args__ = (
        UniqueConstraint("endpoint_id", "event_id", "trigger_key"),
        Index("ix_webhook_deliveries_status_next_attempt_at", "status", "next_attempt_at"),
        Index("ix_webhook_deliveries_endpoint_status_seq", "endpoint_id", "status", "event_seq"),
    )


class WebhookAttemptRow(Base):
    __tablename__ = "webhook_attempts"
    attempt_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    delivery_id: Mapped[int] = mapped_column(BigInteger)
    endpoint_id: Mapped[str] = mapped_column(String(40))
    event_id: Mapped[str] = mapped_column(String(64))
    attempt: Mapped[int] = mapped_column(Integer)
    attempt_time: Mapped[datetime] = mapped_column(UtcDateTime())
    duration_us: Mapped[int] = mapped_column(BigInteger)
    http_status: Mapped[int] = mapped_column(Integer, default=0)
    error: Mapped[str] = mapped_column(Text, default="")
    next_attempt_time: Mapped[datetime | None] = mapped_column(UtcDateTime(), nullable=True)
    trigger: Mapped[str] = mapped_column(String(16))
    __table_args__ = (
        Index("ix_webhook_attempts_endpoint_time", "endpoint_id", "attempt_time", "attempt_id"),
        Index("ix_webhook_attempts_event_time", "event_id", "attempt_time", "attempt_id"),
    )


class WebhookCursorRow(Base):
    """How far the fan-out has read the event log (one row, `name` "events")."""

    __tablename__ = "webhook_cursor"
    name: Mapped[str] = mapped_column(String(16), primary_key=True)
    txid: Mapped[int] = mapped_column(BigInteger)  # the event log position (txid, seq) of the last event fanned out
    seq: Mapped[int] = mapped_column(BigInteger)


API_KEYS = define_api_keys_table(Base.metadata)

# The tables, for the Core statements of the repositories and the hot paths (no ORM instances).
CLOCKS = ClockRow.__table__
CUSTOMERS = CustomerRow.__table__
SUBSCRIPTIONS = SubscriptionRow.__table__
SCHEDULES = ScheduleRow.__table__
GRANTS = GrantRow.__table__
LEDGER_ENTRIES = LedgerEntryRow.__table__
USAGES = UsageRow.__table__
REQUEST_IDS = RequestIdRow.__table__
CURRENCIES = CurrencyRow.__table__
RATE_SETS = RateSetRow.__table__
RATES = RateRow.__table__
WEBHOOK_ENDPOINTS = WebhookEndpointRow.__table__
WEBHOOK_DELIVERIES = WebhookDeliveryRow.__table__
WEBHOOK_ATTEMPTS = WebhookAttemptRow.__table__
WEBHOOK_CURSOR = WebhookCursorRow.__table__
EVENTS = EventRow.__table__
EVENT_LOG = EventLogRow.__table__
ALERT_SETS = BalanceAlertSetRow.__table__
ALERT_STATES = BalanceAlertStateRow.__table__
