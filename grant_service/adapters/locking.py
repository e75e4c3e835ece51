"""Row locks of the grant service's repositories, on each backend."""

from __future__ import annotations

from sqlalchemy import Select
from sqlalchemy.orm import Session


def is_postgres(session: Session) -> bool:
    return session.get_bind().dialect.name == "postgresql"


def locked(session: Session, statement: Select, *, skip_locked: bool = False) -> Select:
    """`statement` with FOR UPDATE on PostgreSQL (SQLite serialises writers with BEGIN IMMEDIATE)."""
    if is_postgres(session):
        return statement.with_for_update(skip_locked=skip_locked)
    return statement
