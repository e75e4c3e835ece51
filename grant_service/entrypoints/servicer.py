"""The gRPC servicer: each RPC checks and converts its request (converters), makes one
service-layer call, converts the result back. No business rules here; errors are
DomainErrors raised below, which the interceptor maps to statuses."""

from __future__ import annotations

from collections.abc import Iterator

from credit_common.errors import DomainError
from credit_common.grpc.validation import check_request
from grant_service.entrypoints import converters as conv
from grant_service.entrypoints import webhook_converters as wconv
from grant_service.service_layer import (
    alerts,
    balances,
    events,
    operators,
    simulated_clocks,
    subscriptions,
    usage,
    webhooks,
)
from grant_service.service_layer.context import GrantContext
from grant_service.v1 import grant_service_pb2 as pb
from grant_service.v1 import grant_service_pb2_grpc
from grant_service.v1 import webhooks_pb2 as wpb


def _each_alone(items, convert, run) -> list:
    """The outcomes of a batch whose items are validated alone, in order: an item that fails the
    checks the interceptor makes of a single call (check_request) or its conversion has its
    DomainError; the valid ones run together, in order (`run` returns one result each), and have
    their results."""
    outcomes: list = []
    valid = []
    for item in items:
        try:
            check_request(item)
            valid.append(convert(item))
            outcomes.append(_RUN)
        except DomainError as error:
            outcomes.append(error)
    done = iter(run(valid) if valid else [])
    return [next(done) if outcome is _RUN else outcome for outcome in outcomes]


_RUN = object()  # an item of `_each_alone` that runs


class GrantServicer(grant_service_pb2_grpc.GrantServiceServicer):
    def __init__(self, ctx: GrantContext) -> None:
        self._ctx = ctx

    # ------------------------------------------------------------------ subscriptions

    def ApplySubscription(self, request: pb.ApplySubscriptionRequest, context) -> pb.ApplySubscriptionResponse:
        result = subscriptions.apply_subscription(self._ctx, conv.subscription_spec(request))
        assert result.outcome is not None
        return pb.ApplySubscriptionResponse(
            outcome=result.outcome.value,
            current_revision=result.current_revision,
            clamped_changes=conv.clamped_pb(result.clamped),
        )

    def ApplySubscriptions(self, request: pb.ApplySubscriptionsRequest, context) -> pb.ApplySubscriptionsResponse:
        conv.check_apply_batch(request)
        outcomes = _each_alone(
            request.requests,
            conv.subscription_spec,
            lambda specs: subscriptions.apply_subscriptions(self._ctx, specs),
        )
        return pb.ApplySubscriptionsResponse(
            results=[
                conv.rejected_pb(outcome) if isinstance(outcome, DomainError) else conv.apply_result_pb(outcome)
                for outcome in outcomes
            ]
        )

    def GetSubscription(self, request: pb.GetSubscriptionRequest, context) -> pb.GetSubscriptionResponse:
        conv.check_get_subscription(request)
        subscription = subscriptions.get_subscription(self._ctx, request.subscription_id)
        return pb.GetSubscriptionResponse(subscription=conv.subscription_pb(subscription))

    def ApplyCreditCurrency(self, request: pb.ApplyCreditCurrencyRequest, context) -> pb.ApplyCreditCurrencyResponse:
        args = conv.credit_currency_args(request)
        outcome, current = subscriptions.apply_credit_currency(
            self._ctx, args.currency_key, args.revision, args.rates, args.effective_time
        )
        return pb.ApplyCreditCurrencyResponse(outcome=outcome.value, current_revision=current)

    # ------------------------------------------------------------------ balances

    def GetBalance(self, request: pb.GetBalanceRequest, context) -> pb.GetBalanceResponse:
        conv.check_balance(request)
        info = balances.get_balance(
            self._ctx,
            request.customer_key,
            request.currency_key,
            conv.time_of(request, "as_of_time"),
            request.view == pb.BALANCE_VIEW_WITH_GRANTS,
        )
        return pb.GetBalanceResponse(balance=conv.balance_pb(info))

    def ListGrants(self, request: pb.ListGrantsRequest, context) -> pb.ListGrantsResponse:
        page = conv.list_grants_page(request)
        grants, token, now = balances.list_grants(
            self._ctx, request.customer_key, request.currency_key, request.subscription_id, page
        )
        return pb.ListGrantsResponse(grants=[conv.grant_pb(g, now) for g in grants], next_page_token=token)

    def ListLedgerEntries(self, request: pb.ListLedgerEntriesRequest, context) -> pb.ListLedgerEntriesResponse:
        query = conv.ledger_query(request)
        entries, token = balances.list_ledger_entries(
            self._ctx, request.customer_key, request.currency_key, query.start, query.end, query.entry_type, query.page
        )
        return pb.ListLedgerEntriesResponse(entries=[conv.entry_pb(e) for e in entries], next_page_token=token)

    # ------------------------------------------------------------------ events

    def ListEvents(self, request: pb.ListEventsRequest, context) -> pb.ListEventsResponse:
        where, page = conv.list_events_query(request)
        found, token = events.list_events(self._ctx, where, page)
        return pb.ListEventsResponse(events=[conv.event_pb(e) for e in found], next_page_token=token)

    def WatchEvents(self, request: pb.WatchEventsRequest, context) -> Iterator[pb.WatchEventsResponse]:
        where = conv.watch_events_filter(request)
        log, position = events.check_cursor(self._ctx, request.cursor)
        stream = events.watch_events(
            self._ctx,
            log,
            position,
            where,
            context.is_active,
            heartbeat_s=self._ctx.events_heartbeat_s,
            poll_s=self._ctx.events_poll_s,
        )
        for item in stream:
            if isinstance(item, events.Heartbeat):
                yield pb.WatchEventsResponse(heartbeat=conv.heartbeat_pb(item))
            else:
                yield pb.WatchEventsResponse(event=conv.event_pb(item))

    # ------------------------------------------------------------------ balance alerts

    def SetBalanceAlerts(self, request: pb.SetBalanceAlertsRequest, context) -> pb.SetBalanceAlertsResponse:
        levels = conv.alert_levels(request)
        settings = alerts.set_balance_alerts(self._ctx, request.customer_key, request.currency_key, levels)
        return pb.SetBalanceAlertsResponse(alerts=conv.balance_alerts_pb(settings))

    def GetBalanceAlerts(self, request: pb.GetBalanceAlertsRequest, context) -> pb.GetBalanceAlertsResponse:
        customer_key, currency_key = conv.alert_key(request)
        settings = alerts.get_balance_alerts(self._ctx, customer_key, currency_key)
        return pb.GetBalanceAlertsResponse(alerts=conv.balance_alerts_pb(settings))

    def ClearBalanceAlerts(self, request: pb.ClearBalanceAlertsRequest, context) -> pb.ClearBalanceAlertsResponse:
        customer_key, currency_key = conv.alert_key(request)
        settings = alerts.set_balance_alerts(self._ctx, customer_key, currency_key, None)
        return pb.ClearBalanceAlertsResponse(alerts=conv.balance_alerts_pb(settings))

    # ------------------------------------------------------------------ usage

    def ReportUsage(self, request: pb.ReportUsageRequest, context) -> pb.ReportUsageResponse:
        quantity = conv.usage_quantity(request)
        result = usage.report_usage(
            self._ctx, request.request_id, request.customer_key, request.feature_key, quantity, request.currency_key
        )
        response = pb.ReportUsageResponse()
        conv.fill_usage(response.usage, result.usage, result.debits)
        return response

    def ReportUsageBatch(self, request: pb.ReportUsageBatchRequest, context) -> pb.ReportUsageBatchResponse:
        conv.check_usage_batch(request)
        outcomes = _each_alone(
            request.usages, conv.UsageRequests(), lambda requests: usage.report_usages(self._ctx, requests)
        )
        response = pb.ReportUsageBatchResponse()
        conv.add_usage_results(response.results, outcomes)
        return response

    def CheckUsage(self, request: pb.CheckUsageRequest, context) -> pb.CheckUsageResponse:
        quantity = conv.usage_quantity(request)
        check = usage.check_usage(self._ctx, request.customer_key, request.feature_key, quantity, request.currency_key)
        return conv.usage_check_pb(check)

    # ------------------------------------------------------------------ operators

    def VoidGrant(self, request: pb.VoidGrantRequest, context) -> pb.VoidGrantResponse:
        conv.check_void_grant(request)
        grant, now = operators.void_grant(self._ctx, request.grant_id, request.reason, request.request_id)
        return pb.VoidGrantResponse(grant=conv.grant_pb(grant, now))

    def CreateGrant(self, request: pb.CreateGrantRequest, context) -> pb.CreateGrantResponse:
        amount = conv.create_grant_amount(request)
        grant, now = operators.create_grant(
            self._ctx,
            request.request_id,
            request.customer_key,
            request.currency_key,
            amount,
            conv.time_of(request, "effective_time"),
            conv.time_of(request, "expire_time"),
            request.priority if request.HasField("priority") else None,
            request.reason,
        )
        return pb.CreateGrantResponse(grant=conv.grant_pb(grant, now))

    # ------------------------------------------------------------------ test clocks

    def CreateTestClock(self, request: pb.CreateTestClockRequest, context) -> pb.CreateTestClockResponse:
        fields = conv.create_test_clock_fields(request)
        simulated_clocks.require_test_clocks(self._ctx)
        fields.done()
        clock = simulated_clocks.create_test_clock(
            self._ctx, request.name, conv.time_of(request, "frozen_time"), request.request_id
        )
        return pb.CreateTestClockResponse(test_clock=conv.clock_pb(clock))

    def GetTestClock(self, request: pb.GetTestClockRequest, context) -> pb.GetTestClockResponse:
        simulated_clocks.require_test_clocks(self._ctx)
        conv.check_test_clock_id(request)
        clock = simulated_clocks.get_test_clock(self._ctx, request.test_clock_id)
        return pb.GetTestClockResponse(test_clock=conv.clock_pb(clock))

    def ListTestClocks(self, request: pb.ListTestClocksRequest, context) -> pb.ListTestClocksResponse:
        simulated_clocks.require_test_clocks(self._ctx)
        clocks, token = simulated_clocks.list_test_clocks(self._ctx, conv.clocks_page(request))
        return pb.ListTestClocksResponse(test_clocks=[conv.clock_pb(c) for c in clocks], next_page_token=token)

    def AdvanceTestClock(self, request: pb.AdvanceTestClockRequest, context) -> pb.AdvanceTestClockResponse:
        simulated_clocks.require_test_clocks(self._ctx)
        conv.check_advance_test_clock(request)
        clock = simulated_clocks.advance_test_clock(
            self._ctx, request.test_clock_id, conv.time_of(request, "frozen_time"), request.request_id
        )
        return pb.AdvanceTestClockResponse(test_clock=conv.clock_pb(clock))

    def DeleteTestClock(self, request: pb.DeleteTestClockRequest, context) -> pb.DeleteTestClockResponse:
        simulated_clocks.require_test_clocks(self._ctx)
        conv.check_test_clock_id(request)
        simulated_clocks.delete_test_clock(self._ctx, request.test_clock_id, request.request_id)
        return pb.DeleteTestClockResponse()

    # ------------------------------------------------------------------ webhooks

    def CreateWebhookEndpoint(self, request: wpb.CreateWebhookEndpointRequest, context):
        types = wconv.create_args(request)
        endpoint, secret = webhooks.create_endpoint(
            self._ctx, request.url, types, request.description, request.request_id
        )
        return wpb.CreateWebhookEndpointResponse(endpoint=wconv.endpoint_pb(endpoint), signing_secret=secret)

    def GetWebhookEndpoint(self, request: wpb.GetWebhookEndpointRequest, context):
        wconv.check_endpoint_id(request)
        endpoint = webhooks.get_endpoint(self._ctx, request.endpoint_id)
        return wpb.GetWebhookEndpointResponse(endpoint=wconv.endpoint_pb(endpoint))

    def ListWebhookEndpoints(self, request: wpb.ListWebhookEndpointsRequest, context):
        endpoints, token = webhooks.list_endpoints(self._ctx, wconv.endpoints_page(request))
        return wpb.ListWebhookEndpointsResponse(
            endpoints=[wconv.endpoint_pb(e) for e in endpoints], next_page_token=token
        )

    def UpdateWebhookEndpoint(self, request: wpb.UpdateWebhookEndpointRequest, context):
        changes = wconv.update_changes(request)
        endpoint = webhooks.update_endpoint(self._ctx, request.endpoint.endpoint_id, changes)
        return wpb.UpdateWebhookEndpointResponse(endpoint=wconv.endpoint_pb(endpoint))

    def DisableWebhookEndpoint(self, request: wpb.DisableWebhookEndpointRequest, context):
        wconv.check_endpoint_id(request)
        endpoint = webhooks.set_enabled(self._ctx, request.endpoint_id, False)
        return wpb.DisableWebhookEndpointResponse(endpoint=wconv.endpoint_pb(endpoint))

    def EnableWebhookEndpoint(self, request: wpb.EnableWebhookEndpointRequest, context):
        wconv.check_endpoint_id(request)
        endpoint = webhooks.set_enabled(self._ctx, request.endpoint_id, True)
        return wpb.EnableWebhookEndpointResponse(endpoint=wconv.endpoint_pb(endpoint))

    def DeleteWebhookEndpoint(self, request: wpb.DeleteWebhookEndpointRequest, context):
        wconv.check_endpoint_id(request)
        webhooks.delete_endpoint(self._ctx, request.endpoint_id)
        return wpb.DeleteWebhookEndpointResponse()

    def RotateWebhookSecret(self, request: wpb.RotateWebhookSecretRequest, context):
        ttl = wconv.rotate_ttl(request)
        endpoint, secret = webhooks.rotate_secret(self._ctx, request.endpoint_id, ttl, request.request_id)
        return wpb.RotateWebhookSecretResponse(endpoint=wconv.endpoint_pb(endpoint), signing_secret=secret)

    def ListWebhookDeliveryAttempts(self, request: wpb.ListWebhookDeliveryAttemptsRequest, context):
        page = wconv.attempts_page(request)
        attempts, token = webhooks.list_attempts(self._ctx, request.endpoint_id, request.event_id, page)
        return wpb.ListWebhookDeliveryAttemptsResponse(
            attempts=[wconv.attempt_pb(a) for a in attempts], next_page_token=token
        )

    def ResendWebhookEvent(self, request: wpb.ResendWebhookEventRequest, context):
        wconv.check_resend(request)
        delivery_id = webhooks.resend_event(self._ctx, request.endpoint_id, request.event_id, request.request_id)
        return wpb.ResendWebhookEventResponse(delivery_id=delivery_id)

    def ReplayWebhookEvents(self, request: wpb.ReplayWebhookEventsRequest, context):
        wconv.check_replay(request)
        log_id = events.log_id(self._ctx)
        after = events.decode_cursor(request.after_cursor, log_id, "after_cursor")
        result = webhooks.replay_events(self._ctx, request.endpoint_id, after, request.max_events, request.request_id)
        last = events.encode_cursor(log_id, result.last) if result.last is not None else ""
        return wpb.ReplayWebhookEventsResponse(queued=result.queued, last_cursor=last, more=result.more)
