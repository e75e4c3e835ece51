"""Errors of the credit-grants services as Python exceptions.

Every failed call raises an `ApiError` (a subclass per gRPC status code: `NotFound`,
`InvalidArgument`, ...) that carries what the server sent: the status code and message, the
google.rpc.ErrorInfo `reason`, `domain` and `metadata`, and the google.rpc.BadRequest field
violations (`violations`, one per bad field). The request_id the client sent (generated when the
caller gave none) is on it too, so a caller can retry later with the same id."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import grpc
from google.rpc import error_details_pb2
from grpc_status import rpc_status


@dataclass(frozen=True, slots=True)
class FieldViolation:
    field: str  # the request field's path, e.g. "entitlement_values[ai-credits-monthly]"
    description: str
    reason: str = ""  # e.g. MISSING, NUL_CHARACTER; often empty


class ApiError(Exception):
    """A call the server (or the channel) refused. `str(error)` is one line in plain words."""

    code: grpc.StatusCode = grpc.StatusCode.UNKNOWN

    def __init__(
        self,
        code: grpc.StatusCode,
        message: str,
        *,
        reason: str = "",
        domain: str = "",
        metadata: Mapping[str, str] | None = None,
        violations: tuple[FieldViolation, ...] = (),
        method: str = "",
        request_id: str = "",
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.reason = reason
        self.domain = domain
        self.metadata = dict(metadata or {})
        self.violations = tuple(violations)
        self.method = method
        self.request_id = request_id

    def __str__(self) -> str:
        text = f"{self.code.name}: {self.message}"
        if self.reason:
            text += f" (reason {self.reason})"
        for v in self.violations:
            text += f"; {v.field}: {v.description}"
        return text

    def as_dict(self) -> dict:
        """A JSON-ready form (the CLI's `--output json` errors)."""
        return {
            "code": self.code.name,
            "message": self.message,
            "reason": self.reason,
            "domain": self.domain,
            "metadata": self.metadata,
            "field_violations": [
                {"field": v.field, "description": v.description, "reason": v.reason} for v in self.violations
            ],
            "method": self.method,
            "request_id": self.request_id,
        }


class InvalidArgument(ApiError):
    code = grpc.StatusCode.INVALID_ARGUMENT


class NotFound(ApiError):
    code = grpc.StatusCode.NOT_FOUND


class AlreadyExists(ApiError):
    code = grpc.StatusCode.ALREADY_EXISTS


class FailedPrecondition(ApiError):
    code = grpc.StatusCode.FAILED_PRECONDITION


class ResourceExhausted(ApiError):
    """INSUFFICIENT_CREDITS (metadata "available"), or a server's concurrency limit."""

    code = grpc.StatusCode.RESOURCE_EXHAUSTED


class Unauthenticated(ApiError):
    code = grpc.StatusCode.UNAUTHENTICATED


class PermissionDenied(ApiError):
    """ROLE_REQUIRED: metadata "required_role" and "accepted_roles" say which key is needed."""

    code = grpc.StatusCode.PERMISSION_DENIED


class Unavailable(ApiError):
    """The server could not be reached (after the client's retries) or is shutting down."""

    code = grpc.StatusCode.UNAVAILABLE


class DeadlineExceeded(ApiError):
    """The deadline passed: a mutation may or may not have happened; retry it with the same request_id."""

    code = grpc.StatusCode.DEADLINE_EXCEEDED


_BY_CODE: dict[grpc.StatusCode, type[ApiError]] = {
    cls.code: cls
    for cls in (
        InvalidArgument,
        NotFound,
        AlreadyExists,
        FailedPrecondition,
        ResourceExhausted,
        Unauthenticated,
        PermissionDenied,
        Unavailable,
        DeadlineExceeded,
    )
}


def from_rpc_error(error: grpc.RpcError, *, method: str = "", request_id: str = "") -> ApiError:
    """The ApiError for a failed call, with the ErrorInfo and field violations it carried."""
    code = error.code() if callable(getattr(error, "code", None)) else grpc.StatusCode.UNKNOWN
    message = (error.details() if callable(getattr(error, "details", None)) else str(error)) or code.name
    reason, domain, metadata, violations = "", "", {}, []
    try:
        status = rpc_status.from_call(error)
    except ValueError:  # a status whose details disagree with its code or message
        status = None
    for detail in status.details if status is not None else ():
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            reason, domain, metadata = info.reason, info.domain, dict(info.metadata)
        elif detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            violations.extend(FieldViolation(v.field, v.description, v.reason) for v in bad.field_violations)
    cls = _BY_CODE.get(code, ApiError)
    return cls(
        code,
        message,
        reason=reason,
        domain=domain,
        metadata=metadata,
        violations=tuple(violations),
        method=method,
        request_id=request_id,
    )
