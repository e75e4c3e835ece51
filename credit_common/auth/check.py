"""Authentication and per-method authorization of every RPC, for both services.

Each service declares one table, method name -> the roles that may call it (`admin` may call
everything), checked against its service descriptor at startup: a method missing from the
table (or a name in it that is not a method) is an error, so a new RPC cannot ship unguarded.

The key comes in the `authorization: Bearer <key>` or `x-api-key: <key>` metadata. Keys are
looked up by id through a small cache (`KeyCache`): an entry, found or not, is trusted for
`ttl`, so a revoked key stops working within that bound while a hot method costs a dict
lookup and a SHA-256 per call. The ServiceInterceptor (credit_common.grpc.interceptors) runs
the check first, before the request is decoded or validated; failures are domain errors it turns
into statuses with an ErrorInfo and logs like any other RPC: UNAUTHENTICATED (API_KEY_MISSING,
API_KEY_INVALID, API_KEY_REVOKED) and PERMISSION_DENIED (ROLE_REQUIRED, with the method and the
role needed). Health stays open; reflection is open, keyed or off (`--reflection`).
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta
from typing import Any, Protocol

from google.protobuf.descriptor import ServiceDescriptor
from grpc_health.v1 import health
from grpc_reflection.v1alpha import reflection as reflection_service

from credit_common.auth.keys import ADMIN, ApiKey, parse_key, secret_matches
from credit_common.clock import Clock
from credit_common.errors import PermissionDenied, Unauthenticated

REFLECTION_MODES = frozenset({"on", "off", "authenticated"})
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
    if missing or unknown or empty:
        raise ValueError(
            f"the role table of {service.full_name} must map every method to roles: "
            f"missing {missing}, not methods {unknown}, without roles {empty}"
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


class ApiKeyCheck:
    """Who is calling, and may they call this method: run by the ServiceInterceptor before anything
    reads the request, so a caller without a good key learns nothing of how requests are parsed.

    Health is open to anyone (load balancers). Reflection is open with `reflection="on"`, and
    needs a valid key of any role with `reflection="authenticated"` (docs/security.md)."""

    def __init__(self, roles: Mapping[str, tuple[str, ...]], keys: KeyCache, *, reflection: str = "authenticated"):
        """`roles`: full method path -> accepted roles (from `method_roles`)."""
        if reflection not in REFLECTION_MODES:
            raise ValueError(f"reflection must be one of {sorted(REFLECTION_MODES)}, not {reflection!r}")
        self._roles = dict(roles)
        self._keys = keys
        self._open = {health.SERVICE_NAME} | ({reflection_service.SERVICE_NAME} if reflection == "on" else set())

    def identify(self, metadata, method: str) -> ApiKey | None:
        """The caller's valid key, or None if `method` is open to anyone; Unauthenticated otherwise."""
        return None if _service_of(method) in self._open else self.authenticate(metadata)

    def authorize(self, key: ApiKey, method: str) -> None:
        """PermissionDenied unless one of `key`'s roles allows `method` (any key may use reflection)."""
        if _service_of(method) == reflection_service.SERVICE_NAME:
            return
        accepted = self._roles.get(method, ())
        if accepted and key.allows(accepted):
            return
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

    def authenticate(self, metadata) -> ApiKey:
        """The caller's valid, unrevoked key; else Unauthenticated."""
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
        return key


def _service_of(method: str) -> str:
    """ "pkg.Service" of "/pkg.Service/Method"."""
    return method.split("/")[1] if method.count("/") >= 2 else ""


def read_only(service: ServiceDescriptor, names: Iterable[str]) -> frozenset[str]:
    """The full paths of the methods `names` of `service`, which change nothing: every other method is
    audited (its log line names the key, its roles and the resource). ValueError for a name that is
    not a method."""
    methods = {method.name for method in service.methods}
    unknown = sorted(set(names) - methods)
    if unknown:
        raise ValueError(f"not methods of {service.full_name}: {unknown}")
    return frozenset(f"/{service.full_name}/{name}" for name in names)
