"""Conversions between grant_service.v1 messages and plain values: each request's
fields checked (every problem of a request reported at once) and turned into the
arguments of a use case, each domain object turned into its message."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from google.protobuf import json_format

from credit_common.decimals import format_decimal
from credit_common.errors import DomainError
from credit_common.fields import REQUIRED, Fields, check_length, parse_amount
from credit_common.grpc.timestamps import from_timestamp, set_timestamp, to_timestamp
from credit_common.grpc.validation import check_items_in_handler
from credit_common.ids import REQUEST_ID_MAX_LENGTH, is_valid_key
from credit_common.pagination import PageRequest, page_request
from credit_common.periods import Cadence
from grant_service.domain.alerts import MAX_LEVELS, AlertLevel
from grant_service.domain.clocks import api_test_clock_id
from grant_service.domain.events import PAYLOAD_OF, EventFilter, EventType
from grant_service.domain.model import (
    EntryType,
    Grant,
    GrantSource,
    GrantStatus,
    LedgerEntry,
    SimulatedClock,
    Subscription,
    Usage,
)
from grant_service.domain.schedules import ScheduledAmount, first_period_fits
from grant_service.service_layer.alerts import AlertSettings
from grant_service.service_layer.balances import BalanceInfo
from grant_service.service_layer.events import EventWithCursor, Heartbeat
from grant_service.service_layer.subscriptions import (
    ApplyResult,
    ClampedChange,
    ScheduleSpec,
    SubscriptionSpec,
)
from grant_service.service_layer.usage import BATCH_MAX as USAGE_BATCH_MAX
from grant_service.service_layer.usage import UsageCheck, UsageRequest, UsageResult
from grant_service.v1 import grant_service_pb2 as pb

APPLY_BATCH_MAX = 500  # items of one ApplySubscriptions call
check_items_in_handler(pb.ApplySubscriptionsRequest.DESCRIPTOR.fields_by_name["requests"].full_name)
check_items_in_handler(pb.ReportUsageBatchRequest.DESCRIPTOR.fields_by_name["usages"].full_name)

CADENCES = {pb.CADENCE_MONTHLY: Cadence.MONTHLY, pb.CADENCE_YEARLY: Cadence.YEARLY}
CADENCES_PB = {v: k for k, v in CADENCES.items()}
ENTRY_TYPES = {
    pb.LEDGER_ENTRY_TYPE_GRANT: EntryType.GRANT,
    pb.LEDGER_ENTRY_TYPE_DEBIT: EntryType.DEBIT,
    pb.LEDGER_ENTRY_TYPE_EXPIRE: EntryType.EXPIRE,
    pb.LEDGER_ENTRY_TYPE_VOID: EntryType.VOID,
    pb.LEDGER_ENTRY_TYPE_ADJUST: EntryType.ADJUST,
}
ENTRY_TYPES_PB = {v: k for k, v in ENTRY_TYPES.items()}
GRANT_STATUSES_PB = {
    GrantStatus.PENDING: pb.GRANT_STATUS_PENDING,
    GrantStatus.ACTIVE: pb.GRANT_STATUS_ACTIVE,
    GrantStatus.EXPIRED: pb.GRANT_STATUS_EXPIRED,
    GrantStatus.VOIDED: pb.GRANT_STATUS_VOIDED,
}
GRANT_SOURCES_PB = {GrantSource.RECURRING: pb.GRANT_SOURCE_RECURRING, GrantSource.ONE_OFF: pb.GRANT_SOURCE_ONE_OFF}

_SERVICE = pb.DESCRIPTOR.services_by_name["GrantService"].full_name
_LIST_GRANTS = f"/{_SERVICE}/ListGrants"
_LIST_LEDGER_ENTRIES = f"/{_SERVICE}/ListLedgerEntries"
_LIST_EVENTS = f"/{_SERVICE}/ListEvents"
_LIST_TEST_CLOCKS = f"/{_SERVICE}/ListTestClocks"


def time_of(message, field: str) -> datetime | None:
    return from_timestamp(message, field)


# ---------------------------------------------------------------------- requests


def check_usage_batch(request: pb.ReportUsageBatchRequest) -> None:
    fields = Fields()
    fields.items("usages", request.usages, at_most=USAGE_BATCH_MAX)
    fields.done()


def usage_request(request: pb.ReportUsageRequest) -> UsageRequest:
    """One usage of a ReportUsageBatch, its fields checked as ReportUsage checks them."""
    quantity = usage_quantity(request)
    return UsageRequest(request.request_id, request.customer_key, request.feature_key, quantity, request.currency_key)


class UsageRequests:
    """`usage_request` for the usages of one ReportUsageBatch: the usages of a batch share their
    quantities, features and currencies, so each distinct quantity text is parsed, and each feature
    and currency key checked, once (the checks are functions of the text). A usage with anything
    not seen valid before goes through `usage_request`, which raises its violations."""

    def __init__(self) -> None:
        self._quantities: dict[str, Decimal] = {}
        self._features: set[str] = set()
        self._currencies: set[str] = {""}  # none named: the feature's one

    def __call__(self, request: pb.ReportUsageRequest) -> UsageRequest:
        quantity = self._quantities.get(request.quantity)
        request_id, feature_key, currency_key = request.request_id, request.feature_key, request.currency_key
        if (
            quantity is None
            or feature_key not in self._features
            or currency_key not in self._currencies
            or not request_id
            or len(request_id) > REQUEST_ID_MAX_LENGTH
            or not is_valid_key(request.customer_key)
        ):
            usage = usage_request(request)
            self._quantities[request.quantity] = usage.quantity
            self._features.add(feature_key)
            self._currencies.add(currency_key)
            return usage
        return UsageRequest(request_id, request.customer_key, feature_key, quantity, currency_key)


class DecimalTexts(dict):
    """`format_decimal`, each distinct value once: the usages of a batch share their amounts (it is a
    function of the value: Decimal("1.0") and Decimal("1") are equal keys and have the same text)."""

    def __missing__(self, value: Decimal) -> str:
        text = self[value] = format_decimal(value)
        return text


def add_usage_results(results: Any, outcomes: list[UsageResult | DomainError]) -> None:
    """Add each usage's result to `results` (a ReportUsageBatchResponse's), built in place: a message
    built on its own is copied when it is put in a repeated field, and a batch's results are many
    (docs/performance.md). The usages of a batch share most of their fields (feature, quantity,
    currency, rate, credits, instant): each result starts as a copy (in C) of the one result built
    with them (`_fill_shared`), then gets its own (`_fill_own`)."""
    texts = DecimalTexts()
    add = results.add
    templates: dict[tuple, pb.ReportUsageResult] = {}
    for outcome in outcomes:
        if isinstance(outcome, DomainError):
            add(outcome=pb.USAGE_OUTCOME_REJECTED, rejection=rejected_pb(outcome).rejection)
            continue
        usage = outcome.usage
        key = (
            outcome.replayed,
            usage.feature_key,
            usage.quantity,
            usage.currency_key,
            usage.credits_per_unit,
            usage.credits,
            usage.usage_time,
        )
        template = templates.get(key)
        if template is None:
            template = templates[key] = pb.ReportUsageResult(
                outcome=pb.USAGE_OUTCOME_REPLAYED if outcome.replayed else pb.USAGE_OUTCOME_ACCEPTED
            )
            _fill_shared(template.usage, usage, texts.__getitem__)
        added = add()
        added.CopyFrom(template)
        _fill_own(added.usage, usage, outcome.debits, texts.__getitem__)


def check_apply_batch(request: pb.ApplySubscriptionsRequest) -> None:
    fields = Fields()
    fields.items("requests", request.requests, at_most=APPLY_BATCH_MAX)
    fields.done()


def subscription_spec(request: pb.ApplySubscriptionRequest) -> SubscriptionSpec:
    fields = Fields()
    fields.required("subscription_id", request.subscription_id, 64)
    fields.key("customer_key", request.customer_key)
    if request.revision <= 0:
        fields.violations.add("revision", "must be at least 1")
    start, end = time_of(request, "start_time"), time_of(request, "end_time")
    if start is None:
        fields.violations.add("start_time", "is required", REQUIRED)
    if start is not None and end is not None and end < start:
        fields.violations.add("end_time", "must not be before start_time")
    check_length(request.test_clock_id, "test_clock_id", fields.violations, 40)
    schedules = []
    seen: set[str] = set()
    for i, schedule in enumerate(request.credit_schedules):
        path = f"credit_schedules[{i}]"
        key = fields.key(f"{path}.entitlement_key", schedule.entitlement_key)
        if key in seen:
            fields.violations.add(f"{path}.entitlement_key", "appears more than once")
        seen.add(key)
        fields.key(f"{path}.currency_key", schedule.currency_key)
        cadence = CADENCES.get(schedule.cadence)
        if cadence is None:
            fields.violations.add(f"{path}.cadence", "must be CADENCE_MONTHLY or CADENCE_YEARLY")
        elif start is not None and not first_period_fits(start, cadence):
            fields.violations.add("start_time", f"the first {cadence.value.lower()} period must end before year 10000")
        fields.items(f"{path}.amounts", schedule.amounts, at_most=None)
        amounts: list[ScheduledAmount] = []
        for j, scheduled in enumerate(schedule.amounts):
            amount = fields.positive(f"{path}.amounts[{j}].amount", scheduled.amount)
            effective = time_of(scheduled, "effective_time") or start
            if start is not None and effective is not None:
                if j == 0 and effective != start:
                    fields.violations.add(
                        f"{path}.amounts[0].effective_time", "the first amount must be in force from start_time"
                    )
                elif j > 0 and effective <= amounts[-1].effective_time:
                    fields.violations.add(
                        f"{path}.amounts[{j}].effective_time",
                        "amounts must be ordered by strictly later effective_time",
                    )
                amounts.append(ScheduledAmount(amount, effective))
        if cadence is not None:
            schedules.append(ScheduleSpec(key, schedule.currency_key, cadence, tuple(amounts)))
    fields.done()
    return SubscriptionSpec(
        subscription_id=request.subscription_id,
        customer_key=request.customer_key,
        revision=request.revision,
        start_time=start,
        end_time=end,
        schedules=tuple(schedules),
        test_clock_id=request.test_clock_id,
    )


def check_get_subscription(request: pb.GetSubscriptionRequest) -> None:
    fields = Fields()
    fields.required("subscription_id", request.subscription_id)
    fields.done()


@dataclass(frozen=True)
class CurrencyArgs:
    currency_key: str
    revision: int
    rates: dict[str, Decimal]
    effective_time: datetime | None


def credit_currency_args(request: pb.ApplyCreditCurrencyRequest) -> CurrencyArgs:
    fields = Fields()
    fields.key("currency_key", request.currency_key)
    if request.revision <= 0:
        fields.violations.add("revision", "must be at least 1")
    rates: dict[str, Decimal] = {}
    for i, rate in enumerate(request.rates):
        key = fields.key(f"rates[{i}].feature_key", rate.feature_key)
        if key in rates:
            fields.violations.add(f"rates[{i}].feature_key", "appears more than once")
        rates[key] = fields.positive(f"rates[{i}].credits_per_unit", rate.credits_per_unit)
    fields.done()
    return CurrencyArgs(request.currency_key, request.revision, rates, time_of(request, "effective_time"))


def check_balance(request: pb.GetBalanceRequest) -> None:
    fields = Fields()
    fields.key("customer_key", request.customer_key)
    fields.key("currency_key", request.currency_key)
    fields.done()


def list_grants_page(request: pb.ListGrantsRequest) -> PageRequest:
    fields = Fields()
    fields.key("customer_key", request.customer_key)
    fields.done()
    filters = (request.customer_key, request.currency_key, request.subscription_id)
    return page_request(request.page_size, request.page_token, filters, method=_LIST_GRANTS, key=(datetime, str))


@dataclass(frozen=True)
class LedgerQuery:
    start: datetime | None
    end: datetime | None
    entry_type: str | None
    page: PageRequest


def ledger_query(request: pb.ListLedgerEntriesRequest) -> LedgerQuery:
    fields = Fields()
    fields.key("customer_key", request.customer_key)
    start, end = time_of(request, "start_time"), time_of(request, "end_time")
    if start and end and end < start:
        fields.violations.add("end_time", "must not be before start_time")
    if request.type and request.type not in ENTRY_TYPES:
        fields.violations.add("type", "unknown ledger entry type")
    fields.done()
    filters = (request.customer_key, request.currency_key, str(start), str(end), request.type)
    page = page_request(
        request.page_size, request.page_token, filters, method=_LIST_LEDGER_ENTRIES, key=(datetime, int)
    )
    entry_type = ENTRY_TYPES.get(request.type)
    return LedgerQuery(start, end, entry_type.value if entry_type else None, page)


def _event_types(fields: Fields, types) -> frozenset[EventType]:
    chosen = set()
    for i, value in enumerate(types):
        name = pb.CreditEventType.Name(value) if value in pb.CreditEventType.values() else ""
        if not value or not name:
            fields.violations.add(f"types[{i}]", "unknown credit event type", "UNKNOWN_EVENT_TYPE")
            continue
        chosen.add(EventType(name.removeprefix("CREDIT_EVENT_TYPE_")))
    return frozenset(chosen)


def list_events_query(request: pb.ListEventsRequest) -> tuple[EventFilter, PageRequest]:
    fields = Fields()
    fields.optional_key("customer_key", request.customer_key)
    fields.optional_key("currency_key", request.currency_key)
    types = _event_types(fields, request.types)
    start, end = time_of(request, "start_time"), time_of(request, "end_time")
    if start and end and end < start:
        fields.violations.add("end_time", "must not be before start_time")
    fields.done()
    where = EventFilter(request.customer_key, request.currency_key, types, start, end)
    filters = (request.customer_key, request.currency_key, sorted(t.value for t in types), str(start), str(end))
    return where, page_request(request.page_size, request.page_token, filters, method=_LIST_EVENTS, key=(int, int))


def watch_events_filter(request: pb.WatchEventsRequest) -> EventFilter:
    fields = Fields()
    fields.optional_key("customer_key", request.customer_key)
    types = _event_types(fields, request.types)
    fields.done()
    return EventFilter(customer_key=request.customer_key, types=types)


def event_pb(event: EventWithCursor) -> pb.CreditEvent:
    stored, fact = event.stored, event.stored.event
    message = pb.CreditEvent(
        event_id=fact.event_id,
        cursor=event.cursor,
        type=pb.CreditEventType.Value(f"CREDIT_EVENT_TYPE_{fact.type.value}"),
        occurred_time=to_timestamp(fact.occurred_time),
        recorded_time=to_timestamp(stored.recorded_time),
        customer_key=fact.customer_key,
        currency_key=fact.currency_key,
        test_clock_id=api_test_clock_id(fact.clock_key),
    )
    json_format.ParseDict(dict(fact.payload), getattr(message, PAYLOAD_OF[fact.type]))
    return message


def alert_key(request) -> tuple[str, str]:
    fields = Fields()
    fields.optional_key("customer_key", request.customer_key)
    fields.key("currency_key", request.currency_key)
    fields.done()
    return request.customer_key, request.currency_key


def alert_levels(request: pb.SetBalanceAlertsRequest) -> list[AlertLevel]:
    fields = Fields()
    fields.optional_key("customer_key", request.customer_key)
    fields.key("currency_key", request.currency_key)
    fields.items("levels", request.levels, at_most=MAX_LEVELS, required=False)
    levels = []
    for i, level in enumerate(request.levels):
        kind = level.WhichOneof("level")
        if kind is None:
            fields.violations.add(f"levels[{i}]", "set amount or percent")
            continue
        value = parse_amount(
            getattr(level, kind), f"levels[{i}].{kind}", fields.violations, allow_zero=True, allow_negative=True
        )
        if value is None:
            continue
        if value < 0:
            fields.violations.add(f"levels[{i}].{kind}", "must not be below zero", "NEGATIVE_THRESHOLD")
        elif kind == "percent" and value > 100:
            fields.violations.add(f"levels[{i}].percent", "must be at most 100", "PERCENT_OVER_100")
        levels.append(AlertLevel(kind, value))
    fields.done()
    return levels


def balance_alerts_pb(settings: AlertSettings) -> pb.BalanceAlerts:
    levels = settings.in_force
    if settings.own is not None:
        source = (
            pb.BALANCE_ALERTS_SOURCE_CUSTOMER if settings.customer_key else pb.BALANCE_ALERTS_SOURCE_CURRENCY_DEFAULT
        )
    elif settings.default is not None:
        source = pb.BALANCE_ALERTS_SOURCE_CURRENCY_DEFAULT
    else:
        source = pb.BALANCE_ALERTS_SOURCE_NONE
    return pb.BalanceAlerts(
        customer_key=settings.customer_key,
        currency_key=settings.currency_key,
        levels=[pb.BalanceAlertLevel(**{lv.kind: format_decimal(lv.value)}) for lv in levels or ()],
        source=source,
    )


def heartbeat_pb(beat: Heartbeat) -> pb.Heartbeat:
    return pb.Heartbeat(time=to_timestamp(beat.time), cursor=beat.cursor)


def usage_quantity(request: pb.ReportUsageRequest | pb.CheckUsageRequest) -> Decimal:
    """The quantity of a ReportUsage or CheckUsage request, its other fields checked."""
    fields = Fields()
    if isinstance(request, pb.ReportUsageRequest):
        fields.request_id("request_id", request.request_id, required=True)
    fields.key("customer_key", request.customer_key)
    fields.key("feature_key", request.feature_key)
    quantity = fields.positive("quantity", request.quantity)
    fields.optional_key("currency_key", request.currency_key)
    fields.done()
    return quantity


def check_void_grant(request: pb.VoidGrantRequest) -> None:
    fields = Fields()
    fields.required("grant_id", request.grant_id, 40)
    fields.request_id("request_id", request.request_id)
    fields.text("reason", request.reason, 1000)
    fields.done()


def create_grant_amount(request: pb.CreateGrantRequest) -> Decimal:
    fields = Fields()
    fields.request_id("request_id", request.request_id)
    fields.key("customer_key", request.customer_key)
    fields.key("currency_key", request.currency_key)
    amount = fields.positive("amount", request.amount)
    fields.text("reason", request.reason, 1000)
    fields.done()
    return amount


def create_test_clock_fields(request: pb.CreateTestClockRequest) -> Fields:
    """The checks of a CreateTestClock request, not yet raised (`done`)."""
    fields = Fields()
    if not request.HasField("frozen_time"):
        fields.violations.add("frozen_time", "is required", REQUIRED)
    fields.text("name", request.name, 200)
    fields.request_id("request_id", request.request_id)
    return fields


def check_test_clock_id(request: pb.GetTestClockRequest | pb.DeleteTestClockRequest) -> None:
    fields = Fields()
    fields.required("test_clock_id", request.test_clock_id, 40)
    if isinstance(request, pb.DeleteTestClockRequest):
        fields.request_id("request_id", request.request_id)
    fields.done()


def check_advance_test_clock(request: pb.AdvanceTestClockRequest) -> None:
    fields = Fields()
    fields.required("test_clock_id", request.test_clock_id, 40)
    if not request.HasField("frozen_time"):
        fields.violations.add("frozen_time", "is required", REQUIRED)
    fields.request_id("request_id", request.request_id)
    fields.done()


def clocks_page(request: pb.ListTestClocksRequest) -> PageRequest:
    return page_request(request.page_size, request.page_token, method=_LIST_TEST_CLOCKS, key=(datetime, str))


# ---------------------------------------------------------------------- responses


def apply_result_pb(result: ApplyResult) -> pb.ApplySubscriptionResult:
    if result.error is not None:
        return rejected_pb(result.error)
    assert result.outcome is not None
    return pb.ApplySubscriptionResult(
        outcome=result.outcome.value,
        current_revision=result.current_revision,
        clamped_changes=clamped_pb(result.clamped),
    )


def clamped_pb(changes: tuple[ClampedChange, ...]) -> list[pb.ClampedChange]:
    return [
        pb.ClampedChange(
            entitlement_key=c.entitlement_key,
            requested_time=to_timestamp(c.requested_time),
            applied_time=to_timestamp(c.applied_time),
        )
        for c in changes
    ]


def rejected_pb(error: DomainError) -> pb.ApplySubscriptionResult:
    """An item's error as ApplySubscription would have returned it (code, message, ErrorInfo, violations)."""
    return pb.ApplySubscriptionResult(
        rejection=pb.ApplyRejection(
            code=error.code,
            message=error.message,
            reason=error.reason,
            metadata=error.metadata,
            field_violations=[
                pb.ApplyFieldViolation(field=v.field, description=v.description) for v in error.violations
            ],
        )
    )


def subscription_pb(sub: Subscription) -> pb.Subscription:
    return pb.Subscription(
        subscription_id=sub.subscription_id,
        customer_key=sub.customer_key,
        revision=sub.revision,
        start_time=to_timestamp(sub.start_time),
        end_time=to_timestamp(sub.end_time),
        test_clock_id=sub.test_clock_id,
        update_time=to_timestamp(sub.update_time),
        credit_schedules=[
            pb.CreditSchedule(
                entitlement_key=s.entitlement_key,
                currency_key=s.currency_key,
                cadence=CADENCES_PB[s.cadence],
                amounts=[
                    pb.ScheduledAmount(amount=format_decimal(a.amount), effective_time=to_timestamp(a.effective_time))
                    for a in s.amounts
                ],
            )
            for s in sub.credit_schedules
        ],
    )


def balance_pb(info: BalanceInfo) -> pb.Balance:
    return pb.Balance(
        customer_key=info.customer_key,
        currency_key=info.currency_key,
        as_of_time=to_timestamp(info.as_of),
        available=format_decimal(info.available),
        grants=[grant_pb(g, info.as_of) for g in info.grants],
    )


def grant_pb(grant: Grant, at: datetime) -> pb.Grant:
    """The grant as it stands at `at` (its `used`: the debits until then)."""
    return pb.Grant(
        grant_id=grant.grant_id,
        customer_key=grant.customer_key,
        currency_key=grant.currency_key,
        source=GRANT_SOURCES_PB[grant.source],
        subscription_id=grant.subscription_id or "",
        entitlement_key=grant.entitlement_key or "",
        period_index=grant.period_index or 0,
        amount=format_decimal(grant.amount),
        used=format_decimal(grant.used),
        remaining=format_decimal(grant.remaining_at(at)),
        effective_time=to_timestamp(grant.effective_time),
        expire_time=to_timestamp(grant.expire_time),
        priority=grant.priority,
        status=GRANT_STATUSES_PB[grant.status_at(at)],
        void_time=to_timestamp(grant.void_time),
        reason=grant.reason,
    )


def entry_pb(entry: LedgerEntry) -> pb.LedgerEntry:
    return pb.LedgerEntry(
        entry_id=entry.entry_id,
        customer_key=entry.customer_key,
        currency_key=entry.currency_key,
        type=ENTRY_TYPES_PB[entry.type],
        amount=format_decimal(entry.amount),
        grant_id=entry.grant_id,
        effective_time=to_timestamp(entry.effective_time),
        usage_id=entry.usage_id or "",
        subscription_id=entry.subscription_id or "",
        description=entry.description,
    )


def fill_usage(
    message: pb.Usage, usage: Usage, debits: list[tuple[str, Decimal]], texts: DecimalTexts | None = None
) -> None:
    """Set `message` (a Usage within the answer) to `usage` and its debits."""
    text = format_decimal if texts is None else texts.__getitem__
    _fill_shared(message, usage, text)
    _fill_own(message, usage, debits, text)


def _fill_shared(message: pb.Usage, usage: Usage, text: Callable[[Decimal], str]) -> None:
    """The fields of a Usage that the usages of a batch mostly share (`add_usage_results`)."""
    message.feature_key = usage.feature_key
    message.quantity = text(usage.quantity)
    message.currency_key = usage.currency_key
    message.credits_per_unit = text(usage.credits_per_unit)
    message.credits = text(usage.credits)
    set_timestamp(message.usage_time, usage.usage_time)


def _fill_own(
    message: pb.Usage, usage: Usage, debits: list[tuple[str, Decimal]], text: Callable[[Decimal], str]
) -> None:
    """The fields of a Usage that are its own: its ids, customer, debits and balance (formatted
    directly: each usage's is another value)."""
    message.usage_id = usage.usage_id
    message.request_id = usage.request_id
    message.customer_key = usage.customer_key
    add = message.debits.add
    for grant_id, amount in debits:
        add(grant_id=grant_id, amount=text(amount))
    message.balance_after = format_decimal(usage.balance_after)


def usage_check_pb(check: UsageCheck) -> pb.CheckUsageResponse:
    return pb.CheckUsageResponse(
        allowed=check.allowed,
        currency_key=check.currency_key,
        credits_per_unit=format_decimal(check.credits_per_unit),
        credits_required=format_decimal(check.credits_required),
        available=format_decimal(check.available),
    )


def clock_pb(clock: SimulatedClock) -> pb.TestClock:
    return pb.TestClock(
        test_clock_id=clock.test_clock_id,
        name=clock.name,
        frozen_time=to_timestamp(clock.frozen_time),
        create_time=to_timestamp(clock.create_time),
    )
