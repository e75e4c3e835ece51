"""events: the durable credit event log (table `events`, one row per event, unique by event id
and by dedupe key) and its identity (`event_log`, one row with a random id that cursors carry);
`subscriptions.end_reported` (its SUBSCRIPTION_ENDED event written); balance alerts: the levels
set (`balance_alert_sets`, append-only) and the alert state last evaluated (`balance_alert_states`).

On PostgreSQL `events.txid` defaults to the writing transaction's id (pg_current_xact_id()), by
which readers order the log and hold back below the oldest transaction still running
(docs/architecture.md#the-event-log); on SQLite it is 0 (one writer: insert order is commit order).

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-06
"""

import secrets
from collections.abc import Sequence
from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

from credit_common.db.types import UtcDateTime

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    postgres = op.get_bind().dialect.name == "postgresql"
    txid_default = sa.text("(pg_current_xact_id()::text::bigint)") if postgres else sa.text("0")
    op.create_table(
        "events",
        sa.Column("seq", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False),
        sa.Column("txid", sa.BigInteger(), server_default=txid_default, nullable=False),
        sa.Column("event_id", sa.String(length=40), nullable=False),
        sa.Column("dedupe_key", sa.String(length=200), nullable=False),
        sa.Column("type", sa.String(length=32), nullable=False),
        sa.Column("customer_key", sa.String(length=64), nullable=False),
        sa.Column("currency_key", sa.String(length=64), nullable=False),
        sa.Column("clock_key", sa.String(length=40), nullable=False),
        sa.Column("occurred_time", UtcDateTime(), nullable=False),
        sa.Column("recorded_time", UtcDateTime(), nullable=False),
        sa.Column("payload", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("seq", name=op.f("pk_events")),
        sa.UniqueConstraint("event_id", name=op.f("uq_events_event_id")),
        sa.UniqueConstraint("dedupe_key", name=op.f("uq_events_dedupe_key")),
    )
    op.create_index("ix_events_log", "events", ["txid", "seq"], unique=False)
    op.create_index("ix_events_customer", "events", ["customer_key", "txid", "seq"], unique=False)
    op.create_table(
        "event_log",
        sa.Column("log_id", sa.String(length=40), nullable=False),
        sa.PrimaryKeyConstraint("log_id", name=op.f("pk_event_log")),
    )
    log = sa.table("event_log", sa.column("log_id", sa.String()))
    op.execute(log.insert().values(log_id=secrets.token_hex(8)))
    op.create_table(
        "balance_alert_sets",
        sa.Column("alert_set_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True),
        sa.Column("customer_key", sa.String(length=64), nullable=False),
        sa.Column("currency_key", sa.String(length=64), nullable=False),
        sa.Column("levels", sa.Text(), nullable=True),
        sa.Column("create_time", UtcDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("alert_set_id", name=op.f("pk_balance_alert_sets")),
    )
    op.create_index("ix_balance_alert_sets_key", "balance_alert_sets", ["customer_key", "currency_key", "alert_set_id"])
    op.create_table(
        "balance_alert_states",
        sa.Column("customer_key", sa.String(length=64), nullable=False),
        sa.Column("currency_key", sa.String(length=64), nullable=False),
        sa.Column("below", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("customer_key", "currency_key", name=op.f("pk_balance_alert_states")),
    )
    # Whether a subscription's SUBSCRIPTION_ENDED event is written; the ends already past before
    # the log existed count as reported (the log does not invent history).
    with op.batch_alter_table("subscriptions") as batch:
        batch.add_column(sa.Column("end_reported", sa.Boolean(), server_default=sa.false(), nullable=False))
    op.create_index("ix_subscriptions_ending", "subscriptions", ["clock_key", "end_reported", "end_time"], unique=False)
    subscriptions = sa.table(
        "subscriptions", sa.column("end_time", UtcDateTime()), sa.column("end_reported", sa.Boolean())
    )
    op.execute(
        subscriptions.update()
        .where(subscriptions.c.end_time.is_not(None))
        .where(subscriptions.c.end_time <= sa.bindparam("now", datetime.now(UTC), type_=UtcDateTime()))
        .values(end_reported=True)
    )


def downgrade() -> None:
    op.drop_table("balance_alert_states")
    op.drop_index("ix_balance_alert_sets_key", table_name="balance_alert_sets")
    op.drop_table("balance_alert_sets")
    op.drop_index("ix_subscriptions_ending", table_name="subscriptions")
    with op.batch_alter_table("subscriptions") as batch:
        batch.drop_column("end_reported")
    op.drop_table("event_log")
    op.drop_index("ix_events_customer", table_name="events")
    op.drop_index("ix_events_log", table_name="events")
    op.drop_table("events")
