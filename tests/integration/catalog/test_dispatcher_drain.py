"""The dispatcher at shutdown: stopping it while a delivery is on the wire lets that pass finish and
record its outcome, so that no row stays leased to a dispatcher that is gone (another process would
otherwise wait out the lease before sending it)."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

from sqlalchemy import MetaData, select

from catalog_service.adapters.outbox_sql import SqlOutboxRepository, add_pending, outbox_table
from catalog_service.domain.outbox import KIND_SUBSCRIPTION, STATUS_PENDING, DeliveryOutcome
from catalog_service.service_layer.dispatcher import Dispatcher
from credit_common.clock import SystemClock
from credit_common.db.engine import DatabaseSettings, create_db_engine, session_factories
from credit_common.db.types import NAMING_CONVENTION


class HeldDelivery:
    deadline = timedelta(seconds=5)

    def __init__(self) -> None:
        self.sending = threading.Event()
        self.release = threading.Event()

    def deliver_many(self, kind, payloads):
        self.sending.set()
        assert self.release.wait(30)
        return [DeliveryOutcome.retry("UNAVAILABLE: the grant service is restarting", "UNAVAILABLE")] * len(payloads)


def test_stop_during_a_send_records_the_outcome_and_leaves_no_lease(database_url_factory):
    engine = create_db_engine(DatabaseSettings(url=database_url_factory("outbox")))
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    table = outbox_table(metadata)
    metadata.create_all(engine)
    sessions = session_factories(engine)
    with sessions.write() as session, session.begin():
        add_pending(
            session,
            table,
            kind=KIND_SUBSCRIPTION,
            aggregate_key="sub-1",
            revision=1,
            payload=b"",
            now=datetime.now(UTC),
        )
    delivery = HeldDelivery()
    lease = timedelta(seconds=60)
    dispatcher = Dispatcher(
        SqlOutboxRepository(sessions, table),
        delivery,
        clock=SystemClock(),
        lease=lease,
        poll_interval=timedelta(milliseconds=20),
    )
    dispatcher.start()
    try:
        assert delivery.sending.wait(30)
        stopping = threading.Thread(target=dispatcher.stop)
        stopping.start()
        delivery.release.set()
        stopping.join(30)
        assert not stopping.is_alive() and not dispatcher.running
        with engine.connect() as connection:
            row = connection.execute(
                select(table.c.status, table.c.attempts, table.c.next_attempt_at, table.c.last_error)
            ).one()
        assert row.status == STATUS_PENDING and row.attempts == 1
        assert row.last_error.startswith("UNAVAILABLE")
        # The retry is due after the backoff (at most its cap), not at the end of the lease.
        assert row.next_attempt_at < datetime.now(UTC) + lease / 2
    finally:
        delivery.release.set()
        dispatcher.stop()
        engine.dispose()
