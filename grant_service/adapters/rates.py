"""The rates in force of a metered feature, read from the rate sets, and a process's cache of them."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from sqlalchemy import (
    func,
    select,
)
from sqlalchemy.orm import Session

from grant_service.adapters.orm import (
    RATE_SETS,
    RATES,
    RateRow,
    RateSetRow,
)


def rates_in_force(session: Session, feature_key: str, at: datetime) -> dict[str, Decimal]:
    """currency_key -> credits per unit of `feature_key`, for every currency whose rate set in force
    at `at` (the latest effective at or before it; ties to the higher revision) names the feature."""
    latest = (
        select(RateSetRow.currency_key, RateSetRow.rate_set_id)
        .where(RateSetRow.effective_time <= at)
        .order_by(RateSetRow.currency_key, RateSetRow.effective_time.desc(), RateSetRow.revision.desc())
    )
    in_force: dict[str, int] = {}
    for currency_key, rate_set_id in session.execute(latest):
        in_force.setdefault(currency_key, rate_set_id)
    if not in_force:
        return {}
    rows = session.execute(
        select(RateSetRow.currency_key, RateRow.credits_per_unit)
        .join(RateRow, RateRow.rate_set_id == RateSetRow.rate_set_id)
        .where(RateRow.feature_key == feature_key, RateSetRow.rate_set_id.in_(list(in_force.values())))
    )
    return {currency_key: rate for currency_key, rate in rows}


def feature_known(session: Session, feature_key: str) -> bool:
    return session.scalar(select(func.count()).select_from(RateRow).where(RateRow.feature_key == feature_key)) > 0


@dataclass(frozen=True)
class _RateBook:
    version: int
    # currency -> its rate sets (rate_set_id, effective_time), latest first (ties: higher revision first)
    sets: dict[str, list[tuple[int, datetime]]]
    # feature -> rate_set_id -> credits per unit
    rates: dict[str, dict[int, Decimal]]

    def in_force(self, feature_key: str, at: datetime) -> dict[str, Decimal]:
        of_feature = self.rates.get(feature_key)
        if not of_feature:
            return {}
        result: dict[str, Decimal] = {}
        for currency_key, sets in self.sets.items():
            for rate_set_id, effective_time in sets:
                if effective_time <= at:
                    if rate_set_id in of_feature:
                        result[currency_key] = of_feature[rate_set_id]
                    break
        return result


_RATE_BOOK = (
    select(
        RATE_SETS.c.rate_set_id,
        RATE_SETS.c.currency_key,
        RATE_SETS.c.revision,
        RATE_SETS.c.effective_time,
        RATES.c.feature_key,
        RATES.c.credits_per_unit,
        select(func.count()).select_from(RATE_SETS).scalar_subquery(),
    )
    .select_from(RATE_SETS)
    .outerjoin(RATES, RATES.c.rate_set_id == RATE_SETS.c.rate_set_id)
)


class RatesCache:
    """All rate sets and rates, kept in memory by one process. Rate sets are append-only (a new revision
    is a new rate set with its rates, in one transaction; none is ever changed or deleted), so the number
    of rate sets a transaction sees identifies what it sees: the cache is used only when that number,
    read by the caller in its own transaction (a debit's head: adapters/debits.py), equals the one read with the
    cached content in one statement. So it answers what the caller's own queries would, in any number of
    processes (on PostgreSQL, as of the snapshot of the statement that read DebitHead)."""

    def __init__(self) -> None:
        self._book: _RateBook | None = None

    def rates_in_force(self, session: Session, feature_key: str, at: datetime, version: int) -> dict[str, Decimal]:
        """As `rates_in_force`, for a transaction that sees `version` rate sets."""
        book = self._book
        if book is None or book.version != version:
            book = self._load(session)
            if book.version != version:  # rate sets committed between the caller's statement and ours
                return rates_in_force(session, feature_key, at)
        return book.in_force(feature_key, at)

    def _load(self, session: Session) -> _RateBook:
        sets: dict[str, dict[int, tuple[datetime, int]]] = defaultdict(dict)
        rates: dict[str, dict[int, Decimal]] = defaultdict(dict)
        version = 0
        for (
            rate_set_id,
            currency_key,
            revision,
            effective_time,
            feature_key,
            rate,
            count,
        ) in session.connection().execute(_RATE_BOOK):
            version = count
            sets[currency_key][rate_set_id] = (effective_time, revision)
            if feature_key is not None:
                rates[feature_key][rate_set_id] = rate
        ordered = {
            currency_key: [
                (rate_set_id, t)
                for rate_set_id, (t, _) in sorted(by_id.items(), key=lambda item: item[1], reverse=True)
            ]
            for currency_key, by_id in sets.items()
        }
        book = _RateBook(version, ordered, dict(rates))
        self._book = book
        return book
