"""ledger_entries, usages: no index entry for a row that has nothing to find. A ledger entry is a
GRANT (opens its grant), an EXPIRE or VOID (closes it), or a DEBIT (of a usage); each of the three
columns that say so was indexed in every row, NULL or not, so every entry paid for two or three
index inserts that no query can use. They become partial indexes (WHERE ... IS NOT NULL), the two
unique ones still unique. And usages.request_id loses its unique constraint: the request id is
recorded, unique, in request_ids in the same transaction (credit_common/idempotency.py). Measured:
docs/performance.md.

Revision ID: 0008
Revises: 0007 (event ids derived from dedupe keys)
Create Date: 2026-12-06
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SPARSE = (
    ("uq_ledger_entries_opens_grant_id", "opens_grant_id", True),
    ("uq_ledger_entries_closes_grant_id", "closes_grant_id", True),
    ("ix_ledger_entries_usage_id", "usage_id", False),
)


def _where(column: str) -> dict:
    clause = sa.text(f"{column} IS NOT NULL")
    return {"sqlite_where": clause, "postgresql_where": clause}


def upgrade() -> None:
    with op.batch_alter_table("ledger_entries") as batch:
        batch.drop_constraint("uq_ledger_entries_opens_grant_id", type_="unique")
        batch.drop_constraint("uq_ledger_entries_closes_grant_id", type_="unique")
        batch.drop_index("ix_ledger_entries_usage_id")
    for name, column, unique in SPARSE:
        op.create_index(name, "ledger_entries", [column], unique=unique, **_where(column))
    with op.batch_alter_table("usages") as batch:
        batch.drop_constraint("uq_usages_request_id", type_="unique")


def downgrade() -> None:
    with op.batch_alter_table("usages") as batch:
        batch.create_unique_constraint("uq_usages_request_id", ["request_id"])
    for name, _, _ in SPARSE:
        op.drop_index(name, table_name="ledger_entries")
    with op.batch_alter_table("ledger_entries") as batch:
        batch.create_unique_constraint("uq_ledger_entries_opens_grant_id", ["opens_grant_id"])
        batch.create_unique_constraint("uq_ledger_entries_closes_grant_id", ["closes_grant_id"])
    op.create_index("ix_ledger_entries_usage_id", "ledger_entries", ["usage_id"])
