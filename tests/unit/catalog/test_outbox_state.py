"""The handoff state of an aggregate, computed from its outbox rows."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from catalog_service.domain.outbox import (
    STATUS_DELIVERED,
    STATUS_FAILED,
    STATUS_PENDING,
    DeliveryRecord,
    HandoffStatus,
    summarize,
)

T0 = datetime(2026, 1, 31, 12, 0, tzinfo=UTC)


def row(revision: int, status: str, *, attempts: int = 1, error: str | None = None) -> DeliveryRecord:
    delivered_at = T0 + timedelta(minutes=revision) if status == STATUS_DELIVERED else None
    return DeliveryRecord(revision, status, attempts, error, T0 + timedelta(hours=revision), delivered_at)


def test_nothing_queued():
    state = summarize([])
    assert state.status is HandoffStatus.NONE
    assert state.latest_delivered_revision is None


def test_all_delivered_reports_the_latest_revision():
    state = summarize([row(2, STATUS_DELIVERED), row(1, STATUS_DELIVERED)])
    assert state.status is HandoffStatus.DELIVERED
    assert (state.latest_revision, state.latest_delivered_revision) == (2, 2)
    assert state.delivered_at == T0 + timedelta(minutes=2)
    assert state.reason is None


def test_pending_reports_the_revision_being_sent_and_its_last_error():
    state = summarize(
        [
            row(1, STATUS_DELIVERED),
            row(3, STATUS_PENDING, attempts=0),
            row(2, STATUS_PENDING, attempts=4, error="UNAVAILABLE: down"),
        ]
    )
    assert state.status is HandoffStatus.PENDING
    assert state.reason == "UNAVAILABLE: down"
    assert state.attempts == 4
    assert state.next_attempt_at == T0 + timedelta(hours=2)
    assert (state.latest_revision, state.latest_delivered_revision) == (3, 1)


def test_a_parked_latest_revision_is_failed_even_if_an_older_one_was_delivered():
    state = summarize([row(1, STATUS_DELIVERED), row(2, STATUS_FAILED, error="INVALID_ARGUMENT: bad amount")])
    assert state.status is HandoffStatus.FAILED
    assert state.reason == "INVALID_ARGUMENT: bad amount"
    assert state.latest_delivered_revision == 1


def test_a_parked_revision_superseded_by_a_delivered_one_is_delivered():
    state = summarize([row(1, STATUS_FAILED, error="INVALID_ARGUMENT: x"), row(2, STATUS_DELIVERED)])
    assert state.status is HandoffStatus.DELIVERED
    assert state.latest_delivered_revision == 2
    assert state.reason is None
