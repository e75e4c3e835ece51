"""outbox_deliveries.trace_context: the W3C traceparent of the call that queued the delivery, so that
its delivery continues that trace (credit_common.tracing); NULL when tracing was off

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-06
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("outbox_deliveries") as batch:
        batch.add_column(sa.Column("trace_context", sa.String(length=512), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("outbox_deliveries") as batch:
        batch.drop_column("trace_context")
