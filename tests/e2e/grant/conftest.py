"""A real grant server (port 0) over a fresh database on each backend, with a manual clock."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime

import grpc
import pytest

from credit_common.clock import ManualClock
from credit_common.grpc.errors import error_details
from grant_service.entrypoints import app
from grant_service.v1 import grant_service_pb2 as pb
from grant_service.v1 import grant_service_pb2_grpc
from tests.support.servers import serving

REAL_NOW = datetime(2026, 6, 1, 12, tzinfo=UTC)


@dataclass
class GrantClient:
    stub: grant_service_pb2_grpc.GrantServiceStub
    clock: ManualClock
    running: object


@pytest.fixture
def grant(database_url_factory) -> Iterator[GrantClient]:
    clock = ManualClock(REAL_NOW)
    args = ["--enable-test-clocks", "--catch-up-interval", "0", "--events-heartbeat-interval", "0.2"]
    with serving(app.DEFINITION, app.build, database_url_factory("grant"), clock=clock, args=args) as (running, ch):
        yield GrantClient(grant_service_pb2_grpc.GrantServiceStub(ch), clock, running)


def ts(value: datetime):
    from credit_common.grpc.timestamps import to_timestamp

    return to_timestamp(value)


def utc(*args) -> datetime:
    return datetime(*args, tzinfo=UTC)


def expect_error(call, code: grpc.StatusCode, reason: str):
    """Run `call`, assert it fails with `code` and ErrorInfo `reason`; return (info, violations)."""
    with pytest.raises(grpc.RpcError) as raised:
        call()
    assert raised.value.code() == code, raised.value.details()
    info, violations = error_details(raised.value)
    assert info is not None and info.reason == reason, (info, raised.value.details())
    assert info.domain == "grant.credit-grants"
    return info, violations


def subscription(
    sub_id: str,
    customer: str,
    start: datetime,
    amounts: list[tuple[str, datetime | None]],
    *,
    revision: int = 1,
    cadence=pb.CADENCE_MONTHLY,
    currency: str = "ai-credits",
    end: datetime | None = None,
    clock_id: str = "",
) -> pb.ApplySubscriptionRequest:
    return pb.ApplySubscriptionRequest(
        subscription_id=sub_id,
        customer_key=customer,
        revision=revision,
        start_time=ts(start),
        end_time=ts(end) if end else None,
        test_clock_id=clock_id,
        credit_schedules=[
            pb.CreditSchedule(
                entitlement_key="credits",
                currency_key=currency,
                cadence=cadence,
                amounts=[pb.ScheduledAmount(amount=a, effective_time=ts(t) if t else None) for a, t in amounts],
            )
        ],
    )


def all_entries(stub, customer: str, **filters) -> list[pb.LedgerEntry]:
    entries, token = [], ""
    while True:
        reply = stub.ListLedgerEntries(
            pb.ListLedgerEntriesRequest(customer_key=customer, page_size=100, page_token=token, **filters), timeout=30
        )
        entries.extend(reply.entries)
        token = reply.next_page_token
        if not token:
            return entries
