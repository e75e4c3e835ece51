"""The read model of GetBalance's fast path (`BalanceReads`, service_layer/ports.py): the
customers asked at one instant, their clock, what a catch-up owes them and their grants active
then, in one statement run on the driver (credit_common.db.driver); the reads of concurrent
callers are batched into one such statement."""

from __future__ import annotations

import functools
from collections import defaultdict
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import (
    Connection,
    Select,
    and_,
    bindparam,
    or_,
    select,
)

from credit_common.batching import Batcher, Slot
from credit_common.clock import Clock
from credit_common.db.driver import DriverStatement
from credit_common.db.engine import SessionFactories
from credit_common.db.types import UtcDateTime
from grant_service.adapters.catch_up import pending_columns
from grant_service.adapters.mappers import customer_now_of
from grant_service.adapters.orm import (
    CUSTOMERS,
    GRANTS,
)
from grant_service.domain.model import CustomerNow


def _current_grants_statement(customers_count: int) -> Select:
    customers, grants = CUSTOMERS, GRANTS
    now = bindparam("now", type_=UtcDateTime())
    keys = [bindparam(f"c{i}", type_=customers.c.customer_key.type) for i in range(customers_count)]
    return (
        select(
            customers.c.customer_key.label("of_customer"),
            customers.c.clock_key.label("customer_clock_key"),
            *pending_columns(customers.c.customer_key),
            *grants.c,
        )
        .select_from(
            customers.outerjoin(
                grants,
                and_(
                    grants.c.customer_key == customers.c.customer_key,
                    # Implied by the rest (an EXPIRE is recorded at or after the expiry, a VOID at the
                    # instant it applies), and it lets the index (customer, closed, expire) skip the
                    # customer's past grants: one heap page per read instead of one per past period.
                    grants.c.closed.is_(False),
                    grants.c.currency_key == bindparam("currency_key"),
                    grants.c.effective_time <= now,
                    or_(grants.c.expire_time.is_(None), grants.c.expire_time > now),
                    or_(grants.c.void_time.is_(None), grants.c.void_time > now),
                ),
            )
        )
        .where(customers.c.customer_key.in_(keys))
    )


@functools.cache
def _current_grants(customers_count: int) -> DriverStatement:
    """Built once per number of customers (at most a batch's size); run on the driver: GetBalance's hot
    path (see credit_common.db.driver)."""
    return DriverStatement(_current_grants_statement(customers_count))


def current_grants(
    connection: Connection, customer_keys: Sequence[str], currency_key: str, now: datetime
) -> dict[str, list[tuple]]:
    """In one statement, for each of `customer_keys` that exists: its clock, its `Pending` (next_issue,
    next_expiry), and its grants in `currency_key` active at `now` (columns of `grants`, in no
    particular order), by customer. A customer with no active grant has one row, with grant_id None."""
    params: dict[str, Any] = {f"c{i}": key for i, key in enumerate(customer_keys)}
    params.update(currency_key=currency_key, now=now)
    by_customer: dict[str, list[tuple]] = defaultdict(list)
    for row in _current_grants(len(customer_keys)).rows(connection, params):
        by_customer[row.of_customer].append(row)
    return by_customer


class SqlBalanceReads:
    """`BalanceReads` over the service's session factories: the reads of concurrent callers are one
    statement (`current_grants`), run by one of them (credit_common.batching) on a connection the
    thread keeps (`single_statement`). `linger_s`: how long a batch's leader may wait for more callers."""

    def __init__(self, factories: SessionFactories, clock: Clock, *, linger_s: float = 0.0) -> None:
        self.factories = factories
        self._clock = clock
        self._batches = Batcher(self._read_batch, linger_s=linger_s)

    def customer_now(self, customer_key: str, currency_key: str) -> tuple[datetime, CustomerNow | None]:
        now, rows = self._batches.submit((customer_key, currency_key))
        return now, customer_now_of(rows)

    def _read_batch(self, take: Callable[[], list[Slot]]) -> None:
        slots = take()
        now = self._clock.now()
        by_currency: dict[str, list[Slot]] = defaultdict(list)
        for slot in slots:
            by_currency[slot.item[1]].append(slot)

        def read(connection: Connection) -> None:
            for currency_key, asking in by_currency.items():
                customers = sorted({slot.item[0] for slot in asking})
                rows = current_grants(connection, customers, currency_key, now)
                for slot in asking:
                    slot.succeed((now, rows.get(slot.item[0], [])))

        self.factories.single_statement.run(read)
