"""What the protos declare about authorization: each method's `credit_grants.v1.required_roles`
option (protos/credit_grants/v1/options.proto), and the check that a service's role table says
the same, so that the contract other languages read and the server's refusals never disagree."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from google.protobuf.descriptor import ServiceDescriptor

from credit_grants.v1 import options_pb2


def declared_roles(service: ServiceDescriptor) -> dict[str, tuple[str, ...]]:
    """Method name -> the roles its `required_roles` option names (in the proto's order)."""
    return {
        method.name: tuple(method.GetOptions().Extensions[options_pb2.required_roles]) for method in service.methods
    }


def check_role_table(service: ServiceDescriptor, table: Mapping[str, Iterable[str]]) -> None:
    """Raise ValueError naming every method whose roles in `table` differ (as a set) from its
    `required_roles` in the protos, or that one of them lacks."""
    declared = declared_roles(service)
    differing = sorted(
        f"{name}: table {sorted(table.get(name, ()))}, protos {sorted(declared.get(name, ()))}"
        for name in set(declared) | set(table)
        if set(table.get(name, ())) != set(declared.get(name, ()))
    )
    if differing:
        raise ValueError(
            f"the role table of {service.full_name} disagrees with the protos' "
            f"credit_grants.v1.required_roles: {'; '.join(differing)}"
        )
