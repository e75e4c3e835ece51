"""SQL building blocks shared by the grant service's repositories: locking, and the one
definition of what a catch-up owes a customer. Inserts that skip what a concurrent transaction
already wrote are general: credit_common.db.bulk."""

from __future__ import annotations

from datetime import datetime

from prometheus_client.core import Metric
from sqlalchemy import Connection, Select, func, select
from sqlalchemy.orm import Session

from grant_service.adapters.orm import (
    GRANTS,
    SCHEDULES,
)
from grant_service.domain.model import REAL_TIME


def is_postgres(session: Session) -> bool:
    return session.get_bind().dialect.name == "postgresql"


def locked(session: Session, statement: Select, *, skip_locked: bool = False) -> Select:
    """`statement` with FOR UPDATE on PostgreSQL (SQLite serialises writers with BEGIN IMMEDIATE)."""
    if is_postgres(session):
        return statement.with_for_update(skip_locked=skip_locked)
    return statement


def pending_columns(customer_key) -> tuple:
    """A customer's `Pending` (its earliest period to issue, its earliest open grant to expire, its
    earliest pending grant to open) as three scalar subqueries correlated to `customer_key`: the one
    definition of what a catch-up is owed."""
    schedules, expiring, opening = SCHEDULES, GRANTS.alias("expiring"), GRANTS.alias("opening")
    next_issue = select(func.min(schedules.c.next_period_start)).where(schedules.c.customer_key == customer_key)
    next_expiry = select(func.min(expiring.c.expire_time)).where(
        expiring.c.customer_key == customer_key, expiring.c.closed.is_(False)
    )
    next_open = select(func.min(opening.c.opens_at)).where(opening.c.customer_key == customer_key)
    return (
        next_issue.scalar_subquery().label("next_issue"),
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
