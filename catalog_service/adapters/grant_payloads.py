"""The one place that turns catalog changes into grant_service.v1 requests
(the payloads of the outbox): ApplySubscriptionRequest and
ApplyCreditCurrencyRequest."""

from __future__ import annotations

from catalog_service.domain.model import Cadence, CreditCurrency, Subscription
from credit_common.decimals import format_decimal
from credit_common.grpc.timestamps import to_timestamp
from grant_service.v1 import grant_service_pb2 as grant_pb2

_CADENCES = {Cadence.MONTHLY: grant_pb2.CADENCE_MONTHLY, Cadence.YEARLY: grant_pb2.CADENCE_YEARLY}


def apply_subscription_request(subscription: Subscription) -> grant_pb2.ApplySubscriptionRequest:
    """The complete state of the subscription's current revision: one credit
    schedule per credit entitlement with its full amount history (the
    provisioned amount from the start, then every amendment), and the end time
    a cancel set."""
    return grant_pb2.ApplySubscriptionRequest(
        subscription_id=subscription.subscription_id,
        customer_key=subscription.customer_key,
        revision=subscription.revision,
        start_time=to_timestamp(subscription.start_time),
        end_time=to_timestamp(subscription.end_time),
        credit_schedules=[
            grant_pb2.CreditSchedule(
                entitlement_key=e.key,
                currency_key=e.currency_key,
                cadence=_CADENCES[e.cadence],
                amounts=[
                    grant_pb2.ScheduledAmount(
                        amount=format_decimal(c.amount), effective_time=to_timestamp(c.effective_time)
                    )
                    for c in e.history(subscription.start_time)
                ],
            )
            for e in subscription.credit_entitlements
        ],
        test_clock_id=subscription.test_clock_id or "",
    )


def apply_credit_currency_request(currency: CreditCurrency) -> grant_pb2.ApplyCreditCurrencyRequest:
    """The currency's complete rate list at its current revision, effective
    from the currency's last change; the first revision's rates carry no
    effective time, so the grant service prices any usage with them (also usage
    of a test clock set before the currency was created)."""
    return grant_pb2.ApplyCreditCurrencyRequest(
        currency_key=currency.key,
        revision=currency.revision,
        rates=[
            grant_pb2.CreditRate(feature_key=r.feature_key, credits_per_unit=format_decimal(r.credits_per_unit))
            for r in currency.rates
        ],
        effective_time=to_timestamp(currency.update_time) if currency.revision > 1 else None,
    )
