"""`python -m catalog_service [serve|migrate] [flags]` or `python -m catalog_service keys ...`: see --help."""

from __future__ import annotations

import sys
from functools import partial

from catalog_service.entrypoints.app import DEFINITION
from credit_common.runtime import run as run_service

run = partial(run_service, DEFINITION)  # (argv=None) -> exit code

if __name__ == "__main__":
    sys.exit(run())
