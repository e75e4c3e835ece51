"""Who did what: every call that may change state leaves a log record naming the API key, its roles,
the method, the resource and the outcome (docs/operations.md, Logs); reads carry only the key id;
no record holds a secret."""

from __future__ import annotations

import logging
from datetime import UTC, datetime

import grpc
import pytest

from catalog_service.entrypoints import app as catalog_app
from catalog_service.v1 import catalog_service_pb2 as cpb
from catalog_service.v1 import catalog_service_pb2_grpc
from credit_common.auth.client import with_api_key
from credit_common.clock import ManualClock
from grant_service.entrypoints import app as grant_app
from grant_service.v1 import grant_service_pb2 as pb
from grant_service.v1 import grant_service_pb2_grpc
from tests.e2e.grant.conftest import subscription
from tests.support.auth import create_key_at
from tests.support.servers import serving

NOW = datetime(2026, 6, 1, 12, tzinfo=UTC)


def rpc_records(caplog, method: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "credit_grants.rpc" and getattr(r, "method", "").endswith(method)]


def only(records: list[logging.LogRecord]) -> logging.LogRecord:
    assert len(records) == 1, [r.__dict__ for r in records]
    return records[0]


def test_create_and_void_grant_name_the_key_and_the_grant(database_url_factory, caplog):
    caplog.set_level(logging.INFO, logger="credit_grants.rpc")
    url = database_url_factory("grant")
    args = ["--catch-up-interval", "0"]
    with serving(grant_app.DEFINITION, grant_app.build, url, clock=ManualClock(NOW), args=args) as (running, admin):
        admin_stub = grant_service_pb2_grpc.GrantServiceStub(admin)
        admin_stub.ApplyCreditCurrency(pb.ApplyCreditCurrencyRequest(currency_key="credits", revision=1), timeout=10)
        admin_stub.ApplySubscription(
            subscription("sub_a", "acme", NOW, [("100", None)], currency="credits"), timeout=10
        )
        token = create_key_at(grant_app.DEFINITION, url, ("operator", "reader"), label="finance-ops")
        key_id, secret = token.split("_")[1], token.split("_")[2]
        with with_api_key(grpc.insecure_channel(f"127.0.0.1:{running.port}"), token) as channel:
            stub = grant_service_pb2_grpc.GrantServiceStub(channel)
            grant = stub.CreateGrant(
                pb.CreateGrantRequest(request_id="r-1", customer_key="acme", currency_key="credits", amount="500"),
                timeout=10,
            ).grant
            stub.VoidGrant(pb.VoidGrantRequest(request_id="r-2", grant_id=grant.grant_id), timeout=10)
            stub.GetBalance(pb.GetBalanceRequest(customer_key="acme", currency_key="credits"), timeout=10)
            with pytest.raises(grpc.RpcError):
                stub.ReportUsage(pb.ReportUsageRequest(request_id="r-3", customer_key="acme"), timeout=10)

    created = only(rpc_records(caplog, "/CreateGrant"))
    assert created.audit is True
    assert (created.key_id, created.roles, created.code) == (key_id, ["operator", "reader"], "OK")
    assert created.request_id == "r-1"
    assert created.resource == {
        "customer_key": "acme",
        "currency_key": "credits",
        "grant.grant_id": grant.grant_id,
        "grant.customer_key": "acme",
        "grant.currency_key": "credits",
    }

    voided = only(rpc_records(caplog, "/VoidGrant"))
    assert (voided.audit, voided.key_id, voided.code) == (True, key_id, "OK")
    assert voided.resource["grant_id"] == grant.grant_id

    read = only(rpc_records(caplog, "/GetBalance"))
    assert read.key_id == key_id and not hasattr(read, "audit")

    refused = only(rpc_records(caplog, "/ReportUsage"))  # a usage call with a key without the role
    assert (refused.audit, refused.key_id, refused.code, refused.reason) == (
        True,
        key_id,
        "PERMISSION_DENIED",
        "ROLE_REQUIRED",
    )
    assert all(secret not in str(r.__dict__) for r in caplog.records)


def test_catalog_changes_are_audited_too(database_url_factory, caplog):
    caplog.set_level(logging.INFO, logger="credit_grants.rpc")
    url = database_url_factory("catalog")
    with serving(catalog_app.DEFINITION, catalog_app.build, url) as (running, _admin):
        token = create_key_at(catalog_app.DEFINITION, url, ("catalog-admin",), label="sales-ops")
        with with_api_key(grpc.insecure_channel(f"127.0.0.1:{running.port}"), token) as channel:
            catalog_service_pb2_grpc.CatalogServiceStub(channel).CreateCustomer(
                cpb.CreateCustomerRequest(request_id="c-1", customer=cpb.Customer(key="acme", display_name="Acme")),
                timeout=10,
            )
        with grpc.insecure_channel(f"127.0.0.1:{running.port}") as anonymous, pytest.raises(grpc.RpcError):
            catalog_service_pb2_grpc.CatalogServiceStub(anonymous).CreateCustomer(
                cpb.CreateCustomerRequest(customer=cpb.Customer(key="intruder")), timeout=10
            )

    created, anonymous_record = rpc_records(caplog, "/CreateCustomer")
    assert (created.audit, created.key_id, created.roles, created.code) == (
        True,
        token.split("_")[1],
        ["catalog-admin"],
        "OK",
    )
    assert created.resource["customer.key"] == "acme"
    # an anonymous attempt is recorded with its outcome; its body was never read
    assert (anonymous_record.audit, anonymous_record.code, anonymous_record.roles) == (True, "UNAUTHENTICATED", [])
    assert not hasattr(anonymous_record, "key_id") and anonymous_record.resource == {}
