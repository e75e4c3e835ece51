"""The shared column types read a driver's values in one call (`result_processor`): the same values
as SQLAlchemy's own processors followed by `process_result_value`."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal

from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.types import String

from credit_common.db.types import ExactDecimal, UtcDateTime

SQLITE = sqlite.dialect()


def _generic(type_, impl, value):
    """What the TypeDecorator's own path gives: the impl's processor, then process_result_value."""
    process = impl.result_processor(SQLITE, None)
    return type_.process_result_value(process(value) if process else value, SQLITE)


instants = st.datetimes(
    min_value=datetime(1970, 1, 1), max_value=datetime(2200, 1, 1), timezones=st.just(UTC) | st.none()
)


@given(instant=instants, offset_minutes=st.integers(-14 * 60, 14 * 60), with_offset=st.booleans())
def test_an_instant_read_from_sqlite_text_is_what_the_generic_path_reads(instant, offset_minutes, with_offset):
    if with_offset:  # text some other writer stored with an offset: read as the same instant, in UTC
        instant = instant.replace(tzinfo=UTC).astimezone(timezone(timedelta(minutes=offset_minutes)))
        text = instant.isoformat()
    else:  # what SQLAlchemy's SQLite DATETIME stores: naive UTC, space-separated, microseconds
        text = instant.replace(tzinfo=None).strftime("%Y-%m-%d %H:%M:%S.%f")
    read = UtcDateTime().result_processor(SQLITE, None)(text)
    assert read == _generic(UtcDateTime(), sqlite.DATETIME(), text)
    assert read.tzinfo is UTC
    assert UtcDateTime().result_processor(SQLITE, None)(None) is None


@given(value=st.decimals(allow_nan=False, allow_infinity=False, places=12, min_value=-(10**25), max_value=10**25))
def test_an_amount_read_from_sqlite_text_is_exact(value):
    text = format(value, "f")
    read = ExactDecimal().result_processor(SQLITE, None)(text)
    assert read == _generic(ExactDecimal(), String(64), text) == value
    assert str(read) == str(Decimal(text))
    assert ExactDecimal().result_processor(SQLITE, None)(None) is None


def test_postgresql_reads_what_psycopg_gives_as_process_result_value_would():
    """psycopg gives a Decimal (kept as it is) and an aware datetime: in the session's zone, UTC on
    our connections (kept as it is), or any other (the same instant, in UTC)."""
    dialect = postgresql.dialect()
    assert ExactDecimal().result_processor(dialect, None) is None
    read = UtcDateTime().result_processor(dialect, None)
    utc = datetime(2026, 12, 7, 3, 0, tzinfo=UTC)
    assert read(utc) is utc
    elsewhere = utc.astimezone(timezone(timedelta(hours=2)))
    assert read(elsewhere) == utc and read(elsewhere).tzinfo is UTC
    assert read(elsewhere) == UtcDateTime().process_result_value(elsewhere, dialect)
    assert read(None) is None
