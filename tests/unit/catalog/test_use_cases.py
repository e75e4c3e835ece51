"""The catalog's use cases over in-memory fakes of their ports (tests/support/catalog_fakes.py): the
service layer's own logic at unit speed. The same behaviours over gRPC and both databases are in
tests/e2e/catalog."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from catalog_service.domain.model import AmendmentTiming, Cadence, CancelMode
from catalog_service.domain.outbox import HandoffStatus
from catalog_service.domain.plans import CreditEntitlementSpec, PlanSpec, VariableSpec
from catalog_service.service_layer import currencies, customers, plans, provisioning, subscriptions
from catalog_service.service_layer.context import CatalogContext
from catalog_service.service_layer.idempotency import Replayed, RequestKey
from credit_common.clock import ManualClock
from credit_common.errors import FailedPrecondition, InvalidArgument, NotFound
from tests.support.catalog_fakes import FakeCatalogTransactions

NOW = datetime(2026, 1, 31, 10, 0, tzinfo=UTC)
CLOCK_TIME = datetime(2030, 6, 1, 12, 0, tzinfo=UTC)


class FakeTestClocks:
    """The grant service's test clocks; records each read and whether a transaction was open."""

    __test__ = False

    def __init__(self, transactions: FakeCatalogTransactions) -> None:
        self.transactions = transactions
        self.reads: list[tuple[str, bool]] = []

    def now_of(self, test_clock_id: str, field: str = "test_clock_id") -> datetime:
        self.reads.append((test_clock_id, self.transactions.in_transaction))
        if test_clock_id != "clk_1":
            raise NotFound(f"test clock {test_clock_id!r} does not exist", reason="TEST_CLOCK_NOT_FOUND")
        return CLOCK_TIME


@pytest.fixture
def transactions() -> FakeCatalogTransactions:
    return FakeCatalogTransactions()


@pytest.fixture
def clocks(transactions) -> FakeTestClocks:
    return FakeTestClocks(transactions)


@pytest.fixture
def nudges() -> list[int]:
    return []


@pytest.fixture
def ctx(transactions, clocks, nudges) -> CatalogContext:
    ctx = CatalogContext(transactions, ManualClock(NOW), clocks, on_queued=lambda: nudges.append(1))
    currencies.create_credit_currency(ctx, "ai-credits", "AI credits", "credits", [], None)
    spec = PlanSpec(
        display_name="Enterprise",
        custom=True,
        credit_entitlements=(
            CreditEntitlementSpec(
                "monthly", "ai-credits", Cadence.MONTHLY, variable=VariableSpec(min="1000", max="100000")
            ),
        ),
    )
    plans.create_plan(ctx, "enterprise", spec, None)
    plans.publish_plan(ctx, "enterprise", None)
    customers.create_customer(ctx, "acme", "Acme", "", None)
    customers.create_customer(ctx, "clocked", "On a clock", "clk_1", None)
    clocks.reads.clear()
    nudges.clear()
    return ctx


def _provision(customer: str = "acme", amount: str = "50000", **more) -> provisioning.ProvisionRequest:
    fields = {
        "customer_key": customer,
        "plan_key": "enterprise",
        "plan_version": 0,
        "values": {"monthly": amount},
        "start_time": None,
        "end_time": None,
        "test_clock_id": "",
    }
    return provisioning.ProvisionRequest(**{**fields, **more})


def _key(request_id: str) -> RequestKey:
    return RequestKey(
        "ProvisionSubscription", request_id, "print", lambda view: view.subscription.subscription_id.encode()
    )


def test_provisioning_queues_revision_1_for_the_grant_service_in_the_same_transaction(ctx, transactions, nudges):
    view = provisioning.provision_subscription(ctx, _provision(), None)
    assert view.subscription.revision == 1 and view.now == NOW
    assert view.subscription.credit_entitlements[0].amount == Decimal("50000")
    assert (view.handoff.status, view.handoff.latest_revision) == (HandoffStatus.PENDING, 1)
    queued = [(e.kind, e.aggregate_key, e.revision) for e in transactions.state.outbox if e.kind == "subscription"]
    assert queued == [("subscription", view.subscription.subscription_id, 1)]
    assert nudges == [1]  # the dispatcher is woken after the commit


def test_a_customer_on_a_test_clock_reads_it_outside_the_transaction_then_runs_it_again(ctx, transactions, clocks):
    writes = transactions.writes
    view = provisioning.provision_subscription(ctx, _provision("clocked"), None)
    assert clocks.reads == [("clk_1", False)]  # once, and never while a transaction was open
    assert transactions.writes - writes == 2  # the first attempt stopped at the customer
    assert (view.now, view.subscription.start_time, view.subscription.test_clock_id) == (
        CLOCK_TIME,
        CLOCK_TIME,
        "clk_1",
    )
    assert len(transactions.state.subscriptions) == 1


def test_the_same_request_id_provisions_once_and_replays_the_first_response(ctx, transactions, nudges):
    first = provisioning.provision_subscription(ctx, _provision(), _key("r-1"))
    again = provisioning.provision_subscription(ctx, _provision(), _key("r-1"))
    assert again == Replayed(first.subscription.subscription_id.encode())
    assert len(transactions.state.subscriptions) == 1
    assert nudges == [1, 1]


@pytest.mark.parametrize(
    ("request_", "error", "reason"),
    [
        (_provision("nobody"), NotFound, "CUSTOMER_NOT_FOUND"),
        (_provision(plan_key="nope"), NotFound, "PLAN_NOT_FOUND"),
        (_provision(plan_version=7), NotFound, "PLAN_VERSION_NOT_FOUND"),
        (_provision(amount="1"), InvalidArgument, "INVALID_ENTITLEMENT_VALUES"),
        (_provision("clocked", test_clock_id="clk_2"), InvalidArgument, "TEST_CLOCK_MISMATCH"),
    ],
    ids=["customer", "plan", "version", "out-of-bounds", "clock-mismatch"],
)
def test_what_provisioning_refuses_leaves_nothing_behind(ctx, transactions, nudges, request_, error, reason):
    with pytest.raises(error) as raised:
        provisioning.provision_subscription(ctx, request_, None)
    assert raised.value.reason == reason
    assert transactions.state.subscriptions == {} and nudges == []


def test_an_archived_plan_is_not_provisioned(ctx):
    plans.archive_plan(ctx, "enterprise", None)
    with pytest.raises(FailedPrecondition) as raised:
        provisioning.provision_subscription(ctx, _provision(), None)
    assert (raised.value.reason, raised.value.metadata) == ("PLAN_ARCHIVED", {"plan_key": "enterprise"})


def test_not_found_names_the_key_under_the_requests_name_for_it(ctx):
    with pytest.raises(NotFound) as raised:
        subscriptions.get_subscription(ctx, "sub_nope")
    assert (raised.value.reason, raised.value.metadata) == ("SUBSCRIPTION_NOT_FOUND", {"key": "sub_nope"})
    assert raised.value.message == "subscription 'sub_nope' does not exist"


def test_amend_and_cancel_queue_the_next_revisions(ctx, transactions):
    sub = provisioning.provision_subscription(ctx, _provision(), None).subscription.subscription_id
    ctx.clock.advance(timedelta(days=3))
    amended = subscriptions.amend_subscription(ctx, sub, {"monthly": "80000"}, AmendmentTiming.NEXT_PERIOD, None)
    cancelled = subscriptions.cancel_subscription(ctx, sub, CancelMode.AT_PERIOD_END, None)
    assert (amended.subscription.revision, cancelled.subscription.revision) == (2, 3)
    assert cancelled.subscription.end_time == datetime(2026, 2, 28, 10, 0, tzinfo=UTC)
    assert [e.revision for e in transactions.state.outbox if e.aggregate_key == sub] == [1, 2, 3]
    assert cancelled.handoff.latest_revision == 3


def test_an_update_that_changes_nothing_queues_nothing(ctx, transactions, nudges):
    before = list(transactions.state.outbox)
    same = currencies.update_credit_currency(ctx, "ai-credits", "AI credits", "", [], ["display_name"], None)
    assert same.revision == 1
    assert transactions.state.outbox == before
