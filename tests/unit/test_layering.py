"""The layers of both services, checked by walking each module's imports, with no exceptions: the
domain imports neither SQL nor gRPC nor another layer; the service layer neither SQL, nor adapters,
nor gRPC and the generated stubs, nor entrypoints: all SQL is behind the unit of work and the
transport stays in the entrypoints; the servicer and converters use no adapters and no SQL."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

SERVICES = ("catalog_service", "grant_service")


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)  # from pkg import module
    return names


def _uses(path: Path, *packages: str) -> list[str]:
    return sorted(n for n in _imports(path) if any(n == p or n.startswith(p + ".") for p in packages))


def _root(service: str) -> Path:
    return Path(importlib.import_module(service).__file__).parent


def _modules(service: str, package: str) -> dict[str, Path]:
    found = {p.stem: p for p in (_root(service) / package).glob("*.py") if p.stem != "__init__"}
    assert found, f"{service}.{package} has no modules"
    return found


@pytest.mark.parametrize("service", SERVICES)
def test_the_domain_imports_no_sql_no_grpc_no_other_layer(service):
    forbidden = (
        "sqlalchemy",
        "grpc",
        "google",
        *(f"{service}.{layer}" for layer in ("adapters", "service_layer", "entrypoints", "v1")),
    )
    mixed = {name: _uses(path, *forbidden) for name, path in _modules(service, "domain").items()}
    assert {name: uses for name, uses in mixed.items() if uses} == {}


@pytest.mark.parametrize("service", SERVICES)
def test_service_layer_modules_import_no_sql_no_adapters_no_grpc(service):
    forbidden = ("sqlalchemy", "grpc", "google", *(f"{service}.{layer}" for layer in ("adapters", "entrypoints", "v1")))
    mixed = {name: _uses(path, *forbidden) for name, path in _modules(service, "service_layer").items()}
    assert {name: uses for name, uses in mixed.items() if uses} == {}


@pytest.mark.parametrize("service", SERVICES)
def test_the_servicer_and_converters_use_no_adapters_and_no_sql(service):
    for name in ("servicer", "converters"):
        assert _uses(_root(service) / "entrypoints" / f"{name}.py", "sqlalchemy", f"{service}.adapters") == [], name


def test_the_walker_sees_every_form_of_import(tmp_path):
    module = tmp_path / "m.py"
    module.write_text("import sqlalchemy.orm\nfrom grant_service import adapters\nfrom grpc import aio\n")
    assert _uses(module, "sqlalchemy", "grant_service.adapters", "grpc") == [
        "grant_service.adapters",
        "grpc",
        "grpc.aio",
        "sqlalchemy.orm",
    ]
