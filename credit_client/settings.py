"""Where a client connects and how: address, API key, TLS, deadline, retries.

Every setting comes from the constructor's arguments, else from the environment
(`ClientSettings.from_env("catalog")` / `("grant")`), else its default:

| variable (catalog / grant service)                               | default                     |
|------------------------------------------------------------------|-----------------------------|
| `CREDIT_GRANTS_CATALOG_ADDRESS` / `CREDIT_GRANTS_GRANT_ADDRESS`   | 127.0.0.1:50051 / :50052    |
| `..._API_KEY`, or `..._API_KEY_FILE` (a file holding the key)    | no key                      |
| `..._TLS` (`true`: TLS with the system's roots)                  | plaintext                   |
| `..._TLS_CA` (PEM of the CA to trust; implies TLS)               | the system's roots          |
| `..._TLS_CERT`, `..._TLS_KEY` (client certificate, for mTLS)     | none                        |
| `..._TLS_SERVER_NAME` (name expected in the server's certificate) | the address's host          |
| `..._DEADLINE_S` (each call's deadline, seconds)                 | 10                          |
| `..._RETRIES` (extra attempts after UNAVAILABLE)                 | 4                           |
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path

DEFAULT_ADDRESSES = {"catalog": "127.0.0.1:50051", "grant": "127.0.0.1:50052"}
ENV_PREFIXES = {"catalog": "CREDIT_GRANTS_CATALOG_", "grant": "CREDIT_GRANTS_GRANT_"}
_TRUE = {"1", "true", "yes", "on"}


@dataclass(frozen=True, slots=True)
class ClientSettings:
    address: str
    api_key: str | None = None
    tls: bool = False
    tls_ca_file: str | None = None
    tls_cert_file: str | None = None
    tls_key_file: str | None = None
    tls_server_name: str | None = None
    deadline_s: float = 10.0
    retries: int = 4  # attempts after the first one, for UNAVAILABLE only
    retry_backoff_s: float = 0.2  # first pause; doubled each time, capped at 5 s, with jitter

    def __post_init__(self) -> None:
        if self.deadline_s <= 0:
            raise ValueError(f"the deadline must be positive, got {self.deadline_s}")
        if self.retries < 0:
            raise ValueError(f"retries must be >= 0, got {self.retries}")
        if bool(self.tls_cert_file) != bool(self.tls_key_file):
            raise ValueError("a client certificate needs both tls_cert_file and tls_key_file")

    @property
    def uses_tls(self) -> bool:
        return self.tls or bool(self.tls_ca_file or self.tls_cert_file)

    def with_(self, **changes) -> ClientSettings:
        """A copy with the given fields changed (None values are ignored)."""
        return replace(self, **{k: v for k, v in changes.items() if v is not None})

    @classmethod
    def from_env(cls, service: str, environ: Mapping[str, str] | None = None, **overrides) -> ClientSettings:
        """Settings of the "catalog" or "grant" service from the environment; `overrides` (not None) win."""
        if service not in ENV_PREFIXES:
            raise ValueError(f"service must be 'catalog' or 'grant', got {service!r}")
        env = os.environ if environ is None else environ
        prefix = ENV_PREFIXES[service]

        def get(name: str) -> str | None:
            value = env.get(prefix + name, "").strip()
            return value or None

        api_key = get("API_KEY")
        key_file = get("API_KEY_FILE")
        if api_key is None and key_file is not None:
            api_key = Path(key_file).read_text().strip()
        values = {
            "address": get("ADDRESS") or DEFAULT_ADDRESSES[service],
            "api_key": api_key,
            "tls": (get("TLS") or "").lower() in _TRUE,
            "tls_ca_file": get("TLS_CA"),
            "tls_cert_file": get("TLS_CERT"),
            "tls_key_file": get("TLS_KEY"),
            "tls_server_name": get("TLS_SERVER_NAME"),
            "deadline_s": float(get("DEADLINE_S") or 10.0),
            "retries": int(get("RETRIES") or 4),
        }
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)
