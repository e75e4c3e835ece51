"""Values too many for one statement, bound a slice at a time."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TypeVar

T = TypeVar("T")

CHUNK = 500  # values of one `IN (...)` list, or rows of one multi-row INSERT


def chunks(values: Sequence[T], size: int = CHUNK) -> Iterator[Sequence[T]]:
    """`values` in order, in slices of at most `size`: a statement per slice keeps the parameters it
    binds well under SQLite's limit (32,766) and the SQL PostgreSQL plans short, however many values
    a caller has."""
    for start in range(0, len(values), size):
        yield values[start : start + size]
