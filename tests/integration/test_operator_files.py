"""What ships for operators (deploy/): the alert rules pass `promtool check rules` and their unit tests
(`promtool test rules`), and every metric the Grafana dashboard and the alerts query is one that the
services expose (the webhook metric excepted: the webhooks work adds it)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from catalog_service.entrypoints import app as catalog_app
from credit_common.db.engine import DatabaseSettings
from credit_common.metrics import start_metrics
from grant_service.entrypoints import app as grant_app
from tests.support.servers import serving

ROOT = Path(__file__).resolve().parents[2]
ALERTS = ROOT / "deploy" / "prometheus" / "alerts.yml"
ALERT_TESTS = ROOT / "deploy" / "prometheus" / "alerts_test.yml"
DASHBOARD = ROOT / "deploy" / "grafana" / "credit-grants.json"
# Named in alerts.yml for the webhook deliveries, which the webhooks work exports (docs/operations.md).
NOT_YET_EXPORTED: set[str] = set()
METRIC = re.compile(r"\b((?:grpc_server|credit_grants)_[a-z0-9_]+)")


def _promtool() -> str:
    """promtool on PATH, or the one `make test` took out of the Debian package prometheus into the venv."""
    beside = Path(sys.executable).parent / "promtool"
    promtool = shutil.which("promtool") or (str(beside) if beside.exists() else None)
    if promtool is None:
        pytest.skip(
            "promtool is not installed, and `make test` could not fetch it: it comes with the Debian package "
            "prometheus (`make promtool` extracts it with apt-get download; or `apt-get install prometheus`)"
        )
    return promtool


def test_alert_rules_check_and_pass_their_unit_tests():
    promtool = _promtool()
    checked = subprocess.run([promtool, "check", "rules", str(ALERTS)], capture_output=True, text=True)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    tested = subprocess.run(
        [promtool, "test", "rules", ALERT_TESTS.name], cwd=ALERT_TESTS.parent, capture_output=True, text=True
    )
    assert tested.returncode == 0, tested.stdout + tested.stderr


def _exposed(port: int) -> set[str]:
    import urllib.request

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as reply:
        text = reply.read().decode()
    names: set[str] = set()
    for family in text_string_to_metric_families(text):
        names.add(family.name)
        if family.type == "counter":
            names.add(family.name + "_total")
        if family.type == "histogram":
            names.update(family.name + suffix for suffix in ("_bucket", "_count", "_sum"))
    return names


def _queried() -> tuple[set[str], set[str]]:
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]
    exprs += [v["query"] for v in dashboard["templating"]["list"] if v.get("type") == "query"]
    dashboard_names = {name for expr in exprs for name in METRIC.findall(expr)}
    alert_names = set(METRIC.findall(ALERTS.read_text()))
    return dashboard_names, alert_names


def test_every_metric_queried_is_exposed(database_url_factory):
    exposed: set[str] = set()
    grant_args = ["--catch-up-interval", "0"]
    catalog_args = ["--grant-service-address", "127.0.0.1:1"]
    for app, args in ((grant_app, grant_args), (catalog_app, catalog_args)):
        url = database_url_factory(app.DEFINITION.name)
        with serving(app.DEFINITION, app.build, url, args=args):
            server, engine = start_metrics("127.0.0.1:0", DatabaseSettings(url=url), app.DEFINITION.gauges)
            try:
                exposed |= _exposed(server.port)
            finally:
                server.stop()
                engine.dispose()
    dashboard_names, alert_names = _queried()
    assert len(dashboard_names) >= 15
    assert dashboard_names - exposed == set()
    assert alert_names - exposed == NOT_YET_EXPORTED
