from __future__ import annotations

from datetime import UTC, datetime

import pytest

from credit_common.errors import InvalidArgument
from credit_common.pagination import DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE, next_page_token, page_request

M = "/svc.v1.Service/ListThings"
KEY = (str, int)


def test_page_size_defaults_and_caps():
    assert page_request(0, "", method=M, key=KEY).size == DEFAULT_PAGE_SIZE
    assert page_request(5000, "", method=M, key=KEY).size == MAX_PAGE_SIZE
    with pytest.raises(InvalidArgument) as error:
        page_request(-1, "", method=M, key=KEY)
    assert error.value.violations[0].field == "page_size"


def test_token_round_trips_the_last_key():
    token = next_page_token(["acme", 42], filters=["plan-a"], method=M)
    assert page_request(10, token, filters=["plan-a"], method=M, key=KEY).after == ("acme", 42)
    assert next_page_token(None, method=M) == ""


@pytest.mark.parametrize("token", ["garbage", "e30", "!!!"])
def test_rejects_foreign_tokens(token):
    with pytest.raises(InvalidArgument) as error:
        page_request(10, token, method=M, key=KEY)
    assert error.value.reason == "INVALID_PAGE_TOKEN"


def test_rejects_a_token_issued_for_other_filters():
    token = next_page_token(["x", 1], filters=["customer-a"], method=M)
    with pytest.raises(InvalidArgument) as error:
        page_request(10, token, filters=["customer-b"], method=M, key=KEY)
    assert error.value.reason == "INVALID_PAGE_TOKEN"


def test_a_datetime_key_round_trips_as_an_aware_utc_datetime():
    instant = datetime(2026, 1, 31, 10, 0, 0, 123456, tzinfo=UTC)
    token = next_page_token([instant, "id-1"], method=M)
    assert page_request(10, token, method=M, key=(datetime, str)).after == (instant, "id-1")


def test_rejects_a_token_of_another_method():
    token = next_page_token(["x", 1], method="/svc.v1.Service/ListOthers")
    with pytest.raises(InvalidArgument) as error:
        page_request(10, token, method=M, key=KEY)
    assert error.value.reason == "INVALID_PAGE_TOKEN"
    assert [v.field for v in error.value.violations] == ["page_token"]


def _forged(after: object, filters=(), method: str = M) -> str:
    """A token with our fingerprint around any sort key, as an attacker who read the code could make."""
    import base64
    import json

    from credit_common.pagination import _fingerprint

    payload = json.dumps({"a": after, "f": _fingerprint(method, list(filters))})
    return base64.urlsafe_b64encode(payload.encode()).decode()


@pytest.mark.parametrize(
    ("after", "key"),
    [
        (["x"], KEY),  # too short
        (["x", 1, 2], KEY),  # too long
        ([1, 1], KEY),  # int for str
        (["x", "1"], KEY),  # str for int
        (["x", True], KEY),  # bool for int
        (["x", 1.5], KEY),  # float for int
        (["x", 2**63], KEY),  # beyond BIGINT
        (["x\u0000", 1], KEY),  # NUL
        ([{"x": 1}, 1], KEY),  # object
        ([None, 1], KEY),
        (["2026-01-01T00:00:00", "a"], (datetime, str)),  # naive
        (["0001-01-01T00:00:00+01:00", "a"], (datetime, str)),  # before year 1 in UTC
        (["yesterday", "a"], (datetime, str)),
        (["x" * 10_000, 1], KEY),
    ],
)
def test_rejects_a_forged_sort_key(after, key):
    with pytest.raises(InvalidArgument) as error:
        page_request(10, _forged(after), method=M, key=key)
    assert error.value.reason == "INVALID_PAGE_TOKEN"


@pytest.mark.parametrize("payload", ["[]", "null", '{"a": [], "f": 1}', '{"a": "x", "f": ""}', "[" * 5000])
def test_rejects_tokens_of_any_other_shape(payload):
    import base64

    token = base64.urlsafe_b64encode(payload.encode()).decode()
    with pytest.raises(InvalidArgument) as error:
        page_request(10, token, method=M, key=KEY)
    assert error.value.reason == "INVALID_PAGE_TOKEN"


def test_cut_keeps_a_page_and_tokens_the_next_one_after_its_last_item():
    page = page_request(2, "", filters=["f"], method=M, key=KEY)
    items, token = page.cut([("a", 1), ("b", 2), ("c", 3)], lambda item: item)  # read with one extra
    assert items == [("a", 1), ("b", 2)]
    assert page_request(2, token, filters=["f"], method=M, key=KEY).after == ("b", 2)
    assert page.cut([("a", 1), ("b", 2)], lambda item: item) == ([("a", 1), ("b", 2)], "")
    assert page.cut([], lambda item: item) == ([], "")
