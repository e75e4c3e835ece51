"""request_id idempotency for every mutation (AIP-155), in one helper.

The first call with a request_id runs its effect and records (method,
request_id, fingerprint of the request, reference to the result) in the same
transaction. A later call with the same request_id and the same fingerprint
changes nothing and returns the referenced resource; with another fingerprint
it is ALREADY_EXISTS (REQUEST_ID_REUSED)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from sqlalchemy.exc import IntegrityError

from catalog_service.service_layer.unit_of_work import CatalogUnitOfWork, UnitsOfWork
from credit_common.clock import Clock
from credit_common.errors import AlreadyExists, FieldViolation, InvalidArgument
from credit_common.ids import REQUEST_ID_MAX_LENGTH

T = TypeVar("T")


@dataclass(frozen=True)
class RequestKey:
    method: str
    request_id: str
    fingerprint: str


def request_key(method: str, request_id: str, fingerprint: str) -> RequestKey | None:
    """The idempotency key of a call, None without a request_id."""
    if len(request_id) > REQUEST_ID_MAX_LENGTH:
        raise InvalidArgument(
            "request_id is too long",
            violations=[FieldViolation("request_id", f"must be at most {REQUEST_ID_MAX_LENGTH} characters")],
        )
    return RequestKey(method, request_id, fingerprint) if request_id else None


def replayed(uow: CatalogUnitOfWork, key: RequestKey | None) -> str | None:
    """The result reference of an earlier call with this key, None if there was none."""
    if key is None:
        return None
    record = uow.idempotency.get(key.method, key.request_id)
    if record is None:
        return None
    if record.fingerprint != key.fingerprint:
        raise AlreadyExists(
            f"request_id {key.request_id!r} was already used for a different {key.method} request",
            reason="REQUEST_ID_REUSED",
            metadata={"request_id": key.request_id, "method": key.method},
        )
    return record.result_ref


def run_once(
    uows: UnitsOfWork,
    clock: Clock,
    key: RequestKey | None,
    effect: Callable[[CatalogUnitOfWork], tuple[T, str]],
    replay: Callable[[CatalogUnitOfWork, str], T],
) -> T:
    """Run `effect` (returning its result and a reference to it) in one write
    transaction, at most once per request key. A unique-constraint race with a
    concurrent call is retried once, which then replays or reports the conflict."""
    for attempt in range(2):
        try:
            with uows.write() as uow:
                ref = replayed(uow, key)
                if ref is not None:
                    return replay(uow, ref)
                result, ref = effect(uow)
                if key is not None:
                    uow.idempotency.add(key.method, key.request_id, key.fingerprint, ref, clock.now())
                uow.commit()
                return result
        except IntegrityError:
            if attempt == 1:
                raise
    raise AssertionError("unreachable")
