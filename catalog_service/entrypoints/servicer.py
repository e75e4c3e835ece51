"""The gRPC servicer: proto in, one service-layer call, proto out. Errors are
DomainErrors raised below; the interceptor maps them to statuses."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from google.protobuf.message import Message

from catalog_service.entrypoints import converters as conv
from catalog_service.service_layer import (
    currencies,
    customers,
    features,
    handoffs,
    plans,
    provisioning,
    subscriptions,
)
from catalog_service.service_layer.context import CatalogContext
from catalog_service.service_layer.idempotency import Replayed, RequestKey, request_key
from catalog_service.v1 import catalog_service_pb2 as pb
from catalog_service.v1 import catalog_service_pb2_grpc as pb_grpc
from credit_common.errors import FieldViolation, InvalidArgument

R = TypeVar("R", bound=Message)


def _mutate(
    method: str, request: Message, response_type: type[R], call: Callable[[RequestKey | None], Any], respond
) -> R:
    """Run a mutation with the request's idempotency key: the response is
    `respond(result)`, or the stored first response on a replay."""
    key = request_key(
        method,
        request.request_id,
        conv.fingerprint(request),
        lambda result: respond(result).SerializeToString(deterministic=True),
    )
    result = call(key)
    if isinstance(result, Replayed):
        return response_type.FromString(result.response)
    return respond(result)


class CatalogServicer(pb_grpc.CatalogServiceServicer):
    def __init__(self, ctx: CatalogContext) -> None:
        self.ctx = ctx

    # ------------------------------------------------------------ features

    def CreateFeature(self, request: pb.CreateFeatureRequest, context) -> pb.CreateFeatureResponse:
        f = request.feature
        return _mutate(
            "CreateFeature",
            request,
            pb.CreateFeatureResponse,
            lambda key: features.create_feature(
                self.ctx, f.key, f.display_name, conv.FEATURE_TYPES.get(f.type), f.unit_name, key
            ),
            lambda feature: pb.CreateFeatureResponse(feature=conv.feature_pb(feature)),
        )

    def GetFeature(self, request: pb.GetFeatureRequest, context) -> pb.GetFeatureResponse:
        return pb.GetFeatureResponse(feature=conv.feature_pb(features.get_feature(self.ctx, request.key)))

    def ListFeatures(self, request: pb.ListFeaturesRequest, context) -> pb.ListFeaturesResponse:
        items, token = features.list_features(self.ctx, request.page_size, request.page_token)
        return pb.ListFeaturesResponse(features=[conv.feature_pb(f) for f in items], next_page_token=token)

    # --------------------------------------------------- credit currencies

    def CreateCreditCurrency(self, request: pb.CreateCreditCurrencyRequest, context) -> pb.CreateCreditCurrencyResponse:
        c = request.credit_currency
        return _mutate(
            "CreateCreditCurrency",
            request,
            pb.CreateCreditCurrencyResponse,
            lambda key: currencies.create_credit_currency(
                self.ctx, c.key, c.display_name, c.unit_name, conv.rates_in(c), key
            ),
            lambda currency: pb.CreateCreditCurrencyResponse(credit_currency=conv.currency_pb(currency)),
        )

    def UpdateCreditCurrency(self, request: pb.UpdateCreditCurrencyRequest, context) -> pb.UpdateCreditCurrencyResponse:
        c = request.credit_currency
        return _mutate(
            "UpdateCreditCurrency",
            request,
            pb.UpdateCreditCurrencyResponse,
            lambda key: currencies.update_credit_currency(
                self.ctx, c.key, c.display_name, c.unit_name, conv.rates_in(c), list(request.update_mask.paths), key
            ),
            lambda currency: pb.UpdateCreditCurrencyResponse(credit_currency=conv.currency_pb(currency)),
        )

    def GetCreditCurrency(self, request: pb.GetCreditCurrencyRequest, context) -> pb.GetCreditCurrencyResponse:
        return pb.GetCreditCurrencyResponse(
            credit_currency=conv.currency_pb(currencies.get_credit_currency(self.ctx, request.key))
        )

    def ListCreditCurrencies(self, request: pb.ListCreditCurrenciesRequest, context) -> pb.ListCreditCurrenciesResponse:
        items, token = currencies.list_credit_currencies(self.ctx, request.page_size, request.page_token)
        return pb.ListCreditCurrenciesResponse(
            credit_currencies=[conv.currency_pb(c) for c in items], next_page_token=token
        )

    # --------------------------------------------------------------- plans

    def CreatePlan(self, request: pb.CreatePlanRequest, context) -> pb.CreatePlanResponse:
        return _mutate(
            "CreatePlan",
            request,
            pb.CreatePlanResponse,
            lambda key: plans.create_plan(self.ctx, request.plan.key, conv.plan_spec(request.plan), key),
            lambda view: pb.CreatePlanResponse(plan=conv.plan_pb(view)),
        )

    def UpdatePlan(self, request: pb.UpdatePlanRequest, context) -> pb.UpdatePlanResponse:
        return _mutate(
            "UpdatePlan",
            request,
            pb.UpdatePlanResponse,
            lambda key: plans.update_plan(
                self.ctx, request.plan.key, conv.plan_spec(request.plan), list(request.update_mask.paths), key
            ),
            lambda view: pb.UpdatePlanResponse(plan=conv.plan_pb(view)),
        )

    def GetPlan(self, request: pb.GetPlanRequest, context) -> pb.GetPlanResponse:
        view = plans.get_plan(self.ctx, request.key, request.version, request.draft)
        return pb.GetPlanResponse(plan=conv.plan_pb(view))

    def ListPlans(self, request: pb.ListPlansRequest, context) -> pb.ListPlansResponse:
        views, token = plans.list_plans(
            self.ctx, conv.PLAN_STATUSES.get(request.status), request.page_size, request.page_token
        )
        return pb.ListPlansResponse(plans=[conv.plan_pb(v) for v in views], next_page_token=token)

    def PublishPlan(self, request: pb.PublishPlanRequest, context) -> pb.PublishPlanResponse:
        return _mutate(
            "PublishPlan",
            request,
            pb.PublishPlanResponse,
            lambda key: plans.publish_plan(self.ctx, request.key, key),
            lambda view: pb.PublishPlanResponse(plan=conv.plan_pb(view)),
        )

    def ArchivePlan(self, request: pb.ArchivePlanRequest, context) -> pb.ArchivePlanResponse:
        return _mutate(
            "ArchivePlan",
            request,
            pb.ArchivePlanResponse,
            lambda key: plans.archive_plan(self.ctx, request.key, key),
            lambda view: pb.ArchivePlanResponse(plan=conv.plan_pb(view)),
        )

    # ----------------------------------------------------------- customers

    def CreateCustomer(self, request: pb.CreateCustomerRequest, context) -> pb.CreateCustomerResponse:
        c = request.customer
        return _mutate(
            "CreateCustomer",
            request,
            pb.CreateCustomerResponse,
            lambda key: customers.create_customer(self.ctx, c.key, c.display_name, c.test_clock_id, key),
            lambda customer: pb.CreateCustomerResponse(customer=conv.customer_pb(customer)),
        )

    def GetCustomer(self, request: pb.GetCustomerRequest, context) -> pb.GetCustomerResponse:
        return pb.GetCustomerResponse(customer=conv.customer_pb(customers.get_customer(self.ctx, request.key)))

    def ListCustomers(self, request: pb.ListCustomersRequest, context) -> pb.ListCustomersResponse:
        items, token = customers.list_customers(self.ctx, request.page_size, request.page_token)
        return pb.ListCustomersResponse(customers=[conv.customer_pb(c) for c in items], next_page_token=token)

    # ------------------------------------------------------- subscriptions

    def ProvisionSubscription(
        self, request: pb.ProvisionSubscriptionRequest, context
    ) -> pb.ProvisionSubscriptionResponse:
        return _mutate(
            "ProvisionSubscription",
            request,
            pb.ProvisionSubscriptionResponse,
            lambda key: provisioning.provision_subscription(self.ctx, conv.provision_request(request), key),
            lambda view: pb.ProvisionSubscriptionResponse(subscription=conv.subscription_pb(view)),
        )

    def GetSubscription(self, request: pb.GetSubscriptionRequest, context) -> pb.GetSubscriptionResponse:
        view = subscriptions.get_subscription(self.ctx, request.subscription_id)
        return pb.GetSubscriptionResponse(subscription=conv.subscription_pb(view))

    def ListSubscriptions(self, request: pb.ListSubscriptionsRequest, context) -> pb.ListSubscriptionsResponse:
        views, token = subscriptions.list_subscriptions(
            self.ctx, request.customer_key, request.plan_key, request.page_size, request.page_token
        )
        return pb.ListSubscriptionsResponse(
            subscriptions=[conv.subscription_pb(v) for v in views], next_page_token=token
        )

    def CancelSubscription(self, request: pb.CancelSubscriptionRequest, context) -> pb.CancelSubscriptionResponse:
        return _mutate(
            "CancelSubscription",
            request,
            pb.CancelSubscriptionResponse,
            lambda key: subscriptions.cancel_subscription(
                self.ctx, request.subscription_id, conv.CANCEL_MODES.get(request.mode), key
            ),
            lambda view: pb.CancelSubscriptionResponse(subscription=conv.subscription_pb(view)),
        )

    def AmendSubscription(self, request: pb.AmendSubscriptionRequest, context) -> pb.AmendSubscriptionResponse:
        timing = conv.AMENDMENT_TIMINGS.get(request.timing)
        if timing is None:
            raise InvalidArgument(
                "timing is not a known AmendmentTiming",
                violations=[FieldViolation("timing", f"unknown value {request.timing}")],
            )
        return _mutate(
            "AmendSubscription",
            request,
            pb.AmendSubscriptionResponse,
            lambda key: subscriptions.amend_subscription(
                self.ctx, request.subscription_id, dict(request.entitlement_values), timing, key
            ),
            lambda view: pb.AmendSubscriptionResponse(subscription=conv.subscription_pb(view)),
        )

    # ------------------------------------------------ handoffs (operators)

    def ListHandoffs(self, request: pb.ListHandoffsRequest, context) -> pb.ListHandoffsResponse:
        status = _enum_in(conv.OUTBOX_STATUSES, request.status, "status")
        kind = _enum_in(conv.HANDOFF_KINDS, request.kind, "kind")
        items, token = handoffs.list_handoffs(
            self.ctx, status, kind, request.key, request.page_size, request.page_token
        )
        return pb.ListHandoffsResponse(handoffs=[conv.handoff_entry_pb(e) for e in items], next_page_token=token)

    def RequeueHandoffs(self, request: pb.RequeueHandoffsRequest, context) -> pb.RequeueHandoffsResponse:
        kind = _enum_in(conv.HANDOFF_KINDS, request.kind, "kind")
        return _mutate(
            "RequeueHandoffs",
            request,
            pb.RequeueHandoffsResponse,
            lambda key: handoffs.requeue_handoffs(self.ctx, kind, request.key, request.all_parked, key),
            lambda count: pb.RequeueHandoffsResponse(requeued_count=count),
        )


def _enum_in(table: dict[int, str], value: int, field: str) -> str | None:
    """The domain value of an enum field used as a filter or choice: None for UNSPECIFIED (0)."""
    if value == 0:
        return None
    if value not in table:
        raise InvalidArgument(
            f"{field} is not a known value", violations=[FieldViolation(field, f"unknown value {value}")]
        )
    return table[value]
