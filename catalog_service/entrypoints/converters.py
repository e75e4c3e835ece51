"""Conversions between catalog_service.v1 messages and domain objects."""

from __future__ import annotations

import hashlib

from google.protobuf.message import Message

from catalog_service.domain.model import (
    AmendmentTiming,
    Cadence,
    CancelMode,
    CreditCurrency,
    Customer,
    Feature,
    FeatureType,
    PlanStatus,
    PlanView,
    SubscriptionStatus,
    VariableValue,
)
from catalog_service.domain.outbox import (
    KIND_CREDIT_CURRENCY,
    KIND_SUBSCRIPTION,
    STATUS_DELIVERED,
    STATUS_FAILED,
    STATUS_PENDING,
    HandoffState,
    HandoffStatus,
    OutboxEntry,
)
from catalog_service.domain.plans import CreditEntitlementSpec, FeatureEntitlementSpec, PlanSpec, VariableSpec
from catalog_service.service_layer.provisioning import ProvisionRequest
from catalog_service.service_layer.subscriptions import SubscriptionView
from catalog_service.v1 import catalog_service_pb2 as pb
from credit_common.decimals import format_decimal
from credit_common.grpc.timestamps import from_timestamp, to_timestamp

FEATURE_TYPES = {pb.FEATURE_TYPE_METERED: FeatureType.METERED, pb.FEATURE_TYPE_BOOLEAN: FeatureType.BOOLEAN}
FEATURE_TYPES_PB = {v: k for k, v in FEATURE_TYPES.items()}
CADENCES = {pb.CADENCE_MONTHLY: Cadence.MONTHLY, pb.CADENCE_YEARLY: Cadence.YEARLY}
CADENCES_PB = {v: k for k, v in CADENCES.items()}
PLAN_STATUSES = {
    pb.PLAN_STATUS_DRAFT: PlanStatus.DRAFT,
    pb.PLAN_STATUS_PUBLISHED: PlanStatus.PUBLISHED,
    pb.PLAN_STATUS_ARCHIVED: PlanStatus.ARCHIVED,
}
PLAN_STATUSES_PB = {v: k for k, v in PLAN_STATUSES.items()}
CANCEL_MODES = {
    pb.CANCEL_MODE_IMMEDIATELY: CancelMode.IMMEDIATELY,
    pb.CANCEL_MODE_AT_PERIOD_END: CancelMode.AT_PERIOD_END,
}
CANCEL_MODES_PB = {v: k for k, v in CANCEL_MODES.items()}
AMENDMENT_TIMINGS = {
    pb.AMENDMENT_TIMING_UNSPECIFIED: AmendmentTiming.NEXT_PERIOD,
    pb.AMENDMENT_TIMING_NEXT_PERIOD: AmendmentTiming.NEXT_PERIOD,
    pb.AMENDMENT_TIMING_IMMEDIATELY: AmendmentTiming.IMMEDIATELY,
}
HANDOFF_STATUSES_PB = {
    HandoffStatus.NONE: pb.HANDOFF_STATUS_UNSPECIFIED,
    HandoffStatus.PENDING: pb.HANDOFF_STATUS_PENDING,
    HandoffStatus.DELIVERED: pb.HANDOFF_STATUS_DELIVERED,
    HandoffStatus.FAILED: pb.HANDOFF_STATUS_FAILED,
}
SUBSCRIPTION_STATUSES_PB = {
    SubscriptionStatus.ACTIVE: pb.SUBSCRIPTION_STATUS_ACTIVE,
    SubscriptionStatus.ENDED: pb.SUBSCRIPTION_STATUS_ENDED,
}


def fingerprint(request: Message) -> str:
    """What identifies a request's payload for idempotency: everything but its request_id."""
    copy = type(request)()
    copy.CopyFrom(request)
    copy.ClearField("request_id")
    return hashlib.sha256(copy.SerializeToString(deterministic=True)).hexdigest()


def _dec(value) -> str:
    return "" if value is None else format_decimal(value)


# ----------------------------------------------------------------- features


def feature_pb(f: Feature) -> pb.Feature:
    return pb.Feature(
        key=f.key,
        display_name=f.display_name,
        type=FEATURE_TYPES_PB[f.type],
        unit_name=f.unit_name,
        create_time=to_timestamp(f.create_time),
    )


def rates_in(message: pb.CreditCurrency) -> list[tuple[str, str]]:
    return [(r.feature_key, r.credits_per_unit) for r in message.rates]


def currency_pb(c: CreditCurrency) -> pb.CreditCurrency:
    return pb.CreditCurrency(
        key=c.key,
        display_name=c.display_name,
        unit_name=c.unit_name,
        rates=[
            pb.CreditRate(feature_key=r.feature_key, credits_per_unit=format_decimal(r.credits_per_unit))
            for r in c.rates
        ],
        revision=c.revision,
        create_time=to_timestamp(c.create_time),
        update_time=to_timestamp(c.update_time),
    )


# -------------------------------------------------------------------- plans


def _variable_in(v: pb.VariableValue) -> VariableSpec:
    return VariableSpec(min=v.min, max=v.max, default_value=v.default_value)


def provision_request(request: pb.ProvisionSubscriptionRequest) -> ProvisionRequest:
    return ProvisionRequest(
        customer_key=request.customer_key,
        plan_key=request.plan_key,
        plan_version=request.plan_version,
        values=dict(request.entitlement_values),
        start_time=from_timestamp(request, "start_time"),
        end_time=from_timestamp(request, "end_time"),
        test_clock_id=request.test_clock_id,
    )


def plan_spec(p: pb.Plan) -> PlanSpec:
    credits = []
    for e in p.credit_entitlements:
        which = e.WhichOneof("amount")
        credits.append(
            CreditEntitlementSpec(
                key=e.key,
                currency_key=e.currency_key,
                cadence=CADENCES.get(e.cadence),
                fixed_amount=e.fixed_amount if which == "fixed_amount" else None,
                variable=_variable_in(e.variable_amount) if which == "variable_amount" else None,
            )
        )
    features = []
    for e in p.feature_entitlements:
        which = e.WhichOneof("value")
        features.append(
            FeatureEntitlementSpec(
                key=e.key,
                feature_key=e.feature_key,
                access=e.access if which == "access" else None,
                fixed_limit=e.fixed_limit if which == "fixed_limit" else None,
                variable=_variable_in(e.variable_limit) if which == "variable_limit" else None,
            )
        )
    return PlanSpec(p.display_name, p.description, p.custom, tuple(credits), tuple(features))


def _variable_pb(v: VariableValue) -> pb.VariableValue:
    return pb.VariableValue(min=_dec(v.min), max=_dec(v.max), default_value=_dec(v.default))


def plan_pb(view: PlanView) -> pb.Plan:
    plan, content = view.plan, view.content
    message = pb.Plan(
        key=plan.key,
        display_name=content.display_name,
        description=content.description,
        custom=content.custom,
        status=PLAN_STATUSES_PB[plan.status],
        version=view.version,
        latest_version=plan.latest_version,
        create_time=to_timestamp(plan.create_time),
        update_time=to_timestamp(plan.update_time),
        publish_time=to_timestamp(view.publish_time),
        archive_time=to_timestamp(plan.archive_time),
    )
    for e in content.credit_entitlements:
        entry = message.credit_entitlements.add(key=e.key, currency_key=e.currency_key, cadence=CADENCES_PB[e.cadence])
        if e.variable is not None:
            entry.variable_amount.CopyFrom(_variable_pb(e.variable))
        else:
            entry.fixed_amount = _dec(e.fixed_amount)
    for e in content.feature_entitlements:
        entry = message.feature_entitlements.add(key=e.key, feature_key=e.feature_key)
        if e.access is not None:
            entry.access = e.access
        elif e.variable is not None:
            entry.variable_limit.CopyFrom(_variable_pb(e.variable))
        else:
            entry.fixed_limit = _dec(e.fixed_limit)
    return message


# --------------------------------------------------------------- customers


def customer_pb(c: Customer) -> pb.Customer:
    return pb.Customer(
        key=c.key,
        display_name=c.display_name,
        test_clock_id=c.test_clock_id or "",
        create_time=to_timestamp(c.create_time),
    )


def handoff_pb(state: HandoffState) -> pb.HandoffState:
    pending = state.status is HandoffStatus.PENDING
    return pb.HandoffState(
        status=HANDOFF_STATUSES_PB[state.status],
        delivered_revision=state.latest_delivered_revision or 0,
        failure_reason=(state.reason or "") if state.status is not HandoffStatus.DELIVERED else "",
        attempts=state.attempts,
        next_attempt_time=to_timestamp(state.next_attempt_at) if pending else None,
        late_changes=[
            pb.LateChange(
                revision=c.revision,
                entitlement_key=c.entitlement_key,
                requested_time=to_timestamp(c.requested_time),
                applied_time=to_timestamp(c.applied_time),
            )
            for c in state.late_changes
        ],
    )


def subscription_pb(view: SubscriptionView) -> pb.Subscription:
    s = view.subscription
    message = pb.Subscription(
        subscription_id=s.subscription_id,
        customer_key=s.customer_key,
        plan_key=s.plan_key,
        plan_version=s.plan_version,
        start_time=to_timestamp(s.start_time),
        end_time=to_timestamp(s.end_time),
        status=SUBSCRIPTION_STATUSES_PB[view.status],
        credit_entitlements=[
            pb.ResolvedCreditEntitlement(
                key=e.key,
                currency_key=e.currency_key,
                cadence=CADENCES_PB[e.cadence],
                amount=format_decimal(e.amount_at(view.now)),
                negotiated=e.negotiated,
                amount_history=[
                    pb.AmountChange(amount=format_decimal(c.amount), effective_time=to_timestamp(c.effective_time))
                    for c in e.history(s.start_time)
                ],
            )
            for e in s.credit_entitlements
        ],
        test_clock_id=s.test_clock_id or "",
        revision=s.revision,
        create_time=to_timestamp(s.create_time),
        handoff=handoff_pb(view.handoff),
        cancel_time=to_timestamp(s.cancel_time),
        cancel_mode=CANCEL_MODES_PB[s.cancel_mode] if s.cancel_mode else pb.CANCEL_MODE_UNSPECIFIED,
    )
    for e in s.feature_entitlements:
        entry = message.feature_entitlements.add(key=e.key, feature_key=e.feature_key, negotiated=e.negotiated)
        if e.access is not None:
            entry.access = e.access
        else:
            entry.limit = _dec(e.limit)
    return message


# ----------------------------------------------------------------- handoffs

OUTBOX_STATUSES = {
    pb.HANDOFF_STATUS_PENDING: STATUS_PENDING,
    pb.HANDOFF_STATUS_DELIVERED: STATUS_DELIVERED,
    pb.HANDOFF_STATUS_FAILED: STATUS_FAILED,
}
OUTBOX_STATUSES_PB = {v: k for k, v in OUTBOX_STATUSES.items()}
HANDOFF_KINDS = {
    pb.HANDOFF_KIND_SUBSCRIPTION: KIND_SUBSCRIPTION,
    pb.HANDOFF_KIND_CREDIT_CURRENCY: KIND_CREDIT_CURRENCY,
}
HANDOFF_KINDS_PB = {v: k for k, v in HANDOFF_KINDS.items()}


def handoff_entry_pb(e: OutboxEntry) -> pb.Handoff:
    return pb.Handoff(
        handoff_id=e.id,
        kind=HANDOFF_KINDS_PB.get(e.kind, pb.HANDOFF_KIND_UNSPECIFIED),
        key=e.aggregate_key,
        revision=e.revision,
        status=OUTBOX_STATUSES_PB.get(e.status, pb.HANDOFF_STATUS_UNSPECIFIED),
        attempts=e.attempts,
        last_error=e.last_error or "",
        next_attempt_time=to_timestamp(e.next_attempt_at) if e.status == STATUS_PENDING else None,
        create_time=to_timestamp(e.created_at),
        deliver_time=to_timestamp(e.delivered_at),
    )
