"""Migration 0007 on existing data: the events already in the log get the ids derived from their
dedupe keys (credit_common.ids.derived_id), and so do their webhook deliveries (the stored body
too) and attempts; the unique index on dedupe_key goes, and the same fact written again after the
upgrade is still skipped (by its derived id). On both backends."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from alembic import command
from sqlalchemy import LargeBinary, String, column, select, table, text
from sqlalchemy.orm import Session

from credit_common.db.engine import DatabaseSettings, create_db_engine
from credit_common.db.migrations import alembic_config
from credit_common.ids import derived_id
from grant_service.adapters.events import SqlEventRepository
from grant_service.adapters.orm import EventRow
from grant_service.domain.events import EventType, subscription_changed
from grant_service.entrypoints import app

NOW = datetime(2030, 1, 1, tzinfo=UTC)


def fact_id(dedupe_key: str) -> str:
    return derived_id("evt", dedupe_key, ordered_by=dedupe_key.split(":", 2)[1])


def _upgrade(engine, revision: str) -> None:
    config = alembic_config(app.DEFINITION.migrations, engine.url.render_as_string(hide_password=False))
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, revision)


def _insert_old_event(connection, event_id: str, dedupe_key: str) -> None:
    connection.execute(
        text(
            "INSERT INTO events (event_id, dedupe_key, type, customer_key, currency_key, clock_key,"
            " occurred_time, recorded_time, payload) VALUES (:id, :key, 'SUBSCRIPTION_ENDED', 'acme', '', '',"
            " :t, :t, '{}')"
        ),
        {"id": event_id, "key": dedupe_key, "t": NOW.isoformat() if connection.dialect.name == "sqlite" else NOW},
    )


def test_event_ids_become_derived_and_dedupe_still_holds(database_url_factory):
    engine = create_db_engine(DatabaseSettings(url=database_url_factory("migrate")))
    try:
        _upgrade(engine, "0006")
        old_ids = {f"evt_OLD{i:022d}": f"SUBSCRIPTION_ENDED:sub_{i}" for i in range(7)}
        body = json.dumps({"event_id": "evt_OLD" + "0" * 22, "type": "x"}).encode()
        with engine.begin() as connection:
            for event_id, key in old_ids.items():
                _insert_old_event(connection, event_id, key)
            connection.execute(
                text(
                    "INSERT INTO webhook_deliveries (endpoint_id, event_id, event_seq, event_type, body, trigger,"
                    " trigger_key, status, attempts, next_attempt_at, leased, created_at)"
                    " VALUES ('whe_1', :id, 1, 'x', :body, 'FANOUT', '', 'PENDING', 1, :t, false, :t)"
                ),
                {"id": "evt_OLD" + "0" * 22, "body": body, "t": NOW},
            )
            connection.execute(
                text(
                    "INSERT INTO webhook_attempts (attempt_id, delivery_id, endpoint_id, event_id, attempt,"
                    " attempt_time, duration_us, http_status, error, trigger)"
                    " VALUES ('wha_1', 1, 'whe_1', :id, 1, :t, 10, 500, 'boom', 'FANOUT')"
                ),
                {"id": "evt_OLD" + "0" * 22, "t": NOW},
            )
        _upgrade(engine, "head")

        expected = {fact_id(key) for key in old_ids.values()}
        deliveries = table("webhook_deliveries", column("event_id", String()), column("body", LargeBinary()))
        attempts = table("webhook_attempts", column("event_id", String()))
        first = fact_id("SUBSCRIPTION_ENDED:sub_0")
        with engine.connect() as connection:
            assert set(connection.execute(select(EventRow.event_id)).scalars()) == expected
            delivery = connection.execute(select(deliveries.c.event_id, deliveries.c.body)).one()
            assert delivery.event_id == first
            assert json.loads(delivery.body)["event_id"] == first
            assert connection.execute(select(attempts.c.event_id)).scalar_one() == first

        # The same fact written again after the upgrade (an end reported twice) is one row still.
        again = subscription_changed(EventType.SUBSCRIPTION_ENDED, "sub_3", "acme", "", NOW, 1, 1, NOW, (), ())
        assert again.event_id == fact_id("SUBSCRIPTION_ENDED:sub_3")
        with Session(engine) as session, session.begin():
            SqlEventRepository(session).add([again])
        with engine.connect() as connection:
            assert connection.execute(select(EventRow.event_id)).scalars().all().count(again.event_id) == 1
            assert len(connection.execute(select(EventRow.seq)).all()) == len(old_ids)
    finally:
        engine.dispose()
