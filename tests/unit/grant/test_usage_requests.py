"""A ReportUsageBatch's usages converted with what the batch has seen valid (converters.UsageRequests):
each usage gets exactly what `usage_request` gives it alone, the same request or the same violations."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from credit_common.errors import InvalidArgument
from grant_service.entrypoints import converters as conv
from grant_service.v1 import grant_service_pb2 as pb

# Valid values most of the time, so that a batch has seen one valid when a bad one comes.
_KEYS = st.sampled_from(["acme"] * 6 + ["gpt", "ai-credits", "", "Bad Key", "x" * 64, "a" * 63])
_QUANTITIES = st.sampled_from(["1"] * 6 + ["1.0", "0.5", "0", "-1", "", "abc", "1e3", "2.500"])
_REQUEST_IDS = st.sampled_from(["r1"] * 6 + ["", "x" * 128, "x" * 129])


def _alone(request: pb.ReportUsageRequest):
    try:
        return conv.usage_request(request)
    except InvalidArgument as error:
        return [(v.field, v.description) for v in error.violations]


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.builds(
            pb.ReportUsageRequest,
            request_id=_REQUEST_IDS,
            customer_key=_KEYS,
            feature_key=_KEYS,
            quantity=_QUANTITIES,
            currency_key=_KEYS,
        ),
        min_size=1,
        max_size=20,
    )
)
def test_each_usage_is_converted_as_it_would_be_alone(requests):
    convert = conv.UsageRequests()
    for request in requests:
        try:
            got = convert(request)
        except InvalidArgument as error:
            got = [(v.field, v.description) for v in error.violations]
        assert got == _alone(request)
