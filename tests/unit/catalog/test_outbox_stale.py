"""judge_stale: a STALE answer counts as delivered only if the revision the grant service holds is
one the catalog queued."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from catalog_service.domain.outbox import (
    KIND_SUBSCRIPTION,
    ClaimedDelivery,
    DeliveryOutcome,
    OutcomeKind,
    judge_stale,
)


def claim(revision: int, latest: int) -> ClaimedDelivery:
    return ClaimedDelivery(1, KIND_SUBSCRIPTION, "sub-1", revision, b"", 1, datetime(2026, 1, 1, tzinfo=UTC), latest)


@pytest.mark.parametrize(
    ("revision", "latest", "held", "expected"),
    [
        (1, 3, 2, OutcomeKind.DELIVERED),  # superseded by the catalog's own revision 2
        (1, 3, 3, OutcomeKind.DELIVERED),
        (3, 3, 4, OutcomeKind.PARKED),  # the catalog's newest, and the grant service holds more
        (1, 3, 2**63 - 1, OutcomeKind.PARKED),
    ],
)
def test_a_stale_answer_is_judged_by_the_revision_held(revision, latest, held, expected):
    outcome = judge_stale(claim(revision, latest), DeliveryOutcome.delivered("STALE", held_revision=held))
    assert outcome.kind is expected
    if expected is OutcomeKind.PARKED:
        assert outcome.held_revision == held
        assert f"holds revision {held}, above the catalog's latest revision {latest}" in outcome.detail


@pytest.mark.parametrize(
    "outcome",
    [DeliveryOutcome.delivered("APPLIED"), DeliveryOutcome.retry("UNAVAILABLE"), DeliveryOutcome.parked("bad")],
)
def test_other_outcomes_are_kept(outcome):
    assert judge_stale(claim(1, 1), outcome) is outcome
