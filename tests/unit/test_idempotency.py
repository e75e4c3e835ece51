from __future__ import annotations

from datetime import UTC, datetime

import pytest

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
