"""usages: no index by customer.

Its one reader was the deletion of a test clock, which now finds the clock's usages through their
DEBIT entries, by the ledger's customer index (every usage has one: its credits are more than 0).
Every debit paid for it: an entry at a random place of a large B-tree (docs/performance.md).

Revision ID: 0010
Revises: 0009 (grants fillfactor)
Create Date: 2026-12-07
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.drop_index("ix_usages_customer_key", table_name="usages")


def downgrade() -> None:
    op.create_index("ix_usages_customer_key", "usages", ["customer_key"])
