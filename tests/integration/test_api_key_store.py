"""The API key store (credit_common.auth.store) on both backends: its writes run on the shared
runner (credit_common.db.transactions), so a create or a revoke that loses a race (a deadlock, a
serialization failure) runs again, and running it again is harmless: a create draws a new key in
each attempt, a revoke keeps the first revoke time."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import MetaData

from credit_common.auth.keys import parse_key
from credit_common.auth.store import SqlApiKeyStore, define_api_keys_table
from credit_common.db.engine import DatabaseSettings, create_db_engine
from tests.support.lost_race import DEADLOCK, SERIALIZATION_FAILURE, lose_race

T0 = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)
ROLES = ("admin", "reader")


@pytest.fixture
def store(database_url_factory):
    engine = create_db_engine(DatabaseSettings(url=database_url_factory("api_keys")))
    table = define_api_keys_table(MetaData())
    table.metadata.create_all(engine)  # tests only: each service's migration creates it
    yield SqlApiKeyStore(engine, table), engine
    engine.dispose()


@pytest.mark.parametrize("sqlstate", [SERIALIZATION_FAILURE, DEADLOCK], ids=["serialization-failure", "deadlock"])
def test_a_create_and_a_revoke_that_lose_a_race_run_again(store, sqlstate):
    keys, engine = store
    with lose_race(engine, "INSERT INTO api_keys", sqlstate) as race:
        key, token = keys.create(["reader"], "ci", T0, known_roles=ROLES)
    assert race.count == 1
    assert parse_key(token) is not None and parse_key(token)[0] == key.key_id  # the key of the attempt that won
    assert keys.list() == [key]

    with lose_race(engine, "UPDATE api_keys", sqlstate) as race:
        revoked = keys.revoke(key.key_id, T0 + timedelta(hours=1))
    assert race.count == 1
    assert revoked.revoke_time == T0 + timedelta(hours=1)
    assert keys.revoke(key.key_id, T0 + timedelta(hours=2)).revoke_time == T0 + timedelta(hours=1)
    assert keys.get(key.key_id) == revoked
