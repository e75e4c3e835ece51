"""events: an event's id is derived from its dedupe key (credit_common.ids.derived_id), so the unique
event id is the log's dedupe as well and the unique index on dedupe_key goes: one index insert per
event less, the dearest of them (long random keys; docs/performance.md). The ids of the events
already in the log (and of their webhook deliveries and attempts) are rewritten to the derived ones,
so that the same fact written again after the upgrade is still recognised.

Revision ID: 0007
Revises: 0006 (webhooks)
Create Date: 2026-12-06
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from credit_common.ids import derived_id

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

CHUNK = 5000


def upgrade() -> None:
    # The webhook tables first (found through the events' old ids), then the events themselves.
    _rewrite("webhook_deliveries", "id", with_body=True)
    _rewrite("webhook_attempts", "attempt_id", with_body=False)
    _rewrite("events", "seq", with_body=False)
    with op.batch_alter_table("events") as batch:
        batch.drop_constraint("uq_events_dedupe_key", type_="unique")


def _rewrite(table: str, key: str, *, with_body: bool) -> None:
    """Every row of `table` gets the derived id of its event, in chunks of its key's order; a
    delivery's stored body (the event's JSON, with its id) too."""
    bind = op.get_bind()
    body = ", t.body" if with_body else ""
    dedupe = "t.dedupe_key" if table == "events" else "e.dedupe_key"
    join = "" if table == "events" else "JOIN events e ON e.event_id = t.event_id"
    select = f"SELECT t.{key} AS k, t.event_id AS old, {dedupe} AS dedupe_key{body} FROM {table} t {join}"
    rows = bind.execute(sa.text(f"{select} ORDER BY t.{key} LIMIT {CHUNK}")).all()
    while rows:
        changes = []
        for row in rows:
            new = _event_id(row.dedupe_key)
            if new == row.old:
                continue
            change = {"k": row.k, "new": new}
            if with_body:
                change["body"] = bytes(row.body).replace(row.old.encode(), new.encode())
            changes.append(change)
        if changes:
            assignments = "event_id = :new" + (", body = :body" if with_body else "")
            bind.execute(sa.text(f"UPDATE {table} SET {assignments} WHERE {key} = :k"), changes)
        after = {"last": rows[-1].k}
        rows = bind.execute(sa.text(f"{select} WHERE t.{key} > :last ORDER BY t.{key} LIMIT {CHUNK}"), after).all()


def _event_id(dedupe_key: str) -> str:
    """The id grant_service.domain.events.fact gives the event of `dedupe_key` ("TYPE:<id>...": in the
    time order of that id), as of this revision."""
    return derived_id("evt", dedupe_key, ordered_by=dedupe_key.split(":", 2)[1])


def downgrade() -> None:
    with op.batch_alter_table("events") as batch:
        batch.create_unique_constraint("uq_events_dedupe_key", ["dedupe_key"])
