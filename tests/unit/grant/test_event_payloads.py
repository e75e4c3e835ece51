"""The event log's payload JSON: the catch-up's batch encoder (adapters/events.py `_Encoder`,
built for speed) writes exactly what the generic encoder (`encode_payload`) writes, for every kind
of value a payload holds."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from hypothesis import given
from hypothesis import strategies as st

from grant_service.adapters.events import _Encoder, encode_payload, event_rows
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
    encoder = _Encoder()  # one per batch: what it remembers from one payload serves the next
    for payload in payloads:
        assert encoder.payload(payload) == encode_payload(payload)


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
