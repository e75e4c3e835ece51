"""The outbox's backlog (the shared leases' `backlog`): deliveries due now and how long the oldest
has been due; a claimed delivery is not due until its lease ends, a delivered one never again."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import MetaData

from catalog_service.adapters.outbox_sql import SqlOutboxRepository, add_pending, outbox_table
from credit_common.db.engine import DatabaseSettings, create_db_engine, session_factories
from credit_common.db.types import NAMING_CONVENTION
from credit_common.delivery.leases import Backlog

T0 = datetime(2026, 3, 1, 9, tzinfo=UTC)


def test_backlog_counts_due_deliveries_and_the_lag_of_the_oldest(database_url_factory):
    engine = create_db_engine(DatabaseSettings(url=database_url_factory("outbox")))
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    table = outbox_table(metadata)
    metadata.create_all(engine)
    repo = SqlOutboxRepository(session_factories(engine), table)
    try:
        assert repo.backlog(T0) == Backlog(0, 0.0)
        for n, queued in enumerate([T0, T0 + timedelta(seconds=30)], start=1):
            with session_factories(engine).write() as session, session.begin():
                add_pending(
                    session, table, kind="subscription", aggregate_key=f"s{n}", revision=1, payload=b"x", now=queued
                )
        assert repo.backlog(T0 + timedelta(seconds=40)) == Backlog(2, 40.0)
        now = T0 + timedelta(seconds=40)
        assert len(repo.claim_due(now, now + timedelta(seconds=60), limit=1)) == 1
        assert repo.backlog(now) == Backlog(1, 10.0)  # the claimed one is leased, not due
        assert repo.backlog(now + timedelta(seconds=61)) == Backlog(2, 71.0)  # its lease ended
    finally:
        engine.dispose()
