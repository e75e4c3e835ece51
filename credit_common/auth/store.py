"""The `api_keys` table, in each service's own database, and the store over it.

The store's transactions run on the shared runner (credit_common.db.transactions), as every other
writer's: on SQLite a write takes the database's write lock up front (BEGIN IMMEDIATE, the file's
write gate), and a write that loses a race runs again from scratch. Both writes are safe to run
again: `create` draws a new key in each attempt (a key id taken meanwhile is a constraint violation,
and the next attempt's id is another), `revoke` sets the revoke time only of a key not yet revoked."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from sqlalchemy import Column, Engine, MetaData, String, Table, insert, select, update
from sqlalchemy.orm import Session

from credit_common.auth.keys import ApiKey, new_key
from credit_common.db.engine import session_factories
from credit_common.db.transactions import RETRY, RetryPolicy, Transactions
from credit_common.db.types import UtcDateTime
from credit_common.errors import InvalidArgument, NotFound


def define_api_keys_table(metadata: MetaData) -> Table:
    """The table, added to a service's metadata (its migration creates the same columns)."""
    return Table(
        "api_keys",
        metadata,
        Column("key_id", String(32), primary_key=True),
        Column("secret_hash", String(64), nullable=False),
        Column("roles", String(200), nullable=False),  # comma-separated, sorted
        Column("label", String(200), nullable=False),
        Column("create_time", UtcDateTime(), nullable=False),
        Column("revoke_time", UtcDateTime(), nullable=True),
    )


class SqlApiKeyStore:
    def __init__(self, engine: Engine, table: Table, retry: RetryPolicy = RETRY) -> None:
        self._transactions = Transactions.of(session_factories(engine), retry)
        self._table = table

    def get(self, key_id: str) -> ApiKey | None:
        query = select(self._table).where(self._table.c.key_id == key_id)
        row = self._transactions.read(lambda session: session.execute(query).first())
        return _key(row) if row is not None else None

    def list(self) -> list[ApiKey]:
        query = select(self._table).order_by(self._table.c.create_time, self._table.c.key_id)
        return self._transactions.read(lambda session: [_key(row) for row in session.execute(query)])

    def create(
        self, roles: Iterable[str], label: str, now: datetime, *, known_roles: Iterable[str]
    ) -> tuple[ApiKey, str]:
        """Store a new key with `roles` (each one of `known_roles`); returns it and the whole key,
        which is never stored and cannot be shown again."""
        roles = frozenset(roles)
        unknown = roles - set(known_roles)
        if not roles or unknown:
            raise InvalidArgument(
                f"roles must be some of {', '.join(sorted(known_roles))}; got {', '.join(sorted(roles)) or 'none'}",
                reason="UNKNOWN_ROLE",
            )

        def add(session: Session) -> tuple[ApiKey, str]:
            key_id, secret_hash, token = new_key()  # in the attempt: a retry draws another
            session.execute(
                insert(self._table).values(
                    key_id=key_id, secret_hash=secret_hash, roles=",".join(sorted(roles)), label=label, create_time=now
                )
            )
            return ApiKey(key_id, secret_hash, roles, label, now), token

        return self._transactions.write(add)

    def revoke(self, key_id: str, now: datetime) -> ApiKey:
        """Revoke a key (a key revoked already keeps its first revoke time)."""
        revoked = (
            update(self._table)
            .where(self._table.c.key_id == key_id, self._table.c.revoke_time.is_(None))
            .values(revoke_time=now)
        )
        self._transactions.write(lambda session: session.execute(revoked))
        key = self.get(key_id)
        if key is None:
            raise NotFound(f"no API key {key_id!r}", reason="API_KEY_NOT_FOUND")
        return key


def _key(row) -> ApiKey:
    return ApiKey(
        key_id=row.key_id,
        secret_hash=row.secret_hash,
        roles=frozenset(role for role in row.roles.split(",") if role),
        label=row.label,
        create_time=row.create_time,
        revoke_time=row.revoke_time,
    )
