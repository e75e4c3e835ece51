"""What a catch-up owes, in SQL: the one definition of a customer's `Pending` (read by the
repositories and GetBalance's read model; the debit path reads its first column, and the others
from the open grants it reads anyway), and the catch-up's lag for /metrics."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from prometheus_client.core import Metric
from sqlalchemy import Connection, func, select

from grant_service.adapters.orm import GRANTS, SCHEDULES
from grant_service.domain.clocks import REAL_TIME


def next_issue_column(customer_key) -> Any:
    """A customer's earliest period to issue, as a scalar subquery correlated to `customer_key`."""
    next_issue = select(func.min(SCHEDULES.c.next_period_start)).where(SCHEDULES.c.customer_key == customer_key)
    return next_issue.scalar_subquery().label("next_issue")


def pending_columns(customer_key) -> tuple:
    """A customer's `Pending` (its earliest period to issue, its earliest open grant to expire, its
    earliest pending grant to open) as three scalar subqueries correlated to `customer_key`: the one
    definition of what a catch-up is owed. A debit, which reads the customer's open grants anyway,
    takes the last two from them (`Pending.of`: the same values, tested in
    tests/integration/grant/test_usage_debits.py)."""
    expiring, opening = GRANTS.alias("expiring"), GRANTS.alias("opening")
    next_expiry = select(func.min(expiring.c.expire_time)).where(
        expiring.c.customer_key == customer_key, expiring.c.closed.is_(False)
    )
    next_open = select(func.min(opening.c.opens_at)).where(opening.c.customer_key == customer_key)
    return (
        next_issue_column(customer_key),
        next_expiry.scalar_subquery().label("next_expiry"),
        next_open.scalar_subquery().label("next_open"),
    )


def catch_up_gauges(connection: Connection, now: datetime) -> list[Metric]:
    """The catch-up's lag for /metrics (credit_common.metrics.DatabaseGauges): the age of the oldest
    period due to be issued or grant due to expire, of real-time customers, that no catch-up has
    processed yet (0 when nothing is due). Test clocks are not counted: their time is not now."""
    from prometheus_client.core import GaugeMetricFamily

    due_issue = select(func.min(SCHEDULES.c.next_period_start)).where(
        SCHEDULES.c.clock_key == REAL_TIME,
        SCHEDULES.c.removed.is_(False),
        SCHEDULES.c.next_period_start.is_not(None),
        SCHEDULES.c.next_period_start <= now,
    )
    due_expiry = select(func.min(GRANTS.c.expire_time)).where(
        GRANTS.c.clock_key == REAL_TIME,
        GRANTS.c.closed.is_(False),
        GRANTS.c.expire_time.is_not(None),
        GRANTS.c.expire_time <= now,
        GRANTS.c.opens_at.is_(None),  # as the catch-up's due expiries: a pending grant is opened first
    )
    lag = GaugeMetricFamily(
        "credit_grants_catch_up_lag_seconds",
        "Age of the oldest period due to be issued or grant due to expire that the catch-up has not processed "
        "(real-time customers; 0 when nothing is due).",
        labels=["work"],
    )
    for work, query in (("issue", due_issue), ("expire", due_expiry)):
        oldest = connection.execute(query).scalar()
        lag.add_metric([work], max((now - oldest).total_seconds(), 0.0) if oldest is not None else 0.0)
    return [lag]
