"""One server interceptor: checks every request (credit_common.grpc.validation),
answers undecodable request bytes with INVALID_ARGUMENT, maps domain errors to
statuses, turns anything unexpected into a generic INTERNAL (traceback logged,
never sent), and logs one structured line per RPC (method, code, duration)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import grpc
from google.protobuf.message import DecodeError

from credit_common.errors import DomainError, InvalidArgument, Unavailable
from credit_common.grpc.errors import internal_status, to_rpc_status
from credit_common.grpc.validation import check_request
from credit_common.logging import AccessLog

log = logging.getLogger("credit_grants.rpc")
access_log = AccessLog("credit_grants.rpc", "rpc")


class ServiceInterceptor(grpc.ServerInterceptor):
    def __init__(self, error_domain: str, translate: Callable[[Exception], DomainError | None] | None = None):
        """`translate` maps infrastructure exceptions (e.g. a lost database
        connection) to domain errors such as Unavailable; None means unexpected."""
        self._domain = error_domain
        self._translate = translate

    def intercept_service(self, continuation, handler_call_details):
        handler = continuation(handler_call_details)
        if handler is not None and handler.unary_stream is not None:
            return self._streaming(handler, handler_call_details.method)
        if handler is None or handler.unary_unary is None:
            return handler
        method = handler_call_details.method
        inner = handler.unary_unary

        def behavior(request: Any, context: grpc.ServicerContext) -> Any:
            started = time.perf_counter()
            code = grpc.StatusCode.OK
            reason = ""
            try:
                if isinstance(request, Undecodable):
                    raise request.error()
                check_request(request)
                return inner(request, context)
            except DomainError as error:
                code, reason = grpc.StatusCode[error.code], error.reason
                context.abort_with_status(to_rpc_status(error, self._domain))
            except Exception as error:
                if context.code() not in (None, grpc.StatusCode.OK):
                    code = context.code()  # the handler aborted on its own
                    raise
                translated = self._translate(error) if self._translate else None
                if translated is not None:
                    code, reason = grpc.StatusCode[translated.code], translated.reason
                    if isinstance(translated, Unavailable):
                        log.warning("rpc dependency unavailable", extra={"method": method, "error": str(error)})
                    context.abort_with_status(to_rpc_status(translated, self._domain))
                code, reason = grpc.StatusCode.INTERNAL, "INTERNAL"
                log.exception("unexpected error", extra={"method": method})
                context.abort_with_status(internal_status(self._domain))
            finally:
                access_log.write(
                    {
                        "method": method,
                        "code": code.name,
                        "reason": reason,
                        "duration_ms": round((time.perf_counter() - started) * 1000, 3),
                    }
                )

        return grpc.unary_unary_rpc_method_handler(
            behavior,
            request_deserializer=_tolerant(handler.request_deserializer),
            response_serializer=handler.response_serializer,
        )

    def _streaming(self, handler, method: str):
        """A server-streaming method: the request checked, and an error raised before or between
        its messages answered as a unary method's (interim, until the shared streaming support)."""
        inner = handler.unary_stream

        def behavior(request: Any, context: grpc.ServicerContext) -> Any:
            started = time.perf_counter()
            code, reason = grpc.StatusCode.OK, ""
            try:
                if isinstance(request, Undecodable):
                    raise request.error()
                check_request(request)
                yield from inner(request, context)
            except DomainError as error:
                code, reason = grpc.StatusCode[error.code], error.reason
                context.abort_with_status(to_rpc_status(error, self._domain))
            except Exception as error:
                if context.code() not in (None, grpc.StatusCode.OK):
                    code = context.code()
                    raise
                translated = self._translate(error) if self._translate else None
                if translated is not None:
                    code, reason = grpc.StatusCode[translated.code], translated.reason
                    context.abort_with_status(to_rpc_status(translated, self._domain))
                code, reason = grpc.StatusCode.INTERNAL, "INTERNAL"
                log.exception("unexpected error", extra={"method": method})
                context.abort_with_status(internal_status(self._domain))
            finally:
                access_log.write(
                    {
                        "method": method,
                        "code": code.name,
                        "reason": reason,
                        "duration_ms": round((time.perf_counter() - started) * 1000, 3),
                    }
                )

        return grpc.unary_stream_rpc_method_handler(
            behavior,
            request_deserializer=_tolerant(handler.request_deserializer),
            response_serializer=handler.response_serializer,
        )


class Undecodable:
    """What a request deserializer returns, instead of raising, for bytes that are
    not a message of its type: grpcio would answer INTERNAL ("Exception
    deserializing request!") and log a traceback; the interceptor answers
    INVALID_ARGUMENT."""

    __slots__ = ("problem",)

    def __init__(self, problem: str) -> None:
        self.problem = problem

    def error(self) -> InvalidArgument:
        return InvalidArgument(
            f"the request bytes are not a valid request message: {self.problem}", reason="MALFORMED_REQUEST"
        )


def _tolerant(deserializer: Callable[[bytes], Any] | None) -> Callable[[bytes], Any] | None:
    if deserializer is None:
        return None

    def deserialize(data: bytes) -> Any:
        try:
            return deserializer(data)
        except DecodeError as error:
            return Undecodable(str(error))

    return deserialize
