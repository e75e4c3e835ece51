"""events: the durable credit event log (table `events`, one row per event, unique by event id
and by dedupe key) and its identity (`event_log`, one row with a random id that cursors carry).

On PostgreSQL `events.txid` defaults to the writing transaction's id (pg_current_xact_id()), by
which readers order the log and hold back below the oldest transaction still running
(docs/architecture.md#the-event-log); on SQLite it is 0 (one writer: insert order is commit order).

Revision ID: 0005
Revises: 0003 (main adds a 0004; the integrator re-points this to it)
Create Date: 2026-12-06
"""

import secrets
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from credit_common.db.types import UtcDateTime

revision: str = "0005"
down_revision: str | None = "0003"
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


def downgrade() -> None:
    op.drop_table("event_log")
    op.drop_index("ix_events_customer", table_name="events")
    op.drop_index("ix_events_log", table_name="events")
    op.drop_table("events")
