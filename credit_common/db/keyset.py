"""Keyset pagination: the condition that selects the rows after the last one of the previous page."""

from __future__ import annotations

import operator
from collections.abc import Sequence
from typing import Any

from sqlalchemy import ColumnElement, and_, or_, true


def keyset_after(columns: Sequence[Any], after: Sequence[Any] | None, *, descending: bool = False) -> ColumnElement:
    """Rows that come after the sort key `after` (None or empty: every row) in the order of `columns`
    (all ascending, or all descending)."""
    if not after:
        return true()
    beyond = operator.lt if descending else operator.gt
    condition = beyond(columns[-1], after[-1])
    for column, value in zip(reversed(columns[:-1]), reversed(after[:-1]), strict=True):
        condition = or_(beyond(column, value), and_(column == value, condition))
    return condition
