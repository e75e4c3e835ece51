"""Domain errors: one class per canonical status, free of gRPC.

Services raise these; the gRPC layer (credit_common.grpc.errors) turns each
into a status with a google.rpc.ErrorInfo and, for bad fields, a
google.rpc.BadRequest. Codes are the canonical status names.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class FieldViolation:
    """One problem with one field: `field` is a path such as
    "plan.credit_entitlements[0].cadence" or "entitlement_values[seats]"."""

    field: str
    description: str
    reason: str = ""


class DomainError(Exception):
    """Base of every error a caller can cause or be told about."""

    code: str = "UNKNOWN"
    default_reason: str = "UNKNOWN"

    def __init__(
        self,
        message: str,
        *,
        reason: str | None = None,
        metadata: Mapping[str, str] | None = None,
        violations: Iterable[FieldViolation] = (),
    ) -> None:
        super().__init__(message)
        self.message = message
        self.reason = reason or self.default_reason
        self.metadata: dict[str, str] = {k: str(v) for k, v in (metadata or {}).items()}
        self.violations: tuple[FieldViolation, ...] = tuple(violations)


class InvalidArgument(DomainError):
    code = "INVALID_ARGUMENT"
    default_reason = "INVALID_ARGUMENT"


class NotFound(DomainError):
    code = "NOT_FOUND"
    default_reason = "NOT_FOUND"


def not_found(what: str, key: str, reason: str, *, key_name: str = "key") -> NotFound:
    """The one way both services say that a resource named by the caller does not exist: the message
    "<what> '<key>' does not exist", `reason` (UPPER_SNAKE: PLAN_NOT_FOUND, TEST_CLOCK_NOT_FOUND ...)
    and the key in the metadata under `key_name` (the request's name for it: "key", "customer_key",
    "test_clock_id" ...)."""
    return NotFound(f"{what} {key!r} does not exist", reason=reason, metadata={key_name: key})


def test_clock_not_found(test_clock_id: str) -> NotFound:
    """A test clock of the grant service that does not exist (told by the grant service, and by the
    catalog for the clocks it reads there)."""
    return not_found("test clock", test_clock_id, "TEST_CLOCK_NOT_FOUND", key_name="test_clock_id")


test_clock_not_found.__test__ = False  # type: ignore[attr-defined]  # not a pytest test


class AlreadyExists(DomainError):
    code = "ALREADY_EXISTS"
    default_reason = "ALREADY_EXISTS"


class FailedPrecondition(DomainError):
    code = "FAILED_PRECONDITION"
    default_reason = "FAILED_PRECONDITION"


class ResourceExhausted(DomainError):
    code = "RESOURCE_EXHAUSTED"
    default_reason = "RESOURCE_EXHAUSTED"


class Aborted(DomainError):
    """A conflict with a concurrent change; the caller may retry."""

    code = "ABORTED"
    default_reason = "CONCURRENT_MODIFICATION"


class Unavailable(DomainError):
    """A dependency (the database, another service) is down; retryable."""

    code = "UNAVAILABLE"
    default_reason = "UNAVAILABLE"


class Unauthenticated(DomainError):
    """The caller did not prove who it is: no API key, or one the service does not accept."""

    code = "UNAUTHENTICATED"
    default_reason = "UNAUTHENTICATED"


class PermissionDenied(DomainError):
    """The caller is known but its roles do not allow the method."""

    code = "PERMISSION_DENIED"
    default_reason = "PERMISSION_DENIED"


class DeadlineExceeded(DomainError):
    code = "DEADLINE_EXCEEDED"
    default_reason = "DEADLINE_EXCEEDED"


class Cancelled(DomainError):
    """The caller cancelled the call: nothing of it was committed (credit_common.calls)."""

    code = "CANCELLED"
    default_reason = "CANCELLED"


class Violations:
    """Collects field violations so that one request reports every problem at once."""

    def __init__(self) -> None:
        self._items: list[FieldViolation] = []

    def add(self, field: str, description: str, reason: str = "") -> None:
        self._items.append(FieldViolation(field, description, reason))

    def extend(self, items: Iterable[FieldViolation]) -> None:
        self._items.extend(items)

    def __bool__(self) -> bool:
        return bool(self._items)

    def __iter__(self):
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def raise_if_any(
        self,
        message: str = "the request has invalid fields",
        *,
        reason: str | None = None,
        metadata: Mapping[str, str] | None = None,
    ) -> None:
        if self._items:
            raise InvalidArgument(message, reason=reason, metadata=metadata, violations=self._items)
