"""Timestamps <-> aware UTC datetimes: exactly what protobuf's own conversion gives, both ways."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

from google.protobuf import timestamp_pb2
from hypothesis import given
from hypothesis import strategies as st

from credit_common.grpc.timestamps import from_timestamp, to_timestamp
from grant_service.v1 import grant_service_pb2 as pb

instants = st.datetimes(min_value=datetime(1, 1, 1), max_value=datetime(9999, 12, 31, 23, 59, 59, 999999)).map(
    lambda naive: naive.replace(tzinfo=UTC)
)


@given(instants)
def test_to_timestamp_is_protobufs_own_conversion(value):
    expected = timestamp_pb2.Timestamp()
    expected.FromDatetime(value)
    assert to_timestamp(value) == expected


@given(instants)
def test_an_instant_comes_back_unchanged(value):
    message = pb.GetBalanceRequest(as_of_time=to_timestamp(value))
    assert from_timestamp(message, "as_of_time") == value


def test_an_offset_is_converted_to_utc_and_none_is_unset():
    paris = datetime(2026, 3, 1, 1, 30, tzinfo=timezone(timedelta(hours=1)))
    assert to_timestamp(paris) == to_timestamp(datetime(2026, 3, 1, 0, 30, tzinfo=UTC))
    assert to_timestamp(None) is None
    assert from_timestamp(pb.GetBalanceRequest(), "as_of_time") is None


@given(st.integers(min_value=-(2**63), max_value=2**63 - 1), st.integers(min_value=-(2**31), max_value=2**31 - 1))
def test_any_timestamp_converts_or_is_an_invalid_argument_on_its_field(seconds, nanos):
    from credit_common.errors import InvalidArgument

    message = pb.GetBalanceRequest(as_of_time=timestamp_pb2.Timestamp(seconds=seconds, nanos=nanos))
    in_range = -62_135_596_800 <= seconds <= 253_402_300_799 and 0 <= nanos < 10**9
    try:
        value = from_timestamp(message, "as_of_time", "request.as_of_time")
    except InvalidArgument as error:
        assert not in_range
        assert [v.field for v in error.violations] == ["request.as_of_time"]
        assert error.violations[0].reason == "TIMESTAMP_OUT_OF_RANGE"
    else:
        assert in_range
        assert value == message.as_of_time.ToDatetime(tzinfo=UTC)
