"""The one mapping from domain errors to gRPC statuses (AIP-193).

Every DomainError becomes its canonical code with a google.rpc.ErrorInfo
(reason, domain, metadata) and, when it has field violations, a
google.rpc.BadRequest. Clients read them with `grpc_status.rpc_status.from_call`.
"""

from __future__ import annotations

import grpc
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from credit_common.errors import DomainError

# A status travels in the response trailers, which a client refuses beyond its metadata limit
# (8-16 KiB by default): what a caller sent is never echoed unbounded.
MAX_MESSAGE_CHARS = 1000
MAX_DETAIL_CHARS = 300
MAX_VIOLATIONS = 20


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def to_rpc_status(error: DomainError, domain: str) -> grpc.Status:
    details = []
    metadata = {_clip(k, MAX_DETAIL_CHARS): _clip(v, MAX_DETAIL_CHARS) for k, v in error.metadata.items()}
    info = error_details_pb2.ErrorInfo(reason=error.reason, domain=domain, metadata=metadata)
    packed = any_pb2.Any()
    packed.Pack(info)
    details.append(packed)
    message = error.message
    if error.violations:
        shown = error.violations[:MAX_VIOLATIONS]
        if len(error.violations) > len(shown):
            message = f"{message} ({len(error.violations)} field violations, the first {len(shown)} listed)"
        bad_request = error_details_pb2.BadRequest(
            field_violations=[
                error_details_pb2.BadRequest.FieldViolation(
                    field=_clip(v.field, MAX_DETAIL_CHARS),
                    description=_clip(v.description, MAX_DETAIL_CHARS),
                    reason=v.reason,
                )
                for v in shown
            ]
        )
        packed = any_pb2.Any()
        packed.Pack(bad_request)
        details.append(packed)
    status = status_pb2.Status(
        code=code_pb2.Code.Value(error.code), message=_clip(message, MAX_MESSAGE_CHARS), details=details
    )
    return rpc_status.to_status(status)


def internal_status(domain: str) -> grpc.Status:
    """The status of an unexpected failure: generic message, nothing of the traceback."""
    info = error_details_pb2.ErrorInfo(reason="INTERNAL", domain=domain)
    packed = any_pb2.Any()
    packed.Pack(info)
    status = status_pb2.Status(code=code_pb2.INTERNAL, message="internal error; it has been logged", details=[packed])
    return rpc_status.to_status(status)


def status_code(error: DomainError) -> grpc.StatusCode:
    return grpc.StatusCode[error.code]


# --- client side -----------------------------------------------------------------------------


def error_details(
    call: grpc.RpcError,
) -> tuple[error_details_pb2.ErrorInfo | None, list[error_details_pb2.BadRequest.FieldViolation]]:
    """ErrorInfo and field violations carried by a failed call (for clients and tests)."""
    status = rpc_status.from_call(call)
    info: error_details_pb2.ErrorInfo | None = None
    violations: list[error_details_pb2.BadRequest.FieldViolation] = []
    if status is None:
        return info, violations
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
        elif detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad_request = error_details_pb2.BadRequest()
            detail.Unpack(bad_request)
            violations.extend(bad_request.field_violations)
    return info, violations
