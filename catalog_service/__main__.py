"""`python -m catalog_service [serve|migrate] [flags]` or `python -m catalog_service keys ...`: see --help."""

from __future__ import annotations

import sys

from catalog_service.entrypoints.app import DEFINITION, build
from credit_common.auth.cli import keys_main
from credit_common.config import parse_service_args
from credit_common.runtime import main


def run(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["keys"]:
        return keys_main(DEFINITION, env_prefix="CATALOG", database_file="catalog.db", argv=argv[1:])
    settings = parse_service_args(
        service=DEFINITION.name,
        env_prefix="CATALOG",
        default_port=50051,
        database_file="catalog.db",
        argv=argv,
        flags=DEFINITION.flags,
    )
    return main(DEFINITION, settings, build)


if __name__ == "__main__":
    sys.exit(run())
