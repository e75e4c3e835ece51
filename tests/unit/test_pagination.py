from __future__ import annotations

import pytest

from credit_common.errors import InvalidArgument
from credit_common.pagination import DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE, next_page_token, page_request


def test_page_size_defaults_and_caps():
    assert page_request(0, "").size == DEFAULT_PAGE_SIZE
    assert page_request(5000, "").size == MAX_PAGE_SIZE
    with pytest.raises(InvalidArgument) as error:
        page_request(-1, "")
    assert error.value.violations[0].field == "page_size"


def test_token_round_trips_the_last_key():
    token = next_page_token(["acme", 42], filters=["plan-a"])
    assert page_request(10, token, filters=["plan-a"]).after == ("acme", 42)
    assert next_page_token(None) == ""


@pytest.mark.parametrize("token", ["garbage", "e30", "!!!"])
def test_rejects_foreign_tokens(token):
    with pytest.raises(InvalidArgument) as error:
        page_request(10, token)
    assert error.value.reason == "INVALID_PAGE_TOKEN"


def test_rejects_a_token_issued_for_other_filters():
    token = next_page_token(["x"], filters=["customer-a"])
    with pytest.raises(InvalidArgument) as error:
        page_request(10, token, filters=["customer-b"])
    assert error.value.reason == "INVALID_PAGE_TOKEN"
