"""initial schema

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


def upgrade() -> None:
    op.create_table(
        "features",
        sa.Column("key", sa.String(63), nullable=False),
        sa.Column("display_name", sa.String(200), nullable=False),
        sa.Column("type", sa.String(16), nullable=False),
        sa.Column("unit_name", sa.String(200), nullable=False),
        sa.Column("create_time", UtcDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("key", name=op.f("pk_features")),
    )
    op.create_table(
        "credit_currencies",
        sa.Column("key", sa.String(63), nullable=False),
        sa.Column("display_name", sa.String(200), nullable=False),
        sa.Column("unit_name", sa.String(200), nullable=False),
        sa.Column("revision", sa.Integer(), nullable=False),
        sa.Column("rates_revision", sa.Integer(), nullable=False),
        sa.Column("create_time", UtcDateTime(), nullable=False),
        sa.Column("update_time", UtcDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("key", name=op.f("pk_credit_currencies")),
    )
    op.create_table(
        "credit_rates",
        sa.Column("currency_key", sa.String(63), nullable=False),
        sa.Column("revision", sa.Integer(), nullable=False),
        sa.Column("feature_key", sa.String(63), nullable=False),
        sa.Column("credits_per_unit", ExactDecimal(), nullable=False),
        sa.Column("effective_time", UtcDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["currency_key"], ["credit_currencies.key"], name=op.f("fk_credit_rates_currency_key_credit_currencies")
        ),
        sa.ForeignKeyConstraint(["feature_key"], ["features.key"], name=op.f("fk_credit_rates_feature_key_features")),
        sa.PrimaryKeyConstraint("currency_key", "revision", "feature_key", name=op.f("pk_credit_rates")),
    )
    op.create_table(
        "plans",
        sa.Column("key", sa.String(63), nullable=False),
        sa.Column("draft", sa.JSON(), nullable=False),
        sa.Column("latest_version", sa.Integer(), nullable=False),
        sa.Column("create_time", UtcDateTime(), nullable=False),
        sa.Column("update_time", UtcDateTime(), nullable=False),
        sa.Column("archive_time", UtcDateTime(), nullable=True),
        sa.PrimaryKeyConstraint("key", name=op.f("pk_plans")),
    )
    op.create_table(
        "plan_versions",
        sa.Column("plan_key", sa.String(63), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("content", sa.JSON(), nullable=False),
        sa.Column("publish_time", UtcDateTime(), nullable=False),
        sa.ForeignKeyConstraint(["plan_key"], ["plans.key"], name=op.f("fk_plan_versions_plan_key_plans")),
        sa.PrimaryKeyConstraint("plan_key", "version", name=op.f("pk_plan_versions")),
    )
    op.create_table(
        "customers",
        sa.Column("key", sa.String(63), nullable=False),
        sa.Column("display_name", sa.String(200), nullable=False),
        sa.Column("test_clock_id", sa.String(128), nullable=True),
        sa.Column("create_time", UtcDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("key", name=op.f("pk_customers")),
    )
    op.create_table(
        "subscriptions",
        sa.Column("subscription_id", sa.String(64), nullable=False),
        sa.Column("customer_key", sa.String(63), nullable=False),
        sa.Column("plan_key", sa.String(63), nullable=False),
        sa.Column("plan_version", sa.Integer(), nullable=False),
        sa.Column("start_time", UtcDateTime(), nullable=False),
        sa.Column("end_time", UtcDateTime(), nullable=True),
        sa.Column("test_clock_id", sa.String(128), nullable=True),
        sa.Column("revision", sa.Integer(), nullable=False),
        sa.Column("entitlements", sa.JSON(), nullable=False),
        sa.Column("create_time", UtcDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["customer_key"], ["customers.key"], name=op.f("fk_subscriptions_customer_key_customers")
        ),
        sa.PrimaryKeyConstraint("subscription_id", name=op.f("pk_subscriptions")),
    )
    op.create_index("ix_subscriptions_customer_key_create_time", "subscriptions", ["customer_key", "create_time"])
    op.create_index("ix_subscriptions_plan_key_create_time", "subscriptions", ["plan_key", "create_time"])
    op.create_table(
        "idempotency_keys",
        sa.Column("method", sa.String(64), nullable=False),
        sa.Column("request_id", sa.String(128), nullable=False),
        sa.Column("fingerprint", sa.String(64), nullable=False),
        sa.Column("response", sa.LargeBinary(), nullable=False),
        sa.Column("create_time", UtcDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("method", "request_id", name=op.f("pk_idempotency_keys")),
    )
    op.create_table(
        "outbox_deliveries",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("aggregate_key", sa.String(128), nullable=False),
        sa.Column("revision", sa.Integer(), nullable=False),
        sa.Column("payload", sa.LargeBinary(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", UtcDateTime(), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.Column("delivered_at", UtcDateTime(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_outbox_deliveries")),
        sa.UniqueConstraint(
            "kind", "aggregate_key", "revision", name=op.f("uq_outbox_deliveries_kind_aggregate_key_revision")
        ),
    )
    op.create_index("ix_outbox_deliveries_status_next_attempt_at", "outbox_deliveries", ["status", "next_attempt_at"])


def downgrade() -> None:
    for table in (
        "outbox_deliveries",
        "idempotency_keys",
        "subscriptions",
        "customers",
        "plan_versions",
        "plans",
        "credit_rates",
        "credit_currencies",
        "features",
    ):
        op.drop_table(table)
