"""The gRPC servicer: validates each request, converts it to plain values, calls
the service layer, converts the result back. No business rules here."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from credit_common.decimals import DecimalFormatError, format_decimal, parse_decimal
from credit_common.errors import DomainError, Violations
from credit_common.grpc.timestamps import from_timestamp, to_timestamp
from credit_common.ids import KEY_RULE, REQUEST_ID_MAX_LENGTH, is_valid_key
from credit_common.pagination import page_request
from credit_common.periods import Cadence
from grant_service.adapters.orm import REAL_TIME, ClockRow, GrantRow, LedgerEntryRow
from grant_service.adapters.repository import decode_amounts
from grant_service.domain.schedules import ScheduledAmount, first_period_fits
from grant_service.service_layer import balances, operators, subscriptions, test_clocks, usage
from grant_service.service_layer.balances import GrantInfo
from grant_service.service_layer.context import GrantContext
from grant_service.v1 import grant_service_pb2 as pb
from grant_service.v1 import grant_service_pb2_grpc

_CADENCES = {pb.CADENCE_MONTHLY: Cadence.MONTHLY, pb.CADENCE_YEARLY: Cadence.YEARLY}
_CADENCE_PB = {v: k for k, v in _CADENCES.items()}
_ENTRY_TYPES = {
    pb.LEDGER_ENTRY_TYPE_GRANT: "GRANT",
    pb.LEDGER_ENTRY_TYPE_DEBIT: "DEBIT",
    pb.LEDGER_ENTRY_TYPE_EXPIRE: "EXPIRE",
    pb.LEDGER_ENTRY_TYPE_VOID: "VOID",
    pb.LEDGER_ENTRY_TYPE_ADJUST: "ADJUST",
}
_ENTRY_TYPE_PB = {v: k for k, v in _ENTRY_TYPES.items()}


class _Fields:
    """Field checks that collect every problem of a request before failing."""

    def __init__(self) -> None:
        self.violations = Violations()

    def key(self, field: str, value: str) -> str:
        if not value:
            self.violations.add(field, "is required")
        elif not is_valid_key(value):
            self.violations.add(field, KEY_RULE)
        return value

    def required(self, field: str, value: str, max_length: int = 128) -> str:
        if not value:
            self.violations.add(field, "is required")
        elif len(value) > max_length:
            self.violations.add(field, f"must be at most {max_length} characters")
        return value

    def request_id(self, field: str, value: str, *, required: bool = False) -> str:
        if required and not value:
            self.violations.add(field, "is required")
        elif len(value) > REQUEST_ID_MAX_LENGTH:
            self.violations.add(field, f"must be at most {REQUEST_ID_MAX_LENGTH} characters")
        return value

    def positive(self, field: str, value: str) -> Decimal:
        try:
            return parse_decimal(value, allow_zero=False)
        except DecimalFormatError as error:
            self.violations.add(field, str(error))
            return Decimal(1)

    def done(self) -> None:
        self.violations.raise_if_any()


def _time(message, field: str) -> datetime | None:
    return from_timestamp(message, field)


class GrantServicer(grant_service_pb2_grpc.GrantServiceServicer):
    def __init__(self, ctx: GrantContext) -> None:
        self._ctx = ctx

    # ------------------------------------------------------------------ subscriptions

    def ApplySubscription(self, request: pb.ApplySubscriptionRequest, context) -> pb.ApplySubscriptionResponse:
        spec = _subscription_spec(request)
        result = subscriptions.apply_subscription(self._ctx, spec)
        assert result.outcome is not None
        return pb.ApplySubscriptionResponse(
            outcome=result.outcome.value,
            current_revision=result.current_revision,
            clamped_changes=_clamped(result.clamped),
        )

    def ApplySubscriptions(self, request: pb.ApplySubscriptionsRequest, context) -> pb.ApplySubscriptionsResponse:
        fields = _Fields()
        if not request.requests:
            fields.violations.add("requests", "must have at least one item")
        elif len(request.requests) > APPLY_BATCH_MAX:
            fields.violations.add("requests", f"must have at most {APPLY_BATCH_MAX} items")
        fields.done()
        # Each item is validated alone: an invalid one is rejected, the others are applied.
        results: list[pb.ApplySubscriptionResult | None] = []
        specs: list[subscriptions.SubscriptionSpec] = []
        for item in request.requests:
            try:
                specs.append(_subscription_spec(item))
                results.append(None)
            except DomainError as error:
                results.append(_rejected(error))
        applied = iter(subscriptions.apply_subscriptions(self._ctx, specs))
        return pb.ApplySubscriptionsResponse(
            results=[result if result is not None else _apply_result(next(applied)) for result in results]
        )

    def GetSubscription(self, request: pb.GetSubscriptionRequest, context) -> pb.GetSubscriptionResponse:
        fields = _Fields()
        fields.required("subscription_id", request.subscription_id)
        fields.done()
        view = subscriptions.get_subscription(self._ctx, request.subscription_id)
        sub = view.row
        return pb.GetSubscriptionResponse(
            subscription=pb.Subscription(
                subscription_id=sub.subscription_id,
                customer_key=sub.customer_key,
                revision=sub.revision,
                start_time=to_timestamp(sub.start_time),
                end_time=to_timestamp(sub.end_time),
                test_clock_id=sub.clock_key if sub.clock_key != REAL_TIME else "",
                update_time=to_timestamp(sub.update_time),
                credit_schedules=[
                    pb.CreditSchedule(
                        entitlement_key=row.entitlement_key,
                        currency_key=row.currency_key,
                        cadence=_CADENCE_PB[Cadence(row.cadence)],
                        amounts=[
                            pb.ScheduledAmount(
                                amount=format_decimal(a.amount), effective_time=to_timestamp(a.effective_time)
                            )
                            for a in decode_amounts(row.amounts)
                        ],
                    )
                    for row in view.schedules
                ],
            )
        )

    def ApplyCreditCurrency(self, request: pb.ApplyCreditCurrencyRequest, context) -> pb.ApplyCreditCurrencyResponse:
        fields = _Fields()
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
        outcome, current = subscriptions.apply_credit_currency(
            self._ctx, request.currency_key, request.revision, rates, _time(request, "effective_time")
        )
        return pb.ApplyCreditCurrencyResponse(outcome=outcome.value, current_revision=current)

    # ------------------------------------------------------------------ balances

    def GetBalance(self, request: pb.GetBalanceRequest, context) -> pb.GetBalanceResponse:
        fields = _Fields()
        fields.key("customer_key", request.customer_key)
        fields.key("currency_key", request.currency_key)
        fields.done()
        info = balances.get_balance(
            self._ctx,
            request.customer_key,
            request.currency_key,
            _time(request, "as_of_time"),
            request.view == pb.BALANCE_VIEW_WITH_GRANTS,
        )
        return pb.GetBalanceResponse(
            balance=pb.Balance(
                customer_key=info.customer_key,
                currency_key=info.currency_key,
                as_of_time=to_timestamp(info.as_of),
                available=format_decimal(info.available),
                grants=[_grant(g) for g in info.grants],
            )
        )

    def ListGrants(self, request: pb.ListGrantsRequest, context) -> pb.ListGrantsResponse:
        fields = _Fields()
        fields.key("customer_key", request.customer_key)
        fields.done()
        filters = (request.customer_key, request.currency_key, request.subscription_id)
        page = page_request(request.page_size, request.page_token, filters)
        infos, token = balances.list_grants(
            self._ctx, request.customer_key, request.currency_key, request.subscription_id, page, filters
        )
        return pb.ListGrantsResponse(grants=[_grant(g) for g in infos], next_page_token=token)

    def ListLedgerEntries(self, request: pb.ListLedgerEntriesRequest, context) -> pb.ListLedgerEntriesResponse:
        fields = _Fields()
        fields.key("customer_key", request.customer_key)
        start, end = _time(request, "start_time"), _time(request, "end_time")
        if start and end and end < start:
            fields.violations.add("end_time", "must not be before start_time")
        if request.type and request.type not in _ENTRY_TYPES:
            fields.violations.add("type", "unknown ledger entry type")
        fields.done()
        filters = (request.customer_key, request.currency_key, str(start), str(end), request.type)
        page = page_request(request.page_size, request.page_token, filters)
        rows, token = balances.list_ledger_entries(
            self._ctx,
            request.customer_key,
            request.currency_key,
            start,
            end,
            _ENTRY_TYPES.get(request.type),
            page,
            filters,
        )
        return pb.ListLedgerEntriesResponse(entries=[_entry(r) for r in rows], next_page_token=token)

    # ------------------------------------------------------------------ usage

    def ReportUsage(self, request: pb.ReportUsageRequest, context) -> pb.ReportUsageResponse:
        fields = _Fields()
        fields.request_id("request_id", request.request_id, required=True)
        fields.key("customer_key", request.customer_key)
        fields.key("feature_key", request.feature_key)
        quantity = fields.positive("quantity", request.quantity)
        if request.currency_key:
            fields.key("currency_key", request.currency_key)
        fields.done()
        result = usage.report_usage(
            self._ctx, request.request_id, request.customer_key, request.feature_key, quantity, request.currency_key
        )
        u = result.usage
        return pb.ReportUsageResponse(
            usage=pb.Usage(
                usage_id=u.usage_id,
                request_id=u.request_id,
                customer_key=u.customer_key,
                feature_key=u.feature_key,
                quantity=format_decimal(u.quantity),
                currency_key=u.currency_key,
                credits_per_unit=format_decimal(u.credits_per_unit),
                credits=format_decimal(u.credits),
                usage_time=to_timestamp(u.usage_time),
                debits=[pb.Debit(grant_id=g, amount=format_decimal(a)) for g, a in result.debits],
                balance_after=format_decimal(u.balance_after),
            )
        )

    def CheckUsage(self, request: pb.CheckUsageRequest, context) -> pb.CheckUsageResponse:
        fields = _Fields()
        fields.key("customer_key", request.customer_key)
        fields.key("feature_key", request.feature_key)
        quantity = fields.positive("quantity", request.quantity)
        if request.currency_key:
            fields.key("currency_key", request.currency_key)
        fields.done()
        check = usage.check_usage(self._ctx, request.customer_key, request.feature_key, quantity, request.currency_key)
        return pb.CheckUsageResponse(
            allowed=check.allowed,
            currency_key=check.currency_key,
            credits_per_unit=format_decimal(check.credits_per_unit),
            credits_required=format_decimal(check.credits_required),
            available=format_decimal(check.available),
        )

    # ------------------------------------------------------------------ operators

    def VoidGrant(self, request: pb.VoidGrantRequest, context) -> pb.VoidGrantResponse:
        fields = _Fields()
        fields.required("grant_id", request.grant_id, 40)
        fields.request_id("request_id", request.request_id)
        if len(request.reason) > 1000:
            fields.violations.add("reason", "must be at most 1000 characters")
        fields.done()
        info = operators.void_grant(self._ctx, request.grant_id, request.reason, request.request_id)
        return pb.VoidGrantResponse(grant=_grant(info))

    def CreateGrant(self, request: pb.CreateGrantRequest, context) -> pb.CreateGrantResponse:
        fields = _Fields()
        fields.request_id("request_id", request.request_id)
        fields.key("customer_key", request.customer_key)
        fields.key("currency_key", request.currency_key)
        amount = fields.positive("amount", request.amount)
        if len(request.reason) > 1000:
            fields.violations.add("reason", "must be at most 1000 characters")
        fields.done()
        info = operators.create_grant(
            self._ctx,
            request.request_id,
            request.customer_key,
            request.currency_key,
            amount,
            _time(request, "effective_time"),
            _time(request, "expire_time"),
            request.priority if request.HasField("priority") else None,
            request.reason,
        )
        return pb.CreateGrantResponse(grant=_grant(info))

    # ------------------------------------------------------------------ test clocks

    def CreateTestClock(self, request: pb.CreateTestClockRequest, context) -> pb.CreateTestClockResponse:
        fields = _Fields()
        if not request.HasField("frozen_time"):
            fields.violations.add("frozen_time", "is required")
        if len(request.name) > 200:
            fields.violations.add("name", "must be at most 200 characters")
        fields.request_id("request_id", request.request_id)
        test_clocks.require_test_clocks(self._ctx)
        fields.done()
        row = test_clocks.create_test_clock(self._ctx, request.name, _time(request, "frozen_time"), request.request_id)
        return pb.CreateTestClockResponse(test_clock=_clock(row))

    def GetTestClock(self, request: pb.GetTestClockRequest, context) -> pb.GetTestClockResponse:
        test_clocks.require_test_clocks(self._ctx)
        fields = _Fields()
        fields.required("test_clock_id", request.test_clock_id, 40)
        fields.done()
        return pb.GetTestClockResponse(test_clock=_clock(test_clocks.get_test_clock(self._ctx, request.test_clock_id)))

    def ListTestClocks(self, request: pb.ListTestClocksRequest, context) -> pb.ListTestClocksResponse:
        test_clocks.require_test_clocks(self._ctx)
        rows, token = test_clocks.list_test_clocks(self._ctx, page_request(request.page_size, request.page_token))
        return pb.ListTestClocksResponse(test_clocks=[_clock(r) for r in rows], next_page_token=token)

    def AdvanceTestClock(self, request: pb.AdvanceTestClockRequest, context) -> pb.AdvanceTestClockResponse:
        test_clocks.require_test_clocks(self._ctx)
        fields = _Fields()
        fields.required("test_clock_id", request.test_clock_id, 40)
        if not request.HasField("frozen_time"):
            fields.violations.add("frozen_time", "is required")
        fields.request_id("request_id", request.request_id)
        fields.done()
        row = test_clocks.advance_test_clock(
            self._ctx, request.test_clock_id, _time(request, "frozen_time"), request.request_id
        )
        return pb.AdvanceTestClockResponse(test_clock=_clock(row))

    def DeleteTestClock(self, request: pb.DeleteTestClockRequest, context) -> pb.DeleteTestClockResponse:
        test_clocks.require_test_clocks(self._ctx)
        fields = _Fields()
        fields.required("test_clock_id", request.test_clock_id, 40)
        fields.request_id("request_id", request.request_id)
        fields.done()
        test_clocks.delete_test_clock(self._ctx, request.test_clock_id, request.request_id)
        return pb.DeleteTestClockResponse()


# ---------------------------------------------------------------------- conversions


APPLY_BATCH_MAX = 500  # items of one ApplySubscriptions call


def _apply_result(result: subscriptions.ApplyResult) -> pb.ApplySubscriptionResult:
    if result.error is not None:
        return _rejected(result.error)
    assert result.outcome is not None
    return pb.ApplySubscriptionResult(
        outcome=result.outcome.value,
        current_revision=result.current_revision,
        clamped_changes=_clamped(result.clamped),
    )


def _clamped(changes: tuple[subscriptions.ClampedChange, ...]) -> list[pb.ClampedChange]:
    return [
        pb.ClampedChange(
            entitlement_key=c.entitlement_key,
            requested_time=to_timestamp(c.requested_time),
            applied_time=to_timestamp(c.applied_time),
        )
        for c in changes
    ]


def _rejected(error: DomainError) -> pb.ApplySubscriptionResult:
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


def _subscription_spec(request: pb.ApplySubscriptionRequest) -> subscriptions.SubscriptionSpec:
    fields = _Fields()
    fields.required("subscription_id", request.subscription_id, 64)
    fields.key("customer_key", request.customer_key)
    if request.revision <= 0:
        fields.violations.add("revision", "must be at least 1")
    start, end = _time(request, "start_time"), _time(request, "end_time")
    if start is None:
        fields.violations.add("start_time", "is required")
    if start is not None and end is not None and end < start:
        fields.violations.add("end_time", "must not be before start_time")
    if len(request.test_clock_id) > 40:
        fields.violations.add("test_clock_id", "must be at most 40 characters")
    schedules = []
    seen: set[str] = set()
    for i, schedule in enumerate(request.credit_schedules):
        path = f"credit_schedules[{i}]"
        key = fields.key(f"{path}.entitlement_key", schedule.entitlement_key)
        if key in seen:
            fields.violations.add(f"{path}.entitlement_key", "appears more than once")
        seen.add(key)
        fields.key(f"{path}.currency_key", schedule.currency_key)
        cadence = _CADENCES.get(schedule.cadence)
        if cadence is None:
            fields.violations.add(f"{path}.cadence", "must be CADENCE_MONTHLY or CADENCE_YEARLY")
        elif start is not None and not first_period_fits(start, cadence):
            fields.violations.add("start_time", f"the first {cadence.value.lower()} period must end before year 10000")
        if not schedule.amounts:
            fields.violations.add(f"{path}.amounts", "must have at least one amount")
        amounts: list[ScheduledAmount] = []
        for j, scheduled in enumerate(schedule.amounts):
            amount = fields.positive(f"{path}.amounts[{j}].amount", scheduled.amount)
            effective = _time(scheduled, "effective_time") or start
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
            schedules.append(subscriptions.ScheduleSpec(key, schedule.currency_key, cadence, tuple(amounts)))
    fields.done()
    return subscriptions.SubscriptionSpec(
        subscription_id=request.subscription_id,
        customer_key=request.customer_key,
        revision=request.revision,
        start_time=start,
        end_time=end,
        schedules=tuple(schedules),
        test_clock_id=request.test_clock_id,
    )


_STATUS_PB = {
    balances.GrantStatus.PENDING: pb.GRANT_STATUS_PENDING,
    balances.GrantStatus.ACTIVE: pb.GRANT_STATUS_ACTIVE,
    balances.GrantStatus.EXPIRED: pb.GRANT_STATUS_EXPIRED,
    balances.GrantStatus.VOIDED: pb.GRANT_STATUS_VOIDED,
}


def _grant(info: GrantInfo) -> pb.Grant:
    row: GrantRow = info.row
    return pb.Grant(
        grant_id=row.grant_id,
        customer_key=row.customer_key,
        currency_key=row.currency_key,
        source=pb.GRANT_SOURCE_RECURRING if row.source == "RECURRING" else pb.GRANT_SOURCE_ONE_OFF,
        subscription_id=row.subscription_id or "",
        entitlement_key=row.entitlement_key or "",
        period_index=row.period_index or 0,
        amount=format_decimal(row.amount),
        used=format_decimal(info.used),
        remaining=format_decimal(info.remaining),
        effective_time=to_timestamp(row.effective_time),
        expire_time=to_timestamp(row.expire_time),
        priority=row.priority,
        status=_STATUS_PB[info.status],
        void_time=to_timestamp(row.void_time),
        reason=row.reason,
    )


def _entry(row: LedgerEntryRow) -> pb.LedgerEntry:
    return pb.LedgerEntry(
        entry_id=row.entry_id,
        customer_key=row.customer_key,
        currency_key=row.currency_key,
        type=_ENTRY_TYPE_PB[row.type],
        amount=format_decimal(row.amount),
        grant_id=row.grant_id,
        effective_time=to_timestamp(row.effective_time),
        usage_id=row.usage_id or "",
        subscription_id=row.subscription_id or "",
        description=row.description,
    )


def _clock(row: ClockRow) -> pb.TestClock:
    return pb.TestClock(
        test_clock_id=row.test_clock_id,
        name=row.name,
        frozen_time=to_timestamp(row.frozen_time),
        create_time=to_timestamp(row.create_time),
    )
