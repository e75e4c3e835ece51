"""`python -m grant_service [serve|migrate] [flags]` or `python -m grant_service keys ...`: see --help."""

from __future__ import annotations

import sys
from functools import partial

from credit_common.runtime import run as run_service
from grant_service.entrypoints.app import DEFINITION

run = partial(run_service, DEFINITION)  # (argv=None) -> exit code

if __name__ == "__main__":
    sys.exit(run())
