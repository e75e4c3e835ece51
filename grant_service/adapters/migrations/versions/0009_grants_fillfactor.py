"""grants (PostgreSQL): room on every page for the new version of a row that a debit updates.

Every debit updates its grants' running total (`used`, in no index). PostgreSQL writes an update as
a new row version; with room on the same page it is a heap-only tuple and no index changes, without
room (the default fillfactor, 100: full pages) the new version lands elsewhere and every index of
the table (six) gets a new entry. A fillfactor of 70 leaves the room. It applies to pages written
from now on; an existing table's pages get it when rewritten (`VACUUM FULL grants`, in a
maintenance window: docs/operations.md). SQLite updates a row in place: nothing to do there.

Revision ID: 0009
Revises: 0008 (sparse ledger indexes)
Create Date: 2026-12-06
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ALTER TABLE grants SET (fillfactor = 70)")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ALTER TABLE grants RESET (fillfactor)")
