"""request_id idempotency for every mutation (AIP-155), in one helper.

The rule is credit_common.idempotency's; here a result is the first response,
as opaque bytes rendered by the caller's transport (`RequestKey.render`), and
a replay returns it as `Replayed`."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from catalog_service.service_layer.unit_of_work import CatalogUnitOfWork, Transactions
from credit_common.clock import Clock
from credit_common.idempotency import check_request_id, remember, replay

T = TypeVar("T")


@dataclass(frozen=True)
class RequestKey:
    method: str
    request_id: str
    fingerprint: str  # identifies the request's payload (everything but its request_id)
    render: Callable[[Any], bytes]  # the response to the result, as it is stored for replays


@dataclass(frozen=True)
class Replayed:
    """The stored response of the first call with the same request_id."""

    response: bytes


def request_key(method: str, request_id: str, fingerprint: str, render: Callable[[Any], bytes]) -> RequestKey | None:
    """The idempotency key of a call, None without a request_id."""
    check_request_id(request_id)
    return RequestKey(method, request_id, fingerprint, render) if request_id else None


def replayed(uow: CatalogUnitOfWork, key: RequestKey | None) -> Replayed | None:
    """The first response to this key, None if there was no call with it yet."""
    if key is None:
        return None
    response = replay(uow.idempotency, key.method, key.request_id, key.fingerprint)
    return None if response is None else Replayed(response)


def run_once(
    transactions: Transactions, clock: Clock, key: RequestKey | None, effect: Callable[[CatalogUnitOfWork], T]
) -> T | Replayed:
    """Run `effect` in one write transaction, at most once per request key. A concurrent call
    with the same key that commits first makes this transaction's record a constraint violation:
    the runner runs it again, and it then replays (or reports the reuse of the key)."""

    def once(uow: CatalogUnitOfWork) -> T | Replayed:
        earlier = replayed(uow, key)
        if earlier is not None:
            return earlier
        result = effect(uow)
        if key is not None:
            remember(uow.idempotency, key.method, key.request_id, key.fingerprint, key.render(result), clock.now())
        return result

    return transactions.write(once)
