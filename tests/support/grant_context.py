"""A grant service's use-case context over SQL units of work, as app.build wires it, for tests
that call the service layer directly."""

from __future__ import annotations

from typing import Any

from credit_common.clock import Clock
from credit_common.db.engine import SessionFactories
from grant_service.adapters.balance_reads import SqlBalanceReads
from grant_service.adapters.unit_of_work import SqlTransactions
from grant_service.service_layer.context import GrantContext


def sql_context(factories: SessionFactories, clock: Clock, *, linger_s: float = 0.0, **settings: Any) -> GrantContext:
    return GrantContext(
        transactions=SqlTransactions(factories, clock, linger_s=linger_s),
        balance_reads=SqlBalanceReads(factories, clock, linger_s=linger_s),
        clock=clock,
        **settings,
    )
