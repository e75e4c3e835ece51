"""initial schema: subscriptions and their credit schedules (with the issuance
cursor), grants, the append-only ledger, usages, request ids, currencies and
their rate history, test clocks.

Revision ID: 0001
Revises:
Create Date: 2026-11-23
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from credit_common.db.types import ExactDecimal, UtcDateTime

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BIG_INT_KEY = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "currencies",
        sa.Column("currency_key", sa.String(length=64), nullable=False),
        sa.Column("revision", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("currency_key", name=op.f("pk_currencies")),
    )
    op.create_table(
        "customers",
        sa.Column("customer_key", sa.String(length=64), nullable=False),
        sa.Column("clock_key", sa.String(length=40), nullable=False),
        sa.PrimaryKeyConstraint("customer_key", name=op.f("pk_customers")),
    )
    op.create_table(
        "request_ids",
        sa.Column("scope", sa.String(length=40), nullable=False),
        sa.Column("request_id", sa.String(length=128), nullable=False),
        sa.Column("fingerprint", sa.String(length=64), nullable=False),
        sa.Column("resource_id", sa.String(length=64), nullable=False),
        sa.Column("create_time", UtcDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("scope", "request_id", name=op.f("pk_request_ids")),
    )
    op.create_table(
        "test_clocks",
        sa.Column("test_clock_id", sa.String(length=40), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("frozen_time", UtcDateTime(), nullable=False),
        sa.Column("create_time", UtcDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("test_clock_id", name=op.f("pk_test_clocks")),
    )
    op.create_index("ix_test_clocks_create_time", "test_clocks", ["create_time", "test_clock_id"], unique=False)
    op.create_table(
        "usages",
        sa.Column("usage_id", sa.String(length=40), nullable=False),
        sa.Column("request_id", sa.String(length=128), nullable=False),
        sa.Column("customer_key", sa.String(length=64), nullable=False),
        sa.Column("feature_key", sa.String(length=64), nullable=False),
        sa.Column("quantity", ExactDecimal(), nullable=False),
        sa.Column("currency_key", sa.String(length=64), nullable=False),
        sa.Column("credits_per_unit", ExactDecimal(), nullable=False),
        sa.Column("credits", ExactDecimal(), nullable=False),
        sa.Column("usage_time", UtcDateTime(), nullable=False),
        sa.Column("balance_after", ExactDecimal(), nullable=False),
        sa.PrimaryKeyConstraint("usage_id", name=op.f("pk_usages")),
        sa.UniqueConstraint("request_id", name=op.f("uq_usages_request_id")),
    )
    op.create_index(op.f("ix_usages_customer_key"), "usages", ["customer_key"], unique=False)
    op.create_table(
        "rate_sets",
        sa.Column("rate_set_id", BIG_INT_KEY, autoincrement=True, nullable=False),
        sa.Column("currency_key", sa.String(length=64), nullable=False),
        sa.Column("revision", sa.BigInteger(), nullable=False),
        sa.Column("effective_time", UtcDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["currency_key"], ["currencies.currency_key"], name=op.f("fk_rate_sets_currency_key_currencies")
        ),
        sa.PrimaryKeyConstraint("rate_set_id", name=op.f("pk_rate_sets")),
        sa.UniqueConstraint("currency_key", "revision", name=op.f("uq_rate_sets_currency_key_revision")),
    )
    op.create_table(
        "subscriptions",
        sa.Column("subscription_id", sa.String(length=64), nullable=False),
        sa.Column("customer_key", sa.String(length=64), nullable=False),
        sa.Column("revision", sa.BigInteger(), nullable=False),
        sa.Column("start_time", UtcDateTime(), nullable=False),
        sa.Column("end_time", UtcDateTime(), nullable=True),
        sa.Column("clock_key", sa.String(length=40), nullable=False),
        sa.Column("update_time", UtcDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["customer_key"], ["customers.customer_key"], name=op.f("fk_subscriptions_customer_key_customers")
        ),
        sa.PrimaryKeyConstraint("subscription_id", name=op.f("pk_subscriptions")),
    )
    op.create_index(op.f("ix_subscriptions_customer_key"), "subscriptions", ["customer_key"], unique=False)
    op.create_table(
        "rates",
        sa.Column("rate_set_id", BIG_INT_KEY, nullable=False),
        sa.Column("feature_key", sa.String(length=64), nullable=False),
        sa.Column("credits_per_unit", ExactDecimal(), nullable=False),
        sa.ForeignKeyConstraint(
            ["rate_set_id"], ["rate_sets.rate_set_id"], name=op.f("fk_rates_rate_set_id_rate_sets")
        ),
        sa.PrimaryKeyConstraint("rate_set_id", "feature_key", name=op.f("pk_rates")),
    )
    op.create_index(op.f("ix_rates_feature_key"), "rates", ["feature_key"], unique=False)
    op.create_table(
        "schedules",
        sa.Column("schedule_id", sa.String(length=40), nullable=False),
        sa.Column("subscription_id", sa.String(length=64), nullable=False),
        sa.Column("customer_key", sa.String(length=64), nullable=False),
        sa.Column("clock_key", sa.String(length=40), nullable=False),
        sa.Column("entitlement_key", sa.String(length=64), nullable=False),
        sa.Column("currency_key", sa.String(length=64), nullable=False),
        sa.Column("cadence", sa.String(length=16), nullable=False),
        sa.Column("anchor_time", UtcDateTime(), nullable=False),
        sa.Column("end_time", UtcDateTime(), nullable=True),
        sa.Column("amounts", sa.Text(), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("removed", sa.Boolean(), nullable=False),
        sa.Column("next_period_index", sa.BigInteger(), nullable=False),
        sa.Column("next_period_start", UtcDateTime(), nullable=True),
        sa.ForeignKeyConstraint(
            ["subscription_id"],
            ["subscriptions.subscription_id"],
            name=op.f("fk_schedules_subscription_id_subscriptions"),
        ),
        sa.PrimaryKeyConstraint("schedule_id", name=op.f("pk_schedules")),
        sa.UniqueConstraint(
            "subscription_id", "entitlement_key", name=op.f("uq_schedules_subscription_id_entitlement_key")
        ),
    )
    op.create_index("ix_schedules_customer_due", "schedules", ["customer_key", "next_period_start"], unique=False)
    op.create_index("ix_schedules_due", "schedules", ["clock_key", "next_period_start"], unique=False)
    op.create_table(
        "grants",
        sa.Column("grant_id", sa.String(length=40), nullable=False),
        sa.Column("customer_key", sa.String(length=64), nullable=False),
        sa.Column("currency_key", sa.String(length=64), nullable=False),
        sa.Column("clock_key", sa.String(length=40), nullable=False),
        sa.Column("source", sa.String(length=16), nullable=False),
        sa.Column("subscription_id", sa.String(length=64), nullable=True),
        sa.Column("schedule_id", sa.String(length=40), nullable=True),
        sa.Column("entitlement_key", sa.String(length=64), nullable=True),
        sa.Column("period_index", sa.BigInteger(), nullable=True),
        sa.Column("segment", sa.Integer(), nullable=True),
        sa.Column("amount", ExactDecimal(), nullable=False),
        sa.Column("used", ExactDecimal(), nullable=False),
        sa.Column("effective_time", UtcDateTime(), nullable=False),
        sa.Column("expire_time", UtcDateTime(), nullable=True),
        sa.Column("priority", sa.Integer(), nullable=False),
        sa.Column("void_time", UtcDateTime(), nullable=True),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("closed", sa.Boolean(), nullable=False),
        sa.ForeignKeyConstraint(
            ["schedule_id"], ["schedules.schedule_id"], name=op.f("fk_grants_schedule_id_schedules")
        ),
        sa.PrimaryKeyConstraint("grant_id", name=op.f("pk_grants")),
        sa.UniqueConstraint(
            "schedule_id", "period_index", "segment", name=op.f("uq_grants_schedule_id_period_index_segment")
        ),
    )
    op.create_index("ix_grants_customer", "grants", ["customer_key", "currency_key", "effective_time"], unique=False)
    op.create_index("ix_grants_customer_due_expiry", "grants", ["customer_key", "closed", "expire_time"], unique=False)
    op.create_index("ix_grants_due_expiry", "grants", ["clock_key", "closed", "expire_time"], unique=False)
    op.create_table(
        "ledger_entries",
        sa.Column("seq", BIG_INT_KEY, autoincrement=True, nullable=False),
        sa.Column("entry_id", sa.String(length=40), nullable=False),
        sa.Column("customer_key", sa.String(length=64), nullable=False),
        sa.Column("currency_key", sa.String(length=64), nullable=False),
        sa.Column("type", sa.String(length=16), nullable=False),
        sa.Column("amount", ExactDecimal(), nullable=False),
        sa.Column("grant_id", sa.String(length=40), nullable=False),
        sa.Column("effective_time", UtcDateTime(), nullable=False),
        sa.Column("usage_id", sa.String(length=40), nullable=True),
        sa.Column("subscription_id", sa.String(length=64), nullable=True),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("opens_grant_id", sa.String(length=40), nullable=True),
        sa.Column("closes_grant_id", sa.String(length=40), nullable=True),
        sa.ForeignKeyConstraint(["grant_id"], ["grants.grant_id"], name=op.f("fk_ledger_entries_grant_id_grants")),
        sa.PrimaryKeyConstraint("seq", name=op.f("pk_ledger_entries")),
        sa.UniqueConstraint("closes_grant_id", name=op.f("uq_ledger_entries_closes_grant_id")),
        sa.UniqueConstraint("entry_id", name=op.f("uq_ledger_entries_entry_id")),
        sa.UniqueConstraint("opens_grant_id", name=op.f("uq_ledger_entries_opens_grant_id")),
    )
    op.create_index(
        "ix_ledger_entries_customer", "ledger_entries", ["customer_key", "effective_time", "seq"], unique=False
    )
    op.create_index(op.f("ix_ledger_entries_grant_id"), "ledger_entries", ["grant_id"], unique=False)
    op.create_index(op.f("ix_ledger_entries_usage_id"), "ledger_entries", ["usage_id"], unique=False)


def downgrade() -> None:
    op.drop_table("ledger_entries")
    op.drop_table("grants")
    op.drop_table("schedules")
    op.drop_table("rates")
    op.drop_table("subscriptions")
    op.drop_table("rate_sets")
    op.drop_table("usages")
    op.drop_table("test_clocks")
    op.drop_table("request_ids")
    op.drop_table("customers")
    op.drop_table("currencies")
