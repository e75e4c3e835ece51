"""credit_common.db.bulk on both backends, over a table of its own with every column type it binds:
exactly the rows that did not conflict are inserted and reported, every value stored exactly and
typed as its column, whether a column varies from row to row or is the same in every row."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import JSON, BigInteger, Boolean, Integer, LargeBinary, String, Text, UniqueConstraint, select
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from credit_common.db.bulk import array_parameter, array_placeholder, insert_ignoring_conflicts, pg_type
from credit_common.db.engine import DatabaseSettings, create_db_engine, session_factories
from credit_common.db.types import ExactDecimal, UtcDateTime
from credit_common.ids import new_id

NOW = datetime(2026, 6, 1, 12, tzinfo=UTC)


class Base(DeclarativeBase):
    pass


class Row(Base):
    __tablename__ = "bulk_rows"
    __table_args__ = (UniqueConstraint("owner", "number"),)
    row_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    owner: Mapped[str] = mapped_column(String(64))
    number: Mapped[int] = mapped_column(Integer)
    big: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    amount: Mapped[Decimal] = mapped_column(ExactDecimal())
    at: Mapped[datetime | None] = mapped_column(UtcDateTime(), nullable=True)
    flag: Mapped[bool] = mapped_column(Boolean)
    note: Mapped[str] = mapped_column(Text)


def _row(owner: str, number: int, amount: Decimal = Decimal(1000), **changes) -> dict:
    row = {
        "row_id": new_id("row"),
        "owner": owner,
        "number": number,
        "big": 2**40 + number,
        "amount": amount,
        "at": NOW + timedelta(microseconds=number),
        "flag": number % 2 == 0,
        "note": "",
    }
    return row | changes


def test_only_the_rows_without_conflict_are_inserted_and_reported_with_exact_values(database_url_factory):
    engine = create_db_engine(DatabaseSettings(url=database_url_factory("bulk")))
    Base.metadata.create_all(engine)
    factories = session_factories(engine)
    first = [_row("a", 0), _row("b", 0)]  # every column but the ids and owners the same in both rows
    second = [
        _row("a", 0),  # conflicts with first[0]
        _row("c", 1, Decimal("0.000000000001"), big=None, at=None, note="x" * 5000),
        _row("b", 0),  # conflicts with first[1]
        _row("d", 2, Decimal("12345678901234567890.5"), flag=True),
    ]
    lone = [_row("a", 1, Decimal("3"))]  # a single row: every column the same "in every row"
    with factories.write() as session, session.begin():
        assert insert_ignoring_conflicts(session, Row, first, "row_id") == {r["row_id"] for r in first}
    with factories.write() as session, session.begin():
        assert insert_ignoring_conflicts(session, Row, second, "row_id") == {second[1]["row_id"], second[3]["row_id"]}
    with factories.write() as session, session.begin():
        assert insert_ignoring_conflicts(session, Row, lone, "row_id") == {lone[0]["row_id"]}
        assert insert_ignoring_conflicts(session, Row, [], "row_id") == set()
    with factories.read() as session:
        stored = {row.row_id: row for row in session.scalars(select(Row))}
    expected = [*first, second[1], second[3], *lone]
    assert set(stored) == {r["row_id"] for r in expected}
    for want in expected:
        got = {key: getattr(stored[want["row_id"]], key) for key in want}
        assert got == want
        assert {key: type(value) for key, value in got.items()} == {key: type(value) for key, value in want.items()}
    engine.dispose()


def test_more_rows_than_one_batch_are_all_inserted(database_url_factory):
    engine = create_db_engine(DatabaseSettings(url=database_url_factory("bulk")))
    Base.metadata.create_all(engine)
    factories = session_factories(engine)
    rows = [_row("many", n) for n in range(12_000)]  # PostgreSQL inserts 5,000 rows a statement
    with factories.write() as session, session.begin():
        assert insert_ignoring_conflicts(session, Row, rows[:100], "row_id") == {r["row_id"] for r in rows[:100]}
    again = [_row("many", n) for n in range(100)]  # all conflict
    with factories.write() as session, session.begin():
        inserted = insert_ignoring_conflicts(session, Row, again + rows[100:], "row_id")
    assert inserted == {r["row_id"] for r in rows[100:]}
    with factories.read() as session:
        assert sorted(session.scalars(select(Row.number).where(Row.owner == "many"))) == list(range(12_000))
    engine.dispose()


def test_each_column_type_is_bound_as_what_postgresql_stores():
    assert [
        pg_type(t) for t in (ExactDecimal(), UtcDateTime(), Boolean(), BigInteger(), Integer(), String(4), Text())
    ] == [
        "numeric",
        "timestamptz",
        "boolean",
        "bigint",
        "bigint",
        "text",
        "text",
    ]
    for unknown in (JSON(), LargeBinary()):
        with pytest.raises(TypeError, match="cannot bind"):
            pg_type(unknown)


# PostgreSQL's text: any character but NUL (and no lone surrogate, which is not UTF-8).
_TEXT = st.text(st.characters(exclude_characters="\x00", exclude_categories=("Cs",)), max_size=12)
_AWKWARD = ['"', "\\", '\\"', "a,b", "{a}", "NULL", "null", " ", "", "日本", "''"]
_AMOUNTS = st.decimals(min_value=Decimal(-(10**26)), max_value=Decimal(10**26), places=12, allow_nan=False)


@pytest.mark.postgres
@pytest.mark.parametrize("backend", ["postgresql"])
def test_text_and_numeric_arrays_reach_postgresql_exactly_as_given(database_url_factory, backend):
    """The arrays a write binds as one string in PostgreSQL's syntax (`array_parameter`) are read by
    PostgreSQL as the values given: any text (quotes, backslashes, commas, braces, the word NULL,
    empty), None as NULL, and exact decimals."""
    engine = create_db_engine(DatabaseSettings(url=database_url_factory("arrays")))

    def read_back(values: list, type_name: str) -> list:
        with engine.connect() as conn:
            statement = f"SELECT {array_placeholder('p', type_name)}"
            return conn.exec_driver_sql(statement, {"p": array_parameter(values, type_name)}).scalar_one()

    assert read_back(_AWKWARD, "text") == _AWKWARD
    assert read_back([*_AWKWARD, None], "text") == [*_AWKWARD, None]
    assert read_back([Decimal("1E+3"), Decimal("-0.000000000001"), None], "numeric") == [1000, Decimal("-1E-12"), None]

    @settings(max_examples=150, deadline=None)
    @given(st.lists(st.one_of(_TEXT, st.sampled_from(_AWKWARD), st.none()), min_size=1, max_size=8))
    def texts(values: list) -> None:
        assert read_back(values, "text") == values

    @settings(max_examples=50, deadline=None)
    @given(st.lists(st.one_of(_AMOUNTS, st.none()), min_size=1, max_size=8))
    def amounts(values: list) -> None:
        assert read_back(values, "numeric") == values

    texts()
    amounts()
    engine.dispose()
