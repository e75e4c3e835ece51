"""Who may call what: every method of CatalogService and the roles that allow it (`admin`
allows everything). A method missing here stops the service at startup."""

from __future__ import annotations

from catalog_service.v1 import catalog_service_pb2
from credit_common.auth.check import method_roles, read_only
from credit_common.auth.keys import CATALOG_ADMIN, OPERATOR, READER
from credit_common.contract import check_role_table

ROLES: dict[str, tuple[str, ...]] = {
    "CreateFeature": (CATALOG_ADMIN,),
    "GetFeature": (READER,),
    "ListFeatures": (READER,),
    "CreateCreditCurrency": (CATALOG_ADMIN,),
    "GetCreditCurrency": (READER,),
    "ListCreditCurrencies": (READER,),
    "UpdateCreditCurrency": (CATALOG_ADMIN,),
    "CreatePlan": (CATALOG_ADMIN,),
    "UpdatePlan": (CATALOG_ADMIN,),
    "GetPlan": (READER,),
    "ListPlans": (READER,),
    "PublishPlan": (CATALOG_ADMIN,),
    "ArchivePlan": (CATALOG_ADMIN,),
    "CreateCustomer": (CATALOG_ADMIN,),
    "GetCustomer": (READER,),
    "ListCustomers": (READER,),
    "ProvisionSubscription": (CATALOG_ADMIN,),
    "GetSubscription": (READER,),
    "ListSubscriptions": (READER,),
    "CancelSubscription": (CATALOG_ADMIN,),
    "AmendSubscription": (CATALOG_ADMIN,),
    # operator actions: the outbox of handoffs to the grant service
    "ListHandoffs": (OPERATOR,),
    "RequeueHandoffs": (OPERATOR,),
}

SERVICE = catalog_service_pb2.DESCRIPTOR.services_by_name["CatalogService"]
check_role_table(SERVICE, ROLES)  # the protos' required_roles say the same (credit_common/contract.py)
METHOD_ROLES = method_roles(SERVICE, ROLES)
# The methods that change nothing; every other method's log line is an audit record (docs/operations.md).
READ_METHODS = read_only(
    SERVICE,
    (
        "GetFeature",
        "ListFeatures",
        "GetCreditCurrency",
        "ListCreditCurrencies",
        "GetPlan",
        "ListPlans",
        "GetCustomer",
        "ListCustomers",
        "GetSubscription",
        "ListSubscriptions",
        "ListHandoffs",
    ),
)
