"""revision windows: how far a subscription's or currency's revision may rise is bounded per window
of time, in total (grant_service.domain.revisions). Each row keeps when its current window opened
and the revision it held then.

Existing data: no window is open (NULL start, base 0); the first rise after the upgrade opens one
at the revision held.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-06
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from credit_common.db.types import UtcDateTime

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TABLES = ("subscriptions", "currencies")


def upgrade() -> None:
    for table in TABLES:
        with op.batch_alter_table(table) as batch:
            batch.add_column(sa.Column("revision_window_start", UtcDateTime(), nullable=True))
            batch.add_column(sa.Column("revision_window_base", sa.BigInteger(), nullable=False, server_default="0"))


def downgrade() -> None:
    for table in TABLES:
        with op.batch_alter_table(table) as batch:
            batch.drop_column("revision_window_base")
            batch.drop_column("revision_window_start")
