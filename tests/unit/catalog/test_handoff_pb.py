"""The handoff state as the API shows it (converters.handoff_pb)."""

from __future__ import annotations

from datetime import UTC, datetime

from catalog_service.domain.outbox import HandoffState, HandoffStatus
from catalog_service.entrypoints.converters import handoff_pb
from catalog_service.v1 import catalog_service_pb2 as pb
from credit_common.grpc.timestamps import to_timestamp

T = datetime(2026, 3, 1, 9, tzinfo=UTC)


def test_pending_shows_the_last_error_and_the_next_attempt():
    state = HandoffState(HandoffStatus.PENDING, 2, 1, "UNAVAILABLE: down", 3, T, T)
    assert handoff_pb(state) == pb.HandoffState(
        status=pb.HANDOFF_STATUS_PENDING,
        delivered_revision=1,
        failure_reason="UNAVAILABLE: down",
        attempts=3,
        next_attempt_time=to_timestamp(T),
    )


def test_delivered_has_no_reason_nor_next_attempt():
    state = HandoffState(HandoffStatus.DELIVERED, 2, 2, None, 1, None, T)
    assert handoff_pb(state) == pb.HandoffState(status=pb.HANDOFF_STATUS_DELIVERED, delivered_revision=2, attempts=1)


def test_failed_shows_the_rejection_and_nothing_queued_is_unspecified():
    state = HandoffState(HandoffStatus.FAILED, 1, None, "INVALID_ARGUMENT: bad [reason=X]", 1, T, None)
    assert handoff_pb(state) == pb.HandoffState(
        status=pb.HANDOFF_STATUS_FAILED, failure_reason="INVALID_ARGUMENT: bad [reason=X]", attempts=1
    )
    assert handoff_pb(HandoffState(HandoffStatus.NONE)) == pb.HandoffState()
