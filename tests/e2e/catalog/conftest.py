"""One catalog server per test module and backend (SQLite and PostgreSQL),
next to a fake grant service that serves only GetTestClock. Tests share the
server, so each uses its own keys (the `unique` fixture)."""

from __future__ import annotations

import itertools
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent import futures
from dataclasses import dataclass, field
from datetime import datetime

import grpc
import pytest
from google.protobuf.message import Message
from sqlalchemy import select

from catalog_service.adapters.orm import OutboxDeliveryRow
from catalog_service.entrypoints import app
from catalog_service.v1 import catalog_service_pb2 as pb
from catalog_service.v1 import catalog_service_pb2_grpc as pb_grpc
from credit_common.db.engine import DatabaseSettings, create_db_engine
from credit_common.grpc.errors import error_details
from credit_common.grpc.timestamps import to_timestamp
from grant_service.v1 import grant_service_pb2 as grant_pb2
from grant_service.v1 import grant_service_pb2_grpc as grant_pb2_grpc
from tests.conftest import BACKENDS
from tests.support.servers import serving


class FakeGrantService(grant_pb2_grpc.GrantServiceServicer):
    """GetTestClock over a dict of clocks the tests set, and the two Apply
    methods, which keep the highest revision of each key (`applied`)."""

    def __init__(self) -> None:
        self.clocks: dict[str, datetime] = {}
        self.applied: dict[str, Message] = {}
        self.rejected: set[str] = set()  # keys whose Apply is refused (INVALID_ARGUMENT: the catalog parks it)
        self._lock = threading.Lock()

    def _apply(self, key: str, request: Message, response_type, context=None):
        if key in self.rejected and context is not None:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"fake: {key} is rejected")
        with self._lock:
            current = self.applied.get(key)
            if current is not None and current.revision >= request.revision:
                outcome = (
                    grant_pb2.APPLY_OUTCOME_ALREADY_APPLIED
                    if current.revision == request.revision
                    else grant_pb2.APPLY_OUTCOME_STALE
                )
                return response_type(outcome=outcome, current_revision=current.revision)
            self.applied[key] = request
            return response_type(outcome=grant_pb2.APPLY_OUTCOME_APPLIED, current_revision=request.revision)

    def ApplySubscription(self, request, context):
        return self._apply(request.subscription_id, request, grant_pb2.ApplySubscriptionResponse, context)

    def ApplyCreditCurrency(self, request, context):
        return self._apply(request.currency_key, request, grant_pb2.ApplyCreditCurrencyResponse, context)

    def GetTestClock(self, request, context):
        now = self.clocks.get(request.test_clock_id)
        if now is None:
            context.abort(grpc.StatusCode.NOT_FOUND, f"no test clock {request.test_clock_id}")
        return grant_pb2.GetTestClockResponse(
            test_clock=grant_pb2.TestClock(test_clock_id=request.test_clock_id, frozen_time=to_timestamp(now))
        )


@pytest.fixture(scope="session")
def fake_grant() -> Iterator[tuple[FakeGrantService, int]]:
    fake = FakeGrantService()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    grant_pb2_grpc.add_GrantServiceServicer_to_server(fake, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield fake, port
    server.stop(0)


@dataclass
class Catalog:
    stub: pb_grpc.CatalogServiceStub
    grant: FakeGrantService
    engine_url: str
    _counter: itertools.count = field(default_factory=itertools.count)

    def unique(self, prefix: str) -> str:
        return f"{prefix}-{next(self._counter)}-{uuid.uuid4().hex[:6]}"


@pytest.fixture(scope="module", params=BACKENDS)
def catalog(request: pytest.FixtureRequest, tmp_path_factory, fake_grant) -> Iterator[Catalog]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path_factory.mktemp('catalog') / 'catalog.db'}"
    else:
        url = request.getfixturevalue("postgres_server").create_database(f"catalog_{uuid.uuid4().hex[:12]}")
    fake, port = fake_grant
    args = ["--grant-service-address", f"127.0.0.1:{port}"]
    with serving(app.DEFINITION, app.build, url, args=args) as (_running, channel):
        yield Catalog(pb_grpc.CatalogServiceStub(channel), fake, url)


def metered_feature(catalog: Catalog, key: str | None = None) -> str:
    key = key or catalog.unique("calls")
    catalog.stub.CreateFeature(
        pb.CreateFeatureRequest(
            feature=pb.Feature(key=key, display_name="Calls", type=pb.FEATURE_TYPE_METERED, unit_name="call")
        )
    )
    return key


def boolean_feature(catalog: Catalog) -> str:
    key = catalog.unique("sso")
    catalog.stub.CreateFeature(
        pb.CreateFeatureRequest(feature=pb.Feature(key=key, display_name="SSO", type=pb.FEATURE_TYPE_BOOLEAN))
    )
    return key


def currency(catalog: Catalog, feature_key: str, rate: str = "2.5") -> str:
    key = catalog.unique("credits")
    catalog.stub.CreateCreditCurrency(
        pb.CreateCreditCurrencyRequest(
            credit_currency=pb.CreditCurrency(
                key=key,
                display_name="Credits",
                unit_name="credit",
                rates=[pb.CreditRate(feature_key=feature_key, credits_per_unit=rate)],
            )
        )
    )
    return key


def rpc_error(call, code: grpc.StatusCode):
    """Run `call`, assert it fails with `code`; return (ErrorInfo, {field: description})."""
    with pytest.raises(grpc.RpcError) as caught:
        call()
    assert caught.value.code() == code, caught.value.details()
    info, violations = error_details(caught.value)
    assert info is not None and info.domain == "catalog.credit-grants"
    return info, {v.field: v.description for v in violations}


def outbox_rows(catalog: Catalog, kind: str, key: str) -> list[OutboxDeliveryRow]:
    """The outbox rows of one aggregate, by revision (read straight from the table)."""
    engine = create_db_engine(DatabaseSettings(url=catalog.engine_url))
    try:
        with engine.connect() as connection:
            return list(
                connection.execute(
                    select(OutboxDeliveryRow.__table__)
                    .where(OutboxDeliveryRow.kind == kind, OutboxDeliveryRow.aggregate_key == key)
                    .order_by(OutboxDeliveryRow.revision)
                )
            )
    finally:
        engine.dispose()


def wait_for(predicate, what: str, timeout_s: float = 30.0):
    """Poll `predicate` until it returns something truthy (returned); fail after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.02)
