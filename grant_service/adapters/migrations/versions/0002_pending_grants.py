"""pending grants: a grant stored before it is effective has no GRANT entry until
the catch-up opens it; `grants.opens_at` holds its effective time until then
(NULL once its GRANT entry is written), indexed for the catch-up's sweep.

Existing data: grants stored with an effective time after their clock's "now"
(a one-off grant for later, a segment later in an issued period) had their GRANT
entry written at once. They become pending: that entry is deleted and opens_at
set. One voided before its effective time also loses its VOID entry (the two
cancelled out, and neither had happened) and stays voided, never opened.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-03
"""

from collections.abc import Sequence
from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

from credit_common.db.types import UtcDateTime

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("grants") as batch:
        batch.add_column(sa.Column("opens_at", UtcDateTime(), nullable=True))
    op.create_index("ix_grants_due_open", "grants", ["clock_key", "opens_at"], unique=False)
    op.create_index("ix_grants_customer_due_open", "grants", ["customer_key", "opens_at"], unique=False)

    grants = sa.table(
        "grants",
        sa.column("grant_id", sa.String()),
        sa.column("clock_key", sa.String()),
        sa.column("effective_time", UtcDateTime()),
        sa.column("void_time", UtcDateTime()),
        sa.column("opens_at", UtcDateTime()),
    )
    clocks = sa.table("test_clocks", sa.column("test_clock_id", sa.String()), sa.column("frozen_time", UtcDateTime()))
    entries = sa.table("ledger_entries", sa.column("grant_id", sa.String()), sa.column("type", sa.String()))
    now_of_clock = sa.func.coalesce(
        sa.select(clocks.c.frozen_time).where(clocks.c.test_clock_id == grants.c.clock_key).scalar_subquery(),
        sa.bindparam("real_now", datetime.now(UTC), type_=UtcDateTime()),
    )
    op.execute(grants.update().where(grants.c.effective_time > now_of_clock).values(opens_at=grants.c.effective_time))
    future = sa.select(grants.c.grant_id).where(grants.c.opens_at.is_not(None))
    op.execute(entries.delete().where(entries.c.grant_id.in_(future), entries.c.type.in_(["GRANT", "VOID"])))
    op.execute(
        grants.update().where(grants.c.opens_at.is_not(None), grants.c.void_time.is_not(None)).values(opens_at=None)
    )


def downgrade() -> None:
    op.drop_index("ix_grants_customer_due_open", table_name="grants")
    op.drop_index("ix_grants_due_open", table_name="grants")
    with op.batch_alter_table("grants") as batch:
        batch.drop_column("opens_at")
