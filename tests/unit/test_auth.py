"""API keys and the auth interceptor's parts, without a server: key format and hashing, reading
the key from metadata, the role tables of both services, the cache's bound."""

from __future__ import annotations

from collections import namedtuple
from datetime import UTC, datetime, timedelta

import pytest

from catalog_service.entrypoints import roles as catalog_roles
from catalog_service.v1 import catalog_service_pb2
from credit_common.auth.check import KeyCache, bearer_key, method_roles, roles_of
from credit_common.auth.keys import ADMIN, READER, SYNC, ApiKey, hash_secret, new_key, parse_key, secret_matches
from credit_common.clock import ManualClock
from grant_service.entrypoints import roles as grant_roles
from grant_service.v1 import grant_service_pb2

Metadatum = namedtuple("Metadatum", "key value")
NOW = datetime(2026, 12, 1, tzinfo=UTC)


def test_a_new_key_parses_back_to_its_id_and_a_secret_matching_the_stored_hash():
    key_id, secret_hash, token = new_key()
    assert token.startswith(f"cgk_{key_id}_")
    parsed = parse_key(token)
    assert parsed is not None and parsed[0] == key_id
    assert hash_secret(parsed[1]) == secret_hash and parsed[1] not in secret_hash
    stored = ApiKey(key_id, secret_hash, frozenset({READER}), "", NOW)
    assert secret_matches(stored, parsed[1])
    assert not secret_matches(stored, parsed[1][:-1] + ("a" if parsed[1][-1] != "a" else "b"))
    assert new_key()[2] != token


@pytest.mark.parametrize(
    "token", ["", "cgk_", "cgk_short_secret", "xyz_abcdefghijklmnop_secret", "cgk_abcdefghijklmnop_", "Bearer x"]
)
def test_malformed_keys_do_not_parse(token):
    assert parse_key(token) is None


@pytest.mark.parametrize(
    ("metadata", "expected"),
    [
        ([("authorization", "Bearer cgk_x")], "cgk_x"),
        ([("authorization", "bearer  cgk_x ")], "cgk_x"),
        ([("x-api-key", "cgk_y")], "cgk_y"),
        ([("authorization", "Basic abc")], None),
        ([("authorization", "Bearer ")], None),
        ([("other", "v")], None),
        ([], None),
    ],
)
def test_the_key_is_read_from_authorization_bearer_or_x_api_key(metadata, expected):
    assert bearer_key([Metadatum(k, v) for k, v in metadata]) == expected


def test_admin_allows_everything_other_roles_only_their_methods():
    reader = ApiKey("k", "h", frozenset({READER}), "", NOW)
    assert reader.allows((READER,)) and not reader.allows((SYNC,))
    assert ApiKey("k", "h", frozenset({ADMIN}), "", NOW).allows((SYNC,))


@pytest.mark.parametrize(
    ("service", "module"),
    [
        (grant_service_pb2.DESCRIPTOR.services_by_name["GrantService"], grant_roles),
        (catalog_service_pb2.DESCRIPTOR.services_by_name["CatalogService"], catalog_roles),
    ],
)
def test_every_method_of_each_service_has_roles(service, module):
    """Enumerates the service descriptor: a new RPC without an entry in the table fails here (and
    stops the service at startup, since the table is checked when the app module is imported)."""
    assert set(module.ROLES) == {m.name for m in service.methods}
    assert all(module.ROLES.values())
    assert set(module.METHOD_ROLES) == {f"/{service.full_name}/{m.name}" for m in service.methods}


def test_a_table_missing_a_method_or_naming_a_non_method_is_refused():
    service = grant_service_pb2.DESCRIPTOR.services_by_name["GrantService"]
    incomplete = {name: roles for name, roles in grant_roles.ROLES.items() if name != "CreateGrant"}
    with pytest.raises(ValueError, match="missing \\['CreateGrant'\\]"):
        method_roles(service, incomplete)
    with pytest.raises(ValueError, match="not methods \\['MintMoney'\\]"):
        method_roles(service, {**grant_roles.ROLES, "MintMoney": (ADMIN,)})
    with pytest.raises(ValueError, match="without roles \\['GetBalance'\\]"):
        method_roles(service, {**grant_roles.ROLES, "GetBalance": ()})


def test_the_roles_each_service_knows():
    assert roles_of(grant_roles.ROLES) == {"reader", "usage", "operator", "sync", "test-clocks", "webhooks", "admin"}
    assert roles_of(catalog_roles.ROLES) == {"reader", "catalog-admin", "operator", "admin"}


class CountingStore:
    def __init__(self) -> None:
        self.keys: dict[str, ApiKey] = {}
        self.lookups = 0

    def get(self, key_id: str) -> ApiKey | None:
        self.lookups += 1
        return self.keys.get(key_id)


def test_the_cache_trusts_an_answer_for_its_ttl_then_asks_the_store_again():
    store = CountingStore()
    store.keys["k"] = ApiKey("k", "h", frozenset({READER}), "", NOW)
    clock = ManualClock(NOW)
    cache = KeyCache(store, clock, timedelta(seconds=5))
    assert cache.get("k").revoke_time is None and cache.get("unknown") is None
    store.keys["k"] = ApiKey("k", "h", frozenset({READER}), "", NOW, revoke_time=NOW)
    store.keys["unknown"] = ApiKey("unknown", "h", frozenset({READER}), "", NOW)
    clock.advance(timedelta(seconds=4.999))
    assert cache.get("k").revoke_time is None and cache.get("unknown") is None  # still the cached answers
    assert store.lookups == 2
    clock.advance(timedelta(milliseconds=1))
    assert cache.get("k").revoked and cache.get("unknown") is not None  # the bound: ttl after the lookup
    assert store.lookups == 4


def test_a_clock_set_back_does_not_extend_a_cached_answer():
    store = CountingStore()
    clock = ManualClock(NOW)
    cache = KeyCache(store, clock, timedelta(seconds=5))
    cache.get("k")
    clock.set(NOW - timedelta(days=1))
    cache.get("k")
    assert store.lookups == 2


def test_auth_is_on_by_default_and_turned_off_only_explicitly(monkeypatch):
    from credit_common.config import parse_service_args

    def settings(*argv: str):
        return parse_service_args(
            service="grant_service", env_prefix="GRANT", default_port=0, database_file="g.db", argv=list(argv)
        )

    monkeypatch.delenv("GRANT_AUTH", raising=False)
    assert settings().auth is True and settings().auth_cache_ttl == timedelta(seconds=5)
    assert settings("--auth", "off").auth is False
    assert settings("--auth-cache-ttl-ms", "250").auth_cache_ttl == timedelta(milliseconds=250)
    monkeypatch.setenv("GRANT_AUTH", "off")
    assert settings().auth is False and settings("--auth", "on").auth is True
    monkeypatch.setenv("GRANT_AUTH", "maybe")
    with pytest.raises(SystemExit):
        settings()
