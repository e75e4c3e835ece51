"""`python -m <service> keys create|ensure|list|revoke`: the API keys of a service, in its own
database. The whole key is printed once, by `create` (or `ensure`), and never stored."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from credit_common.auth.check import roles_of
from credit_common.auth.keys import ApiKey, parse_key, secret_matches
from credit_common.auth.store import SqlApiKeyStore
from credit_common.clock import Clock, SystemClock
from credit_common.config import _env, add_database_url_argument
from credit_common.db.engine import DatabaseSettings, create_db_engine
from credit_common.db.migrations import SchemaNotCurrent, check_current
from credit_common.errors import DomainError
from credit_common.service import ServiceDefinition


def keys_parser(definition: ServiceDefinition, env_prefix: str, database_file: str) -> argparse.ArgumentParser:
    roles = sorted(roles_of(definition.method_roles))
    parser = argparse.ArgumentParser(
        prog=f"python -m {definition.name} keys",
        description=f"Create, list and revoke the API keys of the {definition.name} (in its database). "
        f"Roles: {', '.join(roles)} (admin: every method). See docs/security.md.",
    )
    database = argparse.ArgumentParser(add_help=False)
    add_database_url_argument(database, lambda name, default: _env(env_prefix, name, default), database_file)
    commands = parser.add_subparsers(dest="action", required=True)
    create = commands.add_parser(
        "create", parents=[database], help="create a key and print it (the only time it is shown)"
    )
    ensure = commands.add_parser(
        "ensure",
        parents=[database],
        help="print the key kept in --file if the database still accepts it with these roles; else create "
        "one, write it to --file (mode 0600) and print it. For development setups (make run)",
    )
    for command in (create, ensure):
        command.add_argument("--role", action="append", choices=roles, required=True, help="repeat for several")
        command.add_argument("--label", default="", help="what the key is for (shown by list)")
    create.add_argument("--quiet", action="store_true", help="print only the key")
    ensure.add_argument("--file", required=True, type=Path)
    commands.add_parser(
        "list", parents=[database], help="every key: id, roles, label, created, revoked (never the secret)"
    )
    revoke = commands.add_parser(
        "revoke", parents=[database], help="revoke a key: servers refuse it within their --auth-cache-ttl-ms"
    )
    revoke.add_argument("key_id")
    return parser


def keys_main(
    definition: ServiceDefinition,
    *,
    env_prefix: str,
    database_file: str,
    argv: Sequence[str],
    clock: Clock | None = None,
) -> int:
    args = keys_parser(definition, env_prefix, database_file).parse_args(argv)
    clock = clock or SystemClock()
    engine = create_db_engine(DatabaseSettings(url=args.database_url))
    try:
        check_current(definition.migrations, engine, f"python -m {definition.name} migrate")
        store = SqlApiKeyStore(engine, _table(definition))
        known = roles_of(definition.method_roles)
        if args.action == "create":
            key, token = store.create(args.role, args.label, clock.now(), known_roles=known)
            if args.quiet:
                print(token)
            else:
                print(f"API key {key.key_id} (roles {', '.join(sorted(key.roles))}; label {key.label!r}):")
                print(token)
                print("It is shown only now: the service keeps only a hash of it.")
        elif args.action == "ensure":
            print(_ensure(store, args.file, frozenset(args.role), args.label, clock, known))
        elif args.action == "list":
            _print_keys(store.list())
        else:
            key = store.revoke(args.key_id, clock.now())
            print(f"API key {key.key_id} revoked at {key.revoke_time:%Y-%m-%d %H:%M:%S} UTC")
        return 0
    except SchemaNotCurrent as error:
        print(f"{definition.name}: {error}", file=sys.stderr)
        return 2
    except DomainError as error:
        print(f"{definition.name} keys: {error.message}", file=sys.stderr)
        return 1
    finally:
        engine.dispose()


def _ensure(store: SqlApiKeyStore, path: Path, roles: frozenset[str], label: str, clock: Clock, known) -> str:
    if path.exists():
        token = path.read_text().strip()
        parsed = parse_key(token)
        key = store.get(parsed[0]) if parsed else None
        if key is not None and parsed and secret_matches(key, parsed[1]) and not key.revoked and key.roles == roles:
            return token
    _key, token = store.create(roles, label, clock.now(), known_roles=known)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.unlink(missing_ok=True)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w") as file:
        file.write(token + "\n")
    return token


def _print_keys(keys: list[ApiKey]) -> None:
    rows = [
        [
            k.key_id,
            ",".join(sorted(k.roles)),
            k.label,
            f"{k.create_time:%Y-%m-%d %H:%M:%S}",
            f"{k.revoke_time:%Y-%m-%d %H:%M:%S}" if k.revoke_time else "-",
        ]
        for k in keys
    ]
    header = ["key id", "roles", "label", "created (UTC)", "revoked (UTC)"]
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(header)]
    for line in [header, *rows]:
        print("  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip())


def _table(definition: ServiceDefinition):
    if definition.api_keys is None:
        raise ValueError(f"{definition.name} has no api_keys table")
    return definition.api_keys
