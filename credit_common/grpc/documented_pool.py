"""The descriptors server reflection serves, with their comments.

Generated `_pb2` modules carry their files' descriptors without source info, so reflection (and
`grpcurl describe`, `buf curl`, Postman) showed bare fields. `make protos` also writes, next to
each generated module, a descriptor set of its proto file built with `--include_source_info`
(`catalog_service/v1/catalog_service.binpb`, ...). `documented_pool` returns a pool for the
reflection servicer that answers from those sets where it has them (the file with its comments)
and from the default pool otherwise (health, reflection, well-known types): the same descriptors,
now with the comments of `protos/`."""

from __future__ import annotations

import importlib.util
import logging
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool

log = logging.getLogger("credit_grants.reflection")


def descriptor_set_path(proto_file: str) -> Path | None:
    """Where `make protos` put the documented descriptor set of `proto_file`
    ("catalog_service/v1/catalog_service.proto" -> <package catalog_service.v1>/catalog_service.binpb)."""
    package, _, name = proto_file.rpartition("/")
    try:
        spec = importlib.util.find_spec(package.replace("/", "."))
    except ModuleNotFoundError:
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for folder in spec.submodule_search_locations:
        path = Path(folder) / (name.removesuffix(".proto") + ".binpb")
        if path.is_file():
            return path
    return None


class _DocumentedFile:
    """A FileDescriptor whose CopyToProto gives the file with its source info."""

    def __init__(self, descriptor: Any, documented: dict[str, descriptor_pb2.FileDescriptorProto]) -> None:
        self._descriptor = descriptor
        self._documented = documented

    @property
    def name(self) -> str:
        return self._descriptor.name

    @property
    def dependencies(self) -> list[_DocumentedFile]:
        return [_DocumentedFile(d, self._documented) for d in self._descriptor.dependencies]

    def CopyToProto(self, proto: descriptor_pb2.FileDescriptorProto) -> None:
        documented = self._documented.get(self._descriptor.name)
        if documented is None:
            self._descriptor.CopyToProto(proto)
        else:
            proto.CopyFrom(documented)


class DocumentedPool:
    """The parts of a DescriptorPool the reflection servicer uses, over `pool`, with the files of
    `documented` served with their comments."""

    def __init__(self, pool: Any, documented: dict[str, descriptor_pb2.FileDescriptorProto]) -> None:
        self._pool = pool
        self.documented = documented

    def FindFileByName(self, name: str) -> _DocumentedFile:
        return _DocumentedFile(self._pool.FindFileByName(name), self.documented)

    def FindFileContainingSymbol(self, symbol: str) -> _DocumentedFile:
        try:
            return _DocumentedFile(self._pool.FindFileContainingSymbol(symbol), self.documented)
        except KeyError:
            # The C (upb) pool does not index methods and fields: `grpcurl describe Service.Method`
            # asks for the file of "pkg.Service.Method"; it is the file of its service (or message).
            parent, _, member = symbol.rpartition(".")
            if parent and self._has_member(parent, member):
                return _DocumentedFile(self._pool.FindFileContainingSymbol(parent), self.documented)
            raise

    def _has_member(self, parent: str, member: str) -> bool:
        for find, members in (("FindServiceByName", "methods_by_name"), ("FindMessageTypeByName", "fields_by_name")):
            try:
                return member in getattr(getattr(self._pool, find)(parent), members)
            except KeyError:
                continue
        return False

    def __getattr__(self, name: str) -> Any:  # FindMessageTypeByName, FindExtensionByNumber, ...
        return getattr(self._pool, name)


def documented_pool(service_names: Iterable[str], pool: Any = None) -> DocumentedPool:
    """A pool for reflection in which the files of `service_names` (and what they import, when
    documented too) carry their comments. A file without its descriptor set (stubs generated
    without `make protos`) is served as before, without comments, and logged once."""
    pool = pool or descriptor_pool.Default()
    documented: dict[str, descriptor_pb2.FileDescriptorProto] = {}
    pending = []
    for name in service_names:
        try:
            pending.append(pool.FindFileContainingSymbol(name))
        except KeyError:  # a service without descriptors (generic handlers): nothing to document
            continue
    seen: set[str] = set()
    while pending:
        file = pending.pop()
        if file.name in seen:
            continue
        seen.add(file.name)
        pending.extend(file.dependencies)
        path = descriptor_set_path(file.name)
        if path is None:
            if not file.name.startswith("google/"):
                log.warning("no documented descriptor set for %s: reflection serves it without comments", file.name)
            continue
        for proto in descriptor_pb2.FileDescriptorSet.FromString(path.read_bytes()).file:
            if proto.name == file.name:
                _drop_json_names(proto.message_type)
                documented[proto.name] = proto
    return DocumentedPool(pool, documented)


def _drop_json_names(messages) -> None:
    """protoc's descriptor sets name each field's JSON name, which the stubs' descriptors leave out;
    grpcurl prints JSON by those names when given, so without this its output would turn from the
    proto names (`start_time`) to camelCase (`startTime`) with the comments."""
    for message in messages:
        for field in message.field:
            field.ClearField("json_name")
        _drop_json_names(message.nested_type)
