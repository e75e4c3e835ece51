"""One server interceptor for every RPC of both services, unary or streaming. In this order, it:

1. checks the caller's API key and role (credit_common.auth.check) before anything reads the
   request, so a call without a good key is UNAUTHENTICATED whatever its body;
2. admits a stream only within the stream budget and serves it off the unary workers
   (credit_common.grpc.streams);
3. answers undecodable request bytes with INVALID_ARGUMENT and checks every request
   (credit_common.grpc.validation);
4. maps domain errors to statuses, turns anything unexpected into a generic INTERNAL (traceback
   logged, never sent);
5. logs one structured line per RPC (method, code, duration, the caller's key id) and, for a call
   that may change state, the audit fields: the key's roles and the resource (docs/operations.md, Logs).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Collection, Iterator
from typing import Any

import grpc

from credit_common.auth.check import ApiKeyCheck
from credit_common.auth.keys import ApiKey
from credit_common.config import ServerLimits
from credit_common.errors import DomainError, InvalidArgument, Unavailable
from credit_common.grpc.audit import resource_of
from credit_common.grpc.errors import internal_status, to_rpc_status
from credit_common.grpc.streams import ANONYMOUS, StreamBudget
from credit_common.grpc.validation import check_request
from credit_common.logging import AccessLog

log = logging.getLogger("credit_grants.rpc")
access_log = AccessLog("credit_grants.rpc", "rpc")


class _Call:
    """What one RPC's log line reports, filled in as the call goes."""

    __slots__ = ("code", "key", "method", "reason", "request", "response", "started")

    def __init__(self, method: str) -> None:
        self.method = method
        self.started = time.perf_counter()
        self.code = grpc.StatusCode.OK
        self.reason = ""
        self.key: ApiKey | None = None
        self.request: Any = None
        self.response: Any = None


class ServiceInterceptor(grpc.ServerInterceptor):
    def __init__(
        self,
        error_domain: str,
        translate: Callable[[Exception], DomainError | None] | None = None,
        *,
        auth: ApiKeyCheck | None = None,
        streams: StreamBudget | None = None,
        audited: Collection[str] = (),
    ):
        """`translate` maps infrastructure exceptions (e.g. a lost database connection) to domain
        errors such as Unavailable; None means unexpected. `auth`: the key check (None: `--auth
        off`). `streams`: the stream budget (default: the default limits'). `audited`: full paths of
        the methods that may change state, whose log line carries the audit fields."""
        self._domain = error_domain
        self._translate = translate
        self._auth = auth
        defaults = ServerLimits()
        self.streams = streams or StreamBudget(defaults.max_streams, defaults.max_streams_per_caller)
        self._audited = frozenset(audited)

    def intercept_service(self, continuation, handler_call_details):
        handler = continuation(handler_call_details)
        if handler is None:
            return None
        method = handler_call_details.method
        metadata = handler_call_details.invocation_metadata
        if handler.unary_unary is not None:
            return grpc.unary_unary_rpc_method_handler(
                self._unary(handler.unary_unary, method, metadata),
                request_deserializer=_tolerant(handler.request_deserializer),
                response_serializer=handler.response_serializer,
            )
        if handler.unary_stream is not None:
            inner = handler.unary_stream
            if getattr(inner, "experimental_non_blocking", False):
                behavior = self._non_blocking_stream(inner, method, metadata)
            else:
                behavior = self._server_stream(inner, method, metadata)
            factory = grpc.unary_stream_rpc_method_handler
        elif handler.stream_stream is not None:
            behavior, factory = (
                self._bidi_stream(handler.stream_stream, method, metadata),
                grpc.stream_stream_rpc_method_handler,
            )
        else:
            behavior, factory = (
                self._client_stream(handler.stream_unary, method, metadata),
                grpc.stream_unary_rpc_method_handler,
            )
        behavior.experimental_thread_pool = self.streams.pool
        return factory(
            behavior,
            request_deserializer=_tolerant(handler.request_deserializer),
            response_serializer=handler.response_serializer,
        )

    # -- the four kinds of RPC ------------------------------------------------------------------------

    def _unary(self, inner, method: str, metadata):
        def behavior(request: Any, context: grpc.ServicerContext) -> Any:
            call = _Call(method)
            try:
                self._admit(call, metadata)
                call.request = _checked(request)
                call.response = inner(request, context)
                return call.response
            except Exception as error:
                self._fail(call, error, context)
            finally:
                self._log(call)

        return behavior

    def _server_stream(self, inner, method: str, metadata):
        def behavior(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
            call = _Call(method)
            try:
                self._open_stream(call, metadata, context)
                call.request = _checked(request)
                yield from inner(request, context)
            except Exception as error:
                self._fail(call, error, context)
            finally:
                self._log(call)

        return behavior

    def _non_blocking_stream(self, inner, method: str, metadata):
        """A servicer that answers through a callback and returns at once (grpc_health's Watch):
        it holds a stream slot until the RPC ends, but no thread."""

        def behavior(request: Any, context: grpc.ServicerContext, send_response_callback=None) -> None:
            call = _Call(method)
            try:
                self._open_stream(call, metadata, context)
                call.request = _checked(request)
                return inner(request, context, send_response_callback)
            except Exception as error:
                self._fail(call, error, context)
            finally:
                self._log(call)

        behavior.experimental_non_blocking = True
        return behavior

    def _bidi_stream(self, inner, method: str, metadata):
        def behavior(requests: Iterator[Any], context: grpc.ServicerContext) -> Iterator[Any]:
            call = _Call(method)
            try:
                self._open_stream(call, metadata, context)
                yield from inner(map(_checked, requests), context)
            except Exception as error:
                self._fail(call, error, context)
            finally:
                self._log(call)

        return behavior

    def _client_stream(self, inner, method: str, metadata):
        def behavior(requests: Iterator[Any], context: grpc.ServicerContext) -> Any:
            call = _Call(method)
            try:
                self._open_stream(call, metadata, context)
                call.response = inner(map(_checked, requests), context)
                return call.response
            except Exception as error:
                self._fail(call, error, context)
            finally:
                self._log(call)

        return behavior

    # -- the steps --------------------------------------------------------------------------------------

    def _admit(self, call: _Call, metadata) -> None:
        """Who calls (`call.key`), and may they: the first step of every RPC, before the request is read."""
        if self._auth is None:
            return
        call.key = self._auth.identify(metadata, call.method)
        if call.key is not None:
            self._auth.authorize(call.key, call.method)

    def _open_stream(self, call: _Call, metadata, context: grpc.ServicerContext) -> None:
        self._admit(call, metadata)
        release = self.streams.admit(call.key.key_id if call.key is not None else ANONYMOUS)
        if not context.add_callback(release):
            release()  # the RPC has already ended

    def _fail(self, call: _Call, error: Exception, context: grpc.ServicerContext) -> None:
        """Abort the RPC with the status `error` deserves (abort raises, ending the handler)."""
        if isinstance(error, DomainError):
            call.code, call.reason = grpc.StatusCode[error.code], error.reason
            context.abort_with_status(to_rpc_status(error, self._domain))
        if not context.is_active():
            # The client went away (a stream's request iterator raises): nobody to tell, nothing unexpected.
            call.code = grpc.StatusCode.CANCELLED
            raise error
        if context.code() not in (None, grpc.StatusCode.OK):
            call.code = context.code()  # the handler aborted on its own
            raise error
        translated = self._translate(error) if self._translate else None
        if translated is not None:
            call.code, call.reason = grpc.StatusCode[translated.code], translated.reason
            if isinstance(translated, Unavailable):
                log.warning("rpc dependency unavailable", extra={"method": call.method, "error": str(error)})
            context.abort_with_status(to_rpc_status(translated, self._domain))
        call.code, call.reason = grpc.StatusCode.INTERNAL, "INTERNAL"
        log.exception("unexpected error", extra={"method": call.method})
        context.abort_with_status(internal_status(self._domain))

    def _log(self, call: _Call) -> None:
        fields: dict[str, object] = {
            "method": call.method,
            "code": call.code.name,
            "reason": call.reason,
            "duration_ms": round((time.perf_counter() - call.started) * 1000, 3),
        }
        if call.key is not None:
            fields["key_id"] = call.key.key_id
        if call.method in self._audited:
            fields["audit"] = True
            fields["roles"] = sorted(call.key.roles) if call.key is not None else []
            resource = resource_of(call.request)
            resource.update(resource_of(call.response))
            fields["resource"] = resource
            if request_id := getattr(call.request, "request_id", ""):
                fields["request_id"] = request_id
        access_log.write(fields)


def _checked(request: Any) -> Any:
    """`request`, if it was decodable and passes the checks every request passes."""
    if isinstance(request, Undecodable):
        raise request.error()
    check_request(request)
    return request


class Undecodable:
    """What a request deserializer returns, instead of raising, for bytes that are
    not a message of its type: grpcio would answer INTERNAL ("Exception
    deserializing request!") and log a traceback, and would do so before the
    caller's key is checked; the interceptor answers INVALID_ARGUMENT, after it."""

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
        except Exception as error:  # DecodeError, and whatever else a parser may raise on hostile bytes
            return Undecodable(str(error)[:200])

    return deserialize
