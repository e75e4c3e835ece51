"""Balance alerts' SQL (service_layer/ports.py AlertRepository): the levels in force, cached per
process by version (the highest alert set id: sets are append-only, so an unchanged version means
unchanged levels), the states last evaluated, and the current state of customers' open grants."""

from __future__ import annotations

import json
import threading
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from decimal import Decimal

from sqlalchemy import func, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from credit_common.db.chunks import chunks
from credit_common.decimals import format_decimal
from grant_service.adapters.locking import is_postgres
from grant_service.adapters.orm import ALERT_SETS, ALERT_STATES, GRANTS
from grant_service.domain.alerts import AlertLevel, BalanceState, state_of

Pair = tuple[str, str]
Levels = tuple[AlertLevel, ...]
_UNSET = object()


def _encode(levels: Sequence[AlertLevel] | None) -> str | None:
    return None if levels is None else json.dumps([[lv.kind, format_decimal(lv.value)] for lv in levels])


def _decode(text: str | None) -> Levels | None:
    return None if text is None else tuple(AlertLevel(kind, Decimal(value)) for kind, value in json.loads(text))


class AlertsCache:
    """Levels in force per (customer, currency), valid for one version."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._version = -1
        self._levels: dict[Pair, Levels | None] = {}

    def get(self, version: int, pair: Pair) -> object:
        with self._lock:
            if version != self._version:
                return _UNSET
            return self._levels.get(pair, _UNSET)

    def put(self, version: int, pair: Pair, levels: Levels | None) -> None:
        with self._lock:
            if version > self._version:
                self._version, self._levels = version, {}
            if version == self._version:
                self._levels[pair] = levels


class SqlAlertRepository:
    def __init__(self, session: Session, cache: AlertsCache | None = None) -> None:
        self.session = session
        self._cache = cache or AlertsCache()

    def version(self) -> int:
        return self.session.scalar(select(func.coalesce(func.max(ALERT_SETS.c.alert_set_id), 0))) or 0

    def configured(self, customer_key: str, currency_key: str) -> tuple[Levels | None, Levels | None]:
        """The latest levels set for the customer and for the currency's default (None: none or cleared)."""

        def latest(key: str) -> Levels | None:
            row = self.session.execute(
                select(ALERT_SETS.c.levels)
                .where(ALERT_SETS.c.customer_key == key, ALERT_SETS.c.currency_key == currency_key)
                .order_by(ALERT_SETS.c.alert_set_id.desc())
                .limit(1)
            ).first()
            return None if row is None else _decode(row.levels)

        return (latest(customer_key) if customer_key else None), latest("")

    def in_force(self, customer_key: str, currency_key: str, version: int) -> Levels | None:
        pair = (customer_key, currency_key)
        cached = self._cache.get(version, pair)
        if cached is not _UNSET:
            return cached  # type: ignore[return-value]
        own, default = self.configured(customer_key, currency_key)
        levels = own if own is not None else default
        self._cache.put(version, pair, levels)
        return levels

    def set(self, customer_key: str, currency_key: str, levels: Sequence[AlertLevel] | None, now: datetime) -> None:
        self.session.execute(
            ALERT_SETS.insert().values(
                customer_key=customer_key, currency_key=currency_key, levels=_encode(levels), create_time=now
            )
        )

    def states_of(self, customer_keys: Iterable[str]) -> dict[Pair, frozenset[str]]:
        customers = sorted(set(customer_keys))
        found: dict[Pair, frozenset[str]] = {}
        for chunk in chunks(customers):
            rows = self.session.execute(select(ALERT_STATES).where(ALERT_STATES.c.customer_key.in_(chunk)))
            found.update({(r.customer_key, r.currency_key): frozenset(json.loads(r.below)) for r in rows})
        return found

    def save_states(self, states: Mapping[Pair, frozenset[str]]) -> None:
        if not states:
            return
        rows = [
            {"customer_key": c, "currency_key": k, "below": json.dumps(sorted(s))}
            for (c, k), s in sorted(states.items())
        ]
        insert = postgresql.insert(ALERT_STATES) if is_postgres(self.session) else sqlite.insert(ALERT_STATES)
        statement = insert.on_conflict_do_update(
            index_elements=["customer_key", "currency_key"],
            set_={"below": insert.excluded.below},
        )
        self.session.execute(statement, rows)

    def current_of(self, customer_keys: Iterable[str]) -> dict[Pair, BalanceState]:
        customers = sorted(set(customer_keys))
        grants: dict[Pair, list[tuple[Decimal, Decimal]]] = defaultdict(list)
        for chunk in chunks(customers):
            rows = self.session.execute(
                select(GRANTS.c.customer_key, GRANTS.c.currency_key, GRANTS.c.amount, GRANTS.c.used).where(
                    GRANTS.c.customer_key.in_(chunk),
                    GRANTS.c.closed.is_(False),
                    GRANTS.c.opens_at.is_(None),
                )
            )
            for row in rows:
                grants[(row.customer_key, row.currency_key)].append((row.amount, row.used))
        return {pair: state_of(found) for pair, found in grants.items()}
