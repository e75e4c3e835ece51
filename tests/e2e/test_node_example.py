"""examples/node (a Node client built from protos/ at run time) runs the main flow against live
servers. Skipped only when `node` is not installed; `npm install` (its two packages from the npm
registry, per package-lock.json) runs first when node_modules is missing."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from catalog_service.entrypoints import app as catalog_app
from credit_common.auth.keys import ADMIN, SYNC
from grant_service.entrypoints import app as grant_app
from tests.support.auth import create_key_at
from tests.support.servers import serving

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "node"

pytestmark = pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed on this machine")


@pytest.fixture(scope="module")
def installed() -> Path:
    if not (EXAMPLE / "node_modules" / "@grpc" / "grpc-js").is_dir():
        npm = shutil.which("npm")
        assert npm, "node is installed but npm is not: cannot install the example's packages"
        done = subprocess.run(
            [npm, "ci", "--no-audit", "--no-fund"], cwd=EXAMPLE, capture_output=True, text=True, timeout=600
        )
        assert done.returncode == 0, done.stderr
    return EXAMPLE


def test_the_node_client_runs_the_main_flow(installed, tmp_path):
    grant_url, catalog_url = f"sqlite:///{tmp_path / 'grant.db'}", f"sqlite:///{tmp_path / 'catalog.db'}"
    sync_key = create_key_at(grant_app.DEFINITION, grant_url, (SYNC,), label="catalog")
    grant_args = ["--enable-test-clocks", "--catch-up-interval", "1"]
    with serving(grant_app.DEFINITION, grant_app.build, grant_url, args=grant_args) as (grant, _):
        catalog_args = ["--grant-service-address", f"127.0.0.1:{grant.port}", "--grant-service-api-key", sync_key]
        with serving(catalog_app.DEFINITION, catalog_app.build, catalog_url, args=catalog_args) as (catalog, _):
            env = {
                "PATH": str(Path(shutil.which("node")).parent),
                "CREDIT_GRANTS_CATALOG_ADDRESS": f"127.0.0.1:{catalog.port}",
                "CREDIT_GRANTS_GRANT_ADDRESS": f"127.0.0.1:{grant.port}",
                "CREDIT_GRANTS_CATALOG_API_KEY": create_key_at(catalog_app.DEFINITION, catalog_url, (ADMIN,)),
                "CREDIT_GRANTS_GRANT_API_KEY": create_key_at(grant_app.DEFINITION, grant_url, (ADMIN,)),
            }
            runs = []
            for _ in range(2):  # again on the same databases
                done = subprocess.run(
                    ["node", "main_flow.js"], cwd=installed, env=env, capture_output=True, text=True, timeout=120
                )
                assert done.returncode == 0, done.stdout + done.stderr
                runs.append(json.loads(done.stdout))
    for result in runs:
        assert result["balance_before_usage"] == "1000"
        assert (result["usage_credits"], result["balance_after_usage"]) == ("20", "980")
        assert result["balance_after_renewal"] == "1000"
        assert result["ledger"] == [["GRANT", "1000"], ["DEBIT", "-20"], ["EXPIRE", "-980"], ["GRANT", "1000"]]
    assert runs[0]["customer"] != runs[1]["customer"]


def test_without_servers_it_says_so(installed):
    env = {
        "PATH": str(Path(shutil.which("node")).parent),
        "CREDIT_GRANTS_CATALOG_ADDRESS": "127.0.0.1:9",
        "CREDIT_GRANTS_CATALOG_API_KEY": "cgk_x_y",
    }
    done = subprocess.run(["node", "main_flow.js"], cwd=installed, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 1 and "UNAVAILABLE" in done.stderr and "make run" in done.stderr
