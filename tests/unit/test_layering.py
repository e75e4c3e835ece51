"""The grant service's layers, checked by walking each module's imports: the domain
imports neither SQL nor gRPC, the servicer and converters no adapters, and the
service layer no SQL and no adapters: all SQL is behind the unit of work."""

from __future__ import annotations

import ast
from pathlib import Path

import grant_service

ROOT = Path(grant_service.__file__).parent


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def _uses(path: Path, *packages: str) -> list[str]:
    return sorted(n for n in _imports(path) if any(n == p or n.startswith(p + ".") for p in packages))


def _modules(package: str) -> dict[str, Path]:
    return {p.stem: p for p in (ROOT / package).glob("*.py") if p.stem != "__init__"}


def test_the_domain_imports_no_sql_no_grpc_no_other_layer():
    for name, path in _modules("domain").items():
        assert (
            _uses(
                path,
                "sqlalchemy",
                "grpc",
                "google",
                "grant_service.adapters",
                "grant_service.service_layer",
                "grant_service.entrypoints",
                "grant_service.v1",
            )
            == []
        ), name


def test_the_servicer_and_converters_use_no_adapters_and_no_sql():
    for name in ("servicer", "converters"):
        assert _uses(ROOT / "entrypoints" / f"{name}.py", "sqlalchemy", "grant_service.adapters") == [], name


def test_service_layer_modules_import_neither_sqlalchemy_nor_adapters():
    mixed = {
        name: _uses(path, "sqlalchemy", "grant_service.adapters") for name, path in _modules("service_layer").items()
    }
    assert {name: uses for name, uses in mixed.items() if uses} == {}
