"""Typed clients of both services: one method per RPC, plain Python arguments in (str keys,
Decimal/str/int amounts, aware datetimes, enum names such as "metered" or "immediately"), the
generated proto messages out (`catalog_service.v1.catalog_service_pb2`,
`grant_service.v1.grant_service_pb2`). List methods return an iterator over every page.

    with CatalogClient.from_env() as catalog:
        catalog.create_customer("acme", "Acme Corp")
    with GrantClient(address="127.0.0.1:50052", api_key=key) as grants:
        print(grants.get_balance("acme", "ai-credits").available)

Every call has a deadline, mutations a request_id (pass your own to retry across processes;
otherwise one is generated and reused for the retries of UNAVAILABLE), and failures raise
credit_client.errors.ApiError subclasses."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Iterator, Mapping
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import grpc
from google.protobuf import duration_pb2, json_format, timestamp_pb2
from google.protobuf.descriptor import EnumDescriptor
from google.protobuf.message import Message

from catalog_service.v1 import catalog_service_pb2 as cpb
from catalog_service.v1 import catalog_service_pb2_grpc as cpb_grpc
from credit_client._transport import MAX_BACKOFF_S, IdleWatchdog, Transport, decimal_text
from credit_client.errors import DeadlineExceeded, from_rpc_error
from credit_client.settings import ClientSettings
from grant_service.v1 import grant_service_pb2 as gpb
from grant_service.v1 import grant_service_pb2_grpc as gpb_grpc
from grant_service.v1 import webhooks_pb2 as wpb

Amount = str | Decimal | int


def timestamp(value: datetime | None) -> timestamp_pb2.Timestamp | None:
    """A Timestamp of an aware datetime (naive ones are refused: they say nothing of the zone)."""
    if value is None:
        return None
    if value.tzinfo is None:
        raise ValueError(f"a time must be timezone-aware (UTC), got {value!r}")
    ts = timestamp_pb2.Timestamp()
    ts.FromDatetime(value.astimezone(UTC))
    return ts


def enum_value(enum: EnumDescriptor, value: int | str | None, field: str) -> int:
    """An enum value from its number, its full name ("CANCEL_MODE_IMMEDIATELY") or its short,
    case-insensitive name ("immediately", "at-period-end"); None is UNSPECIFIED (0)."""
    if value is None:
        return 0
    if isinstance(value, int):
        return value
    prefix = enum.values[0].name.removesuffix("UNSPECIFIED")  # e.g. "CANCEL_MODE_"
    name = value.strip().upper().replace("-", "_")
    for candidate in (name, prefix + name):
        if candidate in enum.values_by_name:
            return enum.values_by_name[candidate].number
    choices = ", ".join(v.name.removeprefix(prefix).lower() for v in enum.values[1:])
    raise ValueError(f"{field} must be one of {choices}; got {value!r}")


def short_name(enum: EnumDescriptor, number: int) -> str:
    """ "delivered" for HANDOFF_STATUS_DELIVERED (what the CLI shows)."""
    prefix = enum.values[0].name.removesuffix("UNSPECIFIED")
    found = enum.values_by_number.get(number)
    return found.name.removeprefix(prefix).lower() if found else str(number)


def _event_types(types: Iterable[int | str] | None, field: str = "types") -> list[int]:
    """CreditEventType numbers from names ("credits-granted", "CREDIT_EVENT_TYPE_BALANCE_LOW")."""
    return [enum_value(gpb.CreditEventType.DESCRIPTOR, t, f"{field}[{i}]") for i, t in enumerate(types or ())]


def event_type_name(value: int | str, field: str = "event_types") -> str:
    """The full CreditEventType name a webhook endpoint stores ("CREDIT_EVENT_TYPE_CREDITS_GRANTED")
    from a number or a short name; a name the client does not know goes as given (the server says)."""
    try:
        number = enum_value(gpb.CreditEventType.DESCRIPTOR, value, field)
    except ValueError:
        return str(value)
    return gpb.CreditEventType.Name(number)


def alert_level(level: str | gpb.BalanceAlertLevel) -> gpb.BalanceAlertLevel:
    """A balance alert level from its text: "500" (an amount of credits) or "10%" (a percentage of
    what the customer was granted for the period). The server checks the decimals."""
    if isinstance(level, gpb.BalanceAlertLevel):
        return level
    text = str(level).strip()
    if text.endswith("%"):
        return gpb.BalanceAlertLevel(percent=text[:-1].strip())
    return gpb.BalanceAlertLevel(amount=text)


def _values(values: Mapping[str, Amount] | None, field: str) -> dict[str, str]:
    return {k: decimal_text(v, f"{field}[{k}]") for k, v in (values or {}).items()}


class _Client:
    _stub_type: type
    _service: str

    def __init__(self, settings: ClientSettings | None = None, **overrides: Any) -> None:
        """`settings`, or the environment's (ClientSettings.from_env) with `overrides` (e.g.
        address=..., api_key=..., tls_ca_file=..., deadline_s=...)."""
        if settings is None:
            settings = ClientSettings.from_env(self._service, **overrides)
        elif overrides:
            settings = settings.with_(**overrides)
        self.settings = settings
        self._transport = Transport(settings, self._stub_type)

    @classmethod
    def from_env(cls, **overrides: Any):
        return cls(None, **overrides)

    def close(self) -> None:
        self._transport.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def call(self, method: str, request: Message, *, deadline_s: float | None = None) -> Any:
        """Any RPC by name with its request message (what the typed methods use)."""
        return self._transport.call(method, request, deadline_s=deadline_s)

    def _pages(self, method: str, request: Message, items: str, limit: int | None = None) -> Iterator[Any]:
        """Every item of a List method, page after page (at most `limit`)."""
        seen = 0
        while True:
            page = self.call(method, request)
            for item in getattr(page, items):
                if limit is not None and seen >= limit:
                    return
                seen += 1
                yield item
            if not page.next_page_token:
                return
            request.page_token = page.next_page_token


class CatalogClient(_Client):
    """catalog_service.v1.CatalogService."""

    _stub_type = cpb_grpc.CatalogServiceStub
    _service = "catalog"

    # features
    def create_feature(
        self, key: str, display_name: str, type: int | str, unit_name: str = "", *, request_id: str = ""
    ) -> cpb.Feature:
        feature = cpb.Feature(
            key=key,
            display_name=display_name,
            type=enum_value(cpb.FeatureType.DESCRIPTOR, type, "type"),
            unit_name=unit_name,
        )
        return self.call("CreateFeature", cpb.CreateFeatureRequest(feature=feature, request_id=request_id)).feature

    def get_feature(self, key: str) -> cpb.Feature:
        return self.call("GetFeature", cpb.GetFeatureRequest(key=key)).feature

    def list_features(self, *, limit: int | None = None) -> Iterator[cpb.Feature]:
        return self._pages("ListFeatures", cpb.ListFeaturesRequest(), "features", limit)

    # credit currencies
    def create_credit_currency(
        self,
        key: str,
        display_name: str,
        unit_name: str,
        rates: Mapping[str, Amount],
        *,
        request_id: str = "",
    ) -> cpb.CreditCurrency:
        currency = cpb.CreditCurrency(
            key=key,
            display_name=display_name,
            unit_name=unit_name,
            rates=[cpb.CreditRate(feature_key=k, credits_per_unit=v) for k, v in _values(rates, "rates").items()],
        )
        request = cpb.CreateCreditCurrencyRequest(credit_currency=currency, request_id=request_id)
        return self.call("CreateCreditCurrency", request).credit_currency

    def update_credit_currency(
        self,
        key: str,
        *,
        display_name: str | None = None,
        unit_name: str | None = None,
        rates: Mapping[str, Amount] | None = None,
        request_id: str = "",
    ) -> cpb.CreditCurrency:
        """Changes what is given (not None); `rates` replaces the whole list."""
        currency = cpb.CreditCurrency(key=key)
        mask = []
        if display_name is not None:
            currency.display_name, mask = display_name, [*mask, "display_name"]
        if unit_name is not None:
            currency.unit_name, mask = unit_name, [*mask, "unit_name"]
        if rates is not None:
            currency.rates.extend(
                cpb.CreditRate(feature_key=k, credits_per_unit=v) for k, v in _values(rates, "rates").items()
            )
            mask.append("rates")
        request = cpb.UpdateCreditCurrencyRequest(credit_currency=currency, request_id=request_id)
        request.update_mask.paths.extend(mask)
        return self.call("UpdateCreditCurrency", request).credit_currency

    def get_credit_currency(self, key: str) -> cpb.CreditCurrency:
        return self.call("GetCreditCurrency", cpb.GetCreditCurrencyRequest(key=key)).credit_currency

    def list_credit_currencies(self, *, limit: int | None = None) -> Iterator[cpb.CreditCurrency]:
        return self._pages("ListCreditCurrencies", cpb.ListCreditCurrenciesRequest(), "credit_currencies", limit)

    # plans
    @staticmethod
    def plan_message(plan: cpb.Plan | Mapping[str, Any]) -> cpb.Plan:
        """A Plan from a message or from its JSON form (as in a YAML/JSON file: field names as in
        the proto or camelCase, enums by full name such as "CADENCE_MONTHLY")."""
        if isinstance(plan, cpb.Plan):
            return plan
        return json_format.ParseDict(dict(plan), cpb.Plan())

    def create_plan(self, plan: cpb.Plan | Mapping[str, Any], *, request_id: str = "") -> cpb.Plan:
        request = cpb.CreatePlanRequest(plan=self.plan_message(plan), request_id=request_id)
        return self.call("CreatePlan", request).plan

    def update_plan(
        self, plan: cpb.Plan | Mapping[str, Any], update_mask: list[str], *, request_id: str = ""
    ) -> cpb.Plan:
        request = cpb.UpdatePlanRequest(plan=self.plan_message(plan), request_id=request_id)
        request.update_mask.paths.extend(update_mask)
        return self.call("UpdatePlan", request).plan

    def get_plan(self, key: str, version: int = 0, *, draft: bool = False) -> cpb.Plan:
        return self.call("GetPlan", cpb.GetPlanRequest(key=key, version=version, draft=draft)).plan

    def list_plans(self, status: int | str | None = None, *, limit: int | None = None) -> Iterator[cpb.Plan]:
        request = cpb.ListPlansRequest(status=enum_value(cpb.PlanStatus.DESCRIPTOR, status, "status"))
        return self._pages("ListPlans", request, "plans", limit)

    def publish_plan(self, key: str, *, request_id: str = "") -> cpb.Plan:
        return self.call("PublishPlan", cpb.PublishPlanRequest(key=key, request_id=request_id)).plan

    def archive_plan(self, key: str, *, request_id: str = "") -> cpb.Plan:
        return self.call("ArchivePlan", cpb.ArchivePlanRequest(key=key, request_id=request_id)).plan

    # customers
    def create_customer(
        self, key: str, display_name: str = "", *, test_clock_id: str = "", request_id: str = ""
    ) -> cpb.Customer:
        customer = cpb.Customer(key=key, display_name=display_name, test_clock_id=test_clock_id)
        return self.call("CreateCustomer", cpb.CreateCustomerRequest(customer=customer, request_id=request_id)).customer

    def get_customer(self, key: str) -> cpb.Customer:
        return self.call("GetCustomer", cpb.GetCustomerRequest(key=key)).customer

    def list_customers(self, *, limit: int | None = None) -> Iterator[cpb.Customer]:
        return self._pages("ListCustomers", cpb.ListCustomersRequest(), "customers", limit)

    # subscriptions
    def provision_subscription(
        self,
        customer_key: str,
        plan_key: str,
        entitlement_values: Mapping[str, Amount] | None = None,
        *,
        plan_version: int = 0,
        start_time: datetime | None = None,
        end_time: datetime | None = None,
        test_clock_id: str = "",
        request_id: str = "",
    ) -> cpb.Subscription:
        request = cpb.ProvisionSubscriptionRequest(
            request_id=request_id,
            customer_key=customer_key,
            plan_key=plan_key,
            plan_version=plan_version,
            entitlement_values=_values(entitlement_values, "entitlement_values"),
            start_time=timestamp(start_time),
            end_time=timestamp(end_time),
            test_clock_id=test_clock_id,
        )
        return self.call("ProvisionSubscription", request).subscription

    def get_subscription(self, subscription_id: str) -> cpb.Subscription:
        return self.call("GetSubscription", cpb.GetSubscriptionRequest(subscription_id=subscription_id)).subscription

    def list_subscriptions(
        self, customer_key: str = "", plan_key: str = "", *, limit: int | None = None
    ) -> Iterator[cpb.Subscription]:
        request = cpb.ListSubscriptionsRequest(customer_key=customer_key, plan_key=plan_key)
        return self._pages("ListSubscriptions", request, "subscriptions", limit)

    def cancel_subscription(self, subscription_id: str, mode: int | str, *, request_id: str = "") -> cpb.Subscription:
        request = cpb.CancelSubscriptionRequest(
            subscription_id=subscription_id,
            mode=enum_value(cpb.CancelMode.DESCRIPTOR, mode, "mode"),
            request_id=request_id,
        )
        return self.call("CancelSubscription", request).subscription

    def amend_subscription(
        self,
        subscription_id: str,
        entitlement_values: Mapping[str, Amount],
        timing: int | str | None = None,
        *,
        request_id: str = "",
    ) -> cpb.Subscription:
        request = cpb.AmendSubscriptionRequest(
            subscription_id=subscription_id,
            entitlement_values=_values(entitlement_values, "entitlement_values"),
            timing=enum_value(cpb.AmendmentTiming.DESCRIPTOR, timing, "timing"),
            request_id=request_id,
        )
        return self.call("AmendSubscription", request).subscription

    # handoffs (role operator)
    def list_handoffs(
        self,
        status: int | str | None = None,
        kind: int | str | None = None,
        key: str = "",
        *,
        limit: int | None = None,
    ) -> Iterator[cpb.Handoff]:
        request = cpb.ListHandoffsRequest(
            status=enum_value(cpb.HandoffStatus.DESCRIPTOR, status, "status"),
            kind=enum_value(cpb.HandoffKind.DESCRIPTOR, kind, "kind"),
            key=key,
        )
        return self._pages("ListHandoffs", request, "handoffs", limit)

    def requeue_handoffs(
        self, kind: int | str | None = None, key: str = "", *, all_parked: bool = False, request_id: str = ""
    ) -> int:
        request = cpb.RequeueHandoffsRequest(
            kind=enum_value(cpb.HandoffKind.DESCRIPTOR, kind, "kind"),
            key=key,
            all_parked=all_parked,
            request_id=request_id,
        )
        return self.call("RequeueHandoffs", request).requeued_count


class GrantClient(_Client):
    """grant_service.v1.GrantService (the Apply methods, the catalog's, are left to `call`)."""

    _stub_type = gpb_grpc.GrantServiceStub
    _service = "grant"

    def get_balance(
        self, customer_key: str, currency_key: str, *, as_of: datetime | None = None, with_grants: bool = False
    ) -> gpb.Balance:
        request = gpb.GetBalanceRequest(
            customer_key=customer_key,
            currency_key=currency_key,
            as_of_time=timestamp(as_of),
            view=gpb.BALANCE_VIEW_WITH_GRANTS if with_grants else gpb.BALANCE_VIEW_BASIC,
        )
        return self.call("GetBalance", request).balance

    def list_grants(
        self, customer_key: str, currency_key: str = "", subscription_id: str = "", *, limit: int | None = None
    ) -> Iterator[gpb.Grant]:
        request = gpb.ListGrantsRequest(
            customer_key=customer_key, currency_key=currency_key, subscription_id=subscription_id
        )
        return self._pages("ListGrants", request, "grants", limit)

    def list_ledger_entries(
        self,
        customer_key: str,
        currency_key: str = "",
        *,
        start_time: datetime | None = None,
        end_time: datetime | None = None,
        type: int | str | None = None,
        limit: int | None = None,
    ) -> Iterator[gpb.LedgerEntry]:
        """Oldest first."""
        request = gpb.ListLedgerEntriesRequest(
            customer_key=customer_key,
            currency_key=currency_key,
            start_time=timestamp(start_time),
            end_time=timestamp(end_time),
            type=enum_value(gpb.LedgerEntryType.DESCRIPTOR, type, "type"),
        )
        return self._pages("ListLedgerEntries", request, "entries", limit)

    def get_subscription(self, subscription_id: str) -> gpb.Subscription:
        return self.call("GetSubscription", gpb.GetSubscriptionRequest(subscription_id=subscription_id)).subscription

    def report_usage(
        self, customer_key: str, feature_key: str, quantity: Amount, currency_key: str = "", *, request_id: str = ""
    ) -> gpb.Usage:
        request = gpb.ReportUsageRequest(
            request_id=request_id,
            customer_key=customer_key,
            feature_key=feature_key,
            quantity=decimal_text(quantity, "quantity"),
            currency_key=currency_key,
        )
        return self.call("ReportUsage", request).usage

    def report_usage_batch(
        self, usages: Iterable[gpb.ReportUsageRequest | Mapping[str, Any]]
    ) -> list[gpb.ReportUsageResult]:
        """ReportUsageBatch: up to 1000 usages in one call, each a ReportUsageRequest or a mapping of
        its fields (customer_key, feature_key, quantity, and optionally currency_key, request_id). A
        usage without a request_id gets a new UUID, kept for the retries of UNAVAILABLE: a usage
        accepted by a call whose answer was lost answers REPLAYED, never twice. One result per usage,
        in order (outcome ACCEPTED or REPLAYED with its usage, REJECTED with its rejection)."""
        request = gpb.ReportUsageBatchRequest()
        for usage in usages:
            if isinstance(usage, gpb.ReportUsageRequest):
                item = request.usages.add()
                item.CopyFrom(usage)
            else:
                item = request.usages.add(
                    request_id=usage.get("request_id", ""),
                    customer_key=usage["customer_key"],
                    feature_key=usage["feature_key"],
                    quantity=decimal_text(usage["quantity"], "quantity"),
                    currency_key=usage.get("currency_key", ""),
                )
            if not item.request_id:
                item.request_id = str(uuid.uuid4())
        return list(self.call("ReportUsageBatch", request).results)

    def check_usage(
        self, customer_key: str, feature_key: str, quantity: Amount, currency_key: str = ""
    ) -> gpb.CheckUsageResponse:
        request = gpb.CheckUsageRequest(
            customer_key=customer_key,
            feature_key=feature_key,
            quantity=decimal_text(quantity, "quantity"),
            currency_key=currency_key,
        )
        return self.call("CheckUsage", request)

    def void_grant(self, grant_id: str, reason: str = "", *, request_id: str = "") -> gpb.Grant:
        return self.call(
            "VoidGrant", gpb.VoidGrantRequest(grant_id=grant_id, reason=reason, request_id=request_id)
        ).grant

    def create_grant(
        self,
        customer_key: str,
        currency_key: str,
        amount: Amount,
        *,
        effective_time: datetime | None = None,
        expire_time: datetime | None = None,
        priority: int | None = None,
        reason: str = "",
        request_id: str = "",
    ) -> gpb.Grant:
        request = gpb.CreateGrantRequest(
            request_id=request_id,
            customer_key=customer_key,
            currency_key=currency_key,
            amount=decimal_text(amount, "amount"),
            effective_time=timestamp(effective_time),
            expire_time=timestamp(expire_time),
            priority=priority,
            reason=reason,
        )
        return self.call("CreateGrant", request).grant

    # test clocks
    def create_test_clock(self, name: str, frozen_time: datetime, *, request_id: str = "") -> gpb.TestClock:
        request = gpb.CreateTestClockRequest(name=name, frozen_time=timestamp(frozen_time), request_id=request_id)
        return self.call("CreateTestClock", request).test_clock

    def get_test_clock(self, test_clock_id: str) -> gpb.TestClock:
        return self.call("GetTestClock", gpb.GetTestClockRequest(test_clock_id=test_clock_id)).test_clock

    def list_test_clocks(self, *, limit: int | None = None) -> Iterator[gpb.TestClock]:
        return self._pages("ListTestClocks", gpb.ListTestClocksRequest(), "test_clocks", limit)

    def advance_test_clock(self, test_clock_id: str, frozen_time: datetime, *, request_id: str = "") -> gpb.TestClock:
        request = gpb.AdvanceTestClockRequest(
            test_clock_id=test_clock_id, frozen_time=timestamp(frozen_time), request_id=request_id
        )
        return self.call("AdvanceTestClock", request).test_clock

    def delete_test_clock(self, test_clock_id: str, *, request_id: str = "") -> None:
        self.call("DeleteTestClock", gpb.DeleteTestClockRequest(test_clock_id=test_clock_id, request_id=request_id))

    # credit events (role reader)
    @staticmethod
    def _events_request(
        customer_key: str,
        currency_key: str,
        types: Iterable[int | str] | None,
        start_time: datetime | None,
        end_time: datetime | None,
        page_size: int,
        page_token: str = "",
    ) -> gpb.ListEventsRequest:
        return gpb.ListEventsRequest(
            customer_key=customer_key,
            currency_key=currency_key,
            types=_event_types(types),
            start_time=timestamp(start_time),
            end_time=timestamp(end_time),
            page_size=page_size,
            page_token=page_token,
        )

    def list_events(
        self,
        customer_key: str = "",
        currency_key: str = "",
        types: Iterable[int | str] | None = None,
        *,
        start_time: datetime | None = None,
        end_time: datetime | None = None,
        page_size: int = 0,
        limit: int | None = None,
    ) -> Iterator[gpb.CreditEvent]:
        """Credit events in log order (oldest first), every page; `types` by short name
        ("credits-granted", "balance-low") or number; occurred in [start_time, end_time)."""
        request = self._events_request(customer_key, currency_key, types, start_time, end_time, page_size)
        return self._pages("ListEvents", request, "events", limit)

    def list_events_page(
        self,
        customer_key: str = "",
        currency_key: str = "",
        types: Iterable[int | str] | None = None,
        *,
        start_time: datetime | None = None,
        end_time: datetime | None = None,
        page_size: int = 0,
        page_token: str = "",
    ) -> gpb.ListEventsResponse:
        """One page of ListEvents, with its `next_page_token` (empty on the last page)."""
        request = self._events_request(customer_key, currency_key, types, start_time, end_time, page_size, page_token)
        return self.call("ListEvents", request)

    def watch_events(
        self,
        cursor: str = "",
        customer_key: str = "",
        types: Iterable[int | str] | None = None,
        *,
        heartbeats: bool = False,
        retries: int | None = None,
        idle_timeout_s: float | None = None,
    ) -> Iterator[gpb.CreditEvent | gpb.Heartbeat]:
        """Every credit event after `cursor` (empty: from the start of the log), then each new one
        as it commits, for as long as the caller iterates (closing the iterator ends the stream).
        With `heartbeats`, the server's heartbeats are yielded too (gpb.Heartbeat).

        When the stream breaks with UNAVAILABLE (or the server ends it), it is opened again from
        the cursor of the last event yielded, so no event is missed or repeated; `retries`
        (default settings.retries) is how many reconnects in a row may fail before Unavailable is
        raised, with the doubling pause of `call` between them (any message received starts the
        count again). With `idle_timeout_s`, a stream on which nothing came for that long (no
        event, no heartbeat: the server sends one every --events-heartbeat-interval, default 15 s)
        is taken for dead and reopened the same way; after the last retry that is DeadlineExceeded.
        Other errors are raised at once (e.g. InvalidArgument INVALID_CURSOR)."""
        type_numbers = _event_types(types)
        retries = self.settings.retries if retries is None else retries
        failures, pause = 0, self.settings.retry_backoff_s
        while True:
            request = gpb.WatchEventsRequest(cursor=cursor, customer_key=customer_key, types=type_numbers)
            stream = self._transport.open_stream("WatchEvents", request)
            watchdog = IdleWatchdog(idle_timeout_s, stream.cancel) if idle_timeout_s else None
            try:
                for message in stream:
                    if watchdog is not None:
                        watchdog.kick()
                    failures, pause = 0, self.settings.retry_backoff_s
                    if message.HasField("event"):
                        cursor = message.event.cursor
                        yield message.event
                    elif heartbeats:
                        yield message.heartbeat
            except grpc.RpcError as error:
                stalled = watchdog is not None and watchdog.fired and error.code() == grpc.StatusCode.CANCELLED
                if stalled and failures >= retries:
                    raise DeadlineExceeded(
                        grpc.StatusCode.DEADLINE_EXCEEDED,
                        f"WatchEvents: nothing (no event, no heartbeat) came for {idle_timeout_s:g} s",
                        method="WatchEvents",
                    ) from None
                if not stalled and (error.code() != grpc.StatusCode.UNAVAILABLE or failures >= retries):
                    raise from_rpc_error(error, method="WatchEvents") from None
            finally:
                if watchdog is not None:
                    watchdog.stop()
                stream.cancel()
            failures += 1
            self._transport.pause(pause)
            pause = min(pause * 2, MAX_BACKOFF_S)

    # balance alerts (set and clear: role operator; show: reader)
    def set_balance_alerts(
        self, currency_key: str, levels: Iterable[str | gpb.BalanceAlertLevel], customer_key: str = ""
    ) -> gpb.BalanceAlerts:
        """Replace the levels of a customer in a currency, or with no customer_key the currency's
        default; each level "500" (an amount) or "10%" (of the period's grants). An empty list: no
        levels (BALANCE_DEPLETED is still reported)."""
        request = gpb.SetBalanceAlertsRequest(
            customer_key=customer_key, currency_key=currency_key, levels=[alert_level(v) for v in levels]
        )
        return self.call("SetBalanceAlerts", request).alerts

    def get_balance_alerts(self, currency_key: str, customer_key: str = "") -> gpb.BalanceAlerts:
        """The levels in force (the customer's own, else the currency's default) and their source."""
        request = gpb.GetBalanceAlertsRequest(customer_key=customer_key, currency_key=currency_key)
        return self.call("GetBalanceAlerts", request).alerts

    def clear_balance_alerts(self, currency_key: str, customer_key: str = "") -> gpb.BalanceAlerts:
        """Remove a customer's levels (the currency's default applies again), or the default's."""
        request = gpb.ClearBalanceAlertsRequest(customer_key=customer_key, currency_key=currency_key)
        return self.call("ClearBalanceAlerts", request).alerts

    # webhook endpoints (role webhooks)
    def create_webhook_endpoint(
        self,
        url: str,
        event_types: Iterable[int | str] | None = None,
        description: str = "",
        *,
        request_id: str = "",
    ) -> wpb.CreateWebhookEndpointResponse:
        """The endpoint and its signing secret (`signing_secret`: returned here and by a rotation
        only). `event_types` by short name ("credits-granted") or full name; none: every type."""
        request = wpb.CreateWebhookEndpointRequest(
            url=url,
            event_types=[event_type_name(t, f"event_types[{i}]") for i, t in enumerate(event_types or ())],
            description=description,
            request_id=request_id,
        )
        return self.call("CreateWebhookEndpoint", request)

    def get_webhook_endpoint(self, endpoint_id: str) -> wpb.WebhookEndpoint:
        return self.call("GetWebhookEndpoint", wpb.GetWebhookEndpointRequest(endpoint_id=endpoint_id)).endpoint

    def list_webhook_endpoints(self, *, limit: int | None = None) -> Iterator[wpb.WebhookEndpoint]:
        """Newest first."""
        return self._pages("ListWebhookEndpoints", wpb.ListWebhookEndpointsRequest(), "endpoints", limit)

    def update_webhook_endpoint(
        self,
        endpoint_id: str,
        *,
        url: str | None = None,
        event_types: Iterable[int | str] | None = None,
        description: str | None = None,
        enabled: bool | None = None,
    ) -> wpb.WebhookEndpoint:
        """Changes what is given (not None); `event_types` replaces the list (empty: every type)."""
        endpoint = wpb.WebhookEndpoint(endpoint_id=endpoint_id)
        mask = []
        if url is not None:
            endpoint.url = url
            mask.append("url")
        if event_types is not None:
            endpoint.event_types.extend(event_type_name(t, f"event_types[{i}]") for i, t in enumerate(event_types))
            mask.append("event_types")
        if description is not None:
            endpoint.description = description
            mask.append("description")
        if enabled is not None:
            endpoint.enabled = enabled
            mask.append("enabled")
        request = wpb.UpdateWebhookEndpointRequest(endpoint=endpoint)
        request.update_mask.paths.extend(mask)
        return self.call("UpdateWebhookEndpoint", request).endpoint

    def disable_webhook_endpoint(self, endpoint_id: str) -> wpb.WebhookEndpoint:
        request = wpb.DisableWebhookEndpointRequest(endpoint_id=endpoint_id)
        return self.call("DisableWebhookEndpoint", request).endpoint

    def enable_webhook_endpoint(self, endpoint_id: str) -> wpb.WebhookEndpoint:
        return self.call("EnableWebhookEndpoint", wpb.EnableWebhookEndpointRequest(endpoint_id=endpoint_id)).endpoint

    def delete_webhook_endpoint(self, endpoint_id: str) -> None:
        self.call("DeleteWebhookEndpoint", wpb.DeleteWebhookEndpointRequest(endpoint_id=endpoint_id))

    def rotate_webhook_secret(
        self, endpoint_id: str, previous_secret_ttl: timedelta | None = None, *, request_id: str = ""
    ) -> wpb.RotateWebhookSecretResponse:
        """A new signing secret (`signing_secret`, shown once); the old one also signs for
        `previous_secret_ttl` (None: the server's 24 hours; zero: it stops at once)."""
        request = wpb.RotateWebhookSecretRequest(endpoint_id=endpoint_id, request_id=request_id)
        if previous_secret_ttl is not None:
            ttl = duration_pb2.Duration()
            ttl.FromTimedelta(previous_secret_ttl)
            request.previous_secret_ttl.CopyFrom(ttl)
        return self.call("RotateWebhookSecret", request)

    def list_webhook_delivery_attempts(
        self, endpoint_id: str = "", event_id: str = "", *, limit: int | None = None
    ) -> Iterator[wpb.WebhookDeliveryAttempt]:
        """Newest first; to one endpoint and/or of one event (at least one of them)."""
        request = wpb.ListWebhookDeliveryAttemptsRequest(endpoint_id=endpoint_id, event_id=event_id)
        return self._pages("ListWebhookDeliveryAttempts", request, "attempts", limit)

    def resend_webhook_event(self, endpoint_id: str, event_id: str, *, request_id: str = "") -> str:
        """Queue one event for one endpoint again; the delivery's id."""
        request = wpb.ResendWebhookEventRequest(endpoint_id=endpoint_id, event_id=event_id, request_id=request_id)
        return self.call("ResendWebhookEvent", request).delivery_id

    def replay_webhook_events(
        self, endpoint_id: str, after_cursor: str = "", max_events: int = 0, *, request_id: str = ""
    ) -> wpb.ReplayWebhookEventsResponse:
        """Queue the events after `after_cursor` (empty: from the first) for one endpoint again:
        `queued`, `last_cursor`, `more` (call again from last_cursor while it is true)."""
        request = wpb.ReplayWebhookEventsRequest(
            endpoint_id=endpoint_id, after_cursor=after_cursor, max_events=max_events, request_id=request_id
        )
        return self.call("ReplayWebhookEvents", request)
