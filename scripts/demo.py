"""The main flow, as a user would run it against `make run`:

feature -> credit currency -> custom plan with a variable monthly credit entitlement ->
publish -> customer on a test clock -> provision with a negotiated amount -> handoff to the
grant service -> usage -> advance the clock: renewal, no rollover -> amend next period ->
amend immediately -> cancel at period end -> ledger, grants and amount history. The customer's
credit events are watched live (WatchEvents) from the start: each step shows the events it caused.

    make run      # in one terminal
    make demo     # in another
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import grpc

from catalog_service.v1 import catalog_service_pb2 as cat
from catalog_service.v1 import catalog_service_pb2_grpc as cat_grpc
from credit_client import ClientSettings
from credit_client._transport import open_channel
from credit_common.auth.client import with_api_key
from credit_common.grpc.errors import error_details
from credit_common.grpc.timestamps import to_timestamp
from grant_service.v1 import grant_service_pb2 as gr
from grant_service.v1 import grant_service_pb2_grpc as gr_grpc

DEADLINE = 10.0
# The demo's own catalog entries, made by its first run and reused by the next ones (the README's
# session makes others: each story runs on a database where the other ran).
FEATURE, CURRENCY, PLAN = "gpt-call", "demo-credits", "demo-enterprise"


def rid() -> str:
    return str(uuid.uuid4())


def get_or_create(create, get, get_request):
    """Create a resource, or fetch it if a previous demo run created it."""
    try:
        return create()
    except grpc.RpcError as error:
        if error.code() != grpc.StatusCode.ALREADY_EXISTS:
            raise
        return get(get_request, timeout=DEADLINE)


def when(ts) -> str:
    return ts.ToDatetime(tzinfo=UTC).strftime("%Y-%m-%d %H:%M") if ts.seconds or ts.nanos else "never"


def table(title: str, headers: list[str], rows: list[list[str]]) -> None:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]
    print(f"\n{title}")
    print("  " + "  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)))
    print("  " + "  ".join("-" * w for w in widths))
    for row in rows:
        print(
            "  "
            + "  ".join(c.rjust(w) if c[:1] in "-0123456789" else c.ljust(w) for c, w in zip(row, widths, strict=True))
        )


def api_key(variable: str, path: str) -> str | None:
    """The key in the environment variable, else in the file, else none (services with --auth off)."""
    if os.environ.get(variable):
        return os.environ[variable]
    try:
        return Path(path).read_text().strip()
    except FileNotFoundError:
        return None


def step(text: str) -> None:
    print(f"\n==> {text}")


def about(event) -> str:
    """One line on a credit event: its type and what it says."""
    kind = gr.CreditEventType.Name(event.type).removeprefix("CREDIT_EVENT_TYPE_")
    payload = getattr(event, event.WhichOneof("payload"))
    if event.HasField("balance_alert"):
        what = f"balance {payload.balance}, level {payload.threshold}"
    elif event.HasField("subscription_changed"):
        what = f"revision {payload.revision}" + (" (applied late)" if payload.clamped_changes else "")
    elif event.HasField("usage_rejected"):
        what = f"{payload.requested_credits} requested, {payload.available_credits} available"
    else:
        amount = getattr(payload, "expired_amount", "") or getattr(payload, "amount", "")
        what = f"{amount} {getattr(payload, 'grant_id', '')}".strip()
    return f"{kind:<20} {when(event.occurred_time)}  {what}"


class LiveEvents:
    """WatchEvents of one customer on a thread of its own, from the start of the log: the events
    arrive as the story causes them. `show()` prints those that arrived since the last call, once
    every event ListEvents has of the customer has come through the stream (the stream and the
    list read the same log in the same order)."""

    def __init__(self, grant, customer_key: str) -> None:
        self._grant, self._customer_key = grant, customer_key
        self._received: list = []
        self._shown = 0
        self._error: grpc.RpcError | None = None
        self._arrived = threading.Condition()
        self._call = grant.WatchEvents(gr.WatchEventsRequest(customer_key=customer_key))
        threading.Thread(target=self._watch, name="demo-watch-events", daemon=True).start()

    def _watch(self) -> None:
        try:
            for message in self._call:
                if message.HasField("event"):
                    with self._arrived:
                        self._received.append(message.event)
                        self._arrived.notify_all()
        except grpc.RpcError as error:
            with self._arrived:
                self._error = error
                self._arrived.notify_all()

    def logged(self) -> list:
        """The customer's events as ListEvents pages them."""
        events, token = [], ""
        while True:
            page = self._grant.ListEvents(
                gr.ListEventsRequest(customer_key=self._customer_key, page_size=100, page_token=token),
                timeout=DEADLINE,
            )
            events += page.events
            token = page.next_page_token
            if not token:
                return events

    def show(self) -> None:
        expected = len(self.logged())
        with self._arrived:
            if not self._arrived.wait_for(lambda: len(self._received) >= expected or self._error, timeout=DEADLINE):
                raise SystemExit(f"    the stream delivered {len(self._received)} of {expected} events")
            if self._error is not None and self._error.code() != grpc.StatusCode.CANCELLED:
                raise self._error
            new, self._shown = self._received[self._shown :], len(self._received)
        for event in new:
            print(f"    event  {about(event)}")

    def close(self) -> int:
        self._call.cancel()
        return len(self._received)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--catalog", default="127.0.0.1:50051")
    parser.add_argument("--grant", default="127.0.0.1:50052")
    parser.add_argument(
        "--catalog-key-file",
        default="data/catalog-admin.key",
        help="API key of the catalog (default: the one `make run` made); or the variable CATALOG_API_KEY",
    )
    parser.add_argument(
        "--grant-key-file",
        default="data/grant-admin.key",
        help="API key of the grant service (default: the one `make run` made); or the variable GRANT_API_KEY",
    )
    parser.add_argument("--tls-ca", help="TLS: the CA (PEM) of both services' certificates (default: plaintext)")
    parser.add_argument("--tls-cert", help="mTLS: the client certificate (PEM) to present")
    parser.add_argument("--tls-key", help="mTLS: its private key (PEM)")
    parser.add_argument("--tls-server-name", help="the name in the services' certificates, if not the address's")
    args = parser.parse_args()

    catalog_key = api_key("CATALOG_API_KEY", args.catalog_key_file)
    grant_key = api_key("GRANT_API_KEY", args.grant_key_file)

    def channel(address: str) -> grpc.Channel:
        settings = ClientSettings(
            address=address,
            tls_ca_file=args.tls_ca,
            tls_cert_file=args.tls_cert,
            tls_key_file=args.tls_key,
            tls_server_name=args.tls_server_name,
        )
        return open_channel(settings)

    catalog = cat_grpc.CatalogServiceStub(with_api_key(channel(args.catalog), catalog_key))
    grant = gr_grpc.GrantServiceStub(with_api_key(channel(args.grant), grant_key))
    run = uuid.uuid4().hex[:6]

    step(f"Feature '{FEATURE}' (metered, unit: call)")
    get_or_create(
        lambda: catalog.CreateFeature(
            cat.CreateFeatureRequest(
                feature=cat.Feature(
                    key=FEATURE, display_name="GPT call", type=cat.FEATURE_TYPE_METERED, unit_name="call"
                ),
                request_id=rid(),
            ),
            timeout=DEADLINE,
        ),
        catalog.GetFeature,
        cat.GetFeatureRequest(key=FEATURE),
    )

    step(f"Credit currency '{CURRENCY}': one {FEATURE} burns 2.5 credits")
    currency = get_or_create(
        lambda: catalog.CreateCreditCurrency(
            cat.CreateCreditCurrencyRequest(
                credit_currency=cat.CreditCurrency(
                    key=CURRENCY,
                    display_name="Demo credits",
                    unit_name="credit",
                    rates=[cat.CreditRate(feature_key=FEATURE, credits_per_unit="2.5")],
                ),
                request_id=rid(),
            ),
            timeout=DEADLINE,
        ),
        catalog.GetCreditCurrency,
        cat.GetCreditCurrencyRequest(key=CURRENCY),
    ).credit_currency
    if [(r.feature_key, r.credits_per_unit) for r in currency.rates] != [(FEATURE, "2.5")]:
        print(f"    the currency {CURRENCY!r} was changed since the demo made it: its rates are not {FEATURE}=2.5")
        return 1

    plan_key = PLAN
    step(f"Custom plan '{plan_key}': a variable monthly {CURRENCY} entitlement (1,000 to 1,000,000)")
    get_or_create(
        lambda: catalog.CreatePlan(
            cat.CreatePlanRequest(
                plan=cat.Plan(
                    key=plan_key,
                    display_name="Enterprise (custom contract)",
                    custom=True,
                    credit_entitlements=[
                        cat.CreditEntitlement(
                            key="ai-credits-monthly",
                            currency_key=CURRENCY,
                            cadence=cat.CADENCE_MONTHLY,
                            variable_amount=cat.VariableValue(min="1000", max="1000000"),
                        )
                    ],
                ),
                request_id=rid(),
            ),
            timeout=DEADLINE,
        ),
        catalog.GetPlan,
        cat.GetPlanRequest(key=plan_key, draft=True),
    )
    plan = catalog.GetPlan(cat.GetPlanRequest(key=plan_key, draft=True), timeout=DEADLINE).plan
    if plan.latest_version == 0:
        plan = catalog.PublishPlan(cat.PublishPlanRequest(key=plan_key, request_id=rid()), timeout=DEADLINE).plan
    else:
        plan = catalog.GetPlan(cat.GetPlanRequest(key=plan_key), timeout=DEADLINE).plan
    print(f"    published as version {plan.version}")
    if [e.currency_key for e in plan.credit_entitlements] != [CURRENCY]:
        print(f"    the plan {plan_key!r} was changed since the demo made it: it does not grant {CURRENCY}")
        return 1

    start = datetime(2026, 1, 31, 10, 0, tzinfo=UTC)
    step(f"Test clock frozen at {start:%Y-%m-%d %H:%M} UTC, and customer 'acme-{run}' attached to it")
    clock = grant.CreateTestClock(
        gr.CreateTestClockRequest(name=f"demo {run}", frozen_time=to_timestamp(start), request_id=rid()),
        timeout=DEADLINE,
    ).test_clock
    customer = catalog.CreateCustomer(
        cat.CreateCustomerRequest(
            customer=cat.Customer(key=f"acme-{run}", display_name="Acme Corp", test_clock_id=clock.test_clock_id),
            request_id=rid(),
        ),
        timeout=DEADLINE,
    ).customer
    step(f"Watch {customer.key}'s credit events live (WatchEvents): each step below shows those it caused")
    live = LiveEvents(grant, customer.key)

    step("Provision without the negotiated amount: the catalog says what is missing")
    try:
        catalog.ProvisionSubscription(
            cat.ProvisionSubscriptionRequest(request_id=rid(), customer_key=customer.key, plan_key=plan_key),
            timeout=DEADLINE,
        )
        print("    unexpectedly accepted")
        return 1
    except grpc.RpcError as error:
        info, violations = error_details(error)
        print(
            f"    {error.code().name} ({info.reason if info else '-'}): "
            + "; ".join(f"{v.field} {v.description}" for v in violations)
        )

    step("Provision with the negotiated 50,000 credits a month")
    subscription = catalog.ProvisionSubscription(
        cat.ProvisionSubscriptionRequest(
            request_id=rid(),
            customer_key=customer.key,
            plan_key=plan_key,
            entitlement_values={"ai-credits-monthly": "50000"},
        ),
        timeout=DEADLINE,
    ).subscription
    amounts = ", ".join(f"{e.key}={e.amount}" for e in subscription.credit_entitlements)
    print(f"    {subscription.subscription_id} starts {when(subscription.start_time)}: {amounts}")

    sub_id = subscription.subscription_id

    def handed_off(revision: int) -> None:
        """Wait until the catalog reports the revision delivered to the grant service."""
        deadline = time.monotonic() + 30
        while True:
            got = catalog.GetSubscription(cat.GetSubscriptionRequest(subscription_id=sub_id), timeout=DEADLINE)
            handoff = got.subscription.handoff
            if handoff.status == cat.HANDOFF_STATUS_DELIVERED and handoff.delivered_revision >= revision:
                break
            if time.monotonic() > deadline:
                print(f"    not delivered yet: {cat.HandoffStatus.Name(handoff.status)} {handoff.failure_reason}")
                raise SystemExit(1)
            time.sleep(0.1)
        held = grant.GetSubscription(gr.GetSubscriptionRequest(subscription_id=sub_id), timeout=DEADLINE).subscription
        print(
            f"    handoff DELIVERED after {handoff.attempts} attempt(s): the grant service holds revision "
            f"{held.revision}"
        )
        live.show()

    queued = cat.HandoffStatus.Name(subscription.handoff.status).removeprefix("HANDOFF_STATUS_")
    step(f"Handoff: provisioning queued revision 1 (handoff {queued})")
    handed_off(1)

    step("Balance alerts for this customer: below 20% of what it was granted, and below 5,000 credits")
    levels = [gr.BalanceAlertLevel(percent="20"), gr.BalanceAlertLevel(amount="5000")]
    grant.SetBalanceAlerts(
        gr.SetBalanceAlertsRequest(customer_key=customer.key, currency_key=CURRENCY, levels=levels),
        timeout=DEADLINE,
    )

    def balance() -> str:
        return grant.GetBalance(
            gr.GetBalanceRequest(customer_key=customer.key, currency_key=CURRENCY), timeout=DEADLINE
        ).balance.available

    def use(calls: str) -> None:
        usage = grant.ReportUsage(
            gr.ReportUsageRequest(request_id=rid(), customer_key=customer.key, feature_key=FEATURE, quantity=calls),
            timeout=DEADLINE,
        ).usage
        print(
            f"    {calls} {FEATURE}s at {when(usage.usage_time)} cost {usage.credits} credits; "
            f"balance now {usage.balance_after}"
        )
        live.show()

    step("Usage in the first month")
    print(f"    balance {balance()}")
    use("8000")
    use("9000")
    step("A usage larger than the balance is refused whole")
    try:
        use("100000")
    except grpc.RpcError as error:
        info, _ = error_details(error)
        print(f"    {error.code().name} ({info.reason}): available {info.metadata.get('available')}")
        live.show()

    def advance(to: datetime, why: str) -> None:
        step(f"Advance the test clock to {to:%Y-%m-%d %H:%M}: {why}")
        grant.AdvanceTestClock(
            gr.AdvanceTestClockRequest(
                test_clock_id=clock.test_clock_id, frozen_time=to_timestamp(to), request_id=rid()
            ),
            timeout=30,
        )
        print(f"    balance {balance()}")
        live.show()

    def amend(amount: str, timing: int) -> None:
        sub = catalog.AmendSubscription(
            cat.AmendSubscriptionRequest(
                subscription_id=sub_id,
                entitlement_values={"ai-credits-monthly": amount},
                timing=timing,
                request_id=rid(),
            ),
            timeout=DEADLINE,
        ).subscription
        (e,) = sub.credit_entitlements
        print(
            f"    revision {sub.revision}: {amount} from {when(e.amount_history[-1].effective_time)}; "
            f"in force now: {e.amount}"
        )
        handed_off(sub.revision)

    advance(datetime(2026, 2, 28, 10, 0, tzinfo=UTC), "renewal, the unused remainder expires (no rollover)")
    use("4000")

    step("Amend to 80,000 a month from the next period (the default timing)")
    amend("80000", cat.AMENDMENT_TIMING_NEXT_PERIOD)
    advance(datetime(2026, 3, 31, 10, 0, tzinfo=UTC), "renewal with the amended amount")

    advance(datetime(2026, 4, 10, 10, 0, tzinfo=UTC), "mid-period")
    step(
        "Amend to 20,000 immediately: the current grant's remainder expires now, "
        "a 20,000 grant runs to the same period end"
    )
    amend("20000", cat.AMENDMENT_TIMING_IMMEDIATELY)
    print(f"    balance {balance()}")

    step("Cancel at period end: the current grant runs to its expiry, nothing is granted after it")
    cancelled = catalog.CancelSubscription(
        cat.CancelSubscriptionRequest(subscription_id=sub_id, mode=cat.CANCEL_MODE_AT_PERIOD_END, request_id=rid()),
        timeout=DEADLINE,
    ).subscription
    print(f"    revision {cancelled.revision}: ends {when(cancelled.end_time)}")
    handed_off(cancelled.revision)
    month = datetime(2026, 5, 31, 10, 0, tzinfo=UTC)
    advance(month, "the last grant expired at the end, no renewal")

    entries = grant.ListLedgerEntries(
        gr.ListLedgerEntriesRequest(customer_key=customer.key, currency_key=CURRENCY, page_size=100),
        timeout=DEADLINE,
    ).entries
    table(
        f"Ledger of {customer.key} ({CURRENCY})",
        ["effective (UTC)", "type", "amount", "grant"],
        [
            [
                when(e.effective_time),
                gr.LedgerEntryType.Name(e.type).removeprefix("LEDGER_ENTRY_TYPE_"),
                e.amount,
                e.grant_id,
            ]
            for e in entries
        ],
    )
    grants = grant.ListGrants(
        gr.ListGrantsRequest(customer_key=customer.key, currency_key=CURRENCY, page_size=100), timeout=DEADLINE
    ).grants
    table(
        "Grants",
        ["period", "effective", "expires", "amount", "used", "remaining", "status"],
        [
            [
                str(g.period_index),
                when(g.effective_time),
                when(g.expire_time),
                g.amount,
                g.used,
                g.remaining,
                gr.GrantStatus.Name(g.status).removeprefix("GRANT_STATUS_"),
            ]
            for g in grants
        ],
    )
    watched, listed = live.close(), len(live.logged())
    print(f"\n{watched} credit events of {customer.key} watched live; ListEvents lists the same {listed}")
    if watched != listed:
        return 1
    final = catalog.GetSubscription(cat.GetSubscriptionRequest(subscription_id=sub_id), timeout=DEADLINE).subscription
    table(
        "Amount history of ai-credits-monthly (catalog)",
        ["effective (UTC)", "amount"],
        [[when(a.effective_time), a.amount] for a in final.credit_entitlements[0].amount_history],
    )
    print(
        f"\nSubscription {cat.SubscriptionStatus.Name(final.status).removeprefix('SUBSCRIPTION_STATUS_')}, "
        f"handoff {cat.HandoffStatus.Name(final.handoff.status).removeprefix('HANDOFF_STATUS_')} "
        f"(revision {final.handoff.delivered_revision}); balance at {month:%Y-%m-%d %H:%M}: {balance()} {CURRENCY}"
    )
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except grpc.RpcError as error:
        print(f"\nerror: {error.code().name}: {error.details()}", file=sys.stderr)
        if error.code() == grpc.StatusCode.UNAVAILABLE:
            print("are both services running? start them with `make run`", file=sys.stderr)
        sys.exit(1)
