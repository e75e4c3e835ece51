"""The stream budget's accounting: a server-wide and a per-caller limit, slots given back once."""

from __future__ import annotations

import pytest

from credit_common.errors import ResourceExhausted
from credit_common.grpc.streams import ANONYMOUS, StreamBudget


def refused(budget: StreamBudget, caller: str) -> dict[str, str]:
    with pytest.raises(ResourceExhausted) as raised:
        budget.admit(caller)
    assert raised.value.reason == "STREAM_LIMIT_REACHED"
    return dict(raised.value.metadata)


def test_per_caller_then_server_limits():
    budget = StreamBudget(total=5, per_caller=2)
    try:
        held = [budget.admit("key-a"), budget.admit("key-a")]
        assert refused(budget, "key-a") == {"scope": "caller", "limit": "2"}
        held += [budget.admit(ANONYMOUS), budget.admit(ANONYMOUS), budget.admit("key-b")]
        assert budget.open == 5
        assert refused(budget, "key-c") == {"scope": "server", "limit": "5"}
        held[0]()
        held[0]()  # a second release gives nothing back twice
        assert budget.open == 4
        held.append(budget.admit("key-c"))
        assert refused(budget, "key-d")["scope"] == "server"
        for release in held:
            release()
        assert budget.open == 0
    finally:
        budget.close()


def test_limits_are_checked():
    for total, per_caller in ((0, 1), (4, 0), (4, 5)):
        with pytest.raises(ValueError):
            StreamBudget(total, per_caller)
