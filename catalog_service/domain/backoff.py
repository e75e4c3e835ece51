"""The outbox's retry policy is the shared one (credit_common.backoff): capped exponential backoff
with full jitter. Kept under this name for the catalog's callers."""

from __future__ import annotations

from credit_common.backoff import BackoffPolicy, RandomSource, seeded

__all__ = ["BackoffPolicy", "RandomSource", "seeded"]
