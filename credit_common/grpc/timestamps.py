"""Conversions between google.protobuf.Timestamp and aware UTC datetimes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from google.protobuf import timestamp_pb2
from google.protobuf.message import Message

from credit_common.clock import ensure_utc
from credit_common.errors import FieldViolation, InvalidArgument
from credit_common.grpc.validation import TIMESTAMP_OUT_OF_RANGE, timestamp_problem


def to_timestamp(value: datetime | None) -> timestamp_pb2.Timestamp | None:
    """A Timestamp for `value`, or None (leave the field unset) for None."""
    if value is None:
        return None
    message = timestamp_pb2.Timestamp()
    set_timestamp(message, value)
    return message


def set_timestamp(message: timestamp_pb2.Timestamp, value: datetime) -> None:
    """Set `message` (e.g. a Timestamp field of a message being built, in place) to `value`."""
    # Timestamp.FromDatetime goes through a time tuple and calendar.timegm, a hot spot of GetBalance
    # (docs/performance.md). A timedelta from the epoch gives the same seconds and (non-negative) nanos.
    delta = ensure_utc(value) - _EPOCH
    message.seconds = delta.days * 86_400 + delta.seconds
    message.nanos = delta.microseconds * 1000


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def from_timestamp(message: Message, field: str, path: str = "") -> datetime | None:
    """The aware UTC datetime of `message.<field>`, or None if the field is unset.

    A Timestamp no datetime can hold (year outside 1..9999, nanos outside [0, 1e9))
    is an InvalidArgument on `path` (default: `field`); nothing else can be raised.
    Sub-microsecond nanos are truncated."""
    if not message.HasField(field):
        return None
    ts: timestamp_pb2.Timestamp = getattr(message, field)
    problem = timestamp_problem(ts.seconds, ts.nanos)
    if problem is not None:
        violation = FieldViolation(path or field, problem, TIMESTAMP_OUT_OF_RANGE)
        raise InvalidArgument("the request has invalid fields", violations=[violation])
    return _EPOCH + timedelta(seconds=ts.seconds, microseconds=ts.nanos // 1000)
