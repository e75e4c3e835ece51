"""`make bench` still works: the whole benchmark at its tiny size, on both backends, as real
processes. No timing assertions: only that every scenario produced its figures and that the
exactness checks (which raise inside the run) passed."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import BACKENDS

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.timeout(600)
def test_tiny_benchmark_runs_every_scenario(backend: str, tmp_path: Path) -> None:
    """Every scenario on SQLite; on PostgreSQL every one whose code differs by backend (the metrics
    scenario's does not: the scrape's gauges on PostgreSQL are tests/integration/test_metrics_processes.py's)."""
    output = tmp_path / "results.json"
    scenarios = "all" if backend == "sqlite" else "storm,reads,usage,provision,events,webhooks"
    # One grant server process (starts faster): the supervised processes are the test below's.
    args = ["--size", "tiny", "--backend", backend, "--scenario", scenarios, "--metrics-rounds", "1"]
    args += ["--grant-processes", "1"]
    args += ["--output", str(output)]
    run = subprocess.run(
        [sys.executable, "-m", "bench", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=540,
    )
    assert run.returncode == 0, run.stderr[-4000:]
    rows = json.loads(output.read_text())["rows"]
    assert {r["backend"] for r in rows} == {backend}
    figures = {(r["scenario"], r["figure"].split(" (")[0]): r for r in rows}
    for scenario, figure in [
        ("renewal storm", "grants issued/s"),
        ("renewal storm", "peak RSS grant service"),
        ("no-op baseline", "Health/Check QPS"),
        ("balance reads", "GetBalance"),
        ("usage debits", "ReportUsage"),
        ("provisioning", "provisions/s"),
        ("webhooks", "deliveries/s to a local receiver"),
        *([("metrics on/off", "GetBalance QPS, metrics on")] if backend == "sqlite" else []),
    ]:
        matching = [r for (s, f), r in figures.items() if s == scenario and f.startswith(figure)]
        assert matching, f"no {scenario} / {figure} row"
        for row in matching:
            assert row["value"] > 0, row
    storm = next(r for r in rows if r["figure"].startswith("grants issued/s"))
    assert storm["baseline"] > 0 and storm["ratio"] > 0
    exact = next(r for r in rows if r["figure"] == "ledger debits == accepted usage")
    assert exact["verdict"] == "ok" and exact["value"] > 0
    provisioning = next(r for r in rows if r["figure"].startswith("provisions/s"))
    assert provisioning["verdict"] != "MISS", provisioning  # no provisioning failed
    handoff = next(r for r in rows if r["figure"] == "last reply -> every first grant")
    # Every provisioned subscription reached the grant service and got its first grant.
    assert handoff["value"] is not None and handoff["value"] >= 0 and handoff["verdict"] == "ok", handoff


@pytest.mark.timeout(300)
def test_server_cpus_starts_every_service_pinned_and_the_grant_service_in_processes(tmp_path: Path) -> None:
    cpu = min(os.sched_getaffinity(0))
    args = ["--size", "tiny", "--backend", "sqlite", "--scenario", "reads,provision", "--server-cpus", str(cpu)]
    run = subprocess.run(
        [sys.executable, "-m", "bench", *args, "--keep", "--output", str(tmp_path / "results.json")],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert run.returncode == 0, run.stderr[-4000:]
    run_dir = Path(re.search(r"run directory (\S+)", run.stderr).group(1))
    try:
        info = json.loads((tmp_path / "results.json").read_text())
        assert info["server_cpus"] == [cpu]
        # By default the grant service runs one server process per CPU the benchmark may use.
        assert info["grant_processes"] == len(os.sched_getaffinity(0))
        serving = [
            line
            for log in run_dir.glob("*_service-*.log")
            for line in map(json.loads, log.read_text().splitlines())
            if line.get("message") == "serving"
        ]
        assert {line["service"] for line in serving} == {"grant_service", "catalog_service"}
        assert all(line["cpus"] == [cpu] for line in serving)
        grant_processes = {line["server_process"] for line in serving if line["service"] == "grant_service"}
        expected = set(range(info["grant_processes"])) if info["grant_processes"] > 1 else {None}
        assert grant_processes == expected
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)
