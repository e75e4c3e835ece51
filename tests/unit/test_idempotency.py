from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from credit_common.errors import AlreadyExists, InvalidArgument
from credit_common.idempotency import SeenRequest, check_request_id, fingerprint, remember, replay

NOW = datetime(2026, 1, 1, tzinfo=UTC)


class MemoryStore:
    def __init__(self) -> None:
        self.rows: dict[tuple[str, str], SeenRequest[str]] = {}

    def get(self, scope, request_id):
        return self.rows.get((scope, request_id))

    def add(self, scope, request_id, fingerprint, result, now):
        assert (scope, request_id) not in self.rows
        self.rows[(scope, request_id)] = SeenRequest(fingerprint, result)


def test_first_call_is_new_then_replays_the_first_result():
    store = MemoryStore()
    print_ = fingerprint("acme", "10")
    assert replay(store, "ReportUsage", "r-1", print_) is None
    remember(store, "ReportUsage", "r-1", print_, "use_1", NOW)
    assert replay(store, "ReportUsage", "r-1", fingerprint("acme", "10")) == "use_1"


def test_same_request_id_with_another_request_is_already_exists():
    store = MemoryStore()
    remember(store, "ReportUsage", "r-1", fingerprint("acme", "10"), "use_1", NOW)
    with pytest.raises(AlreadyExists) as error:
        replay(store, "ReportUsage", "r-1", fingerprint("acme", "11"))
    assert error.value.reason == "REQUEST_ID_REUSED"
    assert error.value.metadata == {"request_id": "r-1", "method": "ReportUsage"}


def test_scopes_are_independent_and_no_request_id_records_nothing():
    store = MemoryStore()
    remember(store, "VoidGrant", "r-1", fingerprint("g"), "grt_1", NOW)
    assert replay(store, "CreateGrant", "r-1", fingerprint("x")) is None
    remember(store, "CreateGrant", "", fingerprint("x"), "grt_2", NOW)
    assert replay(store, "CreateGrant", "", fingerprint("x")) is None
    assert len(store.rows) == 1


def test_fingerprint_is_order_sensitive_and_stable():
    assert fingerprint("a", "b") == fingerprint("a", "b")
    assert fingerprint("a", "b") != fingerprint("b", "a")


def test_request_id_length_is_bounded():
    check_request_id("x" * 128)
    with pytest.raises(InvalidArgument) as error:
        check_request_id("x" * 129)
    assert error.value.violations[0].field == "request_id"


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.one_of(
            st.text(),  # any text
            st.text(alphabet=' !"#[\\]~\x1f\x7fa0-_.'),  # the plain path's edges
        ),
        max_size=5,
    )
)
def test_a_fingerprint_is_the_sha256_of_the_values_json_whatever_their_text(values):
    """Fingerprints are stored with request ids: they must stay what they were (the SHA-256 of the
    values' JSON), including on the fast path for plain strings."""
    reference = hashlib.sha256(json.dumps(tuple(values), default=str, sort_keys=True).encode()).hexdigest()
    assert fingerprint(*values) == reference


def test_a_fingerprint_of_other_values_is_their_json_too():
    values = ("acme", Decimal("1.50"), None, 3, 'say "hi"\\', "é", "\x7f")
    reference = hashlib.sha256(json.dumps(values, default=str, sort_keys=True).encode()).hexdigest()
    assert fingerprint(*values) == reference
    assert fingerprint("c1", "gpt", "1", "") == hashlib.sha256(b'["c1", "gpt", "1", ""]').hexdigest()
