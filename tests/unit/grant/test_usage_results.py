"""A ReportUsageBatch's answer is built from a copy of a result with the fields its usages share
(converters.add_usage_results): each result must be exactly what ReportUsage's answer would hold."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

from hypothesis import given, settings
from hypothesis import strategies as st

from credit_common.errors import ResourceExhausted
from grant_service.domain.model import Usage
from grant_service.entrypoints import converters as conv
from grant_service.service_layer.usage import UsageResult
from grant_service.v1 import grant_service_pb2 as pb

T0 = datetime(2026, 12, 7, 9, 30, tzinfo=UTC)


@st.composite
def outcomes(draw):
    if draw(st.integers(0, 5)) == 0:
        return ResourceExhausted("insufficient credits", reason="INSUFFICIENT_CREDITS", metadata={"x": "1"})
    i = draw(st.integers(0, 10**6))
    quantity = draw(st.sampled_from([Decimal(1), Decimal("1.0"), Decimal("2.5")]))
    rate = draw(st.sampled_from([Decimal(1), Decimal("0.25")]))
    usage = Usage(
        f"use_{i}",
        f"r{i}",
        f"c{draw(st.integers(0, 3))}",
        draw(st.sampled_from(["gpt", "render"])),
        quantity,
        draw(st.sampled_from(["ai-credits", "gpu-credits"])),
        rate,
        quantity * rate,
        T0 + timedelta(microseconds=draw(st.sampled_from([0, 0, 1, 1001]))),
        Decimal(draw(st.integers(0, 10**9))) / 100,
    )
    debits = [(f"grt_{j}", Decimal(j + 1) / 4) for j in range(draw(st.integers(0, 2)))]
    return UsageResult(usage, debits, replayed=draw(st.booleans()))


@settings(max_examples=200, deadline=None)
@given(st.lists(outcomes(), max_size=12))
def test_each_result_is_what_it_would_be_built_alone(results):
    built = pb.ReportUsageBatchResponse()
    conv.add_usage_results(built.results, results)
    assert len(built.results) == len(results)
    for message, outcome in zip(built.results, results, strict=True):
        if isinstance(outcome, ResourceExhausted):
            assert message.outcome == pb.USAGE_OUTCOME_REJECTED
            assert message.rejection.reason == "INSUFFICIENT_CREDITS"
            continue
        alone = pb.ReportUsageResponse()
        conv.fill_usage(alone.usage, outcome.usage, outcome.debits)
        expected = pb.USAGE_OUTCOME_REPLAYED if outcome.replayed else pb.USAGE_OUTCOME_ACCEPTED
        assert message.outcome == expected
        assert message.usage == alone.usage
        assert not message.HasField("rejection")
