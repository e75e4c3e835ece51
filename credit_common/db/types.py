"""Column types shared by both services' models."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

from sqlalchemy import DateTime, Numeric, String
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeDecorator, TypeEngine

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
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}
