"""late_changes: the changes of delivered revisions that the grant service applied later than the
catalog dated them (its ClampedChange), shown in a subscription's handoff state.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-06
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from credit_common.db.types import UtcDateTime

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "late_changes",
        sa.Column("subscription_id", sa.String(length=64), nullable=False),
        sa.Column("revision", sa.Integer(), nullable=False),
        sa.Column("entitlement_key", sa.String(length=64), nullable=False),
        sa.Column("requested_time", UtcDateTime(), nullable=True),
        sa.Column("applied_time", UtcDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("subscription_id", "revision", "entitlement_key", name=op.f("pk_late_changes")),
    )


def downgrade() -> None:
    op.drop_table("late_changes")
