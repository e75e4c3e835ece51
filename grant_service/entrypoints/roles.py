"""Who may call what: every method of GrantService and the roles that allow it (`admin`
allows everything). A method missing here stops the service at startup."""

from __future__ import annotations

from credit_common.auth.check import method_roles, read_only
from credit_common.auth.keys import OPERATOR, READER, SYNC, TEST_CLOCKS, USAGE, WEBHOOKS
from credit_common.contract import check_role_table
from grant_service.v1 import grant_service_pb2

ROLES: dict[str, tuple[str, ...]] = {
    # the catalog's handoff (its own key, role sync)
    "ApplySubscription": (SYNC,),
    "ApplySubscriptions": (SYNC,),
    "ApplyCreditCurrency": (SYNC,),
    # reads
    "GetSubscription": (READER,),
    "GetBalance": (READER,),
    "ListGrants": (READER,),
    "ListLedgerEntries": (READER,),
    # the credit event log
    "ListEvents": (READER,),
    "WatchEvents": (READER,),
    # balance alert levels: what fires events other systems act on, set by an operator
    "SetBalanceAlerts": (OPERATOR,),
    "GetBalanceAlerts": (OPERATOR, READER),
    "ClearBalanceAlerts": (OPERATOR,),
    # metering
    "ReportUsage": (USAGE,),
    "ReportUsageBatch": (USAGE,),
    "CheckUsage": (USAGE,),
    # operator actions: mint or void credits
    "VoidGrant": (OPERATOR,),
    "CreateGrant": (OPERATOR,),
    # test clocks; the catalog reads them (sync) for the default start of a subscription on one
    "CreateTestClock": (TEST_CLOCKS,),
    "GetTestClock": (TEST_CLOCKS, SYNC),
    "ListTestClocks": (TEST_CLOCKS,),
    "AdvanceTestClock": (TEST_CLOCKS,),
    "DeleteTestClock": (TEST_CLOCKS,),
    # webhook endpoints: who holds their secrets and chooses where events go (docs/security.md)
    "CreateWebhookEndpoint": (WEBHOOKS,),
    "GetWebhookEndpoint": (WEBHOOKS,),
    "ListWebhookEndpoints": (WEBHOOKS,),
    "UpdateWebhookEndpoint": (WEBHOOKS,),
    "DisableWebhookEndpoint": (WEBHOOKS,),
    "EnableWebhookEndpoint": (WEBHOOKS,),
    "DeleteWebhookEndpoint": (WEBHOOKS,),
    "RotateWebhookSecret": (WEBHOOKS,),
    "ListWebhookDeliveryAttempts": (WEBHOOKS,),
    "ResendWebhookEvent": (WEBHOOKS,),
    "ReplayWebhookEvents": (WEBHOOKS,),
}

SERVICE = grant_service_pb2.DESCRIPTOR.services_by_name["GrantService"]
check_role_table(SERVICE, ROLES)  # the protos' required_roles say the same (credit_common/contract.py)
METHOD_ROLES = method_roles(SERVICE, ROLES)
# The methods that change nothing; every other method's log line is an audit record (docs/operations.md).
READ_METHODS = read_only(
    SERVICE,
    (
        "GetSubscription",
        "GetBalance",
        "ListGrants",
        "ListLedgerEntries",
        "CheckUsage",
        "GetTestClock",
        "ListTestClocks",
        "ListEvents",
        "WatchEvents",
        "GetBalanceAlerts",
        "GetWebhookEndpoint",
        "ListWebhookEndpoints",
        "ListWebhookDeliveryAttempts",
    ),
)
