"""API keys: their format, their roles, and how a key is checked against what is stored.

A key reads `cgk_<key id>_<secret>`: the key id (16 lowercase base32 characters) is public
and names the row; the secret (52 lowercase base32 characters, 256 random bits) is shown
once at creation and only its SHA-256 is stored (docs/security.md says why a plain hash
fits). Roles are names; `admin` allows every method.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

PREFIX = "cgk_"
KEY_ID_CHARS = 16
SECRET_BYTES = 32

READER = "reader"
USAGE = "usage"
CATALOG_ADMIN = "catalog-admin"
OPERATOR = "operator"
SYNC = "sync"
TEST_CLOCKS = "test-clocks"
WEBHOOKS = "webhooks"
ADMIN = "admin"


@dataclass(frozen=True)
class ApiKey:
    """A stored key, without its secret."""

    key_id: str
    secret_hash: str
    roles: frozenset[str]
    label: str
    create_time: datetime
    revoke_time: datetime | None = None

    @property
    def revoked(self) -> bool:
        return self.revoke_time is not None

    def allows(self, accepted: Iterable[str]) -> bool:
        """True if the key holds `admin` or one of the `accepted` roles."""
        return ADMIN in self.roles or not self.roles.isdisjoint(accepted)


def _base32(data: bytes) -> str:
    return base64.b32encode(data).decode("ascii").rstrip("=").lower()


def new_key() -> tuple[str, str, str]:
    """A fresh key: (key id, secret hash, the whole key to hand to the caller once)."""
    key_id = _base32(secrets.token_bytes(10))[:KEY_ID_CHARS]
    secret = _base32(secrets.token_bytes(SECRET_BYTES))
    return key_id, hash_secret(secret), f"{PREFIX}{key_id}_{secret}"


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode("ascii")).hexdigest()


def parse_key(token: str) -> tuple[str, str] | None:
    """(key id, secret) of a key in the `cgk_<id>_<secret>` format, None for anything else."""
    if not token.startswith(PREFIX):
        return None
    key_id, underscore, secret = token[len(PREFIX) :].partition("_")
    if not underscore or len(key_id) != KEY_ID_CHARS or not secret or not secret.isascii() or not key_id.isalnum():
        return None
    return key_id, secret


def secret_matches(key: ApiKey, secret: str) -> bool:
    return hmac.compare_digest(hash_secret(secret), key.secret_hash)
