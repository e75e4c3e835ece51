"""Column types shared by both services' models."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

from sqlalchemy import DateTime, Numeric, String
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeDecorator, TypeEngine

from credit_common.clock import ensure_utc
from credit_common.decimals import STORAGE_PRECISION, STORAGE_SCALE, format_decimal


class ExactDecimal(TypeDecorator[Decimal]):
    """An exact decimal: NUMERIC(38, 12) on PostgreSQL; canonical text on SQLite,
    whose NUMERIC is binary floating point. Sum such columns in Python, not SQL,
    so both backends give the same exact result."""

    impl = String(64)
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine:
        if dialect.name == "postgresql":
            return dialect.type_descriptor(Numeric(STORAGE_PRECISION, STORAGE_SCALE, asdecimal=True))
        return dialect.type_descriptor(String(64))

    def process_bind_param(self, value: Decimal | None, dialect: Dialect):
        if value is None:
            return None
        if not isinstance(value, Decimal):
            raise TypeError(f"ExactDecimal takes Decimal, got {type(value).__name__}")
        if dialect.name == "postgresql":
            return value
        return format_decimal(value)

    def process_result_value(self, value, dialect: Dialect) -> Decimal | None:
        if value is None:
            return None
        return Decimal(value) if not isinstance(value, Decimal) else value

    def result_processor(self, dialect: Dialect, coltype: object):
        if dialect.name == "postgresql":  # NUMERIC: psycopg gives a Decimal, what process_result_value returns
            return None
        return _decimal_of_text  # what process_result_value does with text, in one call


def _decimal_of_text(value: str | None) -> Decimal | None:
    return None if value is None else Decimal(value)


class UtcDateTime(TypeDecorator[datetime]):
    """An instant: TIMESTAMP WITH TIME ZONE on PostgreSQL, naive-UTC text on SQLite
    (which sorts and compares correctly); always an aware UTC datetime in code."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect):
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UtcDateTime column")
        value = value.astimezone(UTC)
        return value if dialect.name == "postgresql" else value.replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        return None if value is None else ensure_utc(value)

    def result_processor(self, dialect: Dialect, coltype: object):
        if dialect.name != "sqlite":
            return _utc_instant  # process_result_value in one call: psycopg gives an aware datetime
        return _instant_of_text  # SQLite's DATETIME processor and process_result_value, in one call


def _utc_instant(value: datetime | None) -> datetime | None:
    """`process_result_value`: already UTC (a session in UTC, credit_common.db.engine) as it is."""
    return value if value is None or value.tzinfo is UTC else ensure_utc(value)


def _instant_of_text(value: str | None) -> datetime | None:
    """An instant of SQLite's text (what SQLAlchemy's SQLite DATETIME reads with `fromisoformat`).
    What it stores has no offset (UTC): read with one appended, in one call (`replace(tzinfo=...)`
    after the parse cost several times the parse: docs/performance.md); text that some other writer
    stored with an offset fails that parse and is read as it says."""
    if value is None:
        return None
    try:
        return datetime.fromisoformat(value + "+00:00")
    except ValueError:
        return ensure_utc(datetime.fromisoformat(value))


NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}
