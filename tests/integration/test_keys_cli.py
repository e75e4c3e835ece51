"""`python -m <service> keys ...` (run in this process): create shows the key once, the
database and `list` never hold or show the secret, revoke is honoured by a running server
once its cache entry is older than --auth-cache-ttl-ms (time moved by the injected clock)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import grpc
import pytest
from sqlalchemy import select

from catalog_service.__main__ import run as catalog_main
from credit_common.clock import ManualClock
from credit_common.db.engine import DatabaseSettings, create_db_engine
from credit_common.db.migrations import upgrade
from credit_common.grpc.errors import error_details
from grant_service.__main__ import run as grant_main
from grant_service.entrypoints import app as grant_app
from grant_service.v1 import grant_service_pb2 as pb
from grant_service.v1 import grant_service_pb2_grpc as pb_grpc
from tests.support.auth import keyed_channel
from tests.support.servers import serving

MAINS = {"grant": (grant_main, "grant_service"), "catalog": (catalog_main, "catalog_service")}


def keys(capsys, service: str, url: str, *args: str) -> tuple[int, str, str]:
    main, _ = MAINS[service]
    code = main(["keys", *args[:1], "--database-url", url, *args[1:]])
    out = capsys.readouterr()
    return code, out.out, out.err


def migrated(service: str, url: str) -> str:
    engine = create_db_engine(DatabaseSettings(url=url))
    try:
        upgrade(f"{MAINS[service][1]}.adapters:migrations", engine)
    finally:
        engine.dispose()
    return url


def token_in(output: str) -> str:
    return next(word for word in output.split() if word.startswith("cgk_"))


@pytest.mark.parametrize("service", ["grant", "catalog"])
def test_create_shows_the_key_once_list_never_shows_the_secret_revoke_marks_it(capsys, tmp_path, service):
    url = migrated(service, f"sqlite:///{tmp_path / 'db.db'}")
    code, out, _ = keys(capsys, service, url, "create", "--role", "reader", "--label", "dashboards")
    assert code == 0
    token = token_in(out)
    key_id, secret = token.split("_")[1], token.split("_")[2]
    assert "shown only now" in out

    code, out, _ = keys(capsys, service, url, "list")
    assert code == 0 and secret not in out
    [row] = [line.split() for line in out.splitlines() if line.startswith(key_id)]
    assert row[1:3] == ["reader", "dashboards"] and row[-1] == "-"

    engine = create_db_engine(DatabaseSettings(url=url))
    try:
        with engine.connect() as connection:
            stored = [tuple(map(str, r)) for r in connection.execute(select(MAIN_TABLES[service]))]
    finally:
        engine.dispose()
    assert stored and not any(secret in value for row in stored for value in row)

    code, out, _ = keys(capsys, service, url, "revoke", key_id)
    assert code == 0 and f"API key {key_id} revoked" in out
    code, out, _ = keys(capsys, service, url, "list")
    [row] = [line.split() for line in out.splitlines() if line.startswith(key_id)]
    assert row[-1] != "-"  # the revoke time

    code, _, err = keys(capsys, service, url, "revoke", "nosuchkey")
    assert code == 1 and "no API key 'nosuchkey'" in err


def test_quiet_create_prints_only_the_key_and_roles_are_checked(capsys, tmp_path):
    url = migrated("grant", f"sqlite:///{tmp_path / 'db.db'}")
    code, out, _ = keys(capsys, "grant", url, "create", "--role", "usage", "--role", "reader", "--quiet")
    assert code == 0 and out.strip().startswith("cgk_") and len(out.split()) == 1
    with pytest.raises(SystemExit):  # argparse: not a role of the catalog
        keys(capsys, "catalog", migrated("catalog", f"sqlite:///{tmp_path / 'c.db'}"), "create", "--role", "sync")


def test_ensure_reuses_a_key_it_wrote_until_revoked(capsys, tmp_path):
    url = migrated("grant", f"sqlite:///{tmp_path / 'db.db'}")
    file = tmp_path / "keys" / "sync.key"
    code, first, _ = keys(capsys, "grant", url, "ensure", "--role", "sync", "--file", str(file))
    assert code == 0 and file.read_text().strip() == first.strip()
    assert file.stat().st_mode & 0o777 == 0o600
    _, again, _ = keys(capsys, "grant", url, "ensure", "--role", "sync", "--file", str(file))
    assert again == first
    _, other_roles, _ = keys(capsys, "grant", url, "ensure", "--role", "admin", "--file", str(file))
    assert other_roles != first
    keys(capsys, "grant", url, "revoke", token_in(other_roles).split("_")[1])
    _, after_revoke, _ = keys(capsys, "grant", url, "ensure", "--role", "admin", "--file", str(file))
    assert after_revoke != other_roles and file.read_text() == after_revoke


def test_keys_on_a_schema_behind_say_what_to_run(capsys, tmp_path):
    code, _, err = keys(capsys, "grant", f"sqlite:///{tmp_path / 'empty.db'}", "list")
    assert code == 2 and "python -m grant_service migrate" in err


def test_a_running_server_refuses_a_revoked_key_within_the_cache_ttl(capsys, tmp_path):
    url = f"sqlite:///{tmp_path / 'grant.db'}"
    clock = ManualClock(datetime(2026, 6, 1, tzinfo=UTC))
    args = ["--catch-up-interval", "0", "--auth-cache-ttl-ms", "2000"]
    with serving(grant_app.DEFINITION, grant_app.build, url, clock=clock, args=args) as (running, _):
        _, out, _ = keys(capsys, "grant", url, "create", "--role", "reader")
        token = token_in(out)
        with keyed_channel(f"127.0.0.1:{running.port}", token) as channel:
            stub = pb_grpc.GrantServiceStub(channel)

            def balance() -> tuple[grpc.StatusCode, str]:
                """The outcome of a GetBalance of an unknown customer: NOT_FOUND once authorized."""
                with pytest.raises(grpc.RpcError) as raised:
                    stub.GetBalance(pb.GetBalanceRequest(customer_key="c", currency_key="x"), timeout=10)
                info, _ = error_details(raised.value)
                return raised.value.code(), info.reason

            assert balance() == (grpc.StatusCode.NOT_FOUND, "CUSTOMER_NOT_FOUND")  # the key is looked up, cached
            keys(capsys, "grant", url, "revoke", token.split("_")[1])
            clock.advance(timedelta(milliseconds=1999))
            assert balance()[0] == grpc.StatusCode.NOT_FOUND  # still trusted: the lookup is younger than the TTL
            clock.advance(timedelta(milliseconds=1))
            assert balance() == (grpc.StatusCode.UNAUTHENTICATED, "API_KEY_REVOKED")


def _tables():
    from catalog_service.adapters.orm import API_KEYS as catalog_keys
    from grant_service.adapters.orm import API_KEYS as grant_keys

    return {"grant": grant_keys, "catalog": catalog_keys}


MAIN_TABLES = _tables()
