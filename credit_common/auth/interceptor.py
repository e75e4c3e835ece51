"""Authentication and per-method authorization of every RPC, for both services.

Each service declares one table, method name -> the roles that may call it (`admin` may call
everything), checked against its service descriptor at startup: a method missing from the
table (or a name in it that is not a method) is an error, so a new RPC cannot ship unguarded.

The key comes in the `authorization: Bearer <key>` or `x-api-key: <key>` metadata. Keys are
looked up by id through a small cache (`KeyCache`): an entry, found or not, is trusted for
`ttl`, so a revoked key stops working within that bound while a hot method costs a dict
lookup and a SHA-256 per call. Failures are domain errors, which the ServiceInterceptor
(outside this one) turns into statuses with an ErrorInfo and logs like any other RPC:
UNAUTHENTICATED (API_KEY_MISSING, API_KEY_INVALID, API_KEY_REVOKED) and PERMISSION_DENIED
(ROLE_REQUIRED, with the method and the role needed). Health and reflection stay open.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta
from typing import Any, Protocol

import grpc
from google.protobuf.descriptor import ServiceDescriptor
from grpc_health.v1 import health
from grpc_reflection.v1alpha import reflection

from credit_common.auth.keys import ADMIN, ApiKey, parse_key, secret_matches
from credit_common.clock import Clock
from credit_common.errors import PermissionDenied, Unauthenticated

OPEN_SERVICES = frozenset({health.SERVICE_NAME, reflection.SERVICE_NAME})
DEFAULT_CACHE_TTL = timedelta(seconds=5)
CACHE_MAX_ENTRIES = 10_000


class KeyLookup(Protocol):
    def get(self, key_id: str) -> ApiKey | None: ...


def method_roles(service: ServiceDescriptor, table: Mapping[str, Iterable[str]]) -> dict[str, tuple[str, ...]]:
    """The table keyed by full method path (`/pkg.Service/Method`); ValueError unless it names
    every method of `service` exactly once, each with at least one role."""
    methods = {method.name for method in service.methods}
    missing = sorted(methods - set(table))
    unknown = sorted(set(table) - methods)
    empty = sorted(name for name, roles in table.items() if not tuple(roles))
    # Server-streaming methods are authorized before their first message (AuthInterceptor); methods
    # that stream requests are not served.
    streaming = sorted(m.name for m in service.methods if m.client_streaming)
    if missing or unknown or empty or streaming:
        raise ValueError(
            f"the role table of {service.full_name} must map every (unary) method to roles: "
            f"missing {missing}, not methods {unknown}, without roles {empty}, streaming {streaming}"
        )
    return {f"/{service.full_name}/{name}": tuple(roles) for name, roles in table.items()}


def roles_of(table: Mapping[str, Iterable[str]]) -> frozenset[str]:
    """Every role a service knows: those of its table, and admin."""
    return frozenset(role for roles in table.values() for role in roles) | {ADMIN}


class KeyCache:
    """Keys by id, each answer (a key or None) kept for `ttl` of `clock` time."""

    def __init__(self, store: KeyLookup, clock: Clock, ttl: timedelta = DEFAULT_CACHE_TTL) -> None:
        self._store = store
        self._clock = clock
        self._ttl = ttl
        self._entries: dict[str, tuple[ApiKey | None, datetime]] = {}
        self._lock = threading.Lock()

    def get(self, key_id: str) -> ApiKey | None:
        now = self._clock.now()
        entry = self._entries.get(key_id)
        if entry is not None and entry[1] <= now < entry[1] + self._ttl:
            return entry[0]
        key = self._store.get(key_id)
        with self._lock:
            if len(self._entries) >= CACHE_MAX_ENTRIES:
                self._entries.clear()  # a flood of made-up ids must not grow the cache without bound
            self._entries[key_id] = (key, now)
        return key


def bearer_key(metadata: Iterable[Any] | None) -> str | None:
    """The API key in `authorization: Bearer <key>` or `x-api-key: <key>`, if any."""
    for item in metadata or ():
        if item.key == "authorization":
            scheme, _, value = item.value.partition(" ")
            if scheme.lower() == "bearer" and value.strip():
                return value.strip()
        elif item.key == "x-api-key" and item.value.strip():
            return item.value.strip()
    return None


class AuthInterceptor(grpc.ServerInterceptor):
    def __init__(self, roles: Mapping[str, tuple[str, ...]], keys: KeyCache) -> None:
        """`roles`: full method path -> accepted roles (from `method_roles`)."""
        self._roles = dict(roles)
        self._keys = keys

    def intercept_service(self, continuation, handler_call_details):
        handler = continuation(handler_call_details)
        method = handler_call_details.method
        if handler is None or method.split("/")[1] in OPEN_SERVICES:
            return handler
        accepted = self._roles.get(method, ())
        metadata = handler_call_details.invocation_metadata
        if handler.unary_stream is not None:
            streamed = handler.unary_stream

            def stream(request: Any, context: grpc.ServicerContext) -> Any:
                self.authorize(metadata, method, accepted)
                yield from streamed(request, context)

            return grpc.unary_stream_rpc_method_handler(
                stream,
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        inner = handler.unary_unary
        if inner is None:  # method_roles accepts no client streaming: never serve it unchecked
            return None

        def behavior(request: Any, context: grpc.ServicerContext) -> Any:
            self.authorize(metadata, method, accepted)
            return inner(request, context)

        return grpc.unary_unary_rpc_method_handler(
            behavior,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )

    def authorize(self, metadata, method: str, accepted: tuple[str, ...]) -> ApiKey:
        """The caller's key, if it may call `method`; else Unauthenticated or PermissionDenied."""
        token = bearer_key(metadata)
        if token is None:
            raise Unauthenticated(
                "an API key is required: send the metadata `authorization: Bearer <key>`", reason="API_KEY_MISSING"
            )
        parsed = parse_key(token)
        key = self._keys.get(parsed[0]) if parsed is not None else None
        if parsed is None or key is None or not secret_matches(key, parsed[1]):
            raise Unauthenticated("the API key is not valid", reason="API_KEY_INVALID")
        if key.revoked:
            raise Unauthenticated(
                f"the API key {key.key_id} has been revoked", reason="API_KEY_REVOKED", metadata={"key_id": key.key_id}
            )
        if not accepted or not key.allows(accepted):
            needed = accepted[0] if accepted else ADMIN
            raise PermissionDenied(
                f"{method} needs the role {needed!r}; the API key {key.key_id} has {', '.join(sorted(key.roles))}",
                reason="ROLE_REQUIRED",
                metadata={
                    "method": method,
                    "required_role": needed,
                    "accepted_roles": ",".join((*accepted, ADMIN)),
                    "key_id": key.key_id,
                },
            )
        return key
