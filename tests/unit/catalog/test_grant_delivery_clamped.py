"""A change the grant service clamped to its now (an IMMEDIATELY amendment delivered late) is
delivered all the same, and the catalog logs it: alone and in a batch."""

from __future__ import annotations

import logging
from datetime import UTC, datetime

from catalog_service.adapters.grant_delivery import GrantDelivery
from catalog_service.domain.outbox import KIND_SUBSCRIPTION, OutcomeKind
from credit_common.grpc.timestamps import to_timestamp
from grant_service.v1 import grant_service_pb2 as pb

ASKED, APPLIED = datetime(2026, 3, 1, 9, tzinfo=UTC), datetime(2026, 3, 1, 9, 0, 0, 7000, tzinfo=UTC)
CLAMPED = [
    pb.ClampedChange(entitlement_key="credits", requested_time=to_timestamp(ASKED), applied_time=to_timestamp(APPLIED))
]


class _Stub:
    def ApplySubscription(self, request, timeout):
        return pb.ApplySubscriptionResponse(
            outcome=pb.APPLY_OUTCOME_APPLIED, current_revision=request.revision, clamped_changes=CLAMPED
        )

    def ApplySubscriptions(self, request, timeout):
        return pb.ApplySubscriptionsResponse(
            results=[
                pb.ApplySubscriptionResult(
                    outcome=pb.APPLY_OUTCOME_APPLIED, current_revision=r.revision, clamped_changes=CLAMPED
                )
                for r in request.requests
            ]
        )


def _delivery() -> GrantDelivery:
    delivery = GrantDelivery("127.0.0.1:1")
    delivery._stub = _Stub()  # type: ignore[assignment]
    return delivery


def test_a_clamped_change_is_delivered_and_logged(caplog):
    delivery = _delivery()
    payloads = [
        pb.ApplySubscriptionRequest(subscription_id=f"sub_{i}", revision=2).SerializeToString() for i in range(2)
    ]
    try:
        with caplog.at_level(logging.INFO, logger="catalog_service.grant_delivery"):
            alone = delivery.deliver(KIND_SUBSCRIPTION, payloads[0])
            batch = delivery.deliver_many(KIND_SUBSCRIPTION, payloads)
    finally:
        delivery.close()
    assert [o.kind for o in [alone, *batch]] == [OutcomeKind.DELIVERED] * 3
    logged = [r for r in caplog.records if "late change" in r.getMessage()]
    assert [(r.subscription_id, r.entitlement_key, r.applied_time) for r in logged] == [
        ("sub_0", "credits", "2026-03-01T09:00:00.007Z"),
        ("sub_0", "credits", "2026-03-01T09:00:00.007Z"),
        ("sub_1", "credits", "2026-03-01T09:00:00.007Z"),
    ]
