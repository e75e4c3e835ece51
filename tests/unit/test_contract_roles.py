"""The protos declare each method's roles (option credit_grants.v1.required_roles), and each
service's role table must say the same: a disagreement stops the import of the role table."""

from __future__ import annotations

import pytest

from catalog_service.entrypoints import roles as catalog_roles
from credit_common.auth.check import roles_of
from credit_common.contract import check_role_table, declared_roles
from grant_service.entrypoints import roles as grant_roles


@pytest.mark.parametrize("roles", [catalog_roles, grant_roles], ids=["catalog", "grant"])
def test_every_method_declares_the_roles_of_the_table(roles):
    declared = declared_roles(roles.SERVICE)
    assert set(declared) == {m.name for m in roles.SERVICE.methods}
    assert all(declared.values()), "a method without required_roles"
    assert {name: set(r) for name, r in declared.items()} == {name: set(r) for name, r in roles.ROLES.items()}
    assert roles_of(declared) == roles_of(roles.ROLES)


def test_a_disagreement_is_refused_with_the_method_named():
    service = grant_roles.SERVICE
    with pytest.raises(ValueError, match=r"GetBalance: table \['usage'\], protos \['reader'\]"):
        check_role_table(service, {**grant_roles.ROLES, "GetBalance": ("usage",)})
    with pytest.raises(ValueError, match=r"ReportUsage: table \[\], protos \['usage'\]"):
        check_role_table(service, {k: v for k, v in grant_roles.ROLES.items() if k != "ReportUsage"})
    with pytest.raises(ValueError, match=r"MintMoney: table \['admin'\], protos \[\]"):
        check_role_table(service, {**grant_roles.ROLES, "MintMoney": ("admin",)})
    check_role_table(service, {**grant_roles.ROLES, "GetTestClock": ("sync", "test-clocks")})  # order is free
