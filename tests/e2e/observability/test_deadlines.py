"""A call whose deadline passes, or that its client cancels, before its commit commits nothing and
ends with DEADLINE_EXCEEDED or CANCELLED: the catalog's provisioning, the grant service's
ApplySubscription (its write runner) and ReportUsage (its group commit), on both backends. Outbound
calls made while serving stay within what is left of the incoming deadline."""

from __future__ import annotations

import time
from types import SimpleNamespace

import grpc
import pytest
from prometheus_client import REGISTRY

from catalog_service.entrypoints import app as catalog_app
from catalog_service.v1 import catalog_service_pb2 as cpb
from catalog_service.v1 import catalog_service_pb2_grpc
from credit_common import calls
from credit_common.clock import ManualClock
from grant_service.entrypoints import app as grant_app
from grant_service.v1 import grant_service_pb2 as pb
from grant_service.v1 import grant_service_pb2_grpc
from tests.e2e.grant.conftest import REAL_NOW, subscription, utc
from tests.e2e.handoff.conftest import setup_catalog
from tests.support.servers import serving
from tests.support.slow_commit import commit_held_until_caller_gone

DEADLINE_S = 1.0  # the commit then waits it out


def _handled(service: str, method: str, code: str) -> float:
    labels = {"grpc_type": "unary", "grpc_service": service, "grpc_method": method, "grpc_code": code}
    return REGISTRY.get_sample_value("grpc_server_handled_total", labels) or 0.0


def _wait_handled(service: str, method: str, code: str, before: float) -> None:
    """Wait until the server has answered the call (after its client gave up) with `code`."""
    give_up = time.monotonic() + 30
    while _handled(service, method, code) <= before:
        assert time.monotonic() < give_up, f"{method} never answered {code}"
        time.sleep(0.01)


def _ends_before_its_commit(rpc, request, service: str, method: str, how: str) -> None:
    """Call `rpc` and end it from the client side once the server works on it: by its deadline, or by a
    cancel once it reached its commit; then wait for the server's answer, DEADLINE_EXCEEDED or
    CANCELLED. On a busy machine a call may not even start before a short deadline: it is tried again
    with a longer one (the server must have reached the commit for the test to mean anything)."""
    code = "DeadlineExceeded" if how == "deadline" else "Canceled"
    for deadline_s in (DEADLINE_S, 2 * DEADLINE_S, 4 * DEADLINE_S):
        before = _handled(service, method, code)
        with commit_held_until_caller_gone(f"/{method}") as reached:
            future_call = rpc.future(request, timeout=deadline_s if how == "deadline" else 30)
            if how == "cancel":
                assert reached.wait(30), "the call never reached its commit"
                future_call.cancel()
                with pytest.raises(grpc.FutureCancelledError):
                    future_call.result()
            else:
                with pytest.raises(grpc.RpcError) as raised:
                    future_call.result()
                assert raised.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
                if not reached.wait(10):
                    continue  # the server never got to the commit in time: again, with a longer deadline
            _wait_handled(service, method, code, before)
            return
    pytest.fail(f"{method} never reached its commit before its deadline")


@pytest.mark.parametrize("how", ["deadline", "cancel"])
def test_catalog_provisioning_after_the_caller_gave_up_commits_nothing(database_url_factory, how):
    args = ["--grant-service-address", "127.0.0.1:1", "--metrics-listen", "127.0.0.1:0"]
    with serving(catalog_app.DEFINITION, catalog_app.build, database_url_factory("catalog"), args=args) as (_, ch):
        stub = catalog_service_pb2_grpc.CatalogServiceStub(ch)
        setup_catalog(stub)
        stub.CreateCustomer(cpb.CreateCustomerRequest(request_id="c1", customer=cpb.Customer(key="acme")))
        request = cpb.ProvisionSubscriptionRequest(
            request_id="ps1",
            customer_key="acme",
            plan_key="enterprise",
            entitlement_values={"ai-credits-monthly": "50000"},
        )
        _ends_before_its_commit(
            stub.ProvisionSubscription, request, "catalog_service.v1.CatalogService", "ProvisionSubscription", how
        )
        listed = stub.ListSubscriptions(cpb.ListSubscriptionsRequest(customer_key="acme"))
        assert list(listed.subscriptions) == []
        # The same request id again: a fresh provisioning, not a replay of one that never committed.
        again = stub.ProvisionSubscription(request, timeout=10)
        assert again.subscription.customer_key == "acme"


@pytest.fixture
def grant_stub(database_url_factory):
    args = ["--catch-up-interval", "0", "--metrics-listen", "127.0.0.1:0"]
    url = database_url_factory("grant")
    with serving(grant_app.DEFINITION, grant_app.build, url, clock=ManualClock(REAL_NOW), args=args) as (_, ch):
        stub = grant_service_pb2_grpc.GrantServiceStub(ch)
        stub.ApplyCreditCurrency(
            pb.ApplyCreditCurrencyRequest(
                currency_key="ai-credits",
                revision=1,
                rates=[pb.CreditRate(feature_key="gpt-call", credits_per_unit="1")],
            )
        )
        yield stub


@pytest.mark.parametrize("how", ["deadline", "cancel"])
def test_grant_write_after_the_caller_gave_up_commits_nothing(grant_stub, how):
    request = subscription("sub_d", "acme", utc(2026, 5, 20), [("100", None)])
    _ends_before_its_commit(
        grant_stub.ApplySubscription, request, "grant_service.v1.GrantService", "ApplySubscription", how
    )
    with pytest.raises(grpc.RpcError) as missing:
        grant_stub.GetSubscription(pb.GetSubscriptionRequest(subscription_id="sub_d"))
    assert missing.value.code() == grpc.StatusCode.NOT_FOUND


@pytest.mark.parametrize("how", ["deadline", "cancel"])
def test_debit_after_the_caller_gave_up_commits_nothing(grant_stub, how):
    grant_stub.ApplySubscription(subscription("sub_u", "acme", utc(2026, 5, 20), [("100", None)]))
    request = pb.ReportUsageRequest(request_id="u1", customer_key="acme", feature_key="gpt-call", quantity="10")
    _ends_before_its_commit(grant_stub.ReportUsage, request, "grant_service.v1.GrantService", "ReportUsage", how)
    balance = grant_stub.GetBalance(pb.GetBalanceRequest(customer_key="acme", currency_key="ai-credits"))
    assert balance.balance.available == "100"
    # The request id was not recorded: the same request now debits.
    assert grant_stub.ReportUsage(request).usage.balance_after == "90"


class _Context:
    def __init__(self, remaining: float) -> None:
        self._remaining = remaining

    def time_remaining(self) -> float:
        return self._remaining

    def is_active(self) -> bool:
        return True


def test_outbound_calls_stay_within_the_incoming_deadline():
    assert calls.outbound_timeout(5.0) == 5.0  # no incoming call (the outbox dispatcher): the configured one
    with calls.serving(calls.Call(_Context(0.25), "/x.Y/Z")):
        assert calls.outbound_timeout(5.0) == 0.25
    with calls.serving(calls.Call(_Context(60.0), "/x.Y/Z")):
        assert calls.outbound_timeout(5.0) == 5.0


def test_the_catalog_asks_the_grant_service_within_the_incoming_deadline(monkeypatch):
    from catalog_service.adapters import grant_client

    seen = {}

    class Stub:
        def GetTestClock(self, request, timeout):
            seen["timeout"] = timeout
            return SimpleNamespace(
                test_clock=SimpleNamespace(frozen_time=SimpleNamespace(ToDatetime=lambda tzinfo: REAL_NOW))
            )

    client = grant_client.GrantServiceClient("127.0.0.1:1")
    try:
        client._stub = Stub()
        with calls.serving(calls.Call(_Context(0.3), "/x.Y/Z")):
            client.now_of("clk_1")
        assert seen["timeout"] == 0.3
        client.now_of("clk_1")
        assert seen["timeout"] == 5.0
    finally:
        client.close()
