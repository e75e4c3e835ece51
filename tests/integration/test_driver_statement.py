"""DriverStatement runs a Core SELECT on the driver and answers exactly what SQLAlchemy's own
execution answers (same types in and out), with the same errors."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from sqlalchemy import Boolean, Column, Integer, MetaData, String, Table, bindparam, exists, insert, select, text
from sqlalchemy.exc import DBAPIError, IntegrityError

from credit_common.db.driver import DriverStatement, deferred_writes, rows_of
from credit_common.db.engine import DatabaseSettings, ThreadConnections, create_db_engine
from credit_common.db.types import ExactDecimal, UtcDateTime

METADATA = MetaData()
ITEMS = Table(
    "items",
    METADATA,
    Column("id", Integer, primary_key=True),
    Column("name", String(20)),
    Column("amount", ExactDecimal()),
    Column("at", UtcDateTime(), nullable=True),
    Column("flag", Boolean),
)
T0 = datetime(2026, 1, 31, 10, 0, 0, 123456, tzinfo=UTC)
SELECT = select(
    ITEMS.c.id,
    ITEMS.c.amount,
    ITEMS.c.at,
    ITEMS.c.flag,
    exists().where(ITEMS.c.at > bindparam("after")).label("any_after"),
).where(ITEMS.c.name == bindparam("name"), (ITEMS.c.at.is_(None)) | (ITEMS.c.at <= bindparam("after")))


@pytest.fixture
def engine(database_url_factory):
    engine = create_db_engine(DatabaseSettings(url=database_url_factory("driver"), pre_ping=False))
    METADATA.create_all(engine)
    with engine.begin() as c:
        c.execute(
            insert(ITEMS),
            [
                {"id": 1, "name": "a", "amount": Decimal("0.000000000001"), "at": T0, "flag": True},
                {"id": 2, "name": "a", "amount": Decimal("123456789012345678.5"), "at": None, "flag": False},
                {"id": 3, "name": "a", "amount": Decimal("-7"), "at": T0 + timedelta(days=1), "flag": True},
                {"id": 4, "name": "b", "amount": Decimal("1"), "at": T0, "flag": False},
            ],
        )
    yield engine
    engine.dispose()


def test_rows_are_what_sqlalchemy_itself_returns(engine):
    statement = DriverStatement(SELECT)
    params = {"name": "a", "after": T0 + timedelta(hours=1)}
    with engine.connect() as c:
        expected = sorted(tuple(row) for row in c.execute(SELECT, params))
        for _ in range(2):  # compiled and typed on the first run, reused on the second
            got = sorted(statement.rows(c, params))
            assert got == expected
        assert [r.id for r in got] == [1, 2]
        first = got[0]
        assert isinstance(first.amount, Decimal) and first.amount == Decimal("0.000000000001")
        assert first.at == T0 and first.at.tzinfo is not None
        assert first.flag is True and first.any_after is True
        assert statement.rows(c, {"name": "nobody", "after": T0}) == []


@pytest.mark.postgres
@pytest.mark.parametrize("backend", ["postgresql"])
def test_a_lost_connection_is_a_dbapi_error_and_thread_connections_recover(engine, backend):
    statement = DriverStatement(SELECT)
    reads = ThreadConnections(engine)
    params = {"name": "a", "after": T0}
    pid = reads.run(lambda c: c.scalar(text("SELECT pg_backend_pid()")))
    with engine.connect() as other:
        other.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
    with engine.connect() as doomed:
        doomed_pid = doomed.scalar(text("SELECT pg_backend_pid()"))
        with engine.connect() as other:
            other.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": doomed_pid})
        with pytest.raises(DBAPIError) as raised:
            statement.rows(doomed, params)
        assert raised.value.connection_invalidated
    # the thread's own connection was killed too: the read is run again on a new one
    assert [r.id for r in reads.run(lambda c: statement.rows(c, params))] == [1, 2]


def test_rows_of_several_statements_are_each_statements_rows_after_the_previous_ones(engine):
    """`rows_of` sends its statements together on PostgreSQL; each still runs after the previous one."""
    update = DriverStatement(ITEMS.update().where(ITEMS.c.id == bindparam("b_id")).values(amount=bindparam("b_amount")))
    by_id = DriverStatement(select(ITEMS.c.id, ITEMS.c.amount).where(ITEMS.c.id == bindparam("id")))
    matching = DriverStatement(SELECT)
    params = {"name": "a", "after": T0 + timedelta(hours=1)}
    with engine.begin() as c:
        alone = matching.rows(c, params)
        update.execute(c, [{"b_id": 4, "b_amount": Decimal("2.5")}])
        first, second, third = rows_of(c, (matching, params), (by_id, {"id": 4}), (by_id, {"id": 99}))
    assert first == alone and len(alone) == 2
    assert [tuple(r) for r in second] == [(4, Decimal("2.5"))] and third == []


def test_deferred_writes_are_sent_before_the_next_read_or_at_the_end_with_sqlalchemys_errors(engine):
    add = DriverStatement(insert(ITEMS))
    ids = DriverStatement(select(ITEMS.c.id).where(ITEMS.c.name == bindparam("name")))
    row = {"name": "c", "amount": Decimal("1"), "at": T0, "flag": True}
    with engine.begin() as c:
        with deferred_writes(c):
            add.execute(c, [{"id": 10, **row}])
            assert [r.id for r in ids.rows(c, {"name": "c"})] == [10]  # sent with the read
            add.execute(c, [{"id": 11, **row}, {"id": 12, **row}])
            # and before a statement of SQLAlchemy's own
            assert sorted(c.scalars(select(ITEMS.c.id).where(ITEMS.c.name == "c"))) == [10, 11, 12]
            add.execute(c, [{"id": 13, **row}])
        assert sorted(c.scalars(select(ITEMS.c.id).where(ITEMS.c.name == "c"))) == [10, 11, 12, 13]
    with pytest.raises(IntegrityError), engine.begin() as c, deferred_writes(c):  # what a caller's retry looks for
        add.execute(c, [{"id": 14, **row}])
        add.execute(c, [{"id": 10, **row}])
    with engine.connect() as c:
        assert sorted(c.scalars(select(ITEMS.c.id).where(ITEMS.c.name == "c"))) == [10, 11, 12, 13]
        assert "credit_grants.deferred_writes" not in c.info  # nothing left behind on the pooled connection


def test_deferred_writes_queue_their_callers_kept_rows_first_and_columns_go_through_the_types(engine):
    """`queue` is called before each send (a read, a statement of SQLAlchemy's, the end of the
    block), so rows a caller keeps back until then are written before what reads them; rows given
    column by column are typed as row by row."""
    add = DriverStatement(insert(ITEMS))
    kept: list[int] = []

    def queue(connection) -> None:
        add.execute_columns(
            connection,
            {
                "id": list(kept),
                "name": ["q"] * len(kept),
                "amount": [Decimal("2.50")] * len(kept),
                "at": [T0] * len(kept),
                "flag": [False] * len(kept),
            },
        )
        kept.clear()

    names = DriverStatement(select(ITEMS.c.id, ITEMS.c.amount, ITEMS.c.at).where(ITEMS.c.name == bindparam("name")))
    with engine.begin() as c:
        with deferred_writes(c, lambda: queue(c)):
            kept.extend([20, 21])
            assert [tuple(r) for r in names.rows(c, {"name": "q"})] == [
                (20, Decimal("2.5"), T0),
                (21, Decimal("2.5"), T0),
            ]
            kept.append(22)
            assert sorted(c.scalars(select(ITEMS.c.id).where(ITEMS.c.name == "q"))) == [20, 21, 22]
            kept.append(23)
        assert kept == []  # sent at the end of the block
        assert sorted(c.scalars(select(ITEMS.c.id).where(ITEMS.c.name == "q"))) == [20, 21, 22, 23]
