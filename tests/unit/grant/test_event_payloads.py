"""The event log's payload JSON: the batch encoder (adapters/events.py `encode_payloads`, built
for speed) writes exactly what the generic encoder (`encode_payload`) writes, for every kind of
value a payload holds, in batches of one shape or of several."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal

from hypothesis import given
from hypothesis import strategies as st

from grant_service.adapters.events import encode_payload, encode_payloads, event_columns, event_rows
from grant_service.domain.events import EventType, NewEvent

_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.text(),  # quotes, backslashes, control and non-ASCII characters
    st.decimals(allow_nan=False, allow_infinity=False, places=6),
    st.datetimes(timezones=st.just(UTC)),
    st.sampled_from(list(EventType)),
)
_VALUES = st.recursive(
    _SCALARS, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner, max_size=3)
)
_PAYLOADS = st.dictionaries(st.text(), _VALUES, max_size=8)


@given(st.lists(_PAYLOADS, max_size=5))
def test_the_batch_encoder_writes_what_the_generic_one_does(payloads):
    assert encode_payloads(payloads) == [encode_payload(payload) for payload in payloads]


# Payloads of one shape (one event type's fields), each field of one kind or of several.
_FIELDS = st.lists(st.text(max_size=4), min_size=0, max_size=5, unique=True)


@given(_FIELDS.flatmap(lambda names: st.lists(st.fixed_dictionaries({n: _VALUES for n in names}), max_size=6)))
def test_payloads_of_one_shape_are_written_a_field_at_a_time_as_the_generic_encoder_does(payloads):
    assert encode_payloads(payloads) == [encode_payload(payload) for payload in payloads]


def test_equal_values_of_different_kinds_or_texts_are_each_written_as_themselves():
    start = datetime(2026, 12, 1, tzinfo=UTC)
    payloads = [
        {"v": Decimal("1.50"), "w": 1, "t": start},
        {"v": Decimal("1.5"), "w": True, "t": start.astimezone(timezone(timedelta(hours=2)))},
        {"v": 1, "w": Decimal(1), "t": start},
    ]
    assert encode_payloads(payloads) == [encode_payload(payload) for payload in payloads]
    assert [json.loads(text) for text in encode_payloads(payloads)] == [
        {"v": "1.5", "w": 1, "t": "2026-12-01T00:00:00Z"},
        {"v": "1.5", "w": True, "t": "2026-12-01T00:00:00Z"},
        {"v": 1, "w": "1", "t": "2026-12-01T00:00:00Z"},
    ]


def test_a_storm_batch_shares_its_values_and_each_payload_stays_its_own():
    start = datetime(2026, 12, 1, tzinfo=UTC)
    events = [
        NewEvent(
            f"evt_{i}",
            EventType.CREDITS_GRANTED,
            f"cust-{i}",
            "ai-credits",
            "",
            start,
            f"CREDITS_GRANTED:grt_{i}",
            {
                "grant_id": f"grt_{i}",
                "amount": Decimal("1000.50") if i % 2 else Decimal(1000),
                "period_index": i,
                "effective_time": start,
                "expire_time": start + timedelta(days=31),
                "flag": i == 1,
            },
        )
        for i in range(3)
    ]
    rows = event_rows(events, start)
    assert [json.loads(row["payload"]) for row in rows] == [
        {
            "grant_id": f"grt_{i}",
            "amount": "1000.5" if i % 2 else "1000",
            "period_index": i,
            "effective_time": "2026-12-01T00:00:00Z",
            "expire_time": "2027-01-01T00:00:00Z",
            "flag": i == 1,
        }
        for i in range(3)
    ]
    assert [row["payload"] for row in rows] == [encode_payload(e.payload) for e in events]
    columns = event_columns(events, start)
    assert [dict(zip(columns, values, strict=True)) for values in zip(*columns.values(), strict=True)] == rows
    assert rows[1]["type"] == "CREDITS_GRANTED" and rows[2]["recorded_time"] == start
