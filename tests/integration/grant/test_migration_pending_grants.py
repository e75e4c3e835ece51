"""Migration 0002 on existing data: a grant whose GRANT entry was written before its effective time
(the old behaviour) becomes pending, without that entry; a grant voided before it was effective loses
both entries; everything else is untouched. On both backends."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

from alembic import command
from sqlalchemy import Boolean, Integer, String, column, table, text

from credit_common.db.engine import DatabaseSettings, create_db_engine
from credit_common.db.migrations import alembic_config
from credit_common.db.types import ExactDecimal, UtcDateTime
from grant_service.entrypoints import app

CLOCK_TIME = datetime(2030, 1, 1, tzinfo=UTC)


def _upgrade(engine, revision: str) -> None:
    config = alembic_config(app.DEFINITION.migrations, engine.url.render_as_string(hide_password=False))
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, revision)


def test_future_grants_become_pending(database_url_factory):
    engine = create_db_engine(DatabaseSettings(url=database_url_factory("migrate")))
    try:
        _upgrade(engine, "0001")
        real_now = datetime.now(UTC)
        grants = {
            # (clock, effective_time, void_time)
            "grt_past": ("", real_now - timedelta(days=1), None),
            "grt_future": ("", real_now + timedelta(days=1), None),
            "grt_future_voided": ("", real_now + timedelta(days=1), real_now - timedelta(hours=1)),
            "grt_clock_past": ("clk_1", CLOCK_TIME - timedelta(days=1), None),
            "grt_clock_future": ("clk_1", CLOCK_TIME + timedelta(days=1), None),
        }
        clocks = table(
            "test_clocks",
            column("test_clock_id", String()),
            column("name", String()),
            column("frozen_time", UtcDateTime()),
            column("create_time", UtcDateTime()),
        )
        grants_table = table(
            "grants",
            *(column(name, String()) for name in ("grant_id", "customer_key", "currency_key", "clock_key", "source")),
            column("amount", ExactDecimal()),
            column("used", ExactDecimal()),
            column("effective_time", UtcDateTime()),
            column("priority", Integer()),
            column("void_time", UtcDateTime()),
            column("reason", String()),
            column("closed", Boolean()),
        )
        ledger = table(
            "ledger_entries",
            *(column(name, String()) for name in ("entry_id", "customer_key", "currency_key", "type", "grant_id")),
            column("amount", ExactDecimal()),
            column("effective_time", UtcDateTime()),
            column("description", String()),
        )
        with engine.begin() as connection:
            connection.execute(
                clocks.insert().values(test_clock_id="clk_1", name="c", frozen_time=CLOCK_TIME, create_time=CLOCK_TIME)
            )
            for n, (grant_id, (clock, effective, void)) in enumerate(grants.items()):
                connection.execute(
                    grants_table.insert().values(
                        grant_id=grant_id,
                        customer_key="c",
                        currency_key="ai",
                        clock_key=clock,
                        source="ONE_OFF",
                        amount=Decimal(5),
                        used=Decimal(0),
                        effective_time=effective,
                        priority=100,
                        void_time=void,
                        reason="",
                        closed=void is not None,
                    )
                )
                entries = [("GRANT", 5, effective)] + ([("VOID", -5, void)] if void else [])
                for m, (type_, amount, when) in enumerate(entries):
                    connection.execute(
                        ledger.insert().values(
                            entry_id=f"led_{n}_{m}",
                            customer_key="c",
                            currency_key="ai",
                            type=type_,
                            grant_id=grant_id,
                            amount=Decimal(amount),
                            effective_time=when,
                            description="",
                        )
                    )
        _upgrade(engine, "head")
        with engine.connect() as connection:
            opens = dict(connection.execute(text("SELECT grant_id, opens_at FROM grants")).all())
            entries = sorted(connection.execute(text("SELECT grant_id, type FROM ledger_entries")).all())
        assert {g for g, opens_at in opens.items() if opens_at is not None} == {"grt_future", "grt_clock_future"}
        assert entries == [("grt_clock_past", "GRANT"), ("grt_past", "GRANT")]
    finally:
        engine.dispose()
