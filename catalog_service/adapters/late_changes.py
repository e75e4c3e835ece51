"""Late changes (catalog_service.domain.outbox.LateChange): recorded when the grant service's answer
to a delivery names changes it applied at its "now" instead of the requested instant, and read with
the handoff state. Recorded in a transaction of its own as soon as the answer arrives, before the
delivery's outcome is written: a catalog that dies in between sends the revision again and gets
ALREADY_APPLIED, with the late changes already recorded (a death between the answer and this record
loses them, and the grant service's SUBSCRIPTION_CHANGED event still has them). The record runs on the
shared transaction runner (credit_common.db.transactions): an insert that loses a race runs again, and
inserting the same changes twice is harmless (a change already recorded is skipped)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence

from sqlalchemy import select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from catalog_service.adapters.orm import LateChangeRow
from catalog_service.domain.outbox import LateChange
from credit_common.db.chunks import chunks
from credit_common.db.engine import SessionFactories
from credit_common.db.transactions import RETRY, RetryPolicy, Transactions

TABLE = LateChangeRow.__table__


class LateChangeRecorder:
    def __init__(self, sessions: SessionFactories, retry: RetryPolicy = RETRY) -> None:
        self._transactions = Transactions.of(sessions, retry)

    def record(self, subscription_id: str, changes: Sequence[LateChange]) -> None:
        if not changes:
            return
        rows = [
            {
                "subscription_id": subscription_id,
                "revision": c.revision,
                "entitlement_key": c.entitlement_key,
                "requested_time": c.requested_time,
                "applied_time": c.applied_time,
            }
            for c in changes
        ]

        def insert(session: Session) -> None:
            dialect = postgresql if session.get_bind().dialect.name == "postgresql" else sqlite
            session.execute(dialect.insert(TABLE).on_conflict_do_nothing(), rows)

        self._transactions.write(insert)


def late_changes_of(session: Session, subscription_ids: Iterable[str]) -> dict[str, tuple[LateChange, ...]]:
    ids = sorted(set(subscription_ids))
    found: dict[str, list[LateChange]] = defaultdict(list)
    for chunk in chunks(ids):
        rows = session.execute(
            select(TABLE)
            .where(TABLE.c.subscription_id.in_(chunk))
            .order_by(TABLE.c.subscription_id, TABLE.c.revision, TABLE.c.entitlement_key)
        )
        for r in rows:
            found[r.subscription_id].append(LateChange(r.revision, r.entitlement_key, r.requested_time, r.applied_time))
    return {key: tuple(changes) for key, changes in found.items()}
