"""The bulk insert under the catch-up: exactly the rows that did not conflict are inserted and
reported, every value stored exactly, whether columns vary from row to row or not."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

from sqlalchemy import select

from credit_common.db.bulk import insert_ignoring_conflicts
from credit_common.db.engine import DatabaseSettings, create_db_engine, session_factories
from credit_common.db.migrations import upgrade
from credit_common.ids import new_id
from grant_service.adapters.orm import GrantRow, LedgerEntryRow
from tests.support.grant_rows import insert_due_subscriptions

NOW = datetime(2026, 6, 1, 12, tzinfo=UTC)


def _grant(i: int, period: int, amount: Decimal = Decimal(1000), used: Decimal = Decimal(0)) -> dict:
    start = NOW - timedelta(days=30 - period)
    return {
        "grant_id": new_id("grt"),
        "customer_key": f"c{i}",
        "currency_key": "ai-credits",
        "clock_key": "",
        "source": "RECURRING",
        "subscription_id": f"sub_{i}",
        "schedule_id": f"sch_{i}",
        "entitlement_key": "credits",
        "period_index": period,
        "segment": 0,
        "amount": amount,
        "used": used,
        "effective_time": start,
        "expire_time": start + timedelta(days=1) if period else None,
        "priority": 100,
        "void_time": None,
        "reason": "",
        "closed": period == 2,
    }


def test_insert_ignoring_conflicts_inserts_and_reports_exactly_the_rows_without_conflict(database_url_factory):
    engine = create_db_engine(DatabaseSettings(url=database_url_factory("bulk")))
    upgrade("grant_service.adapters:migrations", engine)
    insert_due_subscriptions(engine, [NOW - timedelta(days=30)] * 4, NOW)
    factories = session_factories(engine)
    first = [_grant(0, 0), _grant(1, 0)]  # every column but the ids and keys the same in both rows
    second = [
        _grant(0, 0),  # conflicts with first[0] (same schedule, period and segment)
        _grant(2, 1, Decimal("0.000000000001"), Decimal("12345678901234567890.5")),
        _grant(1, 0),  # conflicts with first[1]
        _grant(3, 2, Decimal("7.5")),
    ]
    lone = [_grant(0, 1, Decimal("3"))]  # a single row: every column the same "in every row"
    with factories.write() as session, session.begin():
        assert insert_ignoring_conflicts(session, GrantRow, first, "grant_id") == {g["grant_id"] for g in first}
    with factories.write() as session, session.begin():
        assert insert_ignoring_conflicts(session, GrantRow, second, "grant_id") == {
            second[1]["grant_id"],
            second[3]["grant_id"],
        }
    with factories.write() as session, session.begin():
        assert insert_ignoring_conflicts(session, GrantRow, lone, "grant_id") == {lone[0]["grant_id"]}
        assert insert_ignoring_conflicts(session, GrantRow, [], "grant_id") == set()
    with factories.read() as session:
        stored = {row.grant_id: row for row in session.scalars(select(GrantRow))}
    expected = [*first, second[1], second[3], *lone]
    assert set(stored) == {g["grant_id"] for g in expected}
    for grant in expected:
        row = stored[grant["grant_id"]]
        assert {key: getattr(row, key) for key in grant} == grant
    engine.dispose()


def _entry(grant_id: str, type_: str, *, opens: bool = False, closes: bool = False, usage: str | None = None) -> dict:
    return {
        "entry_id": new_id("led"),
        "customer_key": "c0",
        "currency_key": "ai-credits",
        "type": type_,
        "amount": Decimal(1),
        "grant_id": grant_id,
        "effective_time": NOW,
        "usage_id": usage,
        "subscription_id": None,
        "description": "",
        "opens_grant_id": grant_id if opens else None,
        "closes_grant_id": grant_id if closes else None,
    }


def test_a_grant_is_opened_and_closed_once_however_many_debits_it_has(database_url_factory):
    """The ledger's opening and closing columns are unique where set (partial indexes, migration
    0008): a second GRANT or EXPIRE of a grant is skipped; its many DEBITs, which set neither, are not."""
    engine = create_db_engine(DatabaseSettings(url=database_url_factory("ledger")))
    upgrade("grant_service.adapters:migrations", engine)
    insert_due_subscriptions(engine, [NOW - timedelta(days=30)], NOW)
    factories = session_factories(engine)
    grant = _grant(0, 0)
    grant_id = grant["grant_id"]
    with factories.write() as session, session.begin():
        insert_ignoring_conflicts(session, GrantRow, [grant], "grant_id")
        first = [_entry(grant_id, "GRANT", opens=True), _entry(grant_id, "EXPIRE", closes=True)]
        assert len(insert_ignoring_conflicts(session, LedgerEntryRow, first, "entry_id")) == 2
    debits = [_entry(grant_id, "DEBIT", usage=f"use_{i}") for i in range(3)]
    again = [_entry(grant_id, "GRANT", opens=True), *debits, _entry(grant_id, "VOID", closes=True)]
    with factories.write() as session, session.begin():
        assert insert_ignoring_conflicts(session, LedgerEntryRow, again, "entry_id") == {d["entry_id"] for d in debits}
    with factories.read() as session:
        types = sorted(session.scalars(select(LedgerEntryRow.type)))
    assert types == ["DEBIT", "DEBIT", "DEBIT", "EXPIRE", "GRANT"]
    engine.dispose()
