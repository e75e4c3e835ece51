"""What the wheel ships: the three service packages, never the test and benchmark helpers."""

from __future__ import annotations

import ast
import tomllib
from pathlib import Path

from setuptools import find_packages

ROOT = Path(__file__).resolve().parents[2]


def _shipped_packages() -> list[str]:
    """The packages the wheel holds: setuptools' find with pyproject's [tool.setuptools.packages.find]."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]
    return find_packages(
        where=str(ROOT / config.get("where", ["."])[0]),
        include=config.get("include", ["*"]),
        exclude=config.get("exclude", ()),
    )


def test_the_services_are_shipped():
    packages = set(_shipped_packages())
    assert {"credit_common", "catalog_service.entrypoints", "grant_service.entrypoints", "credit_client"} <= packages


def test_no_test_or_benchmark_helper_is_shipped():
    packages = _shipped_packages()
    assert not [name for name in packages if name.split(".")[0] in ("tests", "bench", "scripts")]
    assert not [name for name in packages if "testing" in name.split(".")]
    assert "tests.support" not in packages and "credit_common.testing" not in packages


def test_no_shipped_module_imports_a_test_helper():
    importers = []
    for package in _shipped_packages():
        for path in (ROOT / package.replace(".", "/")).glob("*.py"):
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
                if isinstance(node, ast.ImportFrom) and node.module:
                    names = [node.module]
                if any(name.split(".")[0] in ("tests", "bench", "pytest") for name in names):
                    importers.append(str(path.relative_to(ROOT)))
    assert importers == []
