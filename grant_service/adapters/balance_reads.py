"""GetBalance's hot path: the customers asked at one instant, their clock, what a catch-up owes
them and their grants active then, in one statement run on the driver (credit_common.db.driver)."""

from __future__ import annotations

import functools
from collections import defaultdict
from collections.abc import Sequence
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

from credit_common.db.driver import DriverStatement
from credit_common.db.types import UtcDateTime
from grant_service.adapters.orm import (
    CUSTOMERS,
    GRANTS,
)
from grant_service.adapters.sql import pending_columns


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
